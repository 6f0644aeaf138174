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

/// Encodes an object of the version `info` serves as it is stored: in the storage version,
/// without `metadata.resourceVersion` (the store's revision gives it). Only a conversion copies
/// the object; otherwise it is written as it is, skipping that one field, since every write
/// passes here and a Pod's copy and its drop cost as much as its encoding.
fn encode_stored(info: &ResourceInfo, object: &Value) -> ApiResult<Vec<u8>> {
    let encoded = match info.conversion {
        Some(conversion) => serde_json::to_vec(&Unversioned(&(conversion.to_storage)(object.clone()))),
        None => serde_json::to_vec(&Unversioned(object)),
    };
    encoded.map_err(|e| ApiError::Internal(format!("cannot encode object: {e}")))
}

/// An object serialised without `metadata.resourceVersion`, byte for byte what removing the
/// field from a copy and serialising that gives.
struct Unversioned<'a>(&'a Value);

impl serde::Serialize for Unversioned<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(fields) = self.0 else { return self.0.serialize(serializer) };
        let mut out = serializer.serialize_map(Some(fields.len()))?;
        for (key, value) in fields {
            match value {
                Value::Object(metadata) if key == "metadata" => {
                    out.serialize_entry(key, &Without { fields: metadata, skipped: "resourceVersion" })?;
                }
                _ => out.serialize_entry(key, value)?,
            }
        }
        out.end()
    }
}

/// A JSON object serialised without one of its fields.
struct Without<'a> {
    fields: &'a serde_json::Map<String, Value>,
    skipped: &'a str,
}

impl serde::Serialize for Without<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let kept = self.fields.iter().filter(|(key, _)| *key != self.skipped);
        let mut out = serializer.serialize_map(None)?;
        for (key, value) in kept {
            out.serialize_entry(key, value)?;
        }
        out.end()
    }
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
        match self.store.create(&object.key(), &encode_stored(object.info, value)?).await? {
            Ok(revision) => Ok(with_version(value.clone(), revision)),
            Err(_) => Err(ApiError::AlreadyExists(object.target())),
        }
    }

    /// Replaces an object that was read at `expected`; 409 Conflict when it changed since.
    pub async fn replace(&self, object: &ObjectRef<'_>, expected: Revision, value: &Value) -> ApiResult<Value> {
        let revision = self.replace_for_revision(object, expected, value).await?;
        Ok(with_version(value.clone(), revision))
    }

    /// [`replace`](Self::replace), returning only the new revision: for writers that answer
    /// without the object (`pods/binding`), which need no copy of it.
    pub async fn replace_for_revision(
        &self,
        object: &ObjectRef<'_>,
        expected: Revision,
        value: &Value,
    ) -> ApiResult<Revision> {
        match self.store.compare_and_put(&object.key(), expected, &encode_stored(object.info, value)?).await? {
            Ok(revision) => Ok(revision),
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::encode_stored;
    use crate::server::ApiServer;

    /// What storing wrote before [`super::Unversioned`]: a converted copy with the field removed.
    fn copied_and_trimmed(info: &capstan_api::ResourceInfo, object: &Value) -> Vec<u8> {
        let mut copy = match info.conversion {
            Some(conversion) => (conversion.to_storage)(object.clone()),
            None => object.clone(),
        };
        if let Some(metadata) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("resourceVersion");
        }
        serde_json::to_vec(&copy).unwrap_or_default()
    }

    #[test]
    fn stored_objects_leave_out_only_the_resource_version() {
        let pods = ApiServer::resource("", "v1", "pods").unwrap_or_else(|e| panic!("{e}"));
        let events = ApiServer::resource("events.k8s.io", "v1", "events").unwrap_or_else(|e| panic!("{e}"));
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d", "resourceVersion": "42", "labels": {"resourceVersion": "x"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            "status": {"resourceVersion": "kept: not metadata"},
        });
        let event = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "d", "resourceVersion": "7"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "Scheduled", "reason": "Scheduled", "type": "Normal",
        });
        for (info, object) in [
            (pods, &pod),
            (pods, &json!({"kind": "Pod"})),
            (pods, &json!({"metadata": "not an object"})),
            (pods, &json!([1, 2])),
            (events, &event),
        ] {
            let encoded = encode_stored(info, object).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(String::from_utf8_lossy(&encoded), String::from_utf8_lossy(&copied_and_trimmed(info, object)));
        }
        let encoded: Value = serde_json::from_slice(&encode_stored(pods, &pod).unwrap_or_default()).unwrap_or_default();
        assert_eq!(encoded["metadata"].get("resourceVersion"), None);
        assert_eq!(encoded["metadata"]["labels"]["resourceVersion"], "x");
        assert_eq!(encoded["status"]["resourceVersion"], "kept: not metadata");
    }
}
