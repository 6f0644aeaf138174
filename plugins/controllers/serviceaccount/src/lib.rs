//! The ServiceAccount controller and the root CA publisher as one Capstan component: every
//! active namespace has a `default` ServiceAccount (recreated if deleted) and, when the
//! configuration gives the cluster CA (`{"rootCA": "-----BEGIN CERTIFICATE-----…"}`), the
//! `kube-root-ca.crt` ConfigMap that projected service-account token volumes mount.
//!
//! Start with [`reconcile`].

use capstan_plugin_sdk::controller::kinds::{config_map, namespace, service_account};
use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::{
    Api, ApiError, Controller, GroupVersionKind, ObjectKey, ReconcileResult, RelatedKind, Watches, meta, outcome,
};
use serde_json::{Value, json};

/// The ConfigMap the root CA is published in.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";

/// The ServiceAccount controller.
pub struct ServiceAccountController {
    root_ca: Option<String>,
}

impl Controller for ServiceAccountController {
    fn configure(config: &str) -> Result<Self, String> {
        let config: Value = serde_json::from_str(config).map_err(|e| format!("invalid configuration: {e}"))?;
        let root_ca = config.get("rootCA").and_then(Value::as_str).filter(|c| !c.is_empty()).map(str::to_owned);
        Ok(Self { root_ca })
    }

    fn watches(&self) -> Watches {
        let mut others = vec![RelatedKind { kind: service_account(), maps_to_keys: true }];
        if self.root_ca.is_some() {
            others.push(RelatedKind { kind: config_map(), maps_to_keys: true });
        }
        Watches { primary: namespace(), owned: Vec::new(), others }
    }

    fn map_to_keys(&self, _api: &dyn Api, kind: &GroupVersionKind, object: &Value) -> Vec<ObjectKey> {
        let ours = match kind.kind.as_str() {
            "ServiceAccount" => meta::name(object) == "default",
            _ => meta::name(object) == ROOT_CA_CONFIG_MAP,
        };
        let namespace = meta::namespace(object).filter(|_| ours);
        namespace.map(|n| ObjectKey { namespace: None, name: n.to_owned() }).into_iter().collect()
    }

    fn reconcile(&self, api: &dyn Api, key: &ObjectKey) -> ReconcileResult {
        outcome(reconcile(api, key, self.root_ca.as_deref()).map(|()| None::<u64>))
    }
}

capstan_plugin_sdk::controller!(ServiceAccountController);

/// Makes sure namespace `key` (when it exists and is not being deleted) has its `default`
/// ServiceAccount and, given `root_ca`, an up-to-date `kube-root-ca.crt`.
pub fn reconcile(api: &dyn Api, key: &ObjectKey, root_ca: Option<&str>) -> Result<(), ApiError> {
    let Some(ns) = api.get(&namespace(), key)? else { return Ok(()) };
    if meta::is_terminating(&ns) || ns.pointer("/status/phase") == Some(&json!("Terminating")) {
        return Ok(());
    }
    let name = key.name.as_str();
    if api.get(&service_account(), &ObjectKey::namespaced(name, "default"))?.is_none() {
        let account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                             "metadata": {"name": "default", "namespace": name}});
        create_unless_exists(api, &service_account(), &account)?;
    }
    let Some(root_ca) = root_ca else { return Ok(()) };
    let data = json!({"ca.crt": root_ca});
    match api.get(&config_map(), &ObjectKey::namespaced(name, ROOT_CA_CONFIG_MAP))? {
        Some(current) if current.get("data") == Some(&data) => {}
        Some(mut current) => {
            current["data"] = data;
            api.update(&config_map(), &current)?;
        }
        None => {
            let object = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": ROOT_CA_CONFIG_MAP, "namespace": name,
                             "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                "data": data});
            create_unless_exists(api, &config_map(), &object)?;
        }
    }
    Ok(())
}

fn create_unless_exists(api: &dyn Api, kind: &GroupVersionKind, object: &Value) -> Result<(), ApiError> {
    match api.create(kind, object) {
        Err(e) if !e.is_conflict() => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use capstan_plugin_sdk::controller::prelude::*;
    use capstan_plugin_sdk::controller::testing::FakeCluster;
    use capstan_plugin_sdk::controller::{Controller, ObjectKey, meta};
    use serde_json::json;

    use super::{ServiceAccountController, config_map, namespace, reconcile, service_account};

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn key(name: &str) -> ObjectKey {
        ObjectKey { namespace: None, name: name.into() }
    }

    #[test]
    fn active_namespaces_get_a_default_account_and_the_root_ca() {
        let cluster = FakeCluster::new();
        cluster.insert(&namespace(), json!({"metadata": {"name": "team"}, "status": {"phase": "Active"}}));
        reconcile(&cluster, &key("team"), Some(CA)).unwrap_or_else(|e| panic!("{}", e.message));
        let accounts = cluster.all(&service_account());
        assert_eq!((meta::name(&accounts[0]), meta::namespace(&accounts[0])), ("default", Some("team")));
        let maps = cluster.all(&config_map());
        assert_eq!(maps[0]["data"]["ca.crt"], CA);
        assert_eq!(meta::name(&maps[0]), "kube-root-ca.crt");

        // A stale CA is replaced; a second pass changes nothing.
        cluster.modify(&config_map(), &ObjectKey::namespaced("team", "kube-root-ca.crt"), |m| {
            m["data"]["ca.crt"] = json!("old");
        });
        reconcile(&cluster, &key("team"), Some(CA)).unwrap_or_else(|e| panic!("{}", e.message));
        reconcile(&cluster, &key("team"), Some(CA)).unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(cluster.all(&config_map())[0]["data"]["ca.crt"], CA);
        assert_eq!(cluster.all(&service_account()).len(), 1);
    }

    #[test]
    fn terminating_or_missing_namespaces_get_nothing() {
        let cluster = FakeCluster::new();
        cluster.insert(&namespace(), json!({"metadata": {"name": "going"}, "status": {"phase": "Terminating"}}));
        reconcile(&cluster, &key("going"), Some(CA)).unwrap_or_else(|e| panic!("{}", e.message));
        reconcile(&cluster, &key("absent"), Some(CA)).unwrap_or_else(|e| panic!("{}", e.message));
        assert!(cluster.all(&service_account()).is_empty() && cluster.all(&config_map()).is_empty());
    }

    #[test]
    fn only_the_default_account_and_the_ca_map_lead_back_to_their_namespace() {
        let cluster = FakeCluster::new();
        let controller =
            ServiceAccountController::configure(&json!({"rootCA": CA}).to_string()).unwrap_or_else(|e| panic!("{e}"));
        let default = json!({"metadata": {"name": "default", "namespace": "team"}});
        let other = json!({"metadata": {"name": "builder", "namespace": "team"}});
        let ca = json!({"metadata": {"name": "kube-root-ca.crt", "namespace": "team"}});
        assert_eq!(controller.map_to_keys(&cluster, &service_account(), &default), vec![key("team")]);
        assert!(controller.map_to_keys(&cluster, &service_account(), &other).is_empty());
        assert_eq!(controller.map_to_keys(&cluster, &config_map(), &ca), vec![key("team")]);
        assert_eq!(controller.watches().others.len(), 2, "ConfigMaps are watched only with a CA to publish");
    }
}
