//! The Deployment controller as a Capstan component: it keeps one ReplicaSet per pod template
//! (named by a `pod-template-hash`), rolls replicas from old ReplicaSets to the new one —
//! `RollingUpdate` within `maxSurge`/`maxUnavailable`, or `Recreate` — numbers revisions in
//! annotations so `kubectl rollout history/undo` work, prunes history beyond
//! `revisionHistoryLimit`, and writes `Available`/`Progressing` conditions that
//! `kubectl rollout status` reads.
//!
//! Start with [`reconcile`]; [`rolling`] holds the arithmetic of a rolling update.

pub mod rolling;

use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::{
    Api, ApiError, Controller, DeleteOptions, EventType, GroupVersionKind, ListOptions, ObjectKey, ObjectRef,
    ReconcileResult, Watches, meta,
};
use serde_json::{Map, Value, json};

/// The annotation numbering a ReplicaSet's (and its Deployment's) revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// The label that tells a template's ReplicaSet and pods apart from another template's.
pub const HASH_LABEL: &str = "pod-template-hash";

/// The Deployment controller.
pub struct DeploymentController;

fn deployment() -> GroupVersionKind {
    GroupVersionKind::new("apps", "v1", "Deployment")
}

fn replica_set() -> GroupVersionKind {
    GroupVersionKind::new("apps", "v1", "ReplicaSet")
}

impl Controller for DeploymentController {
    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn watches(&self) -> Watches {
        Watches { primary: deployment(), owned: vec![replica_set()], others: Vec::new() }
    }

    fn reconcile(&self, api: &dyn Api, key: &ObjectKey) -> ReconcileResult {
        capstan_plugin_sdk::controller::outcome(reconcile(api, key))
    }
}

capstan_plugin_sdk::controller!(DeploymentController);

/// What one reconcile sees: the Deployment and its ReplicaSets.
struct State<'a> {
    api: &'a dyn Api,
    deployment: Value,
    new: Option<Value>,
    old: Vec<Value>,
    created_new: bool,
}

/// Reconciles one Deployment; `Some(seconds)` asks to be called again (to check the progress
/// deadline).
pub fn reconcile(api: &dyn Api, key: &ObjectKey) -> Result<Option<i64>, ApiError> {
    let Some(deployment_object) = api.get(&deployment(), key)? else { return Ok(None) };
    if meta::is_terminating(&deployment_object) {
        return Ok(None);
    }
    let owned = owned_replica_sets(api, &deployment_object)?;
    let (new, old): (Vec<Value>, Vec<Value>) = owned.into_iter().partition(|rs| same_template(&deployment_object, rs));
    let mut state = State { api, deployment: deployment_object, new: newest(new), old, created_new: false };
    let paused = state.deployment.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
    if paused {
        state.scale_paused()?;
    } else if state.deployment.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate") {
        state.recreate()?;
    } else {
        state.rolling_update()?;
    }
    state.sync_revision()?;
    let complete = state.cleanup_if_complete()?;
    state.write_status(paused, complete)
}

/// The ReplicaSets `d` controls, adopting orphans its selector matches.
fn owned_replica_sets(api: &dyn Api, d: &Value) -> Result<Vec<Value>, ApiError> {
    let uid = meta::uid(d).unwrap_or_default();
    let mut owned = Vec::new();
    for rs in api.list(&replica_set(), &ListOptions::in_namespace(meta::namespace(d)))? {
        if meta::is_controlled_by(&rs, uid) {
            owned.push(rs);
        } else if meta::controller_ref(&rs).is_none()
            && !meta::is_terminating(&rs)
            && meta::selector_matches(d.pointer("/spec/selector"), meta::labels(&rs))
        {
            owned.push(capstan_plugin_sdk::controller::owned::adopt(api, &deployment(), d, &replica_set(), &rs)?);
        }
    }
    Ok(owned)
}

/// The template with the hash label removed, for comparison.
fn template_without_hash(template: Option<&Value>) -> Value {
    let mut template = template.cloned().unwrap_or_else(|| json!({}));
    if let Some(labels) = template.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            template["metadata"].as_object_mut().map(|m| m.remove("labels"));
        }
    }
    template
}

/// Whether `rs` runs `d`'s current pod template.
fn same_template(d: &Value, rs: &Value) -> bool {
    template_without_hash(d.pointer("/spec/template")) == template_without_hash(rs.pointer("/spec/template"))
}

fn newest(mut candidates: Vec<Value>) -> Option<Value> {
    candidates.sort_by(|a, b| meta::created(a).cmp(meta::created(b)));
    candidates.into_iter().next()
}

fn revision(rs: &Value) -> i64 {
    meta::annotation(rs, REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// The `pod-template-hash` of a template: FNV-1a over its JSON (keys sorted), mixed with the
/// collision count, written with the API's safe alphabet.
#[must_use]
pub fn template_hash(template: &Value, collision_count: i64) -> String {
    capstan_plugin_sdk::controller::revision::hash(&template.to_string(), collision_count)
}

fn replicas(object: &Value) -> i64 {
    meta::int(object, "/spec/replicas", 1)
}

fn status_int(object: &Value, field: &str) -> i64 {
    object.pointer(&format!("/status/{field}")).and_then(Value::as_i64).unwrap_or(0)
}

impl State<'_> {
    fn desired(&self) -> i64 {
        replicas(&self.deployment)
    }

    fn regarding(&self) -> ObjectRef {
        ObjectRef::to(&deployment(), &self.deployment)
    }

    fn all(&self) -> impl Iterator<Item = &Value> {
        self.new.iter().chain(self.old.iter())
    }

    fn max_old_revision(&self) -> i64 {
        self.old.iter().map(revision).max().unwrap_or(0)
    }

    /// Creates the ReplicaSet for the current template with `count` replicas.
    fn create_new(&mut self, count: i64) -> Result<(), ApiError> {
        let d = &self.deployment;
        let collisions = meta::int(d, "/status/collisionCount", 0);
        let hash = template_hash(&template_without_hash(d.pointer("/spec/template")), collisions);
        let mut template = d.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
        template["metadata"]["labels"][HASH_LABEL] = json!(hash);
        let mut selector = d.pointer("/spec/selector").cloned().unwrap_or_else(|| json!({}));
        selector["matchLabels"][HASH_LABEL] = json!(hash);
        let mut annotations = Map::new();
        if let Some(cause) = meta::annotation(d, CHANGE_CAUSE) {
            annotations.insert(CHANGE_CAUSE.into(), json!(cause));
        }
        annotations.insert(REVISION.into(), json!((self.max_old_revision() + 1).to_string()));
        annotations.insert(DESIRED_REPLICAS.into(), json!(self.desired().to_string()));
        annotations.insert(MAX_REPLICAS.into(), json!((self.desired() + self.surge()).to_string()));
        let name = format!("{}-{hash}", meta::name(d));
        let rs = json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": meta::namespace(d),
                "labels": template["metadata"]["labels"],
                "annotations": annotations,
                "ownerReferences": [meta::controller_reference(&deployment(), d)],
            },
            "spec": {
                "replicas": count,
                "minReadySeconds": meta::int(d, "/spec/minReadySeconds", 0),
                "selector": selector,
                "template": template,
            },
        });
        match self.api.create(&replica_set(), &rs) {
            Ok(created) => {
                let message = format!("Scaled up replica set {name} from 0 to {count}");
                self.api.record_event(&self.regarding(), EventType::Normal, "ScalingReplicaSet", &message);
                self.new = Some(created);
                self.created_new = true;
                Ok(())
            }
            Err(e) if e.is_conflict() => {
                // Another template hashed to this name: count the collision and retry.
                let mut d = self.deployment.clone();
                d["status"]["collisionCount"] = json!(collisions + 1);
                self.api.update_status(&deployment(), &d)?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Sets `rs`'s replicas (and the annotations recording the Deployment's size).
    fn scale(&self, rs: &Value, count: i64) -> Result<Value, ApiError> {
        let from = replicas(rs);
        let mut updated = rs.clone();
        updated["spec"]["replicas"] = json!(count);
        updated["metadata"]["annotations"][DESIRED_REPLICAS] = json!(self.desired().to_string());
        updated["metadata"]["annotations"][MAX_REPLICAS] = json!((self.desired() + self.surge()).to_string());
        if &updated == rs {
            return Ok(updated);
        }
        let stored = self.api.update(&replica_set(), &updated)?;
        if from != count {
            let direction = if count > from { "up" } else { "down" };
            let message = format!("Scaled {direction} replica set {} from {from} to {count}", meta::name(rs));
            self.api.record_event(&self.regarding(), EventType::Normal, "ScalingReplicaSet", &message);
        }
        Ok(stored)
    }

    fn surge(&self) -> i64 {
        rolling::limits(&self.deployment).0
    }

    fn rolling_update(&mut self) -> Result<(), ApiError> {
        let (surge, unavailable) = rolling::limits(&self.deployment);
        let desired = self.desired();
        let total: i64 = self.all().map(replicas).sum();
        match &self.new {
            None => {
                let count = rolling::new_replicas(desired, surge, total, 0);
                self.create_new(count)?;
                return Ok(());
            }
            Some(new) => {
                let target = rolling::new_replicas(desired, surge, total, replicas(new));
                if target != replicas(new) {
                    let new = new.clone();
                    self.new = Some(self.scale(&new, target)?);
                    return Ok(());
                }
            }
        }
        let Some(new) = &self.new else { return Ok(()) };
        let new_unavailable = replicas(new) - status_int(new, "availableReplicas");
        let olds: Vec<(i64, i64)> =
            self.old.iter().map(|rs| (replicas(rs), status_int(rs, "availableReplicas"))).collect();
        let available: i64 = self.all().map(|rs| status_int(rs, "availableReplicas")).sum();
        let targets = rolling::scale_down_old(desired, unavailable, total, new_unavailable, available, &olds);
        let old = std::mem::take(&mut self.old);
        for (rs, target) in old.iter().zip(targets) {
            let rs = if target == replicas(rs) { rs.clone() } else { self.scale(rs, target)? };
            self.old.push(rs);
        }
        Ok(())
    }

    fn recreate(&mut self) -> Result<(), ApiError> {
        let old = std::mem::take(&mut self.old);
        let mut scaled = false;
        for rs in old {
            let rs = if replicas(&rs) > 0 {
                scaled = true;
                self.scale(&rs, 0)?
            } else {
                rs
            };
            self.old.push(rs);
        }
        if scaled || self.old.iter().any(|rs| status_int(rs, "replicas") > 0) {
            // The new pods start only once every old one is gone.
            return Ok(());
        }
        match self.new.clone() {
            None => self.create_new(self.desired()),
            Some(new) => {
                self.new = Some(self.scale(&new, self.desired())?);
                Ok(())
            }
        }
    }

    /// While paused no rollout happens, but the Deployment's size still applies.
    fn scale_paused(&mut self) -> Result<(), ApiError> {
        let active: Vec<&Value> = self.all().filter(|rs| replicas(rs) > 0).collect();
        let target = match (active.as_slice(), &self.new) {
            ([only], _) => (*only).clone(),
            ([], Some(new)) => new.clone(),
            _ => return Ok(()),
        };
        let scaled = self.scale(&target, self.desired())?;
        if self.new.as_ref().is_some_and(|n| meta::uid(n) == meta::uid(&scaled)) {
            self.new = Some(scaled);
        } else if let Some(slot) = self.old.iter_mut().find(|o| meta::uid(o) == meta::uid(&scaled)) {
            *slot = scaled;
        }
        Ok(())
    }

    /// Gives the new ReplicaSet the highest revision (an undo reuses an old one) and copies it
    /// to the Deployment.
    fn sync_revision(&mut self) -> Result<(), ApiError> {
        let Some(new) = self.new.clone() else { return Ok(()) };
        let max_old = self.max_old_revision();
        let mut new_revision = revision(&new);
        if new_revision <= max_old {
            new_revision = max_old + 1;
            let mut updated = new;
            updated["metadata"]["annotations"][REVISION] = json!(new_revision.to_string());
            if let Some(cause) = meta::annotation(&self.deployment, CHANGE_CAUSE) {
                updated["metadata"]["annotations"][CHANGE_CAUSE] = json!(cause);
            }
            self.new = Some(self.api.update(&replica_set(), &updated)?);
        }
        let wanted = new_revision.to_string();
        if meta::annotation(&self.deployment, REVISION) != Some(wanted.as_str()) {
            let mut updated = self.deployment.clone();
            updated["metadata"]["annotations"][REVISION] = json!(wanted);
            self.deployment = self.api.update(&deployment(), &updated)?;
        }
        Ok(())
    }

    fn is_complete(&self) -> bool {
        let desired = self.desired();
        let Some(new) = &self.new else {
            return desired == 0 && self.old.iter().all(|rs| status_int(rs, "replicas") == 0);
        };
        status_int(new, "replicas") == desired
            && status_int(new, "availableReplicas") >= desired
            && replicas(new) == desired
            && self.old.iter().all(|rs| status_int(rs, "replicas") == 0 && replicas(rs) == 0)
    }

    /// Deletes the oldest scaled-down ReplicaSets beyond the history limit, once the rollout
    /// is complete.
    fn cleanup_if_complete(&mut self) -> Result<bool, ApiError> {
        if !self.is_complete() {
            return Ok(false);
        }
        let limit = usize::try_from(meta::int(&self.deployment, "/spec/revisionHistoryLimit", 10)).unwrap_or(0);
        let mut idle: Vec<&Value> = self
            .old
            .iter()
            .filter(|rs| replicas(rs) == 0 && status_int(rs, "replicas") == 0 && !meta::is_terminating(rs))
            .collect();
        if idle.len() <= limit {
            return Ok(true);
        }
        idle.sort_by_key(|rs| revision(rs));
        let excess: Vec<String> = idle[..idle.len() - limit].iter().map(|rs| meta::name(rs).to_owned()).collect();
        for name in &excess {
            let key = ObjectKey { namespace: meta::namespace(&self.deployment).map(str::to_owned), name: name.clone() };
            match self.api.delete(&replica_set(), &key, &DeleteOptions::plain()) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        self.old.retain(|rs| !excess.iter().any(|name| name == meta::name(rs)));
        Ok(true)
    }

    /// Writes the status; returns when to look again for the progress deadline.
    fn write_status(&self, paused: bool, complete: bool) -> Result<Option<i64>, ApiError> {
        let d = &self.deployment;
        let desired = self.desired();
        let (_, max_unavailable) = rolling::limits(d);
        let sum = |field: &str| self.all().map(|rs| status_int(rs, field)).sum::<i64>();
        let available = sum("availableReplicas");
        let mut status = json!({
            "observedGeneration": meta::generation(d),
            "replicas": sum("replicas"),
            "updatedReplicas": self.new.as_ref().map_or(0, |n| status_int(n, "replicas")),
            "readyReplicas": sum("readyReplicas"),
            "availableReplicas": available,
            "unavailableReplicas": (sum("replicas").max(desired) - available).max(0),
        });
        if let Some(collisions) = d.pointer("/status/collisionCount") {
            status["collisionCount"] = collisions.clone();
        }
        let now = meta::now_seconds();
        let new_name = self.new.as_ref().map_or("", |n| meta::name(n));
        let available_condition = if available >= desired - max_unavailable {
            ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.".to_owned())
        } else {
            ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.".to_owned())
        };
        let deadline = meta::int(d, "/spec/progressDeadlineSeconds", 600);
        let previous = meta::condition(d, "Progressing");
        let last_progress = previous
            .and_then(|c| c.get("lastUpdateTime"))
            .and_then(Value::as_str)
            .and_then(meta::parse_rfc3339)
            .unwrap_or(now);
        let changed = d.get("status").is_none_or(|old| {
            ["replicas", "updatedReplicas", "availableReplicas", "readyReplicas"]
                .iter()
                .any(|f| old.get(*f) != status.get(*f))
        });
        let progressing = if paused {
            ("Unknown", "DeploymentPaused", "Deployment is paused".to_owned())
        } else if complete {
            ("True", "NewReplicaSetAvailable", format!("ReplicaSet \"{new_name}\" has successfully progressed."))
        } else if self.created_new {
            ("True", "NewReplicaSetCreated", format!("Created new replica set \"{new_name}\""))
        } else if !changed && now - last_progress > deadline {
            ("False", "ProgressDeadlineExceeded", format!("ReplicaSet \"{new_name}\" has timed out progressing."))
        } else {
            ("True", "ReplicaSetUpdated", format!("ReplicaSet \"{new_name}\" is progressing."))
        };
        let touch = changed || self.created_new;
        let exceeded = progressing.1 == "ProgressDeadlineExceeded";
        let conditions = vec![
            condition(d, "Available", available_condition, now, false),
            condition(d, "Progressing", progressing, now, touch),
        ];
        status["conditions"] = json!(conditions);
        if d.get("status") != Some(&status) {
            let mut updated = d.clone();
            updated["status"] = status;
            match self.api.update_status(&deployment(), &updated) {
                Ok(_) => {}
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok((!complete && !paused && !exceeded).then(|| (deadline - (now - last_progress)).max(1)))
    }
}

/// A condition of `kind`, keeping the old one's timestamps when nothing about it changed.
fn condition(d: &Value, kind: &str, (status, reason, message): (&str, &str, String), now: i64, touch: bool) -> Value {
    let stamp = meta::rfc3339(now);
    let previous = meta::condition(d, kind);
    let same = |field: &str, value: &str| previous.and_then(|c| c.get(field)).and_then(Value::as_str) == Some(value);
    let unchanged = same("status", status) && same("reason", reason) && same("message", &message);
    let kept = |field: &str| previous.and_then(|c| c.get(field)).cloned().unwrap_or_else(|| json!(stamp));
    let transition = if same("status", status) { kept("lastTransitionTime") } else { json!(stamp) };
    let update = if unchanged && !touch { kept("lastUpdateTime") } else { json!(stamp) };
    json!({
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": update,
        "lastTransitionTime": transition,
    })
}

#[cfg(test)]
mod tests;
