//! What server-side apply reads from a kind's `OpenAPI` v3 schema: which fields a struct declares,
//! and how lists and maps merge (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`,
//! `x-kubernetes-map-type`, falling back to the strategic-merge-patch extensions).
//!
//! The schema navigation is [`SchemaNode`]'s, shared with strategic merge patch. Unlike patch,
//! apply reads every extension through `$ref` and `allOf`, so a definition's own
//! `x-kubernetes-map-type` counts for the properties that point at it.

use serde_json::Value;

use crate::openapi::SchemaNode;
use crate::patch::includes_strategy;

/// A position in the `OpenAPI` v3 component schemas of the served kinds, as apply reads it.
///
/// Below an unknown node apply treats values as structured-merge-diff treats untyped
/// ("deduced") data: every object key is a map entry, objects merge key by key, and lists are
/// atomic.
pub type Schema<'a> = SchemaNode<'a>;

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

impl<'a> SchemaNode<'a> {
    /// Whether this object schema declares property `name`. A declared field is part of a
    /// struct; any other key is an entry of a map.
    pub(crate) fn declares(&self, name: &str) -> bool {
        self.property(name).is_known()
    }

    /// How this list merges: `x-kubernetes-list-type`, or for schemas that only carry strategic
    /// merge patch extensions, `merge` with a merge key as a map and `merge` alone as a set.
    pub(crate) fn list_type(&self) -> ListType<'a> {
        let merge_key = self.keyword("x-kubernetes-patch-merge-key").and_then(Value::as_str);
        match self.keyword("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("atomic") => ListType::Atomic,
            Some("set") => ListType::Set,
            Some("map") => {
                let keys: Vec<&'a str> = self
                    .keyword("x-kubernetes-list-map-keys")
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
        self.keyword("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic")
    }

    /// The value a list-map key field takes when an item leaves it out.
    ///
    /// Upstream reads the schema's `default`. Our published schemas carry no defaults yet, so the
    /// one key default Kubernetes declares, `protocol: TCP` of container and service ports, is
    /// known here too; without it an applied port that omits its protocol would not match the
    /// defaulted port stored in the object.
    pub(crate) fn key_default(&self, key: &str) -> Option<Value> {
        let declared = self.property(key).keyword("default").cloned();
        declared.or_else(|| (key == "protocol").then(|| Value::from("TCP")))
    }

    /// Whether the strategic merge patch strategy includes `merge`.
    fn merges(&self) -> bool {
        self.keyword("x-kubernetes-patch-strategy")
            .and_then(Value::as_str)
            .is_some_and(|strategy| includes_strategy(strategy, "merge"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

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
        assert_eq!(spec.field("labels").field("app").value(), Some(&json!({"type": "string"})));
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
