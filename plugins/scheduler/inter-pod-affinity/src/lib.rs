//! InterPodAffinity (PreFilter, Filter, PreScore, Score, NormalizeScore): places a pod relative to
//! the pods already running, by their labels, within topology domains (a node label such as
//! `topology.kubernetes.io/zone`), as Kubernetes docs, "Assigning Pods to Nodes" → "Inter-pod
//! affinity and anti-affinity", describe:
//!
//! - required `podAffinity`: the node's domain must hold a pod matching every term (a pod whose
//!   terms match itself may start a domain when no pod matches anywhere yet);
//! - required `podAntiAffinity`: the node's domain must hold no pod matching a term;
//! - symmetry: a node is refused when an existing pod's required anti-affinity matches the
//!   incoming pod within that pod's domain;
//! - preferred terms (and existing pods' terms matching the incoming pod) add or subtract their
//!   weight for every node of the domain; scores are normalised min–max onto 0..=100.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};

use capstan_plugin_sdk::scheduler::selector::LabelSelector;
use capstan_plugin_sdk::scheduler::state::{decode, encode};
use capstan_plugin_sdk::scheduler::{
    Code, ExtensionPoints, Label, MAX_NODE_SCORE, NodeInfo, Nodes, PodInfo, PreFilterResult, SchedulerPlugin, Status,
    host,
};
use serde::{Deserialize, Serialize};

/// Upstream's reason when no domain holds the pods the pod's affinity asks for.
pub const AFFINITY_REASON: &str = "node(s) didn't match pod affinity rules";
/// Upstream's reason when the domain holds a pod the pod's anti-affinity refuses.
pub const ANTI_AFFINITY_REASON: &str = "node(s) didn't match pod anti-affinity rules";
/// Upstream's reason when an existing pod's anti-affinity refuses the pod.
pub const EXISTING_ANTI_AFFINITY_REASON: &str = "node(s) didn't satisfy existing pods anti-affinity rules";

/// `spec.affinity`, the parts this plugin reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Affinity {
    /// `podAffinity`.
    #[serde(default)]
    pub pod_affinity: Option<Terms>,
    /// `podAntiAffinity`.
    #[serde(default)]
    pub pod_anti_affinity: Option<Terms>,
}

/// The required and preferred terms of `podAffinity` or `podAntiAffinity`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Terms {
    /// Terms that must hold.
    #[serde(default, rename = "requiredDuringSchedulingIgnoredDuringExecution")]
    pub required: Vec<Term>,
    /// Terms that add their weight when they hold.
    #[serde(default, rename = "preferredDuringSchedulingIgnoredDuringExecution")]
    pub preferred: Vec<WeightedTerm>,
}

/// A `PodAffinityTerm`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Term {
    /// The pods it is about; absent selects none.
    #[serde(default)]
    pub label_selector: Option<LabelSelector>,
    /// Namespaces to look in; with no selector either, the term owner's namespace.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Namespaces to look in by label; `{}` is every namespace.
    #[serde(default)]
    pub namespace_selector: Option<LabelSelector>,
    /// The node label whose value is a domain.
    #[serde(default)]
    pub topology_key: String,
}

/// A `WeightedPodAffinityTerm`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedTerm {
    /// 1..=100.
    pub weight: i64,
    /// The term.
    pub pod_affinity_term: Term,
}

/// What one call looks up again and again: namespace labels (asked of the host once per
/// namespace) and existing pods' affinity terms (parsed once per distinct JSON text: the pods of
/// one workload share it, so a cycle over thousands of pods parses it once).
#[derive(Default)]
pub struct Namespaces {
    labels: RefCell<HashMap<String, Rc<Vec<Label>>>>,
    affinities: RefCell<HashMap<String, Rc<Affinity>>>,
}

impl Namespaces {
    fn labels(&self, name: &str) -> Rc<Vec<Label>> {
        let mut labels = self.labels.borrow_mut();
        if let Some(known) = labels.get(name) {
            return Rc::clone(known);
        }
        let fresh = Rc::new(host::get().namespace_labels(name).unwrap_or_default());
        labels.insert(name.to_owned(), Rc::clone(&fresh));
        fresh
    }

    /// The parsed `spec.affinity` of an existing pod (its JSON text); unparsable text reads as
    /// no terms, as the pod was admitted with it.
    fn affinity(&self, json: &str) -> Rc<Affinity> {
        let mut parsed = self.affinities.borrow_mut();
        if let Some(known) = parsed.get(json) {
            return Rc::clone(known);
        }
        let fresh = Rc::new(parse_affinity(Some(json)).unwrap_or_default());
        parsed.insert(json.to_owned(), Rc::clone(&fresh));
        fresh
    }
}

/// A pod as a term is matched against: namespace and labels.
pub struct Target<'a> {
    /// Its namespace.
    pub namespace: &'a str,
    /// Its labels.
    pub labels: &'a [Label],
}

impl Term {
    /// Whether `target` is a pod this term (written by a pod in `owner_namespace`) is about.
    #[must_use]
    pub fn matches(&self, owner_namespace: &str, target: &Target<'_>, namespaces: &Namespaces) -> bool {
        let Some(selector) = &self.label_selector else { return false };
        let namespace_ok = if self.namespaces.is_empty() && self.namespace_selector.is_none() {
            target.namespace == owner_namespace
        } else {
            self.namespaces.iter().any(|n| n == target.namespace)
                || self.namespace_selector.as_ref().is_some_and(|s| s.matches(&namespaces.labels(target.namespace)))
        };
        namespace_ok && selector.matches(target.labels)
    }
}

fn parse_affinity(json: Option<&str>) -> Result<Affinity, Status> {
    json.map_or_else(
        || Ok(Affinity::default()),
        |json| serde_json::from_str(json).map_err(|e| Status::error(format!("spec.affinity: {e}"))),
    )
}

/// A topology domain: (topology key, value).
type Domain = (String, String);

/// What PreFilter counts over every node, for Filter.
#[derive(Default, Serialize, Deserialize)]
pub struct FilterState {
    /// Domains where an existing pod's required anti-affinity matches the incoming pod.
    pub existing_anti: Vec<Domain>,
    /// Domains holding pods that match the incoming pod's required affinity terms, per term.
    pub affinity: Vec<Vec<Domain>>,
    /// Domains holding pods that match one of the incoming pod's required anti-affinity terms.
    pub anti: Vec<Domain>,
    /// Whether the incoming pod matches all of its own affinity terms (it may then start a domain).
    pub self_match: bool,
}

/// What PreScore sums per domain, for Score: topology key → value → score.
pub type ScoreState = BTreeMap<String, BTreeMap<String, i64>>;

/// The plugin's cycle data.
#[derive(Default)]
pub struct Cycle {
    /// The incoming pod's affinity.
    pub affinity: Affinity,
    /// PreFilter's counts, when decoding Filter's state.
    pub filter: Arc<FilterState>,
    /// PreScore's sums, when decoding Score's state.
    pub score: ScoreState,
}

/// The InterPodAffinity plugin.
pub struct InterPodAffinity {
    /// `hardPodAffinityWeight`: what an existing pod's *required* affinity term matching the
    /// incoming pod adds to scores (upstream default 1).
    pub hard_pod_affinity_weight: i64,
    /// The last Filter state decoded, with its bytes: a cycle hands the same state to every
    /// Filter batch and to PreScore, and with thousands of domains decoding it costs far more
    /// than comparing the bytes.
    decoded: Mutex<Option<(Vec<u8>, Arc<FilterState>)>>,
}

impl InterPodAffinity {
    /// The plugin with `hardPodAffinityWeight` = `weight`.
    #[must_use]
    pub fn new(weight: i64) -> Self {
        Self { hard_pod_affinity_weight: weight, decoded: Mutex::new(None) }
    }

    fn filter_state(&self, state: &[u8]) -> Result<Arc<FilterState>, Status> {
        let mut decoded = self.decoded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((bytes, known)) = decoded.as_ref()
            && bytes[..] == *state
        {
            return Ok(Arc::clone(known));
        }
        let fresh: Arc<FilterState> = Arc::new(decode(state)?.map(|(_, v)| v).unwrap_or_default());
        *decoded = Some((state.to_vec(), Arc::clone(&fresh)));
        Ok(fresh)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Args {
    #[serde(default = "one")]
    hard_pod_affinity_weight: i64,
}

fn one() -> i64 {
    1
}

fn domain(node: &NodeInfo, key: &str) -> Option<Domain> {
    node.label(key).map(|value| (key.to_owned(), value.to_owned()))
}

/// PreFilter's counting over every node.
#[must_use]
pub fn filter_state(pod: &PodInfo, affinity: &Affinity, nodes: &Nodes, namespaces: &Namespaces) -> FilterState {
    let incoming = Target { namespace: &pod.namespace, labels: &pod.labels };
    let required_affinity = affinity.pod_affinity.as_ref().map_or(&[][..], |a| &a.required[..]);
    let required_anti = affinity.pod_anti_affinity.as_ref().map_or(&[][..], |a| &a.required[..]);
    let mut state = FilterState {
        affinity: vec![Vec::new(); required_affinity.len()],
        self_match: required_affinity.iter().all(|t| t.matches(&pod.namespace, &incoming, namespaces)),
        ..FilterState::default()
    };
    for node in nodes.iter() {
        for existing in &node.pods {
            let target = Target { namespace: &existing.namespace, labels: &existing.labels };
            if let Some(json) = &existing.affinity {
                let theirs = namespaces.affinity(json);
                for term in theirs.pod_anti_affinity.iter().flat_map(|a| &a.required) {
                    if term.matches(&existing.namespace, &incoming, namespaces)
                        && let Some(d) = domain(node, &term.topology_key)
                    {
                        state.existing_anti.push(d);
                    }
                }
            }
            for (i, term) in required_affinity.iter().enumerate() {
                if term.matches(&pod.namespace, &target, namespaces)
                    && let Some(d) = domain(node, &term.topology_key)
                {
                    state.affinity[i].push(d);
                }
            }
            for term in required_anti {
                if term.matches(&pod.namespace, &target, namespaces)
                    && let Some(d) = domain(node, &term.topology_key)
                {
                    state.anti.push(d);
                }
            }
        }
    }
    for list in [&mut state.existing_anti, &mut state.anti].into_iter().chain(state.affinity.iter_mut()) {
        list.sort();
        list.dedup();
    }
    state
}

/// Whether the node's domain for `key` is among `domains` (sorted, as PreFilter leaves them).
fn holds(domains: &[Domain], node: &NodeInfo, key: &str) -> bool {
    node.label(key)
        .is_some_and(|value| domains.binary_search_by(|(k, v)| (k.as_str(), v.as_str()).cmp(&(key, value))).is_ok())
}

/// Whether the node lies in one of `domains` (sorted), whatever their keys: one lookup per
/// distinct key rather than one comparison per domain.
fn in_any(domains: &[Domain], node: &NodeInfo) -> bool {
    let mut rest = domains;
    while let Some((key, _)) = rest.first() {
        let end = rest.partition_point(|(k, _)| k == key);
        if holds(&rest[..end], node, key) {
            return true;
        }
        rest = &rest[end..];
    }
    false
}

/// Filter on one node, with upstream's codes and reasons.
#[must_use]
pub fn filter(affinity: &Affinity, state: &FilterState, node: &NodeInfo) -> Status {
    let required_affinity = affinity.pod_affinity.as_ref().map_or(&[][..], |a| &a.required[..]);
    let required_anti = affinity.pod_anti_affinity.as_ref().map_or(&[][..], |a| &a.required[..]);
    let no_pod_matches_anywhere = state.affinity.iter().all(Vec::is_empty);
    let affinity_ok = required_affinity.iter().zip(&state.affinity).all(|(term, domains)| {
        node.label(&term.topology_key).is_some()
            && (holds(domains, node, &term.topology_key) || (no_pod_matches_anywhere && state.self_match))
    });
    if !affinity_ok {
        return Status::unresolvable(AFFINITY_REASON);
    }
    if required_anti.iter().any(|term| holds(&state.anti, node, &term.topology_key)) {
        return Status::unschedulable(ANTI_AFFINITY_REASON);
    }
    if in_any(&state.existing_anti, node) {
        return Status::unschedulable(EXISTING_ANTI_AFFINITY_REASON);
    }
    Status::success()
}

impl InterPodAffinity {
    /// PreScore's sums over every node: the incoming pod's preferred terms, and existing pods'
    /// required (at `hardPodAffinityWeight`) and preferred terms that match the incoming pod.
    #[must_use]
    pub fn score_state(
        &self,
        pod: &PodInfo,
        affinity: &Affinity,
        nodes: &Nodes,
        namespaces: &Namespaces,
    ) -> ScoreState {
        let incoming = Target { namespace: &pod.namespace, labels: &pod.labels };
        let mut scores = ScoreState::new();
        let mut add = |node: &NodeInfo, key: &str, weight: i64| {
            if let Some(value) = node.label(key) {
                *scores.entry(key.to_owned()).or_default().entry(value.to_owned()).or_default() += weight;
            }
        };
        let preferred = affinity.pod_affinity.as_ref().map_or(&[][..], |a| &a.preferred[..]);
        let preferred_anti = affinity.pod_anti_affinity.as_ref().map_or(&[][..], |a| &a.preferred[..]);
        for node in nodes.iter() {
            for existing in &node.pods {
                let target = Target { namespace: &existing.namespace, labels: &existing.labels };
                for (terms, sign) in [(preferred, 1), (preferred_anti, -1)] {
                    for w in terms {
                        if w.pod_affinity_term.matches(&pod.namespace, &target, namespaces) {
                            add(node, &w.pod_affinity_term.topology_key, sign * w.weight);
                        }
                    }
                }
                let Some(json) = &existing.affinity else { continue };
                let theirs = namespaces.affinity(json);
                if let Some(a) = &theirs.pod_affinity {
                    for term in &a.required {
                        if self.hard_pod_affinity_weight > 0 && term.matches(&existing.namespace, &incoming, namespaces)
                        {
                            add(node, &term.topology_key, self.hard_pod_affinity_weight);
                        }
                    }
                    for w in &a.preferred {
                        if w.pod_affinity_term.matches(&existing.namespace, &incoming, namespaces) {
                            add(node, &w.pod_affinity_term.topology_key, w.weight);
                        }
                    }
                }
                for w in theirs.pod_anti_affinity.iter().flat_map(|a| &a.preferred) {
                    if w.pod_affinity_term.matches(&existing.namespace, &incoming, namespaces) {
                        add(node, &w.pod_affinity_term.topology_key, -w.weight);
                    }
                }
            }
        }
        scores
    }
}

/// A node's raw score: the sums of the domains it belongs to.
#[must_use]
pub fn score(state: &ScoreState, node: &NodeInfo) -> i64 {
    state.iter().filter_map(|(key, values)| values.get(node.label(key)?)).sum()
}

/// Upstream's min–max normalisation onto 0..=100 (all 0 when every score is equal).
pub fn normalize(scores: &mut [i64]) {
    let (min, max) = (scores.iter().copied().min().unwrap_or(0), scores.iter().copied().max().unwrap_or(0));
    for score in scores.iter_mut() {
        *score = if max > min { MAX_NODE_SCORE * (*score - min) / (max - min) } else { 0 };
    }
}

fn has_terms(affinity: &Affinity) -> bool {
    affinity.pod_affinity.is_some() || affinity.pod_anti_affinity.is_some()
}

fn any_existing_affinity(nodes: &Nodes) -> bool {
    nodes.pods_with_affinity() > 0
}

impl SchedulerPlugin for InterPodAffinity {
    type Cycle = Cycle;

    fn configure(config: &str) -> Result<Self, String> {
        let args: Args = capstan_plugin_sdk::scheduler::parse_config(config)?;
        if !(0..=100).contains(&args.hard_pod_affinity_weight) {
            return Err("hardPodAffinityWeight must be between 0 and 100".to_owned());
        }
        Ok(Self::new(args.hard_pod_affinity_weight))
    }

    fn cycle(&self, pod: &PodInfo, state: &[u8]) -> Result<Cycle, Status> {
        let affinity = parse_affinity(pod.affinity.as_deref())?;
        let mut cycle = Cycle { affinity, ..Cycle::default() };
        match state.split_first().map(|(tag, _)| *tag) {
            Some(b'f') => cycle.filter = self.filter_state(state)?,
            Some(_) => cycle.score = decode(state)?.map(|(_, v)| v).unwrap_or_default(),
            None => {}
        }
        Ok(cycle)
    }

    fn extension_points(&self) -> ExtensionPoints {
        ExtensionPoints::PRE_FILTER
            | ExtensionPoints::FILTER
            | ExtensionPoints::PRE_SCORE
            | ExtensionPoints::SCORE
            | ExtensionPoints::NORMALIZE_SCORE
    }

    /// Existing pods' affinity terms and labels are what it matches.
    fn wants_node_pods(&self) -> bool {
        true
    }

    fn pre_filter(&self, pod: &PodInfo, nodes: &Nodes) -> PreFilterResult {
        let skip = PreFilterResult { status: Status::new(Code::Skip, Vec::new()), nodes: None, state: Vec::new() };
        let affinity = match parse_affinity(pod.affinity.as_deref()) {
            Ok(affinity) => affinity,
            Err(status) => return PreFilterResult { status, nodes: None, state: Vec::new() },
        };
        let required = affinity.pod_affinity.as_ref().is_some_and(|a| !a.required.is_empty())
            || affinity.pod_anti_affinity.as_ref().is_some_and(|a| !a.required.is_empty());
        if !required && !any_existing_affinity(nodes) {
            return skip;
        }
        match encode(b'f', &filter_state(pod, &affinity, nodes, &Namespaces::default())) {
            Ok(state) => PreFilterResult { status: Status::success(), nodes: None, state },
            Err(status) => PreFilterResult { status, nodes: None, state: Vec::new() },
        }
    }

    fn filter(&self, _pod: &PodInfo, cycle: &Cycle, node: &NodeInfo) -> Status {
        filter(&cycle.affinity, &cycle.filter, node)
    }

    fn pre_score(&self, pod: &PodInfo, cycle: &Cycle, _nodes: &[&NodeInfo], all: &Nodes) -> Result<Vec<u8>, Status> {
        if !has_terms(&cycle.affinity) && !any_existing_affinity(all) {
            // Nothing to weigh: Skip, as upstream, so Score is not called.
            return Err(Status::skip());
        }
        encode(b's', &self.score_state(pod, &cycle.affinity, all, &Namespaces::default()))
    }

    fn score(&self, _pod: &PodInfo, cycle: &Cycle, node: &NodeInfo) -> Result<i64, Status> {
        Ok(score(&cycle.score, node))
    }

    fn normalize_score(&self, _pod: &PodInfo, _cycle: &Cycle, scores: &mut [i64]) -> Result<(), Status> {
        normalize(scores);
        Ok(())
    }
}

capstan_plugin_sdk::scheduler_plugin!(InterPodAffinity);

#[cfg(test)]
mod tests;
