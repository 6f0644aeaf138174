//! Errors as Kubernetes `Status` objects: the code, reason and message kubectl shows.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One field-level problem in an Invalid error (`details.causes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// Machine reason such as `FieldValueRequired` or `FieldValueInvalid`.
    pub reason: &'static str,
    /// The field path, such as `metadata.name`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Which object an error is about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// The resource, qualified by group for non-core groups (`deployments.apps`).
    pub resource: String,
    /// The API group.
    pub group: String,
    /// The kind.
    pub kind: String,
    /// The object's name.
    pub name: String,
}

/// Every way a request can fail, with Kubernetes' codes and reasons.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404 for an object.
    #[error("{} \"{}\" not found", .0.resource, .0.name)]
    NotFound(Target),
    /// 404 for a path the server does not serve.
    #[error("the server could not find the requested resource")]
    NoRoute,
    /// 409 on create.
    #[error("{} \"{}\" already exists", .0.resource, .0.name)]
    AlreadyExists(Target),
    /// 409 on a stale write or a failed precondition.
    #[error("Operation cannot be fulfilled on {} \"{}\": {}", .0.resource, .0.name, .1)]
    Conflict(Target, String),
    /// 409 when a server-side apply would change fields another manager owns.
    #[error("{0}")]
    ApplyConflict(String, Vec<Cause>),
    /// 422 with field causes.
    #[error("{} \"{}\" is invalid: {}", .0.kind, .0.name, causes_text(.1))]
    Invalid(Target, Vec<Cause>),
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 401.
    #[error("Unauthorized")]
    Unauthorized,
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 405.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// 406.
    #[error("{0}")]
    NotAcceptable(String),
    /// 410 for a compacted resourceVersion.
    #[error("{0}")]
    Expired(String),
    /// 429, for example an eviction a disruption budget forbids.
    #[error("{0}")]
    TooManyRequests(String),
    /// 413.
    #[error("Request entity too large: limit is {0} bytes")]
    TooLarge(usize),
    /// 415.
    #[error("the body of the request was in an unknown format - accepted media types include: {0}")]
    UnsupportedMediaType(String),
    /// 500.
    #[error("Internal error occurred: {0}")]
    Internal(String),
    /// 503, for example when the store is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// 501 for a route that a later part of Capstan serves.
    #[error("{0}")]
    NotImplemented(String),
    /// An admission policy's denial, with the HTTP code it asked for.
    #[error("{1}")]
    Denied(u16, String),
}

/// The HTTP status of an admission denial with `code`: 403 unless the code is an error code.
fn denial_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code)
        .ok()
        .filter(|c| c.is_client_error() || c.is_server_error())
        .unwrap_or(StatusCode::FORBIDDEN)
}

/// The Kubernetes reason kube-apiserver gives an error with `code`.
fn reason_of(code: StatusCode) -> &'static str {
    match code.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Gone",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Forbidden",
    }
}

fn causes_text(causes: &[Cause]) -> String {
    let parts: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
    if parts.len() == 1 { parts.concat() } else { format!("[{}]", parts.join(", ")) }
}

impl ApiError {
    /// The HTTP status and Kubernetes reason.
    #[must_use]
    pub fn code_and_reason(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NotFound(_) | ApiError::NoRoute => (StatusCode::NOT_FOUND, "NotFound"),
            ApiError::AlreadyExists(_) => (StatusCode::CONFLICT, "AlreadyExists"),
            ApiError::Conflict(..) | ApiError::ApplyConflict(..) => (StatusCode::CONFLICT, "Conflict"),
            ApiError::Invalid(..) => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            ApiError::NotAcceptable(_) => (StatusCode::NOT_ACCEPTABLE, "NotAcceptable"),
            ApiError::Expired(_) => (StatusCode::GONE, "Expired"),
            ApiError::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge"),
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
            ApiError::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, "NotImplemented"),
            ApiError::Denied(code, _) => {
                let code = denial_code(*code);
                (code, reason_of(code))
            }
        }
    }

    /// The `Status` object.
    #[must_use]
    pub fn status(&self) -> Value {
        let (code, reason) = self.code_and_reason();
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason,
            "code": code.as_u16(),
        });
        let details = match self {
            ApiError::NotFound(t) | ApiError::AlreadyExists(t) | ApiError::Conflict(t, _) => Some(target_details(t)),
            ApiError::Invalid(t, causes) => {
                let mut details = target_details(t);
                details["kind"] = json!(t.kind);
                details["causes"] = causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                Some(details)
            }
            ApiError::ApplyConflict(_, causes) => Some(json!({
                "causes": causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect::<Vec<_>>(),
            })),
            _ => None,
        };
        if let Some(details) = details {
            status["details"] = details;
        }
        status
    }
}

fn target_details(target: &Target) -> Value {
    let kind = target.resource.split('.').next().unwrap_or_default();
    let mut details = json!({"name": target.name, "kind": kind});
    if !target.group.is_empty() {
        details["group"] = json!(target.group);
    }
    details
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, _) = self.code_and_reason();
        let body = self.status().to_string();
        let mut response = (code, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

impl From<capstan_store::StoreError> for ApiError {
    fn from(error: capstan_store::StoreError) -> Self {
        use capstan_store::StoreError;
        match error {
            StoreError::Compacted { requested, .. } => {
                ApiError::Expired(format!("too old resource version: {requested}"))
            }
            StoreError::Unavailable { .. } | StoreError::Closed => ApiError::Unavailable(error.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// The result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
