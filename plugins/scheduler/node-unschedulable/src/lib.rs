//! NodeUnschedulable (Filter): a cordoned node (`spec.unschedulable`) takes no new pods, unless
//! the pod tolerates the `node.kubernetes.io/unschedulable:NoSchedule` taint.

use capstan_plugin_sdk::scheduler::{
    ExtensionPoints, NodeInfo, Nodes, PodInfo, PreFilterResult, SchedulerPlugin, Status, Taint, TaintEffect,
};

/// Upstream's reason, shown in `FailedScheduling` events.
pub const REASON: &str = "node(s) were unschedulable";

/// The taint a cordoned node implies.
const TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

/// Filters out cordoned nodes.
pub struct NodeUnschedulable;

impl SchedulerPlugin for NodeUnschedulable {
    type Cycle = ();

    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn cycle(&self, _pod: &PodInfo, _state: &[u8]) -> Result<(), Status> {
        Ok(())
    }

    fn extension_points(&self) -> ExtensionPoints {
        ExtensionPoints::PRE_FILTER | ExtensionPoints::FILTER
    }

    /// Nothing to check when no node is cordoned or the pod tolerates cordoned nodes.
    fn pre_filter(&self, pod: &PodInfo, nodes: &Nodes) -> PreFilterResult {
        let idle = nodes.unschedulable() == 0 || tolerates_unschedulable(pod);
        let status = if idle { Status::skip() } else { Status::success() };
        PreFilterResult { status, nodes: None, state: Vec::new() }
    }

    fn filter(&self, pod: &PodInfo, _cycle: &(), node: &NodeInfo) -> Status {
        if node.unschedulable && !tolerates_unschedulable(pod) {
            Status::unresolvable(REASON)
        } else {
            Status::success()
        }
    }
}

fn tolerates_unschedulable(pod: &PodInfo) -> bool {
    let taint = Taint { key: TAINT_KEY.to_owned(), value: String::new(), effect: TaintEffect::NoSchedule };
    pod.tolerations.iter().any(|toleration| toleration.tolerates(&taint))
}

capstan_plugin_sdk::scheduler_plugin!(NodeUnschedulable);

#[cfg(test)]
mod tests {
    use super::{NodeInfo, NodeUnschedulable, PodInfo, SchedulerPlugin, TAINT_KEY, TaintEffect};
    use capstan_plugin_sdk::scheduler::Toleration;

    fn toleration(key: &str, exists: bool, effect: Option<TaintEffect>) -> Toleration {
        Toleration { key: key.to_owned(), exists, value: String::new(), effect }
    }

    #[test]
    fn cordoned_nodes_fit_only_tolerating_pods() {
        let cases = [
            (false, vec![], true),
            (true, vec![], false),
            (true, vec![toleration(TAINT_KEY, true, Some(TaintEffect::NoSchedule))], true),
            (true, vec![toleration(TAINT_KEY, true, None)], true),
            (true, vec![toleration("", true, None)], true),
            (true, vec![toleration(TAINT_KEY, true, Some(TaintEffect::NoExecute))], false),
            (true, vec![toleration("other", true, None)], false),
        ];
        for (cordoned, tolerations, fits) in cases {
            let mut node = NodeInfo::named(1, "n1");
            node.unschedulable = cordoned;
            let mut pod = PodInfo::named("default", "p");
            pod.tolerations = tolerations.clone();
            assert_eq!(NodeUnschedulable.filter(&pod, &(), &node).is_success(), fits, "{cordoned} {tolerations:?}");
        }
    }
}
