//! The component schemas: generated from the typed model by `schemars`, then shaped the way
//! kube-apiserver publishes them, because kubectl finds, reads and trusts them by that shape.

use std::collections::HashMap;

use k8s_openapi::api::{
    authentication::v1 as authentication, autoscaling::v1 as autoscaling, core::v1 as core, policy::v1 as policy,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::{OpenApiError, patch_meta};
use crate::registry::{GroupVersionKind, Registry, SchemaFn};

/// How OpenAPI 3 documents refer to a component schema.
pub(super) const REF_PREFIX: &str = "#/components/schemas/";

/// Meta types the paths refer to by name.
pub(super) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub(super) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(super) const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
pub(super) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// The name-to-schema map plus which definition serves each kind.
pub(super) struct Definitions {
    /// Definition name to OpenAPI 3 schema.
    pub schemas: Map<String, Value>,
    /// Definition name of every kind a path accepts or returns.
    pub kinds: HashMap<GroupVersionKind, String>,
}

/// A kind no resource serves that documents and clients still need.
struct SupportKind {
    schema: SchemaFn,
    /// Set for kinds that travel as objects with `apiVersion`/`kind`, so kubectl can find them.
    gvk: Option<GroupVersionKind>,
}

const fn gvk(group: &'static str, version: &'static str, kind: &'static str) -> GroupVersionKind {
    GroupVersionKind { group, version, kind }
}

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// The meta types every client decodes, and the kinds subresources accept (scale, binding,
/// eviction). `DeleteOptions` and `WatchEvent` get their group-version-kinds in
/// [`add_group_version_kinds`], since upstream lists them under every served group-version.
const SUPPORT_KINDS: &[SupportKind] = &[
    SupportKind { schema: schema_of::<meta::Status>, gvk: Some(gvk("", "v1", "Status")) },
    SupportKind { schema: schema_of::<meta::DeleteOptions>, gvk: None },
    SupportKind { schema: schema_of::<meta::WatchEvent<()>>, gvk: None },
    SupportKind { schema: schema_of::<meta::Patch>, gvk: None },
    SupportKind { schema: schema_of::<meta::ObjectMeta>, gvk: None },
    SupportKind { schema: schema_of::<meta::ListMeta>, gvk: None },
    SupportKind { schema: schema_of::<meta::APIResourceList>, gvk: Some(gvk("", "v1", "APIResourceList")) },
    SupportKind { schema: schema_of::<meta::APIGroupList>, gvk: Some(gvk("", "v1", "APIGroupList")) },
    SupportKind { schema: schema_of::<meta::APIGroup>, gvk: Some(gvk("", "v1", "APIGroup")) },
    SupportKind { schema: schema_of::<meta::APIVersions>, gvk: Some(gvk("", "v1", "APIVersions")) },
    SupportKind { schema: schema_of::<autoscaling::Scale>, gvk: Some(gvk("autoscaling", "v1", "Scale")) },
    SupportKind { schema: schema_of::<core::Binding>, gvk: Some(gvk("", "v1", "Binding")) },
    SupportKind { schema: schema_of::<policy::Eviction>, gvk: Some(gvk("policy", "v1", "Eviction")) },
    SupportKind {
        schema: schema_of::<authentication::TokenRequest>,
        gvk: Some(gvk("authentication.k8s.io", "v1", "TokenRequest")),
    },
];

/// Generates every definition the registry's kinds reach and shapes it for publishing.
pub(super) fn build(registry: &Registry) -> Result<Definitions, OpenApiError> {
    // OpenAPI 3 settings make schemars write `#/components/schemas/` refs, move `$ref` siblings
    // into `allOf`, and turn `const` and `type: [x, "null"]` into forms OpenAPI 3.0 allows.
    let mut generator = SchemaSettings::openapi3().with(|s| s.meta_schema = None).into_generator();
    let mut kinds = HashMap::new();
    for info in registry.resources() {
        if let crate::registry::Model::Typed { schema, .. } = &info.model {
            schema(&mut generator);
        }
        kinds.insert(info.gvk, info.definition.to_string());
    }
    let mut support = Vec::new();
    for kind in SUPPORT_KINDS {
        let reference = (kind.schema)(&mut generator);
        let name = ref_name(reference.as_value()).ok_or(OpenApiError::InlineSchema)?.to_string();
        if let Some(gvk) = kind.gvk {
            kinds.insert(gvk, name.clone());
        }
        support.push((name, kind.gvk));
    }
    let mut schemas = generator.take_definitions(true);
    for info in registry.resources() {
        if let crate::registry::Model::Custom(custom) = &info.model {
            schemas.insert(info.definition.to_string(), custom_schema(&custom.schema));
        }
    }

    for info in registry.resources() {
        let Some(schema) = schemas.get(info.definition) else {
            return Err(OpenApiError::MissingDefinition {
                kind: info.gvk.kind.to_string(),
                definition: info.definition.to_string(),
            });
        };
        let list = list_schema(info.definition, info.list_kind, schema);
        schemas.insert(list_definition(info.definition, info.list_kind), list);
    }
    add_group_version_kinds(registry, &support, &mut schemas);
    publish_special_types(&mut schemas);
    patch_meta::apply(&mut schemas);
    for schema in schemas.values_mut() {
        for_each_schema_mut(schema, &mut move_ref_siblings_into_all_of);
    }
    Ok(Definitions { schemas, kinds })
}

/// A custom resource's published schema: its CRD schema with the standard `apiVersion`, `kind`
/// and `metadata` fields every object has, as kube-apiserver publishes it.
fn custom_schema(schema: &Value) -> Value {
    let mut schema = schema.clone();
    if !schema.get("properties").is_some_and(Value::is_object) {
        schema["properties"] = serde_json::json!({});
    }
    let properties = &mut schema["properties"];
    properties["apiVersion"] = serde_json::json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."});
    properties["kind"] = serde_json::json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."});
    properties["metadata"] =
        serde_json::json!({"$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")});
    if schema.get("type").is_none() {
        schema["type"] = serde_json::json!("object");
    }
    schema
}

/// The definition name of a kind's list (`io.k8s.api.core.v1.PodList`).
pub(super) fn list_definition(definition: &str, list_kind: &str) -> String {
    match definition.rsplit_once('.') {
        Some((package, _)) => format!("{package}.{list_kind}"),
        None => list_kind.to_string(),
    }
}

/// The definition name a `$ref` schema points at.
pub(super) fn ref_name(schema: &Value) -> Option<&str> {
    schema.get("$ref")?.as_str()?.strip_prefix(REF_PREFIX)
}

/// `k8s_openapi::List<T>` has no schema of its own, so the list is written as upstream publishes
/// it: `apiVersion`, `kind` (documented as on the item), list `metadata` and `items`.
fn list_schema(definition: &str, list_kind: &str, item: &Value) -> Value {
    let item_property =
        |name: &str| item.pointer(&format!("/properties/{name}")).cloned().unwrap_or(json!({"type": "string"}));
    let kind = definition.rsplit('.').next().unwrap_or(definition);
    json!({
        "description": format!("{list_kind} is a list of {kind} objects."),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": item_property("apiVersion"),
            "kind": item_property("kind"),
            "metadata": {
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "allOf": [{"$ref": format!("{REF_PREFIX}{LIST_META}")}],
            },
            "items": {
                "description": format!("List of {kind} objects."),
                "type": "array",
                "items": {"$ref": format!("{REF_PREFIX}{definition}")},
            },
        },
    })
}

/// Marks every top-level kind with `x-kubernetes-group-version-kind`: kubectl (explain, apply,
/// validation) finds a kind's schema by this extension, never by the definition name.
fn add_group_version_kinds(
    registry: &Registry,
    support: &[(String, Option<GroupVersionKind>)],
    schemas: &mut Map<String, Value>,
) {
    let mut marks: Vec<(String, GroupVersionKind)> = Vec::new();
    for info in registry.resources() {
        marks.push((info.definition.to_string(), info.gvk));
        marks.push((
            list_definition(info.definition, info.list_kind),
            GroupVersionKind { kind: info.list_kind, ..info.gvk },
        ));
    }
    for (name, gvk) in support {
        if let Some(gvk) = gvk {
            marks.push((name.clone(), *gvk));
        }
    }
    // Options and watch events are sent to and received from every group-version.
    for (group, version) in registry.group_versions() {
        for (name, kind) in [(DELETE_OPTIONS, "DeleteOptions"), (WATCH_EVENT, "WatchEvent")] {
            marks.push((name.to_string(), GroupVersionKind { group, version, kind }));
        }
    }
    for (name, gvk) in marks {
        let Some(Value::Object(schema)) = schemas.get_mut(&name) else { continue };
        let entry = json!({"group": gvk.group, "version": gvk.version, "kind": gvk.kind});
        let list = schema.entry("x-kubernetes-group-version-kind").or_insert_with(|| json!([]));
        if let Value::Array(list) = list
            && !list.contains(&entry)
        {
            list.push(entry);
        }
    }
}

/// k8s-openapi describes a few wire types only by extension; kube-apiserver's OpenAPI 3 also
/// spells out their JSON types, which kubectl explain prints and OpenAPI validators check.
fn publish_special_types(schemas: &mut Map<String, Value>) {
    let shapes = [
        (
            "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
            json!({"format": "int-or-string", "oneOf": [{"type": "integer"}, {"type": "string"}]}),
        ),
        ("io.k8s.apimachinery.pkg.api.resource.Quantity", json!({"oneOf": [{"type": "string"}, {"type": "number"}]})),
        ("io.k8s.apimachinery.pkg.runtime.RawExtension", json!({"x-kubernetes-preserve-unknown-fields": true})),
        (
            "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON",
            json!({"x-kubernetes-preserve-unknown-fields": true}),
        ),
    ];
    for (name, shape) in shapes {
        if let (Some(Value::Object(schema)), Value::Object(shape)) = (schemas.get_mut(name), shape) {
            schema.extend(shape);
        }
    }
}

/// OpenAPI 3.0 and Swagger 2.0 ignore everything beside a `$ref`; kube-apiserver keeps the
/// description (and patch extensions) by wrapping the reference in a one-element `allOf`.
pub(super) fn move_ref_siblings_into_all_of(schema: &mut Map<String, Value>) {
    if schema.len() < 2 {
        return;
    }
    if let Some(reference) = schema.remove("$ref") {
        let all_of = schema.entry("allOf").or_insert_with(|| json!([]));
        if let Value::Array(all_of) = all_of {
            all_of.push(json!({"$ref": reference}));
        }
    }
}

/// Calls `visit` on `schema` and on each of its subschemas, innermost first. Only schema
/// keywords are followed: a property named `$ref` (as in `JSONSchemaProps`) is a property.
pub(super) fn for_each_schema_mut(schema: &mut Value, visit: &mut impl FnMut(&mut Map<String, Value>)) {
    let Value::Object(object) = schema else { return };
    for (keyword, value) in object.iter_mut() {
        let subschemas: Vec<&mut Value> = match (keyword.as_str(), value) {
            ("properties" | "patternProperties", Value::Object(properties)) => properties.values_mut().collect(),
            ("items" | "additionalProperties" | "not" | "allOf" | "anyOf" | "oneOf", Value::Array(schemas)) => {
                schemas.iter_mut().collect()
            }
            ("items" | "additionalProperties" | "not", schema) => vec![schema],
            _ => Vec::new(),
        };
        for subschema in subschemas {
            for_each_schema_mut(subschema, visit);
        }
    }
    visit(object);
}

/// The Swagger 2.0 form of OpenAPI 3 definitions: `#/definitions/` refs, and no `nullable`,
/// `oneOf` or `anyOf`, which 2.0 lacks. Int-or-string types become strings there, as upstream
/// publishes them in its v2 document.
pub(super) fn swagger_definitions(schemas: &Map<String, Value>) -> Map<String, Value> {
    let mut definitions = schemas.clone();
    for schema in definitions.values_mut() {
        for_each_schema_mut(schema, &mut |schema| {
            if let Some(Value::String(reference)) = schema.get_mut("$ref")
                && let Some(name) = reference.strip_prefix(REF_PREFIX)
            {
                *reference = format!("#/definitions/{name}");
            }
            schema.remove("nullable");
            let had_alternatives = schema.remove("oneOf").is_some() | schema.remove("anyOf").is_some();
            if had_alternatives && schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
                schema.entry("type").or_insert_with(|| json!("string"));
            }
        });
    }
    definitions
}
