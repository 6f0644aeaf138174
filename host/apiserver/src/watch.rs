//! Watch: a stream of `WatchEvent`s (newline-delimited JSON) from the watch cache, with selector
//! transitions, bookmarks, timeouts and 410 Expired, as kube-apiserver serves them.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use capstan_api::table;
use capstan_store::{Event, EventKind, KeyRange, Revision, StoreError, WatchRequest};
use futures::StreamExt;

use crate::cache::{CacheError, CacheEvent, CacheEventKind, ListRv};
use serde_json::{Value, json};

use crate::handlers::{Call, Selectors, table_options, wants_table};
use crate::objects::{self, prefix};
use crate::status::{ApiError, ApiResult};

/// How long a watch lasts without `timeoutSeconds` (kube-apiserver's minimum request timeout).
const DEFAULT_TIMEOUT: Duration = Duration::from_mins(30);
/// How often a bookmark is sent when the client allows them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);

/// `GET ...?watch=1`.
pub async fn watch(call: &Call<'_>) -> ApiResult<Response> {
    let Call { path, query, headers, .. } = *call;
    let info = path.info.clone();
    let mut selectors = Selectors::parse(&info, query)?;
    if let Some(name) = &path.name {
        // Watching one object (`/pods/web?watch=1`) is watching with metadata.name pinned.
        let pinned = capstan_api::selector::FieldSelector::parse(&format!("metadata.name={name}"), &["metadata.name"])
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        selectors.fields = pinned;
    }
    let timeout = query.number("timeoutSeconds")?.map_or(DEFAULT_TIMEOUT, |s| Duration::from_secs(s.max(0) as u64));
    let bookmarks = query.flag("allowWatchBookmarks");
    let table_mode = wants_table(headers).then(|| table_options(query));

    let namespace = path.namespace.as_deref();
    let (initial, start) = starting_state(call, &info, &selectors).await?;
    let changes = changes_after(call, &info, namespace, start).await?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(256);
    tokio::spawn(async move {
        let mut encoder = Encoder { info, table_mode, columns_sent: false };
        for object in &initial {
            if sender.send(Ok(encoder.event("ADDED", object, None))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
        ticker.tick().await;
        let mut changes = changes;
        let mut last = start;
        loop {
            tokio::select! {
                () = &mut deadline => return,
                _ = ticker.tick(), if bookmarks => {
                    let bookmark = encoder.bookmark(last);
                    if sender.send(Ok(frame(&bookmark))).await.is_err() {
                        return;
                    }
                }
                next = changes.next() => {
                    let out = match next {
                        None => return,
                        Some(Err(error)) => {
                            let _ = sender.send(Ok(frame(&json!({"type": "ERROR", "object": error.status()})))).await;
                            return;
                        }
                        Some(Ok(change)) => {
                            last = change.revision;
                            change.translate(&selectors).map(|(kind, object, json)| encoder.event(kind, &object, json))
                        }
                    };
                    if let Some(out) = out
                        && sender.send(Ok(out)).await.is_err() {
                            return;
                        }
                }
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    Ok(response)
}

/// Where a watch starts: after `resourceVersion`, or — without one (or with "0") — with the
/// current state as ADDED events, continuing from the revision of that state.
async fn starting_state(
    call: &Call<'_>,
    info: &capstan_api::ResourceInfo,
    selectors: &Selectors,
) -> ApiResult<(Vec<Value>, Revision)> {
    let Call { server, path, query, .. } = *call;
    let namespace = path.namespace.as_deref();
    if let Some(rv) = query.get("resourceVersion").filter(|rv| *rv != "0") {
        return Ok((Vec::new(), objects::parse_resource_version(rv)?));
    }
    let rv = if query.get("resourceVersion") == Some("0") { ListRv::Any } else { ListRv::Latest };
    let (items, revision) = match server.cache.list(info.storage_resource, namespace, rv).await {
        Ok(cached) => {
            (cached.items.iter().map(|o| objects::present(info, Value::clone(o))).collect::<Vec<_>>(), cached.revision)
        }
        Err(CacheError::NotCached(_)) => {
            let listed = server.objects.list(info, namespace, None, None, None).await?;
            (listed.items, listed.revision)
        }
        Err(e) => return Err(e.into()),
    };
    Ok((items.into_iter().filter(|o| selectors.matches(o)).collect(), revision))
}

type Changes = futures::stream::BoxStream<'static, ApiResult<Change>>;

/// Every change after `start`: from the watch cache, or from a store watch for resources the
/// cache does not hold; a start older than the cache's history is a 410 as the first item.
async fn changes_after(
    call: &Call<'_>,
    info: &capstan_api::ResourceInfo,
    namespace: Option<&str>,
    start: Revision,
) -> ApiResult<Changes> {
    let server = call.server;
    Ok(match server.cache.watch(info.storage_resource, namespace, start).await {
        Ok(watch) => {
            let info = info.clone();
            watch.map(move |event| Ok(Change::from_cache(&event).presented(&info))).boxed()
        }
        Err(CacheError::NotCached(_)) => {
            let range = KeyRange::prefix(prefix(info, namespace));
            let stream = server.objects.store().watch(WatchRequest::after(range, start)).await?;
            let info = info.clone();
            stream
                .filter_map(move |event| {
                    let info = info.clone();
                    async move { Change::from_store(event).map(|change| change.map(|c| c.presented(&info))) }
                })
                .boxed()
        }
        Err(CacheError::TooOld { requested, oldest }) => {
            let error = ApiError::Expired(format!("too old resource version: {} ({})", requested.get(), oldest.get()));
            futures::stream::once(async move { Err(error) }).boxed()
        }
        Err(e) => return Err(e.into()),
    })
}

/// One change to one object, from the watch cache or straight from the store.
struct Change {
    deleted: bool,
    /// The object after the change; for a deletion its last state at the deletion's revision.
    object: Arc<Value>,
    prev: Option<Arc<Value>>,
    revision: Revision,
    /// The cache event it came from, whose encoding of `object` every watcher shares; `None`
    /// for a change from the store, or once `object` was converted to another version.
    cached: Option<CacheEvent>,
}

impl Change {
    /// The change as the version `info` serves.
    fn presented(self, info: &capstan_api::ResourceInfo) -> Self {
        if info.conversion.is_none() {
            return self;
        }
        let present = |object: Arc<Value>| Arc::new(objects::present(info, Arc::unwrap_or_clone(object)));
        Change { object: present(self.object), prev: self.prev.map(present), cached: None, ..self }
    }

    fn from_cache(event: &CacheEvent) -> Self {
        Change {
            deleted: event.kind == CacheEventKind::Deleted,
            object: Arc::clone(&event.object),
            prev: event.prev.clone(),
            revision: event.revision,
            cached: Some(event.clone()),
        }
    }

    fn from_store(event: Result<Event, StoreError>) -> Option<ApiResult<Self>> {
        let event = match event {
            Ok(event) => event,
            Err(StoreError::Compacted { requested, .. }) => {
                return Some(Err(ApiError::Expired(format!("too old resource version: {}", requested.get() - 1))));
            }
            Err(other) => return Some(Err(ApiError::Internal(other.to_string()))),
        };
        let prev = event.prev.as_ref().and_then(|kv| objects::decode(kv).ok());
        let (deleted, object) = match event.kind {
            EventKind::Put => (false, objects::decode(&event.kv).ok()?),
            EventKind::Delete => {
                let mut last = prev.clone()?;
                crate::meta::metadata_mut(&mut last)
                    .insert("resourceVersion".into(), json!(event.revision().to_string()));
                (true, last)
            }
        };
        Some(Ok(Change {
            deleted,
            object: Arc::new(object),
            prev: prev.map(Arc::new),
            revision: event.revision(),
            cached: None,
        }))
    }

    /// The watch event type and object seen through the selectors (with the cache event whose
    /// encoding it may share): an object that starts matching is ADDED, one that stops matching
    /// is DELETED.
    fn translate(self, selectors: &Selectors) -> Option<(&'static str, Arc<Value>, Option<CacheEvent>)> {
        let was = self.prev.as_ref().is_some_and(|p| selectors.matches(p));
        let kind = if self.deleted {
            was.then_some("DELETED")?
        } else {
            match (was, selectors.matches(&self.object)) {
                (false, true) => "ADDED",
                (true, true) => "MODIFIED",
                (true, false) => "DELETED",
                (false, false) => return None,
            }
        };
        Some((kind, self.object, self.cached))
    }
}

/// One line of a watch stream: `value` as JSON and a newline.
fn frame(value: &Value) -> bytes::Bytes {
    let mut out = crate::body::json_bytes(value);
    out.push(b'\n');
    bytes::Bytes::from(out)
}

struct Encoder {
    info: capstan_api::ResourceInfo,
    table_mode: Option<table::TableOptions>,
    columns_sent: bool,
}

impl Encoder {
    /// The frame of one event. Outside table mode it is written around the object's JSON, which
    /// a cache event encodes once for all its watchers, rather than built as a `Value` holding a
    /// copy of the object.
    fn event(&mut self, kind: &str, object: &Value, cached: Option<CacheEvent>) -> bytes::Bytes {
        let Some(options) = &self.table_mode else {
            let json = cached.map_or_else(|| bytes::Bytes::from(crate::body::json_bytes(object)), |e| e.object_json());
            let mut out = Vec::with_capacity(json.len() + 32);
            out.extend_from_slice(b"{\"type\":\"");
            out.extend_from_slice(kind.as_bytes());
            out.extend_from_slice(b"\",\"object\":");
            out.extend_from_slice(&json);
            out.extend_from_slice(b"}\n");
            return bytes::Bytes::from(out);
        };
        let mut table = table::table(
            &self.info,
            std::slice::from_ref(object),
            json!({"resourceVersion": crate::meta::meta_str(object, "resourceVersion")}),
            options,
        );
        if self.columns_sent {
            table["columnDefinitions"] = json!([]);
        }
        self.columns_sent = true;
        frame(&json!({"type": kind, "object": table}))
    }

    fn bookmark(&self, revision: Revision) -> Value {
        json!({"type": "BOOKMARK", "object": {
            "kind": self.info.gvk.kind,
            "apiVersion": self.info.group_version(),
            "metadata": {"resourceVersion": revision.to_string()},
        }})
    }
}
