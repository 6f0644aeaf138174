//! The controllers a Capstan server runs unless told otherwise, and running them under leader
//! election. Each is a component built from `plugins/controllers/`, found by its crate name,
//! and enabled by a Plugin object of its name that the leader creates when it is missing.

use std::time::Duration;

use capstan_client::plugins::BuiltinComponents;
use capstan_wasm::Runtime;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::leader::LeaderElection;
use crate::manager::ControllerManager;

/// One default controller: its name, the plugin crate its component is built from, its
/// configuration and its workers.
#[derive(Clone, Debug)]
pub struct DefaultController {
    /// The controller's name.
    pub name: &'static str,
    /// The plugin crate (`replicaset-controller` → `replicaset_controller.wasm`).
    pub component: &'static str,
    /// Its configuration.
    pub config: &'static str,
    /// Its workers.
    pub workers: usize,
}

impl DefaultController {
    /// The `spec` of the Plugin object that enables it.
    #[must_use]
    pub fn plugin_spec(&self) -> Value {
        let config: Value = serde_json::from_str(self.config).unwrap_or_else(|e| {
            tracing::error!(controller = self.name, error = %e, "a default controller's configuration is not JSON");
            json!({})
        });
        json!({
            "kind": "controller",
            "component": {"builtin": self.component},
            "config": config,
            "controller": {"workers": self.workers},
        })
    }
}

/// A default controller.
const fn controller(
    name: &'static str,
    component: &'static str,
    config: &'static str,
    workers: usize,
) -> DefaultController {
    DefaultController { name, component, config, workers }
}

/// A garbage collector instance (the `garbage-collector` component for one kind).
const fn gc(name: &'static str, config: &'static str, workers: usize) -> DefaultController {
    controller(name, "garbage-collector", config, workers)
}

/// The default controllers.
#[must_use]
pub fn defaults() -> Vec<DefaultController> {
    // The garbage collector runs once per kind it collects, each instance told its kind's
    // possible owners and dependents.
    const GC_PODS: &str = r#"{"kind": {"version": "v1", "kind": "Pod"}, "owners": [{"group": "apps", "version": "v1", "kind": "ReplicaSet"}, {"version": "v1", "kind": "ReplicationController"}]}"#;
    const GC_REPLICATION_CONTROLLERS: &str = r#"{"kind": {"version": "v1", "kind": "ReplicationController"}, "dependents": [{"version": "v1", "kind": "Pod"}]}"#;
    // The ReplicaSet component manages ReplicationControllers too.
    const REPLICATION_CONTROLLER: &str = r#"{"kind": "ReplicationController"}"#;
    const GC_REPLICA_SETS: &str = r#"{"kind": {"group": "apps", "version": "v1", "kind": "ReplicaSet"}, "owners": [{"group": "apps", "version": "v1", "kind": "Deployment"}], "dependents": [{"version": "v1", "kind": "Pod"}]}"#;
    const GC_DEPLOYMENTS: &str = r#"{"kind": {"group": "apps", "version": "v1", "kind": "Deployment"}, "dependents": [{"group": "apps", "version": "v1", "kind": "ReplicaSet"}]}"#;
    // What StatefulSets and DaemonSets own, collected by instances of their own (an instance
    // never presumes an owner of a kind it does not watch gone, so they coexist with the above).
    const GC_WORKLOAD_PODS: &str = r#"{"kind": {"version": "v1", "kind": "Pod"}, "owners": [{"group": "apps", "version": "v1", "kind": "StatefulSet"}, {"group": "apps", "version": "v1", "kind": "DaemonSet"}]}"#;
    const GC_CLAIMS: &str = r#"{"kind": {"version": "v1", "kind": "PersistentVolumeClaim"}, "owners": [{"group": "apps", "version": "v1", "kind": "StatefulSet"}]}"#;
    const GC_REVISIONS: &str = r#"{"kind": {"group": "apps", "version": "v1", "kind": "ControllerRevision"}, "owners": [{"group": "apps", "version": "v1", "kind": "StatefulSet"}, {"group": "apps", "version": "v1", "kind": "DaemonSet"}]}"#;
    const GC_STATEFUL_SETS: &str = r#"{"kind": {"group": "apps", "version": "v1", "kind": "StatefulSet"}, "dependents": [{"version": "v1", "kind": "Pod"}, {"version": "v1", "kind": "PersistentVolumeClaim"}, {"group": "apps", "version": "v1", "kind": "ControllerRevision"}]}"#;
    const GC_DAEMON_SETS: &str = r#"{"kind": {"group": "apps", "version": "v1", "kind": "DaemonSet"}, "dependents": [{"version": "v1", "kind": "Pod"}, {"group": "apps", "version": "v1", "kind": "ControllerRevision"}]}"#;
    // Batch: pods owned by Jobs, Jobs owned by CronJobs (instances of their own, so each owner
    // kind's collectors are configured in one place).
    const GC_JOB_PODS: &str =
        r#"{"kind": {"version": "v1", "kind": "Pod"}, "owners": [{"group": "batch", "version": "v1", "kind": "Job"}]}"#;
    const GC_JOBS: &str = r#"{"kind": {"group": "batch", "version": "v1", "kind": "Job"}, "owners": [{"group": "batch", "version": "v1", "kind": "CronJob"}], "dependents": [{"version": "v1", "kind": "Pod"}]}"#;
    const GC_CRON_JOBS: &str = r#"{"kind": {"group": "batch", "version": "v1", "kind": "CronJob"}, "dependents": [{"group": "batch", "version": "v1", "kind": "Job"}]}"#;
    // Upstream's `--terminated-pod-gc-threshold` and 40 s quarantine of pods on missing nodes.
    const POD_GC: &str = r#"{"terminatedPodThreshold": 12500, "orphanGracePeriodSeconds": 40}"#;
    vec![
        controller("replicaset", "replicaset-controller", "{}", 5),
        controller("deployment", "deployment-controller", "{}", 5),
        controller("replicationcontroller", "replicaset-controller", REPLICATION_CONTROLLER, 5),
        controller("node-lifecycle", "node-lifecycle-controller", "{}", 4),
        controller("endpointslice", "endpointslice-controller", "{}", 5),
        controller("serviceaccount", "serviceaccount-controller", "{}", 2),
        controller("namespace", "namespace-controller", "{}", 2),
        // One worker: the component keeps each HPA's recent recommendations in its memory (as
        // upstream does), and one instance sees them all.
        controller("horizontal-pod-autoscaler", "horizontal-pod-autoscaler-controller", "{}", 1),
        gc("garbage-collector-pods", GC_PODS, 4),
        gc("garbage-collector-replicasets", GC_REPLICA_SETS, 2),
        gc("garbage-collector-deployments", GC_DEPLOYMENTS, 2),
        gc("garbage-collector-replicationcontrollers", GC_REPLICATION_CONTROLLERS, 2),
        controller("statefulset", "statefulset-controller", "{}", 5),
        controller("daemonset", "daemonset-controller", "{}", 2),
        controller("disruption", "disruption-controller", "{}", 2),
        gc("garbage-collector-workload-pods", GC_WORKLOAD_PODS, 2),
        gc("garbage-collector-persistentvolumeclaims", GC_CLAIMS, 2),
        gc("garbage-collector-controllerrevisions", GC_REVISIONS, 2),
        gc("garbage-collector-statefulsets", GC_STATEFUL_SETS, 2),
        gc("garbage-collector-daemonsets", GC_DAEMON_SETS, 2),
        controller("job", "job-controller", "{}", 5),
        controller("cronjob", "cronjob-controller", "{}", 5),
        // One worker: the quarantine of missing nodes is remembered per component instance.
        controller("pod-garbage-collector", "pod-gc-controller", POD_GC, 1),
        gc("garbage-collector-job-pods", GC_JOB_PODS, 2),
        gc("garbage-collector-jobs", GC_JOBS, 2),
        gc("garbage-collector-cronjobs", GC_CRON_JOBS, 1),
        // One worker: how long each quota has gone without a charge is remembered per instance.
        // (Named as upstream's controller: the Plugin `resource-quota` is the admission policy.)
        controller("resourcequota", "resource-quota-controller", "{}", 1),
    ]
}

/// The Plugin objects (name, `spec`) of the default controllers, the ServiceAccount controller
/// told the cluster CA (`root_ca`, PEM) to publish in every namespace's `kube-root-ca.crt`.
#[must_use]
pub fn default_plugins(root_ca: Option<&str>) -> Vec<(String, Value)> {
    defaults()
        .iter()
        .map(|d| {
            let mut spec = d.plugin_spec();
            if let (Some(ca), "serviceaccount-controller") = (root_ca, d.component) {
                spec["config"]["rootCA"] = json!(ca);
            }
            (d.name.to_owned(), spec)
        })
        .collect()
}

/// The controller manager of a server, campaigning for its Lease. [`Elected::shutdown`] stops
/// its controllers and gives the Lease up, so that a restarted server leads again at once.
pub struct Elected {
    manager: ControllerManager,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Elected {
    /// The manager.
    #[must_use]
    pub fn manager(&self) -> &ControllerManager {
        &self.manager
    }

    /// Stops the controllers (waiting for their workers), then releases the Lease (waiting at
    /// most five seconds more).
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        if tokio::time::timeout(WORKERS_STOP_LIMIT + Duration::from_secs(5), self.task).await.is_err() {
            tracing::warn!("the controller manager did not stop and release its Lease in time");
        }
    }
}

/// How long stopping waits for controller workers to finish the keys they are reconciling.
const WORKERS_STOP_LIMIT: Duration = Duration::from_secs(10);

/// Runs the controllers Plugin objects of kind `controller` ask for whenever this process holds
/// the controller manager's Lease (as `identity`), stopping them when it loses it. On winning
/// the Lease it first creates those of `plugins` (name, `spec`) that are missing. `builtin`
/// reads the components Capstan ships.
#[must_use]
pub fn run_elected(
    runtime: Runtime,
    client: kube::Client,
    builtin: BuiltinComponents,
    plugins: Vec<(String, Value)>,
    identity: String,
) -> Elected {
    let manager = ControllerManager::new(runtime, client.clone());
    let (stop, mut stopping) = watch::channel(false);
    let (election_stop, election_stopping) = watch::channel(false);
    let (mut leading, election) = LeaderElection::controller_manager(identity).run(client.clone(), election_stopping);
    let running = manager.clone();
    let task = tokio::spawn(async move {
        let mut driver: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            // Wait to win the Lease (no controllers running) or to lose it (running), or to stop.
            let want = driver.is_none();
            let stopped = tokio::select! {
                changed = leading.wait_for(|l| *l == want) => changed.is_err(),
                _ = stopping.wait_for(|s| *s) => true,
            };
            if let Some(running_driver) = driver.take() {
                running_driver.abort();
                running.stop_all_and_wait(WORKERS_STOP_LIMIT).await;
                if !stopped {
                    tracing::warn!("lost the controller manager's Lease; stopping controllers");
                }
            }
            if stopped {
                break;
            }
            if let Err(e) = capstan_client::plugins::ensure_builtin_plugins(&client, &plugins).await {
                tracing::error!(error = %e, "cannot create the default controllers' Plugin objects");
            }
            driver = Some(tokio::spawn(crate::plugins::run(running.clone(), client.clone(), builtin.clone())));
        }
        // The controllers have stopped: now the Lease may go.
        election_stop.send_replace(true);
        let _ = election.await;
    });
    Elected { manager, stop, task }
}
