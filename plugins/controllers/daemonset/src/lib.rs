//! The DaemonSet controller as a Capstan component, as Kubernetes documents `DaemonSets`: one
//! pod on every eligible node (`nodeSelector`, required node affinity, taints against the
//! pod's tolerations plus those DaemonSet pods get by default), each pinned to its node with a
//! `matchFields: metadata.name` node affinity and bound by the default scheduler. Nodes coming,
//! going or changing labels and taints re-evaluate every DaemonSet. `RollingUpdate` replaces
//! pods within `maxUnavailable` (or surges new ones first within `maxSurge`); `OnDelete` only
//! recreates what the user deleted. Templates are recorded as `ControllerRevisions`, so
//! `kubectl rollout status/history/undo` work.
//!
//! Start with [`reconcile`]; [`placement`] decides which nodes run a pod.

pub mod placement;

use std::collections::BTreeMap;

use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::revision::{self, History};
use capstan_plugin_sdk::controller::{
    Api, ApiError, Controller, DeleteOptions, EventType, GroupVersionKind, ListOptions, ObjectKey, ObjectRef,
    ReconcileResult, RelatedKind, Watches, meta, owned,
};
use serde_json::{Value, json};

use placement::Eligibility;

/// The label naming the revision (its hash) a DaemonSet pod and `ControllerRevision` belong to.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The deprecated label with the DaemonSet's generation a pod was made from.
const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

/// The DaemonSet controller.
pub struct DaemonSetController;

/// The DaemonSet kind.
#[must_use]
pub fn daemon_set() -> GroupVersionKind {
    GroupVersionKind::new("apps", "v1", "DaemonSet")
}

fn pod() -> GroupVersionKind {
    GroupVersionKind::new("", "v1", "Pod")
}

fn node() -> GroupVersionKind {
    GroupVersionKind::new("", "v1", "Node")
}

impl Controller for DaemonSetController {
    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn watches(&self) -> Watches {
        Watches {
            primary: daemon_set(),
            owned: vec![pod(), revision::controller_revision()],
            others: vec![RelatedKind { kind: node(), maps_to_keys: true }],
        }
    }

    /// A node changed: every DaemonSet may want to add or remove its pod there.
    fn map_to_keys(&self, api: &dyn Api, _kind: &GroupVersionKind, _object: &Value) -> Vec<ObjectKey> {
        api.list(&daemon_set(), &ListOptions::in_namespace(None))
            .unwrap_or_default()
            .iter()
            .map(ObjectKey::of)
            .collect()
    }

    fn reconcile(&self, api: &dyn Api, key: &ObjectKey) -> ReconcileResult {
        capstan_plugin_sdk::controller::outcome(reconcile(api, key))
    }
}

capstan_plugin_sdk::controller!(DaemonSetController);

/// One node as the DaemonSet sees it.
#[derive(Debug, Default)]
struct Slot {
    eligibility: Option<Eligibility>,
    /// Live (not terminating) pods of the DaemonSet on the node, oldest first.
    pods: Vec<Value>,
}

/// One reconcile's view.
struct State<'a> {
    api: &'a dyn Api,
    ds: Value,
    history: History,
    hash: String,
    slots: BTreeMap<String, Slot>,
    min_ready_seconds: i64,
    now: i64,
}

/// Reconciles one DaemonSet; `Some(seconds)` asks to look again then (a pod becoming
/// available after `minReadySeconds`).
pub fn reconcile(api: &dyn Api, key: &ObjectKey) -> Result<Option<i64>, ApiError> {
    let Some(ds) = api.get(&daemon_set(), key)? else { return Ok(None) };
    if meta::is_terminating(&ds) {
        return Ok(None);
    }
    let history = revision::sync(api, &daemon_set(), &ds, REVISION_LABEL)?;
    let hash = history.update_hash(REVISION_LABEL);
    let pod_spec = placement::spec_with_tolerations(&ds);
    let mut slots: BTreeMap<String, Slot> = BTreeMap::new();
    for n in api.list(&node(), &ListOptions::in_namespace(None))? {
        slots.entry(meta::name(&n).to_owned()).or_default().eligibility = Some(placement::eligibility(&pod_spec, &n));
    }
    let mut claimed = owned::claim(api, &daemon_set(), &ds, &pod())?;
    claimed.sort_by(|a, b| meta::created(a).cmp(meta::created(b)));
    for p in claimed.into_iter().filter(|p| !meta::is_terminating(p)) {
        let target = placement::target_node(&p).unwrap_or_default().to_owned();
        slots.entry(target).or_default().pods.push(p);
    }
    let min_ready_seconds = meta::int(&ds, "/spec/minReadySeconds", 0).max(0);
    let mut state = State { api, ds, history, hash, slots, min_ready_seconds, now: meta::now_seconds() };
    state.manage()?;
    if state.ds.pointer("/spec/updateStrategy/type").and_then(Value::as_str) != Some("OnDelete") {
        state.roll()?;
    }
    let requeue = state.write_status()?;
    let live: Vec<String> = state
        .history
        .revisions
        .iter()
        .filter(|r| {
            let hash = meta::label(r, REVISION_LABEL);
            state.slots.values().flat_map(|s| &s.pods).any(|p| meta::label(p, REVISION_LABEL) == hash)
        })
        .map(|r| meta::name(r).to_owned())
        .collect();
    let live: Vec<&str> = live.iter().map(String::as_str).collect();
    revision::truncate(api, &state.history, &live, meta::int(&state.ds, "/spec/revisionHistoryLimit", 10))?;
    Ok(requeue)
}

impl State<'_> {
    fn regarding(&self) -> ObjectRef {
        ObjectRef::to(&daemon_set(), &self.ds)
    }

    fn is_updated(&self, p: &Value) -> bool {
        meta::label(p, REVISION_LABEL) == Some(self.hash.as_str())
    }

    fn available(&self, p: &Value) -> bool {
        owned::pod_is_available(p, self.min_ready_seconds, self.now)
    }

    /// Creates pods where they are missing; deletes failed ones, duplicates, and those on nodes
    /// that no longer want them (or no longer exist).
    fn manage(&mut self) -> Result<(), ApiError> {
        let names: Vec<String> = self.slots.keys().cloned().collect();
        for name in names {
            let Some(slot) = self.slots.get(&name) else { continue };
            let eligibility = slot.eligibility.unwrap_or(Eligibility { should_run: false, should_continue: false });
            let mut victims: Vec<Value> = Vec::new();
            let mut kept: Vec<Value> = Vec::new();
            for p in &slot.pods {
                if !eligibility.should_continue || meta::pod_is_finished(p) {
                    victims.push(p.clone());
                } else {
                    kept.push(p.clone());
                }
            }
            victims.extend(self.duplicates(&mut kept));
            for victim in &victims {
                self.delete_pod(victim)?;
            }
            if eligibility.should_run && kept.is_empty() {
                kept.push(self.create_pod(&name)?);
            }
            if let Some(slot) = self.slots.get_mut(&name) {
                slot.pods = kept;
            }
        }
        Ok(())
    }

    /// Pods beyond the one a node should run, removed from `kept`: the newer old ones, and
    /// (once an updated pod is there) every old one the surge no longer needs.
    fn duplicates(&self, kept: &mut Vec<Value>) -> Vec<Value> {
        let (updated, old): (Vec<Value>, Vec<Value>) = kept.drain(..).partition(|p| self.is_updated(p));
        let mut extra = Vec::new();
        let mut keep_old = old.into_iter();
        let oldest_old = keep_old.next();
        extra.extend(keep_old);
        let mut keep_new = updated.into_iter().rev();
        let newest_new = keep_new.next();
        extra.extend(keep_new);
        match (oldest_old, newest_new) {
            (Some(old), Some(new)) if self.available(&new) => {
                extra.push(old);
                kept.push(new);
            }
            (old, new) => kept.extend(old.into_iter().chain(new)),
        }
        extra
    }

    fn desired_count(&self) -> i64 {
        self.slots.values().filter(|s| s.eligibility.is_some_and(|e| e.should_run)).count() as i64
    }

    /// `RollingUpdate`: without surge, deletes old pods (unavailable ones freely, available
    /// ones while fewer than `maxUnavailable` nodes lack an available pod); with surge, starts
    /// an updated pod beside an available old one on up to `maxSurge` nodes at a time.
    fn roll(&mut self) -> Result<(), ApiError> {
        let desired = self.desired_count();
        let field = |name: &str| self.ds.pointer(&format!("/spec/updateStrategy/rollingUpdate/{name}")).cloned();
        let surge = owned::scaled_int_or_percent(field("maxSurge").as_ref(), desired, true).unwrap_or(0).max(0);
        let mut max_unavailable =
            owned::scaled_int_or_percent(field("maxUnavailable").as_ref(), desired, true).unwrap_or(1).max(0);
        if surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        let wanted: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, s)| s.eligibility.is_some_and(|e| e.should_continue))
            .map(|(name, _)| name.clone())
            .collect();
        let mut unavailable =
            wanted.iter().filter(|n| self.slots[*n].pods.iter().all(|p| !self.available(p))).count() as i64;
        let mut surging = wanted
            .iter()
            .filter(|n| {
                let pods = &self.slots[*n].pods;
                pods.iter().any(|p| self.is_updated(p)) && pods.iter().any(|p| !self.is_updated(p))
            })
            .count() as i64;
        for name in wanted {
            let pods = self.slots[&name].pods.clone();
            let Some(old) = pods.iter().find(|p| !self.is_updated(p)).cloned() else { continue };
            let has_new = pods.iter().any(|p| self.is_updated(p));
            let old_available = self.available(&old);
            if !old_available {
                if !has_new || surge == 0 {
                    self.delete_pod(&old)?;
                    self.forget(&name, &old);
                }
                continue;
            }
            if surge > 0 {
                if !has_new && surging < surge {
                    let created = self.create_pod(&name)?;
                    if let Some(slot) = self.slots.get_mut(&name) {
                        slot.pods.push(created);
                    }
                    surging += 1;
                }
            } else if unavailable < max_unavailable {
                self.delete_pod(&old)?;
                self.forget(&name, &old);
                unavailable += 1;
            }
        }
        Ok(())
    }

    fn forget(&mut self, node_name: &str, gone: &Value) {
        if let Some(slot) = self.slots.get_mut(node_name) {
            slot.pods.retain(|p| meta::uid(p) != meta::uid(gone));
        }
    }

    /// A new pod for node `node_name` at the update revision.
    fn new_pod(&self, node_name: &str) -> Value {
        let template = self.ds.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
        let mut metadata = template.get("metadata").cloned().unwrap_or_else(|| json!({}));
        metadata["generateName"] = json!(format!("{}-", meta::name(&self.ds)));
        metadata["namespace"] = json!(meta::namespace(&self.ds));
        metadata["ownerReferences"] = json!([meta::controller_reference(&daemon_set(), &self.ds)]);
        metadata["labels"][REVISION_LABEL] = json!(self.hash);
        metadata["labels"][TEMPLATE_GENERATION_LABEL] = json!(meta::generation(&self.ds).to_string());
        if let Some(fields) = metadata.as_object_mut() {
            fields.remove("name");
        }
        let mut spec = placement::spec_with_tolerations(&self.ds);
        placement::pin_to_node(&mut spec, node_name);
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
    }

    fn create_pod(&self, node_name: &str) -> Result<Value, ApiError> {
        let created = owned::create_pods(self.api, &self.regarding(), &[self.new_pod(node_name)])?;
        created.into_iter().next().ok_or_else(|| ApiError {
            code: 500,
            reason: "InternalError".into(),
            message: "the host answered a create with no result".into(),
        })
    }

    fn delete_pod(&self, victim: &Value) -> Result<(), ApiError> {
        let options =
            DeleteOptions { precondition_uid: meta::uid(victim).map(str::to_owned), ..DeleteOptions::plain() };
        match self.api.delete(&pod(), &ObjectKey::of(victim), &options) {
            Ok(()) => {
                let message = format!("Deleted pod: {}", meta::name(victim));
                self.api.record_event(&self.regarding(), EventType::Normal, "SuccessfulDelete", &message);
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes the status; returns when a ready pod becomes available, if one is waiting.
    fn write_status(&self) -> Result<Option<i64>, ApiError> {
        let (status, requeue) = self.status();
        if self.ds.get("status") == Some(&status) {
            return Ok(requeue);
        }
        let mut updated = self.ds.clone();
        updated["status"] = status;
        match self.api.update_status(&daemon_set(), &updated) {
            Ok(_) => Ok(requeue),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The status, counted per node from each node's oldest pod, as upstream does.
    fn status(&self) -> (Value, Option<i64>) {
        let (mut desired, mut current, mut ready, mut available, mut updated, mut misscheduled) = (0, 0, 0, 0, 0, 0);
        let mut requeue: Option<i64> = None;
        for slot in self.slots.values() {
            let should_run = slot.eligibility.is_some_and(|e| e.should_run);
            let Some(oldest) = slot.pods.first() else {
                desired += i64::from(should_run);
                continue;
            };
            if !should_run {
                misscheduled += i64::from(slot.eligibility.is_some());
                continue;
            }
            desired += 1;
            current += 1;
            ready += i64::from(meta::pod_is_ready(oldest));
            match owned::pod_available_in(oldest, self.min_ready_seconds, self.now) {
                Some(0) => available += 1,
                Some(wait) => requeue = Some(requeue.map_or(wait, |r| r.min(wait))),
                None => {}
            }
            updated += i64::from(self.is_updated(oldest));
        }
        let mut status = json!({
            "observedGeneration": meta::generation(&self.ds),
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": current,
            "numberMisscheduled": misscheduled,
            "numberReady": ready,
            "numberAvailable": available,
            "numberUnavailable": desired - available,
            "updatedNumberScheduled": updated,
            "collisionCount": meta::int(&self.ds, "/status/collisionCount", 0),
        });
        if let Some(conditions) = self.ds.pointer("/status/conditions") {
            status["conditions"] = conditions.clone();
        }
        (status, requeue)
    }
}

#[cfg(test)]
mod tests;
