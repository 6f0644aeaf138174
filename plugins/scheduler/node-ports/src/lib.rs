//! NodePorts (Filter): a node fits only if none of the host ports the pod asks for is already
//! used there on an overlapping address (`0.0.0.0` or empty overlaps every address).

use capstan_plugin_sdk::scheduler::{
    ExtensionPoints, HostPort, NodeInfo, Nodes, PodInfo, PreFilterResult, SchedulerPlugin, Status,
};

/// Upstream's reason, shown in `FailedScheduling` events.
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

/// The NodePorts plugin.
pub struct NodePorts;

impl SchedulerPlugin for NodePorts {
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

    /// A pod without host ports has nothing to check: Skip, as upstream.
    fn pre_filter(&self, pod: &PodInfo, _nodes: &Nodes) -> PreFilterResult {
        let status = if pod.host_ports.is_empty() { Status::skip() } else { Status::success() };
        PreFilterResult { status, nodes: None, state: Vec::new() }
    }

    fn filter(&self, pod: &PodInfo, _cycle: &(), node: &NodeInfo) -> Status {
        let conflict = pod.host_ports.iter().any(|want| node.used_ports.iter().any(|used| conflicts(want, used)));
        if conflict { Status::unschedulable(REASON) } else { Status::success() }
    }
}

fn is_wildcard(ip: &str) -> bool {
    ip.is_empty() || ip == "0.0.0.0" || ip == "::"
}

fn protocol(p: &str) -> &str {
    if p.is_empty() { "TCP" } else { p }
}

/// Whether two host ports collide.
#[must_use]
pub fn conflicts(a: &HostPort, b: &HostPort) -> bool {
    a.port == b.port
        && protocol(&a.protocol) == protocol(&b.protocol)
        && (is_wildcard(&a.ip) || is_wildcard(&b.ip) || a.ip == b.ip)
}

capstan_plugin_sdk::scheduler_plugin!(NodePorts);

#[cfg(test)]
mod tests {
    use super::{HostPort, NodeInfo, NodePorts, PodInfo, SchedulerPlugin, conflicts};

    fn port(ip: &str, protocol: &str, port: u16) -> HostPort {
        HostPort { ip: ip.to_owned(), protocol: protocol.to_owned(), port }
    }

    #[test]
    fn overlapping_ports_conflict() {
        let cases = [
            (port("", "TCP", 80), port("", "TCP", 80), true),
            (port("", "TCP", 80), port("", "UDP", 80), false),
            (port("", "", 80), port("", "TCP", 80), true),
            (port("10.0.0.1", "TCP", 80), port("10.0.0.2", "TCP", 80), false),
            (port("10.0.0.1", "TCP", 80), port("0.0.0.0", "TCP", 80), true),
            (port("", "TCP", 80), port("", "TCP", 8080), false),
        ];
        for (a, b, expected) in cases {
            assert_eq!(conflicts(&a, &b), expected, "{a:?} {b:?}");
        }
    }

    #[test]
    fn a_node_using_the_port_does_not_fit() {
        let mut node = NodeInfo::named(1, "n1");
        node.used_ports = vec![port("", "TCP", 80)];
        let mut pod = PodInfo::named("d", "p");
        assert!(NodePorts.filter(&pod, &(), &node).is_success());
        pod.host_ports = vec![port("", "TCP", 80)];
        assert!(!NodePorts.filter(&pod, &(), &node).is_success());
    }
}
