//! kubectl's tables. `kubectl get` asks for `application/json;as=Table;v=v1;g=meta.k8s.io` and
//! prints the `meta.k8s.io/v1` `Table` it gets back, so the server decides the columns.
//!
//! Each kind has one printer (`printers/<kind>.rs`), as kube-apiserver has: its column
//! definitions and how an object as stored becomes the cells of one row. Like kube-apiserver,
//! rows always carry every column, including the `priority: 1` ones kubectl shows only with
//! `-o wide`. Kinds without a printer get upstream's default table: NAME and CREATED AT.
//!
//! Watching with `as=Table` sends one Table per event; only the first carries column definitions
//! (see [`watch_event_table`]).

mod duration;
mod object;
mod printers;

use std::fmt;
use std::str::FromStr;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::registry::ResourceInfo;
use printers::printer_for;

/// The `apiVersion` of tables and of the partial objects in their rows.
const META_V1: &str = "meta.k8s.io/v1";

/// What each row carries besides its cells: `?includeObject=` (`metav1.IncludeObjectPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object (`"object": null`).
    None,
    /// The object's metadata as a `PartialObjectMetadata`, which kubectl needs for namespaces
    /// and labels. The default.
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

/// An `includeObject` value other than `None`, `Metadata` or `Object`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unrecognized includeObject value: {0:?}")]
pub struct UnknownIncludeObject(pub String);

impl FromStr for IncludeObject {
    type Err = UnknownIncludeObject;

    /// Parses the query value; an empty value means the default, as upstream.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "None" => Ok(Self::None),
            "Metadata" | "" => Ok(Self::Metadata),
            "Object" => Ok(Self::Object),
            other => Err(UnknownIncludeObject(other.to_owned())),
        }
    }
}

impl fmt::Display for IncludeObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "None",
            Self::Metadata => "Metadata",
            Self::Object => "Object",
        })
    }
}

/// How to build a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableOptions {
    /// What each row carries besides its cells.
    pub include_object: IncludeObject,
    /// The time AGE and other durations are measured to; passed in so output is reproducible.
    pub now: Timestamp,
}

/// A `meta.k8s.io/v1` `Table` of `objects` (JSON as stored), with `list_metadata` (the
/// `ListMeta`: `resourceVersion`, `continue`, ...) as its metadata.
#[must_use]
pub fn table(info: &ResourceInfo, objects: &[Value], list_metadata: Value, options: &TableOptions) -> Value {
    table_value(list_metadata, column_definitions(info), rows(info, objects, options))
}

/// The table of one watch event. Upstream includes column definitions only in the first event of
/// a watch, so `first_event` decides whether they are filled in; the metadata carries the
/// object's `resourceVersion`.
#[must_use]
pub fn watch_event_table(info: &ResourceInfo, object: &Value, first_event: bool, options: &TableOptions) -> Value {
    let mut metadata = Map::new();
    if let Some(version) = object.pointer("/metadata/resourceVersion") {
        metadata.insert("resourceVersion".into(), version.clone());
    }
    let columns = if first_event { column_definitions(info) } else { Value::Array(Vec::new()) };
    table_value(Value::Object(metadata), columns, rows(info, std::slice::from_ref(object), options))
}

/// The `columnDefinitions` of `info`'s kind.
#[must_use]
pub fn column_definitions(info: &ResourceInfo) -> Value {
    printer_for(&info.gvk).columns.iter().map(printers::Column::to_json).collect()
}

/// One `TableRow` per object: its cells, row conditions if any, and the object as
/// `options.include_object` asks.
#[must_use]
pub fn rows(info: &ResourceInfo, objects: &[Value], options: &TableOptions) -> Vec<Value> {
    let printer = printer_for(&info.gvk);
    objects
        .iter()
        .map(|object| {
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array((printer.cells)(object, options.now)));
            let conditions = (printer.conditions)(object);
            if !conditions.is_empty() {
                row.insert("conditions".into(), Value::Array(conditions));
            }
            row.insert("object".into(), embedded_object(info, object, options.include_object));
            Value::Object(row)
        })
        .collect()
}

fn table_value(metadata: Value, columns: Value, rows: Vec<Value>) -> Value {
    let metadata = if metadata.is_null() { Value::Object(Map::new()) } else { metadata };
    let mut table = Map::new();
    table.insert("kind".into(), "Table".into());
    table.insert("apiVersion".into(), META_V1.into());
    table.insert("metadata".into(), metadata);
    table.insert("columnDefinitions".into(), columns);
    table.insert("rows".into(), Value::Array(rows));
    Value::Object(table)
}

fn embedded_object(info: &ResourceInfo, object: &Value, include: IncludeObject) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": META_V1,
            "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
        IncludeObject::Object => {
            // Rows must be decodable on their own, so the object names its type even when the
            // stored form leaves it out.
            let mut object = object.clone();
            if let Some(fields) = object.as_object_mut() {
                fields.entry("kind").or_insert_with(|| info.gvk.kind.into());
                fields.entry("apiVersion").or_insert_with(|| info.gvk.api_version().into());
            }
            object
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn options(include_object: IncludeObject) -> TableOptions {
        TableOptions { include_object, now: "2024-05-01T12:00:00Z".parse().expect("valid time") }
    }

    fn pods() -> ResourceInfo {
        Registry::builtin().lookup("", "v1", "pods").expect("pods are served").clone()
    }

    fn pod() -> Value {
        json!({"metadata": {"name": "web", "namespace": "default", "resourceVersion": "42",
                "creationTimestamp": "2024-05-01T11:55:00Z", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app"}]}, "status": {"phase": "Succeeded"}})
    }

    #[test]
    fn list_tables_carry_columns_rows_and_list_metadata() {
        let table = table(&pods(), &[pod()], json!({"resourceVersion": "43"}), &options(IncludeObject::Metadata));
        assert_eq!(table["kind"], "Table");
        assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(table["metadata"], json!({"resourceVersion": "43"}));
        let names: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .expect("columns")
            .iter()
            .filter(|c| c["priority"] == 0)
            .map(|c| c["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["Name", "Ready", "Status", "Restarts", "Age"]);
        assert_eq!(table["columnDefinitions"][0]["format"], "name");
        let row = &table["rows"][0];
        assert_eq!(
            row["cells"].as_array().expect("cells")[..5],
            [json!("web"), json!("0/1"), json!("Succeeded"), json!("0"), json!("5m")]
        );
        assert_eq!(row["conditions"][0]["type"], "Completed");
        assert_eq!(
            row["object"],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": pod()["metadata"]})
        );
    }

    #[test]
    fn include_object_decides_what_rows_embed() {
        let embedded = |include| rows(&pods(), &[pod()], &options(include))[0]["object"].clone();
        assert_eq!(embedded(IncludeObject::None), Value::Null);
        let whole = embedded(IncludeObject::Object);
        assert_eq!((whole["kind"].as_str(), whole["apiVersion"].as_str()), (Some("Pod"), Some("v1")));
        assert_eq!(whole["spec"], pod()["spec"]);
        let cases =
            [("None", IncludeObject::None), ("Metadata", IncludeObject::Metadata), ("", IncludeObject::Metadata)];
        for (text, include) in cases {
            assert_eq!(text.parse::<IncludeObject>(), Ok(include));
        }
        assert_eq!(
            "metadata".parse::<IncludeObject>().expect_err("case matters").to_string(),
            "unrecognized includeObject value: \"metadata\""
        );
    }

    #[test]
    fn watch_events_carry_columns_only_first() {
        let first = watch_event_table(&pods(), &pod(), true, &options(IncludeObject::Metadata));
        let later = watch_event_table(&pods(), &pod(), false, &options(IncludeObject::Metadata));
        assert_eq!(first["metadata"], json!({"resourceVersion": "42"}));
        assert_eq!(first["columnDefinitions"].as_array().map(Vec::len), Some(9));
        assert_eq!(later["columnDefinitions"], json!([]));
        assert_eq!(first["rows"], later["rows"]);
    }

    #[test]
    fn kinds_without_a_printer_get_name_and_created_at() {
        let registry = Registry::builtin();
        let crds = registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions").expect("served");
        let columns = column_definitions(crds);
        let names: Vec<&Value> = columns.as_array().expect("columns").iter().map(|c| &c["name"]).collect();
        assert_eq!(names, [&json!("Name"), &json!("Created At")]);
        assert_eq!(columns[1]["type"], "date");
    }
}
