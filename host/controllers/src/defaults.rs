//! The controllers a Capstan server runs unless told otherwise, and running them under leader
//! election. Each is a component built from `plugins/controllers/`, found by its crate name.

use std::sync::Arc;

use capstan_wasm::Runtime;

use crate::leader::LeaderElection;
use crate::manager::{ControllerManager, ControllerSpec};

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
    /// The spec to start it with, given its component's bytes.
    #[must_use]
    pub fn spec(&self, component: Vec<u8>) -> ControllerSpec {
        ControllerSpec { name: self.name.to_owned(), component, config: self.config.to_owned(), workers: self.workers }
    }
}

/// The default controllers.
#[must_use]
pub fn defaults() -> Vec<DefaultController> {
    // The garbage collector runs once per kind it collects, each instance told its kind's
    // possible owners and dependents.
    const GC_PODS: &str = r#"{"kind": {"version": "v1", "kind": "Pod"}, "owners": [{"group": "apps", "version": "v1", "kind": "ReplicaSet"}]}"#;
    const GC_REPLICA_SETS: &str = r#"{"kind": {"group": "apps", "version": "v1", "kind": "ReplicaSet"}, "owners": [{"group": "apps", "version": "v1", "kind": "Deployment"}], "dependents": [{"version": "v1", "kind": "Pod"}]}"#;
    const GC_DEPLOYMENTS: &str = r#"{"kind": {"group": "apps", "version": "v1", "kind": "Deployment"}, "dependents": [{"group": "apps", "version": "v1", "kind": "ReplicaSet"}]}"#;
    // Batch: pods owned by Jobs, Jobs owned by CronJobs (instances of their own, so each owner
    // kind's collectors are configured in one place).
    const GC_JOB_PODS: &str =
        r#"{"kind": {"version": "v1", "kind": "Pod"}, "owners": [{"group": "batch", "version": "v1", "kind": "Job"}]}"#;
    const GC_JOBS: &str = r#"{"kind": {"group": "batch", "version": "v1", "kind": "Job"}, "owners": [{"group": "batch", "version": "v1", "kind": "CronJob"}], "dependents": [{"version": "v1", "kind": "Pod"}]}"#;
    const GC_CRON_JOBS: &str = r#"{"kind": {"group": "batch", "version": "v1", "kind": "CronJob"}, "dependents": [{"group": "batch", "version": "v1", "kind": "Job"}]}"#;
    // Upstream's `--terminated-pod-gc-threshold` and 40 s quarantine of pods on missing nodes.
    const POD_GC: &str = r#"{"terminatedPodThreshold": 12500, "orphanGracePeriodSeconds": 40}"#;
    vec![
        DefaultController { name: "replicaset", component: "replicaset-controller", config: "{}", workers: 5 },
        DefaultController { name: "deployment", component: "deployment-controller", config: "{}", workers: 5 },
        DefaultController {
            name: "garbage-collector-pods",
            component: "garbage-collector",
            config: GC_PODS,
            workers: 4,
        },
        DefaultController {
            name: "garbage-collector-replicasets",
            component: "garbage-collector",
            config: GC_REPLICA_SETS,
            workers: 2,
        },
        DefaultController {
            name: "garbage-collector-deployments",
            component: "garbage-collector",
            config: GC_DEPLOYMENTS,
            workers: 2,
        },
        DefaultController { name: "job", component: "job-controller", config: "{}", workers: 5 },
        DefaultController { name: "cronjob", component: "cronjob-controller", config: "{}", workers: 5 },
        // One worker: the quarantine of missing nodes is remembered per component instance.
        DefaultController { name: "pod-garbage-collector", component: "pod-gc-controller", config: POD_GC, workers: 1 },
        DefaultController {
            name: "garbage-collector-job-pods",
            component: "garbage-collector",
            config: GC_JOB_PODS,
            workers: 2,
        },
        DefaultController {
            name: "garbage-collector-jobs",
            component: "garbage-collector",
            config: GC_JOBS,
            workers: 2,
        },
        DefaultController {
            name: "garbage-collector-cronjobs",
            component: "garbage-collector",
            config: GC_CRON_JOBS,
            workers: 1,
        },
    ]
}

/// Runs `controllers` whenever this process holds the controller manager's Lease (as
/// `identity`), stopping them when it loses it. Returns the manager; the campaign runs in the
/// background for the life of the process.
#[must_use]
pub fn run_elected(
    runtime: Runtime,
    client: kube::Client,
    controllers: Vec<ControllerSpec>,
    identity: String,
) -> ControllerManager {
    let manager = ControllerManager::new(runtime, client.clone());
    let mut leading = LeaderElection::controller_manager(identity).run(client);
    let running = manager.clone();
    let controllers = Arc::new(controllers);
    tokio::spawn(async move {
        loop {
            if leading.wait_for(|l| *l).await.is_err() {
                return;
            }
            for spec in controllers.iter() {
                if let Err(e) = running.start(spec.clone()).await {
                    tracing::error!(controller = %spec.name, error = %e, "cannot start controller");
                }
            }
            if leading.wait_for(|l| !*l).await.is_err() {
                return;
            }
            tracing::warn!("lost the controller manager's Lease; stopping controllers");
            running.stop_all();
        }
    });
    manager
}
