//! Kubernetes strategic merge patch: a JSON merge patch whose lists may merge by key, steered by
//! the `x-kubernetes-patch-*` extensions of the schema and by directives inside the patch.
//!
//! The behaviour follows apimachinery's `strategicpatch` package as kube-apiserver applies it,
//! except where that package would leave a directive in the stored object: here directives are
//! always consumed, also inside values that are added or replaced whole.

use std::fmt;

use serde_json::{Map, Value};

use super::list::{self, Identity};
use super::{PatchError, SchemaNode, json_type};

/// `$patch: replace | delete` on a map, or as a list item.
pub(super) const PATCH: &str = "$patch";
/// `$retainKeys: [fields]`: clear the original's other fields before merging.
const RETAIN_KEYS: &str = "$retainKeys";
/// `$setElementOrder/<field>: [items]`: the final order of a merged list.
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
/// `$deleteFromPrimitiveList/<field>: [values]`: values to remove from a list of primitives.
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

/// Kubernetes strategic merge patch (`application/strategic-merge-patch+json`), driven by the
/// schema.
///
/// `schema` is the node of the patched kind, usually [`SchemaNode::definition`]; where it knows
/// nothing the patch merges maps and replaces lists, like a JSON merge patch.
pub fn strategic_merge(original: &Value, patch: &Value, schema: SchemaNode<'_>) -> Result<Value, PatchError> {
    let Value::Object(original) = original else {
        return Err(PatchError::NotAnObject { what: "the object being patched", found: json_type(original) });
    };
    let Value::Object(patch) = patch else {
        return Err(PatchError::NotAnObject { what: "a strategic merge patch body", found: json_type(patch) });
    };
    match merge_map(Some(original.clone()), patch.clone(), schema, &Path::ROOT)? {
        Some(merged) => Ok(Value::Object(merged)),
        None => {
            Err(invalid(&Path::ROOT, "`$patch: delete` cannot delete the whole object; send a DELETE request instead"))
        }
    }
}

/// Merges `patch` into `original` (absent when the patch adds the map); `None` means the patch
/// deletes the map.
pub(super) fn merge_map(
    original: Option<Map<String, Value>>,
    mut patch: Map<String, Value>,
    schema: SchemaNode<'_>,
    at: &Path<'_>,
) -> Result<Option<Map<String, Value>>, PatchError> {
    if let Some(directive) = patch.remove(PATCH) {
        return match directive.as_str() {
            Some("delete") => Ok(None),
            // The rest of the patch is the new map; merging it into nothing still consumes the
            // directives nested in it.
            Some("replace") => merge_map(None, patch, schema, at),
            _ => Err(invalid(at, format!("unknown `$patch: {directive}` on a map; use \"replace\" or \"delete\""))),
        };
    }
    let mut merged = original.unwrap_or_default();
    if let Some(keys) = patch.remove(RETAIN_KEYS) {
        retain_keys(&mut merged, &patch, &keys, at)?;
    }
    let directives = take_list_directives(&mut patch, at)?;
    for (field, values) in &directives.deletions {
        delete_from_primitive_list(&mut merged, field, values, at)?;
    }
    for (field, order) in &directives.orders {
        let list_patch = patch.remove(field);
        apply_element_order(&mut merged, field, list_patch, order, schema.field(field), &at.field(field))?;
    }
    for (key, value) in patch {
        let field_at = at.field(&key);
        let field_schema = schema.field(&key);
        if let Some(slot) = merged.get_mut(&key) {
            let original_value = std::mem::take(slot);
            match merge_value(Some(original_value), value, field_schema, &field_at)? {
                Some(value) => *slot = value,
                None => {
                    merged.remove(&key);
                }
            }
        } else if let Some(value) = merge_value(None, value, field_schema, &field_at)? {
            merged.insert(key, value);
        }
    }
    Ok(Some(merged))
}

/// Merges one field's patch value into its original value; `None` removes the field.
pub(super) fn merge_value(
    original: Option<Value>,
    patch: Value,
    schema: SchemaNode<'_>,
    at: &Path<'_>,
) -> Result<Option<Value>, PatchError> {
    match patch {
        Value::Null => Ok(None),
        Value::Object(patch) => {
            // A value of another type, or a map whose strategy is "replace", is replaced by the
            // patch, which then merges into nothing.
            let original = match original {
                Some(Value::Object(original)) if !schema.has_strategy("replace") => Some(original),
                _ => None,
            };
            Ok(merge_map(original, patch, schema, at)?.map(Value::Object))
        }
        Value::Array(patch) => {
            let original = match original {
                Some(Value::Array(original)) => Some(original),
                _ => None,
            };
            list::merge_list(original, patch, schema, at).map(|merged| Some(Value::Array(merged)))
        }
        scalar => Ok(Some(scalar)),
    }
}

/// Applies `$retainKeys`: the original keeps only the listed fields, and the patch may set only
/// those.
fn retain_keys(
    merged: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    keys: &Value,
    at: &Path<'_>,
) -> Result<(), PatchError> {
    let retained = keys
        .as_array()
        .and_then(|keys| keys.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
        .ok_or_else(|| invalid(at, format!("$retainKeys must be a list of field names, not {keys}")))?;
    let unlisted = patch
        .iter()
        .find(|(field, value)| !value.is_null() && !is_list_directive(field) && !retained.contains(&field.as_str()));
    if let Some((field, _)) = unlisted {
        return Err(PatchError::RetainKeysMismatch { path: at.to_string(), field: field.clone() });
    }
    merged.retain(|field, _| retained.contains(&field.as_str()));
    Ok(())
}

/// The `$setElementOrder/…` and `$deleteFromPrimitiveList/…` entries of one map, by field.
#[derive(Default)]
struct ListDirectives {
    orders: Vec<(String, Vec<Value>)>,
    deletions: Vec<(String, Vec<Value>)>,
}

fn is_list_directive(key: &str) -> bool {
    key.starts_with(SET_ELEMENT_ORDER) || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
}

/// Removes the list directives from `patch`, checking each names a field and carries a list.
fn take_list_directives(patch: &mut Map<String, Value>, at: &Path<'_>) -> Result<ListDirectives, PatchError> {
    let keys: Vec<String> = patch.keys().filter(|key| is_list_directive(key)).cloned().collect();
    let mut directives = ListDirectives::default();
    for key in keys {
        let Some(value) = patch.remove(&key) else { continue };
        let (prefix, into) = if key.starts_with(SET_ELEMENT_ORDER) {
            (SET_ELEMENT_ORDER, &mut directives.orders)
        } else {
            (DELETE_FROM_PRIMITIVE_LIST, &mut directives.deletions)
        };
        let field = key
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|field| !field.is_empty())
            .ok_or_else(|| invalid(at, format!("malformed directive \"{key}\"; write it as \"{prefix}/<field>\"")))?;
        let Value::Array(values) = value else {
            return Err(invalid(at, format!("\"{key}\" must be a list, not {}", json_type(&value))));
        };
        into.push((field.to_owned(), values));
    }
    Ok(directives)
}

/// Applies `$deleteFromPrimitiveList/<field>`: removes every occurrence of `values` from the
/// original list, whatever the list's strategy. A missing list stays missing.
fn delete_from_primitive_list(
    merged: &mut Map<String, Value>,
    field: &str,
    values: &[Value],
    at: &Path<'_>,
) -> Result<(), PatchError> {
    match merged.get_mut(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(items)) => {
            items.retain(|item| !values.contains(item));
            Ok(())
        }
        Some(other) => Err(invalid(
            &at.field(field),
            format!("$deleteFromPrimitiveList/{field} needs a list, but the field is {}", json_type(other)),
        )),
    }
}

/// Merges the list `field` with its patch (if any) and then orders it as
/// `$setElementOrder/<field>` says.
fn apply_element_order(
    merged: &mut Map<String, Value>,
    field: &str,
    list_patch: Option<Value>,
    order: &[Value],
    list_schema: SchemaNode<'_>,
    at: &Path<'_>,
) -> Result<(), PatchError> {
    let identity = Identity::of(list_schema);
    let order_ids = order
        .iter()
        .enumerate()
        .map(|(index, entry)| identity.of_item(entry).ok_or_else(|| identity.missing(&at.index(index))))
        .collect::<Result<Vec<&Value>, _>>()?;
    let original = match merged.remove(field) {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(items),
        Some(other) => {
            return Err(invalid(
                at,
                format!("$setElementOrder/{field} needs a list, but the field is {}", json_type(&other)),
            ));
        }
    };
    let reference = original.as_deref().map(|items| identity.all(items)).unwrap_or_default();
    let combined = match list_patch {
        // The patch deletes the list; there is nothing left to order.
        Some(Value::Null) => return Ok(()),
        Some(Value::Array(items)) => {
            check_patch_follows_order(&items, &order_ids, identity, field, at)?;
            list::merge_list(original, items, list_schema, at)?
        }
        Some(other) => {
            return Err(invalid(
                at,
                format!(
                    "$setElementOrder/{field} orders a list, but the patch sets the field to {}",
                    json_type(&other)
                ),
            ));
        }
        None => match original {
            Some(items) => items,
            // Ordering a list that does not exist leaves it absent.
            None => return Ok(()),
        },
    };
    merged.insert(field.to_owned(), Value::Array(list::order_like(combined, &order_ids, &reference, identity)));
    Ok(())
}

/// Rejects a patch list whose items are missing from `$setElementOrder` or appear in another
/// relative order: the two come from the same client computation, so a mismatch means a
/// corrupted patch.
fn check_patch_follows_order(
    items: &[Value],
    order_ids: &[&Value],
    identity: Identity<'_>,
    field: &str,
    at: &Path<'_>,
) -> Result<(), PatchError> {
    let mut expected = order_ids.iter();
    for (index, item) in items.iter().enumerate().filter(|(_, item)| item.get(PATCH).is_none()) {
        let id = identity.of_item(item).ok_or_else(|| identity.missing(&at.index(index)))?;
        if !expected.by_ref().any(|ordered| *ordered == id) {
            return Err(invalid(
                at,
                format!(
                    "the items of \"{field}\" must all appear in $setElementOrder/{field}, in the same relative order"
                ),
            ));
        }
    }
    Ok(())
}

/// An [`PatchError::InvalidDirective`] at the given place in the object.
pub(super) fn invalid(at: &Path<'_>, reason: impl Into<String>) -> PatchError {
    PatchError::InvalidDirective { path: at.to_string(), reason: reason.into() }
}

/// Where the merge is in the object, kept as borrowed steps and rendered (as
/// `.spec.containers[name=web].ports[0]`) only when an error needs it.
#[derive(Clone, Copy)]
pub(super) struct Path<'p> {
    parent: Option<&'p Path<'p>>,
    step: Step<'p>,
}

#[derive(Clone, Copy)]
enum Step<'p> {
    Root,
    Field(&'p str),
    Index(usize),
    Keyed(&'p str, &'p Value),
}

impl<'p> Path<'p> {
    pub(super) const ROOT: Path<'static> = Path { parent: None, step: Step::Root };

    pub(super) fn field(&'p self, name: &'p str) -> Path<'p> {
        Path { parent: Some(self), step: Step::Field(name) }
    }

    pub(super) fn index(&'p self, index: usize) -> Path<'p> {
        Path { parent: Some(self), step: Step::Index(index) }
    }

    pub(super) fn keyed(&'p self, key: &'p str, value: &'p Value) -> Path<'p> {
        Path { parent: Some(self), step: Step::Keyed(key, value) }
    }

    fn write_steps(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(parent) = self.parent {
            parent.write_steps(f)?;
        }
        match self.step {
            Step::Root => Ok(()),
            Step::Field(name) => write!(f, ".{name}"),
            Step::Index(index) => write!(f, "[{index}]"),
            Step::Keyed(key, Value::String(value)) => write!(f, "[{key}={value}]"),
            Step::Keyed(key, value) => write!(f, "[{key}={value}]"),
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.parent.is_none() { f.write_str(".") } else { self.write_steps(f) }
    }
}

#[cfg(test)]
mod tests;
