//! The garbage collector as a Capstan component. One instance looks after one kind (its
//! configuration names it, the kinds that may own it and the kinds it may own):
//!
//! - as a dependent: an object whose owners are all gone is deleted (in the foreground when an
//!   owner is being deleted in the foreground); references to owners that are gone are removed
//!   when other owners remain; a reference to an owner being deleted with `orphan` propagation
//!   is removed, leaving the object;
//! - as an owner: an object being deleted with the `orphan` finalizer loses it once no dependent
//!   refers to it any more; with `foregroundDeletion`, once no dependent that blocks owner
//!   deletion (`blockOwnerDeletion: true`) remains.
//!
//! Start with [`GarbageCollector::reconcile`].

use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::{
    Api, ApiError, Controller, DeleteOptions, GroupVersionKind, ObjectKey, PatchType, Propagation, ReconcileResult,
    RelatedKind, Watches, meta,
};
use serde::Deserialize;
use serde_json::{Value, json};

const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";

/// A kind, as written in the configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Kind {
    /// The API group (empty for the core group).
    #[serde(default)]
    pub group: String,
    /// The version.
    pub version: String,
    /// The kind.
    pub kind: String,
}

impl Kind {
    fn gvk(&self) -> GroupVersionKind {
        GroupVersionKind::new(&self.group, &self.version, &self.kind)
    }

    fn matches_reference(&self, reference: &Value) -> bool {
        let api_version = self.gvk().api_version();
        reference.get("kind").and_then(Value::as_str) == Some(self.kind.as_str())
            && reference.get("apiVersion").and_then(Value::as_str) == Some(api_version.as_str())
    }

    fn is(&self, kind: &GroupVersionKind) -> bool {
        self.group == kind.group && self.version == kind.version && self.kind == kind.kind
    }
}

/// The garbage collector of one kind.
#[derive(Debug, Deserialize)]
pub struct GarbageCollector {
    /// The kind collected.
    pub kind: Kind,
    /// Kinds whose objects may own it.
    #[serde(default)]
    pub owners: Vec<Kind>,
    /// Kinds whose objects it may own.
    #[serde(default)]
    pub dependents: Vec<Kind>,
}

impl Controller for GarbageCollector {
    fn configure(config: &str) -> Result<Self, String> {
        serde_json::from_str(config).map_err(|e| format!("invalid garbage collector configuration: {e}"))
    }

    fn watches(&self) -> Watches {
        let related =
            self.owners.iter().chain(&self.dependents).map(|k| RelatedKind { kind: k.gvk(), maps_to_keys: true });
        Watches { primary: self.kind.gvk(), owned: Vec::new(), others: related.collect() }
    }

    fn map_to_keys(&self, api: &dyn Api, kind: &GroupVersionKind, object: &Value) -> Vec<ObjectKey> {
        let mut keys = Vec::new();
        if self.owners.iter().any(|k| k.is(kind)) && !owner_is_live(api, kind, object) {
            // An owner is gone or being deleted: its dependents of our kind. (A change of a
            // live owner, such as a status update, leaves its dependents as they are.)
            let uid = meta::uid(object).unwrap_or_default();
            let dependents = api.list_owned(&self.kind.gvk(), meta::namespace(object), uid).unwrap_or_default();
            keys.extend(dependents.iter().filter(|d| refers_to(d, uid)).map(ObjectKey::of));
        }
        if self.dependents.iter().any(|k| k.is(kind)) {
            // A dependent changed: its owners of our kind.
            let namespace = meta::namespace(object).map(str::to_owned);
            let owners = meta::owner_references(object).iter().filter(|r| self.kind.matches_reference(r));
            keys.extend(
                owners
                    .filter_map(|r| r.get("name").and_then(Value::as_str))
                    .map(|name| ObjectKey { namespace: namespace.clone(), name: name.to_owned() }),
            );
        }
        keys
    }

    fn reconcile(&self, api: &dyn Api, key: &ObjectKey) -> ReconcileResult {
        match self.collect(api, key) {
            Ok(()) => ReconcileResult::Done,
            Err(e) if e.is_not_found() || e.is_conflict() => ReconcileResult::RequeueAfter(100),
            Err(e) => ReconcileResult::Error(format!("{} ({} {})", e.message, e.code, e.reason)),
        }
    }
}

capstan_plugin_sdk::controller!(GarbageCollector);

/// Whether `owner` (of `kind`), as a change reported it, still exists under its UID and is not
/// being deleted: then nothing about its dependents needs collecting.
fn owner_is_live(api: &dyn Api, kind: &GroupVersionKind, owner: &Value) -> bool {
    if meta::is_terminating(owner) {
        return false;
    }
    let current = api.get(kind, &ObjectKey::of(owner)).ok().flatten();
    current.is_some_and(|current| !meta::is_terminating(&current) && meta::uid(&current) == meta::uid(owner))
}

fn refers_to(object: &Value, uid: &str) -> bool {
    meta::owner_references(object).iter().any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
}

/// What became of one owner reference's target.
enum Owner {
    /// It exists and is not being deleted with a propagation the dependent must follow.
    Alive,
    /// It no longer exists (or a new object took its name).
    Gone,
    /// It is being deleted with `orphan`: drop the reference.
    Orphaning,
    /// It is being deleted in the foreground: delete the dependent in the foreground.
    Foreground,
}

impl GarbageCollector {
    fn collect(&self, api: &dyn Api, key: &ObjectKey) -> Result<(), ApiError> {
        let Some(object) = api.get(&self.kind.gvk(), key)? else { return Ok(()) };
        if meta::is_terminating(&object) {
            return self.finish_owner_deletion(api, &object);
        }
        let references = meta::owner_references(&object);
        if references.is_empty() {
            return Ok(());
        }
        let verdicts: Vec<Owner> =
            references.iter().map(|r| self.owner_state(api, &object, r)).collect::<Result<_, _>>()?;
        let keep = |v: &Owner| matches!(v, Owner::Alive);
        if verdicts.iter().any(|v| matches!(v, Owner::Foreground)) && !verdicts.iter().any(keep) {
            return delete(api, &self.kind, &object, Propagation::Foreground);
        }
        if verdicts.iter().all(|v| matches!(v, Owner::Gone | Owner::Foreground)) {
            return delete(api, &self.kind, &object, Propagation::Background);
        }
        if verdicts.iter().any(|v| matches!(v, Owner::Gone | Owner::Orphaning)) {
            let kept: Vec<Value> = references
                .iter()
                .zip(&verdicts)
                .filter(|(_, v)| keep(v) || matches!(v, Owner::Foreground))
                .map(|(r, _)| r.clone())
                .collect();
            let patch = json!({"metadata": {"ownerReferences": kept, "uid": meta::uid(&object)}});
            api.patch(&self.kind.gvk(), &ObjectKey::of(&object), PatchType::Merge, &patch, None)?;
        }
        Ok(())
    }

    fn owner_state(&self, api: &dyn Api, object: &Value, reference: &Value) -> Result<Owner, ApiError> {
        let Some(owner_kind) = self.owners.iter().find(|k| k.matches_reference(reference)) else {
            // An owner kind this instance does not watch: never presume it gone.
            return Ok(Owner::Alive);
        };
        let name = reference.get("name").and_then(Value::as_str).unwrap_or_default();
        let key = ObjectKey { namespace: meta::namespace(object).map(str::to_owned), name: name.to_owned() };
        let owner = api.get(&owner_kind.gvk(), &key)?;
        let uid = reference.get("uid").and_then(Value::as_str);
        Ok(match owner {
            Some(owner) if meta::uid(&owner) == uid => {
                let finalizers = meta::finalizers(&owner);
                if !meta::is_terminating(&owner) {
                    Owner::Alive
                } else if finalizers.contains(&ORPHAN) {
                    Owner::Orphaning
                } else if finalizers.contains(&FOREGROUND) {
                    Owner::Foreground
                } else {
                    Owner::Alive
                }
            }
            _ => Owner::Gone,
        })
    }

    /// Removes the `orphan` or `foregroundDeletion` finalizer of an owner being deleted once
    /// its dependents allow it.
    fn finish_owner_deletion(&self, api: &dyn Api, owner: &Value) -> Result<(), ApiError> {
        let finalizers = meta::finalizers(owner);
        let uid = meta::uid(owner).unwrap_or_default();
        let mut remaining = Vec::new();
        for kind in &self.dependents {
            let listed = api.list_owned(&kind.gvk(), meta::namespace(owner), uid)?;
            remaining.extend(listed.into_iter().filter(|d| refers_to(d, uid)));
        }
        let mut drop = Vec::new();
        if finalizers.contains(&ORPHAN) && remaining.is_empty() {
            drop.push(ORPHAN);
        }
        let blocking = remaining.iter().any(|d| {
            meta::owner_references(d).iter().any(|r| {
                r.get("uid").and_then(Value::as_str) == Some(uid)
                    && r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true)
            })
        });
        if finalizers.contains(&FOREGROUND) && !blocking {
            drop.push(FOREGROUND);
        }
        if drop.is_empty() {
            return Ok(());
        }
        let mut updated = owner.clone();
        let kept: Vec<&str> = finalizers.into_iter().filter(|f| !drop.contains(f)).collect();
        updated["metadata"]["finalizers"] = json!(kept);
        api.update(&self.kind.gvk(), &updated).map(|_| ())
    }
}

fn delete(api: &dyn Api, kind: &Kind, object: &Value, propagation: Propagation) -> Result<(), ApiError> {
    let options = DeleteOptions {
        propagation: Some(propagation),
        precondition_uid: meta::uid(object).map(str::to_owned),
        precondition_resource_version: None,
    };
    match api.delete(&kind.gvk(), &ObjectKey::of(object), &options) {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use capstan_plugin_sdk::controller::prelude::*;
    use capstan_plugin_sdk::controller::testing::FakeCluster;
    use capstan_plugin_sdk::controller::{Api, Controller, DeleteOptions, ObjectKey, Propagation, meta};
    use serde_json::{Value, json};

    use super::GarbageCollector;

    fn collector(kind: &str, owners: &str, dependents: &str) -> GarbageCollector {
        GarbageCollector::configure(&format!(
            r#"{{"kind": {kind}, "owners": [{owners}], "dependents": [{dependents}]}}"#
        ))
        .unwrap()
    }

    const RS: &str = r#"{"group": "apps", "version": "v1", "kind": "ReplicaSet"}"#;
    const POD: &str = r#"{"version": "v1", "kind": "Pod"}"#;

    fn owned_pod(cluster: &FakeCluster, name: &str, owner: &Value) -> Value {
        let reference = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": meta::name(owner), "uid": meta::uid(owner), "controller": true, "blockOwnerDeletion": true});
        cluster
            .insert(&pod(), json!({"metadata": {"name": name, "namespace": "default", "ownerReferences": [reference]}}))
    }

    fn pod() -> capstan_plugin_sdk::controller::GroupVersionKind {
        capstan_plugin_sdk::controller::GroupVersionKind::new("", "v1", "Pod")
    }

    fn rs_kind() -> capstan_plugin_sdk::controller::GroupVersionKind {
        capstan_plugin_sdk::controller::GroupVersionKind::new("apps", "v1", "ReplicaSet")
    }

    fn pod_key(name: &str) -> ObjectKey {
        ObjectKey::namespaced("default", name)
    }

    #[test]
    fn dependents_follow_their_owners_deletion() {
        // (propagation of the owner's deletion, whether the pod remains, whether it keeps its reference)
        let cases = [
            (None, false, false),
            (Some(Propagation::Orphan), true, false),
            (Some(Propagation::Foreground), false, false),
        ];
        for (propagation, remains, _) in cases {
            let cluster = FakeCluster::new();
            let owner = cluster.insert(&rs_kind(), json!({"metadata": {"name": "web", "namespace": "default"}}));
            owned_pod(&cluster, "p", &owner);
            let gc = collector(POD, RS, "");
            gc.collect(&cluster, &pod_key("p")).unwrap();
            assert!(cluster.get(&pod(), &pod_key("p")).unwrap().is_some(), "a pod with a live owner stays");
            let options = DeleteOptions { propagation, ..DeleteOptions::plain() };
            cluster.delete(&rs_kind(), &pod_key("web"), &options).unwrap();
            gc.collect(&cluster, &pod_key("p")).unwrap();
            let after = cluster.get(&pod(), &pod_key("p")).unwrap();
            let alive = after.as_ref().is_some_and(|p| !meta::is_terminating(p));
            assert_eq!(alive, remains, "{propagation:?}");
            if let Some(p) = after.filter(|_| remains) {
                assert!(meta::owner_references(&p).is_empty(), "orphaned pods lose the reference");
            }
        }
    }

    #[test]
    fn owners_keep_their_finalizer_until_dependents_allow() {
        for (propagation, finalizer) in
            [(Propagation::Orphan, "orphan"), (Propagation::Foreground, "foregroundDeletion")]
        {
            let cluster = FakeCluster::new();
            let owner = cluster.insert(&rs_kind(), json!({"metadata": {"name": "web", "namespace": "default"}}));
            owned_pod(&cluster, "p", &owner);
            let options = DeleteOptions { propagation: Some(propagation), ..DeleteOptions::plain() };
            cluster.delete(&rs_kind(), &pod_key("web"), &options).unwrap();
            let owner_gc = collector(RS, "", POD);
            owner_gc.collect(&cluster, &pod_key("web")).unwrap();
            let held = cluster.get(&rs_kind(), &pod_key("web")).unwrap().unwrap();
            assert!(meta::finalizers(&held).contains(&finalizer), "{finalizer} held while the pod refers to it");
            collector(POD, RS, "").collect(&cluster, &pod_key("p")).unwrap();
            if finalizer == "foregroundDeletion" {
                // The fake cluster holds the pod under its own foreground finalizer; drop it.
                cluster.modify(&pod(), &pod_key("p"), |p| p["metadata"]["ownerReferences"] = json!([]));
            }
            owner_gc.collect(&cluster, &pod_key("web")).unwrap();
            assert!(cluster.get(&rs_kind(), &pod_key("web")).unwrap().is_none(), "{finalizer} removed, owner gone");
        }
    }

    #[test]
    fn map_to_keys_finds_dependents_and_owners() {
        let cluster = FakeCluster::new();
        let owner = cluster.insert(&rs_kind(), json!({"metadata": {"name": "web", "namespace": "default"}}));
        let dependent = owned_pod(&cluster, "p", &owner);
        let gc = collector(POD, RS, "");
        assert_eq!(gc.map_to_keys(&cluster, &rs_kind(), &owner), vec![], "a live owner's change leaves them be");
        let mut terminating = owner.clone();
        terminating["metadata"]["deletionTimestamp"] = json!("2026-11-23T21:00:00Z");
        assert_eq!(gc.map_to_keys(&cluster, &rs_kind(), &terminating), vec![pod_key("p")], "an owner being deleted");
        cluster.delete(&rs_kind(), &pod_key("web"), &DeleteOptions::plain()).unwrap();
        assert_eq!(gc.map_to_keys(&cluster, &rs_kind(), &owner), vec![pod_key("p")], "an owner gone");
        let keys = collector(RS, "", POD).map_to_keys(&cluster, &pod(), &dependent);
        assert_eq!(keys, vec![pod_key("web")]);
    }
}
