//! Which fields an applied configuration sets, and which fields a write touches.

use serde_json::{Map, Value};

use super::fieldset::{FieldSet, PathElement};
use super::items::{applied_elements, stored_elements};
use super::schema::Schema;

/// The fields an applied configuration sets: every scalar, every item of an associative list,
/// every map entry, every atomic list or map as a whole, and every empty or null field (so a
/// manager can own "this is empty"). Struct fields with content are not themselves owned; the
/// fields inside them are.
pub(crate) fn applied_fields(config: &Value, schema: Schema<'_>) -> Result<FieldSet, String> {
    fields_of(config, schema, &mut Vec::new())
}

fn fields_of(value: &Value, schema: Schema<'_>, path: &mut Vec<PathElement>) -> Result<FieldSet, String> {
    let mut set = FieldSet::default();
    match value {
        Value::Object(fields) if !schema.is_atomic_map() => {
            for (key, child) in fields {
                let element = PathElement::field(key);
                path.push(element.clone());
                let mut owned = fields_of(child, schema.field(key), path)?;
                path.pop();
                if !schema.declares(key) || child.as_object().is_some_and(Map::is_empty) {
                    owned.set_member(true);
                }
                set.attach(element, owned);
            }
        }
        Value::Array(items) if schema.list_type().is_associative() => {
            let elements = applied_elements(items, &schema.list_type(), schema.items(), path)?;
            for (element, item) in elements.into_iter().zip(items) {
                path.push(element.clone());
                let mut owned = fields_of(item, schema.items(), path)?;
                path.pop();
                owned.set_member(true);
                set.attach(element, owned);
            }
        }
        _ => set.set_member(true),
    }
    Ok(set)
}

/// What a write changed, path by path.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Fields, list items and map entries that did not exist before.
    pub(crate) added: FieldSet,
    /// Scalars and atomic values that now hold something else.
    pub(crate) modified: FieldSet,
    /// Fields, list items and map entries that no longer exist.
    pub(crate) removed: FieldSet,
}

impl Changes {
    /// The fields whose value the write decided: added or modified.
    pub(crate) fn touched(&self) -> FieldSet {
        let mut touched = self.added.clone();
        touched.union(&self.modified);
        touched
    }

    /// Forgets every change at or below `path`.
    pub(crate) fn forget(&mut self, path: &[PathElement]) {
        for set in [&mut self.added, &mut self.modified, &mut self.removed] {
            set.remove_subtree(path);
        }
    }

    fn attach(&mut self, element: &PathElement, child: Changes) {
        self.added.attach(element.clone(), child.added);
        self.modified.attach(element.clone(), child.modified);
        self.removed.attach(element.clone(), child.removed);
    }
}

/// What changed from `old` to `new`.
///
/// Like structured-merge-diff's comparison, a list item or map entry that appears or disappears
/// is itself added or removed along with everything in it. A struct field that appears is not
/// itself added, only what it holds: upstream's answer there depends on whether the Go field is a
/// pointer, which JSON cannot tell, and ownership of the contents is what conflicts are about.
pub(crate) fn changes(old: &Value, new: &Value, schema: Schema<'_>) -> Changes {
    compare(Some(old), Some(new), schema, true)
}

fn compare(old: Option<&Value>, new: Option<&Value>, schema: Schema<'_>, declared: bool) -> Changes {
    let mut changes = Changes::default();
    if let Some((old_fields, new_fields)) = granular_maps(old, new, schema) {
        let new_keys = new_fields.into_iter().flat_map(Map::keys).filter(|key| entry(old_fields, key).is_none());
        for key in old_fields.into_iter().flat_map(Map::keys).chain(new_keys) {
            let child =
                compare(entry(old_fields, key), entry(new_fields, key), schema.field(key), schema.declares(key));
            changes.attach(&PathElement::field(key), child);
        }
    } else if let Some((old_items, new_items)) = associative_lists(old, new, schema) {
        let list_type = schema.list_type();
        let old_elements = stored_elements(old_items, &list_type, schema.items());
        let new_elements = stored_elements(new_items, &list_type, schema.items());
        let mut seen: Vec<&PathElement> = Vec::new();
        for element in old_elements.iter().chain(&new_elements) {
            if seen.contains(&element) {
                continue;
            }
            seen.push(element);
            let old_item = item_named(&old_elements, old_items, element);
            let new_item = item_named(&new_elements, new_items, element);
            changes.attach(element, compare(old_item, new_item, schema.items(), false));
        }
    } else {
        match (old, new) {
            (Some(old), Some(new)) if old != new => changes.modified.set_member(true),
            _ => {}
        }
    }
    if old.is_none() && new.is_some() && (!declared || is_leaf(new, schema)) {
        changes.added.set_member(true);
    }
    if old.is_some() && new.is_none() {
        changes.removed.set_member(true);
    }
    changes
}

/// The first item of `items` named `wanted`.
fn item_named<'v>(elements: &[PathElement], items: &'v [Value], wanted: &PathElement) -> Option<&'v Value> {
    elements.iter().position(|element| element == wanted).map(|index| &items[index])
}

/// The value of `key` in `fields`, if both exist.
fn entry<'v>(fields: Option<&'v Map<String, Value>>, key: &str) -> Option<&'v Value> {
    fields.and_then(|fields| fields.get(key))
}

/// The old and new entries of a map; `None` where a side is absent or null.
type MapPair<'v> = (Option<&'v Map<String, Value>>, Option<&'v Map<String, Value>>);

/// Both sides as granular maps, when the value is compared entry by entry: the schema does not
/// make it atomic, neither side is anything but an object (or null, or absent), and at least one
/// side has entries. Two empty sides compare as a leaf so that `{}` versus absent is a change.
fn granular_maps<'v>(old: Option<&'v Value>, new: Option<&'v Value>, schema: Schema<'_>) -> Option<MapPair<'v>> {
    if schema.is_atomic_map() {
        return None;
    }
    let as_map = |value: Option<&'v Value>| match value {
        None | Some(Value::Null) => Some(None),
        Some(Value::Object(fields)) => Some(Some(fields)),
        Some(_) => None,
    };
    let (old, new) = (as_map(old)?, as_map(new)?);
    if old.is_none_or(Map::is_empty) && new.is_none_or(Map::is_empty) {
        return None;
    }
    Some((old, new))
}

/// Both sides as associative lists, on the same terms as [`granular_maps`].
fn associative_lists<'v>(
    old: Option<&'v Value>,
    new: Option<&'v Value>,
    schema: Schema<'_>,
) -> Option<(&'v [Value], &'v [Value])> {
    if !schema.list_type().is_associative() {
        return None;
    }
    let as_list = |value: Option<&'v Value>| match value {
        None | Some(Value::Null) => Some(&[][..]),
        Some(Value::Array(items)) => Some(items.as_slice()),
        Some(_) => None,
    };
    let (old, new) = (as_list(old)?, as_list(new)?);
    if old.is_empty() && new.is_empty() {
        return None;
    }
    Some((old, new))
}

/// Whether `value` is owned as a whole rather than through what it contains.
fn is_leaf(value: Option<&Value>, schema: Schema<'_>) -> bool {
    match value {
        Some(Value::Object(fields)) => fields.is_empty() || schema.is_atomic_map(),
        Some(Value::Array(items)) => items.is_empty() || !schema.list_type().is_associative(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::apply::fieldset::display_path;
    use crate::apply::tests::{DEPLOYMENT, definitions};

    fn paths(set: &FieldSet) -> Vec<String> {
        set.paths().iter().map(|path| display_path(path)).collect()
    }

    #[test]
    fn applied_fields_of_a_deployment() {
        let defs = definitions();
        let config = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "annotations": {}},
            "spec": {
                "replicas": 2,
                "template": {"spec": {
                    "containers": [{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}], "args": ["-v"]}],
                    "nodeSelector": null
                }}
            }
        });
        let fields = applied_fields(&config, Schema::definition(defs, DEPLOYMENT)).expect("valid");
        assert_eq!(
            paths(&fields),
            [
                ".apiVersion",
                ".kind",
                ".metadata.annotations",
                ".metadata.name",
                ".metadata.labels.app",
                ".spec.replicas",
                ".spec.template.spec.nodeSelector",
                r#".spec.template.spec.containers[name="nginx"]"#,
                r#".spec.template.spec.containers[name="nginx"].args"#,
                r#".spec.template.spec.containers[name="nginx"].image"#,
                r#".spec.template.spec.containers[name="nginx"].name"#,
                r#".spec.template.spec.containers[name="nginx"].ports[containerPort=80,protocol="TCP"]"#,
                r#".spec.template.spec.containers[name="nginx"].ports[containerPort=80,protocol="TCP"].containerPort"#,
            ]
        );
    }

    #[test]
    fn unknown_schemas_own_every_object_key() {
        let defs = definitions();
        let config = json!({"spec": {"size": 1, "tags": ["a"]}});
        let fields = applied_fields(&config, Schema::unknown(defs)).expect("valid");
        assert_eq!(paths(&fields), [".spec", ".spec.size", ".spec.tags"]);
    }

    struct Case {
        name: &'static str,
        old: Value,
        new: Value,
        added: &'static [&'static str],
        modified: &'static [&'static str],
        removed: &'static [&'static str],
    }

    #[test]
    fn changes_between_deployments() {
        let defs = definitions();
        let containers = |containers: Value| json!({"spec": {"template": {"spec": {"containers": containers}}}});
        let cases = [
            Case {
                name: "scalar modified",
                old: json!({"spec": {"replicas": 1}}),
                new: json!({"spec": {"replicas": 3}}),
                added: &[],
                modified: &[".spec.replicas"],
                removed: &[],
            },
            Case {
                name: "struct appears: its contents are added, not the struct",
                old: json!({}),
                new: json!({"spec": {"replicas": 3, "paused": false}}),
                added: &[".spec.paused", ".spec.replicas"],
                modified: &[],
                removed: &[],
            },
            Case {
                name: "map entries and list items are added and removed themselves",
                old: json!({"metadata": {"labels": {"a": "1"}}}),
                new: json!({"metadata": {"labels": {"b": "2"}}}),
                added: &[".metadata.labels.b"],
                modified: &[],
                removed: &[".metadata.labels.a"],
            },
            Case {
                name: "keyed items compare field by field",
                old: containers(json!([{"name": "a", "image": "x"}, {"name": "b", "image": "y"}])),
                new: containers(json!([{"name": "b", "image": "y"}, {"name": "a", "image": "z"}, {"name": "c"}])),
                added: &[
                    r#".spec.template.spec.containers[name="c"]"#,
                    r#".spec.template.spec.containers[name="c"].name"#,
                ],
                modified: &[r#".spec.template.spec.containers[name="a"].image"#],
                removed: &[],
            },
            Case {
                name: "atomic lists change as a whole",
                old: containers(json!([{"name": "a", "args": ["1"]}])),
                new: containers(json!([{"name": "a", "args": ["1", "2"]}])),
                added: &[],
                modified: &[r#".spec.template.spec.containers[name="a"].args"#],
                removed: &[],
            },
            Case {
                name: "empty and absent differ",
                old: json!({"spec": {"template": {"spec": {}}}}),
                new: json!({"spec": {"template": {"spec": {"securityContext": {}}}}}),
                added: &[".spec.template.spec.securityContext"],
                modified: &[],
                removed: &[],
            },
            Case {
                name: "nothing changed",
                old: containers(json!([{"name": "a"}])),
                new: containers(json!([{"name": "a"}])),
                added: &[],
                modified: &[],
                removed: &[],
            },
        ];
        for case in cases {
            let changes = changes(&case.old, &case.new, Schema::definition(defs, DEPLOYMENT));
            assert_eq!(paths(&changes.added), case.added, "{}: added", case.name);
            assert_eq!(paths(&changes.modified), case.modified, "{}: modified", case.name);
            assert_eq!(paths(&changes.removed), case.removed, "{}: removed", case.name);
        }
    }
}
