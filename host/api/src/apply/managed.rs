//! The `metadata.managedFields` list: one entry per manager, operation, subresource and (for
//! updates) API version, each with the set of fields it owns.

use std::cmp::Ordering;
use std::fmt;
use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use super::fieldset::FieldSet;

/// How a manager came to own its fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// A server-side apply (`PATCH` with `application/apply-patch+yaml`).
    Apply,
    /// Any other write: create, update, or a non-apply patch.
    Update,
}

impl Operation {
    /// The wire spelling, `Apply` or `Update`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "Apply" => Some(Operation::Apply),
            "Update" => Some(Operation::Update),
            _ => None,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who an entry belongs to, as kube-apiserver names it in conflict messages:
/// `"kubectl"`, `"kubectl-scale" with subresource "scale" using apps/v1`.
///
/// Upstream prints the API version for updaters only, because an applier's entry is shared by
/// every version it applies through; it never prints the time, which is not part of an entry's
/// identity.
pub(crate) fn describe_owner(
    manager: &str,
    operation: Operation,
    api_version: &str,
    subresource: Option<&str>,
) -> String {
    let mut owner = format!("{manager:?}");
    if let Some(subresource) = subresource {
        let _ = write!(owner, " with subresource {subresource:?}");
    }
    if operation == Operation::Update {
        let _ = write!(owner, " using {api_version}");
    }
    owner
}

/// One entry of `metadata.managedFields`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) manager: String,
    pub(crate) operation: Operation,
    pub(crate) api_version: String,
    pub(crate) time: Option<String>,
    pub(crate) subresource: Option<String>,
    pub(crate) fields: FieldSet,
}

impl Entry {
    /// Whether this is the entry a write by `manager` with `operation` at `api_version` through
    /// `subresource` records into. An applier keeps one entry across API versions; an updater
    /// gets one per version.
    pub(crate) fn is(&self, manager: &str, operation: Operation, api_version: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
            && (operation == Operation::Apply || self.api_version == api_version)
    }

    /// The order kube-apiserver stores entries in: appliers first, then oldest first.
    fn storage_order(&self, other: &Entry) -> Ordering {
        (self.operation, &self.time, &self.manager, &self.api_version, &self.subresource).cmp(&(
            other.operation,
            &other.time,
            &other.manager,
            &other.api_version,
            &other.subresource,
        ))
    }

    fn decode(value: &Value, index: usize) -> Result<Entry, String> {
        let at = |reason: String| format!("metadata.managedFields[{index}]: {reason}");
        let Value::Object(entry) = value else {
            return Err(at("must be an object".into()));
        };
        let text = |name: &str| entry.get(name).and_then(Value::as_str).filter(|text| !text.is_empty());
        let operation = text("operation").unwrap_or_default();
        let operation = Operation::parse(operation)
            .ok_or_else(|| at(format!("operation must be Apply or Update, not {operation:?}")))?;
        let api_version = text("apiVersion").ok_or_else(|| at("apiVersion must not be empty".into()))?;
        match text("fieldsType") {
            Some("FieldsV1") => {}
            Some(other) => return Err(at(format!("invalid fieldsType {other:?}; only FieldsV1 is supported"))),
            None => return Err(at("missing fieldsType".into())),
        }
        let fields = match entry.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::default(),
            Some(fields) => FieldSet::from_fields_v1(fields).map_err(|error| at(error.to_string()))?,
        };
        Ok(Entry {
            manager: text("manager").unwrap_or_default().to_string(),
            operation,
            api_version: api_version.to_string(),
            time: text("time").map(str::to_string),
            subresource: text("subresource").map(str::to_string),
            fields,
        })
    }

    fn encode(&self) -> Value {
        let mut entry = Map::new();
        entry.insert("manager".into(), json!(self.manager));
        entry.insert("operation".into(), json!(self.operation.as_str()));
        entry.insert("apiVersion".into(), json!(self.api_version));
        if let Some(time) = &self.time {
            entry.insert("time".into(), json!(time));
        }
        entry.insert("fieldsType".into(), json!("FieldsV1"));
        entry.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if let Some(subresource) = &self.subresource {
            entry.insert("subresource".into(), json!(subresource));
        }
        Value::Object(entry)
    }
}

/// Reads `metadata.managedFields`; absent or null is no entries. When two entries share an
/// identity the later wins, as upstream decodes them into a map.
pub(crate) fn decode(managed: Option<&Value>) -> Result<Vec<Entry>, String> {
    let entries = match managed {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err("metadata.managedFields must be a list".into()),
    };
    let mut decoded: Vec<Entry> = Vec::with_capacity(entries.len());
    for (index, value) in entries.iter().enumerate() {
        let entry = Entry::decode(value, index)?;
        decoded
            .retain(|seen| !seen.is(&entry.manager, entry.operation, &entry.api_version, entry.subresource.as_deref()));
        decoded.push(entry);
    }
    Ok(decoded)
}

/// Writes entries in storage order.
pub(crate) fn encode(entries: &mut [Entry]) -> Value {
    entries.sort_by(Entry::storage_order);
    Value::Array(entries.iter().map(Entry::encode).collect())
}

/// Whether a write asks to clear managed fields: `managedFields: []` or `managedFields: [{}]`.
pub(crate) fn is_reset(managed: Option<&Value>) -> bool {
    match managed {
        Some(Value::Array(entries)) => match entries.as_slice() {
            [] => true,
            [only] => only.as_object().is_some_and(Map::is_empty),
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(manager: &str, operation: &str, time: &str) -> Value {
        json!({
            "manager": manager,
            "operation": operation,
            "apiVersion": "apps/v1",
            "time": time,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:replicas": {}}}
        })
    }

    #[test]
    fn entries_round_trip_in_storage_order() {
        let stored = json!([
            entry("kubectl", "Apply", "2024-01-02T00:00:00Z"),
            entry("kube-controller-manager", "Update", "2024-01-01T00:00:00Z"),
            entry("kubectl-edit", "Update", "2024-01-03T00:00:00Z"),
        ]);
        let mut entries = decode(Some(&stored)).expect("valid entries");
        entries.reverse();
        assert_eq!(encode(&mut entries), stored);
    }

    #[test]
    fn invalid_entries_say_which_and_why() {
        let cases = [
            (json!({"a": 1}), "metadata.managedFields must be a list"),
            (json!([1]), "metadata.managedFields[0]: must be an object"),
            (
                json!([{"operation": "Patch", "apiVersion": "v1", "fieldsType": "FieldsV1"}]),
                "operation must be Apply or Update",
            ),
            (json!([{"operation": "Apply", "fieldsType": "FieldsV1"}]), "apiVersion must not be empty"),
            (json!([{"operation": "Apply", "apiVersion": "v1"}]), "missing fieldsType"),
            (json!([{"operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV2"}]), "invalid fieldsType"),
            (json!([{"operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": []}]), "fieldsV1"),
        ];
        for (managed, expected) in cases {
            let error = decode(Some(&managed)).expect_err(expected);
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn owners_are_described_like_kube_apiserver() {
        let cases = [
            (("kubectl", Operation::Apply, "apps/v1", None), r#""kubectl""#),
            (
                ("kubectl-client-side-apply", Operation::Update, "apps/v1", None),
                r#""kubectl-client-side-apply" using apps/v1"#,
            ),
            (
                ("kubectl-scale", Operation::Update, "apps/v1", Some("scale")),
                r#""kubectl-scale" with subresource "scale" using apps/v1"#,
            ),
        ];
        for ((manager, operation, version, subresource), expected) in cases {
            assert_eq!(describe_owner(manager, operation, version, subresource), expected);
        }
    }

    #[test]
    fn reset_is_an_empty_list_or_one_empty_entry() {
        assert!(is_reset(Some(&json!([]))));
        assert!(is_reset(Some(&json!([{}]))));
        assert!(!is_reset(None));
        assert!(!is_reset(Some(&json!([entry("a", "Apply", "t")]))));
    }
}
