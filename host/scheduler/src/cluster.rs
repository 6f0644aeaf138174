//! What plugins read of the cluster beyond nodes and their pods — namespace labels,
//! `PodDisruptionBudgets`, the selectors of the workloads that select a pod — served to the
//! `scheduler-host` import from informer caches (kube-rs reflectors).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use capstan_api::selector::LabelSelector;
use capstan_wasm::scheduler::{DisruptionBudget, Label, SchedulerHost};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, ReplicationController, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// Informer caches of the kinds plugins ask about.
pub struct ClusterView {
    namespaces: Store<Namespace>,
    budgets: Store<PodDisruptionBudget>,
    services: Store<Service>,
    controllers: Store<ReplicationController>,
    replica_sets: Store<ReplicaSet>,
    stateful_sets: Store<StatefulSet>,
}

/// Starts a reflector of every `K` on the current tokio runtime.
fn reflect<K>(client: &kube::Client, tasks: &mut Vec<tokio::task::JoinHandle<()>>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), watcher::Config::default().any_semantic()).default_backoff(),
    );
    tasks.push(tokio::spawn(async move {
        let mut stream = Box::pin(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::debug!(error = %e, "scheduler: cluster cache watch failed; retrying");
            }
        }
    }));
    reader
}

fn label_map(labels: &[Label]) -> BTreeMap<String, String> {
    labels.iter().map(|l| (l.key.clone(), l.value.clone())).collect()
}

/// A `spec.selector` map (Services, `ReplicationControllers`) that selects `labels`, as a
/// `LabelSelector` JSON.
fn map_selector(selector: Option<&BTreeMap<String, String>>, labels: &BTreeMap<String, String>) -> Option<String> {
    let selector = selector.filter(|s| !s.is_empty())?;
    selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        .then(|| serde_json::json!({"matchLabels": selector}).to_string())
}

/// A `LabelSelector` that selects `labels`, as JSON.
fn label_selector<T: serde::Serialize>(selector: &T, labels: &BTreeMap<String, String>) -> Option<String> {
    let json = serde_json::to_value(selector).ok()?;
    let parsed = LabelSelector::from_json(&json).ok()?;
    (!parsed.is_empty() && parsed.matches(labels)).then(|| json.to_string())
}

fn in_namespace<K: Resource + Clone + 'static>(store: &Store<K>, namespace: &str) -> Vec<Arc<K>>
where
    K::DynamicType: Eq + Hash + Clone,
{
    store.state().into_iter().filter(|o| o.meta().namespace.as_deref() == Some(namespace)).collect()
}

impl ClusterView {
    /// Starts the caches; the returned tasks end them when aborted.
    #[must_use]
    pub fn start(client: &kube::Client) -> (Arc<Self>, Vec<tokio::task::JoinHandle<()>>) {
        let mut tasks = Vec::new();
        let view = Self {
            namespaces: reflect(client, &mut tasks),
            budgets: reflect(client, &mut tasks),
            services: reflect(client, &mut tasks),
            controllers: reflect(client, &mut tasks),
            replica_sets: reflect(client, &mut tasks),
            stateful_sets: reflect(client, &mut tasks),
        };
        (Arc::new(view), tasks)
    }
}

impl SchedulerHost for ClusterView {
    fn namespace_labels(&self, name: &str) -> Option<Vec<Label>> {
        let namespace = self.namespaces.get(&ObjectRef::new(name))?;
        Some(namespace.labels().iter().map(|(key, value)| Label { key: key.clone(), value: value.clone() }).collect())
    }

    fn disruption_budgets(&self, namespace: &str) -> Vec<DisruptionBudget> {
        in_namespace(&self.budgets, namespace)
            .iter()
            .map(|pdb| DisruptionBudget {
                namespace: namespace.to_owned(),
                name: pdb.name_any(),
                selector: pdb
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .and_then(|s| serde_json::to_string(s).ok()),
                disruptions_allowed: pdb.status.as_ref().map_or(0, |s| s.disruptions_allowed),
            })
            .collect()
    }

    fn workload_selectors(&self, namespace: &str, labels: &[Label]) -> Vec<String> {
        let labels = label_map(labels);
        let mut selectors = Vec::new();
        for service in in_namespace(&self.services, namespace) {
            selectors.extend(map_selector(service.spec.as_ref().and_then(|s| s.selector.as_ref()), &labels));
        }
        for controller in in_namespace(&self.controllers, namespace) {
            selectors.extend(map_selector(controller.spec.as_ref().and_then(|s| s.selector.as_ref()), &labels));
        }
        for set in in_namespace(&self.replica_sets, namespace) {
            selectors.extend(set.spec.as_ref().and_then(|s| label_selector(&s.selector, &labels)));
        }
        for set in in_namespace(&self.stateful_sets, namespace) {
            selectors.extend(set.spec.as_ref().and_then(|s| label_selector(&s.selector, &labels)));
        }
        selectors
    }
}
