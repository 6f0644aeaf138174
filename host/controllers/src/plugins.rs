//! Controllers as Plugin objects: while this process leads, every `capstan.io` Plugin of kind
//! `controller` runs as a controller of the Plugin's name. A changed component is reloaded in
//! place (the queue, caches and workers carry on); a changed configuration or worker count
//! restarts the controller; a deleted Plugin stops it. Each Plugin's status says which
//! component serves, or why the last load failed, and counts reconciles and errors.

use std::sync::Arc;
use std::time::Duration;

use capstan_api::plugin::{Plugin, PluginKind};
use capstan_client::plugins::{self as shared, BuiltinComponents, PluginChange, StatusWriter};
use serde_json::json;

use crate::manager::{ControllerManager, ControllerSpec};

/// How often reconcile counts are copied into the Plugin objects' status.
const METRICS_INTERVAL: Duration = Duration::from_secs(2);

/// Workers of a controller whose Plugin does not say.
const DEFAULT_WORKERS: u32 = 2;

/// Runs the controllers the Plugin objects of kind `controller` ask for, until the task is
/// aborted (the caller stops the controllers themselves).
pub(crate) async fn run(manager: ControllerManager, client: kube::Client, builtin: BuiltinComponents) {
    let status = StatusWriter::new(client.clone());
    let publisher = tokio::spawn(publish_metrics(manager.clone(), status.clone()));
    let context = Arc::new(Context { manager, client: client.clone(), builtin, status });
    shared::watch_plugins(client, PluginKind::Controller, |change| {
        let context = Arc::clone(&context);
        async move { context.on_change(change).await }
    })
    .await;
    publisher.abort();
}

struct Context {
    manager: ControllerManager,
    client: kube::Client,
    builtin: BuiltinComponents,
    status: StatusWriter,
}

impl Context {
    async fn on_change(&self, change: PluginChange) {
        match change {
            PluginChange::Applied(plugin) => {
                let name = plugin.metadata.name.clone().unwrap_or_default();
                let applied = self.apply(&name, &plugin).await;
                self.status.write(&name, shared::status_after(&name, &applied)).await;
            }
            PluginChange::Removed(name) => {
                if self.manager.stop(&name) {
                    tracing::info!(controller = %name, "controller stopped: its Plugin is gone");
                }
                self.status.forget(&name);
            }
        }
    }

    /// Starts or reloads the controller of `plugin`; returns the serving component's digest.
    async fn apply(&self, name: &str, plugin: &Plugin) -> Result<String, String> {
        let component = shared::component_bytes(&self.client, &plugin.spec.component, &self.builtin).await?;
        let config = plugin.spec.config.as_ref().map_or_else(|| "{}".to_owned(), serde_json::Value::to_string);
        let workers = plugin.spec.controller.as_ref().and_then(|c| c.workers).unwrap_or(DEFAULT_WORKERS);
        let spec = ControllerSpec {
            name: name.to_owned(),
            component,
            config,
            workers: usize::try_from(workers.max(1)).unwrap_or(1),
        };
        let version = self.manager.apply(spec).await.map_err(|e| e.to_string())?;
        tracing::info!(controller = %name, digest = %version.digest, "controller Plugin applied");
        Ok(version.digest.to_string())
    }
}

/// Copies each controller's reconcile and error counts into its Plugin's status.
async fn publish_metrics(manager: ControllerManager, status: StatusWriter) {
    let mut ticks = tokio::time::interval(METRICS_INTERVAL);
    loop {
        ticks.tick().await;
        for (name, metrics) in manager.metrics() {
            let Some(serving) = manager.status(&name) else { continue };
            let patch = json!({
                "state": "Loaded",
                "digest": serving.version.digest.to_string(),
                "calls": metrics.reconciles,
                "errors": metrics.errors,
            });
            status.write(&name, patch).await;
        }
    }
}
