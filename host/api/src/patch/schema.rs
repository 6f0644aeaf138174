//! The patch metadata strategic merge patch reads from a kind's `OpenAPI` v3 schema:
//! `x-kubernetes-patch-strategy` and `x-kubernetes-patch-merge-key`.
//!
//! The schema navigation itself is [`SchemaNode`]'s, shared with server-side apply.

use crate::openapi::SchemaNode;

impl<'a> SchemaNode<'a> {
    /// `x-kubernetes-patch-strategy`: `merge`, `merge,retainKeys`, `retainKeys` or `replace`.
    ///
    /// Read from this node itself: the extension sits on the property schema, not on the
    /// definition it references.
    #[must_use]
    pub fn patch_strategy(&self) -> Option<&'a str> {
        self.own_keyword("x-kubernetes-patch-strategy")?.as_str()
    }

    /// `x-kubernetes-patch-merge-key`: the item field that identifies items of a merged list.
    #[must_use]
    pub fn patch_merge_key(&self) -> Option<&'a str> {
        self.own_keyword("x-kubernetes-patch-merge-key")?.as_str()
    }

    /// Whether the comma-separated patch strategy includes `strategy`.
    pub(crate) fn has_strategy(&self, strategy: &str) -> bool {
        self.patch_strategy().is_some_and(|all| includes_strategy(all, strategy))
    }
}

/// Whether the comma-separated `x-kubernetes-patch-strategy` value `all` includes `strategy`.
pub(crate) fn includes_strategy(all: &str, strategy: &str) -> bool {
    all.split(',').any(|part| part.trim() == strategy)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn property_carries_its_own_patch_extensions() {
        let Value::Object(defs) = json!({"io.k8s.api.core.v1.PodSpec": {"properties": {"containers": {
            "items": {"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"},
            "x-kubernetes-patch-strategy": "merge",
            "x-kubernetes-patch-merge-key": "name"
        }}}}) else {
            unreachable!("the literal is an object")
        };
        let containers = SchemaNode::definition(&defs, "io.k8s.api.core.v1.PodSpec").property("containers");
        assert_eq!(containers.patch_strategy(), Some("merge"));
        assert_eq!(containers.patch_merge_key(), Some("name"));
        assert!(containers.has_strategy("merge"));
        assert!(!containers.has_strategy("retainKeys"));
    }
}
