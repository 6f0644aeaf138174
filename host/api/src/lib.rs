//! Capstan's object model: what the API server serves, independent of how it is served.
//!
//! It owns the built-in kinds (as `k8s-openapi` types), the resource registry (group, version,
//! kind, plural, scope, verbs, subresources), their OpenAPI schemas, label and field selectors,
//! the patch formats (strategic merge, JSON merge, JSON patch), and kubectl's table columns. It
//! does no I/O: storage and HTTP live in `capstan-store` and `capstan-apiserver`.
//!
//! Start with [`registry::Registry::builtin`].

pub mod apply;
pub mod conversion;
pub mod custom;
pub mod meta;
pub mod openapi;
pub mod patch;
pub mod plugin;
pub mod registry;
pub mod selector;
pub mod table;

pub use registry::{GroupVersionKind, Model, Registry, ResourceInfo, Subresource};
