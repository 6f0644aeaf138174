//! What server-side apply reads from a kind's `OpenAPI` v3 schema: which fields a struct declares,
//! and how lists and maps merge (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`,
//! `x-kubernetes-map-type`, falling back to the strategic-merge-patch extensions).
//!
//! [`SchemaNode`](crate::patch::SchemaNode) walks the same schema map for strategic merge patch
//! but exposes only the patch extensions, so apply carries its own small navigator.

use serde_json::{Map, Value};

/// How many `$ref` and `allOf` hops a lookup follows, as in the strategic-merge-patch navigator:
/// the served schemas nest at most two deep, and the bound stops a cyclic map from looping.
const MAX_HOPS: usize = 8;

/// A position in the `OpenAPI` v3 component schemas of the served kinds.
///
/// A node either points at a schema or knows nothing. Below an unknown node apply treats values
/// as structured-merge-diff treats untyped ("deduced") data: every object key is a map entry,
/// objects merge key by key, and lists are atomic.
#[derive(Clone, Copy, Debug)]
pub struct Schema<'a> {
    defs: &'a Map<String, Value>,
    node: Option<&'a Value>,
}

/// How the items of a list merge and are owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ListType<'a> {
    /// Replaced and owned as a whole.
    Atomic,
    /// Primitive items, each merged and owned by its value.
    Set,
    /// Object items, each merged and owned by the values of these key fields.
    Map(Vec<&'a str>),
}

impl ListType<'_> {
    /// Whether items are merged and owned one by one.
    pub(crate) fn is_associative(&self) -> bool {
        !matches!(self, ListType::Atomic)
    }
}

impl<'a> Schema<'a> {
    /// The schema of definition `name` (e.g. `io.k8s.api.apps.v1.Deployment`) in `defs`, as
    /// [`OpenApi::definitions`](crate::openapi::OpenApi::definitions) serves them; unknown when
    /// there is no such definition.
    #[must_use]
    pub fn definition(defs: &'a Map<String, Value>, name: &str) -> Self {
        Self { defs, node: defs.get(name) }
    }

    /// A schema that knows nothing, for kinds without one.
    #[must_use]
    pub fn unknown(defs: &'a Map<String, Value>) -> Self {
        Self { defs, node: None }
    }

    /// Whether this object schema declares property `name`. A declared field is part of a
    /// struct; any other key is an entry of a map.
    pub(crate) fn declares(&self, name: &str) -> bool {
        self.property(name).node.is_some()
    }

    /// The schema of `name` inside an object: the declared property, else the map's value schema.
    pub(crate) fn field(&self, name: &str) -> Schema<'a> {
        let property = self.property(name);
        if property.node.is_some() {
            property
        } else {
            self.child(|schema| schema.get("additionalProperties").filter(|value| value.is_object()))
        }
    }

    /// The schema of a list's items.
    pub(crate) fn items(&self) -> Schema<'a> {
        self.child(|schema| schema.get("items"))
    }

    /// How this list merges: `x-kubernetes-list-type`, or for schemas that only carry strategic
    /// merge patch extensions, `merge` with a merge key as a map and `merge` alone as a set.
    pub(crate) fn list_type(&self) -> ListType<'a> {
        let merge_key = self.extension("x-kubernetes-patch-merge-key").and_then(Value::as_str);
        match self.extension("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("atomic") => ListType::Atomic,
            Some("set") => ListType::Set,
            Some("map") => {
                let keys: Vec<&'a str> = self
                    .extension("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|keys| keys.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if !keys.is_empty() {
                    ListType::Map(keys)
                } else if let Some(key) = merge_key {
                    ListType::Map(vec![key])
                } else {
                    ListType::Atomic
                }
            }
            _ if self.merges() => merge_key.map_or(ListType::Set, |key| ListType::Map(vec![key])),
            _ => ListType::Atomic,
        }
    }

    /// Whether this map or struct is replaced and owned as a whole (`x-kubernetes-map-type:
    /// atomic`, which upstream also uses for atomic structs).
    pub(crate) fn is_atomic_map(&self) -> bool {
        self.extension("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic")
    }

    /// The value a list-map key field takes when an item leaves it out.
    ///
    /// Upstream reads the schema's `default`. Our published schemas carry no defaults yet, so the
    /// one key default Kubernetes declares, `protocol: TCP` of container and service ports, is
    /// known here too; without it an applied port that omits its protocol would not match the
    /// defaulted port stored in the object.
    pub(crate) fn key_default(&self, key: &str) -> Option<Value> {
        let declared = self.property(key).extension("default").cloned();
        declared.or_else(|| (key == "protocol").then(|| Value::from("TCP")))
    }

    fn property(&self, name: &str) -> Schema<'a> {
        self.child(|schema| schema.get("properties")?.get(name))
    }

    /// An extension or keyword of this node, or of the definition it wraps.
    fn extension(&self, name: &str) -> Option<&'a Value> {
        let schema = self.node?;
        self.find(schema, &|schema: &'a Value| schema.get(name), 0)
    }

    /// Whether the strategic merge patch strategy includes `merge`.
    fn merges(&self) -> bool {
        self.extension("x-kubernetes-patch-strategy")
            .and_then(Value::as_str)
            .is_some_and(|strategy| strategy.split(',').any(|part| part.trim() == "merge"))
    }

    fn child(&self, pick: impl Fn(&'a Value) -> Option<&'a Value>) -> Schema<'a> {
        let node = self.node.and_then(|schema| self.find(schema, &pick, 0));
        Schema { defs: self.defs, node }
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
        let referenced = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|reference| self.defs.get(reference.rsplit('/').next()?));
        if let Some(found) = referenced.and_then(|target| self.find(target, pick, hops + 1)) {
            return Some(found);
        }
        schema.get("allOf")?.as_array()?.iter().find_map(|part| self.find(part, pick, hops + 1))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn defs() -> Map<String, Value> {
        let schemas = json!({
            "Spec": {"type": "object", "properties": {
                "ports": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/Port"},
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["containerPort", "protocol"],
                    "x-kubernetes-patch-strategy": "merge",
                    "x-kubernetes-patch-merge-key": "containerPort"
                },
                "containers": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/Port"},
                    "x-kubernetes-patch-strategy": "merge",
                    "x-kubernetes-patch-merge-key": "name"
                },
                "finalizers": {"type": "array", "items": {"type": "string"}, "x-kubernetes-patch-strategy": "merge"},
                "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                "args": {"type": "array", "items": {"type": "string"}},
                "conditions": {
                    "type": "array",
                    "x-kubernetes-list-type": "atomic",
                    "x-kubernetes-patch-strategy": "merge",
                    "x-kubernetes-patch-merge-key": "type"
                },
                "selector": {"allOf": [{"$ref": "#/components/schemas/Selector"}], "description": "wrapped"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}
            }},
            "Port": {"type": "object", "properties": {
                "containerPort": {"type": "integer"},
                "protocol": {"type": "string"},
                "name": {"type": "string", "default": "main"}
            }},
            "Selector": {"type": "object", "x-kubernetes-map-type": "atomic", "properties": {}}
        });
        match schemas {
            Value::Object(map) => map,
            _ => unreachable!("the literal is an object"),
        }
    }

    #[test]
    fn list_types_follow_list_extensions_then_patch_extensions() {
        let defs = defs();
        let spec = Schema::definition(&defs, "Spec");
        let cases = [
            ("ports", ListType::Map(vec!["containerPort", "protocol"])),
            ("containers", ListType::Map(vec!["name"])),
            ("finalizers", ListType::Set),
            ("tags", ListType::Set),
            ("args", ListType::Atomic),
            ("conditions", ListType::Atomic),
            ("missing", ListType::Atomic),
        ];
        for (field, expected) in cases {
            assert_eq!(spec.field(field).list_type(), expected, "{field}");
        }
    }

    #[test]
    fn map_type_is_read_through_references() {
        let defs = defs();
        let spec = Schema::definition(&defs, "Spec");
        assert!(spec.field("selector").is_atomic_map());
        assert!(!spec.field("labels").is_atomic_map());
        assert!(!Schema::unknown(&defs).is_atomic_map());
    }

    #[test]
    fn declared_fields_and_map_entries_differ() {
        let defs = defs();
        let spec = Schema::definition(&defs, "Spec");
        assert!(spec.declares("labels"));
        assert!(!spec.field("labels").declares("app"));
        assert_eq!(spec.field("labels").field("app").node, Some(&json!({"type": "string"})));
        assert!(!Schema::unknown(&defs).declares("spec"));
    }

    #[test]
    fn key_defaults_come_from_the_schema_or_the_known_protocol_default() {
        let defs = defs();
        let port = Schema::definition(&defs, "Spec").field("ports").items();
        assert_eq!(port.key_default("name"), Some(json!("main")));
        assert_eq!(port.key_default("protocol"), Some(json!("TCP")));
        assert_eq!(port.key_default("containerPort"), None);
    }
}
