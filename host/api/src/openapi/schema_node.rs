//! Walking the component schemas [`OpenApi::definitions`](super::OpenApi::definitions) serves:
//! from a definition to its properties, list items and map values, through the `$ref` and
//! `allOf: [{$ref}]` wrappers Kubernetes schemas use.
//!
//! Strategic merge patch and server-side apply both steer by these schemas; each adds the
//! readings of the extensions it needs in its own `impl` block (`patch::schema`,
//! `apply::schema`), so the navigation itself lives here once.

use serde_json::{Map, Value};

/// How many `$ref` and `allOf` hops a lookup follows. The served schemas nest at most two deep;
/// the bound keeps a cyclic or malformed map from recursing forever.
const MAX_HOPS: usize = 8;

/// A position in an `OpenAPI` v3 schema map (`components.schemas`, as kube-apiserver serves it).
///
/// A node either points at a schema or knows nothing. Lookups below an unknown node stay unknown;
/// what an unknown node means is up to the reader: strategic merge patch treats unknown parts
/// like a JSON merge patch (maps merged, lists replaced), server-side apply like
/// structured-merge-diff's untyped data (every object key a map entry, lists atomic).
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

    /// A node that knows nothing, for unknown fields and kinds without a schema (custom
    /// resources).
    #[must_use]
    pub fn unknown(defs: &'a Map<String, Value>) -> Self {
        Self { defs, node: None }
    }

    /// Whether this node points at a schema.
    #[must_use]
    pub fn is_known(&self) -> bool {
        self.node.is_some()
    }

    /// The schema this node points at, as written: its `$ref` and `allOf` wrappers unresolved.
    #[must_use]
    pub fn value(&self) -> Option<&'a Value> {
        self.node
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

    /// A keyword or extension (`type`, `default`, `x-kubernetes-list-type`, …) of this node, or,
    /// when the node does not set it, of the definitions its `$ref` and `allOf` entries point to.
    #[must_use]
    pub fn keyword(&self, name: &str) -> Option<&'a Value> {
        let schema = self.node?;
        self.find(schema, &|schema: &'a Value| schema.get(name), 0)
    }

    /// A keyword or extension set on this node itself, ignoring what it references: for the
    /// extensions that describe a property rather than the definition the property points to.
    #[must_use]
    pub fn own_keyword(&self, name: &str) -> Option<&'a Value> {
        self.node?.get(name)
    }

    /// The schema of `name` inside an object: a declared property, else the map's value schema.
    pub(crate) fn field(&self, name: &str) -> SchemaNode<'a> {
        let property = self.property(name);
        if property.is_known() { property } else { self.additional_properties() }
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
    fn keyword_reads_through_references_and_own_keyword_does_not() {
        let defs = defs();
        let spec = SchemaNode::definition(&defs, "io.k8s.api.core.v1.PodSpec");
        let security_context = spec.property("securityContext");
        assert_eq!(security_context.keyword("type"), Some(&json!("object")));
        assert_eq!(security_context.own_keyword("type"), None);
        assert_eq!(security_context.own_keyword("allOf").map(Value::is_array), Some(true));
        assert_eq!(spec.property("containers").own_keyword("x-kubernetes-patch-merge-key"), Some(&json!("name")));
        assert_eq!(SchemaNode::unknown(&defs).keyword("type"), None);
    }

    #[test]
    fn items_follow_ref_into_the_definition() {
        let defs = defs();
        let image = SchemaNode::definition(&defs, "io.k8s.api.core.v1.PodSpec")
            .property("containers")
            .items()
            .property("image");
        assert_eq!(image.value(), Some(&json!({"type": "string"})));
    }

    #[test]
    fn property_follows_all_of_wrapper() {
        let defs = defs();
        let run_as_user = SchemaNode::definition(&defs, "io.k8s.api.core.v1.PodSpec")
            .property("securityContext")
            .property("runAsUser");
        assert_eq!(run_as_user.value(), Some(&json!({"type": "integer"})));
    }

    #[test]
    fn field_falls_back_to_additional_properties_for_maps() {
        let defs = defs();
        let spec = SchemaNode::definition(&defs, "io.k8s.api.core.v1.PodSpec");
        assert_eq!(spec.property("nodeSelector").field("disk").value(), Some(&json!({"type": "string"})));
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
