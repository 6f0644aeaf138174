//! The scheduler's cache: nodes and the pods bound (or assumed) on them, kept as the plugins'
//! [`NodeLog`], so every change to a node's usage becomes one node change for the plugins.
//!
//! A pod is *assumed* on a node as soon as a cycle picks it, before the binding is written, so
//! the next cycle already counts it; the pod's own watch event later confirms it. An assumed pod
//! whose binding never shows up is forgotten after [`ASSUME_EXPIRY`].

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use capstan_wasm::scheduler::{NodeId, NodeInfo, NodeLog, NodeUsage, PodSummary, ResourceAmount};
use k8s_openapi::api::core::v1::{Node, Pod};

use crate::pod;

/// How long an assumed pod is kept after its binding finished without the pod's update arriving.
pub const ASSUME_EXPIRY: Duration = Duration::from_secs(30);

/// What the cache knows of one pod on a node.
#[derive(Clone, Debug)]
struct PodUsage {
    node: String,
    /// What plugins see of it (requests and host ports included).
    summary: PodSummary,
    /// Set while the pod is only assumed: when the assumption expires (none while binding).
    #[allow(
        clippy::option_option,
        reason = "bound / binding in flight / assumed until: three states, documented here"
    )]
    assumed: Option<Option<Instant>>,
}

/// Nodes and pods, as the plugins see them.
#[derive(Default)]
pub struct Cache {
    nodes: HashMap<String, NodeInfo>,
    pods: HashMap<String, PodUsage>,
    pods_by_node: HashMap<String, HashSet<String>>,
    /// Pods not bound yet whose `status.nominatedNodeName` names a node (after preemption), by
    /// key: the node and what the filter counts of them there.
    /// The flag marks a nomination made by this scheduler that no pod object carries yet.
    nominated: HashMap<String, (String, PodSummary, bool)>,
    /// Expiry clocks started by [`Self::finish_binding`], oldest first (each is `now` plus the
    /// same delay, so they come in order). An entry whose pod was confirmed, forgotten or
    /// re-assumed since is stale and dropped when it comes due, so expiring costs nothing per
    /// cycle while no clock is due.
    expiring: VecDeque<(Instant, String)>,
    log: NodeLog,
}

impl Cache {
    /// The plugins' view of the nodes: the snapshot a cycle schedules against.
    #[must_use]
    pub fn nodes(&self) -> &NodeLog {
        &self.log
    }

    /// The plugins' view, mutable: for a scheduling cycle whose preemption dry runs change a node
    /// and put it back, and to attach the host view.
    pub fn nodes_mut(&mut self) -> &mut NodeLog {
        &mut self.log
    }

    /// How many nodes there are.
    #[must_use]
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The handle of node `name`.
    #[must_use]
    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.log.id(name)
    }

    /// Adds or updates a node.
    pub fn upsert_node(&mut self, node: &Node) {
        let info = pod::node_info(node);
        let name = info.name.clone();
        self.nodes.insert(name.clone(), info);
        self.publish(&name);
        self.publish_nominated(&name);
    }

    /// Removes a node.
    pub fn remove_node(&mut self, name: &str) {
        self.nodes.remove(name);
        self.log.remove(name);
    }

    /// Records a pod the API server shows bound to a node (confirming an assumption), or
    /// forgets it once it finished or is gone from its node.
    pub fn upsert_pod(&mut self, pod: &Pod) {
        let key = pod::key(pod);
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
        let finished =
            pod.status.as_ref().and_then(|s| s.phase.as_deref()).is_some_and(|p| p == "Succeeded" || p == "Failed");
        match node {
            Some(node) if !finished => {
                self.forget_nomination(&key);
                let usage = PodUsage { node, summary: pod::pod_summary(pod), assumed: None };
                self.place(key, usage);
            }
            _ => self.remove_pod(&key),
        }
    }

    /// Records where a pod not bound yet is nominated (`status.nominatedNodeName`), or that it
    /// no longer is: filtering counts it on that node for pods of equal or lower priority.
    /// A nomination made by [`Self::nominate_on`] outlives updates that carry none yet (the
    /// scheduler's own condition write can arrive before its `nominatedNodeName` patch), as in
    /// kube-scheduler's nominator.
    pub fn nominate(&mut self, pod: &Pod) {
        let key = pod::key(pod);
        let node = pod.status.as_ref().and_then(|s| s.nominated_node_name.clone()).filter(|n| !n.is_empty());
        if node.is_none()
            && let Some((node, _, true)) = self.nominated.get(&key).cloned()
        {
            self.nominated.insert(key, (node.clone(), pod::pod_summary(pod), true));
            self.publish_nominated(&node);
            return;
        }
        self.forget_nomination(&key);
        if let Some(node) = node {
            self.nominated.insert(key, (node.clone(), pod::pod_summary(pod), false));
            self.publish_nominated(&node);
        }
    }

    /// Records at once the node a preemption nominated for `pod`, before its status says so,
    /// so the next pods' cycles (and their preemption dry runs) leave that room to it.
    pub fn nominate_on(&mut self, pod: &Pod, node: &str) {
        let key = pod::key(pod);
        self.forget_nomination(&key);
        self.nominated.insert(key, (node.to_owned(), pod::pod_summary(pod), true));
        self.publish_nominated(node);
    }

    /// Marks the pod `key` terminating at once, as the preemption that is deleting it knows
    /// before the API server says so: its preemptor then waits for it instead of choosing more
    /// victims (DefaultPreemption's "terminating pod on the nominated node").
    pub fn mark_terminating(&mut self, key: &str) {
        let Some(usage) = self.pods.get_mut(key) else { return };
        if usage.summary.terminating {
            return;
        }
        usage.summary.terminating = true;
        let node = usage.node.clone();
        self.publish_usage(&node);
    }

    fn forget_nomination(&mut self, key: &str) {
        if let Some((node, _, _)) = self.nominated.remove(key) {
            self.publish_nominated(&node);
        }
    }

    /// Hands the framework the pods nominated to node `name`.
    fn publish_nominated(&mut self, name: &str) {
        let pods = self.nominated.values().filter(|(node, _, _)| node == name).map(|(_, pod, _)| pod.clone()).collect();
        self.log.set_nominated(name, pods);
    }

    /// Forgets a pod.
    pub fn remove_pod(&mut self, key: &str) {
        self.forget_nomination(key);
        if let Some(old) = self.pods.remove(key) {
            if let Some(set) = self.pods_by_node.get_mut(&old.node) {
                set.remove(key);
            }
            self.publish_usage(&old.node);
        }
    }

    /// Counts `pod` on `node` before its binding is written.
    pub fn assume(&mut self, pod: &Pod, node: &str) {
        // Placed, it counts on its node as assumed: no longer as nominated.
        self.forget_nomination(&pod::key(pod));
        let usage = PodUsage { node: node.to_owned(), summary: pod::pod_summary(pod), assumed: Some(None) };
        self.place(pod::key(pod), usage);
    }

    /// The binding of an assumed pod was written: start its expiry clock.
    pub fn finish_binding(&mut self, key: &str) {
        if let Some(PodUsage { assumed: Some(expiry), .. }) = self.pods.get_mut(key) {
            let at = Instant::now() + ASSUME_EXPIRY;
            *expiry = Some(at);
            self.expiring.push_back((at, key.to_owned()));
        }
    }

    /// Whether `key` is assumed (not yet confirmed by the API server).
    #[must_use]
    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|p| p.assumed.is_some())
    }

    /// Forgets assumed pods whose binding never showed up.
    pub fn expire_assumed(&mut self, now: Instant) {
        while let Some((at, _)) = self.expiring.front()
            && *at <= now
        {
            let Some((at, key)) = self.expiring.pop_front() else { break };
            // Only the clock this entry started: not a pod confirmed or assumed again since.
            if self.pods.get(&key).is_some_and(|p| p.assumed == Some(Some(at))) {
                tracing::warn!(pod = %key, "assumed pod expired: its binding never showed up");
                self.remove_pod(&key);
            }
        }
    }

    fn place(&mut self, key: String, usage: PodUsage) {
        if let Some(old) = self.pods.get_mut(&key) {
            if old.node == usage.node && old.summary == usage.summary {
                // The API server confirming an assumption, or an update that changes nothing
                // plugins see: the node's usage stays as published.
                old.assumed = usage.assumed;
                return;
            }
            if old.node != usage.node {
                let old_node = old.node.clone();
                if let Some(set) = self.pods_by_node.get_mut(&old_node) {
                    set.remove(&key);
                }
                self.publish_usage(&old_node);
            }
        }
        let node = usage.node.clone();
        self.pods_by_node.entry(node.clone()).or_default().insert(key.clone());
        self.pods.insert(key, usage);
        self.publish_usage(&node);
    }

    /// Recomputes node `name`'s usage and hands the plugins the change.
    fn publish(&mut self, name: &str) {
        let Some(base) = self.nodes.get(name) else { return };
        let usage = self.usage(name, 0);
        let NodeUsage { requested, pod_count, used_ports, pods, .. } = usage;
        let info = NodeInfo { requested, pod_count, used_ports, pods, ..base.clone() };
        self.log.upsert(|id| NodeInfo { id, ..info }, name);
    }

    /// Hands the plugins node `name`'s new usage after a pod was placed on it or left it; the
    /// rest of the node is as last published.
    fn publish_usage(&mut self, name: &str) {
        match self.log.id(name) {
            Some(id) if self.nodes.contains_key(name) => {
                let usage = self.usage(name, id);
                self.log.set_usage(usage);
            }
            _ => self.publish(name),
        }
    }

    /// What the pods on node `name` use, as the plugins see it.
    fn usage(&self, name: &str, id: NodeId) -> NodeUsage {
        let mut requested: BTreeMap<&str, i64> = BTreeMap::new();
        let mut used_ports = Vec::new();
        let mut pods = Vec::new();
        for key in self.pods_by_node.get(name).into_iter().flatten() {
            let Some(usage) = self.pods.get(key) else { continue };
            for amount in &usage.summary.requests {
                *requested.entry(&amount.name).or_default() += amount.milli_value;
            }
            used_ports.extend(usage.summary.host_ports.iter().cloned());
            pods.push(usage.summary.clone());
        }
        let requested = requested
            .into_iter()
            .map(|(name, milli_value)| ResourceAmount { name: name.to_owned(), milli_value })
            .collect();
        let pod_count = u32::try_from(pods.len()).unwrap_or(u32::MAX);
        NodeUsage { id, requested, pod_count, used_ports, pods }
    }
}

#[cfg(test)]
mod tests {
    use super::Cache;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::json;

    fn node(name: &str) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "status": {"allocatable": {"cpu": "4", "pods": "110"}}}),
        )
        .unwrap_or_default()
    }

    fn pod(name: &str, node: Option<&str>, cpu: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"}, "spec": {
            "nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}))
        .unwrap_or_default()
    }

    fn requested_cpu(cache: &Cache, name: &str) -> (i64, u32) {
        let id = cache.node_id(name).unwrap_or(u32::MAX);
        cache.nodes().get(id).map_or((-1, 0), |n| {
            (n.requested.iter().find(|r| r.name == "cpu").map_or(0, |r| r.milli_value), n.pod_count)
        })
    }

    #[test]
    fn assumed_pods_count_until_confirmed_or_forgotten() {
        let mut cache = Cache::default();
        cache.upsert_node(&node("n1"));
        cache.upsert_pod(&pod("a", Some("n1"), "1"));
        assert_eq!(requested_cpu(&cache, "n1"), (1000, 1));
        let b = pod("b", None, "500m");
        cache.assume(&b, "n1");
        assert_eq!(requested_cpu(&cache, "n1"), (1500, 2), "an assumed pod counts at once");
        assert!(cache.is_assumed("default/b"));
        cache.finish_binding("default/b");
        cache.upsert_pod(&pod("b", Some("n1"), "500m"));
        assert!(!cache.is_assumed("default/b"), "the API server's update confirms it");
        cache.remove_pod("default/a");
        assert_eq!(requested_cpu(&cache, "n1"), (500, 1));
        let c = pod("c", None, "1");
        cache.assume(&c, "n1");
        cache.finish_binding("default/c");
        cache.expire_assumed(std::time::Instant::now() + super::ASSUME_EXPIRY);
        assert_eq!(
            requested_cpu(&cache, "n1"),
            (500, 1),
            "an unconfirmed assumption expires; a confirmed one whose clock had started stays"
        );
    }

    #[test]
    fn pods_seen_before_their_node_count_once_it_appears() {
        let mut cache = Cache::default();
        cache.upsert_pod(&pod("a", Some("late"), "2"));
        cache.upsert_node(&node("late"));
        assert_eq!(requested_cpu(&cache, "late"), (2000, 1));
    }
}
