//! Reading the patch metadata strategic merge patch needs out of `OpenAPI` v3 component schemas.

use serde_json::{Map, Value};

/// How many `$ref` and `allOf` hops a lookup follows. The served schemas nest at most two deep;
/// the bound keeps a cyclic or malformed map from recursing forever.
const MAX_HOPS: usize = 8;

/// A position in an `OpenAPI` v3 schema map (`components.schemas`, as kube-apiserver serves it).
///
/// A node either points at a schema or knows nothing. Lookups below an unknown node stay unknown,
/// and strategic merge patch treats unknown parts like a JSON merge patch: maps are merged and
/// lists replaced.
#[derive(Clone, Copy, Debug)]
pub struct SchemaNode<'a> {
    defs: &'a Map<String, Value>,
    node: Option<&'a Value>,
}

impl<'a> SchemaNode<'a> {
    /// The schema of definition `name` (e.g. `io.k8s.api.core.v1.Pod`) in `defs`; unknown when
    /// `defs` has no such definition.
    #[must_use]
    pub fn definition(defs: &'a Map<String, Value>, name: &str) -> Self {
        Self { defs, node: defs.get(name) }
    }

    /// A node that knows nothing (unknown fields, custom resources): lists are replaced, maps
    /// merged.
    #[must_use]
    pub fn unknown(defs: &'a Map<String, Value>) -> Self {
        Self { defs, node: None }
    }

    /// Whether this node points at a schema.
    #[must_use]
    pub fn is_known(&self) -> bool {
        self.node.is_some()
    }

    /// The schema of property `name`, following `$ref` and `allOf: [{$ref}]` wrappers.
    ///
    /// Only declared `properties` count; for the values of a map use
    /// [`additional_properties`](Self::additional_properties).
    #[must_use]
    pub fn property(&self, name: &str) -> SchemaNode<'a> {
        self.child(|schema| schema.get("properties")?.get(name))
    }

    /// The schema of the items of an array.
    #[must_use]
    pub fn items(&self) -> SchemaNode<'a> {
        self.child(|schema| schema.get("items"))
    }

    /// The schema of the values of a map (`additionalProperties`); unknown when the map allows
    /// anything (`true`) or declares nothing.
    #[must_use]
    pub fn additional_properties(&self) -> SchemaNode<'a> {
        self.child(|schema| schema.get("additionalProperties").filter(|value| value.is_object()))
    }

    /// `x-kubernetes-patch-strategy`: `merge`, `merge,retainKeys`, `retainKeys` or `replace`.
    ///
    /// Read from this node itself: the extension sits on the property schema, not on the
    /// definition it references.
    #[must_use]
    pub fn patch_strategy(&self) -> Option<&'a str> {
        self.node?.get("x-kubernetes-patch-strategy")?.as_str()
    }

    /// `x-kubernetes-patch-merge-key`: the item field that identifies items of a merged list.
    #[must_use]
    pub fn patch_merge_key(&self) -> Option<&'a str> {
        self.node?.get("x-kubernetes-patch-merge-key")?.as_str()
    }

    /// The schema of `name` inside an object: a declared property, else the map's value schema.
    pub(crate) fn field(&self, name: &str) -> SchemaNode<'a> {
        let property = self.property(name);
        if property.is_known() { property } else { self.additional_properties() }
    }

    /// Whether the comma-separated patch strategy includes `strategy`.
    pub(crate) fn has_strategy(&self, strategy: &str) -> bool {
        self.patch_strategy().is_some_and(|all| all.split(',').any(|part| part.trim() == strategy))
    }

    fn child(&self, pick: impl Fn(&'a Value) -> Option<&'a Value>) -> SchemaNode<'a> {
        let node = self.node.and_then(|schema| self.find(schema, &pick, 0));
        SchemaNode { defs: self.defs, node }
    }

    /// Looks for `pick` in `schema` itself, then in what its `$ref` and `allOf` entries point to.
    fn find(
        &self,
        schema: &'a Value,
        pick: &impl Fn(&'a Value) -> Option<&'a Value>,
        hops: usize,
    ) -> Option<&'a Value> {
        if let Some(found) = pick(schema) {
            return Some(found);
        }
        if hops >= MAX_HOPS {
            return None;
        }
        let referenced = schema.get("$ref").and_then(Value::as_str).and_then(|reference| self.resolve(reference));
        if let Some(found) = referenced.and_then(|target| self.find(target, pick, hops + 1)) {
            return Some(found);
        }
        schema.get("allOf")?.as_array()?.iter().find_map(|part| self.find(part, pick, hops + 1))
    }

    /// Resolves `#/components/schemas/<name>` (or the Swagger 2 `#/definitions/<name>`);
    /// definition names contain dots but never slashes.
    fn resolve(&self, reference: &str) -> Option<&'a Value> {
        self.defs.get(reference.rsplit('/').next()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defs() -> Map<String, Value> {
        let schemas = json!({
            "io.k8s.api.core.v1.PodSpec": {
                "type": "object",
                "properties": {
                    "containers": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"},
                        "x-kubernetes-patch-strategy": "merge",
                        "x-kubernetes-patch-merge-key": "name"
                    },
                    "securityContext": {
                        "description": "wrapped because a sibling of $ref is not allowed",
                        "allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSecurityContext"}]
                    },
                    "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
                    "overhead": {"type": "object", "additionalProperties": true}
                }
            },
            "io.k8s.api.core.v1.Container": {
                "type": "object",
                "properties": {"image": {"type": "string"}}
            },
            "io.k8s.api.core.v1.PodSecurityContext": {
                "type": "object",
                "properties": {"runAsUser": {"type": "integer"}}
            },
            "loop.A": {"$ref": "#/components/schemas/loop.B"},
            "loop.B": {"$ref": "#/components/schemas/loop.A"}
        });
        match schemas {
            Value::Object(map) => map,
            _ => unreachable!("the literal is an object"),
        }
    }

    #[test]
    fn property_carries_its_own_patch_extensions() {
        let defs = defs();
        let containers = SchemaNode::definition(&defs, "io.k8s.api.core.v1.PodSpec").property("containers");
        assert_eq!(containers.patch_strategy(), Some("merge"));
        assert_eq!(containers.patch_merge_key(), Some("name"));
        assert!(containers.has_strategy("merge"));
        assert!(!containers.has_strategy("retainKeys"));
    }

    #[test]
    fn items_follow_ref_into_the_definition() {
        let defs = defs();
        let image = SchemaNode::definition(&defs, "io.k8s.api.core.v1.PodSpec")
            .property("containers")
            .items()
            .property("image");
        assert_eq!(image.node, Some(&json!({"type": "string"})));
    }

    #[test]
    fn property_follows_all_of_wrapper() {
        let defs = defs();
        let run_as_user = SchemaNode::definition(&defs, "io.k8s.api.core.v1.PodSpec")
            .property("securityContext")
            .property("runAsUser");
        assert_eq!(run_as_user.node, Some(&json!({"type": "integer"})));
    }

    #[test]
    fn field_falls_back_to_additional_properties_for_maps() {
        let defs = defs();
        let spec = SchemaNode::definition(&defs, "io.k8s.api.core.v1.PodSpec");
        assert_eq!(spec.property("nodeSelector").field("disk").node, Some(&json!({"type": "string"})));
        assert!(!spec.property("overhead").additional_properties().is_known());
    }

    #[test]
    fn unknown_stays_unknown() {
        let defs = defs();
        let unknown = SchemaNode::unknown(&defs).property("spec").items().additional_properties();
        assert!(!unknown.is_known());
        assert_eq!(unknown.patch_strategy(), None);
        assert!(!SchemaNode::definition(&defs, "no.such.Kind").is_known());
        assert!(!SchemaNode::definition(&defs, "io.k8s.api.core.v1.PodSpec").property("missing").is_known());
    }

    #[test]
    fn cyclic_refs_end_as_unknown() {
        let defs = defs();
        assert!(!SchemaNode::definition(&defs, "loop.A").property("x").is_known());
    }
}
