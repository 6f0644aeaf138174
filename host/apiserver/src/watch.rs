//! Watch: a stream of `WatchEvent`s (newline-delimited JSON) from a store watch, with selector
//! transitions, bookmarks, timeouts and 410 Expired, as kube-apiserver serves them.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use capstan_api::table;
use capstan_store::{Event, EventKind, KeyRange, Revision, StoreError, WatchRequest};
use futures::StreamExt;
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
    let Call { server, path, query, headers, .. } = *call;
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
    let range = KeyRange::prefix(prefix(&info, path.namespace.as_deref()));

    // Without a resourceVersion (or with "0") the watch starts with the current state as ADDED
    // events, then continues from the revision of that state.
    let (initial, start) = if let Some(rv) = query.get("resourceVersion").filter(|rv| *rv != "0") {
        (Vec::new(), objects::parse_resource_version(rv)?)
    } else {
        let listed = server.objects.list(&info, path.namespace.as_deref(), None, None, None).await?;
        let items = listed.items.into_iter().filter(|o| selectors.matches(o)).collect();
        (items, listed.revision)
    };
    let stream = server.objects.store().watch(WatchRequest::after(range, start)).await?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(256);
    tokio::spawn(async move {
        let mut encoder = Encoder { info, table_mode, columns_sent: false };
        let frame = |value: &Value| bytes::Bytes::from(format!("{value}\n"));
        for object in &initial {
            if sender.send(Ok(frame(&encoder.event("ADDED", object)))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
        ticker.tick().await;
        let mut stream = stream;
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
                next = stream.next() => {
                    let out = match next {
                        None => return,
                        Some(Err(error)) => {
                            let _ = sender.send(Ok(frame(&error_event(&error)))).await;
                            return;
                        }
                        Some(Ok(event)) => {
                            last = event.revision();
                            translate(&event, &selectors)
                                .map(|(kind, object)| encoder.event(kind, &object))
                        }
                    };
                    if let Some(out) = out
                        && sender.send(Ok(frame(&out))).await.is_err() {
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

/// The watch event type and object for a store event, seen through the selectors: an object
/// that starts matching is ADDED, one that stops matching is DELETED.
fn translate(event: &Event, selectors: &Selectors) -> Option<(&'static str, Value)> {
    let decode = |kv: &capstan_store::KeyValue| objects::decode(kv).ok();
    let previous = event.prev.as_ref().and_then(decode);
    let was = previous.as_ref().is_some_and(|p| selectors.matches(p));
    match event.kind {
        EventKind::Put => {
            let current = decode(&event.kv)?;
            let is = selectors.matches(&current);
            match (was, is) {
                (false, true) => Some(("ADDED", current)),
                (true, true) => Some(("MODIFIED", current)),
                (true, false) => Some(("DELETED", current)),
                (false, false) => None,
            }
        }
        EventKind::Delete => {
            let mut last = previous.filter(|_| was)?;
            crate::meta::metadata_mut(&mut last).insert("resourceVersion".into(), json!(event.revision().to_string()));
            Some(("DELETED", last))
        }
    }
}

struct Encoder {
    info: capstan_api::ResourceInfo,
    table_mode: Option<table::TableOptions>,
    columns_sent: bool,
}

impl Encoder {
    fn event(&mut self, kind: &str, object: &Value) -> Value {
        let Some(options) = &self.table_mode else { return json!({"type": kind, "object": object}) };
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
        json!({"type": kind, "object": table})
    }

    fn bookmark(&self, revision: Revision) -> Value {
        json!({"type": "BOOKMARK", "object": {
            "kind": self.info.gvk.kind,
            "apiVersion": self.info.group_version(),
            "metadata": {"resourceVersion": revision.to_string()},
        }})
    }
}

fn error_event(error: &StoreError) -> Value {
    let api_error = match error {
        StoreError::Compacted { requested, .. } => {
            ApiError::Expired(format!("too old resource version: {} ", requested.get() - 1))
        }
        other => ApiError::Internal(other.to_string()),
    };
    json!({"type": "ERROR", "object": api_error.status()})
}
