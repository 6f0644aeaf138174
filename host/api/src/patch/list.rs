//! How strategic merge patch merges lists: replaced whole by default, merged by key or as a set
//! of primitives when the schema's patch strategy says "merge", then put in the order the patch
//! implies.

use serde_json::Value;

use super::strategic::{PATCH, Path, invalid, merge_map, merge_value};
use super::{PatchError, SchemaNode};

/// Merges the patch list of a field into its original list (absent when the patch adds it).
pub(super) fn merge_list(
    original: Option<Vec<Value>>,
    patch: Vec<Value>,
    schema: SchemaNode<'_>,
    at: &Path<'_>,
) -> Result<Vec<Value>, PatchError> {
    let patch = ListPatch::split(patch, at)?;
    let item_schema = schema.items();
    if !schema.has_strategy("merge") {
        if !patch.deletions.is_empty() {
            return Err(invalid(
                at,
                "`$patch: delete` items only work in lists merged by key, and this list is replaced whole; \
                 leave the item out instead",
            ));
        }
        return new_items(patch.items, item_schema, at);
    }
    if patch.replace {
        return new_items(patch.items, item_schema, at);
    }
    match schema.patch_merge_key() {
        Some(key) => merge_by_key(original.unwrap_or_default(), patch, key, item_schema, at),
        None => merge_as_set(original.unwrap_or_default(), &patch, at),
    }
}

/// A patch list with its directive items taken out.
struct ListPatch {
    /// Items to merge or add.
    items: Vec<Value>,
    /// `{"<key>": …, "$patch": "delete"}` items.
    deletions: Vec<Value>,
    /// Whether a `{"$patch": "replace"}` item asks for the list to become `items`.
    replace: bool,
}

impl ListPatch {
    fn split(patch: Vec<Value>, at: &Path<'_>) -> Result<Self, PatchError> {
        let mut split = ListPatch { items: Vec::with_capacity(patch.len()), deletions: Vec::new(), replace: false };
        for (index, item) in patch.into_iter().enumerate() {
            match item.get(PATCH).map(|directive| (directive.as_str(), directive)) {
                None => split.items.push(item),
                Some((Some("replace"), _)) => split.replace = true,
                Some((Some("delete"), _)) => split.deletions.push(item),
                Some((Some("merge"), _)) => {
                    return Err(invalid(
                        &at.index(index),
                        "`$patch: merge` cannot be used in a list; lists whose schema says merge are merged already",
                    ));
                }
                Some((_, directive)) => {
                    return Err(invalid(
                        &at.index(index),
                        format!("unknown `$patch: {directive}` in a list; use \"replace\" or \"delete\""),
                    ));
                }
            }
        }
        Ok(split)
    }
}

/// Items that become the list as they are, with the directives nested in them consumed.
fn new_items(items: Vec<Value>, item_schema: SchemaNode<'_>, at: &Path<'_>) -> Result<Vec<Value>, PatchError> {
    let mut merged = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        // In a list `null` is an item, not a deletion.
        if item.is_null() {
            merged.push(item);
        } else if let Some(item) = merge_value(None, item, item_schema, &at.index(index))? {
            merged.push(item);
        }
    }
    Ok(merged)
}

/// Merges a list of objects identified by `key`: deletions first, then each patch item merges
/// into the first original item with its key or is added.
fn merge_by_key(
    mut merged: Vec<Value>,
    patch: ListPatch,
    key: &str,
    item_schema: SchemaNode<'_>,
    at: &Path<'_>,
) -> Result<Vec<Value>, PatchError> {
    let identity = Identity { merge_key: Some(key) };
    for deletion in &patch.deletions {
        let id = identity.of_item(deletion).ok_or_else(|| identity.missing(at))?;
        // Duplicates can only come from a bad write; a deletion removes all of them.
        merged.retain(|item| identity.of_item(item) != Some(id));
    }
    let reference = identity.all(&merged);
    let mut patch_ids = Vec::with_capacity(patch.items.len());
    for (index, item) in patch.items.into_iter().enumerate() {
        let Value::Object(item) = item else { return Err(identity.missing(&at.index(index))) };
        let Some(id) = item.get(key).cloned() else { return Err(identity.missing(&at.index(index))) };
        let item_path = at.keyed(key, &id);
        match merged.iter().position(|original| identity.of_item(original) == Some(&id)) {
            Some(position) => {
                let original = merged.get_mut(position).map(std::mem::take).and_then(into_object);
                match merge_map(original, item, item_schema, &item_path)? {
                    Some(item) => {
                        if let Some(slot) = merged.get_mut(position) {
                            *slot = Value::Object(item);
                        }
                    }
                    None => {
                        merged.remove(position);
                    }
                }
            }
            None => {
                if let Some(item) = merge_map(None, item, item_schema, &item_path)? {
                    merged.push(Value::Object(item));
                }
            }
        }
        patch_ids.push(id);
    }
    let patch_ids: Vec<&Value> = patch_ids.iter().collect();
    Ok(order_like(merged, &patch_ids, &reference, identity))
}

/// Merges a list of primitives as a set: the union of both, without duplicates.
fn merge_as_set(original: Vec<Value>, patch: &ListPatch, at: &Path<'_>) -> Result<Vec<Value>, PatchError> {
    if !patch.deletions.is_empty() {
        return Err(invalid(
            at,
            "`$patch: delete` items need a list merged by key; remove values from a list of primitives \
             with $deleteFromPrimitiveList/<field>",
        ));
    }
    if let Some(index) = patch.items.iter().position(|item| item.is_object() || item.is_array()) {
        return Err(invalid(
            &at.index(index),
            "this list merges as a set of primitive values and declares no merge key, so its items cannot be \
             objects or lists",
        ));
    }
    let identity = Identity { merge_key: None };
    let reference = identity.all(&original);
    let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.items.len());
    for item in original.into_iter().chain(patch.items.iter().cloned()) {
        if !merged.contains(&item) {
            merged.push(item);
        }
    }
    let patch_ids: Vec<&Value> = patch.items.iter().collect();
    Ok(order_like(merged, &patch_ids, &reference, identity))
}

fn into_object(value: Value) -> Option<serde_json::Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// What tells the items of one list apart: the merge key's value, or in a list without a merge
/// key the whole item.
#[derive(Clone, Copy)]
pub(super) struct Identity<'s> {
    merge_key: Option<&'s str>,
}

impl<'s> Identity<'s> {
    /// The identity the schema of a list declares.
    pub(super) fn of(list_schema: SchemaNode<'s>) -> Self {
        Self { merge_key: list_schema.patch_merge_key() }
    }

    /// The identity of `item`; `None` for an item that lacks the merge key.
    pub(super) fn of_item<'v>(&self, item: &'v Value) -> Option<&'v Value> {
        match self.merge_key {
            Some(key) => item.get(key),
            None => Some(item),
        }
    }

    /// The identities of `items`, in order, for placing items relative to the original list.
    pub(super) fn all(&self, items: &[Value]) -> Vec<Option<Value>> {
        items.iter().map(|item| self.of_item(item).cloned()).collect()
    }

    /// The error for an item, at the given place, that lacks the merge key.
    pub(super) fn missing(&self, at: &Path<'_>) -> PatchError {
        PatchError::MissingMergeKey { path: at.to_string(), key: self.merge_key.unwrap_or_default().to_owned() }
    }
}

/// Orders a merged list the way apimachinery does: items named in `order` (the patch list, or
/// `$setElementOrder`) follow that order; the other items keep their relative order from the
/// original list (`reference`); the two sequences are then interleaved, an unnamed item going
/// first only when the original list had it before the named item it is compared with. So a new
/// item lands before the server-only items that follow it, exactly as kube-apiserver places it.
pub(super) fn order_like(
    items: Vec<Value>,
    order: &[&Value],
    reference: &[Option<Value>],
    identity: Identity<'_>,
) -> Vec<Value> {
    let rank = |item: &Value| identity.of_item(item).and_then(|id| order.iter().position(|named| *named == id));
    let place = |item: &Value| {
        identity.of_item(item).and_then(|id| reference.iter().position(|original| original.as_ref() == Some(id)))
    };
    let (mut named, mut unnamed): (Vec<Value>, Vec<Value>) = items.into_iter().partition(|item| rank(item).is_some());
    named.sort_by_cached_key(|item| rank(item));
    unnamed.sort_by_cached_key(|item| place(item).unwrap_or(usize::MAX));

    // Decide the interleaving on borrowed items first, then move the items into place.
    let mut unnamed_first = Vec::with_capacity(named.len() + unnamed.len());
    let (mut u, mut n) = (0, 0);
    while let (Some(left), Some(right)) = (unnamed.get(u), named.get(n)) {
        let left_first = matches!((place(left), place(right)), (Some(l), Some(r)) if l < r);
        unnamed_first.push(left_first);
        if left_first {
            u += 1;
        } else {
            n += 1;
        }
    }
    let mut unnamed = unnamed.into_iter();
    let mut named = named.into_iter();
    let mut ordered: Vec<Value> = unnamed_first
        .into_iter()
        .filter_map(|left_first| if left_first { unnamed.next() } else { named.next() })
        .collect();
    ordered.extend(unnamed);
    ordered.extend(named);
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids(values: &[Value]) -> Vec<&Value> {
        values.iter().collect()
    }

    #[test]
    fn order_like_interleaves_named_and_server_only_items() {
        let primitive = Identity { merge_key: None };
        // (items, order, original, expected)
        let cases = [
            // Upstream "preserve the order from the patch in a merging int list".
            (json!([1, 2, 3]), json!([3, 1]), json!([1, 2, 3]), json!([2, 3, 1])),
            (json!([1, 2, 3]), json!([3, 1, 2]), json!([1, 2, 3]), json!([3, 1, 2])),
            // A new item goes before the server-only items it cannot be compared with.
            (json!(["a", "b", "c"]), json!(["c"]), json!(["a", "b"]), json!(["c", "a", "b"])),
            // Server-only items keep their original relative order.
            (json!(["x", "a", "y", "b"]), json!(["b", "a"]), json!(["x", "a", "y", "b"]), json!(["x", "y", "b", "a"])),
            (json!([]), json!(["a"]), json!([]), json!([])),
        ];
        for (items, order, original, expected) in cases {
            let Value::Array(items) = items else { unreachable!("literal list") };
            let Value::Array(order) = order else { unreachable!("literal list") };
            let Value::Array(original) = original else { unreachable!("literal list") };
            let reference = primitive.all(&original);
            let got = order_like(items.clone(), &ids(&order), &reference, primitive);
            assert_eq!(Value::Array(got), expected, "items {items:?} order {order:?}");
        }
    }
}
