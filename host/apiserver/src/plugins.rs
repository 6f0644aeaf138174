//! Plugin objects brought to life: the manager loads each `capstan.io` `Plugin`'s component into
//! the process's one WebAssembly runtime, reloads it when its bytes or configuration change,
//! unloads it when the object goes, and reports what happened (and call metrics) in the object's
//! status. A version that fails to load leaves the previous one serving.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use capstan_api::plugin::{AdmissionSettings, Plugin, PluginComponent, PluginKind, PluginState, PluginStatus};
use capstan_api::selector::LabelSelector;
use capstan_wasm::admission::AdmissionPolicy;
use capstan_wasm::{Digest, Limits, PluginSpec, Runtime, RuntimeConfig};
use serde_json::Value;

use crate::conditions::Conditions;
use crate::meta;
use crate::objects::ObjectRef;
use crate::server::ApiServer;
use crate::status::{ApiError, ApiResult};

/// How often call metrics are copied into the Plugin objects' status.
const METRICS_INTERVAL: Duration = Duration::from_secs(1);

/// Every how many metric intervals component sources are checked for changes.
const SOURCE_CHECK_TICKS: u32 = 2;

/// A component the server ships, with the Plugin spec it is enabled with by default.
#[derive(Clone)]
pub struct BuiltinPlugin {
    /// The component's bytes.
    pub bytes: Arc<[u8]>,
    /// The Plugin `spec` (without `component`), as JSON.
    pub spec: Value,
}

/// One loaded admission policy and what it was loaded from.
pub struct LoadedPolicy {
    /// The Plugin object's name.
    pub name: String,
    /// The policy.
    pub handle: AdmissionPolicy,
    /// When and how it takes part in admission.
    pub settings: AdmissionSettings,
    /// `settings.match_conditions`, compiled.
    pub conditions: Conditions,
    /// `settings.object_selector`, parsed; `None` when absent or empty (it matches everything).
    pub object_selector: Option<LabelSelector>,
    /// `settings.namespace_selector`, parsed; `None` when absent or empty.
    pub namespace_selector: Option<LabelSelector>,
    /// What the loaded version was built from: configuration and deadline. A change needs a
    /// fresh load; a change of bytes alone is a reload.
    load_key: String,
    /// How many more calls go straight to a blocking thread before one is tried on the request's
    /// worker thread again; set by a call that needed a blocking thread (see
    /// `admission::call_on_worker`), 0 while calls run in place.
    pub blocking_calls_left: std::sync::atomic::AtomicU32,
}

/// Owns the runtime and the loaded plugins.
pub struct PluginManager {
    cache_dir: PathBuf,
    runtime: Mutex<Option<Runtime>>,
    loaded: RwLock<BTreeMap<String, Arc<LoadedPolicy>>>,
    /// Syncs run one at a time, so two writes never load the same plugin twice.
    syncing: tokio::sync::Mutex<()>,
    /// The components this server ships, by name.
    builtins: BTreeMap<String, BuiltinPlugin>,
    /// The drop-in directory of `.wasm` files, when there is one.
    drop_in: Option<PathBuf>,
}

impl PluginManager {
    /// A manager whose compile cache lives in `cache_dir`. The runtime starts with the first
    /// plugin, so servers without plugins pay nothing for it.
    #[must_use]
    pub fn new(cache_dir: PathBuf) -> Self {
        Self {
            cache_dir,
            runtime: Mutex::new(None),
            loaded: RwLock::new(BTreeMap::new()),
            syncing: tokio::sync::Mutex::new(()),
            builtins: BTreeMap::new(),
            drop_in: None,
        }
    }

    /// Adds the components the server ships (each enabled by a Plugin object created at start
    /// unless one of its name exists) and the drop-in directory watched for `.wasm` files.
    #[must_use]
    pub fn with_sources(mut self, builtins: BTreeMap<String, BuiltinPlugin>, drop_in: Option<PathBuf>) -> Self {
        self.builtins = builtins;
        self.drop_in = drop_in;
        self
    }

    /// The loaded admission policies, mutating or validating, in the order they run.
    #[must_use]
    pub fn admission_policies(&self, mutating: bool) -> Vec<Arc<LoadedPolicy>> {
        let loaded = self.loaded.read().unwrap_or_else(PoisonError::into_inner);
        let mut policies: Vec<_> = loaded.values().filter(|p| p.settings.mutating == mutating).cloned().collect();
        policies.sort_by(|a, b| a.settings.order.cmp(&b.settings.order).then_with(|| a.name.cmp(&b.name)));
        policies
    }

    /// Every loaded plugin's call metrics (calls, errors, timeouts, latency histogram) in the
    /// Prometheus text format, for the API server's `/metrics`.
    #[must_use]
    pub fn prometheus(&self) -> String {
        let runtime = self.runtime.lock().unwrap_or_else(PoisonError::into_inner).clone();
        runtime.map(|r| capstan_wasm::render_prometheus(&r.metrics())).unwrap_or_default()
    }

    fn runtime(&self) -> Result<Runtime, String> {
        let mut runtime = self.runtime.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(runtime) = runtime.as_ref() {
            return Ok(runtime.clone());
        }
        let config = RuntimeConfig { cache_dir: Some(self.cache_dir.clone()), ..RuntimeConfig::default() };
        let created = Runtime::new(config).map_err(|e| format!("cannot start the plugin runtime: {e}"))?;
        *runtime = Some(created.clone());
        Ok(created)
    }

    fn get(&self, name: &str) -> Option<Arc<LoadedPolicy>> {
        self.loaded.read().unwrap_or_else(PoisonError::into_inner).get(name).cloned()
    }

    fn set(&self, name: &str, policy: Option<Arc<LoadedPolicy>>) {
        let mut loaded = self.loaded.write().unwrap_or_else(PoisonError::into_inner);
        match policy {
            Some(policy) => loaded.insert(name.to_string(), policy),
            None => loaded.remove(name),
        };
    }
}

/// What one sync made of one plugin, for its status.
enum Outcome {
    Loaded { digest: Digest, loaded_at: SystemTime },
    Failed(String),
}

impl ApiServer {
    fn plugin_info() -> ApiResult<&'static capstan_api::ResourceInfo> {
        Self::resource("capstan.io", "v1alpha1", "plugins")
    }

    /// Brings the loaded plugins in line with the stored Plugin objects: loads new ones,
    /// reloads changed ones, unloads removed ones, and writes each one's status.
    pub async fn sync_plugins(&self) -> ApiResult<()> {
        let _one_at_a_time = self.plugins.syncing.lock().await;
        let info = Self::plugin_info()?;
        let objects = self.objects.list(info, None, None, None, None).await?.items;
        let mut live = Vec::new();
        for object in objects {
            let name = meta::meta_str(&object, "name").unwrap_or_default().to_string();
            if object.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            live.push(name.clone());
            let outcome = match serde_json::from_value::<Plugin>(object) {
                // Scheduler and controller plugins are loaded, and their status written, by the
                // scheduler and the controller manager.
                Ok(plugin) if plugin.spec.kind != PluginKind::Admission => {
                    self.plugins.set(&name, None);
                    continue;
                }
                Ok(plugin) => self.sync_plugin(&name, &plugin).await,
                Err(e) => Outcome::Failed(format!("the Plugin object cannot be read: {e}")),
            };
            self.write_plugin_status(&name, &outcome).await?;
        }
        let gone: Vec<String> = {
            let loaded = self.plugins.loaded.read().unwrap_or_else(PoisonError::into_inner);
            loaded.keys().filter(|name| !live.contains(name)).cloned().collect()
        };
        for name in gone {
            tracing::info!(plugin = %name, "plugin unloaded");
            self.plugins.set(&name, None);
        }
        Ok(())
    }

    async fn sync_plugin(&self, name: &str, plugin: &Plugin) -> Outcome {
        let bytes = match self.component_bytes(&plugin.spec.component).await {
            Ok(bytes) => bytes,
            Err(message) => return Outcome::Failed(message),
        };
        let settings = plugin.spec.admission.clone().unwrap_or_default();
        let conditions = match Conditions::compile(&settings.match_conditions) {
            Ok(conditions) => conditions,
            Err(errors) => {
                let named = errors.iter().map(|(i, e)| format!("matchConditions[{i}]: {e}"));
                return Outcome::Failed(named.collect::<Vec<_>>().join("; "));
            }
        };
        let (object_selector, namespace_selector) = match (
            selector(settings.object_selector.as_ref(), "objectSelector"),
            selector(settings.namespace_selector.as_ref(), "namespaceSelector"),
        ) {
            (Ok(object), Ok(namespace)) => (object, namespace),
            (Err(message), _) | (_, Err(message)) => return Outcome::Failed(message),
        };
        let config = plugin.spec.config.as_ref().map_or_else(|| "{}".to_string(), Value::to_string);
        let deadline = Duration::from_millis(settings.timeout_milliseconds());
        let load_key = format!("{deadline:?} {config}");
        let digest = Digest::of(&bytes);
        let current = self.plugins.get(name);
        let result = match current {
            Some(current) if current.load_key == load_key => {
                let handle = current.handle.clone();
                let serving = handle.status().version;
                let version = if serving.digest == digest {
                    Ok(serving)
                } else {
                    tokio::task::spawn_blocking(move || handle.reload(&bytes).map_err(|e| e.to_string()))
                        .await
                        .unwrap_or_else(|e| Err(format!("reloading failed: {e}")))
                };
                version.map(|v| (current.handle.clone(), v))
            }
            _ => {
                let runtime = match self.plugins.runtime() {
                    Ok(runtime) => runtime,
                    Err(e) => return Outcome::Failed(e),
                };
                let limits = Limits { deadline, ..Limits::default() };
                let spec = PluginSpec::new(name).with_config(config).with_limits(limits);
                tokio::task::spawn_blocking(move || {
                    runtime
                        .load::<capstan_wasm::admission::AdmissionWorld>(spec, &bytes)
                        .map(|handle| {
                            let version = handle.status().version;
                            (handle, version)
                        })
                        .map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(format!("loading failed: {e}")))
            }
        };
        match result {
            Ok((handle, version)) => {
                let policy = LoadedPolicy {
                    name: name.to_string(),
                    handle,
                    settings,
                    conditions,
                    object_selector,
                    namespace_selector,
                    load_key,
                    blocking_calls_left: std::sync::atomic::AtomicU32::new(0),
                };
                self.plugins.set(name, Some(Arc::new(policy)));
                Outcome::Loaded { digest: version.digest, loaded_at: version.loaded_at }
            }
            Err(message) => {
                // The previous version keeps serving, with the settings it was loaded with.
                tracing::warn!(plugin = %name, error = %message, "plugin load refused");
                Outcome::Failed(message)
            }
        }
    }

    /// The bytes of a plugin's component, from whichever source its spec names.
    async fn component_bytes(&self, component: &PluginComponent) -> Result<Arc<[u8]>, String> {
        if let Some(name) = &component.builtin {
            return self.plugins.builtins.get(name).map(|b| Arc::clone(&b.bytes)).ok_or_else(|| {
                format!("this server ships no component {name:?} (is plugins/ built, or --components-dir right?)")
            });
        }
        for (source, key, plural, field) in [
            ("ConfigMap", &component.config_map, "configmaps", "binaryData"),
            ("Secret", &component.secret, "secrets", "data"),
        ] {
            let Some(key) = key else { continue };
            let info = Self::resource("", "v1", plural).map_err(|e| e.to_string())?;
            let target = ObjectRef { info, namespace: Some(key.namespace.clone()), name: key.name.clone() };
            let object = self
                .objects
                .get_kv(&target)
                .await
                .map_err(|e| format!("cannot read {source} {}/{}: {e}", key.namespace, key.name))?
                .ok_or_else(|| format!("{source} {}/{} does not exist", key.namespace, key.name))?
                .0;
            let encoded = object.get(field).and_then(|d| d.get(&key.key)).and_then(Value::as_str).ok_or_else(|| {
                format!("{source} {}/{} has no key {:?} in {field}", key.namespace, key.name, key.key)
            })?;
            return base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded)
                .map(Arc::from)
                .map_err(|e| format!("{source} {}/{} key {:?} is not base64: {e}", key.namespace, key.name, key.key));
        }
        let path = PathBuf::from(&component.path);
        if component.path.is_empty() {
            return Err("spec.component names no path, builtin, configMap or secret".to_string());
        }
        let read = tokio::task::spawn_blocking({
            let path = path.clone();
            move || std::fs::read(&path)
        })
        .await;
        match read {
            Ok(Ok(bytes)) => Ok(Arc::from(bytes)),
            Ok(Err(e)) => Err(format!("cannot read component {}: {e}", path.display())),
            Err(e) => Err(format!("reading component {} failed: {e}", path.display())),
        }
    }

    /// Creates the Plugin objects of the built-in admission policies this server ships, unless
    /// objects of those names exist (an administrator's edits stay).
    pub(crate) async fn ensure_builtin_plugins(&self) -> ApiResult<()> {
        let info = Self::plugin_info()?;
        for (name, builtin) in &self.plugins.builtins {
            let target = ObjectRef { info, namespace: None, name: name.clone() };
            if self.objects.get_kv(&target).await?.is_some() {
                continue;
            }
            let mut object = serde_json::json!({
                "apiVersion": "capstan.io/v1alpha1",
                "kind": "Plugin",
                "metadata": {"name": name, "uid": meta::new_uid(), "creationTimestamp": meta::now(),
                             "labels": {"capstan.io/builtin": "true"}},
                "spec": builtin.spec.clone(),
            });
            object["spec"]["component"] = serde_json::json!({"builtin": name});
            match self.objects.create(&target, &object).await {
                Ok(_) | Err(ApiError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Makes the drop-in directory's components Plugin objects: `NAME.wasm` (with settings from
    /// an optional `NAME.yaml` holding a Plugin `spec`, admission by default) becomes Plugin
    /// `NAME`, labelled as coming from the directory; objects whose file is gone are deleted.
    async fn sync_drop_in(&self) -> ApiResult<()> {
        let Some(dir) = self.plugins.drop_in.clone() else { return Ok(()) };
        let info = Self::plugin_info()?;
        let wanted = tokio::task::spawn_blocking(move || drop_in_specs(&dir))
            .await
            .map_err(|e| ApiError::Internal(format!("scanning the plugin directory failed: {e}")))?;
        let existing = self.objects.list(info, None, None, None, None).await?.items;
        for object in &existing {
            let name = meta::meta_str(object, "name").unwrap_or_default();
            let from_dir =
                object.pointer("/metadata/labels/capstan.io~1source").and_then(Value::as_str) == Some(DROP_IN);
            if from_dir && !wanted.iter().any(|(n, _)| n == name) {
                let target = ObjectRef::of(info, object);
                if let Some((_, revision)) = self.objects.get_kv(&target).await? {
                    let _ = self.objects.remove(&target, revision).await;
                }
            }
        }
        for (name, spec) in wanted {
            let target = ObjectRef { info, namespace: None, name: name.clone() };
            let current = self.objects.get_kv(&target).await?;
            let mut object = match &current {
                Some((object, _)) if object.get("spec") == Some(&spec) => continue,
                Some((object, _)) => strip_version(object.clone()),
                None => serde_json::json!({
                    "apiVersion": "capstan.io/v1alpha1",
                    "kind": "Plugin",
                    "metadata": {"name": name, "uid": meta::new_uid(), "creationTimestamp": meta::now(),
                                 "labels": {"capstan.io/source": DROP_IN}},
                }),
            };
            object["spec"] = spec;
            let written = match current {
                Some((_, revision)) => self.objects.replace(&target, revision, &object).await.map(|_| ()),
                None => self.objects.create(&target, &object).await.map(|_| ()),
            };
            if let Err(e) = written {
                tracing::warn!(plugin = %name, error = %e, "cannot record a drop-in plugin");
            }
        }
        Ok(())
    }

    async fn write_plugin_status(&self, name: &str, outcome: &Outcome) -> ApiResult<()> {
        let serving = self.plugins.get(name);
        self.update_plugin_status(name, |status| {
            match outcome {
                Outcome::Loaded { digest, loaded_at } => {
                    status.state = Some(PluginState::Loaded);
                    status.digest = Some(digest.as_str().to_string());
                    status.loaded_at = Some(rfc3339(*loaded_at));
                    status.last_error = None;
                }
                Outcome::Failed(message) => {
                    status.state = Some(PluginState::Failed);
                    status.last_error = Some(message.clone());
                    if serving.is_none() {
                        status.digest = None;
                        status.loaded_at = None;
                    }
                }
            }
            if let Some(serving) = &serving {
                copy_metrics(status, serving);
            }
        })
        .await
    }

    /// Copies every loaded plugin's call metrics into its status when they changed.
    async fn publish_plugin_metrics(&self) -> ApiResult<()> {
        let loaded: Vec<Arc<LoadedPolicy>> =
            self.plugins.loaded.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        for policy in loaded {
            self.update_plugin_status(&policy.name, |status| copy_metrics(status, &policy)).await?;
        }
        Ok(())
    }

    /// Rewrites one Plugin's status with `change`, retrying on conflicts; a no-op when nothing
    /// changed or the object is gone.
    async fn update_plugin_status(&self, name: &str, change: impl Fn(&mut PluginStatus)) -> ApiResult<()> {
        let info = Self::plugin_info()?;
        let target = ObjectRef { info, namespace: None, name: name.to_string() };
        for _ in 0..8 {
            let Some((current, revision)) = self.objects.get_kv(&target).await? else { return Ok(()) };
            let mut status: PluginStatus =
                current.get("status").and_then(|s| serde_json::from_value(s.clone()).ok()).unwrap_or_default();
            change(&mut status);
            let status = serde_json::to_value(&status)
                .map_err(|e| ApiError::Internal(format!("cannot encode the status of plugin {name}: {e}")))?;
            if current.get("status") == Some(&status) {
                return Ok(());
            }
            let mut updated = current.clone();
            meta::metadata_mut(&mut updated).remove("resourceVersion");
            updated["status"] = status;
            match self.objects.replace(&target, revision, &updated).await {
                Ok(_) | Err(ApiError::NotFound(_)) => return Ok(()),
                Err(ApiError::Conflict(..)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The label value marking Plugin objects made from the drop-in directory.
const DROP_IN: &str = "drop-in";

fn strip_version(mut object: Value) -> Value {
    meta::metadata_mut(&mut object).remove("resourceVersion");
    object
}

/// The Plugin specs the drop-in directory asks for, by plugin name.
fn drop_in_specs(dir: &std::path::Path) -> Vec<(String, Value)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut specs = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_string) else { continue };
        let sidecar = path.with_extension("yaml");
        let mut spec: Value = match std::fs::read_to_string(&sidecar) {
            Ok(text) => match serde_yaml::from_str(&text) {
                Ok(spec) => spec,
                Err(e) => {
                    tracing::warn!(file = %sidecar.display(), error = %e, "drop-in plugin settings are not YAML");
                    continue;
                }
            },
            Err(_) => serde_json::json!({}),
        };
        if !spec.is_object() {
            spec = serde_json::json!({});
        }
        if spec.get("kind").is_none() {
            spec["kind"] = serde_json::json!("admission");
        }
        spec["component"] = serde_json::json!({"path": path.to_string_lossy()});
        specs.push((name, spec));
    }
    specs.sort_by(|a, b| a.0.cmp(&b.0));
    specs
}

fn copy_metrics(status: &mut PluginStatus, policy: &LoadedPolicy) {
    let metrics = policy.handle.metrics();
    status.calls = metrics.calls;
    status.errors = metrics.errors;
    status.p99_milliseconds = metrics.latency_quantile(0.99).map(|seconds| (seconds * 1e6).round() / 1e3);
}

fn rfc3339(time: SystemTime) -> String {
    jiff::Timestamp::try_from(time).map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string()).unwrap_or_default()
}

/// Keeps the Plugin objects' call metrics current while the server runs, and picks up changed
/// component sources (files, `ConfigMaps`, Secrets, the drop-in directory) every few seconds.
pub(crate) async fn publish_metrics(server: Arc<ApiServer>) {
    let mut ticks = 0u32;
    loop {
        tokio::time::sleep(METRICS_INTERVAL).await;
        if let Err(e) = server.publish_plugin_metrics().await {
            tracing::warn!(error = %e, "cannot publish plugin metrics");
        }
        ticks += 1;
        if ticks.is_multiple_of(SOURCE_CHECK_TICKS) {
            if let Err(e) = server.sync_drop_in().await {
                tracing::warn!(error = %e, "cannot sync the drop-in plugin directory");
            }
            if let Err(e) = server.sync_plugins().await {
                tracing::warn!(error = %e, "cannot sync plugins");
            }
        }
    }
}

/// The admission policies Capstan ships, in `plugins/admission/<name>`, with the Plugin spec
/// each is enabled with by default (the binary reads their components and passes them in
/// [`crate::Config::builtin_plugins`]).
#[must_use]
pub fn builtin_admission_specs() -> Vec<(&'static str, Value)> {
    let pods = |mutating: bool, order: i32, operations: &[&str]| {
        serde_json::json!({
            "kind": "admission",
            "admission": {
                "mutating": mutating,
                "failurePolicy": "Fail",
                "order": order,
                "timeoutSeconds": 5,
                "rules": [{"operations": operations, "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            },
        })
    };
    vec![
        (
            // Namespace deletions only: creates in missing or terminating namespaces are refused
            // by the server itself before admission (`check_namespace_accepts`), so a call on
            // every namespaced create (each Event, each Pod) would only repeat that check.
            "namespace-lifecycle",
            serde_json::json!({
                "kind": "admission",
                "admission": {
                    "mutating": false, "failurePolicy": "Fail", "order": -1000, "timeoutSeconds": 5,
                    "rules": [{"operations": ["DELETE"], "apiGroups": [""], "apiVersions": ["v1"],
                               "resources": ["namespaces"]}],
                },
            }),
        ),
        ("service-account", pods(true, 100, &["CREATE"])),
        ("limit-ranger", pods(true, 200, &["CREATE"])),
        ("priority", pods(true, 300, &["CREATE"])),
        ("default-toleration-seconds", pods(true, 400, &["CREATE"])),
        ("pod-security", pods(false, 100, &["CREATE", "UPDATE"])),
        (
            // Every namespaced create and delete (any resource may be counted as
            // `count/<resource>.<group>`), updates of the kinds an update can grow (pods,
            // services, claims), and quota updates, whose scopes it validates.
            "resource-quota",
            serde_json::json!({
                "kind": "admission",
                "admission": {
                    "mutating": false, "failurePolicy": "Fail", "order": 1000, "timeoutSeconds": 5,
                    "rules": [
                        {"operations": ["CREATE", "DELETE"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"],
                         "scope": "Namespaced"},
                        {"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
                         "resources": ["resourcequotas", "pods", "services", "persistentvolumeclaims"]},
                    ],
                },
            }),
        ),
    ]
}

impl ApiServer {
    /// The `PriorityClasses` every cluster has (`system-node-critical`, `system-cluster-critical`),
    /// which the Priority policy resolves like any other.
    pub(crate) async fn ensure_system_priority_classes(&self) -> ApiResult<()> {
        let info = Self::resource("scheduling.k8s.io", "v1", "priorityclasses")?;
        for (name, value) in [("system-node-critical", 2_000_001_000), ("system-cluster-critical", 2_000_000_000)] {
            let target = ObjectRef { info, namespace: None, name: name.to_string() };
            if self.objects.get_kv(&target).await?.is_some() {
                continue;
            }
            let object = serde_json::json!({
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": name, "uid": meta::new_uid(), "creationTimestamp": meta::now()},
                "value": value,
                "preemptionPolicy": "PreemptLowerPriority",
                "description": "Used for system critical pods that must not be moved from their current node.",
            });
            match self.objects.create(&target, &object).await {
                Ok(_) | Err(ApiError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A policy's label selector, parsed once when it loads; `None` when absent or empty.
fn selector(selector: Option<&Value>, field: &str) -> Result<Option<LabelSelector>, String> {
    let Some(selector) = selector else { return Ok(None) };
    let parsed = LabelSelector::from_json(selector).map_err(|e| format!("admission.{field}: {e}"))?;
    Ok(Some(parsed).filter(|parsed| !parsed.is_empty()))
}
