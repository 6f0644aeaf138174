//! The StatefulSet controller as a Capstan component, as Kubernetes documents `StatefulSets`:
//! pods named `<set>-<ordinal>` (from `spec.ordinals.start`), each with its own
//! `PersistentVolumeClaims` `<template>-<set>-<ordinal>` from `volumeClaimTemplates`;
//! `OrderedReady` management creates one pod at a time, each Running and Ready before the
//! next, and removes the highest ordinal first, while `Parallel` does both at once;
//! `RollingUpdate` replaces pods from the highest ordinal down to `partition`, at most
//! `maxUnavailable` at a time, and `OnDelete` only recreates what the user deleted. Templates
//! are recorded as `ControllerRevisions`, so `kubectl rollout status/history/undo` work.
//!
//! Start with [`reconcile`]; [`pods`] builds the pods and claims of one ordinal.

pub mod pods;

use std::collections::BTreeMap;

use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::revision::{self, History};
use capstan_plugin_sdk::controller::{
    Api, ApiError, Controller, DeleteOptions, EventType, GroupVersionKind, ListOptions, ObjectKey, ObjectRef,
    PatchType, ReconcileResult, RelatedKind, Watches, meta, owned,
};
use serde_json::{Value, json};

pub use pods::{POD_INDEX_LABEL, POD_NAME_LABEL, REVISION_LABEL};

/// The label a StatefulSet's `ControllerRevisions` carry their hash in.
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// The StatefulSet controller.
pub struct StatefulSetController;

/// The StatefulSet kind.
#[must_use]
pub fn stateful_set() -> GroupVersionKind {
    GroupVersionKind::new("apps", "v1", "StatefulSet")
}

fn pod() -> GroupVersionKind {
    GroupVersionKind::new("", "v1", "Pod")
}

fn claim() -> GroupVersionKind {
    GroupVersionKind::new("", "v1", "PersistentVolumeClaim")
}

impl Controller for StatefulSetController {
    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn watches(&self) -> Watches {
        Watches {
            primary: stateful_set(),
            owned: vec![pod(), revision::controller_revision()],
            others: vec![RelatedKind { kind: claim(), maps_to_keys: false }],
        }
    }

    fn reconcile(&self, api: &dyn Api, key: &ObjectKey) -> ReconcileResult {
        capstan_plugin_sdk::controller::outcome(reconcile(api, key))
    }
}

capstan_plugin_sdk::controller!(StatefulSetController);

/// The parts of a StatefulSet's spec the controller acts on, defaulted as the API server does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// `replicas` (1).
    pub replicas: i64,
    /// `ordinals.start` (0).
    pub start: i64,
    /// `podManagementPolicy: Parallel` rather than `OrderedReady`.
    pub parallel: bool,
    /// `updateStrategy.type: RollingUpdate` (the default) rather than `OnDelete`.
    pub rolling: bool,
    /// `updateStrategy.rollingUpdate.partition` (0).
    pub partition: i64,
    /// `updateStrategy.rollingUpdate.maxUnavailable` (1), resolved against `replicas`.
    pub max_unavailable: i64,
    /// `minReadySeconds` (0).
    pub min_ready_seconds: i64,
}

impl Spec {
    /// Reads `set`'s spec.
    #[must_use]
    pub fn of(set: &Value) -> Self {
        let replicas = meta::int(set, "/spec/replicas", 1).max(0);
        let strategy = set.pointer("/spec/updateStrategy/type").and_then(Value::as_str);
        let max_unavailable = owned::scaled_int_or_percent(
            set.pointer("/spec/updateStrategy/rollingUpdate/maxUnavailable"),
            replicas,
            true,
        )
        .unwrap_or(1)
        .max(1);
        Self {
            replicas,
            start: meta::int(set, "/spec/ordinals/start", 0).max(0),
            parallel: set.pointer("/spec/podManagementPolicy").and_then(Value::as_str) == Some("Parallel"),
            rolling: strategy != Some("OnDelete"),
            partition: meta::int(set, "/spec/updateStrategy/rollingUpdate/partition", 0).max(0),
            max_unavailable,
            min_ready_seconds: meta::int(set, "/spec/minReadySeconds", 0).max(0),
        }
    }

    /// The ordinals that should have pods.
    #[must_use]
    pub fn ordinals(&self) -> std::ops::Range<i64> {
        self.start..self.start + self.replicas
    }
}

/// One reconcile's view: the set, its revisions and its pods by ordinal.
struct State<'a> {
    api: &'a dyn Api,
    set: Value,
    spec: Spec,
    history: History,
    pods: BTreeMap<i64, Value>,
}

/// Reconciles one StatefulSet; `Some(seconds)` asks to look again then (a pod becoming
/// available after `minReadySeconds`).
pub fn reconcile(api: &dyn Api, key: &ObjectKey) -> Result<Option<i64>, ApiError> {
    let Some(set) = api.get(&stateful_set(), key)? else { return Ok(None) };
    if meta::is_terminating(&set) {
        return Ok(None);
    }
    let history = revision::sync(api, &stateful_set(), &set, HASH_LABEL)?;
    let name = meta::name(&set).to_owned();
    let pods = owned::claim(api, &stateful_set(), &set, &pod())?
        .into_iter()
        .filter_map(|p| pods::ordinal(&name, meta::name(&p)).map(|ordinal| (ordinal, p)))
        .collect();
    let mut state = State { api, spec: Spec::of(&set), set, history, pods };
    state.sync_pods()?;
    state.delete_scaled_claims()?;
    let requeue = state.write_status()?;
    let live: Vec<&str> = state.pods.values().filter_map(|p| meta::label(p, REVISION_LABEL)).collect();
    let limit = meta::int(&state.set, "/spec/revisionHistoryLimit", 10);
    revision::truncate(api, &state.history, &live, limit)?;
    Ok(requeue)
}

/// Whether a pod counts as healthy for ordered progress: Running, Ready, not being deleted.
fn healthy(pod: &Value) -> bool {
    !meta::is_terminating(pod) && owned::pod_is_running_and_ready(pod)
}

impl State<'_> {
    fn regarding(&self) -> ObjectRef {
        ObjectRef::to(&stateful_set(), &self.set)
    }

    fn set_name(&self) -> &str {
        meta::name(&self.set)
    }

    fn monotonic(&self) -> bool {
        !self.spec.parallel
    }

    /// Creates missing pods, replaces failed ones, removes condemned ones and rolls outdated
    /// ones, stopping where `OrderedReady` must wait.
    fn sync_pods(&mut self) -> Result<(), ApiError> {
        if !self.create_and_replace()? {
            return Ok(());
        }
        if !self.condemn()? {
            return Ok(());
        }
        if self.spec.rolling {
            self.roll()?;
        }
        Ok(())
    }

    /// The revision a new pod of `ordinal` runs: below the partition the current one.
    fn revision_for(&self, ordinal: i64) -> &Value {
        if self.spec.rolling && ordinal < self.spec.partition { &self.history.current } else { &self.history.update }
    }

    /// Makes every ordinal in range have a live pod; false when `OrderedReady` must wait.
    fn create_and_replace(&mut self) -> Result<bool, ApiError> {
        for ordinal in self.spec.ordinals() {
            match self.pods.get(&ordinal) {
                None => {
                    self.create_claims(ordinal)?;
                    let new_pod = pods::new_pod(&self.set, ordinal, self.revision_for(ordinal));
                    let created = self.create_pod(&new_pod)?;
                    self.pods.insert(ordinal, created);
                    if self.monotonic() {
                        return Ok(false);
                    }
                }
                Some(existing) if meta::pod_is_finished(existing) && !meta::is_terminating(existing) => {
                    let existing = existing.clone();
                    self.delete_pod(&existing)?;
                    if self.monotonic() {
                        return Ok(false);
                    }
                }
                Some(existing) if !healthy(existing) => {
                    if self.monotonic() {
                        return Ok(false);
                    }
                }
                Some(_) => self.create_claims(ordinal)?,
            }
        }
        Ok(true)
    }

    /// Deletes pods whose ordinal is out of range, highest first; `OrderedReady` deletes one
    /// at a time and only while every other pod is healthy. False when it must wait.
    fn condemn(&mut self) -> Result<bool, ApiError> {
        let range = self.spec.ordinals();
        let condemned: Vec<i64> = self.pods.keys().rev().copied().filter(|o| !range.contains(o)).collect();
        for ordinal in condemned {
            let Some(victim) = self.pods.get(&ordinal).cloned() else { continue };
            if meta::is_terminating(&victim) {
                if self.monotonic() {
                    return Ok(false);
                }
                continue;
            }
            if self.monotonic() && self.pods.iter().any(|(o, p)| *o != ordinal && !healthy(p)) {
                return Ok(false);
            }
            self.delete_pod(&victim)?;
            if self.monotonic() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Deletes outdated pods from the highest ordinal down to the partition, keeping at most
    /// `maxUnavailable` pods unavailable; the creation pass brings them back at the update
    /// revision.
    fn roll(&mut self) -> Result<(), ApiError> {
        let update = meta::name(&self.history.update).to_owned();
        let now = meta::now_seconds();
        let min_ready = self.spec.min_ready_seconds;
        let unavailable = self
            .spec
            .ordinals()
            .filter(|o| self.pods.get(o).is_none_or(|p| !healthy(p) || !owned::pod_is_available(p, min_ready, now)))
            .count();
        let mut budget = usize::try_from(self.spec.max_unavailable).unwrap_or(1).saturating_sub(unavailable);
        let lowest = self.spec.partition.max(self.spec.start);
        for ordinal in (lowest..self.spec.ordinals().end).rev() {
            let Some(target) = self.pods.get(&ordinal).cloned() else { continue };
            let outdated = meta::label(&target, REVISION_LABEL) != Some(update.as_str());
            if !outdated || meta::is_terminating(&target) {
                continue;
            }
            let was_healthy = healthy(&target);
            if was_healthy && budget == 0 {
                break;
            }
            self.delete_pod(&target)?;
            if was_healthy {
                budget -= 1;
            }
        }
        Ok(())
    }

    fn create_pod(&self, new_pod: &Value) -> Result<Value, ApiError> {
        let name = meta::name(new_pod).to_owned();
        match self.api.create(&pod(), new_pod) {
            Ok(created) => {
                let message = format!("create Pod {name} in StatefulSet {} successful", self.set_name());
                self.api.record_event(&self.regarding(), EventType::Normal, "SuccessfulCreate", &message);
                Ok(created)
            }
            Err(e) => {
                let message =
                    format!("create Pod {name} in StatefulSet {} failed error: {}", self.set_name(), e.message);
                self.api.record_event(&self.regarding(), EventType::Warning, "FailedCreate", &message);
                Err(e)
            }
        }
    }

    fn delete_pod(&mut self, victim: &Value) -> Result<(), ApiError> {
        let options =
            DeleteOptions { precondition_uid: meta::uid(victim).map(str::to_owned), ..DeleteOptions::plain() };
        match self.api.delete(&pod(), &ObjectKey::of(victim), &options) {
            Ok(()) => {
                let message =
                    format!("delete Pod {} in StatefulSet {} successful", meta::name(victim), self.set_name());
                self.api.record_event(&self.regarding(), EventType::Normal, "SuccessfulDelete", &message);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let name = self.set_name().to_owned();
        if let Some(ordinal) = pods::ordinal(&name, meta::name(victim)) {
            // Deleted: it counts as gone (and unhealthy) for the rest of this reconcile.
            if let Some(slot) = self.pods.get_mut(&ordinal) {
                slot["metadata"]["deletionTimestamp"] = json!(meta::rfc3339(meta::now_seconds()));
            }
        }
        Ok(())
    }

    /// Creates the claims of `ordinal` that do not exist yet.
    fn create_claims(&self, ordinal: i64) -> Result<(), ApiError> {
        for wanted in pods::claims_for(&self.set, ordinal) {
            if let Some(existing) = self.api.get(&claim(), &ObjectKey::of(&wanted))? {
                if let Some(references) = pods::claim_owner_update(&self.set, &existing) {
                    let patch = json!({"metadata": {"ownerReferences": references, "uid": meta::uid(&existing)}});
                    self.api.patch(&claim(), &ObjectKey::of(&existing), PatchType::Merge, &patch, None)?;
                }
                continue;
            }
            let claim_name = meta::name(&wanted).to_owned();
            let pod_name = format!("{}-{ordinal}", self.set_name());
            match self.api.create(&claim(), &wanted) {
                Ok(_) => {
                    let message =
                        format!("create Claim {claim_name} Pod {pod_name} in StatefulSet {} success", self.set_name());
                    self.api.record_event(&self.regarding(), EventType::Normal, "SuccessfulCreate", &message);
                }
                Err(e) if e.is_conflict() => {}
                Err(e) => {
                    let message = format!(
                        "create Claim {claim_name} for Pod {pod_name} in StatefulSet {} failed error: {}",
                        self.set_name(),
                        e.message
                    );
                    self.api.record_event(&self.regarding(), EventType::Warning, "FailedCreate", &message);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// With `persistentVolumeClaimRetentionPolicy.whenScaled: Delete`, deletes the claims of
    /// ordinals scaled away once their pod is gone.
    fn delete_scaled_claims(&self) -> Result<(), ApiError> {
        let policy = self.set.pointer("/spec/persistentVolumeClaimRetentionPolicy/whenScaled").and_then(Value::as_str);
        if policy != Some("Delete") {
            return Ok(());
        }
        let range = self.spec.ordinals();
        let claims = self.api.list(&claim(), &ListOptions::in_namespace(meta::namespace(&self.set)))?;
        for existing in claims {
            if meta::is_terminating(&existing)
                || !meta::selector_matches(self.set.pointer("/spec/selector"), meta::labels(&existing))
            {
                continue;
            }
            let Some(ordinal) = pods::claim_ordinal(&self.set, meta::name(&existing)) else { continue };
            if range.contains(&ordinal) || self.pods.contains_key(&ordinal) {
                continue;
            }
            match self.api.delete(&claim(), &ObjectKey::of(&existing), &DeleteOptions::plain()) {
                Ok(()) => {
                    let message =
                        format!("delete Claim {} in StatefulSet {} success", meta::name(&existing), self.set_name());
                    self.api.record_event(&self.regarding(), EventType::Normal, "SuccessfulDelete", &message);
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes the status; returns when a ready pod becomes available, if one is waiting.
    fn write_status(&self) -> Result<Option<i64>, ApiError> {
        let (status, requeue) = status_for(&self.set, &self.spec, &self.history, self.pods.values());
        if self.set.get("status") == Some(&status) {
            return Ok(requeue);
        }
        let mut updated = self.set.clone();
        updated["status"] = status;
        match self.api.update_status(&stateful_set(), &updated) {
            Ok(_) => Ok(requeue),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The status `set` should show for its `pods`, and when to look again for availability.
pub fn status_for<'a>(
    set: &Value,
    spec: &Spec,
    history: &History,
    pods: impl Iterator<Item = &'a Value>,
) -> (Value, Option<i64>) {
    let now = meta::now_seconds();
    let (current_name, update_name) = (meta::name(&history.current), meta::name(&history.update));
    let (mut replicas, mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0, 0);
    let mut requeue: Option<i64> = None;
    for p in pods {
        replicas += 1;
        if healthy(p) {
            ready += 1;
        }
        match owned::pod_available_in(p, spec.min_ready_seconds, now) {
            Some(0) => available += 1,
            Some(wait) => requeue = Some(requeue.map_or(wait, |r| r.min(wait))),
            None => {}
        }
        if !meta::is_terminating(p) {
            let revision = meta::label(p, REVISION_LABEL);
            current += i64::from(revision == Some(current_name));
            updated += i64::from(revision == Some(update_name));
        }
    }
    let complete = updated == spec.replicas && ready == spec.replicas && replicas == spec.replicas;
    let (current_revision, current) = if complete { (update_name, updated) } else { (current_name, current) };
    let mut status = json!({
        "observedGeneration": meta::generation(set),
        "replicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": available,
        "currentReplicas": current,
        "updatedReplicas": updated,
        "currentRevision": current_revision,
        "updateRevision": update_name,
        "collisionCount": meta::int(set, "/status/collisionCount", 0),
    });
    if let Some(conditions) = set.pointer("/status/conditions") {
        status["conditions"] = conditions.clone();
    }
    (status, requeue)
}

#[cfg(test)]
mod tests;
