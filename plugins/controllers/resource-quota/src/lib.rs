//! The resource quota controller as a Capstan component, as kube-controller-manager's
//! `resourcequota` controller: it publishes each `ResourceQuota`'s `spec.hard` as `status.hard`
//! and recomputes `status.used` from the objects that exist, so that usage the `resource-quota`
//! admission policy charged does not leak when a pod finishes, when a charged create fails later
//! in the admission chain or in storage, or when a quota is created where pods already run.
//!
//! What triggers a recomputation, as upstream:
//! - a change of the quota itself (a new quota, new limits);
//! - replenishment: a pod deleted or moved to `Succeeded`/`Failed`, and any change of the other
//!   kinds a quota counts (`configmaps`, `count/secrets`, `services.nodeports`, …; admission
//!   charges their creates and deletes, but not, say, a service that becomes a `NodePort`);
//! - a full resync of every quota every `resyncSeconds` (upstream's 5 minutes).
//!
//! A quota with scopes (`spec.scopes`, `spec.scopeSelector`) counts only the pods they select
//! (`capstan_plugin_sdk::quota::Scopes`), as the admission policy charges them.
//!
//! Admission charges a pod before the pod is stored, and this controller reads pods from an
//! informer cache that trails the store: a recomputation right after a charge would not see the
//! pod yet and would hand its unit out a second time. So a usage that differs from what
//! admission recorded is only written once the quota has stayed at the same resourceVersion for
//! `settleSeconds` (no charge meanwhile, so every charged pod is stored and cached), and only
//! with a compare-and-swap on that resourceVersion (a charge that lands in between wins and the
//! recomputation starts over). New limits are published at once; usage already charged under
//! them is kept until it settles.
//!
//! Start with [`QuotaController::sync`].

use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::{
    Api, ApiError, Controller, GroupVersionKind, ListOptions, ObjectKey, ReconcileResult, RelatedKind, Watches, meta,
};
use capstan_plugin_sdk::quota::{self, COUNTED, Counted, Scopes, Usage};
use serde::Deserialize;
use serde_json::{Value, json};

/// The controller's configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Config {
    /// Every quota is recomputed this often even without a trigger (upstream's
    /// `--resource-quota-sync-period`, 5 minutes).
    pub resync_seconds: u64,
    /// How long a quota must go without a charge before a differing usage is written.
    pub settle_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self { resync_seconds: 300, settle_seconds: 2 }
    }
}

/// The resource quota controller.
pub struct QuotaController {
    config: Config,
}

fn quota_kind() -> GroupVersionKind {
    GroupVersionKind::new("", "v1", "ResourceQuota")
}

fn kind_of(counted: &Counted) -> GroupVersionKind {
    GroupVersionKind::new(counted.group, counted.version, counted.kind)
}

fn counted_of(kind: &GroupVersionKind) -> Option<&'static Counted> {
    COUNTED.iter().find(|c| c.group == kind.group && c.kind == kind.kind)
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Controller for QuotaController {
    fn configure(config: &str) -> Result<Self, String> {
        let config = serde_json::from_str(config).map_err(|e| format!("invalid resource quota configuration: {e}"))?;
        Ok(Self { config })
    }

    fn watches(&self) -> Watches {
        Watches {
            primary: quota_kind(),
            owned: Vec::new(),
            others: COUNTED.iter().map(|c| RelatedKind { kind: kind_of(c), maps_to_keys: true }).collect(),
        }
    }

    /// Replenishment: the quotas of the object's namespace that count its kind, when the change
    /// can lower or raise their usage beyond what admission charged.
    fn map_to_keys(&self, api: &dyn Api, kind: &GroupVersionKind, object: &Value) -> Vec<ObjectKey> {
        let (Some(counted), Some(namespace)) = (counted_of(kind), meta::namespace(object)) else { return Vec::new() };
        // Most namespaces have no quota: that answer needs no look at the object.
        let quotas: Vec<ObjectKey> = api
            .list(&quota_kind(), &ListOptions::in_namespace(Some(namespace)))
            .unwrap_or_default()
            .iter()
            .filter(|q| hard(q).keys().any(|resource| quota::sources(resource).contains(&counted)))
            .map(ObjectKey::of)
            .collect();
        let charged_pod = !quotas.is_empty()
            && counted.kind == "Pod"
            && quota::counts(object)
            && api.get(kind, &ObjectKey::of(object)).ok().flatten().is_some();
        // A pod created or running is what admission charged: nothing to recompute.
        if charged_pod { Vec::new() } else { quotas }
    }

    fn reconcile(&self, api: &dyn Api, key: &ObjectKey) -> ReconcileResult {
        match self.sync(api, key, now_millis()) {
            Ok(Some(millis)) => ReconcileResult::RequeueAfter(millis),
            Ok(None) => ReconcileResult::Done,
            Err(e) if e.is_conflict() || e.is_not_found() => ReconcileResult::RequeueAfter(200),
            Err(e) => ReconcileResult::Error(format!("{} ({} {})", e.message, e.code, e.reason)),
        }
    }
}

capstan_plugin_sdk::controller!(QuotaController);

fn hard(quota: &Value) -> Usage {
    quota::quantities(quota.pointer("/spec/hard"))
}

/// What the namespace's objects that `quota`'s scopes select use of the resources `hard`
/// limits; resources no tracked kind provides keep what `used` says (0 when nothing).
fn compute(api: &dyn Api, quota: &Value, hard: &Usage, used: &Usage) -> Result<Usage, ApiError> {
    let namespace = meta::namespace(quota);
    let totals = quota::compute(hard, &Scopes::of(quota), |counted| {
        api.list(&kind_of(counted), &ListOptions::in_namespace(namespace))
    })?;
    Ok(hard
        .keys()
        .map(|resource| {
            let amount = totals.get(resource).or_else(|| used.get(resource));
            (resource.clone(), amount.copied().unwrap_or(0))
        })
        .collect())
}

/// Under which key the host remembers a quota waiting to settle.
fn settling_key((namespace, name): &(String, String)) -> String {
    format!("settling/{namespace}/{name}")
}

/// The resourceVersion quota `id` was seen at with a differing usage, and since when
/// (milliseconds); kept in the host so every instance and version of the component shares it.
fn settling_since(api: &dyn Api, id: &(String, String)) -> Option<(String, u64)> {
    let kept = api.recall(&settling_key(id))?;
    let (version, since) = kept.rsplit_once(' ')?;
    Some((version.to_owned(), since.parse().ok()?))
}

/// Starts (or with `None` ends) the wait of quota `id` to settle.
fn settling(api: &dyn Api, id: &(String, String), since: Option<(&str, u64)>) -> Result<(), ApiError> {
    let kept = since.map(|(version, at)| format!("{version} {at}"));
    api.remember(&settling_key(id), kept.as_deref())
}

impl QuotaController {
    /// Brings quota `key`'s status up to date at `now` (milliseconds since the epoch); returns
    /// after how many milliseconds to look again.
    pub fn sync(&self, api: &dyn Api, key: &ObjectKey, now: u64) -> Result<Option<u64>, ApiError> {
        let id = (key.namespace.clone().unwrap_or_default(), key.name.clone());
        let Some(quota) = api.get(&quota_kind(), key)? else {
            settling(api, &id, None)?;
            return Ok(None);
        };
        let resync = Some(self.config.resync_seconds.saturating_mul(1000));
        let settle = self.config.settle_seconds.saturating_mul(1000);
        let hard = hard(&quota);
        let published = quota::quantities(quota.pointer("/status/hard"));
        let used = quota::quantities(quota.pointer("/status/used"));
        if published != hard || hard.keys().any(|r| !used.contains_key(r)) {
            // New limits are published at once; what admission already charged stays.
            let computed = compute(api, &quota, &hard, &used)?;
            let next: Usage = computed.iter().map(|(r, amount)| (r.clone(), *used.get(r).unwrap_or(amount))).collect();
            write(api, &quota, &next)?;
            return Ok(if next == computed { resync } else { Some(settle) });
        }
        let version = quota.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default().to_owned();
        // A quota already waiting to settle is not recomputed before it has: during a burst of
        // creates every charge triggers a look, and each would list the namespace's pods.
        let settled = match settling_since(api, &id) {
            Some((seen, since)) if seen == version => {
                let waited = now.saturating_sub(since);
                if waited < settle {
                    return Ok(Some(settle - waited));
                }
                true
            }
            Some(_) => {
                settling(api, &id, Some((&version, now)))?;
                return Ok(Some(settle));
            }
            None => false,
        };
        let computed = compute(api, &quota, &hard, &used)?;
        let recorded: Usage = hard.keys().map(|r| (r.clone(), used.get(r).copied().unwrap_or(0))).collect();
        if computed == recorded {
            settling(api, &id, None)?;
            return Ok(resync);
        }
        if !settled {
            settling(api, &id, Some((&version, now)))?;
            return Ok(Some(settle));
        }
        settling(api, &id, None)?;
        write(api, &quota, &computed)?;
        Ok(resync)
    }
}

/// Replaces the quota's status, at the resourceVersion it was read at: `hard` as `spec.hard`
/// writes it (`1Gi` stays `1Gi`), `used` as Kubernetes prints quantities.
fn write(api: &dyn Api, quota: &Value, used: &Usage) -> Result<(), ApiError> {
    let mut next = quota.clone();
    let hard = quota.pointer("/spec/hard").cloned().unwrap_or_else(|| json!({}));
    next["status"] = json!({"hard": hard, "used": quota::to_json(used)});
    api.update_status(&quota_kind(), &next).map(|_| ())
}

#[cfg(test)]
mod tests {
    use capstan_plugin_sdk::controller::prelude::*;
    use capstan_plugin_sdk::controller::testing::FakeCluster;
    use capstan_plugin_sdk::controller::{Api, Controller, GroupVersionKind, ObjectKey, kinds};
    use serde_json::{Value, json};

    use super::{Config, QuotaController, quota_kind};

    const NOW: u64 = 1_795_000_000_000;

    fn controller() -> QuotaController {
        QuotaController::configure("{}").unwrap()
    }

    fn quota(cluster: &FakeCluster, hard: &Value, status: Option<Value>) -> ObjectKey {
        let mut object = json!({"metadata": {"name": "q", "namespace": "ns"}, "spec": {"hard": hard}});
        if let Some(status) = status {
            object["status"] = status;
        }
        ObjectKey::of(&cluster.insert(&quota_kind(), object))
    }

    fn pod(cluster: &FakeCluster, name: &str, phase: &str, cpu: &str) -> ObjectKey {
        let object = json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"containers": [{"resources": {"requests": {"cpu": cpu}}}]},
            "status": {"phase": phase},
        });
        ObjectKey::of(&cluster.insert(&kinds::pod(), object))
    }

    fn status(cluster: &FakeCluster, key: &ObjectKey) -> Value {
        cluster.get(&quota_kind(), key).unwrap().unwrap()["status"].clone()
    }

    #[test]
    fn configuration_defaults_to_upstream_resync() {
        assert_eq!(controller().config, Config { resync_seconds: 300, settle_seconds: 2 });
        assert!(QuotaController::configure(r#"{"period": 1}"#).is_err(), "unknown fields are refused");
    }

    #[test]
    fn a_new_quota_publishes_hard_and_the_usage_of_what_exists() {
        // (hard, objects: (name, phase, cpu), expected used)
        let cases = [
            (json!({"pods": "5"}), vec![("a", "Running", "100m"), ("b", "Pending", "1")], json!({"pods": "2"})),
            (
                json!({"pods": "5", "requests.cpu": "2"}),
                vec![("a", "Running", "100m"), ("b", "Succeeded", "1")],
                json!({"pods": "1", "requests.cpu": "100m"}),
            ),
            (json!({"cpu": "1", "nvidia.com/gpu": "1"}), vec![], json!({"cpu": "0", "nvidia.com/gpu": "0"})),
        ];
        for (hard, pods, used) in cases {
            let cluster = FakeCluster::new();
            for (name, phase, cpu) in pods {
                pod(&cluster, name, phase, cpu);
            }
            let key = quota(&cluster, &hard, None);
            let again = controller().sync(&cluster, &key, NOW).unwrap();
            assert_eq!(status(&cluster, &key), json!({"hard": hard, "used": used}));
            assert_eq!(again, Some(300_000), "then only the periodic resync");
        }
    }

    #[test]
    fn a_lower_usage_is_written_only_once_the_quota_has_settled() {
        let cluster = FakeCluster::new();
        pod(&cluster, "a", "Running", "0");
        pod(&cluster, "done", "Succeeded", "0");
        // Admission charged three pods; one finished and one create was refused after its charge.
        let key = quota(&cluster, &json!({"pods": "3"}), Some(json!({"hard": {"pods": "3"}, "used": {"pods": "3"}})));
        let controller = controller();
        // (milliseconds after the first look, charge in between, expected wait, expected used)
        let steps = [(0, false, Some(2000), "3"), (1500, false, Some(500), "3"), (1600, true, Some(2000), "3")];
        for (after, charged, wait, used) in steps {
            if charged {
                charge(&cluster, &key, "3");
            }
            assert_eq!(controller.sync(&cluster, &key, NOW + after).unwrap(), wait, "at {after} ms");
            assert_eq!(status(&cluster, &key)["used"]["pods"], used, "at {after} ms");
        }
        assert_eq!(controller.sync(&cluster, &key, NOW + 3600).unwrap(), Some(300_000));
        assert_eq!(status(&cluster, &key)["used"]["pods"], "1", "settled: only the running pod counts");
    }

    /// Sets the quota's `used.pods` as admission does: a status write that moves its
    /// resourceVersion.
    fn charge(cluster: &FakeCluster, key: &ObjectKey, pods: &str) {
        let mut quota = cluster.get(&quota_kind(), key).unwrap().unwrap();
        quota["status"]["used"]["pods"] = json!(pods);
        cluster.update_status(&quota_kind(), &quota).unwrap();
    }

    #[test]
    fn a_charge_racing_the_recomputation_wins() {
        let cluster = FakeCluster::new();
        let key = quota(&cluster, &json!({"pods": "3"}), Some(json!({"hard": {"pods": "3"}, "used": {"pods": "1"}})));
        let controller = controller();
        assert_eq!(controller.sync(&cluster, &key, NOW).unwrap(), Some(2000), "no pod cached yet: wait");
        // Settled by the clock, but a pod is charged between the read and the write: the write
        // must not take its unit back.
        cluster.after_next_get(|cluster, kind, key| {
            if *kind == quota_kind() {
                charge(cluster, key, "2");
            }
        });
        let error = controller.sync(&cluster, &key, NOW + 2000).unwrap_err();
        assert!(error.is_conflict(), "{error:?}");
        assert_eq!(status(&cluster, &key)["used"]["pods"], "2");
        assert_eq!(controller.sync(&cluster, &key, NOW + 2100).unwrap(), Some(2000), "the new charge waits again");
    }

    #[test]
    fn new_limits_are_published_at_once_keeping_what_was_charged() {
        let cluster = FakeCluster::new();
        pod(&cluster, "a", "Running", "250m");
        let key = quota(
            &cluster,
            &json!({"pods": "9", "requests.cpu": "1"}),
            Some(json!({"hard": {"pods": "3"}, "used": {"pods": "2"}})),
        );
        let wait = controller().sync(&cluster, &key, NOW).unwrap();
        assert_eq!(
            status(&cluster, &key),
            json!({"hard": {"pods": "9", "requests.cpu": "1"}, "used": {"pods": "2", "requests.cpu": "250m"}})
        );
        assert_eq!(wait, Some(2000), "the pod count still differs, so it is looked at again");
    }

    #[test]
    fn object_counts_are_tracked_under_their_upstream_names() {
        let cluster = FakeCluster::new();
        let config_map = GroupVersionKind::new("", "v1", "ConfigMap");
        let secret = GroupVersionKind::new("", "v1", "Secret");
        for name in ["a", "b"] {
            cluster.insert(&config_map, json!({"metadata": {"name": name, "namespace": "ns"}}));
        }
        cluster.insert(&config_map, json!({"metadata": {"name": "elsewhere", "namespace": "other"}}));
        cluster.insert(&secret, json!({"metadata": {"name": "s", "namespace": "ns"}}));
        let hard = json!({"count/configmaps": "5", "configmaps": "5", "secrets": "1"});
        let key = quota(&cluster, &hard, None);
        controller().sync(&cluster, &key, NOW).unwrap();
        assert_eq!(status(&cluster, &key)["used"], json!({"count/configmaps": "2", "configmaps": "2", "secrets": "1"}));
    }

    #[test]
    fn replenishment_maps_finished_and_deleted_pods_to_their_quotas_only() {
        let cluster = FakeCluster::new();
        let controller = controller();
        quota(&cluster, &json!({"pods": "3"}), None);
        let running = pod(&cluster, "run", "Running", "0");
        let finished = pod(&cluster, "done", "Succeeded", "0");
        let map = |key: &ObjectKey, object: Option<Value>| {
            let object = object.unwrap_or_else(|| cluster.get(&kinds::pod(), key).unwrap().unwrap());
            controller.map_to_keys(&cluster, &kinds::pod(), &object).iter().map(|k| k.name.clone()).collect::<Vec<_>>()
        };
        assert!(map(&running, None).is_empty(), "a running pod was charged by admission");
        assert_eq!(map(&finished, None), ["q"]);
        let gone = json!({"metadata": {"name": "gone", "namespace": "ns"}, "status": {"phase": "Running"}});
        assert_eq!(map(&running, Some(gone)), ["q"], "a deleted pod is no longer in the cache");
        let config_map = json!({"metadata": {"name": "c", "namespace": "ns"}});
        let mapped = controller.map_to_keys(&cluster, &GroupVersionKind::new("", "v1", "ConfigMap"), &config_map);
        assert!(mapped.is_empty(), "the quota does not count config maps");
    }

    #[test]
    fn a_scoped_quota_counts_only_the_pods_its_scopes_select() {
        // (scopes part of the spec, expected pods used) over: a best-effort pod, a burstable
        // one, a best-effort pod of priority class `high`.
        let cases = [
            (json!({}), "3"),
            (json!({"scopes": ["BestEffort"]}), "2"),
            (json!({"scopes": ["NotBestEffort"]}), "1"),
            (
                json!({"scopeSelector": {"matchExpressions": [
                {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}),
                "1",
            ),
            (
                json!({"scopes": ["BestEffort"], "scopeSelector": {"matchExpressions": [
                {"scopeName": "PriorityClass", "operator": "DoesNotExist"}]}}),
                "1",
            ),
        ];
        for (scopes, expected) in cases {
            let cluster = FakeCluster::new();
            pod(&cluster, "burstable", "Running", "100m");
            for (name, class) in [("plain", None), ("important", Some("high"))] {
                let mut object = json!({"metadata": {"name": name, "namespace": "ns"}, "spec": {"containers": [{}]}});
                if let Some(class) = class {
                    object["spec"]["priorityClassName"] = json!(class);
                }
                cluster.insert(&kinds::pod(), object);
            }
            let mut spec = scopes.clone();
            spec["hard"] = json!({"pods": "9"});
            let key = ObjectKey::of(
                &cluster.insert(&quota_kind(), json!({"metadata": {"name": "q", "namespace": "ns"}, "spec": spec})),
            );
            controller().sync(&cluster, &key, NOW).unwrap();
            assert_eq!(status(&cluster, &key)["used"]["pods"], expected, "{scopes}");
        }
    }
}
