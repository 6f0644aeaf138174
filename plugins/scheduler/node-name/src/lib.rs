//! NodeName (Filter): a pod whose `spec.nodeName` is set fits only the node of that name.

use capstan_plugin_sdk::scheduler::{
    ExtensionPoints, NodeInfo, Nodes, PodInfo, PreFilterResult, SchedulerPlugin, Status,
};

/// Upstream's reason, shown in `FailedScheduling` events.
pub const REASON: &str = "node(s) didn't match the requested node name";

/// Filters by `spec.nodeName`.
pub struct NodeName;

impl SchedulerPlugin for NodeName {
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

    fn pre_filter(&self, pod: &PodInfo, _nodes: &Nodes) -> PreFilterResult {
        let named = pod.node_name.as_ref().is_some_and(|n| !n.is_empty());
        let status = if named { Status::success() } else { Status::skip() };
        PreFilterResult { status, nodes: None, state: Vec::new() }
    }

    fn filter(&self, pod: &PodInfo, _cycle: &(), node: &NodeInfo) -> Status {
        match &pod.node_name {
            Some(name) if !name.is_empty() && *name != node.name => Status::unresolvable(REASON),
            _ => Status::success(),
        }
    }
}

capstan_plugin_sdk::scheduler_plugin!(NodeName);

#[cfg(test)]
mod tests {
    use super::{NodeInfo, NodeName, PodInfo, SchedulerPlugin};

    #[test]
    fn only_the_named_node_fits() {
        let cases = [(None, true), (Some(""), true), (Some("n1"), true), (Some("n2"), false)];
        for (wanted, fits) in cases {
            let mut pod = PodInfo::named("default", "p");
            pod.node_name = wanted.map(str::to_owned);
            let status = NodeName.filter(&pod, &(), &NodeInfo::named(1, "n1"));
            assert_eq!(status.is_success(), fits, "{wanted:?}");
        }
    }
}
