//! The controller manager: loads controller components, wires each to the shared informers and
//! its own work queue, runs its workers, and replaces its component on demand while the queue
//! and caches carry on.

use std::collections::HashMap;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use capstan_wasm::controller::{
    Controller, ControllerClient, ControllerWorld, GroupVersionKind, ReconcileResult, Watches,
};
use capstan_wasm::{Limits, PluginSpec, Runtime, VersionInfo};
use serde_json::Value;
use tokio::runtime::Handle;

use crate::Key;
use crate::client::HostClient;
use crate::error::ControllerError;
use crate::events::EventRecorder;
use crate::informer::{Change, Handler, Informers};
use crate::metrics::{ControllerMetrics, MetricsSnapshot, Outcome};
use crate::queue::{RateLimits, WorkQueue};

/// A controller instance whose linear memory grew past this is dropped after its call.
const RECYCLE_ABOVE_BYTES: usize = 64 << 20;

/// How to run one controller.
#[derive(Clone, Debug)]
pub struct ControllerSpec {
    /// Its name: in logs, metrics, Events' source and as the field manager of its writes.
    pub name: String,
    /// The component's bytes.
    pub component: Vec<u8>,
    /// The configuration given to `lifecycle.configure`.
    pub config: String,
    /// How many keys it reconciles at once.
    pub workers: usize,
}

impl ControllerSpec {
    /// A controller with configuration `{}` and two workers.
    #[must_use]
    pub fn new(name: impl Into<String>, component: Vec<u8>) -> Self {
        Self { name: name.into(), component, config: "{}".to_owned(), workers: 2 }
    }
}

/// One running controller.
struct Running {
    plugin: Controller,
    /// The configuration and workers it was started with: a change of either needs a restart.
    config: String,
    workers_wanted: usize,
    queue: WorkQueue<Key>,
    metrics: Arc<ControllerMetrics>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

/// The controller manager. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct ControllerManager {
    runtime: Runtime,
    informers: Informers,
    recorder: EventRecorder,
    handle: Handle,
    running: Arc<Mutex<HashMap<String, Running>>>,
}

impl ControllerManager {
    /// A manager hosting components on `runtime`, talking to the API server through `client`.
    /// Call it inside the async runtime the informers and writes should use.
    #[must_use]
    pub fn new(runtime: Runtime, client: kube::Client) -> Self {
        let handle = Handle::current();
        let recorder = EventRecorder::new(client.clone(), &handle);
        Self { runtime, informers: Informers::new(client), recorder, handle, running: Arc::default() }
    }

    /// The shared informers.
    #[must_use]
    pub fn informers(&self) -> &Informers {
        &self.informers
    }

    /// Loads and starts a controller: its informers (waiting for their first list), its queue
    /// and its workers.
    pub async fn start(&self, spec: ControllerSpec) -> Result<(), ControllerError> {
        let runtime = self.runtime.clone();
        let plugin_spec = PluginSpec::new(&spec.name).with_config(&spec.config).with_limits(Limits {
            // A reconcile may write hundreds of objects, each a round trip to the API server.
            deadline: Duration::from_mins(2),
            // A reconcile lists its cache: the ReplicaSet controller's list of thousands of pods
            // is that many JSON strings and values inside the component (64 MiB ran out at
            // 2 000 pods, failing every reconcile from there on): allow the runtime's maximum.
            memory_bytes: self.runtime.config().max_memory_bytes,
            max_instances: spec.workers.max(1) + 1,
            // Linear memory never shrinks: an instance that listed that much is dropped after
            // its call rather than holding its peak for good. Controllers keep state between
            // reconciles in the host (`recall`/`remember`), so nothing is lost with it.
            recycle_above_bytes: Some(RECYCLE_ABOVE_BYTES),
        });
        let bytes = spec.component.clone();
        let plugin = tokio::task::spawn_blocking(move || runtime.load::<ControllerWorld>(plugin_spec, &bytes))
            .await
            .map_err(|e| ControllerError::Unknown(format!("{}: loader panicked: {e}", spec.name)))??;
        let watches = plugin.describe()?;
        if watches.primary.kind.is_empty() {
            return Err(ControllerError::NoPrimary(spec.name));
        }
        let queue = WorkQueue::new(RateLimits::default());
        let client =
            Arc::new(HostClient::new(&spec.name, self.informers.clone(), self.handle.clone(), self.recorder.clone()));
        let dyn_client: Arc<dyn ControllerClient> = client.clone();
        let mapper = start_mapper(&spec.name, plugin.clone(), Arc::clone(&dyn_client), queue.clone());
        self.connect(&watches, &client, &queue, &mapper).await?;
        let metrics = Arc::new(ControllerMetrics::default());
        let workers = (0..spec.workers.max(1))
            .filter_map(|n| {
                let worker = Worker {
                    name: spec.name.clone(),
                    plugin: plugin.clone(),
                    client: Arc::clone(&dyn_client),
                    queue: queue.clone(),
                    metrics: Arc::clone(&metrics),
                };
                std::thread::Builder::new()
                    .name(format!("{}-{n}", spec.name))
                    .spawn(move || worker.run())
                    .map_err(|e| tracing::error!(controller = %spec.name, error = %e, "cannot start a worker"))
                    .ok()
            })
            .collect();
        tracing::info!(controller = %spec.name, primary = %watches.primary.kind, workers = spec.workers, "controller started");
        let running =
            Running { plugin, config: spec.config.clone(), workers_wanted: spec.workers, queue, metrics, workers };
        if let Some(old) = self.lock().insert(spec.name.clone(), running) {
            old.queue.shut_down();
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the informers `watches` names and routes their changes into `queue`.
    async fn connect(
        &self,
        watches: &Watches,
        client: &HostClient,
        queue: &WorkQueue<Key>,
        mapper: &std_mpsc::Sender<(GroupVersionKind, Arc<str>)>,
    ) -> Result<(), ControllerError> {
        let primary = watches.primary.clone();
        let primary_informer = self.informer(&primary).await?;
        client.cache(&primary, Arc::clone(&primary_informer));
        let enqueue = queue.clone();
        let handler: Handler = Arc::new(move |change: &Change| enqueue.add(Key::of(&change.object().value)));
        primary_informer.subscribe(&handler);
        for owned in &watches.owned {
            let informer = self.informer(owned).await?;
            client.cache(owned, Arc::clone(&informer));
            informer.subscribe(&owner_handler(&primary, queue.clone()));
        }
        for other in &watches.others {
            let informer = self.informer(&other.kind).await?;
            client.cache(&other.kind, Arc::clone(&informer));
            if other.maps_to_keys {
                let (kind, mapper) = (other.kind.clone(), mapper.clone());
                // An update maps both states: a change may remove what tied the object to a key
                // (an owner reference dropped), and that key must still hear of it.
                let handler: Handler = Arc::new(move |change: &Change| {
                    let states = match change {
                        Change::Updated(old, new) => vec![old, new],
                        Change::Added(object) | Change::Deleted(object) => vec![object],
                    };
                    for state in states {
                        let object: Arc<str> = Arc::from(state.json.as_str());
                        if mapper.send((kind.clone(), object)).is_err() {
                            tracing::debug!(kind = %kind.kind, "controller stopped; change not mapped");
                        }
                    }
                });
                informer.subscribe(&handler);
            }
        }
        Ok(())
    }

    async fn informer(&self, kind: &GroupVersionKind) -> Result<Arc<crate::informer::Informer>, ControllerError> {
        self.informers.informer(&kind.group, &kind.version, &kind.kind).await
    }

    /// Replaces controller `name`'s component with `bytes`. Its queue, caches and workers carry
    /// on: reconciles in flight finish on the old version, the next ones run the new one. A
    /// component that fails to load leaves the old one running.
    pub fn reload(&self, name: &str, bytes: &[u8]) -> Result<VersionInfo, ControllerError> {
        let plugin =
            self.lock().get(name).map(|r| r.plugin.clone()).ok_or_else(|| ControllerError::Unknown(name.into()))?;
        Ok(plugin.reload(bytes)?)
    }

    /// Runs `spec`: reloads the component in place when a controller of that name runs with
    /// the same configuration and workers (queue, caches and workers carry on); otherwise starts
    /// it afresh, replacing any controller of that name. Returns the version now serving.
    pub async fn apply(&self, spec: ControllerSpec) -> Result<VersionInfo, ControllerError> {
        let same = self
            .lock()
            .get(&spec.name)
            .filter(|r| r.config == spec.config && r.workers_wanted == spec.workers)
            .map(|r| r.plugin.clone());
        if let Some(plugin) = same {
            let serving = plugin.status().version;
            if serving.digest == capstan_wasm::Digest::of(&spec.component) {
                return Ok(serving);
            }
            let reloaded = tokio::task::spawn_blocking(move || plugin.reload(&spec.component))
                .await
                .map_err(|e| ControllerError::Unknown(format!("{}: reload panicked: {e}", spec.name)))??;
            return Ok(reloaded);
        }
        let name = spec.name.clone();
        self.start(spec).await?;
        self.status(&name).map(|s| s.version).ok_or(ControllerError::Unknown(name))
    }

    /// The component version controller `name` runs.
    #[must_use]
    pub fn status(&self, name: &str) -> Option<capstan_wasm::PluginStatus> {
        self.lock().get(name).map(|r| r.plugin.status())
    }

    /// The names of the running controllers.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().keys().cloned().collect();
        names.sort();
        names
    }

    /// Every running controller's metrics in the Prometheus text format.
    #[must_use]
    pub fn prometheus(&self) -> String {
        crate::metrics::render_prometheus(&self.metrics())
    }

    /// Every running controller's metrics.
    #[must_use]
    pub fn metrics(&self) -> Vec<(String, MetricsSnapshot)> {
        let running = self.lock();
        let mut all: Vec<(String, MetricsSnapshot)> = running
            .iter()
            .map(|(name, r)| (name.clone(), r.metrics.snapshot(r.queue.len(), r.queue.processing())))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Stops controller `name`: its workers finish their current keys and exit.
    #[allow(clippy::must_use_candidate, reason = "stopping is the point; the flag is informational")]
    pub fn stop(&self, name: &str) -> bool {
        let Some(running) = self.lock().remove(name) else { return false };
        running.queue.shut_down();
        drop(running.workers);
        true
    }

    /// Stops every controller.
    pub fn stop_all(&self) {
        for name in self.names() {
            self.stop(&name);
        }
    }

    /// Stops every controller and waits, at most `limit`, for their workers to finish their
    /// current keys and exit. A process stops its controllers so before its runtime goes: a
    /// worker still reconciling would otherwise call into a runtime being shut down (and panic).
    pub async fn stop_all_and_wait(&self, limit: Duration) {
        let stopped: Vec<Running> = self.lock().drain().map(|(_, running)| running).collect();
        for running in &stopped {
            running.queue.shut_down();
        }
        let workers: Vec<std::thread::JoinHandle<()>> = stopped.into_iter().flat_map(|r| r.workers).collect();
        let joined = tokio::task::spawn_blocking(move || {
            for worker in workers {
                if worker.join().is_err() {
                    tracing::warn!("a controller worker panicked");
                }
            }
        });
        if tokio::time::timeout(limit, joined).await.is_err() {
            tracing::warn!(?limit, "controller workers still reconciling at shutdown");
        }
    }
}

/// A change of an owned kind enqueues the primary object named by its controller reference
/// (and, when that reference changed, the previous owner too).
fn owner_handler(primary: &GroupVersionKind, queue: WorkQueue<Key>) -> Handler {
    let api_version = if primary.group.is_empty() {
        primary.version.clone()
    } else {
        format!("{}/{}", primary.group, primary.version)
    };
    let kind = primary.kind.clone();
    Arc::new(move |change: &Change| {
        let owner_of = |object: &Value| -> Option<Key> {
            let references = object.pointer("/metadata/ownerReferences")?.as_array()?;
            let reference = references.iter().find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))?;
            let same_kind = reference.get("kind").and_then(Value::as_str) == Some(kind.as_str())
                && reference.get("apiVersion").and_then(Value::as_str) == Some(api_version.as_str());
            let name = reference.get("name").and_then(Value::as_str)?;
            same_kind.then(|| Key {
                namespace: object.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_owned),
                name: name.to_owned(),
            })
        };
        if let Change::Updated(old, _) = change
            && let Some(previous) = owner_of(&old.value)
        {
            queue.add(previous);
        }
        if let Some(owner) = owner_of(&change.object().value) {
            queue.add(owner);
        }
    })
}

/// Calls `map-to-keys` off the informers' threads (a component call may block).
fn start_mapper(
    name: &str,
    plugin: Controller,
    client: Arc<dyn ControllerClient>,
    queue: WorkQueue<Key>,
) -> std_mpsc::Sender<(GroupVersionKind, Arc<str>)> {
    // Unbounded: a change dropped here would never reach its key, and a bounded std channel
    // allocates all of its slots up front (65 536 of them were 5 MiB per controller).
    let (sender, receiver) = std_mpsc::channel::<(GroupVersionKind, Arc<str>)>();
    let controller = name.to_owned();
    let spawned = std::thread::Builder::new().name(format!("{name}-map")).spawn(move || {
        while let Ok((kind, object)) = receiver.recv() {
            match plugin.map_to_keys(&client, &kind, &object) {
                Ok(keys) => keys.iter().for_each(|key| queue.add(Key::from(key))),
                Err(e) => tracing::warn!(%controller, error = %e, "map-to-keys failed"),
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!(controller = %name, error = %e, "cannot start the map-to-keys thread");
    }
    sender
}

/// One worker thread of one controller.
struct Worker {
    name: String,
    plugin: Controller,
    client: Arc<dyn ControllerClient>,
    queue: WorkQueue<Key>,
    metrics: Arc<ControllerMetrics>,
}

impl Worker {
    fn run(self) {
        while let Some(key) = self.queue.get() {
            let started = Instant::now();
            let outcome = self.reconcile(&key);
            tracing::trace!(controller = %self.name, %key, elapsed = ?started.elapsed(), "reconciled");
            self.metrics.record(outcome, started.elapsed());
            self.queue.done(&key);
        }
    }

    fn reconcile(&self, key: &Key) -> Outcome {
        match self.plugin.reconcile(&self.client, &key.to_wit()) {
            Ok(ReconcileResult::Done) => {
                self.queue.forget(key);
                Outcome::Done
            }
            Ok(ReconcileResult::RequeueAfter(millis)) => {
                self.queue.forget(key);
                self.queue.add_after(key.clone(), Duration::from_millis(millis));
                Outcome::Requeue
            }
            Ok(ReconcileResult::Error(message)) => {
                tracing::info!(controller = %self.name, %key, %message, "reconcile failed; retrying with backoff");
                self.queue.add_rate_limited(key.clone());
                Outcome::Error
            }
            Err(e) => {
                tracing::warn!(controller = %self.name, %key, error = %e, "controller component failed; retrying with backoff");
                self.queue.add_rate_limited(key.clone());
                Outcome::Error
            }
        }
    }
}
