//! The catalog of what the server serves — built-in resources plus those `CustomResourceDefinition`s
//! define — and keeping it in step with the stored CRDs.

use std::sync::Arc;

use capstan_api::openapi::OpenApi;
use capstan_api::{Registry, ResourceInfo};
use serde_json::{Value, json};

use crate::meta;
use crate::objects::ObjectRef;
use crate::server::ApiServer;
use crate::status::{ApiError, ApiResult};

/// What the server serves right now: the resources and their OpenAPI documents. Replaced as a
/// whole when a `CustomResourceDefinition` changes; each request works on one snapshot.
pub struct Catalog {
    /// Served resources.
    pub registry: Registry,
    /// OpenAPI documents and schemas.
    pub openapi: OpenApi,
}

impl Catalog {
    /// The built-in resources plus those of `crds`.
    pub fn build(crds: &[Value]) -> Result<Self, String> {
        let registry = Registry::builtin().with_custom_resources(crds);
        let openapi = OpenApi::build(&registry).map_err(|e| e.to_string())?;
        Ok(Catalog { registry, openapi })
    }
}

impl ApiServer {
    /// Rebuilds the catalog from the stored `CustomResourceDefinitions`, then marks each CRD
    /// Established with its accepted names, as kube-apiserver's CRD controllers do.
    pub async fn reload_custom_resources(&self) -> ApiResult<()> {
        let catalog = self.catalog();
        let crd_info = catalog
            .registry
            .lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .ok_or_else(|| ApiError::Internal("customresourcedefinitions are not registered".into()))?;
        let crds = self.objects.list(crd_info, None, None, None, None).await?.items;
        let live: Vec<Value> =
            crds.iter().filter(|c| c.pointer("/metadata/deletionTimestamp").is_none()).cloned().collect();
        let built = tokio::task::spawn_blocking(move || Catalog::build(&live))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(ApiError::Internal)?;
        let new = Arc::new(built);
        match self.catalog.write() {
            Ok(mut current) => *current = Arc::clone(&new),
            Err(poisoned) => *poisoned.into_inner() = Arc::clone(&new),
        }
        let crd_info = new
            .registry
            .lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .ok_or_else(|| ApiError::Internal("customresourcedefinitions are not registered".into()))?;
        for crd in crds {
            self.mark_established(crd_info, crd).await?;
        }
        Ok(())
    }

    async fn mark_established(&self, info: &ResourceInfo, crd: Value) -> ApiResult<()> {
        let name = meta::meta_str(&crd, "name").unwrap_or_default().to_string();
        let revision = meta::meta_str(&crd, "resourceVersion")
            .map(crate::objects::parse_resource_version)
            .transpose()?
            .unwrap_or_default();
        let mut updated = crd.clone();
        meta::metadata_mut(&mut updated).remove("resourceVersion");
        let now = meta::now();
        let condition = |kind: &str, reason: &str, message: &str| json!({"type": kind, "status": "True", "lastTransitionTime": now, "reason": reason, "message": message});
        let stored: Vec<Value> = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|v| v["storage"].as_bool() == Some(true))
            .map(|v| v["name"].clone())
            .collect();
        let mut status = json!({
            "conditions": [
                condition("NamesAccepted", "NoConflicts", "no conflicts found"),
                condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            ],
            "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or_default(),
            "storedVersions": stored,
        });
        // Keep transition times of conditions that were already true.
        if let Some(old) = crd.pointer("/status/conditions").and_then(Value::as_array)
            && let Some(list) = status["conditions"].as_array_mut()
        {
            for c in list.iter_mut() {
                if let Some(prev) = old.iter().find(|o| o["type"] == c["type"] && o["status"] == "True") {
                    c["lastTransitionTime"] = prev["lastTransitionTime"].clone();
                }
            }
        }
        if crd.get("status") == Some(&status) {
            return Ok(());
        }
        updated["status"] = status;
        let target = ObjectRef { info, namespace: None, name };
        match self.objects.replace(&target, revision, &updated).await {
            Ok(_) | Err(ApiError::Conflict(..) | ApiError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Re-registers custom resources after a CRD write, and removes the objects of resources
    /// whose definition went away.
    pub(crate) async fn custom_resources_changed(&self, before: &Catalog) -> ApiResult<()> {
        self.reload_custom_resources().await?;
        let after = self.catalog();
        for info in before.registry.resources().iter().filter(|r| Registry::is_custom(r)) {
            let still_served = after.registry.resources().iter().any(|r| r.storage_resource == info.storage_resource);
            if !still_served {
                self.purge_custom_objects(info.storage_resource).await?;
            }
        }
        Ok(())
    }

    /// Removes every object of a custom resource whose definition is gone.
    async fn purge_custom_objects(&self, storage_resource: &str) -> ApiResult<()> {
        let store = self.objects.store();
        let prefix = format!("/{storage_resource}/").into_bytes();
        let listed = store.range(capstan_store::RangeRequest::new(capstan_store::KeyRange::prefix(prefix))).await?;
        for kv in listed.kvs {
            let _ = store.compare_and_delete(&kv.key, kv.mod_revision).await?;
        }
        Ok(())
    }
}
