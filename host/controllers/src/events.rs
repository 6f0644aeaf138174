//! Events as kube-controller-manager records them: a core/v1 Event about the object, reported
//! by the controller, with repeats of the same reason and message folded into one Event whose
//! `count` and `lastTimestamp` grow. Recording never blocks a reconcile: Events go through a
//! bounded channel to a writer task and are dropped when it falls behind.

use std::collections::HashMap;

use capstan_wasm::controller::{EventType, ObjectRef};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::mpsc;

/// Events waiting to be written before new ones are dropped.
const BACKLOG: usize = 4096;

struct Pending {
    source: String,
    regarding: ObjectRef,
    event_type: EventType,
    reason: String,
    message: String,
}

/// Records Events. Cheap to clone.
#[derive(Clone)]
pub struct EventRecorder {
    sender: mpsc::Sender<Pending>,
}

impl EventRecorder {
    /// A recorder writing through `client`; its writer runs on `handle`.
    #[must_use]
    pub fn new(client: kube::Client, handle: &tokio::runtime::Handle) -> Self {
        let (sender, receiver) = mpsc::channel(BACKLOG);
        handle.spawn(write_events(client, receiver));
        Self { sender }
    }

    /// Records an Event about `regarding` from `source` (the controller's name).
    pub fn record(&self, source: &str, regarding: &ObjectRef, event_type: EventType, reason: &str, message: &str) {
        let pending = Pending {
            source: source.to_owned(),
            regarding: regarding.clone(),
            event_type,
            reason: reason.to_owned(),
            message: message.to_owned(),
        };
        if self.sender.try_send(pending).is_err() {
            tracing::debug!(reason, "event dropped: the event writer is behind");
        }
    }
}

/// How many distinct events are remembered for folding repeats into a count.
const FOLDED_EVENTS: usize = 4096;

async fn write_events(client: kube::Client, mut receiver: mpsc::Receiver<Pending>) {
    let resource = kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::Event>(&());
    // (namespace, involved uid or name, reason, message) → (event name, count)
    let mut seen: HashMap<(String, String, String, String), (String, u64)> = HashMap::new();
    let mut sequence = 0u64;
    while let Some(event) = receiver.recv().await {
        let namespace = event.regarding.key.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let involved = event.regarding.uid.clone().unwrap_or_else(|| event.regarding.key.name.clone());
        let fold_key = (namespace.clone(), involved, event.reason.clone(), event.message.clone());
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        if seen.len() >= FOLDED_EVENTS {
            // Forget what was folded so far rather than grow without end: at worst a repeat
            // becomes a new Event instead of a higher count (upstream keeps an LRU of 4096).
            seen.clear();
        }
        if let Some((name, count)) = seen.get_mut(&fold_key) {
            *count += 1;
            let patch = json!({"count": *count, "lastTimestamp": now});
            if api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok() {
                continue;
            }
        }
        sequence += 1;
        let name = format!("{}.{:x}{:04x}", event.regarding.key.name, std::process::id(), sequence);
        let regarding = &event.regarding;
        let api_version = if regarding.kind.group.is_empty() {
            regarding.kind.version.clone()
        } else {
            format!("{}/{}", regarding.kind.group, regarding.kind.version)
        };
        let body = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {
                "apiVersion": api_version,
                "kind": regarding.kind.kind,
                "name": regarding.key.name,
                "namespace": regarding.key.namespace,
                "uid": regarding.uid,
            },
            "reason": event.reason,
            "message": event.message,
            "type": match event.event_type { EventType::Normal => "Normal", EventType::Warning => "Warning" },
            "source": {"component": event.source},
            "reportingComponent": event.source,
            "reportingInstance": event.source,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        let Ok(object) = serde_json::from_value::<DynamicObject>(body) else { continue };
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {
                if seen.len() > 10_000 {
                    seen.clear();
                }
                seen.insert(fold_key, (name, 1));
            }
            Err(e) => tracing::debug!(error = %e, "cannot record an event"),
        }
    }
}
