//! What the API clients that load Plugin objects (the scheduler, the controller manager) share:
//! reading a component from whichever source a Plugin names, creating the Plugin objects of
//! what they ship, watching the Plugin objects of their kind, and writing their status.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use capstan_api::plugin::{ComponentKey, Plugin, PluginComponent, PluginKind};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

/// Reads the bytes of a component shipped with Capstan, by name.
pub type BuiltinComponents = Arc<dyn Fn(&str) -> Result<Vec<u8>, String> + Send + Sync>;

/// The label marking Plugin objects a Capstan server created for what it ships.
pub const BUILTIN_LABEL: &str = "capstan.io/builtin";

/// The bytes of the component `component` names: a shipped one, a key of a ConfigMap's
/// `binaryData` or a Secret's `data`, or a file this process can read.
pub async fn component_bytes(
    client: &kube::Client,
    component: &PluginComponent,
    builtin: &BuiltinComponents,
) -> Result<Vec<u8>, String> {
    if let Some(name) = &component.builtin {
        return builtin(name);
    }
    let keyed = match (&component.config_map, &component.secret) {
        (Some(key), _) => Some((key, "ConfigMap", "binaryData", fetch::<ConfigMap>(client, key).await?.binary_data)),
        (None, Some(key)) => Some((key, "Secret", "data", fetch::<Secret>(client, key).await?.data)),
        (None, None) => None,
    };
    if let Some((key, kind, field, data)) = keyed {
        return data
            .and_then(|mut data| data.remove(&key.key))
            .map(|b| b.0)
            .ok_or_else(|| format!("{kind} {}/{} has no key {:?} in {field}", key.namespace, key.name, key.key));
    }
    if component.path.is_empty() {
        return Err("spec.component names no path, builtin, configMap or secret".to_owned());
    }
    tokio::fs::read(&component.path).await.map_err(|e| format!("cannot read component {}: {e}", component.path))
}

/// Reads the ConfigMap or Secret `key` names.
async fn fetch<K>(client: &kube::Client, key: &ComponentKey) -> Result<K, String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let kind = K::kind(&());
    let api: Api<K> = Api::namespaced(client.clone(), &key.namespace);
    api.get_opt(&key.name)
        .await
        .map_err(|e| format!("cannot read {kind} {}/{}: {e}", key.namespace, key.name))?
        .ok_or_else(|| format!("{kind} {}/{} does not exist", key.namespace, key.name))
}

/// Creates a Plugin object for each of `plugins` (name → `spec`) that does not exist yet,
/// labelled as built in. Existing objects are left as they are: an administrator's edits stay.
pub async fn ensure_builtin_plugins(client: &kube::Client, plugins: &[(String, Value)]) -> Result<(), kube::Error> {
    let api: Api<Plugin> = Api::all(client.clone());
    for (name, spec) in plugins {
        let object = json!({
            "apiVersion": "capstan.io/v1alpha1",
            "kind": "Plugin",
            "metadata": {"name": name, "labels": {BUILTIN_LABEL: "true"}},
            "spec": spec,
        });
        let plugin: Plugin = match serde_json::from_value(object) {
            Ok(plugin) => plugin,
            Err(e) => {
                tracing::error!(plugin = %name, error = %e, "a built-in Plugin spec does not decode");
                continue;
            }
        };
        match api.create(&PostParams::default(), &plugin).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A change to a Plugin object of one kind, as [`watch_plugins`] reports it.
#[derive(Debug)]
pub enum PluginChange {
    /// The object was created or changed (and is of the watched kind, not being deleted).
    Applied(Box<Plugin>),
    /// The object is gone, or no longer of the watched kind.
    Removed(String),
}

/// Watches Plugin objects, calling `on_change` for each change concerning `kind` (in order,
/// one at a time). Returns when the watch stream ends.
pub async fn watch_plugins<F, Fut>(client: kube::Client, kind: PluginKind, mut on_change: F)
where
    F: FnMut(PluginChange) -> Fut,
    Fut: Future<Output = ()>,
{
    let api: Api<Plugin> = Api::all(client);
    let mut stream = Box::pin(watcher(api, watcher::Config::default().any_semantic()).default_backoff());
    while let Some(event) = stream.next().await {
        let change = match event {
            Ok(watcher::Event::InitApply(plugin) | watcher::Event::Apply(plugin)) => {
                if plugin.spec.kind == kind && plugin.metadata.deletion_timestamp.is_none() {
                    PluginChange::Applied(Box::new(plugin))
                } else {
                    PluginChange::Removed(plugin.metadata.name.unwrap_or_default())
                }
            }
            Ok(watcher::Event::Delete(plugin)) => PluginChange::Removed(plugin.metadata.name.unwrap_or_default()),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "Plugin watch failed; retrying");
                continue;
            }
        };
        on_change(change).await;
    }
}

/// Writes Plugin objects' status, skipping a write identical (but for its timestamps) to the
/// last one made for that object, so a status coming back through the watch is not rewritten.
#[derive(Clone)]
pub struct StatusWriter {
    client: kube::Client,
    written: Arc<Mutex<BTreeMap<String, String>>>,
}

impl StatusWriter {
    /// A writer through `client`.
    #[must_use]
    pub fn new(client: kube::Client) -> Self {
        Self { client, written: Arc::default() }
    }

    /// Merges `status` into Plugin `name`'s status.
    pub async fn write(&self, name: &str, status: Value) {
        let mut fingerprint = status.clone();
        if let Some(map) = fingerprint.as_object_mut() {
            map.remove("loadedAt");
        }
        let fingerprint = fingerprint.to_string();
        {
            let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
            if written.get(name) == Some(&fingerprint) {
                return;
            }
            written.insert(name.to_owned(), fingerprint);
        }
        let api: Api<Plugin> = Api::all(self.client.clone());
        if let Err(e) = api.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await
        {
            tracing::debug!(plugin = name, error = %e, "cannot write the Plugin status");
            self.written.lock().unwrap_or_else(PoisonError::into_inner).remove(name);
        }
    }

    /// Forgets what was written for `name` (its object is gone).
    pub fn forget(&self, name: &str) {
        self.written.lock().unwrap_or_else(PoisonError::into_inner).remove(name);
    }
}

/// The status to write for Plugin `name` after applying it: loaded with the digest now serving,
/// or failed with why (logged).
#[must_use]
pub fn status_after(name: &str, applied: &Result<String, String>) -> Value {
    match applied {
        Ok(digest) => loaded_status(digest),
        Err(message) => {
            tracing::warn!(plugin = %name, error = %message, "Plugin not applied; the previous version, if any, serves");
            failed_status(message)
        }
    }
}

/// The status of a plugin serving the component with `digest` since now.
#[must_use]
pub fn loaded_status(digest: &str) -> Value {
    json!({"state": "Loaded", "digest": digest, "lastError": null,
           "loadedAt": k8s_openapi::jiff::Timestamp::now().to_string()})
}

/// The status of a plugin whose last load failed with `message`.
#[must_use]
pub fn failed_status(message: &str) -> Value {
    json!({"state": "Failed", "lastError": message})
}
