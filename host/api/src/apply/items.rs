//! Naming the items of associative lists: by their key fields in a `map` list, by their value in
//! a `set`.

use serde_json::Value;

use super::fieldset::{PathElement, display_path};
use super::schema::{ListType, Schema};

/// The path element of each item of `list`, for a list read from a stored object.
///
/// Stored objects were validated when written, so this never fails: an item that cannot be named
/// by its keys (not an object, or without any key field) is named by its position instead.
pub(crate) fn stored_elements(list: &[Value], list_type: &ListType<'_>, items: Schema<'_>) -> Vec<PathElement> {
    list.iter()
        .enumerate()
        .map(|(index, item)| match list_type {
            ListType::Map(keys) => {
                let fields = key_fields(item, keys, items);
                if fields.is_empty() {
                    PathElement::index(index)
                } else {
                    PathElement::key(fields.iter().map(|(name, value)| (*name, value)))
                }
            }
            ListType::Set | ListType::Atomic => PathElement::value(item),
        })
        .collect()
}

/// The path element of each item of `list`, for a list in an applied configuration at `path`.
///
/// Every item must carry its key fields (or have schema defaults for them), and no two items may
/// share a key: the configuration says what its manager owns, and two items with one key cannot
/// both be owned.
pub(crate) fn applied_elements(
    list: &[Value],
    list_type: &ListType<'_>,
    items: Schema<'_>,
    path: &[PathElement],
) -> Result<Vec<PathElement>, String> {
    let mut elements: Vec<PathElement> = Vec::with_capacity(list.len());
    for item in list {
        let element = match list_type {
            ListType::Map(keys) => {
                let Some(fields) = item.as_object().map(|_| key_fields(item, keys, items)) else {
                    return Err(format!(
                        "{}: items of this list are identified by {}, so each must be an object",
                        display_path(path),
                        quoted(keys)
                    ));
                };
                if let Some(missing) = keys.iter().find(|key| !fields.iter().any(|(name, _)| name == *key)) {
                    return Err(format!(
                        "{}: associative list with keys has an element that omits key field {missing:?} \
                         (and doesn't have default value); set {missing:?} on every item",
                        display_path(path)
                    ));
                }
                PathElement::key(fields.iter().map(|(name, value)| (*name, value)))
            }
            ListType::Set | ListType::Atomic => PathElement::value(item),
        };
        if elements.contains(&element) {
            return Err(format!(
                "{}: duplicate entries for key {}; each item may appear once",
                display_path(path),
                display_path(std::slice::from_ref(&element)),
            ));
        }
        elements.push(element);
    }
    Ok(elements)
}

/// The key fields `item` has, with schema defaults for those it leaves out.
fn key_fields<'k>(item: &Value, keys: &[&'k str], items: Schema<'_>) -> Vec<(&'k str, Value)> {
    keys.iter()
        .filter_map(|key| {
            let value = item.get(*key).filter(|value| !value.is_null()).cloned().or_else(|| items.key_default(key))?;
            Some((*key, value))
        })
        .collect()
}

fn quoted(keys: &[&str]) -> String {
    keys.iter().map(|key| format!("{key:?}")).collect::<Vec<_>>().join(" and ")
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

    use super::*;

    fn defs() -> Map<String, Value> {
        Map::new()
    }

    fn ports() -> ListType<'static> {
        ListType::Map(vec!["containerPort", "protocol"])
    }

    #[test]
    fn map_items_are_named_by_their_keys_with_defaults() {
        let defs = defs();
        let list = [json!({"containerPort": 80}), json!({"containerPort": 53, "protocol": "UDP"})];
        let expected = vec![
            PathElement::key([("containerPort", &json!(80)), ("protocol", &json!("TCP"))]),
            PathElement::key([("containerPort", &json!(53)), ("protocol", &json!("UDP"))]),
        ];
        assert_eq!(applied_elements(&list, &ports(), Schema::unknown(&defs), &[]), Ok(expected.clone()));
        assert_eq!(stored_elements(&list, &ports(), Schema::unknown(&defs)), expected);
    }

    #[test]
    fn applied_lists_reject_what_stored_lists_tolerate() {
        let defs = defs();
        let path = [PathElement::field("spec"), PathElement::field("containers")];
        let names = ListType::Map(vec!["name"]);
        let cases = [
            (
                vec![json!({"name": "a"}), json!({"name": "a", "image": "x"})],
                r#".spec.containers: duplicate entries for key [name="a"]"#,
            ),
            (
                vec![json!({"image": "x"})],
                r#".spec.containers: associative list with keys has an element that omits key field "name""#,
            ),
            (
                vec![json!("a")],
                r#".spec.containers: items of this list are identified by "name", so each must be an object"#,
            ),
        ];
        for (list, expected) in cases {
            let error = applied_elements(&list, &names, Schema::unknown(&defs), &path).expect_err(expected);
            assert!(error.starts_with(expected), "{error}");
            assert_eq!(stored_elements(&list, &names, Schema::unknown(&defs)).len(), list.len());
        }
        assert_eq!(stored_elements(&[json!({"image": "x"})], &names, Schema::unknown(&defs)), [PathElement::index(0)]);
    }

    #[test]
    fn set_items_are_named_by_value() {
        let defs = defs();
        let list = [json!("a"), json!("b")];
        assert_eq!(
            applied_elements(&list, &ListType::Set, Schema::unknown(&defs), &[]),
            Ok(vec![PathElement::value(&json!("a")), PathElement::value(&json!("b"))])
        );
        let error = applied_elements(
            &[json!("a"), json!("a")],
            &ListType::Set,
            Schema::unknown(&defs),
            &[PathElement::field("finalizers")],
        );
        assert_eq!(
            error,
            Err(r#".finalizers: duplicate entries for key [="a"]; each item may appear once"#.to_string())
        );
    }
}
