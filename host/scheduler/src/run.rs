//! The scheduler as an API client: informers for nodes, pods and Plugin objects feed the cache
//! and queue; one scheduling thread runs cycles; bindings, events and conditions are written
//! asynchronously so the next cycle does not wait.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use capstan_api::plugin::{Plugin, PluginKind};
use capstan_client::plugins::{self, PluginChange, StatusWriter};
use capstan_wasm::scheduler::{ExtensionPoints, PodSnapshot, SchedulerWorld};
use capstan_wasm::{Limits, PluginSpec, Runtime};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::cache::Cache;
use crate::cluster::ClusterView;
use crate::config::{ComponentRef, DEFAULT_PLUGINS, DEFAULT_SCHEDULER_NAME, PluginRef, SchedulerConfig};
use crate::framework::{CycleError, Preemption, Profile, ProfilePlugin, Profiles};
use crate::pod;
use crate::queue::{QueuedPod, SchedulingQueue};

/// Reads the bytes of a component shipped with Capstan, by crate name.
pub use capstan_client::plugins::BuiltinComponents;

/// Why the scheduler could not start.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// A plugin of the configuration could not be loaded.
    #[error("cannot load scheduler plugin {plugin} of profile {profile}: {message}")]
    Plugin {
        /// The profile.
        profile: String,
        /// The plugin.
        plugin: String,
        /// Why.
        message: String,
    },
}

/// The scheduler, once started: dropping this does not stop it; [`Started::stop`] does.
pub struct Started {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Started {
    /// Whether the node and pod informers have each listed once, so cycles run (as
    /// kube-scheduler's `WaitForCacheSync`).
    #[must_use]
    pub fn synced(&self) -> bool {
        self.shared.synced()
    }

    /// Stops the informers and the scheduling thread.
    pub fn stop(self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        for task in self.tasks {
            task.abort();
        }
    }
}

/// A plugin added by a Plugin object.
struct Overlay {
    profile: String,
    weight: i64,
    plugin: ProfilePlugin,
    config: String,
    timeout: Duration,
}

/// The cache and queue: the scheduling thread's alone, so a cycle holds no lock that the async
/// runtime's threads (which serve the API server in the same process) could wait on.
struct State {
    cache: Cache,
    queue: SchedulingQueue,
    /// Where the next cycle starts filtering.
    next_start: usize,
}

/// A change the scheduling thread applies to its [`State`] between cycles: informer events and
/// binding outcomes, queued by tasks on the async runtime.
enum Change {
    Node(Node),
    NodeGone(String),
    /// The node informer listed every node again: those not named are gone.
    NodesListed(HashSet<String>),
    /// A pod bound to a node (by this scheduler or not).
    PodBound(Pod),
    /// A pod that finished or is being deleted: it leaves the queue, and the cache unless assumed.
    PodDone(String),
    /// A pod to schedule, with its QueueSort key.
    PodPending(Pod, i64, Option<PodSnapshot>),
    PodDeleted(String),
    /// This scheduler's binding of a pod went through.
    Bound(Box<Binding>),
    /// It was refused: the pod goes back to the queue, with its QueueSort key.
    BindingFailed(Arc<Pod>, i64),
    /// The profiles changed: unschedulable pods are tried again.
    ProfilesChanged,
}

/// What `PostBind` needs of a binding that went through.
struct Binding {
    pod: Arc<Pod>,
    info: PodSnapshot,
    profile: Arc<Profile>,
    decision: crate::framework::Decision,
}

struct Shared {
    client: kube::Client,
    runtime: Runtime,
    /// Changes for the scheduling thread, and the condition it waits on for them.
    changes: Mutex<Vec<Change>>,
    wake: Condvar,
    stop: AtomicBool,
    base: Vec<Profile>,
    overlays: Mutex<BTreeMap<String, Overlay>>,
    /// Writes the Plugin objects' status.
    status: StatusWriter,
    /// Reads the components Capstan ships.
    builtin: BuiltinComponents,
    profiles: RwLock<Profiles>,
    tokio: tokio::runtime::Handle,
    /// Bounds the API writes in flight (bindings, events, status patches): the client speaks
    /// HTTP/1.1, so each concurrent request holds a connection of its own, and a burst of
    /// thousands of bindings would open thousands of TLS connections.
    writes: tokio::sync::Semaphore,
    /// Whether the node and pod informers have each listed once: as kube-scheduler waits for its
    /// caches to sync, no pod is scheduled against a partial view of the cluster.
    nodes_synced: AtomicBool,
    pods_synced: AtomicBool,
}

/// API writes in flight at once.
const WRITES_IN_FLIGHT: usize = 32;

/// The scheduler.
pub struct Scheduler;

impl Scheduler {
    /// Loads the configured profiles' plugins and starts the informers and the scheduling loop
    /// on the current tokio runtime.
    pub async fn start(
        client: kube::Client,
        runtime: Runtime,
        config: SchedulerConfig,
        builtin: BuiltinComponents,
    ) -> Result<Started, SchedulerError> {
        let loader = runtime.clone();
        let components = builtin.clone();
        let base = tokio::task::spawn_blocking(move || load_profiles(&loader, &config, &components)).await.map_err(
            |e| SchedulerError::Plugin { profile: String::new(), plugin: String::new(), message: e.to_string() },
        )??;
        Self::start_with_profiles(client, runtime, base, builtin)
    }

    /// Starts the informers and the scheduling loop over profiles already loaded (the benchmark
    /// passes the same plugins linked natively); Plugin objects change them as in [`Self::start`].
    pub fn start_with_profiles(
        client: kube::Client,
        runtime: Runtime,
        base: Vec<Profile>,
        builtin: BuiltinComponents,
    ) -> Result<Started, SchedulerError> {
        let (cluster, mut tasks) = ClusterView::start(&client);
        let mut cache = Cache::default();
        cache.nodes_mut().set_host(cluster);
        let state = State { cache, queue: SchedulingQueue::default(), next_start: 0 };
        let status = StatusWriter::new(client.clone());
        let shared = Arc::new(Shared {
            client,
            runtime,
            changes: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            profiles: RwLock::new(base.iter().map(|p| (p.scheduler_name.clone(), Arc::new(p.clone()))).collect()),
            base,
            overlays: Mutex::new(BTreeMap::new()),
            status,
            builtin,
            tokio: tokio::runtime::Handle::current(),
            writes: tokio::sync::Semaphore::new(WRITES_IN_FLIGHT),
            nodes_synced: AtomicBool::new(false),
            pods_synced: AtomicBool::new(false),
        });
        tasks.extend([
            tokio::spawn(Arc::clone(&shared).watch_nodes()),
            tokio::spawn(Arc::clone(&shared).watch_pods()),
            tokio::spawn(Arc::clone(&shared).watch_plugins()),
        ]);
        let looping = Arc::clone(&shared);
        std::thread::Builder::new().name("scheduler".into()).spawn(move || looping.schedule_loop(state)).map_err(
            |e| SchedulerError::Plugin { profile: String::new(), plugin: String::new(), message: e.to_string() },
        )?;
        Ok(Started { shared, tasks })
    }
}

/// Loads every plugin of `config`'s profiles (compiling components: call it off async code).
pub fn load_profiles(
    runtime: &Runtime,
    config: &SchedulerConfig,
    builtin: &BuiltinComponents,
) -> Result<Vec<Profile>, SchedulerError> {
    let mut profiles = Vec::new();
    for profile in &config.profiles {
        let mut plugins = Vec::new();
        for plugin in &profile.plugins {
            let error = |message: String| SchedulerError::Plugin {
                profile: profile.scheduler_name.clone(),
                plugin: plugin.name.clone(),
                message,
            };
            plugins.push(load_plugin(runtime, plugin, builtin).map_err(error)?);
        }
        profiles.push(Profile {
            scheduler_name: profile.scheduler_name.clone(),
            plugins,
            percentage_of_nodes_to_score: config.percentage_of_nodes_to_score,
            parallelism: config.filter_threads(),
            filter_cost: crate::framework::FilterCost::default(),
        });
    }
    Ok(profiles)
}

fn load_plugin(runtime: &Runtime, plugin: &PluginRef, builtin: &BuiltinComponents) -> Result<ProfilePlugin, String> {
    let bytes = match &plugin.component {
        ComponentRef::Builtin(name) => builtin(name)?,
        ComponentRef::File(path) => std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    };
    let spec = PluginSpec::new(&plugin.name).with_config(plugin.args.to_string());
    let handle = runtime.load::<SchedulerWorld>(spec, &bytes).map_err(|e| e.to_string())?;
    ProfilePlugin::new(&plugin.name, handle, plugin.weight).map_err(|e| e.to_string())
}

/// The Plugin objects (name, `spec`) of the default profile's shipped plugins, named after
/// their components (`node-resources-fit`).
fn builtin_plugin_objects() -> Vec<(String, serde_json::Value)> {
    DEFAULT_PLUGINS
        .iter()
        .map(|(_, component, weight)| {
            let spec = json!({"kind": "scheduler", "component": {"builtin": component},
                              "scheduler": {"weight": weight}});
            ((*component).to_owned(), spec)
        })
        .collect()
}

impl Shared {
    fn synced(&self) -> bool {
        self.nodes_synced.load(Ordering::Acquire) && self.pods_synced.load(Ordering::Acquire)
    }

    /// Queues a change for the scheduling thread and wakes it.
    fn change(&self, change: Change) {
        self.changes.lock().unwrap_or_else(PoisonError::into_inner).push(change);
        self.wake.notify_all();
    }

    /// Waits up to `timeout` for a change (or a stop), unless one is queued already.
    fn wait(&self, timeout: Duration) {
        let changes = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        if changes.is_empty() && !self.stop.load(Ordering::Relaxed) {
            drop(self.wake.wait_timeout(changes, timeout).unwrap_or_else(PoisonError::into_inner));
        }
    }

    /// Applies the queued changes; after any that may make an unschedulable pod fit (a node
    /// added or changed, a pod gone, the profiles changed), moves those back to be tried.
    fn apply_changes(&self, state: &mut State) {
        let changes = std::mem::take(&mut *self.changes.lock().unwrap_or_else(PoisonError::into_inner));
        let mut retry = false;
        for change in changes {
            match change {
                Change::Node(node) => {
                    state.cache.upsert_node(&node);
                    retry = true;
                }
                Change::NodeGone(name) => {
                    state.cache.remove_node(&name);
                    retry = true;
                }
                Change::NodesListed(seen) => {
                    let gone: Vec<String> =
                        state.cache.nodes().iter().map(|n| n.name.clone()).filter(|n| !seen.contains(n)).collect();
                    for name in gone {
                        state.cache.remove_node(&name);
                    }
                    retry = true;
                }
                Change::PodBound(pod) => {
                    let key = pod::key(&pod);
                    state.queue.remove(&key);
                    state.cache.upsert_pod(&pod);
                }
                Change::PodDone(key) => {
                    state.queue.remove(&key);
                    if !state.cache.is_assumed(&key) {
                        state.cache.remove_pod(&key);
                    }
                }
                Change::PodPending(pod, sort_key, described) => {
                    let key = pod::key(&pod);
                    if !state.cache.is_assumed(&key) {
                        state.cache.nominate(&pod);
                        state.queue.add_or_update(&key, Arc::new(pod), sort_key, described);
                    }
                }
                Change::PodDeleted(key) => {
                    state.queue.remove(&key);
                    state.cache.remove_pod(&key);
                    retry = true;
                }
                Change::Bound(binding) => {
                    state.cache.finish_binding(&pod::key(&binding.pod));
                    binding.profile.post_bind(state.cache.nodes(), &binding.info, &binding.decision);
                }
                Change::BindingFailed(pod, sort_key) => {
                    let key = pod::key(&pod);
                    state.cache.remove_pod(&key);
                    state.queue.add_or_update(&key, pod, sort_key, None);
                    state.queue.requeue(&key, false, Instant::now());
                }
                Change::ProfilesChanged => retry = true,
            }
        }
        if retry {
            state.queue.move_all_to_active_or_backoff(Instant::now());
        }
    }

    fn profile(&self, scheduler_name: &str) -> Option<Arc<Profile>> {
        self.profiles.read().unwrap_or_else(PoisonError::into_inner).get(scheduler_name).cloned()
    }

    async fn watch_nodes(self: Arc<Self>) {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut stream = Box::pin(watcher(api, watcher::Config::default().any_semantic()).default_backoff());
        let mut relisted: Option<HashSet<String>> = None;
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler: node watch failed; retrying");
                    continue;
                }
            };
            match event {
                watcher::Event::Init => relisted = Some(HashSet::new()),
                watcher::Event::InitApply(node) | watcher::Event::Apply(node) => {
                    if let Some(seen) = relisted.as_mut() {
                        seen.insert(node.metadata.name.clone().unwrap_or_default());
                    }
                    self.change(Change::Node(node));
                }
                watcher::Event::Delete(node) => self.change(Change::NodeGone(node.metadata.name.unwrap_or_default())),
                watcher::Event::InitDone => {
                    if let Some(seen) = relisted.take() {
                        self.change(Change::NodesListed(seen));
                    }
                    // After the list's changes are queued: the scheduling thread reads this flag
                    // before it takes the queue.
                    self.nodes_synced.store(true, Ordering::Release);
                    self.wake.notify_all();
                }
            }
        }
    }

    async fn watch_pods(self: Arc<Self>) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let mut stream = Box::pin(watcher(api, watcher::Config::default().any_semantic()).default_backoff());
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler: pod watch failed; retrying");
                    continue;
                }
            };
            match event {
                watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => self.pod_changed(pod),
                watcher::Event::Delete(pod) => self.change(Change::PodDeleted(pod::key(&pod))),
                watcher::Event::InitDone => {
                    self.pods_synced.store(true, Ordering::Release);
                    self.wake.notify_all();
                }
                watcher::Event::Init => {}
            }
        }
    }

    fn pod_changed(&self, pod: Pod) {
        let key = pod::key(&pod);
        let spec = pod.spec.as_ref();
        let bound = spec.and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
        if bound {
            self.change(Change::PodBound(pod));
            return;
        }
        let finished =
            pod.status.as_ref().and_then(|s| s.phase.as_deref()).is_some_and(|p| p == "Succeeded" || p == "Failed");
        let scheduler_name =
            spec.and_then(|s| s.scheduler_name.clone()).unwrap_or_else(|| DEFAULT_SCHEDULER_NAME.to_owned());
        let Some(profile) = self.profile(&scheduler_name) else { return };
        if finished || pod.metadata.deletion_timestamp.is_some() {
            self.change(Change::PodDone(key));
            return;
        }
        // Described once here, on the informer's thread: the QueueSort plugin needs it, and the
        // scheduling cycle reuses it instead of describing the pod again on its own thread.
        let described = pod::pod_info(&pod);
        let sort_key = match &described {
            Ok(info) => profile.queue_sort_key(info).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let sort_key = match sort_key {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!(pod = %key, error = %e, "queue sort failed; queueing with key 0");
                0
            }
        };
        self.change(Change::PodPending(pod, sort_key, described.ok()));
    }

    fn schedule_loop(self: Arc<Self>, mut state: State) {
        while !self.stop.load(Ordering::Relaxed) {
            // Read before the changes are taken: every change queued before an informer synced
            // is among them.
            let synced = self.synced();
            self.apply_changes(&mut state);
            if !synced {
                self.wait(Duration::from_millis(100));
                continue;
            }
            let now = Instant::now();
            state.queue.flush(now);
            state.cache.expire_assumed(now);
            let Some(queued) = state.queue.pop() else {
                let wait =
                    state.queue.next_due().map_or(Duration::from_secs(1), |at| at.saturating_duration_since(now));
                let wait = wait.clamp(Duration::from_millis(10), Duration::from_secs(1));
                self.wait(wait);
                continue;
            };
            self.schedule_one(&mut state, &queued);
        }
    }

    fn schedule_one(self: &Arc<Self>, state: &mut State, queued: &QueuedPod) {
        let pod = &queued.pod;
        let key = pod::key(pod);
        let scheduler_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.clone())
            .unwrap_or_else(|| DEFAULT_SCHEDULER_NAME.to_owned());
        let Some(profile) = self.profile(&scheduler_name) else {
            state.queue.remove(&key);
            return;
        };
        let info = match queued.described.as_ref().map_or_else(|| pod::pod_info(pod), |info| Ok(info.renewed())) {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(pod = %key, error = %e, "cannot describe pod to plugins");
                state.queue.requeue(&key, false, Instant::now());
                return;
            }
        };
        let mut start = state.next_start;
        let result = profile.schedule(state.cache.nodes_mut(), &info, &mut start);
        state.next_start = start;
        let decision = match result {
            Ok(decision) => decision,
            Err(error) => {
                let unschedulable = matches!(error, CycleError::Unschedulable { .. });
                state.queue.requeue(&key, unschedulable, Instant::now());
                if let CycleError::Unschedulable { preemption: Some(preemption), .. } = &error {
                    // What kube-scheduler knows in memory once it preempted: the pod's nominated
                    // node, and its victims terminating.
                    state.cache.nominate_on(pod, &preemption.node);
                    for victim in &preemption.victims {
                        state.cache.mark_terminating(&format!("{}/{}", victim.namespace, victim.name));
                    }
                    let mut nominated = Pod::clone(pod);
                    nominated.status.get_or_insert_default().nominated_node_name = Some(preemption.node.clone());
                    state.queue.set_pod(&key, Arc::new(nominated));
                    self.preempt(pod, preemption.clone());
                }
                self.report_failure(pod, &error);
                return;
            }
        };
        state.cache.assume(pod, &decision.node);
        match profile.bind_plugins(state.cache.nodes(), &info, &decision) {
            Ok(host_binds) => {
                state.queue.done(&key);
                let this = Arc::clone(self);
                let (pod, node) = (Arc::clone(pod), decision.node.clone());
                let profile = Arc::clone(&profile);
                self.tokio.spawn(async move {
                    let bound = if host_binds { this.bind(&pod, &node).await } else { Ok(()) };
                    this.after_binding(pod, info, &node, bound, profile, decision);
                });
            }
            Err(error) => {
                state.cache.remove_pod(&key);
                state.queue.requeue(&key, false, Instant::now());
                self.report_failure(pod, &error);
            }
        }
    }

    /// Carries out a PostFilter decision: deletes the victims (each only while its UID still holds
    /// the name), records `Preempted` on each, and nominates the node in the pod's status. The
    /// pod stays queued; the victims' deletions bring it back to the active queue.
    fn preempt(self: &Arc<Self>, pod: &Arc<Pod>, preemption: Preemption) {
        let this = Arc::clone(self);
        let pod = Arc::clone(pod);
        self.tokio.spawn(async move {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            for victim in &preemption.victims {
                let api: Api<Pod> = Api::namespaced(this.client.clone(), &victim.namespace);
                let params = kube::api::DeleteParams {
                    preconditions: Some(kube::api::Preconditions {
                        uid: Some(victim.uid.clone()),
                        resource_version: None,
                    }),
                    ..kube::api::DeleteParams::default()
                };
                match api.delete(&victim.name, &params).await {
                    Ok(_) => {
                        let target = Pod {
                            metadata: ObjectMeta {
                                name: Some(victim.name.clone()),
                                namespace: Some(victim.namespace.clone()),
                                uid: Some(victim.uid.clone()),
                                ..ObjectMeta::default()
                            },
                            ..Pod::default()
                        };
                        let message = format!("Preempted by pod {uid} on node {}", preemption.node);
                        this.spawn_event(&target, "Normal", "Preempted", message);
                    }
                    Err(e) => tracing::warn!(victim = %victim.name, error = %e, "cannot delete a preemption victim"),
                }
            }
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
            let name = pod.metadata.name.as_deref().unwrap_or("");
            let api: Api<Pod> = Api::namespaced(this.client.clone(), namespace);
            let patch = json!({"status": {"nominatedNodeName": preemption.node}});
            if let Err(e) = api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch)).await {
                tracing::warn!(pod = name, error = %e, "cannot set nominatedNodeName");
            }
        });
    }

    async fn bind(&self, pod: &Pod, node: &str) -> Result<(), kube::Error> {
        let _writing = self.writes.acquire().await;
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or("");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace, "uid": pod.metadata.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        api.create_subresource::<serde_json::Value, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
        .map(drop)
    }

    fn after_binding(
        self: &Arc<Self>,
        pod: Arc<Pod>,
        info: PodSnapshot,
        node: &str,
        bound: Result<(), kube::Error>,
        profile: Arc<Profile>,
        decision: crate::framework::Decision,
    ) {
        let key = pod::key(&pod);
        match bound {
            Ok(()) => {
                let message = format!("Successfully assigned {key} to {node}");
                self.spawn_event(&pod, "Normal", "Scheduled", message);
                self.change(Change::Bound(Box::new(Binding { pod, info, profile, decision })));
            }
            Err(e) => {
                tracing::warn!(pod = %key, node, error = %e, "binding failed");
                self.spawn_event(&pod, "Warning", "FailedScheduling", format!("Binding rejected: {e}"));
                let sort_key = profile.queue_sort_key(&info).unwrap_or(0);
                self.change(Change::BindingFailed(pod, sort_key));
            }
        }
    }

    /// Records `FailedScheduling` and the `PodScheduled=False` condition.
    fn report_failure(self: &Arc<Self>, pod: &Arc<Pod>, error: &CycleError) {
        let message = error.to_string();
        tracing::info!(pod = %pod::key(pod), %message, "pod not scheduled");
        let reason = match error {
            CycleError::Unschedulable { .. } => "Unschedulable",
            CycleError::Plugin { .. } => "SchedulerError",
        };
        self.spawn_event(pod, "Warning", "FailedScheduling", message.clone());
        let this = Arc::clone(self);
        let pod = Arc::clone(pod);
        self.tokio.spawn(async move {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
            let name = pod.metadata.name.as_deref().unwrap_or("");
            let api: Api<Pod> = Api::namespaced(this.client.clone(), namespace);
            let patch = json!({"status": {"conditions": [{
                "type": "PodScheduled", "status": "False", "reason": reason, "message": message,
                "lastProbeTime": null, "lastTransitionTime": Time(k8s_openapi::jiff::Timestamp::now()),
            }]}});
            let _writing = this.writes.acquire().await;
            if let Err(e) = api.patch_status(name, &PatchParams::default(), &Patch::Strategic(patch)).await {
                tracing::debug!(pod = name, error = %e, "cannot set the PodScheduled condition");
            }
        });
    }

    fn spawn_event(self: &Arc<Self>, pod: &Pod, kind: &str, reason: &str, message: String) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let now = k8s_openapi::jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", pod.metadata.name.as_deref().unwrap_or("pod"))),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                namespace: Some(namespace.clone()),
                uid: pod.metadata.uid.clone(),
                resource_version: pod.metadata.resource_version.clone(),
                ..ObjectReference::default()
            },
            reason: Some(reason.to_owned()),
            message: Some(message),
            type_: Some(kind.to_owned()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            action: Some(if kind == "Normal" { "Binding" } else { "Scheduling" }.to_owned()),
            reporting_component: Some(DEFAULT_SCHEDULER_NAME.to_owned()),
            reporting_instance: Some(DEFAULT_SCHEDULER_NAME.to_owned()),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some(DEFAULT_SCHEDULER_NAME.to_owned()),
                host: None,
            }),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let this = Arc::clone(self);
        self.tokio.spawn(async move {
            let _writing = this.writes.acquire().await;
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::debug!(error = %e, "cannot record a scheduler event");
            }
        });
    }

    async fn watch_plugins(self: Arc<Self>) {
        let plugins = builtin_plugin_objects();
        if let Err(e) = plugins::ensure_builtin_plugins(&self.client, &plugins).await {
            tracing::warn!(error = %e, "cannot create the default scheduler plugins' Plugin objects");
        }
        let this = Arc::clone(&self);
        plugins::watch_plugins(self.client.clone(), PluginKind::Scheduler, move |change| {
            let this = Arc::clone(&this);
            async move {
                match change {
                    PluginChange::Applied(plugin) => {
                        let name = plugin.metadata.name.clone().unwrap_or_default();
                        let applied = this.apply_plugin(&plugin).await;
                        this.status.write(&name, plugins::status_after(&name, &applied)).await;
                    }
                    PluginChange::Removed(name) => {
                        if this.overlays.lock().unwrap_or_else(PoisonError::into_inner).remove(&name).is_some() {
                            tracing::info!(plugin = %name, "scheduler plugin unloaded");
                            this.rebuild_profiles();
                        }
                        this.status.forget(&name);
                    }
                }
            }
        })
        .await;
    }

    /// Loads, reloads or drops the plugin of one Plugin object; returns the digest serving.
    /// A Plugin named after a default plugin's component (`node-resources-fit`) stands for that
    /// plugin: left as shipped it changes nothing; given another component or configuration it
    /// replaces it in the profile.
    async fn apply_plugin(self: &Arc<Self>, plugin: &Plugin) -> Result<String, String> {
        let name = plugin.metadata.name.clone().unwrap_or_default();
        let settings = plugin.spec.scheduler.clone().unwrap_or_default();
        let config =
            plugin.spec.config.as_ref().filter(|c| !c.is_null()).map_or_else(|| "{}".to_owned(), ToString::to_string);
        let profile = settings.profile.unwrap_or_else(|| DEFAULT_SCHEDULER_NAME.to_owned());
        let shipped = DEFAULT_PLUGINS.iter().find(|(_, component, _)| *component == name);
        if let Some((profile_name, component, weight)) = shipped
            && plugin.spec.component.builtin.as_deref() == Some(*component)
            && config == "{}"
            && profile == DEFAULT_SCHEDULER_NAME
            && settings.weight.unwrap_or(*weight) == *weight
            && settings.timeout_milliseconds.is_none()
        {
            if self.overlays.lock().unwrap_or_else(PoisonError::into_inner).remove(&name).is_some() {
                self.rebuild_profiles();
            }
            return self.base_digest(profile_name).ok_or_else(|| format!("the default profile has no {profile_name}"));
        }
        let bytes = plugins::component_bytes(&self.client, &plugin.spec.component, &self.builtin).await?;
        let timeout = Duration::from_millis(settings.timeout_milliseconds.unwrap_or(1000));
        let weight = settings.weight.or(shipped.map(|(_, _, w)| *w)).unwrap_or(1);
        let replaces = shipped.map_or_else(|| name.clone(), |(profile_name, _, _)| (*profile_name).to_owned());
        let this = Arc::clone(self);
        let digest = tokio::task::spawn_blocking(move || {
            this.load_overlay(&replaces, &name, &bytes, &config, timeout, &profile, weight)
        })
        .await
        .map_err(|e| format!("loading the plugin failed: {e}"))??;
        self.rebuild_profiles();
        Ok(digest)
    }

    /// The digest of the default profile's plugin `name` (`native` for one linked into the host).
    fn base_digest(&self, name: &str) -> Option<String> {
        let base = self.base.iter().find(|p| p.scheduler_name == DEFAULT_SCHEDULER_NAME)?;
        let plugin = base.plugins.iter().find(|p| p.name == name)?;
        Some(plugin.handle.wasm().map_or_else(|| "native".to_owned(), |h| h.status().version.digest.to_string()))
    }

    /// Loads (or reloads) the overlay of Plugin `object`, which takes the place of the profile's
    /// plugin `name`.
    #[allow(clippy::too_many_arguments, reason = "the fields of one Plugin object, read once")]
    fn load_overlay(
        &self,
        name: &str,
        object: &str,
        bytes: &[u8],
        config: &str,
        timeout: Duration,
        profile: &str,
        weight: i64,
    ) -> Result<String, String> {
        let mut overlays = self.overlays.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = overlays.get_mut(object)
            && current.config == config
            && current.timeout == timeout
        {
            let digest = capstan_wasm::Digest::of(bytes);
            let Some(handle) = current.plugin.handle.wasm().cloned() else {
                return Err(format!("plugin {name} is not a component"));
            };
            if handle.status().version.digest != digest {
                handle.reload(bytes).map_err(|e| e.to_string())?;
                current.plugin = ProfilePlugin::new(name, handle, weight).map_err(|e| e.to_string())?;
                tracing::info!(plugin = %name, %digest, "scheduler plugin reloaded; the next cycle uses it");
            }
            profile.clone_into(&mut current.profile);
            current.weight = weight;
            current.plugin.weight = weight;
            return Ok(digest.to_string());
        }
        let limits = Limits { deadline: timeout, ..Limits::default() };
        let spec = PluginSpec::new(name).with_config(config).with_limits(limits);
        let handle = self.runtime.load::<SchedulerWorld>(spec, bytes).map_err(|e| e.to_string())?;
        let digest = handle.status().version.digest.to_string();
        let plugin = ProfilePlugin::new(name, handle, weight).map_err(|e| e.to_string())?;
        let overlay = Overlay { profile: profile.to_owned(), weight, plugin, config: config.to_owned(), timeout };
        overlays.insert(object.to_owned(), overlay);
        tracing::info!(plugin = %name, profile, "scheduler plugin loaded");
        Ok(digest)
    }

    /// Profiles = the configured ones, with each Plugin object replacing the plugin of its name
    /// or joining before the bind plugins. New pods use the new profiles from their next cycle.
    fn rebuild_profiles(&self) {
        let overlays = self.overlays.lock().unwrap_or_else(PoisonError::into_inner);
        let mut profiles = Profiles::new();
        for base in &self.base {
            let mut profile = base.clone();
            for overlay in overlays.values().filter(|o| o.profile == profile.scheduler_name) {
                let plugin = ProfilePlugin { weight: overlay.weight, ..overlay.plugin.clone() };
                if let Some(existing) = profile.plugins.iter_mut().find(|p| p.name == plugin.name) {
                    *existing = plugin;
                } else {
                    let at = profile
                        .plugins
                        .iter()
                        .position(|p| p.points.contains(ExtensionPoints::BIND))
                        .unwrap_or(profile.plugins.len());
                    profile.plugins.insert(at, plugin);
                }
            }
            profiles.insert(profile.scheduler_name.clone(), Arc::new(profile));
        }
        *self.profiles.write().unwrap_or_else(PoisonError::into_inner) = profiles;
        self.change(Change::ProfilesChanged);
    }
}
