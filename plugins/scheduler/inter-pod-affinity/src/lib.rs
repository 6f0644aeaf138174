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
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use capstan_plugin_sdk::scheduler::selector::LabelSelector;
use capstan_plugin_sdk::scheduler::state::{decode, encode, same};
use capstan_plugin_sdk::scheduler::{
    ByValue, Code, DomainCounts, Domains, ExtensionPoints, Label, MAX_NODE_SCORE, Memo, NodeCache, NodeId, NodeInfo,
    NodeStatus, Nodes, PodInfo, PodSummary, PreFilterResult, SchedulerPlugin, Status, host, misfits,
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

/// Namespace labels, asked of the host once per namespace and call: what namespace selectors
/// match against.
#[derive(Default)]
pub struct Namespaces {
    labels: RefCell<HashMap<String, Rc<Vec<Label>>>>,
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
}

/// Existing pods' parsed affinity terms, per node, kept across cycles beside the node's
/// [`Nodes::revision`]: each cycle walks every pod carrying terms, and only the nodes whose pods
/// changed since are parsed again. In the order of `NodeInfo::pods` (see [`pod_terms`]).
pub type Affinities = NodeCache<(), Vec<Option<Affinity>>>;

/// `node`'s pods' terms; unparsable terms read as none, as the pod was admitted with them.
fn pod_terms(node: &NodeInfo) -> Vec<Option<Affinity>> {
    node.pods.iter().map(|p| p.affinity.as_deref().map(parse_or_none)).collect()
}

/// `node`'s pods beside their `terms`.
fn with_terms<'a>(
    node: &'a NodeInfo,
    terms: &'a [Option<Affinity>],
) -> impl Iterator<Item = (&'a PodSummary, Option<&'a Affinity>)> {
    node.pods.iter().zip(terms.iter().map(Option::as_ref).chain(std::iter::repeat(None)))
}

fn parse_or_none(json: &str) -> Affinity {
    parse_affinity(Some(json)).unwrap_or_default()
}

/// What one node's pods add to a cycle's tallies: (tally, topology key, number), the tallies
/// numbered by the caller and the keys by [`Kept::keys`].
type Adds = Vec<(usize, usize, i64)>;

/// Per node, what its pods add to PreFilter's or PreScore's tallies, kept across cycles beside the
/// node's revision for one way of matching (the incoming pod's namespace, labels and terms, and
/// its namespace's labels): pods of one workload match alike, so each cycle matches only the
/// pods of the nodes changed since the last one.
pub type Contributions = NodeCache<String, Adds>;

/// What the plugin keeps across cycles, per node.
#[derive(Default)]
pub struct Kept {
    /// Existing pods' parsed terms.
    pub affinities: Affinities,
    /// What PreFilter counted on each node.
    pub filtered: Contributions,
    /// What PreScore summed on each node.
    pub scored: Contributions,
    /// The topology keys [`Adds`] name, by number: summing compares no strings.
    keys: Mutex<Vec<String>>,
}

/// More topology keys than any real cluster uses: past it, the numbering starts over.
const MAX_KEYS: usize = 1024;

/// `tallies` tallies over every node's pods: `match_pod` says what each existing pod (beside its
/// parsed terms) adds to which tally. What a node adds is kept in `kept` under `way` (see
/// [`Contributions`]), or matched afresh when there is no `way` to key it by.
fn tally(
    nodes: &Nodes,
    kept: &Kept,
    (cache, way): (&Contributions, Option<String>),
    tallies: usize,
    match_pod: impl Fn(&PodSummary, Option<&Affinity>, &mut dyn FnMut(usize, &str, i64)),
) -> Vec<Tally> {
    let mut keys = kept.keys.lock().unwrap_or_else(PoisonError::into_inner);
    if keys.len() > MAX_KEYS {
        keys.clear();
        kept.filtered.clear();
        kept.scored.clear();
    }
    let keys = RefCell::new(keys);
    let mut out: Vec<Tally> = std::iter::repeat_with(Tally::default).take(tallies).collect();
    kept.affinities.with((), nodes, pod_terms, |terms| {
        let adds_of = |node: &NodeInfo| {
            let mut adds = Adds::new();
            let mut keys = keys.borrow_mut();
            for (existing, theirs) in terms.get(node.id).map(|t| with_terms(node, t)).into_iter().flatten() {
                match_pod(existing, theirs, &mut |slot, key, n| {
                    let key = keys.iter().position(|k| k == key).unwrap_or_else(|| {
                        keys.push(key.to_owned());
                        keys.len() - 1
                    });
                    match adds.iter_mut().find(|(s, k, _)| (*s, *k) == (slot, key)) {
                        Some(add) => add.2 += n,
                        None => adds.push((slot, key, n)),
                    }
                });
            }
            adds
        };
        // Per tally, per key number: where the key's counts are in the tally, once looked up.
        let mut at: Vec<Vec<Option<usize>>> = vec![Vec::new(); tallies];
        let mut sum = |id: NodeId, adds: &Adds| {
            for &(slot, key, n) in adds {
                let (tally, at) = (&mut out[slot], &mut at[slot]);
                if at.len() <= key {
                    at.resize(key + 1, None);
                }
                let i = *at[key].get_or_insert_with(|| tally.of_key(nodes, &keys.borrow()[key]));
                tally.0[i].add(id, n);
            }
        };
        let with_pods = || nodes.iter().filter(|n| !n.pods.is_empty());
        match way {
            Some(way) => cache.with(way, nodes, adds_of, |kept| {
                for node in with_pods() {
                    if let Some(adds) = kept.get(node.id) {
                        sum(node.id, adds);
                    }
                }
            }),
            None => with_pods().for_each(|node| sum(node.id, &adds_of(node))),
        }
    });
    out
}

/// The key of a way of matching: the incoming pod's namespace, labels and its namespace's labels
/// (what existing pods' terms match) and the terms it `wrote`; `None` when one of its `terms`
/// selects namespaces by label, since other namespaces' labels would then count too.
fn way_of_matching<'a>(
    pod: &PodInfo,
    namespaces: &Namespaces,
    mut terms: impl Iterator<Item = &'a Term>,
    wrote: impl std::fmt::Debug,
) -> Option<String> {
    if terms.any(|t| t.namespace_selector.is_some()) {
        return None;
    }
    let own = namespaces.labels(&pod.namespace);
    Some(format!("{} {:?} {own:?} {wrote:?}", pod.namespace, pod.labels))
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

/// Numbers per topology domain, by topology key, then value: matching pods for Filter, weights
/// for Score.
pub type PerDomain = BTreeMap<String, ByValue>;

/// What PreFilter counts over every node, for Filter.
#[derive(Default, Serialize, Deserialize)]
pub struct FilterState {
    /// Domains where an existing pod's required anti-affinity matches the incoming pod.
    pub existing_anti: PerDomain,
    /// Per required affinity term of the incoming pod: the domains holding pods it matches.
    pub affinity: Vec<PerDomain>,
    /// Domains holding pods that match one of the incoming pod's required anti-affinity terms.
    pub anti: PerDomain,
    /// Whether the incoming pod matches all of its own affinity terms (it may then start a domain).
    pub self_match: bool,
}

/// What PreScore sums per domain, for Score.
pub type ScoreState = PerDomain;

/// PreFilter's counts as this instance numbers the domains: what Filter reads. It is written as
/// the [`FilterState`] it stands for (the same fields), without copying the domains' values.
#[derive(Default, Serialize)]
pub struct Numbered {
    existing_anti: Tally,
    affinity: Vec<Tally>,
    anti: Tally,
    self_match: bool,
}

impl Numbered {
    /// The counts by domain value, as the cycle state carries them to other instances.
    fn values(&self) -> FilterState {
        FilterState {
            existing_anti: self.existing_anti.by_value(),
            affinity: self.affinity.iter().map(Tally::by_value).collect(),
            anti: self.anti.by_value(),
            self_match: self.self_match,
        }
    }

    fn from_values(nodes: &Nodes, state: &FilterState) -> Self {
        Self {
            existing_anti: Tally::from_values(nodes, &state.existing_anti),
            affinity: state.affinity.iter().map(|per_domain| Tally::from_values(nodes, per_domain)).collect(),
            anti: Tally::from_values(nodes, &state.anti),
            self_match: state.self_match,
        }
    }

    /// Whether its domains are still numbered as `nodes` number them (no node was added,
    /// relabelled or removed since it was made).
    fn current(&self, nodes: &Nodes) -> bool {
        let tallies = std::iter::once(&self.existing_anti).chain(&self.affinity).chain(std::iter::once(&self.anti));
        tallies.flat_map(|t| &t.0).all(|c| std::ptr::eq(c.domains(), nodes.domains(c.domains().key()).as_ref()))
    }
}

/// Filter's state in this instance: the values the cycle state carried and, once a Filter call
/// had the nodes at hand, the same counts numbered; or, when PreFilter made them here, the
/// numbered counts alone (their values are read off them when needed).
#[derive(Default)]
pub struct Decoded {
    values: OnceLock<FilterState>,
    numbered: OnceLock<Numbered>,
}

impl Decoded {
    /// The counts by domain value.
    pub fn values(&self) -> &FilterState {
        self.values.get_or_init(|| self.numbered.get().map(Numbered::values).unwrap_or_default())
    }

    /// Runs `f` with the counts numbered as `nodes` number domains: those kept when still
    /// current, else numbered from the values (and kept, the first time).
    fn with_numbered<R>(&self, nodes: &Nodes, f: impl FnOnce(&Numbered) -> R) -> R {
        match self.numbered.get() {
            Some(numbered) if numbered.current(nodes) => f(numbered),
            Some(_) => f(&Numbered::from_values(nodes, self.values())),
            None => f(self.numbered.get_or_init(|| Numbered::from_values(nodes, self.values()))),
        }
    }
}

/// [`PerDomain`] as this instance numbers the domains: one [`DomainCounts`] per topology key.
#[derive(Default)]
struct Tally(Vec<DomainCounts>);

/// Written as its [`Tally::by_value`] would be.
impl Serialize for Tally {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut counted: Vec<&DomainCounts> = self.0.iter().filter(|c| !c.is_empty()).collect();
        counted.sort_by(|a, b| a.domains().key().cmp(b.domains().key()));
        serializer.collect_map(counted.into_iter().map(|c| (c.domains().key(), c)))
    }
}

impl Tally {
    fn from_values(nodes: &Nodes, per_domain: &PerDomain) -> Self {
        Self(per_domain.iter().map(|(key, values)| DomainCounts::from_values(nodes, key, values)).collect())
    }

    /// Where the counts of `key` are, made empty if none were counted yet.
    fn of_key(&mut self, nodes: &Nodes, key: &str) -> usize {
        self.0.iter().position(|c| c.domains().key() == key).unwrap_or_else(|| {
            self.0.push(DomainCounts::new(nodes, key));
            self.0.len() - 1
        })
    }

    /// The counts of topology key `key`, if any domain of it was counted.
    fn get(&self, key: &str) -> Option<&DomainCounts> {
        self.0.iter().find(|c| c.domains().key() == key)
    }

    /// Whether any of node `id`'s domains was counted.
    fn any(&self, id: NodeId) -> bool {
        self.0.iter().any(|c| c.counted(id).is_some())
    }

    /// The sum of node `id`'s domains' numbers.
    fn sum(&self, id: NodeId) -> i64 {
        self.0.iter().filter_map(|c| c.counted(id)).sum()
    }

    fn by_value(&self) -> PerDomain {
        self.0.iter().filter(|c| !c.is_empty()).map(|c| (c.domains().key().to_owned(), c.by_value())).collect()
    }
}

/// The plugin's cycle data.
#[derive(Default)]
pub struct Cycle {
    /// The incoming pod's affinity.
    pub affinity: Affinity,
    /// PreFilter's counts, when decoding Filter's state.
    pub filter: Arc<Decoded>,
    /// PreScore's sums, when decoding Score's state.
    pub score: ScoreState,
}

/// The InterPodAffinity plugin.
pub struct InterPodAffinity {
    /// `hardPodAffinityWeight`: what an existing pod's *required* affinity term matching the
    /// incoming pod adds to scores (upstream default 1).
    pub hard_pod_affinity_weight: i64,
    /// Existing pods' parsed terms and what they added to tallies, per node, kept across cycles.
    pub kept: Kept,
    /// The last Filter state made or decoded, with its bytes: a cycle hands the same state to
    /// every Filter batch and to PreScore, and with thousands of domains decoding and numbering
    /// it costs far more than comparing the bytes. PreFilter leaves its own counts here, so
    /// Filter in the same instance neither decodes nor numbers them.
    decoded: Memo<Vec<u8>, Decoded>,
}

impl InterPodAffinity {
    /// The plugin with `hardPodAffinityWeight` = `weight`.
    #[must_use]
    pub fn new(weight: i64) -> Self {
        Self { hard_pod_affinity_weight: weight, kept: Kept::default(), decoded: Memo::default() }
    }

    fn filter_state(&self, state: &[u8]) -> Result<Arc<Decoded>, Status> {
        self.decoded.get_or_try(
            |bytes| same(bytes, state),
            || {
                let values: FilterState = decode(state)?.map(|(_, v)| v).unwrap_or_default();
                Ok((state.to_vec(), Decoded { values: OnceLock::from(values), numbered: OnceLock::new() }))
            },
        )
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

/// PreFilter's counting over every node.
#[must_use]
pub fn filter_state(
    pod: &PodInfo,
    affinity: &Affinity,
    nodes: &Nodes,
    namespaces: &Namespaces,
    kept: &Kept,
) -> Numbered {
    let incoming = Target { namespace: &pod.namespace, labels: &pod.labels };
    let required_affinity = affinity.pod_affinity.as_ref().map_or(&[][..], |a| &a.required[..]);
    let required_anti = affinity.pod_anti_affinity.as_ref().map_or(&[][..], |a| &a.required[..]);
    // Tallies: 0 existing pods' anti-affinity, 1 the pod's anti-affinity, 2.. its affinity terms.
    let wrote = (required_affinity, required_anti);
    let way = way_of_matching(pod, namespaces, required_affinity.iter().chain(required_anti), wrote);
    let mut tallies =
        tally(nodes, kept, (&kept.filtered, way), 2 + required_affinity.len(), |existing, theirs, add| {
            let target = Target { namespace: &existing.namespace, labels: &existing.labels };
            for term in theirs.and_then(|a| a.pod_anti_affinity.as_ref()).iter().flat_map(|a| &a.required) {
                if term.matches(&existing.namespace, &incoming, namespaces) {
                    add(0, &term.topology_key, 1);
                }
            }
            for term in required_anti {
                if term.matches(&pod.namespace, &target, namespaces) {
                    add(1, &term.topology_key, 1);
                }
            }
            for (i, term) in required_affinity.iter().enumerate() {
                if term.matches(&pod.namespace, &target, namespaces) {
                    add(2 + i, &term.topology_key, 1);
                }
            }
        });
    let per_term = tallies.split_off(2);
    let [existing_anti, anti] = <[Tally; 2]>::try_from(tallies).unwrap_or_default();
    Numbered {
        existing_anti,
        affinity: per_term,
        anti,
        self_match: required_affinity.iter().all(|t| t.matches(&pod.namespace, &incoming, namespaces)),
    }
}

/// Filter over the nodes `ids`, with upstream's codes and reasons.
#[must_use]
pub fn filter(affinity: &Affinity, state: &Numbered, nodes: &Nodes, ids: &[NodeId]) -> Vec<NodeStatus> {
    let required_affinity = affinity.pod_affinity.as_ref().map_or(&[][..], |a| &a.required[..]);
    let required_anti = affinity.pod_anti_affinity.as_ref().map_or(&[][..], |a| &a.required[..]);
    let no_pod_matches_anywhere = state.affinity.iter().all(|tally| tally.0.iter().all(DomainCounts::is_empty));
    // Once per batch: per required term, its key's domains and the counted ones.
    let affinity_terms: Vec<(Arc<Domains>, Option<&DomainCounts>)> = required_affinity
        .iter()
        .zip(&state.affinity)
        .map(|(term, counted)| (nodes.domains(&term.topology_key), counted.get(&term.topology_key)))
        .collect();
    let (anti, existing_anti) = (&state.anti, &state.existing_anti);
    let anti_terms: Vec<&DomainCounts> = required_anti.iter().filter_map(|term| anti.get(&term.topology_key)).collect();
    misfits(ids, |id| {
        let affinity_ok = affinity_terms.iter().all(|(domains, counted)| {
            domains.of_node(id).is_some()
                && (counted.is_some_and(|c| c.counted(id).is_some()) || (no_pod_matches_anywhere && state.self_match))
        });
        if !affinity_ok {
            return Status::unresolvable(AFFINITY_REASON);
        }
        if anti_terms.iter().any(|c| c.counted(id).is_some()) {
            return Status::unschedulable(ANTI_AFFINITY_REASON);
        }
        if existing_anti.any(id) {
            return Status::unschedulable(EXISTING_ANTI_AFFINITY_REASON);
        }
        Status::success()
    })
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
        let preferred = affinity.pod_affinity.as_ref().map_or(&[][..], |a| &a.preferred[..]);
        let preferred_anti = affinity.pod_anti_affinity.as_ref().map_or(&[][..], |a| &a.preferred[..]);
        let terms = preferred.iter().chain(preferred_anti).map(|w| &w.pod_affinity_term);
        let way = way_of_matching(pod, namespaces, terms, (preferred, preferred_anti));
        let kept = &self.kept;
        let tallies = tally(nodes, kept, (&kept.scored, way), 1, |existing, theirs, add| {
            let target = Target { namespace: &existing.namespace, labels: &existing.labels };
            for (terms, sign) in [(preferred, 1), (preferred_anti, -1)] {
                for w in terms {
                    if w.pod_affinity_term.matches(&pod.namespace, &target, namespaces) {
                        add(0, &w.pod_affinity_term.topology_key, sign * w.weight);
                    }
                }
            }
            let Some(theirs) = theirs else { return };
            if let Some(a) = &theirs.pod_affinity {
                for term in &a.required {
                    if self.hard_pod_affinity_weight > 0 && term.matches(&existing.namespace, &incoming, namespaces) {
                        add(0, &term.topology_key, self.hard_pod_affinity_weight);
                    }
                }
                for w in &a.preferred {
                    if w.pod_affinity_term.matches(&existing.namespace, &incoming, namespaces) {
                        add(0, &w.pod_affinity_term.topology_key, w.weight);
                    }
                }
            }
            for w in theirs.pod_anti_affinity.iter().flat_map(|a| &a.preferred) {
                if w.pod_affinity_term.matches(&existing.namespace, &incoming, namespaces) {
                    add(0, &w.pod_affinity_term.topology_key, -w.weight);
                }
            }
        });
        tallies.first().map(Tally::by_value).unwrap_or_default()
    }
}

/// Score over the nodes `ids`: the sums of the domains each belongs to.
#[must_use]
pub fn score(state: &ScoreState, nodes: &Nodes, ids: &[NodeId]) -> Vec<i64> {
    let sums = Tally::from_values(nodes, state);
    ids.iter().map(|&id| sums.sum(id)).collect()
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
        let numbered = filter_state(pod, &affinity, nodes, &Namespaces::default(), &self.kept);
        match encode(b'f', &numbered) {
            Ok(state) => {
                self.decoded
                    .set(state.clone(), Decoded { values: OnceLock::new(), numbered: OnceLock::from(numbered) });
                PreFilterResult { status: Status::success(), nodes: None, state }
            }
            Err(status) => PreFilterResult { status, nodes: None, state: Vec::new() },
        }
    }

    fn filter_batch(&self, _pod: &PodInfo, cycle: &Cycle, nodes: &Nodes, ids: &[NodeId]) -> Vec<NodeStatus> {
        cycle.filter.with_numbered(nodes, |numbered| filter(&cycle.affinity, numbered, nodes, ids))
    }

    fn pre_score(&self, pod: &PodInfo, cycle: &Cycle, _nodes: &[&NodeInfo], all: &Nodes) -> Result<Vec<u8>, Status> {
        if !has_terms(&cycle.affinity) && !any_existing_affinity(all) {
            // Nothing to weigh: Skip, as upstream, so Score is not called.
            return Err(Status::skip());
        }
        encode(b's', &self.score_state(pod, &cycle.affinity, all, &Namespaces::default()))
    }

    fn score_batch(&self, _pod: &PodInfo, cycle: &Cycle, nodes: &Nodes, ids: &[NodeId]) -> Result<Vec<i64>, Status> {
        Ok(score(&cycle.score, nodes, ids))
    }

    fn normalize_score(&self, _pod: &PodInfo, _cycle: &Cycle, scores: &mut [i64]) -> Result<(), Status> {
        normalize(scores);
        Ok(())
    }
}

capstan_plugin_sdk::scheduler_plugin!(InterPodAffinity);

#[cfg(test)]
mod tests;
