//! `capstan.io/v1alpha1` `Plugin`: a WebAssembly component the server loads — an admission
//! policy, a scheduler plugin or a controller — with its configuration and kind-specific settings.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A plugin the server loads from a component.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "io.capstan.v1alpha1.Plugin")]
pub struct Plugin {
    /// `apiVersion`: defines the versioned schema of this representation of an object.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// Kind is a string value representing the REST resource this object represents.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Standard object's metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What to load and how to use it.
    pub spec: PluginSpec,
    /// What the server made of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PluginStatus>,
}

/// What to load and how to use it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "io.capstan.v1alpha1.PluginSpec")]
pub struct PluginSpec {
    /// The world the component implements.
    pub kind: PluginKind,
    /// Where the component comes from.
    pub component: PluginComponent,
    /// The JSON configuration given to the component at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub config: Option<serde_json::Value>,
    /// Admission settings; used when `kind` is `admission`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<AdmissionSettings>,
    /// Scheduler settings; used when `kind` is `scheduler`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<SchedulerSettings>,
    /// Controller settings; used when `kind` is `controller`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<ControllerSettings>,
}

/// How a controller runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "io.capstan.v1alpha1.ControllerSettings")]
pub struct ControllerSettings {
    /// How many keys it reconciles at once; 2 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
}

/// How a scheduler plugin takes part in scheduling.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "io.capstan.v1alpha1.SchedulerSettings")]
pub struct SchedulerSettings {
    /// The profile (`spec.schedulerName`) the plugin joins; `default-scheduler` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The weight of its scores; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    /// How long one call may take, in milliseconds; 1000 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_milliseconds: Option<u64>,
}

/// The world a plugin implements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "io.capstan.v1alpha1.PluginKind")]
pub enum PluginKind {
    /// An admission policy (`admission-policy` world).
    #[default]
    Admission,
    /// A scheduler plugin (`scheduler-plugin` world).
    Scheduler,
    /// A controller (`controller` world).
    Controller,
}

/// Where a plugin's component comes from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "io.capstan.v1alpha1.PluginComponent")]
pub struct PluginComponent {
    /// A `.wasm` component file the server can read.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// A component the server ships (`namespace-lifecycle`, `resource-quota`, …), by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<String>,
    /// A key of a `ConfigMap`'s `binaryData` holding the component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ComponentKey>,
    /// A key of a Secret's `data` holding the component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ComponentKey>,
}

/// One key of a `ConfigMap` or Secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "io.capstan.v1alpha1.ComponentKey")]
pub struct ComponentKey {
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// The key whose (base64) value is the component.
    pub key: String,
}

/// How an admission policy takes part in admission.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "io.capstan.v1alpha1.AdmissionSettings")]
pub struct AdmissionSettings {
    /// Whether the policy mutates (runs before validation and may patch) or validates.
    #[serde(default)]
    pub mutating: bool,
    /// What a failed call means: `Fail` refuses the request, `Ignore` admits it.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// How long one call may take; 10 seconds when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// Policies of one kind run in ascending order, then by name.
    #[serde(default)]
    pub order: i32,
    /// Which requests the policy sees; none when empty.
    #[serde(default)]
    pub rules: Vec<AdmissionRule>,
    /// Only objects in namespaces whose labels match this `LabelSelector` (a Namespace object
    /// is matched by its own labels; other cluster-scoped objects always match). All when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub namespace_selector: Option<serde_json::Value>,
    /// Only objects whose labels (new or old) match this `LabelSelector`. All when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub object_selector: Option<serde_json::Value>,
    /// Mutating policies: whether to call the policy again when a later policy changed the
    /// object (`IfNeeded`), as upstream's `reinvocationPolicy`. `Never` when absent.
    #[serde(default)]
    pub reinvocation_policy: ReinvocationPolicy,
    /// CEL expressions a request must all satisfy for the policy to be called, as a webhook's
    /// `matchConditions`: with `object`, `oldObject` and `request` (the `AdmissionRequest`) in
    /// scope. One false skips the policy; an error follows `failurePolicy`. At most 64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_conditions: Vec<MatchCondition>,
}

/// One of a policy's `matchConditions`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "io.capstan.v1alpha1.MatchCondition")]
pub struct MatchCondition {
    /// Names the condition in errors; a qualified name, unique among the policy's conditions.
    pub name: String,
    /// A CEL expression that evaluates to a bool.
    pub expression: String,
}

/// Whether a mutating policy runs again after later policies changed the object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "io.capstan.v1alpha1.ReinvocationPolicy")]
pub enum ReinvocationPolicy {
    /// Once per request.
    #[default]
    Never,
    /// Once more, if a policy after it changed the object.
    IfNeeded,
}

impl AdmissionSettings {
    /// The call deadline in milliseconds.
    #[must_use]
    pub fn timeout_milliseconds(&self) -> u64 {
        u64::from(self.timeout_seconds.unwrap_or(10)) * 1000
    }
}

/// What to do when a policy fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "io.capstan.v1alpha1.FailurePolicy")]
pub enum FailurePolicy {
    /// Refuse the request.
    #[default]
    Fail,
    /// Admit the request.
    Ignore,
}

/// Requests a policy sees, as in `ValidatingWebhookConfiguration` rules; `*` matches anything.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "io.capstan.v1alpha1.AdmissionRule")]
pub struct AdmissionRule {
    /// `CREATE`, `UPDATE`, `DELETE` or `*`.
    #[serde(default)]
    pub operations: Vec<String>,
    /// API groups; `""` is the core group.
    #[serde(default)]
    pub api_groups: Vec<String>,
    /// API versions.
    #[serde(default)]
    pub api_versions: Vec<String>,
    /// Resources, with subresources as `deployments/status`; `*` is every resource and `*/*`
    /// every resource and subresource.
    #[serde(default)]
    pub resources: Vec<String>,
    /// `Cluster`, `Namespaced` or `*` (the default): which objects by scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl AdmissionRule {
    /// Whether the rule covers `operation` on `group`/`version`/`resource` (with `subresource`).
    #[must_use]
    pub fn matches(
        &self,
        operation: &str,
        group: &str,
        version: &str,
        resource: &str,
        subresource: Option<&str>,
    ) -> bool {
        let any = |list: &[String], value: &str| list.iter().any(|item| item == "*" || item == value);
        any(&self.operations, operation)
            && any(&self.api_groups, group)
            && any(&self.api_versions, version)
            && self.resources.iter().any(|pattern| resource_matches(pattern, resource, subresource))
    }

    /// Whether the rule's `scope` admits an object of a namespaced (or cluster-scoped) resource.
    #[must_use]
    pub fn scope_matches(&self, namespaced: bool) -> bool {
        match self.scope.as_deref() {
            Some("Cluster") => !namespaced,
            Some("Namespaced") => namespaced,
            _ => true,
        }
    }
}

/// Upstream's resource matching: `pods` is the resource only, `pods/status` one subresource,
/// `*` every resource, `*/*` everything, `pods/*` a resource and its subresources, `*/status`
/// one subresource of every resource.
fn resource_matches(pattern: &str, resource: &str, subresource: Option<&str>) -> bool {
    let (want_resource, want_sub) = match pattern.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (pattern, None),
    };
    let resource_ok = want_resource == "*" || want_resource == resource;
    let sub_ok = match (want_sub, subresource) {
        (None, None) | (Some("*"), _) => true,
        (Some(want), Some(have)) => want == have,
        _ => false,
    };
    resource_ok && sub_ok
}

/// What the server made of a plugin.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "io.capstan.v1alpha1.PluginStatus")]
pub struct PluginStatus {
    /// `Pending`, `Loaded` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<PluginState>,
    /// The SHA-256 of the component serving calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Why the last load failed; the previous version, if any, keeps serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the serving version was loaded (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded_at: Option<String>,
    /// Calls made to the plugin.
    #[serde(default)]
    pub calls: u64,
    /// Calls that failed.
    #[serde(default)]
    pub errors: u64,
    /// The 99th percentile call latency, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_milliseconds: Option<f64>,
}

/// A plugin's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "io.capstan.v1alpha1.PluginState")]
pub enum PluginState {
    /// Not loaded yet (or not a kind this server loads).
    Pending,
    /// Serving calls.
    Loaded,
    /// The last load failed.
    Failed,
}

impl k8s_openapi::Resource for Plugin {
    const API_VERSION: &'static str = "capstan.io/v1alpha1";
    const GROUP: &'static str = "capstan.io";
    const KIND: &'static str = "Plugin";
    const VERSION: &'static str = "v1alpha1";
    const URL_PATH_SEGMENT: &'static str = "plugins";
    type Scope = k8s_openapi::ClusterResourceScope;
}

impl k8s_openapi::ListableResource for Plugin {
    const LIST_KIND: &'static str = "PluginList";
}

impl k8s_openapi::Metadata for Plugin {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_like_webhook_rules() {
        let rule = AdmissionRule {
            operations: vec!["CREATE".into(), "UPDATE".into()],
            api_groups: vec!["apps".into()],
            api_versions: vec!["*".into()],
            resources: vec!["deployments".into(), "*/scale".into()],
            scope: None,
        };
        let cases = [
            ("CREATE", "apps", "v1", "deployments", None, true),
            ("DELETE", "apps", "v1", "deployments", None, false),
            ("CREATE", "", "v1", "deployments", None, false),
            ("UPDATE", "apps", "v1", "deployments", Some("status"), false),
            ("UPDATE", "apps", "v1", "statefulsets", Some("scale"), true),
        ];
        for (operation, group, version, resource, sub, expected) in cases {
            assert_eq!(
                rule.matches(operation, group, version, resource, sub),
                expected,
                "{operation} {resource} {sub:?}"
            );
        }
    }

    #[test]
    fn the_published_schema_keeps_any_config() {
        let openapi = crate::openapi::OpenApi::build(&crate::Registry::builtin()).expect("OpenAPI builds");
        let spec = &openapi.definitions()["io.capstan.v1alpha1.PluginSpec"];
        assert_eq!(spec["properties"]["config"]["x-kubernetes-preserve-unknown-fields"], true, "{spec}");
    }

    #[test]
    fn spec_decodes_with_defaults() {
        let plugin: Plugin = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"kind": "admission", "component": {"path": "/x.wasm"}, "admission": {"rules": []}},
        }))
        .expect("a valid plugin");
        let admission = plugin.spec.admission.expect("admission settings");
        assert_eq!((admission.failure_policy, admission.timeout_milliseconds()), (FailurePolicy::Fail, 10_000));
    }
}
