//! The REST verbs on stored resources, one function each, sharing the write rules in
//! [`crate::objects`]: reads and lists in [`list`], writes (create, update, patch, server-side
//! apply) in [`write`], deletion in [`delete`].

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use capstan_api::ResourceInfo;
use capstan_api::selector::{FieldSelector, LabelSelector};
use capstan_api::table::{self, IncludeObject, TableOptions};
use serde_json::{Value, json};

use crate::body;
use crate::meta;
use crate::objects::{self, ObjectRef};
use crate::routing::{Query, ResourcePath};
use crate::server::ApiServer;
use crate::status::{ApiError, ApiResult, Cause};

mod delete;
mod list;
mod write;

pub use delete::{delete, delete_collection};
pub use list::{Selectors, list};
pub use write::{create, patch, update};
pub(crate) use write::{field_manager, track_fields};

/// One request to a resource: everything a verb handler needs.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    /// The server.
    pub server: &'a ApiServer,
    /// The catalog snapshot the request was routed with.
    pub catalog: &'a crate::server::Catalog,
    /// The resource, namespace, name and subresource.
    pub path: &'a ResourcePath<'a>,
    /// The query string.
    pub query: &'a Query,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The request body.
    pub body: &'a Bytes,
    /// Who is asking, when authenticated.
    pub identity: Option<&'a crate::auth::Identity>,
    /// Warnings for the client gathered while serving (admission policies add them).
    pub warnings: &'a std::sync::Mutex<Vec<String>>,
}

impl Call<'_> {
    /// Queues warnings for the response's `Warning` headers.
    pub fn add_warnings(&self, warnings: &[String]) {
        if !warnings.is_empty() {
            self.warnings.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(warnings);
        }
    }

    /// Adds the queued warnings to `response`.
    pub fn attach_warnings(&self, mut response: Response) -> Response {
        let warnings = std::mem::take(&mut *self.warnings.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let headers = response.headers_mut();
        for warning in warnings {
            let text = format!("299 - {}", serde_json::Value::String(warning));
            if let Ok(value) = HeaderValue::from_str(&text) {
                headers.append(header::WARNING, value);
            }
        }
        response
    }
}

/// A JSON response.
pub fn json_response(code: StatusCode, value: &Value, warnings: &[String]) -> Response {
    let mut response = (code, crate::body::json_bytes(value)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for warning in warnings {
        let text = format!("299 - {}", serde_json::Value::String(warning.clone()));
        if let Ok(value) = HeaderValue::from_str(&text) {
            headers.append(header::WARNING, value);
        }
    }
    response
}

/// A JSON response from already-encoded bytes.
pub fn raw_json_response(code: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (code, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Whether the client asked for a `meta.k8s.io/v1` `Table`.
#[must_use]
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.split(',').any(|part| part.replace(' ', "").contains("as=Table")))
}

/// Table options from the query string.
#[must_use]
pub fn table_options(query: &Query) -> TableOptions {
    let include_object = match query.get("includeObject") {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    };
    TableOptions { include_object, now: jiff::Timestamp::now() }
}

impl ResourcePath<'_> {
    fn object_ref(&self, name: &str) -> ObjectRef<'_> {
        ObjectRef { info: self.info, namespace: self.namespace.clone(), name: name.to_string() }
    }

    fn named(&self) -> ApiResult<ObjectRef<'_>> {
        let name = self.name.as_deref().ok_or(ApiError::MethodNotAllowed)?;
        if self.info.namespaced && self.namespace.is_none() {
            return Err(ApiError::NoRoute);
        }
        Ok(self.object_ref(name))
    }
}

/// `GET` one object.
pub async fn get(call: &Call<'_>) -> ApiResult<Response> {
    let Call { server, path, query, headers, .. } = *call;
    let object = server.objects.get(&path.named()?).await?;
    if wants_table(headers) {
        let table = table::table(path.info, std::slice::from_ref(&object), json!({}), &table_options(query));
        return Ok(json_response(StatusCode::OK, &table, &[]));
    }
    Ok(json_response(StatusCode::OK, &object, &[]))
}

pub(super) fn strip_version(object: &Value) -> Value {
    let mut object = object.clone();
    meta::metadata_mut(&mut object).remove("resourceVersion");
    object
}
