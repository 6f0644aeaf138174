//! The Swagger 2.0 document in the protobuf form client-go asks for
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`): gnostic's `openapi.v2`
//! messages, of which this module declares the ones a document of definitions needs, with their
//! field numbers.
//!
//! kubectl reads it to validate objects on the client, e.g. the items of a `List` it creates, and
//! reads only the definitions; the paths stay in the JSON form.

use prost::Message;
use serde_json::Value;

/// `openapi.v2.Document`.
#[derive(Clone, PartialEq, Message)]
pub struct Document {
    #[prost(string, tag = "1")]
    swagger: String,
    #[prost(message, optional, tag = "2")]
    info: Option<Info>,
    #[prost(message, optional, tag = "9")]
    definitions: Option<Definitions>,
}

/// `openapi.v2.Info`.
#[derive(Clone, PartialEq, Message)]
pub struct Info {
    #[prost(string, tag = "1")]
    title: String,
    #[prost(string, tag = "2")]
    version: String,
}

/// `openapi.v2.Definitions` (and `Properties`, which has the same shape).
#[derive(Clone, PartialEq, Message)]
pub struct Definitions {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSchema>,
}

/// `openapi.v2.NamedSchema`.
#[derive(Clone, PartialEq, Message)]
pub struct NamedSchema {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Schema>,
}

/// `openapi.v2.Any`: a value as YAML text (JSON is YAML).
#[derive(Clone, PartialEq, Message)]
pub struct Any {
    #[prost(string, tag = "2")]
    yaml: String,
}

/// `openapi.v2.NamedAny`: a vendor extension.
#[derive(Clone, PartialEq, Message)]
pub struct NamedAny {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Any>,
}

/// `openapi.v2.AdditionalPropertiesItem`.
#[derive(Clone, PartialEq, Message)]
pub struct AdditionalPropertiesItem {
    #[prost(oneof = "AdditionalProperties", tags = "1, 2")]
    oneof: Option<AdditionalProperties>,
}

/// Its `oneof`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum AdditionalProperties {
    /// A schema for the values.
    #[prost(message, tag = "1")]
    Schema(Box<Schema>),
    /// Whether other properties are allowed.
    #[prost(bool, tag = "2")]
    Boolean(bool),
}

/// `openapi.v2.TypeItem`.
#[derive(Clone, PartialEq, Message)]
pub struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    value: Vec<String>,
}

/// `openapi.v2.ItemsItem`.
#[derive(Clone, PartialEq, Message)]
pub struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    schema: Vec<Schema>,
}

/// `openapi.v2.Schema`, the fields Kubernetes' definitions use.
#[derive(Clone, PartialEq, Message)]
#[allow(clippy::struct_excessive_bools, reason = "the message's fields, as gnostic declares them")]
pub struct Schema {
    #[prost(string, tag = "1")]
    reference: String,
    #[prost(string, tag = "2")]
    format: String,
    #[prost(string, tag = "3")]
    title: String,
    #[prost(string, tag = "4")]
    description: String,
    #[prost(message, optional, tag = "5")]
    default: Option<Any>,
    #[prost(double, tag = "6")]
    multiple_of: f64,
    #[prost(double, tag = "7")]
    maximum: f64,
    #[prost(bool, tag = "8")]
    exclusive_maximum: bool,
    #[prost(double, tag = "9")]
    minimum: f64,
    #[prost(bool, tag = "10")]
    exclusive_minimum: bool,
    #[prost(int64, tag = "11")]
    max_length: i64,
    #[prost(int64, tag = "12")]
    min_length: i64,
    #[prost(string, tag = "13")]
    pattern: String,
    #[prost(int64, tag = "14")]
    max_items: i64,
    #[prost(int64, tag = "15")]
    min_items: i64,
    #[prost(bool, tag = "16")]
    unique_items: bool,
    #[prost(int64, tag = "17")]
    max_properties: i64,
    #[prost(int64, tag = "18")]
    min_properties: i64,
    #[prost(string, repeated, tag = "19")]
    required: Vec<String>,
    #[prost(message, repeated, tag = "20")]
    enumeration: Vec<Any>,
    #[prost(message, optional, boxed, tag = "21")]
    additional_properties: Option<Box<AdditionalPropertiesItem>>,
    #[prost(message, optional, tag = "22")]
    kind: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    items: Option<ItemsItem>,
    #[prost(message, repeated, tag = "24")]
    all_of: Vec<Schema>,
    #[prost(message, optional, tag = "25")]
    properties: Option<Definitions>,
    #[prost(bool, tag = "27")]
    read_only: bool,
    #[prost(message, optional, tag = "30")]
    example: Option<Any>,
    #[prost(message, repeated, tag = "31")]
    vendor_extension: Vec<NamedAny>,
}

fn any(value: &Value) -> Any {
    Any { yaml: value.to_string() }
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// One JSON schema in gnostic's form; keywords it has no field for are left out.
fn schema(json: &Value) -> Schema {
    let mut out = Schema::default();
    let Some(fields) = json.as_object() else { return out };
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    for (key, value) in fields {
        match key.as_str() {
            "$ref" => out.reference = text(value),
            "format" => out.format = text(value),
            "title" => out.title = text(value),
            "description" => out.description = text(value),
            "default" => out.default = Some(any(value)),
            "multipleOf" => out.multiple_of = value.as_f64().unwrap_or_default(),
            "maximum" => out.maximum = value.as_f64().unwrap_or_default(),
            "exclusiveMaximum" => out.exclusive_maximum = value.as_bool().unwrap_or_default(),
            "minimum" => out.minimum = value.as_f64().unwrap_or_default(),
            "exclusiveMinimum" => out.exclusive_minimum = value.as_bool().unwrap_or_default(),
            "maxLength" => out.max_length = value.as_i64().unwrap_or_default(),
            "minLength" => out.min_length = value.as_i64().unwrap_or_default(),
            "pattern" => out.pattern = text(value),
            "maxItems" => out.max_items = value.as_i64().unwrap_or_default(),
            "minItems" => out.min_items = value.as_i64().unwrap_or_default(),
            "uniqueItems" => out.unique_items = value.as_bool().unwrap_or_default(),
            "maxProperties" => out.max_properties = value.as_i64().unwrap_or_default(),
            "minProperties" => out.min_properties = value.as_i64().unwrap_or_default(),
            "required" => out.required = strings(value),
            "enum" => out.enumeration = value.as_array().into_iter().flatten().map(any).collect(),
            "additionalProperties" => {
                let item = match value {
                    Value::Bool(allowed) => AdditionalProperties::Boolean(*allowed),
                    other => AdditionalProperties::Schema(Box::new(schema(other))),
                };
                out.additional_properties = Some(Box::new(AdditionalPropertiesItem { oneof: Some(item) }));
            }
            "type" => out.kind = Some(TypeItem { value: strings(value) }),
            "items" => {
                let schemas = match value {
                    Value::Array(items) => items.iter().map(schema).collect(),
                    single => vec![schema(single)],
                };
                out.items = Some(ItemsItem { schema: schemas });
            }
            "allOf" => out.all_of = value.as_array().into_iter().flatten().map(schema).collect(),
            "properties" => out.properties = Some(named(value)),
            "readOnly" => out.read_only = value.as_bool().unwrap_or_default(),
            "example" => out.example = Some(any(value)),
            extension if extension.starts_with("x-") => {
                out.vendor_extension.push(NamedAny { name: extension.to_owned(), value: Some(any(value)) });
            }
            _ => {}
        }
    }
    out
}

/// A JSON object of schemas (`definitions`, `properties`) as ordered named schemas.
fn named(json: &Value) -> Definitions {
    let entries = json.as_object().into_iter().flatten();
    Definitions {
        additional_properties: entries
            .map(|(name, value)| NamedSchema { name: name.clone(), value: Some(schema(value)) })
            .collect(),
    }
}

/// Encodes a Swagger 2.0 document (JSON) as gnostic's `openapi.v2.Document`: version, info and
/// definitions.
#[must_use]
pub fn encode(document: &Value) -> Vec<u8> {
    let text = |pointer: &str| document.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_owned();
    Document {
        swagger: text("/swagger"),
        info: Some(Info { title: text("/info/title"), version: text("/info/version") }),
        definitions: document.get("definitions").map(named),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use serde_json::json;

    use super::{AdditionalProperties, Document, encode};

    #[test]
    fn definitions_keep_their_schemas_and_extensions() {
        let document = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": {"/api/v1/pods": {}},
            "definitions": {
                "io.k8s.api.core.v1.ConfigMap": {
                    "description": "Holds configuration data.",
                    "type": "object",
                    "properties": {
                        "data": {"type": "object", "additionalProperties": {"type": "string"}},
                        "metadata": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
                        "immutable": {"type": "boolean"},
                    },
                    "x-kubernetes-group-version-kind": [{"group": "", "kind": "ConfigMap", "version": "v1"}],
                },
                "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": {
                    "type": "object",
                    "properties": {"finalizers": {"type": "array", "items": {"type": "string"}}},
                    "required": ["name"],
                    "additionalProperties": false,
                },
            },
        });
        let decoded = Document::decode(encode(&document).as_slice()).expect("a Document");
        assert_eq!(
            (decoded.swagger.as_str(), decoded.info.as_ref().map(|i| i.version.as_str())),
            ("2.0", Some("v1.32.0"))
        );
        let definitions = decoded.definitions.expect("definitions").additional_properties;
        let names: Vec<&str> = definitions.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["io.k8s.api.core.v1.ConfigMap", "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]);

        let config_map = definitions[0].value.as_ref().expect("schema");
        assert_eq!(config_map.kind.as_ref().map(|t| t.value.clone()), Some(vec!["object".to_owned()]));
        let extension = &config_map.vendor_extension[0];
        assert_eq!(extension.name, "x-kubernetes-group-version-kind");
        let yaml = &extension.value.as_ref().expect("value").yaml;
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(yaml).ok(),
            Some(json!([{"group": "", "kind": "ConfigMap", "version": "v1"}]))
        );
        let properties = &config_map.properties.as_ref().expect("properties").additional_properties;
        let data = properties.iter().find(|p| p.name == "data").and_then(|p| p.value.as_ref()).expect("data");
        let values = data.additional_properties.as_ref().and_then(|a| a.oneof.clone());
        assert!(
            matches!(values, Some(AdditionalProperties::Schema(s)) if s.kind.as_ref().is_some_and(|t| t.value == ["string"]))
        );
        let metadata =
            properties.iter().find(|p| p.name == "metadata").and_then(|p| p.value.as_ref()).expect("metadata");
        assert_eq!(metadata.reference, "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta");

        let meta = definitions[1].value.as_ref().expect("schema");
        assert_eq!(meta.required, ["name"]);
        assert_eq!(
            meta.additional_properties.as_ref().and_then(|a| a.oneof.clone()),
            Some(AdditionalProperties::Boolean(false))
        );
        let finalizers = &meta.properties.as_ref().expect("properties").additional_properties[0];
        let items = finalizers.value.as_ref().and_then(|f| f.items.as_ref()).expect("items");
        assert_eq!(items.schema[0].kind.as_ref().map(|t| t.value.clone()), Some(vec!["string".to_owned()]));
    }
}
