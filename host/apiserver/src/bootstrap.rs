//! The objects every cluster starts with (the system namespaces and the `kubernetes` Service).

use serde_json::{Value, json};

use crate::meta;
use crate::objects::ObjectRef;
use crate::server::ApiServer;
use crate::status::{ApiError, ApiResult};

impl ApiServer {
    /// Creates `object` unless an object of that name exists.
    async fn ensure(&self, plural: &str, namespace: Option<&str>, mut object: Value) -> ApiResult<()> {
        let info = Self::resource("", "v1", plural)?;
        let name = meta::meta_str(&object, "name").unwrap_or_default().to_string();
        let target = ObjectRef { info, namespace: namespace.map(str::to_string), name };
        if self.objects.get_kv(&target).await?.is_some() {
            return Ok(());
        }
        let metadata = meta::metadata_mut(&mut object);
        metadata.insert("uid".into(), json!(meta::new_uid()));
        metadata.insert("creationTimestamp".into(), json!(meta::now()));
        if let Some(ns) = namespace {
            metadata.insert("namespace".into(), json!(ns));
        }
        object["kind"] = json!(info.gvk.kind);
        object["apiVersion"] = json!(info.group_version());
        self.defaults.apply(info, &mut object);
        match self.objects.create(&target, &object).await {
            Ok(_) | Err(ApiError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The namespaces and the `kubernetes` Service every cluster has.
    pub(crate) async fn bootstrap(&self) -> ApiResult<()> {
        for namespace in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            self.ensure("namespaces", None, json!({"metadata": {"name": namespace}})).await?;
        }
        let port = self.server_address.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(6443);
        let service = json!({
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": "10.96.0.1",
                "clusterIPs": ["10.96.0.1"],
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
            },
        });
        self.ensure("services", Some("default"), service).await
    }
}
