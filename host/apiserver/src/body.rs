//! Request bodies: JSON, YAML, and Kubernetes protobuf (decoded to JSON by [`crate::proto`]); and
//! JSON as the server writes it.

use axum::http::{HeaderMap, header};
use bytes::Bytes;
use serde_json::Value;

use crate::proto::ProtoError;
use crate::status::{ApiError, ApiResult};

/// `value` as compact JSON, as `Value`'s `Display` writes it, but through `serde_json`'s writer:
/// `Display` goes through a formatter and takes almost three times as long (a 1.5 KB Pod:
/// 4.2 µs against 1.5 µs).
#[must_use]
pub fn json_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    // Writing a `Value` into a `Vec` cannot fail: its keys are strings and a `Vec` takes any
    // bytes.
    let _ = serde_json::to_writer(&mut out, value);
    out
}

/// [`json_bytes`] as a `String` (`serde_json::to_string`, which writes the same way).
#[must_use]
pub fn json_text(value: &Value) -> String {
    // Cannot fail for a `Value`, as above.
    serde_json::to_string(value).unwrap_or_default()
}

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
        PROTOBUF => protobuf(body)?,
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

/// The media type of Kubernetes protobuf bodies.
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// Decodes a protobuf body into the JSON object a JSON client would have sent.
fn protobuf(body: &[u8]) -> ApiResult<Value> {
    crate::proto::decode(body).map_err(|e| match e {
        ProtoError::UnknownKind(_) => ApiError::UnsupportedMediaType(format!("{ACCEPTED} ({e})")),
        ProtoError::Malformed(_) => ApiError::BadRequest(e.to_string()),
    })
}

/// Decodes a `SelfSubjectAccessReview` body (JSON, YAML or protobuf) into its JSON `spec`.
pub fn decode_access_review(headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    let review = decode_object(headers, body)?;
    Ok(review.get("spec").cloned().unwrap_or_else(|| serde_json::json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protobuf_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, PROTOBUF.parse().expect("header"));
        headers
    }

    /// A protobuf body for `object` as client-go frames it.
    fn protobuf_body(api_version: &str, kind: &str, object: &impl prost::Message) -> Bytes {
        use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
        let envelope = Unknown {
            type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
            raw: Some(object.encode_to_vec()),
            ..Unknown::default()
        };
        Bytes::from([crate::proto::MAGIC, &prost::Message::encode_to_vec(&envelope)].concat())
    }

    #[test]
    fn protobuf_access_review_decodes_to_its_spec() {
        use k8s_pb::api::authorization::v1 as authz;
        let review = authz::SelfSubjectAccessReview {
            spec: Some(authz::SelfSubjectAccessReviewSpec {
                resource_attributes: Some(authz::ResourceAttributes {
                    verb: Some("create".into()),
                    resource: Some("pods".into()),
                    ..authz::ResourceAttributes::default()
                }),
                non_resource_attributes: None,
            }),
            ..authz::SelfSubjectAccessReview::default()
        };
        let body = protobuf_body("authorization.k8s.io/v1", "SelfSubjectAccessReview", &review);
        let spec = decode_access_review(&protobuf_headers(), &body).expect("decodes");
        assert_eq!(spec["resourceAttributes"]["verb"], "create");
        assert_eq!(spec["resourceAttributes"]["resource"], "pods");
    }

    #[test]
    fn protobuf_objects_decode_and_bad_ones_map_to_400_and_415() {
        use k8s_pb::api::core::v1::Namespace;
        use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        let namespace = Namespace {
            metadata: Some(ObjectMeta { name: Some("team-a".into()), ..ObjectMeta::default() }),
            ..Namespace::default()
        };
        let object =
            decode_object(&protobuf_headers(), &protobuf_body("v1", "Namespace", &namespace)).expect("decodes");
        assert_eq!(object["kind"], "Namespace");
        assert_eq!(object["metadata"]["name"], "team-a");
        let unknown = decode_object(&protobuf_headers(), &protobuf_body("v1", "Gizmo", &namespace)).expect_err("415");
        assert_eq!(unknown.code_and_reason().0.as_u16(), 415);
        let malformed = decode_object(&protobuf_headers(), &Bytes::from_static(b"k8s\0\x0a\xff")).expect_err("400");
        assert_eq!(malformed.code_and_reason().0.as_u16(), 400);
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
