//! Objects in the store: keys, resourceVersions, and the write rules every kind shares
//! (create, update with optimistic concurrency, status updates, finalizers, deletion).

use std::sync::Arc;

use capstan_api::ResourceInfo;
use capstan_store::{KeyRange, KeyValue, RangeRequest, Revision, Store};
use serde_json::{Value, json};

use crate::meta;
use crate::status::{ApiError, ApiResult, Target};

/// Where an object lives: its resource, namespace and name.
#[derive(Clone, Debug)]
pub struct ObjectRef<'a> {
    /// The resource.
    pub info: &'a ResourceInfo,
    /// The namespace, for namespaced resources.
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
}

impl<'a> ObjectRef<'a> {
    /// Where a stored object of resource `info` lives, from its own metadata.
    #[must_use]
    pub fn of(info: &'a ResourceInfo, object: &Value) -> Self {
        ObjectRef {
            info,
            namespace: meta::meta_str(object, "namespace").map(str::to_string),
            name: meta::meta_str(object, "name").unwrap_or_default().to_string(),
        }
    }

    /// The store key: `/<resource>/<namespace>/<name>` or `/<resource>/<name>`.
    #[must_use]
    pub fn key(&self) -> Vec<u8> {
        match &self.namespace {
            Some(ns) => format!("/{}/{}/{}", self.info.storage_resource, ns, self.name).into_bytes(),
            None => format!("/{}/{}", self.info.storage_resource, self.name).into_bytes(),
        }
    }

    /// The error target naming this object.
    #[must_use]
    pub fn target(&self) -> Target {
        target(self.info, &self.name)
    }
}

/// The error target for `name` of resource `info`.
#[must_use]
pub fn target(info: &ResourceInfo, name: &str) -> Target {
    let resource =
        if info.gvk.group.is_empty() { info.plural.to_string() } else { format!("{}.{}", info.plural, info.gvk.group) };
    Target { resource, group: info.gvk.group.to_string(), kind: info.gvk.kind.to_string(), name: name.to_string() }
}

/// The key prefix of a resource, optionally within one namespace.
#[must_use]
pub fn prefix(info: &ResourceInfo, namespace: Option<&str>) -> Vec<u8> {
    match namespace {
        Some(ns) if info.namespaced => format!("/{}/{}/", info.storage_resource, ns).into_bytes(),
        _ => format!("/{}/", info.storage_resource).into_bytes(),
    }
}

/// Decodes a stored object and stamps its resourceVersion.
pub fn decode(kv: &KeyValue) -> ApiResult<Value> {
    let mut object: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::Internal(format!("stored object {} is not JSON: {e}", String::from_utf8_lossy(&kv.key)))
    })?;
    if !object.is_object() {
        return Err(ApiError::Internal(format!(
            "stored object {} is not a JSON object",
            String::from_utf8_lossy(&kv.key)
        )));
    }
    meta::metadata_mut(&mut object).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    Ok(object)
}

/// A stored object as the version `info` serves.
#[must_use]
pub fn present(info: &ResourceInfo, object: Value) -> Value {
    match info.conversion {
        Some(conversion) => (conversion.from_storage)(object),
        None => object,
    }
}

/// An object of the version `info` serves, as it is stored.
fn stored(info: &ResourceInfo, object: &Value) -> Value {
    match info.conversion {
        Some(conversion) => (conversion.to_storage)(object.clone()),
        None => object.clone(),
    }
}

/// Encodes an object for storage (without resourceVersion, which the store's revision gives).
fn encode(object: &Value) -> ApiResult<Vec<u8>> {
    let mut object = object.clone();
    meta::metadata_mut(&mut object).remove("resourceVersion");
    serde_json::to_vec(&object).map_err(|e| ApiError::Internal(format!("cannot encode object: {e}")))
}

/// Parses a resourceVersion string.
pub fn parse_resource_version(text: &str) -> ApiResult<Revision> {
    text.parse::<i64>()
        .map(Revision)
        .map_err(|_| ApiError::BadRequest(format!("invalid resource version {text:?}: must be a decimal revision")))
}

/// Object storage with Kubernetes' write rules.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn Store>,
}

impl Objects {
    /// Objects over `store`.
    #[must_use]
    pub fn new(store: Arc<dyn Store>) -> Self {
        Objects { store }
    }

    /// The underlying store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Reads one object with its store entry.
    pub async fn get_kv(&self, object: &ObjectRef<'_>) -> ApiResult<Option<(Value, Revision)>> {
        match self.store.get(&object.key()).await? {
            Some(kv) => Ok(Some((present(object.info, decode(&kv)?), kv.mod_revision))),
            None => Ok(None),
        }
    }

    /// Reads one object; 404 when missing.
    pub async fn get(&self, object: &ObjectRef<'_>) -> ApiResult<Value> {
        self.get_kv(object).await?.map(|(v, _)| v).ok_or_else(|| ApiError::NotFound(object.target()))
    }

    /// Stores a new object; 409 `AlreadyExists` when the name is taken.
    pub async fn create(&self, object: &ObjectRef<'_>, value: &Value) -> ApiResult<Value> {
        match self.store.create(&object.key(), &encode(&stored(object.info, value))?).await? {
            Ok(revision) => Ok(with_version(value.clone(), revision)),
            Err(_) => Err(ApiError::AlreadyExists(object.target())),
        }
    }

    /// Replaces an object that was read at `expected`; 409 Conflict when it changed since.
    pub async fn replace(&self, object: &ObjectRef<'_>, expected: Revision, value: &Value) -> ApiResult<Value> {
        match self.store.compare_and_put(&object.key(), expected, &encode(&stored(object.info, value))?).await? {
            Ok(revision) => Ok(with_version(value.clone(), revision)),
            Err(None) => Err(ApiError::NotFound(object.target())),
            Err(Some(_)) => Err(conflict(object)),
        }
    }

    /// Removes an object that was read at `expected`; 409 Conflict when it changed since.
    pub async fn remove(&self, object: &ObjectRef<'_>, expected: Revision) -> ApiResult<Revision> {
        match self.store.compare_and_delete(&object.key(), expected).await? {
            Ok(revision) => Ok(revision),
            Err(None) => Err(ApiError::NotFound(object.target())),
            Err(Some(_)) => Err(conflict(object)),
        }
    }

    /// Lists a resource (optionally in one namespace) as of `revision` (latest when `None`),
    /// starting at key `from` (for `continue`), returning at most `limit` items.
    pub async fn list(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        revision: Option<Revision>,
        from: Option<Vec<u8>>,
        limit: Option<usize>,
    ) -> ApiResult<Listed> {
        let prefix = prefix(info, namespace);
        let range = match from {
            Some(start) => KeyRange::prefix_from(&prefix, start),
            None => KeyRange::prefix(prefix),
        };
        let mut request = RangeRequest::new(range);
        request.revision = revision;
        request.limit = limit;
        let response = self.store.range(request).await?;
        let items =
            response.kvs.iter().map(|kv| decode(kv).map(|o| present(info, o))).collect::<ApiResult<Vec<_>>>()?;
        let last_key = response.kvs.last().map(|kv| kv.key.clone());
        Ok(Listed {
            items,
            revision: revision.unwrap_or(response.revision),
            more: response.more,
            remaining: response.count.saturating_sub(response.kvs.len() as u64),
            last_key,
        })
    }
}

/// A page of a list.
pub struct Listed {
    /// The objects.
    pub items: Vec<Value>,
    /// The revision the list reflects.
    pub revision: Revision,
    /// Whether more items follow.
    pub more: bool,
    /// How many items follow.
    pub remaining: u64,
    /// The store key of the last item (for `continue`).
    pub last_key: Option<Vec<u8>>,
}

fn conflict(object: &ObjectRef<'_>) -> ApiError {
    ApiError::Conflict(
        object.target(),
        "the object has been modified; please apply your changes to the latest version and try again".into(),
    )
}

fn with_version(mut value: Value, revision: Revision) -> Value {
    meta::metadata_mut(&mut value).insert("resourceVersion".into(), json!(revision.to_string()));
    value
}
