//! Revision history as `ControllerRevision` objects (apps/v1), the way `StatefulSet`s and
//! `DaemonSet`s keep it: one revision per distinct pod template, named `<owner>-<hash>`, its
//! `data` the strategic merge patch that restores the template (what `kubectl rollout undo`
//! applies), numbered so the newest has the highest `revision`.
//!
//! Start with [`sync`], which finds or creates the revision of the owner's current template;
//! [`truncate`] keeps the history within `revisionHistoryLimit`.

use serde_json::{Map, Value, json};

use super::prelude::*;
use super::{Api, ApiError, DeleteOptions, EventType, GroupVersionKind, ObjectKey, ObjectRef, meta, owned};

/// kubectl's copy of the applied object: large, and no part of a revision.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The `ControllerRevision` kind.
#[must_use]
pub fn controller_revision() -> GroupVersionKind {
    GroupVersionKind::new("apps", "v1", "ControllerRevision")
}

/// A short name-safe hash of `text` (FNV-1a, 32 bits), mixed with a collision count when it is
/// positive, written in the API's safe alphabet (no vowels, no look-alike digits) as
/// `rand.SafeEncodeString` does.
#[must_use]
pub fn hash(text: &str, collision_count: i64) -> String {
    const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hash: u32 = 0x811c_9dc5;
    let suffix = if collision_count > 0 { collision_count.to_string() } else { String::new() };
    for byte in text.bytes().chain(suffix.bytes()) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash.to_string().bytes().map(|b| char::from(SAFE[usize::from(b) % SAFE.len()])).collect()
}

/// The data of the revision recording `owner`'s pod template: a patch replacing
/// `spec.template`.
#[must_use]
pub fn template_data(owner: &Value) -> Value {
    let mut template = owner.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
    template["$patch"] = json!("replace");
    json!({"spec": {"template": template}})
}

/// The pod template a revision records.
#[must_use]
pub fn template_of(revision: &Value) -> Option<Value> {
    let mut template = revision.pointer("/data/spec/template")?.clone();
    template.as_object_mut()?.remove("$patch");
    Some(template)
}

/// A revision's number.
#[must_use]
pub fn number(revision: &Value) -> i64 {
    meta::int(revision, "/revision", 0)
}

/// An owner's revisions after [`sync`].
#[derive(Debug)]
pub struct History {
    /// Every revision the owner controls, oldest number first.
    pub revisions: Vec<Value>,
    /// The revision of the owner's current template.
    pub update: Value,
    /// The revision named by `status.currentRevision`, or `update` when there is none.
    pub current: Value,
}

impl History {
    /// The hash label value of the update revision.
    #[must_use]
    pub fn update_hash(&self, hash_label: &str) -> String {
        meta::label(&self.update, hash_label).unwrap_or_default().to_owned()
    }
}

/// Finds (or creates) the revision of `owner`'s current template. An older revision with the
/// same template (a rollback) is renumbered to be the newest. A name taken by a revision with
/// other data is a hash collision: `status.collisionCount` goes up and the call fails with the
/// conflict, to be retried.
pub fn sync(
    api: &dyn Api,
    owner_kind: &GroupVersionKind,
    owner: &Value,
    hash_label: &str,
) -> Result<History, ApiError> {
    let mut revisions = owned::claim(api, owner_kind, owner, &controller_revision())?;
    revisions.retain(|r| !meta::is_terminating(r));
    revisions.sort_by_key(number);
    let data = template_data(owner);
    let newest = revisions.last().map_or(0, number);
    let update = match revisions.iter().rposition(|r| r.get("data") == Some(&data)) {
        Some(at) if number(&revisions[at]) < newest => {
            let mut renumbered = revisions.remove(at);
            renumbered["revision"] = json!(newest + 1);
            let stored = api.update(&controller_revision(), &renumbered)?;
            revisions.push(stored.clone());
            stored
        }
        Some(at) => revisions[at].clone(),
        None => {
            let created = create(api, owner_kind, owner, hash_label, &data, newest + 1)?;
            revisions.push(created.clone());
            created
        }
    };
    let current_name = owner.pointer("/status/currentRevision").and_then(Value::as_str);
    let current =
        revisions.iter().find(|r| Some(meta::name(r)) == current_name).cloned().unwrap_or_else(|| update.clone());
    Ok(History { revisions, update, current })
}

fn create(
    api: &dyn Api,
    owner_kind: &GroupVersionKind,
    owner: &Value,
    hash_label: &str,
    data: &Value,
    number: i64,
) -> Result<Value, ApiError> {
    let collisions = meta::int(owner, "/status/collisionCount", 0);
    let hash = hash(&data.to_string(), collisions);
    let mut labels = owner.pointer("/spec/template/metadata/labels").cloned().unwrap_or_else(|| json!({}));
    labels[hash_label] = json!(hash);
    let mut annotations: Map<String, Value> =
        owner.pointer("/metadata/annotations").and_then(Value::as_object).cloned().unwrap_or_default();
    annotations.remove(LAST_APPLIED);
    let name = format!("{}-{hash}", meta::name(owner));
    let revision = json!({
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": name,
            "namespace": meta::namespace(owner),
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [meta::controller_reference(owner_kind, owner)],
        },
        "data": data,
        "revision": number,
    });
    match api.create(&controller_revision(), &revision) {
        Ok(created) => Ok(created),
        Err(e) if e.is_conflict() => {
            let key = ObjectKey::of(&revision);
            let existing = api.get(&controller_revision(), &key)?;
            let uid = meta::uid(owner).unwrap_or_default();
            if let Some(existing) = existing.filter(|r| meta::is_controlled_by(r, uid) && r.get("data") == Some(data)) {
                return Ok(existing);
            }
            let mut counted = owner.clone();
            counted["status"]["collisionCount"] = json!(collisions + 1);
            api.update_status(owner_kind, &counted)?;
            let message =
                format!("revision name {name} is taken by another template; collision count now {}", collisions + 1);
            api.record_event(&ObjectRef::to(owner_kind, owner), EventType::Warning, "RevisionCollision", &message);
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// Deletes the oldest revisions beyond `limit`, sparing those in `live` (revision names still
/// used by pods, the current and the update revision).
pub fn truncate(api: &dyn Api, history: &History, live: &[&str], limit: i64) -> Result<(), ApiError> {
    let spared = |r: &&Value| {
        let name = meta::name(r);
        live.contains(&name) || name == meta::name(&history.update) || name == meta::name(&history.current)
    };
    let old: Vec<&Value> = history.revisions.iter().filter(|r| !spared(r)).collect();
    let excess = old.len().saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
    for revision in &old[..excess] {
        match api.delete(&controller_revision(), &ObjectKey::of(revision), &DeleteOptions::plain()) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{controller_revision, hash, number, sync, template_of, truncate};
    use crate::controller::prelude::*;
    use crate::controller::testing::FakeCluster;
    use crate::controller::{Api, GroupVersionKind, ObjectKey, meta};

    fn owner_kind() -> GroupVersionKind {
        GroupVersionKind::new("apps", "v1", "StatefulSet")
    }

    fn owner(cluster: &FakeCluster, image: &str) -> Value {
        let spec = json!({
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}},
        });
        let key = ObjectKey::namespaced("default", "web");
        match cluster.get(&owner_kind(), &key).ok().flatten() {
            Some(mut existing) => {
                existing["spec"] = spec;
                cluster.update(&owner_kind(), &existing).unwrap_or(existing)
            }
            None => cluster
                .insert(&owner_kind(), json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})),
        }
    }

    #[test]
    fn hashes_use_the_safe_alphabet_and_change_with_collisions() {
        let plain = hash("template", 0);
        assert!(plain.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)), "{plain}");
        assert_eq!(plain, hash("template", 0));
        assert_ne!(plain, hash("template", 1));
    }

    #[test]
    fn each_template_gets_one_revision_and_a_rollback_renumbers_the_old_one() {
        let cluster = FakeCluster::new();
        let first = sync(&cluster, &owner_kind(), &owner(&cluster, "a:1"), "h").unwrap();
        assert_eq!(number(&first.update), 1);
        assert_eq!(meta::name(&first.update), format!("web-{}", meta::label(&first.update, "h").unwrap()));
        let again = sync(&cluster, &owner_kind(), &owner(&cluster, "a:1"), "h").unwrap();
        assert_eq!(meta::name(&again.update), meta::name(&first.update), "the same template reuses its revision");
        let second = sync(&cluster, &owner_kind(), &owner(&cluster, "a:2"), "h").unwrap();
        assert_eq!(number(&second.update), 2);
        let back = sync(&cluster, &owner_kind(), &owner(&cluster, "a:1"), "h").unwrap();
        assert_eq!(meta::name(&back.update), meta::name(&first.update));
        assert_eq!(number(&back.update), 3, "a rollback makes the old revision the newest");
        assert_eq!(cluster.all(&controller_revision()).len(), 2);
        let template = template_of(&back.update).unwrap();
        assert_eq!(template["spec"]["containers"][0]["image"], "a:1");
        assert!(template.get("$patch").is_none());
    }

    #[test]
    fn truncation_keeps_the_limit_and_live_revisions() {
        let cluster = FakeCluster::new();
        let mut names = Vec::new();
        for image in ["a:1", "a:2", "a:3", "a:4"] {
            names.push(
                meta::name(&sync(&cluster, &owner_kind(), &owner(&cluster, image), "h").unwrap().update).to_owned(),
            );
        }
        let history = sync(&cluster, &owner_kind(), &owner(&cluster, "a:4"), "h").unwrap();
        truncate(&cluster, &history, &[names[0].as_str()], 1).unwrap();
        let left: Vec<String> = cluster.all(&controller_revision()).iter().map(|r| meta::name(r).to_owned()).collect();
        assert!(left.contains(&names[0]), "live revisions stay");
        assert!(!left.contains(&names[1]), "the oldest unused one goes");
        assert!(left.contains(&names[2]) && left.contains(&names[3]), "{left:?}");
    }
}
