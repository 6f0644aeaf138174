//! Request bodies: JSON, YAML, and the protobuf envelope kubectl uses for access reviews.

use axum::http::{HeaderMap, header};
use bytes::Bytes;
use serde_json::Value;

use crate::status::{ApiError, ApiResult};

/// The largest request body accepted, as kube-apiserver's limit for objects.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// The media types bodies may use for create and update.
const ACCEPTED: &str = "application/json, application/yaml, application/vnd.kubernetes.protobuf";

/// The request's media type without parameters, lower-cased.
#[must_use]
pub fn content_type(headers: &HeaderMap) -> String {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map_or_else(
        || "application/json".to_string(),
        |v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase(),
    )
}

/// Decodes a create/update body into a JSON object.
pub fn decode_object(headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    if body.len() > MAX_BODY {
        return Err(ApiError::TooLarge(MAX_BODY));
    }
    let value = match content_type(headers).as_str() {
        "application/json" | "" => serde_json::from_slice::<Value>(body)
            .map_err(|e| ApiError::BadRequest(format!("the body of the request is not valid JSON: {e}")))?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => yaml(body)?,
        other => return Err(ApiError::UnsupportedMediaType(format!("{ACCEPTED} (got {other})"))),
    };
    if !value.is_object() {
        return Err(ApiError::BadRequest("the body of the request must be a JSON object".into()));
    }
    Ok(value)
}

/// Decodes a YAML document into JSON.
pub fn yaml(body: &[u8]) -> ApiResult<Value> {
    serde_yaml::from_slice::<Value>(body)
        .map_err(|e| ApiError::BadRequest(format!("the body of the request is not valid YAML: {e}")))
}

/// The magic prefix of Kubernetes protobuf bodies.
const PROTOBUF_MAGIC: &[u8] = b"k8s\0";

/// `runtime.Unknown`: the envelope around every Kubernetes protobuf body.
#[derive(Clone, PartialEq, prost::Message)]
struct Unknown {
    #[prost(bytes = "vec", tag = "2")]
    raw: Vec<u8>,
}

/// The parts of `authorization.k8s.io/v1` `SelfSubjectAccessReview` the server reads.
#[derive(Clone, PartialEq, prost::Message)]
struct AccessReview {
    #[prost(message, optional, tag = "2")]
    spec: Option<AccessReviewSpec>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AccessReviewSpec {
    #[prost(message, optional, tag = "1")]
    resource_attributes: Option<ResourceAttributes>,
    #[prost(message, optional, tag = "2")]
    non_resource_attributes: Option<NonResourceAttributes>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceAttributes {
    #[prost(string, optional, tag = "1")]
    namespace: Option<String>,
    #[prost(string, optional, tag = "2")]
    verb: Option<String>,
    #[prost(string, optional, tag = "3")]
    group: Option<String>,
    #[prost(string, optional, tag = "4")]
    version: Option<String>,
    #[prost(string, optional, tag = "5")]
    resource: Option<String>,
    #[prost(string, optional, tag = "6")]
    subresource: Option<String>,
    #[prost(string, optional, tag = "7")]
    name: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NonResourceAttributes {
    #[prost(string, optional, tag = "1")]
    path: Option<String>,
    #[prost(string, optional, tag = "2")]
    verb: Option<String>,
}

/// Decodes a `SelfSubjectAccessReview` body (JSON, YAML or protobuf) into its JSON `spec`.
pub fn decode_access_review(headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    if content_type(headers) != "application/vnd.kubernetes.protobuf" {
        let review = decode_object(headers, body)?;
        return Ok(review.get("spec").cloned().unwrap_or_else(|| serde_json::json!({})));
    }
    let raw = body
        .strip_prefix(PROTOBUF_MAGIC)
        .ok_or_else(|| ApiError::BadRequest("protobuf body lacks the k8s\\0 prefix".into()))?;
    let bad = |e: prost::DecodeError| ApiError::BadRequest(format!("malformed protobuf body: {e}"));
    let envelope = <Unknown as prost::Message>::decode(raw).map_err(bad)?;
    let review = <AccessReview as prost::Message>::decode(envelope.raw.as_slice()).map_err(bad)?;
    let spec = review.spec.unwrap_or_default();
    let mut json = serde_json::Map::new();
    if let Some(r) = spec.resource_attributes {
        let fields = [
            ("namespace", r.namespace),
            ("verb", r.verb),
            ("group", r.group),
            ("version", r.version),
            ("resource", r.resource),
            ("subresource", r.subresource),
            ("name", r.name),
        ];
        let attrs: serde_json::Map<String, Value> =
            fields.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_string(), Value::String(v)))).collect();
        json.insert("resourceAttributes".into(), Value::Object(attrs));
    }
    if let Some(n) = spec.non_resource_attributes {
        let fields = [("path", n.path), ("verb", n.verb)];
        let attrs: serde_json::Map<String, Value> =
            fields.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_string(), Value::String(v)))).collect();
        json.insert("nonResourceAttributes".into(), Value::Object(attrs));
    }
    Ok(Value::Object(json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_access_review_decodes_to_its_spec() {
        let review = AccessReview {
            spec: Some(AccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some("default".into()),
                    verb: Some("create".into()),
                    resource: Some("pods".into()),
                    ..ResourceAttributes::default()
                }),
                non_resource_attributes: None,
            }),
        };
        let envelope = Unknown { raw: prost::Message::encode_to_vec(&review) };
        let mut body = PROTOBUF_MAGIC.to_vec();
        body.extend(prost::Message::encode_to_vec(&envelope));
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/vnd.kubernetes.protobuf".parse().expect("header"));
        let spec = decode_access_review(&headers, &Bytes::from(body)).expect("decodes");
        assert_eq!(spec["resourceAttributes"]["verb"], "create");
        assert_eq!(spec["resourceAttributes"]["resource"], "pods");
    }

    #[test]
    fn unsupported_media_types_and_oversized_bodies_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().expect("header"));
        let err = decode_object(&headers, &Bytes::from_static(b"{}")).expect_err("415");
        assert_eq!(err.code_and_reason().0.as_u16(), 415);
        let big = Bytes::from(vec![b' '; MAX_BODY + 1]);
        let err = decode_object(&HeaderMap::new(), &big).expect_err("413");
        assert_eq!(err.code_and_reason().0.as_u16(), 413);
        let err = decode_object(&HeaderMap::new(), &Bytes::from_static(b"{not json")).expect_err("400");
        assert_eq!(err.code_and_reason().0.as_u16(), 400);
    }
}
