//! Label and field selectors: the `labelSelector` and `fieldSelector` query parameters, and
//! `metav1.LabelSelector` objects as controllers and the scheduler meet them.
//!
//! Both follow `k8s.io/apimachinery`: label selectors are a small grammar of requirements joined
//! by `,` (AND) whose keys and values are validated like labels; field selectors are `field=value`
//! terms over a fixed set of fields per kind (see [`supported_fields`]).

mod field;
mod label;

pub use field::{FieldSelector, supported_fields};
pub use label::LabelSelector;

/// Why a selector was rejected. The API server answers these with 400 Bad Request and this text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The label selector text does not follow the grammar.
    #[error("unable to parse label selector {selector:?}: {reason}")]
    LabelSyntax {
        /// The selector as given.
        selector: String,
        /// What was found and what was expected instead.
        reason: String,
    },
    /// A requirement's key is not a valid label key.
    #[error("invalid label key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A requirement's value is not a valid label value.
    #[error("invalid label value {value:?} at key {key:?}: {reason}")]
    InvalidValue {
        /// The key the value belongs to.
        key: String,
        /// The value as given.
        value: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A requirement has the wrong number or kind of values for its operator.
    #[error("invalid requirement on {key:?}: {reason}")]
    InvalidRequirement {
        /// The key of the requirement.
        key: String,
        /// What the operator needs.
        reason: String,
    },
    /// A `metav1.LabelSelector` object is malformed.
    #[error("invalid label selector object: {0}")]
    InvalidObject(String),
    /// A field selector term is not `field=value`, `field==value` or `field!=value`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    FieldSyntax {
        /// The selector as given.
        selector: String,
        /// The term that could not be split.
        term: String,
    },
    /// A field selector value uses a backslash before a character that needs no escaping.
    #[error("invalid field selector: invalid escape sequence: {0}")]
    InvalidEscape(String),
    /// A field selector value contains `,` or `=` without a backslash before it.
    #[error("invalid field selector: unescaped character in value: {0}")]
    UnescapedCharacter(char),
    /// The field cannot be selected on for this kind.
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}
