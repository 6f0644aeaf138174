//! Capstan's Kubernetes API server: REST over HTTPS in front of the store.
//!
//! It owns everything between an HTTP request and the store: TLS and authentication, discovery,
//! OpenAPI, routing to resources, the verbs (get, list, watch, create, update, patch, delete),
//! object metadata rules, defaulting, tables, and errors as Kubernetes `Status` objects. It must
//! not contain kind-specific business logic that belongs to controllers, the scheduler or the node.
//!
//! Start with [`server::start`]; requests flow through [`server::router`] into [`routing`] and
//! then [`handlers`] or [`watch`].

pub(crate) mod admission;
pub mod auth;
pub mod body;
pub mod bootstrap;
pub mod bootstrap_tokens;
pub mod cache;
pub mod catalog;
pub mod conditions;
pub mod defaults;
pub mod discovery;
pub mod handlers;
pub mod meta;
pub mod metrics;
pub mod metrics_api;
pub mod node_proxy;
pub mod objects;
pub mod pki;
pub mod plugins;
pub mod proto;
pub mod routing;
pub mod sa_tokens;
pub mod server;
pub mod status;
pub mod subresources;
pub mod validation;
pub mod watch;

pub use server::{Config, ExtraMetrics, KUBERNETES_VERSION, MetricsSource, Running, ServerError, start};
