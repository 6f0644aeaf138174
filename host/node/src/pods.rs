//! Pod workers: one task per pod bound to this node drives its sandbox and containers through
//! CRI to the pod's spec, reports status, and on deletion stops everything within the grace
//! period, cleans up and finalizes the delete.

// tonic's CRI call futures are large; each worker is spawned once per pod, so boxing buys nothing.
#![allow(clippy::large_futures)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Event, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::NodeError;
use crate::runtime::{Cri, Layout};
use crate::spec;

/// The label CRI objects carry with their pod's UID.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
pub(crate) const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
pub(crate) const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";
/// How often a worker re-checks its pod without news from the API server.
const RESYNC: Duration = Duration::from_secs(1);
/// The first crash back-off; it doubles per restart up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_mins(5);
/// How often a running pod's ConfigMap, Secret and downward API volumes are brought up to date.
const VOLUME_RESYNC: Duration = Duration::from_secs(30);

/// What a worker is told about its pod.
#[derive(Clone)]
enum Signal {
    Pod(Box<Pod>),
    Gone,
}

/// Everything a worker needs, shared.
#[derive(Clone)]
struct Shared {
    client: kube::Client,
    cri: Cri,
    node: String,
    host_ip: String,
    pods_dir: PathBuf,
}

/// Watches the pods bound to this node and runs one worker per pod.
pub struct Manager {
    shared: Shared,
}

impl Manager {
    /// A manager for node `node`.
    #[must_use]
    pub fn new(client: kube::Client, cri: Cri, node: &str, layout: &Layout) -> Self {
        Manager {
            shared: Shared {
                client,
                cri,
                node: node.to_string(),
                host_ip: crate::node::internal_ip().to_string(),
                pods_dir: layout.pod_logs.clone(),
            },
        }
    }

    /// Runs forever.
    pub async fn run(self) -> Result<(), NodeError> {
        let pods: Api<Pod> = Api::all(self.shared.client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={}", self.shared.node));
        let mut events = std::pin::pin!(watcher(pods, config));
        let mut workers: HashMap<String, watch::Sender<Signal>> = HashMap::new();
        let mut listed: HashSet<String> = HashSet::new();
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(error = %e, "pod watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            match event {
                watcher::Event::Init => listed.clear(),
                watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                    let Some(uid) = pod.metadata.uid.clone() else { continue };
                    listed.insert(uid.clone());
                    workers.retain(|_, sender| !sender.is_closed());
                    if let Some(sender) = workers.get(&uid) {
                        let _ = sender.send(Signal::Pod(Box::new(pod)));
                    } else {
                        let (sender, receiver) = watch::channel(Signal::Pod(Box::new(pod)));
                        workers.insert(uid.clone(), sender);
                        let worker = Worker::new(self.shared.clone(), uid);
                        tokio::spawn(worker.run(receiver));
                    }
                }
                watcher::Event::Delete(pod) => {
                    if let Some(sender) = pod.metadata.uid.as_ref().and_then(|uid| workers.remove(uid)) {
                        let _ = sender.send(Signal::Gone);
                    }
                }
                watcher::Event::InitDone => {
                    for (uid, sender) in &workers {
                        if !listed.contains(uid) {
                            let _ = sender.send(Signal::Gone);
                        }
                    }
                    workers.retain(|uid, _| listed.contains(uid));
                    if let Err(e) = self.remove_orphans(&listed).await {
                        tracing::warn!(error = %e, "cannot clean up sandboxes of pods that are gone");
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes sandboxes (and their containers) whose pods no longer exist: the agent may have
    /// been down while they were deleted.
    async fn remove_orphans(&self, known: &HashSet<String>) -> Result<(), NodeError> {
        let sandboxes = self.shared.cri.runtime.clone().list_pod_sandbox(cri::ListPodSandboxRequest::default()).await?;
        let mut orphans = HashSet::new();
        for sandbox in sandboxes.into_inner().items {
            if let Some(uid) = sandbox.labels.get(POD_UID_LABEL)
                && !known.contains(uid)
            {
                orphans.insert(uid.clone());
            }
        }
        for uid in orphans {
            tracing::info!(%uid, "removing the sandbox of a pod that no longer exists");
            teardown(&self.shared, &uid, 0, None).await?;
        }
        Ok(())
    }
}

/// The latest attempt of one container and, when it restarted, the one before.
#[derive(Default)]
struct Observed {
    latest: Option<cri::ContainerStatus>,
    previous: Option<cri::ContainerStatus>,
}

fn running(status: &cri::ContainerStatus) -> bool {
    status.state == cri::ContainerState::ContainerRunning as i32
}

fn exited(status: &cri::ContainerStatus) -> bool {
    status.state == cri::ContainerState::ContainerExited as i32
}

fn time_of(nanos: i64) -> String {
    let time = chrono::DateTime::from_timestamp_nanos(nanos);
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// An API timestamp as its wire text.
fn stamp(time: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> String {
    serde_json::to_value(time).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_else(now)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Why a container is not running yet (shown as `state.waiting`).
#[derive(Clone, Debug, PartialEq)]
struct Waiting {
    reason: String,
    message: String,
}

struct Worker {
    shared: Shared,
    uid: String,
    sandbox: Option<String>,
    pod_ip: Option<String>,
    waiting: HashMap<String, Waiting>,
    last_status: Option<Value>,
    started: Option<String>,
    pulled: HashSet<String>,
    probes: HashMap<String, crate::probes::ContainerProbes>,
    /// Service-account tokens in the pod's projected volumes.
    tokens: spec::Tokens,
    /// When the volumes were last filled.
    volumes_refreshed: Option<SystemTime>,
}

impl Worker {
    fn new(shared: Shared, uid: String) -> Self {
        Worker {
            shared,
            uid,
            sandbox: None,
            pod_ip: None,
            waiting: HashMap::new(),
            last_status: None,
            started: None,
            pulled: HashSet::new(),
            probes: HashMap::new(),
            tokens: spec::Tokens::default(),
            volumes_refreshed: None,
        }
    }

    async fn run(mut self, mut receiver: watch::Receiver<Signal>) {
        loop {
            let signal = receiver.borrow_and_update().clone();
            match signal {
                Signal::Gone => {
                    if let Err(e) = teardown(&self.shared, &self.uid, 0, None).await {
                        tracing::warn!(uid = %self.uid, error = %e, "cannot clean up a deleted pod");
                    }
                    return;
                }
                Signal::Pod(pod) => match self.sync(&pod).await {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(pod = ?pod.metadata.name, error = %e, "pod sync failed"),
                },
            }
            tokio::select! {
                changed = receiver.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(RESYNC) => {}
            }
        }
    }

    fn pods_api(&self, pod: &Pod) -> Api<Pod> {
        Api::namespaced(self.shared.client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"))
    }

    /// Drives the pod one step; `true` when the worker is done (the pod was deleted).
    async fn sync(&mut self, pod: &Pod) -> Result<bool, NodeError> {
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30);
            teardown(&self.shared, &self.uid, grace, Some(pod)).await?;
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions { uid: Some(self.uid.clone()), resource_version: None }),
                ..DeleteParams::default()
            };
            let name = pod.metadata.name.clone().unwrap_or_default();
            match self.pods_api(pod).delete(&name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(true);
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
        if matches!(phase, "Succeeded" | "Failed") {
            return Ok(false);
        }
        if self.started.is_none() {
            self.started = Some(pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map_or_else(now, stamp));
        }
        let sandbox = match self.ensure_sandbox(pod).await {
            Ok(sandbox) => sandbox,
            Err(e) => {
                self.event(pod, "Warning", "FailedCreatePodSandBox", &format!("Failed to create pod sandbox: {e}"))
                    .await;
                return Err(e);
            }
        };
        let observed = self.observe(&sandbox).await?;
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
        let mut initialized = true;
        let mut failed = false;
        for container in spec.init_containers.iter().flatten() {
            let seen = observed.get(&container.name);
            let latest = seen.and_then(|o| o.latest.as_ref());
            match latest {
                Some(s) if exited(s) && s.exit_code == 0 => continue,
                Some(s) if exited(s) => {
                    initialized = false;
                    if policy == "Never" {
                        failed = true;
                    } else {
                        self.restart_with_backoff(pod, &sandbox, container, s).await;
                    }
                }
                Some(_) => initialized = false,
                None => {
                    initialized = false;
                    self.start(pod, &sandbox, container, 0).await;
                }
            }
            break;
        }
        if initialized && !failed {
            for container in &spec.containers {
                let latest = observed.get(&container.name).and_then(|o| o.latest.as_ref());
                match latest {
                    None => self.start(pod, &sandbox, container, 0).await,
                    Some(s) if exited(s) => {
                        let again = match policy.as_str() {
                            "Always" => true,
                            "OnFailure" => s.exit_code != 0,
                            _ => false,
                        };
                        if again {
                            self.restart_with_backoff(pod, &sandbox, container, s).await;
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        if initialized && !failed {
            self.run_probes(pod, &spec.containers, &observed).await;
            self.refresh_volumes(pod).await;
        }
        let observed = self.observe(&sandbox).await?;
        let status = self.status(pod, &observed, initialized, failed, &policy);
        if self.last_status.as_ref() != Some(&status) {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let patch = json!({"status": status});
            match self.pods_api(pod).patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => self.last_status = Some(status),
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// Runs the due probes of running containers; a failed liveness or startup probe stops the
    /// container (within the grace period), and the restart policy takes it from there.
    async fn run_probes(&mut self, pod: &Pod, containers: &[Container], observed: &HashMap<String, Observed>) {
        let pod_ip = self.pod_ip.clone().unwrap_or_default();
        for container in containers {
            let Some(latest) = observed.get(&container.name).and_then(|o| o.latest.as_ref()).filter(|s| running(s))
            else {
                continue;
            };
            let probes = self.probes.entry(container.name.clone()).or_default();
            let (verdict, failures) = probes.probe(&self.shared.cri, &latest.id, container, &pod_ip).await;
            for failure in failures {
                self.event(pod, "Warning", "Unhealthy", &failure).await;
            }
            if let crate::probes::Verdict::Restart(message) = verdict {
                self.event(pod, "Normal", "Killing", &message).await;
                let grace = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
                let request = cri::StopContainerRequest { container_id: latest.id.clone(), timeout: grace };
                if let Err(e) = self.shared.cri.runtime.clone().stop_container(request).await {
                    tracing::warn!(error = %e, "cannot stop a container that failed its probe");
                }
            }
        }
    }

    /// Finds or creates the pod's sandbox and learns its IP.
    async fn ensure_sandbox(&mut self, pod: &Pod) -> Result<String, NodeError> {
        let mut runtime = self.shared.cri.runtime.clone();
        if let Some(id) = &self.sandbox {
            let status = runtime
                .pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: id.clone(), verbose: false })
                .await;
            if let Ok(status) = status
                && status.into_inner().status.is_some_and(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
            {
                return Ok(id.clone());
            }
            self.sandbox = None;
        }
        let filter = cri::PodSandboxFilter {
            label_selector: HashMap::from([(POD_UID_LABEL.to_string(), self.uid.clone())]),
            state: Some(cri::PodSandboxStateValue { state: cri::PodSandboxState::SandboxReady as i32 }),
            ..Default::default()
        };
        let found = runtime.list_pod_sandbox(cri::ListPodSandboxRequest { filter: Some(filter) }).await?.into_inner();
        let id = if let Some(existing) = found.items.into_iter().max_by_key(|s| s.created_at) {
            existing.id
        } else {
            let config = self.sandbox_config(pod)?;
            std::fs::create_dir_all(&config.log_directory)
                .map_err(|e| NodeError::io("create", std::path::Path::new(&config.log_directory), e))?;
            let request = cri::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() };
            runtime.run_pod_sandbox(request).await?.into_inner().pod_sandbox_id
        };
        let status = runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: id.clone(), verbose: false })
            .await?
            .into_inner();
        self.pod_ip = status.status.and_then(|s| s.network).map(|n| n.ip).filter(|ip| !ip.is_empty());
        self.sandbox = Some(id.clone());
        Ok(id)
    }

    fn pod_dir(&self) -> PathBuf {
        self.shared.pods_dir.join(&self.uid)
    }

    fn sandbox_config(&self, pod: &Pod) -> Result<cri::PodSandboxConfig, NodeError> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let spec = pod.spec.as_ref();
        if spec.is_some_and(|s| s.host_network == Some(true)) {
            return Err(NodeError::Spec("hostNetwork pods are not supported by this node yet".into()));
        }
        let mut labels: HashMap<String, String> = pod.metadata.labels.clone().unwrap_or_default().into_iter().collect();
        labels.insert(POD_UID_LABEL.into(), self.uid.clone());
        labels.insert(POD_NAME_LABEL.into(), name.clone());
        labels.insert(POD_NAMESPACE_LABEL.into(), namespace.clone());
        let hostname = spec.and_then(|s| s.hostname.clone()).unwrap_or_else(|| name.clone());
        Ok(cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata { name, uid: self.uid.clone(), namespace, attempt: 0 }),
            hostname: hostname.chars().take(63).collect(),
            log_directory: self.pod_dir().join("logs").display().to_string(),
            labels,
            linux: Some(cri::LinuxPodSandboxConfig { cgroup_parent: cgroup_parent(&self.uid), ..Default::default() }),
            ..Default::default()
        })
    }

    /// The latest (and previous) attempt of each container in the sandbox, by name.
    async fn observe(&self, sandbox: &str) -> Result<HashMap<String, Observed>, NodeError> {
        let mut runtime = self.shared.cri.runtime.clone();
        let filter = cri::ContainerFilter { pod_sandbox_id: sandbox.to_string(), ..Default::default() };
        let list = runtime.list_containers(cri::ListContainersRequest { filter: Some(filter) }).await?.into_inner();
        let mut by_name: BTreeMap<String, Vec<(u32, String)>> = BTreeMap::new();
        for container in list.containers {
            let Some(metadata) = container.metadata else { continue };
            by_name.entry(metadata.name).or_default().push((metadata.attempt, container.id));
        }
        let mut out = HashMap::new();
        for (name, mut attempts) in by_name {
            attempts.sort();
            let mut observed = Observed::default();
            let mut newest = attempts.iter().rev();
            if let Some((_, id)) = newest.next() {
                observed.latest = container_status(&mut runtime, id).await;
            }
            if let Some((_, id)) = newest.next() {
                observed.previous = container_status(&mut runtime, id).await;
            }
            out.insert(name, observed);
        }
        Ok(out)
    }

    async fn restart_with_backoff(
        &mut self,
        pod: &Pod,
        sandbox: &str,
        container: &Container,
        last: &cri::ContainerStatus,
    ) {
        let attempt = last.metadata.as_ref().map_or(0, |m| m.attempt) + 1;
        let backoff = INITIAL_BACKOFF.saturating_mul(1 << attempt.saturating_sub(1).min(5)).min(MAX_BACKOFF);
        let finished = SystemTime::UNIX_EPOCH + Duration::from_nanos(last.finished_at.max(0) as u64);
        let elapsed = SystemTime::now().duration_since(finished).unwrap_or_default();
        if elapsed < backoff {
            let message = format!(
                "back-off {}s restarting failed container={} pod={}",
                backoff.as_secs(),
                container.name,
                pod.metadata.name.as_deref().unwrap_or_default()
            );
            let waiting = Waiting { reason: "CrashLoopBackOff".into(), message: message.clone() };
            if self.waiting.get(&container.name) != Some(&waiting) {
                self.event(
                    pod,
                    "Warning",
                    "BackOff",
                    &format!("Back-off restarting failed container {}", container.name),
                )
                .await;
                self.waiting.insert(container.name.clone(), waiting);
            }
            return;
        }
        self.start(pod, sandbox, container, attempt).await;
    }

    /// Pulls the image if needed, creates and starts one attempt of a container. Failures end up
    /// as the container's waiting reason and as events.
    async fn start(&mut self, pod: &Pod, sandbox: &str, container: &Container, attempt: u32) {
        match self.try_start(pod, sandbox, container, attempt).await {
            Ok(()) => {
                self.waiting.remove(&container.name);
            }
            Err((reason, message)) => {
                self.waiting.insert(container.name.clone(), Waiting { reason, message });
            }
        }
    }

    async fn try_start(
        &mut self,
        pod: &Pod,
        sandbox: &str,
        container: &Container,
        attempt: u32,
    ) -> Result<(), (String, String)> {
        let image = container.image.clone().unwrap_or_default();
        self.ensure_image(pod, container, &image).await?;
        let config = self.container_config(pod, container, &image, attempt).await.map_err(|e| {
            let message = e.to_string();
            (String::from("CreateContainerConfigError"), message)
        });
        let config = match config {
            Ok(config) => config,
            Err((reason, message)) => {
                self.event(pod, "Warning", "Failed", &format!("Error: {message}")).await;
                return Err((reason, message));
            }
        };
        let mut runtime = self.shared.cri.runtime.clone();
        let sandbox_config = self.sandbox_config(pod).ok();
        let created = runtime
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox.to_string(),
                config: Some(config),
                sandbox_config,
            })
            .await;
        let id = match created {
            Ok(reply) => reply.into_inner().container_id,
            Err(e) => {
                let message = e.message().to_string();
                self.event(pod, "Warning", "Failed", &format!("Error: {message}")).await;
                return Err(("CreateContainerError".into(), message));
            }
        };
        self.event(pod, "Normal", "Created", &format!("Created container {}", container.name)).await;
        if let Err(e) = runtime.start_container(cri::StartContainerRequest { container_id: id }).await {
            let message = e.message().to_string();
            self.event(pod, "Warning", "Failed", &format!("Error: {message}")).await;
            return Err(("RunContainerError".into(), message));
        }
        self.event(pod, "Normal", "Started", &format!("Started container {}", container.name)).await;
        Ok(())
    }

    /// Makes `image` present according to the container's `imagePullPolicy`.
    async fn ensure_image(&mut self, pod: &Pod, container: &Container, image: &str) -> Result<(), (String, String)> {
        let tagged = image.rsplit('/').next().is_some_and(|last| last.contains(':') || last.contains('@'));
        let latest = !tagged || image.ends_with(":latest");
        let policy = container
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| if latest { "Always" } else { "IfNotPresent" }.into());
        let spec = cri::ImageSpec { image: image.to_string(), ..Default::default() };
        let mut images = self.shared.cri.images.clone();
        let present = images
            .image_status(cri::ImageStatusRequest { image: Some(spec.clone()), verbose: false })
            .await
            .is_ok_and(|r| r.into_inner().image.is_some());
        let pull = match policy.as_str() {
            "Never" => {
                if present {
                    false
                } else {
                    let message = format!("Container image \"{image}\" is not present with pull policy of Never");
                    self.event(pod, "Warning", "ErrImageNeverPull", &message).await;
                    return Err(("ErrImageNeverPull".into(), message));
                }
            }
            "Always" => !self.pulled.contains(image) && !local_image(image, present),
            _ => !present,
        };
        if !pull {
            if !self.pulled.contains(image) {
                self.event(pod, "Normal", "Pulled", &format!("Container image \"{image}\" already present on machine"))
                    .await;
                self.pulled.insert(image.to_string());
            }
            return Ok(());
        }
        self.event(pod, "Normal", "Pulling", &format!("Pulling image \"{image}\"")).await;
        let started = std::time::Instant::now();
        let pulled =
            images.pull_image(cri::PullImageRequest { image: Some(spec), auth: None, sandbox_config: None }).await;
        match pulled {
            Ok(_) => {
                let message =
                    format!("Successfully pulled image \"{image}\" in {:.3}s", started.elapsed().as_secs_f64());
                self.event(pod, "Normal", "Pulled", &message).await;
                self.pulled.insert(image.to_string());
                Ok(())
            }
            Err(e) => {
                let message = format!("Failed to pull image \"{image}\": {}", e.message());
                self.event(pod, "Warning", "Failed", &message).await;
                let backoff = format!("Back-off pulling image \"{image}\"");
                if self.waiting.get(&container.name).is_some_and(|w| w.reason == "ErrImagePull") {
                    self.event(pod, "Normal", "BackOff", &backoff).await;
                    return Err(("ImagePullBackOff".into(), backoff));
                }
                Err(("ErrImagePull".into(), message))
            }
        }
    }

    /// Fills the pod's volumes (and gives `container`'s environment when one is given) from the
    /// current ConfigMaps, Secrets, downward API fields and service-account tokens.
    async fn prepare(
        &mut self,
        pod: &Pod,
        container: Option<&Container>,
    ) -> Result<(Vec<(String, String)>, HashMap<String, PathBuf>), NodeError> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let mut sources = spec::Sources::new(&self.shared.client, &namespace, std::mem::take(&mut self.tokens));
        let mut status_pod = pod.clone();
        status_pod.status.get_or_insert_with(Default::default).pod_ip.clone_from(&self.pod_ip);
        let host_ip = &self.shared.host_ip;
        let env = match container {
            Some(container) => spec::environment(&status_pod, container, &mut sources, host_ip).await,
            None => Ok(Vec::new()),
        };
        let prepared = match env {
            Ok(env) => spec::volumes(&status_pod, &self.pod_dir().join("volumes"), &mut sources, host_ip)
                .await
                .map(|volumes| (env, volumes)),
            Err(e) => Err(e),
        };
        self.tokens = sources.into_tokens();
        self.volumes_refreshed = Some(SystemTime::now());
        prepared
    }

    /// Brings the running pod's volumes up to date, as the kubelet's periodic sync does:
    /// ConfigMap, Secret and downward API contents every [`VOLUME_RESYNC`], a service-account
    /// token when it is due for rotation.
    async fn refresh_volumes(&mut self, pod: &Pod) {
        let now = SystemTime::now();
        let resync_due = self.volumes_refreshed.is_some_and(|at| at + VOLUME_RESYNC <= now);
        let token_due = self.tokens.next_refresh().is_some_and(|at| at <= now);
        if !(resync_due || token_due) {
            return;
        }
        if let Err(e) = self.prepare(pod, None).await {
            tracing::warn!(pod = ?pod.metadata.name, error = %e, "cannot refresh the pod's volumes");
        }
    }

    async fn container_config(
        &mut self,
        pod: &Pod,
        container: &Container,
        image: &str,
        attempt: u32,
    ) -> Result<cri::ContainerConfig, NodeError> {
        let (env, volumes) = self.prepare(pod, Some(container)).await?;
        let mounts = spec::mounts(container, &volumes)?;
        let expand = |items: &Option<Vec<String>>| -> Vec<String> {
            items.iter().flatten().map(|item| spec::expand(item, &env)).collect()
        };
        let log_dir = self.pod_dir().join("logs").join(&container.name);
        std::fs::create_dir_all(&log_dir).map_err(|e| NodeError::io("create", &log_dir, e))?;
        let labels = HashMap::from([
            (POD_UID_LABEL.to_string(), self.uid.clone()),
            (CONTAINER_NAME_LABEL.to_string(), container.name.clone()),
        ]);
        Ok(cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata { name: container.name.clone(), attempt }),
            image: Some(cri::ImageSpec { image: image.to_string(), ..Default::default() }),
            command: expand(&container.command),
            args: expand(&container.args),
            working_dir: container.working_dir.clone().unwrap_or_default(),
            envs: env.iter().map(|(key, value)| cri::KeyValue { key: key.clone(), value: value.clone() }).collect(),
            mounts,
            labels,
            log_path: format!("{}/{attempt}.log", container.name),
            stdin: container.stdin.unwrap_or(false),
            stdin_once: container.stdin_once.unwrap_or(false),
            tty: container.tty.unwrap_or(false),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(spec::resources(container)),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn container_status(&self, container: &Container, observed: Option<&Observed>) -> Value {
        let image = container.image.clone().unwrap_or_default();
        let latest = observed.and_then(|o| o.latest.as_ref());
        let terminated = |s: &cri::ContainerStatus| {
            let reason = if !s.reason.is_empty() {
                s.reason.clone()
            } else if s.exit_code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            };
            json!({"terminated": {
                "exitCode": s.exit_code,
                "reason": reason,
                "message": (!s.message.is_empty()).then(|| s.message.clone()),
                "startedAt": time_of(s.started_at),
                "finishedAt": time_of(s.finished_at),
                "containerID": format!("containerd://{}", s.id),
            }})
        };
        let restart_count = latest.and_then(|s| s.metadata.as_ref()).map_or(0, |m| m.attempt);
        let waiting = self.waiting.get(&container.name);
        let state = match (latest, waiting) {
            (Some(s), _) if running(s) => json!({"running": {"startedAt": time_of(s.started_at)}}),
            (_, Some(w)) => json!({"waiting": {"reason": w.reason, "message": w.message}}),
            (Some(s), None) if exited(s) => terminated(s),
            _ => json!({"waiting": {"reason": "ContainerCreating"}}),
        };
        let last_state = match (latest, waiting) {
            (Some(s), Some(_)) if exited(s) => terminated(s),
            _ => observed.and_then(|o| o.previous.as_ref()).filter(|s| exited(s)).map_or(json!({}), terminated),
        };
        let is_running = latest.is_some_and(running);
        let (started, ready) = crate::probes::ContainerProbes::gates(
            self.probes.get(&container.name),
            latest.map_or("", |s| s.id.as_str()),
            container,
        );
        let mut status = json!({
            "name": container.name,
            "image": image,
            "imageID": latest.map(|s| s.image_ref.clone()).unwrap_or_default(),
            "ready": is_running && started && ready,
            "started": is_running && started,
            "restartCount": restart_count,
            "state": state,
            "lastState": last_state,
        });
        if let Some(s) = latest {
            status["containerID"] = json!(format!("containerd://{}", s.id));
        }
        status
    }

    fn status(
        &self,
        pod: &Pod,
        observed: &HashMap<String, Observed>,
        initialized: bool,
        init_failed: bool,
        policy: &str,
    ) -> Value {
        let spec = pod.spec.clone().unwrap_or_default();
        let init_statuses: Vec<Value> =
            spec.init_containers.iter().flatten().map(|c| self.container_status(c, observed.get(&c.name))).collect();
        let statuses: Vec<Value> =
            spec.containers.iter().map(|c| self.container_status(c, observed.get(&c.name))).collect();
        let latest = |name: &str| observed.get(name).and_then(|o| o.latest.as_ref());
        let all_running = spec.containers.iter().all(|c| latest(&c.name).is_some_and(running));
        let any_running = spec.containers.iter().any(|c| latest(&c.name).is_some_and(running));
        let all_exited = spec.containers.iter().all(|c| latest(&c.name).is_some_and(exited));
        let all_succeeded =
            all_exited && spec.containers.iter().all(|c| latest(&c.name).is_some_and(|s| s.exit_code == 0));
        let phase = if init_failed {
            "Failed"
        } else if !initialized {
            "Pending"
        } else if all_exited && policy == "Never" {
            if all_succeeded { "Succeeded" } else { "Failed" }
        } else if all_exited && policy == "OnFailure" && all_succeeded {
            "Succeeded"
        } else if any_running || all_exited {
            "Running"
        } else {
            "Pending"
        };
        let ready = all_running && phase == "Running" && statuses.iter().all(|s| s["ready"] == true);
        let previous = pod.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        let condition = |kind: &str, ok: bool| {
            let status = if ok { "True" } else { "False" };
            let since = previous
                .iter()
                .find(|c| c.type_ == kind && c.status == status)
                .and_then(|c| c.last_transition_time.as_ref())
                .map_or_else(now, stamp);
            json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since})
        };
        let ip = self.pod_ip.clone();
        json!({
            "phase": phase,
            "conditions": [
                condition("PodReadyToStartContainers", self.sandbox.is_some()),
                condition("Initialized", initialized),
                condition("Ready", ready),
                condition("ContainersReady", ready),
                condition("PodScheduled", true),
            ],
            "hostIP": self.shared.host_ip,
            "hostIPs": [{"ip": self.shared.host_ip}],
            "podIP": ip,
            "podIPs": ip.as_ref().map(|ip| vec![json!({"ip": ip})]),
            "startTime": self.started,
            "initContainerStatuses": (!init_statuses.is_empty()).then_some(init_statuses),
            "containerStatuses": statuses,
            "qosClass": pod.status.as_ref().and_then(|s| s.qos_class.clone()).unwrap_or_else(|| qos_class(&spec.containers)),
        })
    }

    /// Records an event without waiting for the API server: pod startup must not queue behind it.
    #[allow(clippy::unused_async, reason = "callers await it like the other API writes of a sync")]
    async fn event(&self, pod: &Pod, kind: &str, reason: &str, message: &str) {
        let (shared, pod) = (self.shared.clone(), pod.clone());
        let (kind, reason, message) = (kind.to_string(), reason.to_string(), message.to_string());
        tokio::spawn(async move { record_event(&shared, &pod, &kind, &reason, &message).await });
    }
}

/// Whether an image whose policy says Always may skip the pull: images with no registry host
/// (`capstan.local/…` or a bare name) can only come from an import.
fn local_image(image: &str, present: bool) -> bool {
    present && image.starts_with("capstan.local/")
}

fn qos_class(containers: &[Container]) -> String {
    let has = |c: &Container, which: &str| {
        c.resources.as_ref().is_some_and(|r| {
            let map = if which == "limits" { &r.limits } else { &r.requests };
            map.as_ref().is_some_and(|m| !m.is_empty())
        })
    };
    if containers.iter().all(|c| !has(c, "limits") && !has(c, "requests")) {
        "BestEffort".into()
    } else if containers.iter().all(|c| {
        let r = c.resources.as_ref();
        let limits = r.and_then(|r| r.limits.as_ref());
        limits.is_some_and(|l| l.contains_key("cpu") && l.contains_key("memory"))
            && r.and_then(|r| r.requests.as_ref())
                .is_none_or(|req| req.iter().all(|(k, v)| limits.and_then(|l| l.get(k)) == Some(v)))
    }) {
        "Guaranteed".into()
    } else {
        "Burstable".into()
    }
}

async fn container_status(
    runtime: &mut cri::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    id: &str,
) -> Option<cri::ContainerStatus> {
    runtime
        .container_status(cri::ContainerStatusRequest { container_id: id.to_string(), verbose: false })
        .await
        .ok()
        .and_then(|r| r.into_inner().status)
}

/// The cgroup (cgroupfs driver) the pod's containers live under.
fn cgroup_parent(uid: &str) -> String {
    format!("/capstan/pod{uid}")
}

async fn record_event(shared: &Shared, pod: &Pod, kind: &str, reason: &str, message: &str) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let stamp = chrono::Utc::now();
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{name}.{:x}", stamp.timestamp_nanos_opt().unwrap_or_default()), "namespace": namespace},
        "involvedObject": {"kind": "Pod", "apiVersion": "v1", "name": name, "namespace": namespace, "uid": pod.metadata.uid},
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": "kubelet", "host": shared.node},
        "reportingComponent": "kubelet",
        "reportingInstance": shared.node,
        "firstTimestamp": stamp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "lastTimestamp": stamp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "count": 1,
    });
    let Ok(event) = serde_json::from_value::<Event>(event) else { return };
    let events: Api<Event> = Api::namespaced(shared.client.clone(), &namespace);
    if let Err(e) = events.create(&PostParams::default(), &event).await {
        tracing::debug!(error = %e, "cannot record an event");
    }
}

/// Stops a pod's containers (preStop hooks first, then SIGTERM and SIGKILL after `grace`
/// seconds), removes its sandbox, cgroups and directories.
async fn teardown(shared: &Shared, uid: &str, grace: i64, pod: Option<&Pod>) -> Result<(), NodeError> {
    let mut runtime = shared.cri.runtime.clone();
    let filter = cri::PodSandboxFilter {
        label_selector: HashMap::from([(POD_UID_LABEL.to_string(), uid.to_string())]),
        ..Default::default()
    };
    let sandboxes = runtime.list_pod_sandbox(cri::ListPodSandboxRequest { filter: Some(filter) }).await?.into_inner();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(grace.max(0) as u64);
    for sandbox in &sandboxes.items {
        let filter = cri::ContainerFilter { pod_sandbox_id: sandbox.id.clone(), ..Default::default() };
        let containers =
            runtime.list_containers(cri::ListContainersRequest { filter: Some(filter) }).await?.into_inner().containers;
        let stops = containers.iter().filter(|c| c.state == cri::ContainerState::ContainerRunning as i32).map(|c| {
            let mut runtime = runtime.clone();
            let name = c.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
            let pre_stop = pod.and_then(|p| pre_stop_command(p, &name));
            let id = c.id.clone();
            async move {
                if let Some(cmd) = pre_stop {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now()).as_secs() as i64;
                    let request = cri::ExecSyncRequest { container_id: id.clone(), cmd, timeout: left.max(1) };
                    let _ = tokio::time::timeout_at(deadline, runtime.exec_sync(request)).await;
                }
                let left = deadline.saturating_duration_since(tokio::time::Instant::now()).as_secs() as i64;
                runtime.stop_container(cri::StopContainerRequest { container_id: id, timeout: left }).await
            }
        });
        for result in futures::future::join_all(stops).await {
            if let Err(e) = result {
                tracing::warn!(%uid, error = %e, "cannot stop a container");
            }
        }
        runtime.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sandbox.id.clone() }).await?;
        for container in &containers {
            let _ = runtime.remove_container(cri::RemoveContainerRequest { container_id: container.id.clone() }).await;
        }
        runtime.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sandbox.id.clone() }).await?;
        if let Some(pod) = pod {
            let message = format!("Stopping container(s) of pod {}", pod.metadata.name.as_deref().unwrap_or_default());
            tracing::debug!(%message);
        }
    }
    remove_cgroups(uid);
    let dir = shared.pods_dir.join(uid);
    if dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&dir)
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the pod directory");
    }
    Ok(())
}

fn pre_stop_command(pod: &Pod, container: &str) -> Option<Vec<String>> {
    let spec = pod.spec.as_ref()?;
    let container = spec.containers.iter().find(|c| c.name == container)?;
    container.lifecycle.as_ref()?.pre_stop.as_ref()?.exec.as_ref()?.command.clone()
}

/// The cgroup v1 directories of a pod, in every hierarchy.
#[must_use]
pub fn pod_cgroups(uid: &str) -> Vec<PathBuf> {
    let parent = cgroup_parent(uid);
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else { return Vec::new() };
    hierarchies.flatten().map(|h| h.path().join(parent.trim_start_matches('/'))).filter(|p| p.is_dir()).collect()
}

/// Removes the pod's cgroup directories runc leaves behind (children first).
fn remove_cgroups(uid: &str) {
    fn remove(dir: &std::path::Path) {
        if let Ok(children) = std::fs::read_dir(dir) {
            for child in children.flatten() {
                if child.file_type().is_ok_and(|t| t.is_dir()) {
                    remove(&child.path());
                }
            }
        }
        if let Err(e) = std::fs::remove_dir(dir) {
            tracing::debug!(dir = %dir.display(), error = %e, "cannot remove a cgroup");
        }
    }
    for dir in pod_cgroups(uid) {
        remove(&dir);
    }
}
