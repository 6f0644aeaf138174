//! TaintToleration (Filter, Score): a node with a `NoSchedule` or `NoExecute` taint the pod
//! does not tolerate is filtered out; among the rest, nodes with fewer untolerated
//! `PreferNoSchedule` taints score higher (Kubernetes docs, "Taints and Tolerations").

use capstan_plugin_sdk::scheduler::{
    ExtensionPoints, NodeInfo, Nodes, PodInfo, PreFilterResult, SchedulerPlugin, Status, Taint, TaintEffect,
    Toleration, normalize_to_max,
};

/// The TaintToleration plugin.
pub struct TaintToleration;

impl SchedulerPlugin for TaintToleration {
    type Cycle = ();

    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn cycle(&self, _pod: &PodInfo, _state: &[u8]) -> Result<(), Status> {
        Ok(())
    }

    fn extension_points(&self) -> ExtensionPoints {
        ExtensionPoints::PRE_FILTER
            | ExtensionPoints::FILTER
            | ExtensionPoints::PRE_SCORE
            | ExtensionPoints::SCORE
            | ExtensionPoints::NORMALIZE_SCORE
    }

    /// Nothing to check when no node has a `NoSchedule` or `NoExecute` taint.
    fn pre_filter(&self, _pod: &PodInfo, nodes: &Nodes) -> PreFilterResult {
        let status = if nodes.tainted() == 0 { Status::skip() } else { Status::success() };
        PreFilterResult { status, nodes: None, state: Vec::new() }
    }

    /// Every node scores alike when none of them has a `PreferNoSchedule` taint: Skip.
    fn pre_score(&self, _pod: &PodInfo, _cycle: &(), nodes: &[&NodeInfo], _all: &Nodes) -> Result<Vec<u8>, Status> {
        let preferring = nodes.iter().any(|n| n.taints.iter().any(|t| t.effect == TaintEffect::PreferNoSchedule));
        if preferring { Ok(Vec::new()) } else { Err(Status::skip()) }
    }

    fn filter(&self, pod: &PodInfo, _cycle: &(), node: &NodeInfo) -> Status {
        match first_untolerated(&node.taints, &pod.tolerations) {
            Some(taint) => {
                Status::unresolvable(format!("node(s) had untolerated taint {{{}: {}}}", taint.key, taint.value))
            }
            None => Status::success(),
        }
    }

    fn score(&self, pod: &PodInfo, _cycle: &(), node: &NodeInfo) -> Result<i64, Status> {
        Ok(count_intolerable_prefer_no_schedule(&node.taints, &pod.tolerations))
    }

    fn normalize_score(&self, _pod: &PodInfo, _cycle: &(), scores: &mut [i64]) -> Result<(), Status> {
        normalize_to_max(scores, true);
        Ok(())
    }
}

/// The first `NoSchedule`/`NoExecute` taint no toleration tolerates.
#[must_use]
pub fn first_untolerated<'a>(taints: &'a [Taint], tolerations: &[Toleration]) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| matches!(t.effect, TaintEffect::NoSchedule | TaintEffect::NoExecute))
        .find(|taint| !tolerations.iter().any(|toleration| toleration.tolerates(taint)))
}

/// How many `PreferNoSchedule` taints the pod's `PreferNoSchedule` (or effect-less)
/// tolerations leave untolerated.
#[must_use]
pub fn count_intolerable_prefer_no_schedule(taints: &[Taint], tolerations: &[Toleration]) -> i64 {
    let relevant: Vec<&Toleration> =
        tolerations.iter().filter(|t| matches!(t.effect, None | Some(TaintEffect::PreferNoSchedule))).collect();
    taints
        .iter()
        .filter(|taint| taint.effect == TaintEffect::PreferNoSchedule)
        .filter(|taint| !relevant.iter().any(|toleration| toleration.tolerates(taint)))
        .count() as i64
}

capstan_plugin_sdk::scheduler_plugin!(TaintToleration);

#[cfg(test)]
mod tests {
    use super::{SchedulerPlugin, TaintToleration, count_intolerable_prefer_no_schedule, first_untolerated};
    use capstan_plugin_sdk::scheduler::{Taint, TaintEffect, Toleration};

    fn taint(key: &str, value: &str, effect: TaintEffect) -> Taint {
        Taint { key: key.to_owned(), value: value.to_owned(), effect }
    }

    fn equal(key: &str, value: &str, effect: Option<TaintEffect>) -> Toleration {
        Toleration { key: key.to_owned(), exists: false, value: value.to_owned(), effect }
    }

    fn exists(key: &str, effect: Option<TaintEffect>) -> Toleration {
        Toleration { key: key.to_owned(), exists: true, value: String::new(), effect }
    }

    /// The cases of the Kubernetes documentation "Taints and Tolerations": `key1=value1:NoSchedule`
    /// is tolerated by `Equal key1=value1 NoSchedule` and by `Exists key1 NoSchedule`; an empty
    /// key with `Exists` tolerates everything; an empty effect matches every effect.
    #[test]
    fn tolerations_match_as_documented() {
        let t = taint("key1", "value1", TaintEffect::NoSchedule);
        let cases = [
            (equal("key1", "value1", Some(TaintEffect::NoSchedule)), true),
            (exists("key1", Some(TaintEffect::NoSchedule)), true),
            (exists("", None), true),
            (equal("key1", "value1", None), true),
            (equal("key1", "value2", Some(TaintEffect::NoSchedule)), false),
            (equal("key1", "value1", Some(TaintEffect::NoExecute)), false),
            (exists("key2", None), false),
        ];
        for (toleration, tolerated) in cases {
            assert_eq!(toleration.tolerates(&t), tolerated, "{toleration:?}");
        }
    }

    #[test]
    fn filter_rejects_only_hard_untolerated_taints() {
        let taints = [taint("a", "1", TaintEffect::PreferNoSchedule), taint("b", "2", TaintEffect::NoExecute)];
        assert_eq!(first_untolerated(&taints, &[]).map(|t| t.key.as_str()), Some("b"));
        assert!(first_untolerated(&taints, &[exists("b", None)]).is_none());
        assert!(first_untolerated(&taints[..1], &[]).is_none(), "PreferNoSchedule never filters");
    }

    #[test]
    fn fewer_untolerated_soft_taints_score_higher() {
        let soft = |key: &str| taint(key, "", TaintEffect::PreferNoSchedule);
        let counts = [
            count_intolerable_prefer_no_schedule(&[], &[]),
            count_intolerable_prefer_no_schedule(&[soft("a")], &[]),
            count_intolerable_prefer_no_schedule(&[soft("a"), soft("b")], &[exists("a", None)]),
            count_intolerable_prefer_no_schedule(&[soft("a"), soft("b")], &[]),
        ];
        assert_eq!(counts, [0, 1, 1, 2]);
        let mut scores = counts.to_vec();
        let plugin = TaintToleration;
        let pod = capstan_plugin_sdk::scheduler::PodInfo::named("d", "p");
        assert!(plugin.normalize_score(&pod, &(), &mut scores).is_ok());
        assert_eq!(scores, [100, 50, 50, 0]);
    }
}

#[cfg(test)]
mod skip_tests {
    use super::{SchedulerPlugin, TaintToleration};
    use capstan_plugin_sdk::scheduler::{Code, NodeChange, NodeInfo, Nodes, PodInfo, Taint, TaintEffect};

    fn tainted(id: u32, effect: TaintEffect) -> NodeInfo {
        let mut node = NodeInfo::named(id, &format!("n{id}"));
        node.taints = vec![Taint { key: "k".to_owned(), value: String::new(), effect }];
        node
    }

    #[test]
    fn skips_only_while_no_node_has_a_taint_to_check() {
        let pod = PodInfo::named("default", "p");
        let mut nodes = Nodes::from_nodes([NodeInfo::named(0, "n0"), tainted(1, TaintEffect::PreferNoSchedule)]);
        assert_eq!(TaintToleration.pre_filter(&pod, &nodes).status.code, Code::Skip, "PreferNoSchedule only");
        nodes.apply(2, false, vec![NodeChange::Upsert(tainted(0, TaintEffect::NoSchedule))]);
        assert_eq!(nodes.tainted(), 1);
        assert_eq!(TaintToleration.pre_filter(&pod, &nodes).status.code, Code::Success);
        nodes.apply(3, false, vec![NodeChange::Remove(0)]);
        assert_eq!((nodes.tainted(), nodes.len()), (0, 1), "a removed node's taints stop counting");
        let plain = NodeInfo::named(5, "n5");
        let prefer = tainted(6, TaintEffect::PreferNoSchedule);
        assert!(TaintToleration.pre_score(&pod, &(), &[&plain], &nodes).is_err_and(|s| s.code == Code::Skip));
        assert!(TaintToleration.pre_score(&pod, &(), &[&plain, &prefer], &nodes).is_ok());
    }
}
