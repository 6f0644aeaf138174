//! Example scheduler plugin (Score): nodes carrying a configured label score 100, others 0.
//! With a high weight in its Plugin object it steers pods onto those nodes.
//!
//! Configuration: `{"label": "fast", "value": "true"}` (value optional: any value matches).

use capstan_plugin_sdk::scheduler::{
    ExtensionPoints, MAX_NODE_SCORE, NodeInfo, NodeLabel, PodInfo, SchedulerPlugin, Status, parse_config,
};

/// Prefers nodes with a label.
pub struct PreferNodeLabel {
    wanted: NodeLabel,
}

impl SchedulerPlugin for PreferNodeLabel {
    type Cycle = ();

    fn configure(config: &str) -> Result<Self, String> {
        Ok(Self { wanted: parse_config(config)? })
    }

    fn cycle(&self, _pod: &PodInfo, _state: &[u8]) -> Result<(), Status> {
        Ok(())
    }

    fn extension_points(&self) -> ExtensionPoints {
        ExtensionPoints::SCORE
    }

    fn score(&self, _pod: &PodInfo, _cycle: &(), node: &NodeInfo) -> Result<i64, Status> {
        Ok(if self.wanted.matches(node) { MAX_NODE_SCORE } else { 0 })
    }
}

capstan_plugin_sdk::scheduler_plugin!(PreferNodeLabel);

#[cfg(test)]
mod tests {
    use super::{NodeInfo, PodInfo, PreferNodeLabel, SchedulerPlugin};
    use capstan_plugin_sdk::scheduler::labels;

    #[test]
    fn labelled_nodes_score_highest() {
        let plugin =
            PreferNodeLabel::configure(r#"{"label": "fast", "value": "true"}"#).unwrap_or_else(|e| panic!("{e}"));
        let cases = [(vec![("fast", "true")], 100), (vec![("fast", "false")], 0), (vec![], 0)];
        for (pairs, expected) in cases {
            let mut node = NodeInfo::named(1, "n");
            node.labels = labels(&pairs);
            assert_eq!(plugin.score(&PodInfo::named("d", "p"), &(), &node).ok(), Some(expected), "{pairs:?}");
        }
        assert!(PreferNodeLabel::configure("{}").is_err(), "the label is required");
    }
}
