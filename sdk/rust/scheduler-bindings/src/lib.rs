//! Bindings wit-bindgen generates for the `scheduler-plugin` world. Plugin authors use
//! `capstan_plugin_sdk::scheduler` instead; this crate exists only because wit-bindgen exports
//! each world's `lifecycle` macro at the crate root, so two worlds cannot share one crate.
#![allow(unsafe_code, reason = "the generated bindings are unsafe glue")]

pub use wit_bindgen;

// The generated code names paths as a plugin crate sees them (through `capstan_plugin_sdk`);
// inside this crate the same paths lead here.
extern crate self as capstan_plugin_sdk;

#[doc(hidden)]
pub mod __private {
    pub use crate as scheduler_bindings;
    pub use wit_bindgen;
}

mod generated {
    #![allow(missing_docs, clippy::pedantic, reason = "generated code; the WIT documents it")]
    wit_bindgen::generate!({
    path: "../../../wit",
    world: "capstan:plugin/scheduler-plugin@0.1.0",
    pub_export_macro: true,
    export_macro_name: "__export_scheduler_plugin",
    default_bindings_module: "capstan_plugin_sdk::__private::scheduler_bindings",
    runtime_path: "capstan_plugin_sdk::__private::wit_bindgen::rt",
    additional_derives: [Clone],
    });
}
pub use generated::*;

use capstan::plugin::types::{Label, ResourceAmount};
use exports::capstan::plugin::scheduler::{Code, NodeId, NodeInfo, PodInfo, Status};

impl Status {
    /// The pod may proceed.
    #[must_use]
    pub fn success() -> Self {
        Self { code: Code::Success, reasons: Vec::new() }
    }

    /// A status with `code` and `reasons`.
    #[must_use]
    pub fn new(code: Code, reasons: Vec<String>) -> Self {
        Self { code, reasons }
    }

    /// The pod does not fit, for `reason`; preemption might help.
    #[must_use]
    pub fn unschedulable(reason: impl Into<String>) -> Self {
        Self::new(Code::Unschedulable, vec![reason.into()])
    }

    /// The pod does not fit, for `reason`, and preemption cannot help.
    #[must_use]
    pub fn unresolvable(reason: impl Into<String>) -> Self {
        Self::new(Code::UnschedulableAndUnresolvable, vec![reason.into()])
    }

    /// The plugin has nothing to do for this pod: from `pre-filter` its Filter is not called,
    /// from `pre-score` (as the error) its Score is not, as upstream's `Skip`.
    #[must_use]
    pub fn skip() -> Self {
        Self::new(Code::Skip, Vec::new())
    }

    /// An internal error, for `reason`.
    #[must_use]
    pub fn error(reason: impl Into<String>) -> Self {
        Self::new(Code::Error, vec![reason.into()])
    }

    /// Whether the code is success.
    #[must_use]
    pub fn is_success(&self) -> bool {
        matches!(self.code, Code::Success)
    }
}

impl NodeInfo {
    /// The node's label `key`, if set.
    #[must_use]
    pub fn label(&self, key: &str) -> Option<&str> {
        find_label(&self.labels, key)
    }

    /// The allocatable amount of `resource` in thousandths (0 when absent).
    #[must_use]
    pub fn allocatable(&self, resource: &str) -> i64 {
        amount(&self.allocatable, resource)
    }

    /// The requested amount of `resource` in thousandths (0 when absent).
    #[must_use]
    pub fn requested(&self, resource: &str) -> i64 {
        amount(&self.requested, resource)
    }
}

impl NodeInfo {
    /// A node with handle `id` and `name`, nothing else set: a start for tests and native use.
    #[must_use]
    pub fn named(id: NodeId, name: &str) -> Self {
        Self {
            id,
            name: name.to_owned(),
            labels: Vec::new(),
            taints: Vec::new(),
            unschedulable: false,
            allocatable: Vec::new(),
            requested: Vec::new(),
            pod_count: 0,
            used_ports: Vec::new(),
            images: Vec::new(),
            object: None,
            pods: Vec::new(),
        }
    }
}

impl PodInfo {
    /// A pod `namespace/name`, nothing else set: a start for tests and native use.
    #[must_use]
    pub fn named(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: String::new(),
            labels: Vec::new(),
            requests: Vec::new(),
            node_selector: Vec::new(),
            tolerations: Vec::new(),
            priority: 0,
            node_name: None,
            affinity: None,
            host_ports: Vec::new(),
            images: Vec::new(),
            object: "{}".to_owned(),
        }
    }

    /// The pod's label `key`, if set.
    #[must_use]
    pub fn label(&self, key: &str) -> Option<&str> {
        find_label(&self.labels, key)
    }

    /// The pod's request of `resource` in thousandths (0 when absent).
    #[must_use]
    pub fn request(&self, resource: &str) -> i64 {
        amount(&self.requests, resource)
    }
}

/// Whether two short names are equal, compared inline: lookups by name run for every node of
/// every cycle, and a call to `memcmp` per candidate cost more than the comparison itself.
#[inline]
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// The value of label `key` in `labels`.
#[must_use]
pub fn find_label<'a>(labels: &'a [Label], key: &str) -> Option<&'a str> {
    labels.iter().find(|label| same(&label.key, key)).map(|label| label.value.as_str())
}

/// Labels from `(key, value)` pairs.
#[must_use]
pub fn labels(pairs: &[(&str, &str)]) -> Vec<Label> {
    pairs.iter().map(|(key, value)| Label { key: (*key).to_owned(), value: (*value).to_owned() }).collect()
}

/// A resource list from `(name, milli-value)` pairs.
#[must_use]
pub fn resources(pairs: &[(&str, i64)]) -> Vec<ResourceAmount> {
    pairs
        .iter()
        .map(|(name, milli_value)| ResourceAmount { name: (*name).to_owned(), milli_value: *milli_value })
        .collect()
}

/// The amount of `resource` in `list` (0 when absent).
#[must_use]
pub fn amount(list: &[ResourceAmount], resource: &str) -> i64 {
    list.iter().find(|amount| same(&amount.name, resource)).map_or(0, |amount| amount.milli_value)
}

use exports::capstan::plugin::scheduler::{Taint, Toleration};

impl Toleration {
    /// Whether this toleration tolerates `taint`: the effect matches (or the toleration names
    /// none), the key matches (an empty key with `Exists` matches every key), and for `Equal` the
    /// values are equal.
    #[must_use]
    pub fn tolerates(&self, taint: &Taint) -> bool {
        let effect_ok = self.effect.is_none_or(|effect| effect == taint.effect);
        let key_ok = if self.key.is_empty() { self.exists } else { self.key == taint.key };
        effect_ok && key_ok && (self.exists || self.value == taint.value)
    }
}

/// The framework's maximum node score.
pub const MAX_NODE_SCORE: i64 = 100;

/// Upstream's default normalisation: scales scores so the highest becomes 100 (all stay 0 when
/// the highest is 0); with `reverse`, a score becomes 100 minus that (all 100 when the highest
/// is 0).
pub fn normalize_to_max(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    for score in scores.iter_mut() {
        let scaled = if max == 0 { 0 } else { *score * MAX_NODE_SCORE / max };
        *score = if reverse { MAX_NODE_SCORE - scaled } else { scaled };
    }
}
