//! The scheduling queue, as kube-scheduler has it: an active queue ordered by the QueueSort
//! plugin's key (then arrival), a backoff queue where failed pods wait an exponentially growing
//! time, and an unschedulable set whose pods go back once a cluster event could make them fit
//! (or after [`MAX_UNSCHEDULABLE`]). A pod with `spec.schedulingGates` is held aside, never
//! attempted, until an update removes its last gate (upstream's `SchedulingGates` `PreEnqueue`
//! plugin).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_wasm::scheduler::PodSnapshot;
use k8s_openapi::api::core::v1::Pod;

/// A failed pod's first backoff (`podInitialBackoffSeconds`).
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The longest backoff (`podMaxBackoffSeconds`).
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long an unschedulable pod waits for an event before it is retried anyway.
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_mins(5);

/// A pod waiting to be scheduled.
#[derive(Clone, Debug)]
pub struct QueuedPod {
    /// The pod.
    pub pod: Arc<Pod>,
    /// Its QueueSort key (higher first).
    pub sort_key: i64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The pod as plugins see it, when this version of it was described already (for
    /// QueueSort as it was queued); the cycle then reuses that under a new token.
    pub described: Option<PodSnapshot>,
}

#[derive(Debug)]
enum Place {
    Active,
    Backoff(Instant),
    Unschedulable(Instant),
    /// Popped and being scheduled: updates are kept, the pod is not queued twice.
    InFlight,
    /// Held by scheduling gates: not attempted until an update removes them.
    Gated,
}

#[derive(Debug)]
struct Entry {
    pod: QueuedPod,
    place: Place,
    /// Arrival order among equal keys.
    seq: u64,
}

impl Entry {
    /// When a waiting entry goes back to the active queue; `None` when it is not waiting.
    fn due_at(&self) -> Option<Instant> {
        match self.place {
            Place::Backoff(at) => Some(at),
            Place::Unschedulable(since) => Some(since + MAX_UNSCHEDULABLE),
            Place::Active | Place::InFlight | Place::Gated => None,
        }
    }
}

#[derive(PartialEq, Eq)]
struct HeapItem {
    sort_key: i64,
    seq: u64,
    key: String,
}

impl Ord for HeapItem {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sort_key.cmp(&other.sort_key).then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for HeapItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The scheduling queue.
#[derive(Default)]
pub struct SchedulingQueue {
    entries: HashMap<String, Entry>,
    active: BinaryHeap<HeapItem>,
    /// The keys in backoff or unschedulable: what a flush looks at, so a cycle does not visit
    /// every queued pod.
    waiting: HashSet<String>,
    next_seq: u64,
}

/// The backoff after `attempts` failures: 1 s doubled per further failure, at most 10 s.
#[must_use]
pub fn backoff(attempts: u32) -> Duration {
    let shift = attempts.saturating_sub(1).min(16);
    INITIAL_BACKOFF.saturating_mul(1 << shift).min(MAX_BACKOFF)
}

/// Whether `pod` still has scheduling gates (`spec.schedulingGates`), which keep it from being
/// scheduled at all.
fn gated(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|spec| spec.scheduling_gates.as_ref()).is_some_and(|gates| !gates.is_empty())
}

/// Whether an update of `old` to `new` may change where the pod fits: anything but its status,
/// resourceVersion, generation, managedFields and finalizers (kube-scheduler's `isPodUpdated`).
fn scheduling_relevant_change(old: &Pod, new: &Pod) -> bool {
    let stripped = |pod: &Pod| {
        let mut meta = pod.metadata.clone();
        meta.resource_version = None;
        meta.generation = None;
        meta.managed_fields = None;
        meta.finalizers = None;
        meta
    };
    old.spec != new.spec || stripped(old) != stripped(new)
}

impl SchedulingQueue {
    /// Adds a new pod, or updates a queued one (keeping its place and attempts). An update of
    /// an unschedulable pod moves it to backoff/active, as its spec may now fit, unless only
    /// its status or bookkeeping changed: the scheduler's own `PodScheduled` condition and
    /// `nominatedNodeName` must not send a pod that cannot fit straight back into a cycle.
    /// `described` is the pod as plugins see it, if already built for this version of it.
    /// A gated pod is held aside; the update that removes its last gate makes it active.
    pub fn add_or_update(&mut self, key: &str, pod: Arc<Pod>, sort_key: i64, described: Option<PodSnapshot>) {
        let gated = gated(&pod);
        if let Some(entry) = self.entries.get_mut(key) {
            let changed = scheduling_relevant_change(&entry.pod.pod, &pod);
            entry.pod.pod = pod;
            entry.pod.sort_key = sort_key;
            entry.pod.described = described;
            match entry.place {
                Place::InFlight => {}
                _ if gated => {
                    entry.place = Place::Gated;
                    self.waiting.remove(key);
                }
                Place::Gated => {
                    entry.place = Place::Active;
                    self.active.push(HeapItem { sort_key, seq: entry.seq, key: key.to_owned() });
                }
                Place::Unschedulable(_) if changed => {
                    entry.place = Place::Backoff(Instant::now() + backoff(entry.pod.attempts));
                }
                Place::Active | Place::Backoff(_) | Place::Unschedulable(_) => {}
            }
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let place = if gated { Place::Gated } else { Place::Active };
        let entry = Entry { pod: QueuedPod { pod, sort_key, attempts: 0, described }, place, seq };
        if !gated {
            self.active.push(HeapItem { sort_key, seq, key: key.to_owned() });
        }
        self.entries.insert(key.to_owned(), entry);
    }

    /// Replaces a queued pod's object without moving it (the scheduler's own view of it, e.g.
    /// the node a preemption nominated before its status says so).
    pub fn set_pod(&mut self, key: &str, pod: Arc<Pod>) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.pod.pod = pod;
            entry.pod.described = None;
        }
    }

    /// Forgets a pod (deleted, or bound by someone else).
    pub fn remove(&mut self, key: &str) {
        self.entries.remove(key);
        self.waiting.remove(key);
    }

    /// Whether the queue knows `key`.
    #[must_use]
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Moves backed-off pods whose time is up (and long-unschedulable ones) to the active queue.
    pub fn flush(&mut self, now: Instant) {
        let due: Vec<String> = self
            .waiting
            .iter()
            .filter(|key| self.entries.get(key.as_str()).and_then(Entry::due_at).is_none_or(|at| at <= now))
            .cloned()
            .collect();
        for key in due {
            self.waiting.remove(&key);
            let Some(entry) = self.entries.get_mut(&key) else { continue };
            if entry.due_at().is_some() {
                entry.place = Place::Active;
                self.active.push(HeapItem { sort_key: entry.pod.sort_key, seq: entry.seq, key });
            }
        }
    }

    /// A cluster event happened that may make unschedulable pods fit: they move to backoff (or
    /// active, if their backoff already passed).
    pub fn move_all_to_active_or_backoff(&mut self, now: Instant) {
        for key in &self.waiting {
            if let Some(entry) = self.entries.get_mut(key)
                && let Place::Unschedulable(since) = entry.place
            {
                entry.place = Place::Backoff(since + backoff(entry.pod.attempts));
            }
        }
        self.flush(now);
    }

    /// Takes the next pod to schedule: the highest key, earliest arrival.
    pub fn pop(&mut self) -> Option<QueuedPod> {
        while let Some(item) = self.active.pop() {
            let Some(entry) = self.entries.get_mut(&item.key) else { continue };
            if matches!(entry.place, Place::Active) && entry.seq == item.seq {
                entry.place = Place::InFlight;
                return Some(entry.pod.clone());
            }
        }
        None
    }

    /// The cycle for `key` failed: it waits in backoff (`unschedulable` false, an error) or until
    /// a cluster event (`unschedulable` true); or, if an update during the cycle gave it gates
    /// (as only an admission plugin could), until they are removed.
    pub fn requeue(&mut self, key: &str, unschedulable: bool, now: Instant) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.pod.attempts += 1;
            if gated(&entry.pod.pod) {
                entry.place = Place::Gated;
                return;
            }
            entry.place = if unschedulable {
                Place::Unschedulable(now)
            } else {
                Place::Backoff(now + backoff(entry.pod.attempts))
            };
            self.waiting.insert(key.to_owned());
        }
    }

    /// The cycle for `key` picked a node: it leaves the queue.
    pub fn done(&mut self, key: &str) {
        self.remove(key);
    }

    /// When the next backed-off pod is due, if any.
    #[must_use]
    pub fn next_due(&self) -> Option<Instant> {
        self.waiting.iter().filter_map(|key| self.entries.get(key)?.due_at()).min()
    }

    /// How many pods wait in the active queue.
    #[must_use]
    pub fn active_len(&self) -> usize {
        self.entries.values().filter(|e| matches!(e.place, Place::Active)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::{SchedulingQueue, backoff};
    use capstan_wasm::scheduler::PodSnapshot;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn pod() -> Arc<k8s_openapi::api::core::v1::Pod> {
        Arc::new(k8s_openapi::api::core::v1::Pod::default())
    }

    #[test]
    fn higher_keys_first_then_arrival_order() {
        let mut queue = SchedulingQueue::default();
        for (name, key) in [("low", 0), ("high", 100), ("low2", 0), ("high2", 100)] {
            queue.add_or_update(name, pod(), key, None);
        }
        let order: Vec<_> = std::iter::from_fn(|| queue.pop()).map(|p| p.sort_key).collect();
        assert_eq!(order, [100, 100, 0, 0]);
        let mut queue = SchedulingQueue::default();
        queue.add_or_update("a", pod(), 0, None);
        queue.add_or_update("b", pod(), 0, None);
        assert!(queue.pop().is_some_and(|p| p.sort_key == 0));
        assert_eq!(queue.active_len(), 1);
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let seconds: Vec<u64> = (1..=6).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(seconds, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn unschedulable_pods_return_after_a_cluster_event() {
        let mut queue = SchedulingQueue::default();
        let now = Instant::now();
        queue.add_or_update("a", pod(), 0, None);
        assert!(queue.pop().is_some());
        queue.requeue("a", true, now);
        queue.flush(now + Duration::from_mins(1));
        assert!(queue.pop().is_none(), "no event, no retry before the unschedulable timeout");
        queue.move_all_to_active_or_backoff(now + Duration::from_mins(1));
        assert!(queue.pop().is_some(), "a node event sends it back once its backoff passed");
        queue.requeue("a", false, now);
        assert!(queue.pop().is_none(), "an error waits out its backoff");
        queue.flush(now + Duration::from_secs(3));
        assert!(queue.pop().is_some());
    }

    #[test]
    fn a_queued_description_is_kept_only_for_the_version_it_describes() {
        let described = |d: &Option<PodSnapshot>| d.as_ref().map(PodSnapshot::token);
        let pending = pod();
        let snapshot = crate::pod::pod_info(&pending).ok();
        let token = snapshot.as_ref().map(PodSnapshot::token);
        assert!(token.is_some());
        let mut queue = SchedulingQueue::default();
        queue.add_or_update("a", Arc::clone(&pending), 0, snapshot);
        let queued = queue.pop().map(|q| q.described);
        assert_eq!(queued.as_ref().map(described), Some(token), "the pod as described when queued");
        // A renewed description is the same pod (shared, not described again) under a new token.
        let first = queued.flatten();
        let renewed = first.as_ref().map(PodSnapshot::renewed);
        assert!(first.zip(renewed).is_some_and(|(f, r)| f.token() != r.token() && std::ptr::eq(f.info(), r.info())));
        // The scheduler's own change of the queued object (a nomination) drops it, as does an
        // update that comes without one.
        queue.requeue("a", false, Instant::now());
        queue.set_pod("a", pod());
        queue.flush(Instant::now() + Duration::from_mins(1));
        assert_eq!(queue.pop().map(|q| described(&q.described)), Some(None));
        queue.requeue("a", false, Instant::now());
        queue.add_or_update("a", pod(), 0, crate::pod::pod_info(&pending).ok());
        queue.add_or_update("a", pod(), 0, None);
        queue.flush(Instant::now() + Duration::from_mins(1));
        assert_eq!(queue.pop().map(|q| described(&q.described)), Some(None));
    }

    #[test]
    fn only_a_spec_or_metadata_change_sends_an_unschedulable_pod_back() {
        let mut queue = SchedulingQueue::default();
        let now = Instant::now();
        let pending: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "resourceVersion": "1"},
            "spec": {"containers": [{"name": "c"}]},
        }))
        .unwrap_or_default();
        queue.add_or_update("a", Arc::new(pending.clone()), 0, None);
        assert!(queue.pop().is_some());
        queue.requeue("a", true, now);
        // What the scheduler itself writes after a failed cycle: a condition and a nomination.
        let mut reported = pending.clone();
        reported.metadata.resource_version = Some("2".into());
        reported.status = serde_json::from_value(serde_json::json!({
            "nominatedNodeName": "n", "conditions": [{"type": "PodScheduled", "status": "False"}]}))
        .ok();
        queue.add_or_update("a", Arc::new(reported.clone()), 0, None);
        queue.flush(now + Duration::from_mins(1));
        assert!(queue.pop().is_none(), "a status update alone does not retry the pod");
        let mut relabelled = reported;
        relabelled.metadata.labels = Some([("tier".to_owned(), "web".to_owned())].into());
        queue.add_or_update("a", Arc::new(relabelled), 0, None);
        queue.flush(now + Duration::from_mins(1));
        assert!(queue.pop().is_some(), "a label change may make it fit");
    }

    #[test]
    fn a_pod_removed_while_waiting_never_comes_back() {
        let mut queue = SchedulingQueue::default();
        let now = Instant::now();
        for key in ["gone", "kept"] {
            queue.add_or_update(key, pod(), 0, None);
        }
        while queue.pop().is_some() {}
        queue.requeue("gone", false, now);
        queue.requeue("kept", true, now);
        queue.remove("gone");
        assert_eq!(queue.next_due(), Some(now + super::MAX_UNSCHEDULABLE), "only the kept pod waits");
        queue.move_all_to_active_or_backoff(now + Duration::from_secs(3));
        let back: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(back.len(), 1, "the kept pod returns, the removed one does not");
        assert_eq!(queue.next_due(), None);
    }

    #[test]
    fn a_gated_pod_waits_until_its_last_gate_is_removed() {
        let with_gates = |gates: &[&str]| -> Arc<k8s_openapi::api::core::v1::Pod> {
            let gates: Vec<_> = gates.iter().map(|name| serde_json::json!({"name": name})).collect();
            let pod =
                serde_json::json!({"metadata": {"name": "g"}, "spec": {"containers": [], "schedulingGates": gates}});
            Arc::new(serde_json::from_value(pod).unwrap_or_default())
        };
        let mut queue = SchedulingQueue::default();
        let now = Instant::now();
        queue.add_or_update("gated", with_gates(&["example.com/a", "example.com/b"]), 0, None);
        queue.add_or_update("free", pod(), 0, None);
        assert_eq!(queue.pop().map(|p| p.pod.metadata.name.is_none()), Some(true), "only the ungated pod");
        assert!(queue.pop().is_none());
        queue.move_all_to_active_or_backoff(now + Duration::from_mins(10));
        queue.flush(now + Duration::from_mins(10));
        assert!(queue.pop().is_none(), "neither a cluster event nor time releases a gated pod");
        assert_eq!(queue.next_due(), None);
        queue.add_or_update("gated", with_gates(&["example.com/b"]), 0, None);
        assert!(queue.pop().is_none(), "one gate left still holds it");
        queue.add_or_update("gated", with_gates(&[]), 0, None);
        assert_eq!(queue.pop().and_then(|p| p.pod.metadata.name.clone()).as_deref(), Some("g"));
        // Gates that appear during a cycle hold the pod when the cycle hands it back.
        queue.add_or_update("gated", with_gates(&["example.com/c"]), 0, None);
        queue.requeue("gated", false, now);
        queue.flush(now + Duration::from_mins(1));
        assert!(queue.pop().is_none());
        queue.add_or_update("gated", with_gates(&[]), 0, None);
        assert!(queue.pop().is_some(), "released again once the gate goes");
        assert!(queue.pop().is_none(), "and queued once");
    }
}
