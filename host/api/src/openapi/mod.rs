//! The OpenAPI documents kube-apiserver serves, built from the registry: the `/openapi/v3`
//! index and one OpenAPI 3.0 document per group-version, the `/openapi/v2` Swagger 2.0 document,
//! and the component schemas strategic merge patch and server-side apply steer by.
//!
//! kubectl depends on these documents: `kubectl explain` reads the v3 schemas, `kubectl apply`
//! takes patch strategies from them, and every `create`/`apply` looks for a PATCH operation with
//! a `fieldValidation` parameter before it trusts the server to validate fields.
//!
//! [`OpenApi::build`] does all the work once; the accessors hand out the serialized documents.
//! The schemas come from the typed model ([`schemas`]), the patch strategies from a table
//! ([`patch_meta`]), and the operations from one generator for every resource ([`paths`]).
//! [`SchemaNode`] walks the served component schemas for the code that reads them back.

pub mod gnostic;
mod patch_meta;
mod paths;
mod schema_node;
mod schemas;

pub use schema_node::SchemaNode;

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512};

use crate::registry::{Registry, ResourceInfo};
use paths::{Dialect, PathItem};
use schemas::REF_PREFIX;

/// The Kubernetes release whose API the documents describe.
const KUBERNETES_VERSION: &str = "v1.32.2";

/// Why the OpenAPI documents could not be built. Each is a mistake in the registry or in this
/// module, found when the server starts.
#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {
    /// A resource's schema function did not produce the definition the registry names.
    #[error(
        "the schema of kind {kind} did not produce definition {definition}; make the registry's definition name match the type's schema name"
    )]
    MissingDefinition {
        /// The resource's kind.
        kind: String,
        /// The definition the registry expected.
        definition: String,
    },
    /// A subresource exchanges a kind that has no schema.
    #[error(
        "subresource {resource}/{subresource} exchanges kind {kind}, which has no schema; add it to the OpenAPI support kinds"
    )]
    UnknownSubresourceKind {
        /// Plural of the parent resource.
        resource: String,
        /// The subresource's name.
        subresource: String,
        /// The kind it exchanges.
        kind: String,
    },
    /// A support kind's schema was inlined instead of registered as a definition.
    #[error("a support kind's schema was inlined rather than named; it cannot be referred to by $ref")]
    InlineSchema,
    /// A document could not be serialized.
    #[error("serializing the OpenAPI document {document} failed: {source}")]
    Serialize {
        /// Which document.
        document: String,
        /// The serializer's error.
        source: serde_json::Error,
    },
}

/// One serialized OpenAPI 3.0 document and the digest clients cache it by.
struct V3Document {
    bytes: Vec<u8>,
    hash: String,
}

/// Every OpenAPI document of the served kinds, serialized once.
pub struct OpenApi {
    definitions: Map<String, Value>,
    /// Keyed by the index's path: `api/v1`, `apis/apps/v1`.
    v3: BTreeMap<String, V3Document>,
    v2: Vec<u8>,
    /// `v2` as gnostic's protobuf `openapi.v2.Document` (definitions only).
    v2_protobuf: Vec<u8>,
}

impl fmt::Debug for OpenApi {
    // The documents run to megabytes; their shape is what a debug print needs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenApi")
            .field("definitions", &self.definitions.len())
            .field("v3", &self.v3.keys().collect::<Vec<_>>())
            .field("v2_bytes", &self.v2.len())
            .field("v2_protobuf_bytes", &self.v2_protobuf.len())
            .finish()
    }
}

impl OpenApi {
    /// Generates the schemas and paths of every resource in `registry` and serializes the
    /// documents.
    pub fn build(registry: &Registry) -> Result<OpenApi, OpenApiError> {
        let schemas::Definitions { schemas, kinds } = schemas::build(registry)?;
        let mut v3 = BTreeMap::new();
        let mut all_paths = Vec::new();
        for (group, version) in registry.group_versions() {
            let mut items = Vec::new();
            for info in registry.resources().iter().filter(|r| r.gvk.group == group && r.gvk.version == version) {
                items.extend(paths::resource_paths(info, &kinds)?);
            }
            let key = if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") };
            let bytes = serialize(&key, &v3_document(&items, &schemas))?;
            v3.insert(key, V3Document { hash: digest(&bytes), bytes });
            all_paths.extend(items);
        }
        let v2_json = v2_document(&all_paths, &schemas);
        let v2 = serialize("v2", &v2_json)?;
        let v2_protobuf = gnostic::encode(&v2_json);
        Ok(OpenApi { definitions: schemas, v3, v2, v2_protobuf })
    }

    /// The `/openapi/v3` discovery document: each group-version's document URL, with a digest of
    /// its content so clients can cache it until it changes.
    #[must_use]
    pub fn v3_index(&self) -> Value {
        let paths: Map<String, Value> = self
            .v3
            .iter()
            .map(|(key, doc)| {
                (key.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", doc.hash)}))
            })
            .collect();
        json!({ "paths": paths })
    }

    /// The serialized OpenAPI 3.0 document of `path` (`api/v1`, `apis/apps/v1`; a leading `/` is
    /// ignored), or `None` for a group-version not served.
    #[must_use]
    pub fn v3_document(&self, path: &str) -> Option<&[u8]> {
        self.v3.get(path.trim_start_matches('/')).map(|doc| doc.bytes.as_slice())
    }

    /// The serialized Swagger 2.0 document of every group-version.
    #[must_use]
    pub fn v2_document(&self) -> &[u8] {
        &self.v2
    }

    /// The Swagger 2.0 document in protobuf (gnostic's `openapi.v2.Document`), as client-go's
    /// discovery asks for it: version, info and definitions.
    #[must_use]
    pub fn v2_protobuf(&self) -> &[u8] {
        &self.v2_protobuf
    }

    /// The OpenAPI 3 component schemas by definition name, with Kubernetes' extensions. A
    /// property refers to another definition as `{"$ref": "#/components/schemas/<name>"}`, or
    /// as `{"allOf": [{"$ref": …}], …}` when it has its own description or extensions; merge
    /// behaviour is in the property's `x-kubernetes-patch-strategy` and
    /// `x-kubernetes-patch-merge-key`.
    #[must_use]
    pub fn definitions(&self) -> &Map<String, Value> {
        &self.definitions
    }

    /// The schema of `info`'s kind.
    #[must_use]
    pub fn definition_for(&self, info: &ResourceInfo) -> Option<&Value> {
        self.definitions.get(info.definition)
    }
}

fn serialize(document: &str, value: &Value) -> Result<Vec<u8>, OpenApiError> {
    serde_json::to_vec(value).map_err(|source| OpenApiError::Serialize { document: document.to_string(), source })
}

/// Uppercase hex SHA-512, as kube-apiserver computes its documents' hashes.
fn digest(bytes: &[u8]) -> String {
    Sha512::digest(bytes).iter().fold(String::with_capacity(128), |mut hex, byte| {
        let _ = write!(hex, "{byte:02X}");
        hex
    })
}

/// A group-version's OpenAPI 3.0 document, with the definitions its paths reach.
fn v3_document(items: &[PathItem], schemas: &Map<String, Value>) -> Value {
    let paths: Map<String, Value> =
        items.iter().map(|item| (item.path.clone(), paths::render(item, Dialect::V3))).collect();
    let paths = Value::Object(paths);
    let components = reachable(&paths, schemas);
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {"BearerToken": bearer_token()}},
        "security": [{"BearerToken": []}],
    })
}

/// The Swagger 2.0 document of every group-version.
fn v2_document(items: &[PathItem], schemas: &Map<String, Value>) -> Value {
    let paths: Map<String, Value> =
        items.iter().map(|item| (item.path.clone(), paths::render(item, Dialect::V2))).collect();
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "definitions": schemas::swagger_definitions(schemas),
        "securityDefinitions": {"BearerToken": bearer_token()},
        "security": [{"BearerToken": []}],
    })
}

fn bearer_token() -> Value {
    json!({"type": "apiKey", "in": "header", "name": "authorization", "description": "Bearer Token authentication"})
}

/// The definitions `root` refers to, directly or through other definitions. A group-version's
/// document carries only these, so `api/v1` does not repeat every group's kinds.
fn reachable(root: &Value, schemas: &Map<String, Value>) -> Map<String, Value> {
    let mut found = Map::new();
    let mut pending = Vec::new();
    collect_refs(root, &mut pending);
    while let Some(name) = pending.pop() {
        if found.contains_key(&name) {
            continue;
        }
        if let Some(schema) = schemas.get(&name) {
            collect_refs(schema, &mut pending);
            found.insert(name, schema.clone());
        }
    }
    found
}

/// Pushes the definition name of every component `$ref` under `value`.
fn collect_refs(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                match child.as_str().and_then(|r| r.strip_prefix(REF_PREFIX)) {
                    Some(name) if key == "$ref" => into.push(name.to_string()),
                    _ => collect_refs(child, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, into)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use crate::registry::GroupVersionKind;

    fn openapi() -> &'static OpenApi {
        static OPENAPI: OnceLock<OpenApi> = OnceLock::new();
        OPENAPI.get_or_init(|| OpenApi::build(&Registry::builtin()).expect("builtin registry builds"))
    }

    fn v3(path: &str) -> Value {
        let bytes = openapi().v3_document(path).unwrap_or_else(|| panic!("{path} is served"));
        serde_json::from_slice(bytes).expect("v3 document is JSON")
    }

    fn v2() -> Value {
        serde_json::from_slice(openapi().v2_document()).expect("v2 document is JSON")
    }

    /// Every v3 document, by index path.
    fn v3_documents() -> Vec<(String, Value)> {
        openapi().v3.keys().map(|key| (key.clone(), v3(key))).collect()
    }

    /// Visits every JSON object under `value`.
    fn walk<'a>(value: &'a Value, visit: &mut impl FnMut(&'a Map<String, Value>)) {
        match value {
            Value::Object(object) => {
                visit(object);
                object.values().for_each(|child| walk(child, visit));
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, visit)),
            _ => {}
        }
    }

    /// Every `$ref` string under `value`.
    fn refs(value: &Value) -> Vec<String> {
        let mut found = Vec::new();
        walk(value, &mut |object| {
            if let Some(Value::String(reference)) = object.get("$ref") {
                found.push(reference.clone());
            }
        });
        found
    }

    fn gvk_entry(group: &str, version: &str, kind: &str) -> Value {
        json!({"group": group, "version": version, "kind": kind})
    }

    #[test]
    fn every_ref_points_at_a_definition_of_its_document() {
        let mut documents: Vec<(String, Value, &str, &str)> = v3_documents()
            .into_iter()
            .map(|(key, doc)| (key, doc, "#/components/schemas/", "/components/schemas"))
            .collect();
        documents.push(("v2".into(), v2(), "#/definitions/", "/definitions"));
        for (name, doc, prefix, definitions) in documents {
            let definitions = doc.pointer(definitions).and_then(Value::as_object).expect("definitions");
            for reference in refs(&doc) {
                let target =
                    reference.strip_prefix(prefix).unwrap_or_else(|| panic!("{name}: foreign ref {reference}"));
                assert!(definitions.contains_key(target), "{name}: {reference} does not resolve");
            }
        }
    }

    #[test]
    fn no_ref_has_siblings() {
        let mut documents = v3_documents();
        documents.push(("v2".into(), v2()));
        for (name, doc) in documents {
            walk(&doc, &mut |object| {
                if object.get("$ref").is_some_and(Value::is_string) {
                    assert_eq!(object.len(), 1, "{name}: $ref with siblings: {object:?}");
                }
            });
        }
    }

    #[test]
    fn kinds_carry_their_group_version_kind() {
        let cases = [
            ("api/v1", "io.k8s.api.core.v1.Pod", gvk_entry("", "v1", "Pod")),
            ("api/v1", "io.k8s.api.core.v1.PodList", gvk_entry("", "v1", "PodList")),
            ("api/v1", "io.k8s.apimachinery.pkg.apis.meta.v1.Status", gvk_entry("", "v1", "Status")),
            ("apis/apps/v1", "io.k8s.api.apps.v1.Deployment", gvk_entry("apps", "v1", "Deployment")),
            ("apis/apps/v1", "io.k8s.api.autoscaling.v1.Scale", gvk_entry("autoscaling", "v1", "Scale")),
            (
                "apis/apps/v1",
                "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
                gvk_entry("apps", "v1", "DeleteOptions"),
            ),
            (
                "apis/batch/v1",
                "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
                gvk_entry("batch", "v1", "WatchEvent"),
            ),
            (
                "apis/apiextensions.k8s.io/v1",
                "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionList",
                gvk_entry("apiextensions.k8s.io", "v1", "CustomResourceDefinitionList"),
            ),
        ];
        for (document, definition, expected) in cases {
            let doc = v3(document);
            let gvks = doc
                .pointer(&format!("/components/schemas/{definition}/x-kubernetes-group-version-kind"))
                .and_then(Value::as_array)
                .unwrap_or_else(|| panic!("{document}: {definition} has no GVK"));
            assert!(gvks.contains(&expected), "{document}: {definition} lacks {expected}");
        }
    }

    #[test]
    fn patch_operations_advertise_field_validation_and_strategic_merge() {
        let cases = [
            ("api/v1", GroupVersionKind { group: "", version: "v1", kind: "Pod" }),
            ("api/v1", GroupVersionKind { group: "", version: "v1", kind: "Node" }),
            ("apis/apps/v1", GroupVersionKind { group: "apps", version: "v1", kind: "Deployment" }),
            (
                "apis/rbac.authorization.k8s.io/v1",
                GroupVersionKind { group: "rbac.authorization.k8s.io", version: "v1", kind: "ClusterRole" },
            ),
        ];
        for (document, gvk) in cases {
            let doc = v3(document);
            let expected = gvk_entry(gvk.group, gvk.version, gvk.kind);
            let patches: Vec<&Value> = doc["paths"]
                .as_object()
                .expect("paths")
                .values()
                .filter_map(|item| item.get("patch"))
                .filter(|op| op["x-kubernetes-group-version-kind"] == expected)
                .collect();
            assert!(!patches.is_empty(), "{document}: no PATCH for {}", gvk.kind);
            // kubectl stops at whichever matching PATCH it meets first, so every one must qualify.
            for op in patches {
                let params = op["parameters"].as_array().expect("parameters");
                assert!(
                    params.iter().any(|p| p["name"] == "fieldValidation" && p["in"] == "query"),
                    "{document}: {} lacks fieldValidation",
                    op["operationId"]
                );
                assert!(op.pointer("/requestBody/content/application~1strategic-merge-patch+json").is_some());
                assert_eq!(op["x-kubernetes-action"], "patch");
            }
        }
    }

    #[test]
    fn resources_are_served_at_kube_apiserver_paths() {
        let cases = [
            ("api/v1", "/api/v1/namespaces/{namespace}/pods", "get", "listCoreV1NamespacedPod", "list", "Pod"),
            ("api/v1", "/api/v1/namespaces/{namespace}/pods", "post", "createCoreV1NamespacedPod", "post", "Pod"),
            ("api/v1", "/api/v1/namespaces/{namespace}/pods/{name}", "put", "replaceCoreV1NamespacedPod", "put", "Pod"),
            ("api/v1", "/api/v1/pods", "get", "listCoreV1PodForAllNamespaces", "list", "Pod"),
            (
                "api/v1",
                "/api/v1/watch/namespaces/{namespace}/pods",
                "get",
                "watchCoreV1NamespacedPodList",
                "watchlist",
                "Pod",
            ),
            (
                "api/v1",
                "/api/v1/namespaces/{namespace}/pods/{name}/binding",
                "post",
                "createCoreV1NamespacedPodBinding",
                "post",
                "Binding",
            ),
            ("api/v1", "/api/v1/nodes/{name}/status", "patch", "patchCoreV1NodeStatus", "patch", "Node"),
            (
                "api/v1",
                "/api/v1/namespaces",
                "delete",
                "deleteCoreV1CollectionNamespace",
                "deletecollection",
                "Namespace",
            ),
            (
                "apis/apps/v1",
                "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale",
                "put",
                "replaceAppsV1NamespacedDeploymentScale",
                "put",
                "Scale",
            ),
            (
                "apis/rbac.authorization.k8s.io/v1",
                "/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}",
                "delete",
                "deleteRbacAuthorizationV1ClusterRole",
                "delete",
                "ClusterRole",
            ),
        ];
        for (document, path, method, operation_id, action, kind) in cases {
            let doc = v3(document);
            let op = &doc["paths"][path][method];
            assert_eq!(op["operationId"], operation_id, "{method} {path}");
            assert_eq!(op["x-kubernetes-action"], action, "{method} {path}");
            assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], kind, "{method} {path}");
        }
        let nodes = v3("api/v1");
        assert!(nodes["paths"].get("/api/v1/namespaces/{namespace}/nodes").is_none(), "nodes are cluster-scoped");
    }

    #[test]
    fn operation_ids_are_unique_within_each_document() {
        for (name, doc) in v3_documents() {
            let mut ids: Vec<&str> = Vec::new();
            walk(&doc["paths"], &mut |object| {
                if let Some(id) = object.get("operationId").and_then(Value::as_str) {
                    ids.push(id);
                }
            });
            let total = ids.len();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), total, "{name} repeats an operationId");
        }
    }

    #[test]
    fn patch_strategies_reach_the_published_schemas() {
        let cases = [
            ("io.k8s.api.core.v1.PodSpec", "containers", "merge", Some("name")),
            ("io.k8s.api.core.v1.PodSpec", "volumes", "merge,retainKeys", Some("name")),
            ("io.k8s.api.core.v1.Container", "env", "merge", Some("name")),
            ("io.k8s.api.core.v1.Container", "ports", "merge", Some("containerPort")),
            ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers", "merge", None),
            ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", "retainKeys", None),
        ];
        let doc = v3("api/v1");
        let apps = v3("apis/apps/v1");
        for (definition, property, strategy, merge_key) in cases {
            let pointer = format!("/components/schemas/{definition}/properties/{property}");
            let published = doc.pointer(&pointer).or_else(|| apps.pointer(&pointer)).expect("property is published");
            let own = &openapi().definitions()[definition]["properties"][property];
            for schema in [published, own] {
                assert_eq!(schema["x-kubernetes-patch-strategy"], strategy, "{definition}.{property}");
                assert_eq!(schema.get("x-kubernetes-patch-merge-key").and_then(Value::as_str), merge_key);
            }
        }
    }

    #[test]
    fn every_patch_meta_row_names_a_generated_property() {
        for row in patch_meta::PATCH_META {
            let property = openapi()
                .definitions()
                .get(row.definition)
                .and_then(|d| d.pointer(&format!("/properties/{}", row.property)));
            assert!(property.is_some(), "{}.{} is not generated", row.definition, row.property);
        }
    }

    #[test]
    fn special_types_are_published_like_kube_apiserver() {
        let definitions = openapi().definitions();
        let int_or_string = &definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
        assert_eq!(int_or_string["format"], "int-or-string");
        assert_eq!(int_or_string["oneOf"], json!([{"type": "integer"}, {"type": "string"}]));
        assert_eq!(definitions["io.k8s.apimachinery.pkg.api.resource.Quantity"]["oneOf"][0]["type"], "string");
        assert_eq!(definitions["io.k8s.apimachinery.pkg.apis.meta.v1.Time"]["format"], "date-time");
        assert_eq!(definitions["io.k8s.apimachinery.pkg.runtime.RawExtension"]["type"], "object");

        let swagger = v2();
        assert_eq!(swagger["definitions"]["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["type"], "string");
        walk(&swagger, &mut |object| {
            for keyword in ["oneOf", "anyOf", "nullable"] {
                if let Some(value) = object.get(keyword) {
                    // JSONSchemaProps has properties by these names; those are objects of schemas.
                    assert!(value.is_object(), "Swagger 2.0 has no {keyword}");
                }
            }
        });
    }

    #[test]
    fn index_links_each_group_version_with_the_hash_of_its_document() {
        let index = openapi().v3_index();
        for key in ["api/v1", "apis/apps/v1", "apis/batch/v1", "apis/rbac.authorization.k8s.io/v1"] {
            let url = index["paths"][key]["serverRelativeURL"].as_str().unwrap_or_else(|| panic!("{key} listed"));
            let bytes = openapi().v3_document(key).expect("document served");
            assert_eq!(url, format!("/openapi/v3/{key}?hash={}", digest(bytes)));
            assert_eq!(v3(key)["openapi"], "3.0.0");
        }
        assert!(openapi().v3_document("apis/nonexistent/v1").is_none());
        assert_eq!(v2()["swagger"], "2.0");
    }

    #[test]
    fn definition_for_finds_the_kind_schema() {
        let registry = Registry::builtin();
        let pod = registry.lookup("", "v1", "pods").expect("pods registered");
        let schema = openapi().definition_for(pod).expect("pod schema");
        assert_eq!(schema["x-kubernetes-group-version-kind"][0], gvk_entry("", "v1", "Pod"));
        assert!(
            schema["properties"]["spec"]["allOf"][0]["$ref"].as_str().is_some_and(|r| r.ends_with("core.v1.PodSpec"))
        );
    }
}
