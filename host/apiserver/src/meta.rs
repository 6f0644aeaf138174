//! Object metadata rules: names, generated names, uid, timestamps, generation and the fields the
//! server owns.

use capstan_api::ResourceInfo;
use serde_json::{Value, json};

use crate::status::Cause;

/// Now, as Kubernetes writes timestamps (RFC 3339, whole seconds, UTC).
#[must_use]
pub fn now() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second()).map_or_else(|_| now.to_string(), |t| t.to_string())
}

/// A new object uid.
#[must_use]
pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The five random characters Kubernetes appends to a `generateName` (no vowels, no confusable
/// digits, so the result never spells words).
#[must_use]
pub fn generated_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let random = uuid::Uuid::new_v4();
    random.as_bytes()[..5].iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// Checks a DNS-1123 subdomain (most object names): at most 253 characters of lower-case
/// alphanumerics, '-' and '.', starting and ending with an alphanumeric.
#[must_use]
pub fn subdomain_errors(name: &str) -> Option<String> {
    if name.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    let valid = name.split('.').all(|label| label_ok(label, usize::MAX));
    (!valid || name.is_empty()).then(|| {
        format!(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must \
             start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*'), got {name:?}"
        )
    })
}

/// Checks a DNS-1123 label (namespaces, services): at most 63 characters of lower-case
/// alphanumerics and '-', starting and ending with an alphanumeric.
#[must_use]
pub fn label_errors(name: &str) -> Option<String> {
    (!label_ok(name, 63)).then(|| {
        format!(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and \
             end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?'), got {name:?}"
        )
    })
}

fn label_ok(label: &str, max: usize) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= max
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Validates the name rules of a resource: which name syntax it needs.
#[must_use]
pub fn name_causes(info: &ResourceInfo, name: &str) -> Vec<Cause> {
    let error = match info.plural {
        "namespaces" | "services" => label_errors(name),
        _ => subdomain_errors(name),
    };
    error
        .map(|message| Cause { reason: "FieldValueInvalid", field: "metadata.name".into(), message })
        .into_iter()
        .collect()
}

/// The object's `metadata` as a mutable map, created when missing.
pub fn metadata_mut(object: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    match object.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(map) => map,
        // Just made it an object above.
        None => unreachable!("metadata was set to an object"),
    }
}

/// A string field of `metadata`.
#[must_use]
pub fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str)
}

/// The object's finalizers.
#[must_use]
pub fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Whether everything but metadata and status is equal (so `generation` stays).
#[must_use]
pub fn same_spec(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(map) = v.as_object_mut() {
            map.remove("metadata");
            map.remove("status");
        }
        v
    };
    strip(old) == strip(new)
}
