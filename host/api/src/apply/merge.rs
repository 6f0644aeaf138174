//! Merging an applied configuration into the live object, and pruning what its manager stopped
//! applying.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::fieldset::{FieldSet, PathElement};
use super::items::{applied_elements, stored_elements};
use super::schema::{ListType, Schema};

/// `config` merged over `live`: fields the configuration sets take its values, maps and
/// associative lists merge entry by entry, and everything else (scalars, atomic lists and maps)
/// is replaced.
///
/// A null in the configuration clears a scalar or an atomic value but leaves a granular map or
/// list as it is, as structured-merge-diff merges it.
pub(crate) fn merge(live: Option<&Value>, config: &Value, schema: Schema<'_>) -> Result<Value, String> {
    merge_at(live, config, schema, &mut Vec::new())
}

fn merge_at(
    live: Option<&Value>,
    config: &Value,
    schema: Schema<'_>,
    path: &mut Vec<PathElement>,
) -> Result<Value, String> {
    match config {
        Value::Object(fields) if !schema.is_atomic_map() => {
            let mut merged = match live {
                Some(Value::Object(live)) => live.clone(),
                _ => Map::new(),
            };
            for (key, value) in fields {
                path.push(PathElement::field(key));
                let field = merge_at(merged.get(key), value, schema.field(key), path)?;
                path.pop();
                merged.insert(key.clone(), field);
            }
            Ok(Value::Object(merged))
        }
        Value::Array(items) => match schema.list_type() {
            ListType::Atomic => Ok(config.clone()),
            list_type => {
                let live = live.and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
                merge_list(live, items, &list_type, schema.items(), path)
            }
        },
        Value::Null if keeps_live(live, schema) => Ok(live.cloned().unwrap_or_default()),
        _ => Ok(config.clone()),
    }
}

/// Whether a null in the configuration leaves `live` alone: it is a non-empty granular map or
/// associative list.
fn keeps_live(live: Option<&Value>, schema: Schema<'_>) -> bool {
    match live {
        Some(Value::Object(fields)) => !fields.is_empty() && !schema.is_atomic_map(),
        Some(Value::Array(items)) => !items.is_empty() && schema.list_type().is_associative(),
        _ => false,
    }
}

/// Merges two associative lists item by item.
///
/// The order follows structured-merge-diff: items only the live list has keep their place, the
/// configuration's items come in its order, and items of both are merged where the
/// configuration puts them.
fn merge_list(
    live: &[Value],
    config: &[Value],
    list_type: &ListType<'_>,
    items: Schema<'_>,
    path: &mut Vec<PathElement>,
) -> Result<Value, String> {
    let config_elements = applied_elements(config, list_type, items, path)?;
    let live_elements = stored_elements(live, list_type, items);
    let mut live_position: HashMap<&PathElement, usize> = HashMap::new();
    for (index, element) in live_elements.iter().enumerate() {
        live_position.entry(element).or_insert(index);
    }
    let in_config: HashSet<&PathElement> = config_elements.iter().collect();
    let shared: Vec<&PathElement> = config_elements.iter().filter(|e| live_position.contains_key(e)).collect();
    let mut next_shared = 0;
    let mut emitted: HashSet<&PathElement> = HashSet::new();
    let mut merged = Vec::with_capacity(live.len().max(config.len()));
    let (mut l, mut r) = (0, 0);
    while l < live.len() || r < config.len() {
        if l < live.len() && r < config.len() && live_elements[l] == config_elements[r] {
            merged.push(merge_item(Some(&live[l]), &config[r], &config_elements[r], items, path)?);
            emitted.insert(&config_elements[r]);
            l += 1;
            r += 1;
        } else if l < live.len() && !in_config.contains(&live_elements[l]) {
            merged.push(live[l].clone());
            l += 1;
        } else if l < live.len()
            && (emitted.contains(&live_elements[l]) || shared.get(next_shared) != Some(&&live_elements[l]))
        {
            // Merged already, or a later item of the configuration: it is placed when the
            // configuration reaches it.
            l += 1;
        } else if r < config.len() {
            let element = &config_elements[r];
            let live_item = live_position.get(element).map(|&index| &live[index]);
            merged.push(merge_item(live_item, &config[r], element, items, path)?);
            emitted.insert(element);
            r += 1;
        } else {
            l += 1;
        }
        while shared.get(next_shared).is_some_and(|element| emitted.contains(element)) {
            next_shared += 1;
        }
    }
    Ok(Value::Array(merged))
}

fn merge_item(
    live: Option<&Value>,
    config: &Value,
    element: &PathElement,
    items: Schema<'_>,
    path: &mut Vec<PathElement>,
) -> Result<Value, String> {
    path.push(element.clone());
    let merged = merge_at(live, config, items, path);
    path.pop();
    merged
}

/// Removes from `value` what the applier owned before (`last`) but no one owns now (`kept`: the
/// new configuration's fields and every other manager's). Returns whether anything was removed.
///
/// As upstream, a struct field counts as owned when anything inside it is, so pruning the last
/// owned field of a struct removes the struct, including fields no one owns (such as defaults).
/// A map or list emptied by pruning is removed too, as upstream drops it when converting back to
/// the typed object.
pub(crate) fn prune(value: &mut Value, schema: Schema<'_>, last: &FieldSet, kept: &FieldSet) -> bool {
    let mut removed_any = false;
    let empty = FieldSet::default();
    let mut keep = |child: &mut Value, element: &PathElement, child_schema: Schema<'_>, declared: bool| {
        let Some(last_child) = last.child(element) else { return true };
        let kept_child = kept.child(element);
        if owns(last_child, declared) && !kept_child.is_some_and(|kept| owns(kept, declared)) {
            removed_any = true;
            return false;
        }
        if prune(child, child_schema, last_child, kept_child.unwrap_or(&empty)) {
            removed_any = true;
            return !is_empty_container(child);
        }
        true
    };
    match value {
        Value::Object(fields) if !schema.is_atomic_map() => {
            fields.retain(|key, child| keep(child, &PathElement::field(key), schema.field(key), schema.declares(key)));
        }
        Value::Array(items) if schema.list_type().is_associative() => {
            let elements = stored_elements(items, &schema.list_type(), schema.items());
            let mut elements = elements.iter();
            items.retain_mut(|item| elements.next().is_none_or(|element| keep(item, element, schema.items(), false)));
        }
        _ => {}
    }
    removed_any
}

/// Whether `node` owns its path, counting a struct field as owned when anything inside it is.
fn owns(node: &FieldSet, declared: bool) -> bool {
    node.is_member() || (declared && node.has_children())
}

fn is_empty_container(value: &Value) -> bool {
    match value {
        Value::Object(fields) => fields.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::apply::ownership::applied_fields;
    use crate::apply::tests::{DEPLOYMENT, definitions};

    fn containers(containers: Value) -> Value {
        let mut object = json!({"spec": {"template": {"spec": {}}}});
        object["spec"]["template"]["spec"]["containers"] = containers;
        object
    }

    #[test]
    fn merges_by_schema() {
        let defs = definitions();
        let cases = [
            (
                "granular maps keep entries the configuration leaves out",
                json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
                json!({"metadata": {"labels": {"b": "3", "c": "4"}}}),
                json!({"metadata": {"labels": {"a": "1", "b": "3", "c": "4"}}}),
            ),
            (
                "keyed lists merge items and keep live-only items in place",
                containers(
                    json!([{"name": "a", "image": "x", "tty": true}, {"name": "side"}, {"name": "b", "image": "y"}]),
                ),
                containers(json!([{"name": "b", "image": "y2"}, {"name": "new"}, {"name": "a", "image": "x2"}])),
                containers(json!([
                    {"name": "side"},
                    {"name": "b", "image": "y2"},
                    {"name": "new"},
                    {"name": "a", "image": "x2", "tty": true}
                ])),
            ),
            (
                "ports match the defaulted protocol",
                containers(json!([{"name": "a", "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}]}])),
                containers(json!([{"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}]}])),
                containers(json!([{"name": "a", "ports": [
                    {"containerPort": 80, "protocol": "TCP", "name": "http", "hostPort": 8080}
                ]}])),
            ),
            (
                "atomic lists are replaced",
                containers(json!([{"name": "a", "args": ["1", "2"]}])),
                containers(json!([{"name": "a", "args": ["3"]}])),
                containers(json!([{"name": "a", "args": ["3"]}])),
            ),
            (
                "sets merge by value",
                json!({"metadata": {"finalizers": ["x", "y"]}}),
                json!({"metadata": {"finalizers": ["z", "x"]}}),
                json!({"metadata": {"finalizers": ["z", "x", "y"]}}),
            ),
            (
                "null clears a scalar and leaves a map",
                json!({"spec": {"replicas": 2}, "metadata": {"labels": {"a": "1"}}}),
                json!({"spec": {"replicas": null}, "metadata": {"labels": null}}),
                json!({"spec": {"replicas": null}, "metadata": {"labels": {"a": "1"}}}),
            ),
        ];
        for (name, live, config, expected) in cases {
            let merged = merge(Some(&live), &config, Schema::definition(defs, DEPLOYMENT));
            assert_eq!(merged, Ok(expected), "{name}");
        }
    }

    #[test]
    fn merge_rejects_duplicate_keys_in_the_configuration() {
        let defs = definitions();
        let config = containers(json!([{"name": "a"}, {"name": "a"}]));
        let error = merge(None, &config, Schema::definition(defs, DEPLOYMENT)).expect_err("duplicate");
        assert!(
            error.starts_with(r#".spec.template.spec.containers: duplicate entries for key [name="a"]"#),
            "{error}"
        );
    }

    #[test]
    fn prune_removes_what_only_the_applier_owned() {
        let defs = definitions();
        let schema = Schema::definition(defs, DEPLOYMENT);
        let owned = |value: Value| applied_fields(&value, schema).expect("valid");
        let last = owned(json!({
            "metadata": {"labels": {"a": "1", "b": "2"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b"}]}}}
        }));
        let now = owned(json!({
            "metadata": {"labels": {"a": "1"}},
            "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}
        }));
        let other = owned(json!({"spec": {"replicas": 2}}));
        let mut kept = now;
        kept.union(&other);
        let mut object = json!({
            "metadata": {"labels": {"a": "1", "b": "2", "c": "3"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b"}]}}}
        });
        assert!(prune(&mut object, schema, &last, &kept));
        assert_eq!(
            object,
            json!({
                "metadata": {"labels": {"a": "1", "c": "3"}},
                "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}
            })
        );
        assert!(!prune(&mut object, schema, &kept, &kept));
    }

    #[test]
    fn prune_drops_maps_it_empties() {
        let defs = definitions();
        let schema = Schema::definition(defs, DEPLOYMENT);
        let owned = |value: Value| applied_fields(&value, schema).expect("valid");
        let last = owned(json!({"metadata": {"name": "web", "annotations": {"a": "1"}}}));
        // Another manager still owns an annotation that is gone, which keeps the map itself.
        let kept = owned(json!({"metadata": {"name": "web", "annotations": {"gone": "1"}}}));
        let mut object = json!({"metadata": {"name": "web", "annotations": {"a": "1"}}});
        assert!(prune(&mut object, schema, &last, &kept));
        assert_eq!(object, json!({"metadata": {"name": "web"}}));
    }
}
