//! The three PATCH body formats kube-apiserver accepts, as pure functions over JSON values.
//!
//! - [`json_merge`]: RFC 7386 JSON merge patch (`application/merge-patch+json`).
//! - [`json_patch`]: RFC 6902 JSON patch (`application/json-patch+json`).
//! - [`strategic_merge`]: Kubernetes strategic merge patch
//!   (`application/strategic-merge-patch+json`), steered by the patch extensions of the kind's
//!   `OpenAPI` schema, which [`SchemaNode`] reads.
//!
//! Each takes the stored object and the request body and returns the patched object or a
//! [`PatchError`] a kubectl user can act on; [`PatchError::status_code`] says which HTTP status
//! kube-apiserver answers with. Nothing here validates the result against its kind: the caller
//! decodes and validates it as it would a PUT.

mod json;
mod list;
mod schema;
mod strategic;

pub use crate::openapi::SchemaNode;
pub use json::{json_merge, json_patch};
pub use strategic::strategic_merge;

pub(crate) use schema::includes_strategy;

/// Why a patch could not be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatchError {
    /// The patch body, the object it applies to, or the result is not a JSON object.
    #[error("{what} must be a JSON object, not {found}")]
    NotAnObject {
        /// What had the wrong shape, such as "a merge patch body".
        what: &'static str,
        /// The JSON type it had instead.
        found: &'static str,
    },
    /// The JSON patch body is not a list of RFC 6902 operations.
    #[error(
        "invalid JSON patch: {reason}; expected a list of operations such as \
         [{{\"op\": \"replace\", \"path\": \"/spec/replicas\", \"value\": 3}}]"
    )]
    InvalidJsonPatch {
        /// What the parser rejected.
        reason: String,
    },
    /// A JSON patch operation could not be applied; no operation of the patch took effect.
    #[error("JSON patch operation {index} ({op} \"{path}\") failed: {reason}")]
    OperationFailed {
        /// Zero-based position of the operation in the patch.
        index: usize,
        /// The operation name, such as `test`.
        op: &'static str,
        /// The operation's `path`.
        path: String,
        /// Why it failed.
        reason: &'static str,
    },
    /// A strategic merge patch directive (`$patch`, `$retainKeys`, `$setElementOrder/…`,
    /// `$deleteFromPrimitiveList/…`) is unknown or malformed, or does not fit the field it is on.
    #[error("invalid strategic merge patch at {path}: {reason}")]
    InvalidDirective {
        /// Where in the object, such as `.spec.containers[name=web]`.
        path: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// An item of a list merged by key does not carry the key.
    #[error(
        "invalid strategic merge patch at {path}: items of this list are matched by \"{key}\", \
         so every item in the patch must be an object that sets \"{key}\""
    )]
    MissingMergeKey {
        /// Where in the object.
        path: String,
        /// The merge key the schema declares for the list.
        key: String,
    },
    /// A map with `$retainKeys` sets a field the directive does not keep.
    #[error(
        "invalid strategic merge patch at {path}: \"{field}\" is set but not listed in $retainKeys; \
         add it to $retainKeys or drop it from the patch"
    )]
    RetainKeysMismatch {
        /// Where in the object.
        path: String,
        /// The field set in the patch but missing from `$retainKeys`.
        field: String,
    },
}

impl PatchError {
    /// The HTTP status kube-apiserver answers this error with: 422 Unprocessable Entity when the
    /// patch is well-formed but cannot apply to this object, 400 Bad Request otherwise.
    #[must_use]
    pub fn status_code(&self) -> u16 {
        match self {
            Self::OperationFailed { .. } | Self::MissingMergeKey { .. } | Self::RetainKeysMismatch { .. } => 422,
            Self::NotAnObject { .. } | Self::InvalidJsonPatch { .. } | Self::InvalidDirective { .. } => 400,
        }
    }
}

/// The JSON type of `value`, for error messages.
fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
