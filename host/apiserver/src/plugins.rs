//! Plugin objects brought to life: the manager loads each `capstan.io` `Plugin`'s component into
//! the process's one WebAssembly runtime, reloads it when its bytes or configuration change,
//! unloads it when the object goes, and reports what happened (and call metrics) in the object's
//! status. A version that fails to load leaves the previous one serving.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use capstan_api::plugin::{AdmissionSettings, Plugin, PluginKind, PluginState, PluginStatus};
use capstan_wasm::admission::AdmissionPolicy;
use capstan_wasm::{Digest, Limits, PluginSpec, Runtime, RuntimeConfig};
use serde_json::Value;

use crate::meta;
use crate::objects::ObjectRef;
use crate::server::ApiServer;
use crate::status::{ApiError, ApiResult};

/// How often call metrics are copied into the Plugin objects' status.
const METRICS_INTERVAL: Duration = Duration::from_secs(1);

/// One loaded admission policy and what it was loaded from.
pub struct LoadedPolicy {
    /// The Plugin object's name.
    pub name: String,
    /// The policy.
    pub handle: AdmissionPolicy,
    /// When and how it takes part in admission.
    pub settings: AdmissionSettings,
    /// What the loaded version was built from: configuration and deadline. A change needs a
    /// fresh load; a change of bytes alone is a reload.
    load_key: String,
}

/// Owns the runtime and the loaded plugins.
pub struct PluginManager {
    cache_dir: PathBuf,
    runtime: Mutex<Option<Runtime>>,
    loaded: RwLock<BTreeMap<String, Arc<LoadedPolicy>>>,
    /// Syncs run one at a time, so two writes never load the same plugin twice.
    syncing: tokio::sync::Mutex<()>,
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
        }
    }

    /// The loaded admission policies, mutating or validating, in the order they run.
    #[must_use]
    pub fn admission_policies(&self, mutating: bool) -> Vec<Arc<LoadedPolicy>> {
        let loaded = self.loaded.read().unwrap_or_else(PoisonError::into_inner);
        let mut policies: Vec<_> = loaded.values().filter(|p| p.settings.mutating == mutating).cloned().collect();
        policies.sort_by(|a, b| a.settings.order.cmp(&b.settings.order).then_with(|| a.name.cmp(&b.name)));
        policies
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
    Pending(String),
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
        if plugin.spec.kind != PluginKind::Admission {
            self.plugins.set(name, None);
            return Outcome::Pending(format!(
                "{:?} plugins are loaded by the component that runs them, not the API server",
                plugin.spec.kind
            ));
        }
        let path = PathBuf::from(&plugin.spec.component.path);
        let read = tokio::task::spawn_blocking({
            let path = path.clone();
            move || std::fs::read(&path)
        })
        .await;
        let bytes = match read {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => return Outcome::Failed(format!("cannot read component {}: {e}", path.display())),
            Err(e) => return Outcome::Failed(format!("reading component {} failed: {e}", path.display())),
        };
        let settings = plugin.spec.admission.clone().unwrap_or_default();
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
                let policy = LoadedPolicy { name: name.to_string(), handle, settings, load_key };
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
                Outcome::Pending(message) => {
                    status.state = Some(PluginState::Pending);
                    status.last_error = Some(message.clone());
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

fn copy_metrics(status: &mut PluginStatus, policy: &LoadedPolicy) {
    let metrics = policy.handle.metrics();
    status.calls = metrics.calls;
    status.errors = metrics.errors;
    status.p99_milliseconds = metrics.latency_quantile(0.99).map(|seconds| (seconds * 1e6).round() / 1e3);
}

fn rfc3339(time: SystemTime) -> String {
    jiff::Timestamp::try_from(time).map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string()).unwrap_or_default()
}

/// Keeps the Plugin objects' call metrics current while the server runs.
pub(crate) async fn publish_metrics(server: Arc<ApiServer>) {
    loop {
        tokio::time::sleep(METRICS_INTERVAL).await;
        if let Err(e) = server.publish_plugin_metrics().await {
            tracing::warn!(error = %e, "cannot publish plugin metrics");
        }
    }
}
