//! The resource registry: every kind the API server serves, with what discovery, routing,
//! storage and OpenAPI need to know about it.

use k8s_openapi::api::{
    apps::v1 as apps, autoscaling::v1 as autoscaling_v1, autoscaling::v2 as autoscaling, batch::v1 as batch,
    coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery, events::v1 as events,
    networking::v1 as networking, policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as scheduling,
    storage::v1 as storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use schemars::{JsonSchema, Schema, SchemaGenerator};

/// Group, version and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupVersionKind {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version within the group, such as `v1`.
    pub version: &'static str,
    /// Kind, such as `Pod`.
    pub kind: &'static str,
}

impl GroupVersionKind {
    /// The `apiVersion` field value: `v1` for core, `apps/v1` otherwise.
    #[must_use]
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }
}

/// A subresource served under a resource (`pods/status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subresource {
    /// Path segment, such as `status`.
    pub name: &'static str,
    /// The kind the subresource accepts and returns, when it differs from the parent's.
    pub kind: Option<GroupVersionKind>,
    /// Verbs it supports.
    pub verbs: &'static [&'static str],
}

/// How the registry learns a kind's OpenAPI schema: from its Rust type through `schemars`.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// Decodes an object through its typed model: the normalised JSON, and the paths of fields the
/// model does not know (for `fieldValidation`). Fails when a field has the wrong type.
pub type DecodeFn = fn(serde_json::Value) -> Result<Decoded, String>;

/// The result of a [`DecodeFn`].
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    /// The object as the typed model re-encodes it (unknown fields dropped).
    pub object: serde_json::Value,
    /// Dotted paths of the fields that were dropped.
    pub unknown_fields: Vec<String>,
}

fn decode_as<T>(value: serde_json::Value) -> Result<Decoded, String>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let mut unknown_fields = Vec::new();
    let typed: T =
        serde_ignored::deserialize(value, |path| unknown_fields.push(path.to_string())).map_err(|e| e.to_string())?;
    let object = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    Ok(Decoded { object, unknown_fields })
}

/// How a resource's objects are described and checked.
#[derive(Clone, Debug)]
pub enum Model {
    /// A built-in kind with a Rust type.
    Typed {
        /// The kind's schema, generated from the type.
        schema: SchemaFn,
        /// Decodes an object through the type.
        decode: DecodeFn,
    },
    /// A custom resource, described by its CRD's OpenAPI v3 schema.
    Custom(std::sync::Arc<crate::custom::CustomModel>),
}

/// Everything the server knows about one resource.
#[derive(Clone, Debug)]
pub struct ResourceInfo {
    /// The kind served at this group/version.
    pub gvk: GroupVersionKind,
    /// Plural resource name used in paths (`pods`).
    pub plural: &'static str,
    /// Singular name (`pod`).
    pub singular: &'static str,
    /// Short names kubectl accepts (`po`).
    pub short_names: &'static [&'static str],
    /// Categories such as `all`.
    pub categories: &'static [&'static str],
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Verbs the resource supports.
    pub verbs: &'static [&'static str],
    /// Subresources.
    pub subresources: &'static [Subresource],
    /// The list kind (`PodList`).
    pub list_kind: &'static str,
    /// OpenAPI definition name (`io.k8s.api.core.v1.Pod`).
    pub definition: &'static str,
    /// How objects of this kind are described and checked.
    pub model: Model,
    /// The resource under which objects are stored (`pods`); several group-versions of one
    /// resource share it.
    pub storage_resource: &'static str,
    /// How this version maps to the stored one, when objects are stored in another version.
    pub conversion: Option<crate::conversion::Conversion>,
}

impl ResourceInfo {
    /// `group/version` (or `version` for core).
    #[must_use]
    pub fn group_version(&self) -> String {
        self.gvk.api_version()
    }

    /// Whether the resource supports `verb`.
    #[must_use]
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }

    /// The subresource named `name`, if served.
    #[must_use]
    pub fn subresource(&self, name: &str) -> Option<&Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }
}

/// Verbs of an ordinary stored resource.
pub const ALL_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
/// Verbs of a create-only virtual resource (reviews).
pub const CREATE_ONLY: &[&str] = &["create"];

const STATUS: Subresource = Subresource { name: "status", kind: None, verbs: &["get", "patch", "update"] };
const SCALE: Subresource = Subresource {
    name: "scale",
    kind: Some(GroupVersionKind { group: "autoscaling", version: "v1", kind: "Scale" }),
    verbs: &["get", "patch", "update"],
};
/// `namespaces/<name>/finalize`: the namespace controller removes its `kubernetes` finalizer.
const FINALIZE: Subresource = Subresource { name: "finalize", kind: None, verbs: &["update"] };
const TOKEN: Subresource = Subresource {
    name: "token",
    kind: Some(GroupVersionKind { group: "authentication.k8s.io", version: "v1", kind: "TokenRequest" }),
    verbs: &["create"],
};
const POD_SUBRESOURCES: &[Subresource] = &[
    STATUS,
    Subresource {
        name: "binding",
        kind: Some(GroupVersionKind { group: "", version: "v1", kind: "Binding" }),
        verbs: &["create"],
    },
    Subresource {
        name: "eviction",
        kind: Some(GroupVersionKind { group: "policy", version: "v1", kind: "Eviction" }),
        verbs: &["create"],
    },
    Subresource { name: "log", kind: None, verbs: &["get"] },
    Subresource { name: "exec", kind: None, verbs: &["create", "get"] },
    Subresource { name: "attach", kind: None, verbs: &["create", "get"] },
    Subresource { name: "portforward", kind: None, verbs: &["create", "get"] },
];

/// Whether a `k8s_openapi` scope type is namespaced.
trait Scope {
    const NAMESPACED: bool;
}
impl Scope for k8s_openapi::NamespaceResourceScope {
    const NAMESPACED: bool = true;
}
impl Scope for k8s_openapi::ClusterResourceScope {
    const NAMESPACED: bool = false;
}

/// What the typed model does not say about a resource.
#[derive(Clone, Copy)]
struct Extra {
    singular: &'static str,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    verbs: &'static [&'static str],
    subresources: &'static [Subresource],
    storage_resource: Option<&'static str>,
    conversion: Option<crate::conversion::Conversion>,
}

const PLAIN: Extra = Extra {
    singular: "",
    short_names: &[],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[],
    storage_resource: None,
    conversion: None,
};

fn info<T>(extra: Extra) -> ResourceInfo
where
    T: k8s_openapi::ListableResource + JsonSchema + serde::de::DeserializeOwned + serde::Serialize,
    T::Scope: Scope,
{
    ResourceInfo {
        gvk: GroupVersionKind { group: T::GROUP, version: T::VERSION, kind: T::KIND },
        plural: T::URL_PATH_SEGMENT,
        singular: if extra.singular.is_empty() { singular_of(T::KIND) } else { extra.singular },
        short_names: extra.short_names,
        categories: extra.categories,
        namespaced: T::Scope::NAMESPACED,
        verbs: extra.verbs,
        subresources: extra.subresources,
        list_kind: T::LIST_KIND,
        definition: definition_of::<T>(),
        model: Model::Typed { schema: |generator| generator.subschema_for::<T>(), decode: decode_as::<T> },
        storage_resource: extra.storage_resource.unwrap_or(T::URL_PATH_SEGMENT),
        conversion: extra.conversion,
    }
}

/// The OpenAPI definition name `schemars` gives `T` (`io.k8s.api.core.v1.Pod`).
fn definition_of<T: JsonSchema>() -> &'static str {
    // The schema name is computed once per kind when the registry is built.
    Box::leak(T::schema_name().into_owned().into_boxed_str())
}

/// Kubernetes' singular resource name: the kind in lower case.
fn singular_of(kind: &'static str) -> &'static str {
    Box::leak(kind.to_ascii_lowercase().into_boxed_str())
}

/// The registry of served resources.
#[derive(Debug)]
pub struct Registry {
    resources: Vec<ResourceInfo>,
}

impl Registry {
    /// Every built-in resource Capstan serves.
    #[must_use]
    pub fn builtin() -> Self {
        let all = &["all"];
        let resources = vec![
            // core/v1
            info::<core::Namespace>(Extra { short_names: &["ns"], subresources: &[STATUS, FINALIZE], ..PLAIN }),
            info::<core::Pod>(Extra { short_names: &["po"], categories: all, subresources: POD_SUBRESOURCES, ..PLAIN }),
            info::<core::Service>(Extra { short_names: &["svc"], categories: all, subresources: &[STATUS], ..PLAIN }),
            info::<core::Endpoints>(Extra { short_names: &["ep"], ..PLAIN }),
            info::<core::ConfigMap>(Extra { short_names: &["cm"], ..PLAIN }),
            info::<core::Secret>(PLAIN),
            info::<core::ServiceAccount>(Extra { short_names: &["sa"], subresources: &[TOKEN], ..PLAIN }),
            info::<core::Event>(Extra { short_names: &["ev"], ..PLAIN }),
            info::<core::Node>(Extra { short_names: &["no"], subresources: &[STATUS], ..PLAIN }),
            info::<core::PersistentVolume>(Extra { short_names: &["pv"], subresources: &[STATUS], ..PLAIN }),
            info::<core::PersistentVolumeClaim>(Extra { short_names: &["pvc"], subresources: &[STATUS], ..PLAIN }),
            info::<core::LimitRange>(Extra { short_names: &["limits"], ..PLAIN }),
            info::<core::ResourceQuota>(Extra { short_names: &["quota"], subresources: &[STATUS], ..PLAIN }),
            info::<core::ReplicationController>(Extra {
                short_names: &["rc"],
                categories: all,
                subresources: &[STATUS, SCALE],
                ..PLAIN
            }),
            // apps/v1
            info::<apps::Deployment>(Extra {
                short_names: &["deploy"],
                categories: all,
                subresources: &[STATUS, SCALE],
                ..PLAIN
            }),
            info::<apps::ReplicaSet>(Extra {
                short_names: &["rs"],
                categories: all,
                subresources: &[STATUS, SCALE],
                ..PLAIN
            }),
            info::<apps::StatefulSet>(Extra {
                short_names: &["sts"],
                categories: all,
                subresources: &[STATUS, SCALE],
                ..PLAIN
            }),
            info::<apps::DaemonSet>(Extra { short_names: &["ds"], categories: all, subresources: &[STATUS], ..PLAIN }),
            info::<apps::ControllerRevision>(PLAIN),
            // batch/v1
            info::<batch::Job>(Extra { categories: all, subresources: &[STATUS], ..PLAIN }),
            info::<batch::CronJob>(Extra { short_names: &["cj"], categories: all, subresources: &[STATUS], ..PLAIN }),
            // autoscaling/v2
            info::<autoscaling::HorizontalPodAutoscaler>(Extra {
                short_names: &["hpa"],
                categories: all,
                subresources: &[STATUS],
                ..PLAIN
            }),
            // autoscaling/v1 is served too; v2 comes first, as the group's preferred version.
            info::<autoscaling_v1::HorizontalPodAutoscaler>(Extra {
                short_names: &["hpa"],
                categories: all,
                subresources: &[STATUS],
                conversion: Some(crate::conversion::HPA_V1),
                ..PLAIN
            }),
            // policy/v1
            info::<policy::PodDisruptionBudget>(Extra { short_names: &["pdb"], subresources: &[STATUS], ..PLAIN }),
            // rbac.authorization.k8s.io/v1
            info::<rbac::Role>(PLAIN),
            info::<rbac::RoleBinding>(PLAIN),
            info::<rbac::ClusterRole>(PLAIN),
            info::<rbac::ClusterRoleBinding>(PLAIN),
            // coordination.k8s.io/v1
            info::<coordination::Lease>(PLAIN),
            // discovery.k8s.io/v1
            info::<discovery::EndpointSlice>(PLAIN),
            // networking.k8s.io/v1
            info::<networking::Ingress>(Extra { short_names: &["ing"], subresources: &[STATUS], ..PLAIN }),
            info::<networking::IngressClass>(PLAIN),
            info::<networking::NetworkPolicy>(Extra { short_names: &["netpol"], ..PLAIN }),
            // storage.k8s.io/v1
            info::<storage::StorageClass>(Extra { short_names: &["sc"], ..PLAIN }),
            info::<storage::CSIDriver>(PLAIN),
            info::<storage::CSINode>(PLAIN),
            info::<storage::VolumeAttachment>(Extra { subresources: &[STATUS], ..PLAIN }),
            // scheduling.k8s.io/v1
            info::<scheduling::PriorityClass>(Extra { short_names: &["pc"], ..PLAIN }),
            // events.k8s.io/v1 is a view of the core/v1 events.
            info::<events::Event>(Extra {
                short_names: &["ev"],
                storage_resource: Some("events"),
                conversion: Some(crate::conversion::EVENTS_V1),
                ..PLAIN
            }),
            // apiextensions.k8s.io/v1
            info::<apiextensions::CustomResourceDefinition>(Extra {
                short_names: &["crd", "crds"],
                subresources: &[STATUS],
                ..PLAIN
            }),
            // capstan.io/v1alpha1
            info::<crate::plugin::Plugin>(Extra { short_names: &["plg"], subresources: &[STATUS], ..PLAIN }),
        ];
        Registry { resources }
    }

    /// The built-in resources plus those the given `CustomResourceDefinition` objects define. A
    /// CRD naming a resource that already exists is skipped.
    #[must_use]
    pub fn with_custom_resources(mut self, crds: &[serde_json::Value]) -> Self {
        for crd in crds {
            for info in crate::custom::resources_of(crd) {
                if self.lookup(info.gvk.group, info.gvk.version, info.plural).is_none() {
                    self.resources.push(info);
                }
            }
        }
        self
    }

    /// Whether a resource is a custom one.
    #[must_use]
    pub fn is_custom(info: &ResourceInfo) -> bool {
        matches!(info.model, Model::Custom(_))
    }

    /// Every resource, in registration order.
    #[must_use]
    pub fn resources(&self) -> &[ResourceInfo] {
        &self.resources
    }

    /// The resource `plural` in `group`/`version`.
    #[must_use]
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceInfo> {
        self.resources.iter().find(|r| r.gvk.group == group && r.gvk.version == version && r.plural == plural)
    }

    /// The resource serving `kind` at `apiVersion` (`apps/v1`).
    #[must_use]
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceInfo> {
        self.resources.iter().find(|r| r.gvk.kind == kind && r.group_version() == api_version)
    }

    /// The group/versions served, in a stable order with the core group first.
    #[must_use]
    pub fn group_versions(&self) -> Vec<(&'static str, &'static str)> {
        let mut seen = Vec::new();
        for r in &self.resources {
            let gv = (r.gvk.group, r.gvk.version);
            if !seen.contains(&gv) {
                seen.push(gv);
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_resources_carry_kubernetes_names_and_scopes() {
        let registry = Registry::builtin();
        let cases = [
            ("", "v1", "pods", "Pod", "pod", true, "PodList", "io.k8s.api.core.v1.Pod"),
            ("", "v1", "nodes", "Node", "node", false, "NodeList", "io.k8s.api.core.v1.Node"),
            (
                "apps",
                "v1",
                "deployments",
                "Deployment",
                "deployment",
                true,
                "DeploymentList",
                "io.k8s.api.apps.v1.Deployment",
            ),
            (
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                "customresourcedefinition",
                false,
                "CustomResourceDefinitionList",
                "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
            ),
        ];
        for (group, version, plural, kind, singular, namespaced, list_kind, definition) in cases {
            let r = registry.lookup(group, version, plural).unwrap_or_else(|| panic!("{plural} registered"));
            assert_eq!(
                (r.gvk.kind, r.singular, r.namespaced, r.list_kind, r.definition),
                (kind, singular, namespaced, list_kind, definition)
            );
        }
    }

    #[test]
    fn core_group_comes_first_and_storage_resources_are_unique() {
        let registry = Registry::builtin();
        assert_eq!(registry.group_versions()[0], ("", "v1"));
        let (views, stored): (Vec<&ResourceInfo>, Vec<&ResourceInfo>) =
            registry.resources().iter().partition(|r| r.conversion.is_some());
        let mut storage: Vec<_> = stored.iter().map(|r| r.storage_resource).collect();
        storage.sort_unstable();
        let before = storage.len();
        storage.dedup();
        assert_eq!(before, storage.len(), "two kinds would overwrite each other's objects");
        for view in views {
            assert!(storage.contains(&view.storage_resource), "{} converts to a stored resource", view.plural);
        }
    }
}
