//! Example scheduler plugin (Filter): only nodes carrying a configured label take pods. Pods
//! that fit nowhere stay Pending with a `FailedScheduling` event naming the plugin, and are
//! scheduled as soon as a node gets the label (`kubectl label node …`).
//!
//! Configuration: `{"label": "capstan.io/ready", "value": "true"}` (value optional: any value
//! matches).

use capstan_plugin_sdk::scheduler::{
    ExtensionPoints, NodeInfo, NodeLabel, PodInfo, SchedulerPlugin, Status, parse_config,
};

/// Filters out nodes without a label.
pub struct RequireNodeLabel {
    wanted: NodeLabel,
    /// The reason a filtered node gives, shown in `FailedScheduling` events.
    reason: String,
}

impl SchedulerPlugin for RequireNodeLabel {
    type Cycle = ();

    fn configure(config: &str) -> Result<Self, String> {
        let wanted: NodeLabel = parse_config(config)?;
        let reason = format!("node(s) lacked label {wanted} (require-node-label)");
        Ok(Self { wanted, reason })
    }

    fn cycle(&self, _pod: &PodInfo, _state: &[u8]) -> Result<(), Status> {
        Ok(())
    }

    fn extension_points(&self) -> ExtensionPoints {
        ExtensionPoints::FILTER
    }

    fn filter(&self, _pod: &PodInfo, _cycle: &(), node: &NodeInfo) -> Status {
        if self.wanted.matches(node) { Status::success() } else { Status::unresolvable(self.reason.clone()) }
    }
}

capstan_plugin_sdk::scheduler_plugin!(RequireNodeLabel);

#[cfg(test)]
mod tests {
    use super::{NodeInfo, PodInfo, RequireNodeLabel, SchedulerPlugin};
    use capstan_plugin_sdk::scheduler::labels;

    #[test]
    fn only_labelled_nodes_pass() {
        let exact =
            RequireNodeLabel::configure(r#"{"label": "ready", "value": "yes"}"#).unwrap_or_else(|e| panic!("{e}"));
        let any = RequireNodeLabel::configure(r#"{"label": "ready"}"#).unwrap_or_else(|e| panic!("{e}"));
        let cases = [
            (vec![("ready", "yes")], true, true),
            (vec![("ready", "no")], false, true),
            (vec![("other", "yes")], false, false),
            (vec![], false, false),
        ];
        for (pairs, exact_fits, any_fits) in cases {
            let mut node = NodeInfo::named(1, "n");
            node.labels = labels(&pairs);
            let pod = PodInfo::named("d", "p");
            assert_eq!(exact.filter(&pod, &(), &node).is_success(), exact_fits, "{pairs:?}");
            assert_eq!(any.filter(&pod, &(), &node).is_success(), any_fits, "{pairs:?}");
        }
        let refused = exact.filter(&PodInfo::named("d", "p"), &(), &NodeInfo::named(1, "n"));
        assert_eq!(refused.reasons, vec!["node(s) lacked label ready=yes (require-node-label)".to_owned()]);
        assert!(RequireNodeLabel::configure("{}").is_err(), "the label is required");
    }
}
