//! The resource metrics API, `metrics.k8s.io/v1beta1` (what metrics-server serves in a
//! Kubernetes cluster): `NodeMetrics` and `PodMetrics` built from each node agent's Summary API
//! (`GET /stats/summary`, see `capstan_node::stats`), read on request from the nodes concerned.
//! `kubectl top` and the `HorizontalPodAutoscaler` controller read it.
//!
//! Read-only: `get` and `list` (with `labelSelector`, and `fieldSelector` on the name and
//! namespace). A node whose agent cannot be reached, or has no sample yet, is left out of lists
//! and answers 404 to a get, as metrics-server does.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use capstan_api::selector::{FieldSelector, LabelSelector};
use serde_json::{Value, json};

use crate::handlers::json_response;
use crate::routing::Query;
use crate::server::ApiServer;
use crate::status::{ApiError, ApiResult, Target};

/// The group and version served here.
pub const GROUP: &str = "metrics.k8s.io";
const API_VERSION: &str = "metrics.k8s.io/v1beta1";

/// How long the API server waits for one node's summary.
const NODE_TIMEOUT: Duration = Duration::from_secs(5);

/// The window a node agent's CPU rates cover (its sampling interval).
const WINDOW: &str = "5s";

/// What a metrics path addresses.
#[derive(Debug, PartialEq, Eq)]
enum Request<'a> {
    Nodes(Option<&'a str>),
    Pods { namespace: Option<&'a str>, name: Option<&'a str> },
}

fn parse(path: &str) -> Option<Request<'_>> {
    let rest = path.strip_prefix("/apis/metrics.k8s.io/v1beta1/")?.trim_end_matches('/');
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["nodes"] => Some(Request::Nodes(None)),
        ["nodes", name] => Some(Request::Nodes(Some(name))),
        ["pods"] => Some(Request::Pods { namespace: None, name: None }),
        ["namespaces", ns, "pods"] => Some(Request::Pods { namespace: Some(ns), name: None }),
        ["namespaces", ns, "pods", name] => Some(Request::Pods { namespace: Some(ns), name: Some(name) }),
        _ => None,
    }
}

/// Whether `path` is one of the metrics API's resource paths (discovery documents are served
/// with the rest of discovery).
#[must_use]
pub fn handles(path: &str) -> bool {
    parse(path).is_some()
}

/// Serves one metrics request.
pub async fn serve(server: &ApiServer, method: &Method, path: &str, query: &Query) -> ApiResult<Response> {
    let Some(request) = parse(path) else { return Err(ApiError::NoRoute) };
    if method != Method::GET || query.flag("watch") {
        return Err(ApiError::MethodNotAllowed);
    }
    let labels = query
        .get("labelSelector")
        .map(LabelSelector::parse)
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("invalid labelSelector: {e}")))?;
    let fields = query
        .get("fieldSelector")
        .map(|text| FieldSelector::parse(text, &["metadata.name", "metadata.namespace"]))
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("invalid fieldSelector: {e}")))?;
    let selected = |object: &Value| {
        labels.as_ref().is_none_or(|s| s.matches_object(object)) && fields.as_ref().is_none_or(|s| s.matches(object))
    };
    match request {
        Request::Nodes(name) => {
            let nodes = list(server, "nodes", None).await?;
            let nodes: Vec<Value> =
                nodes.into_iter().filter(|n| name.is_none_or(|name| n["metadata"]["name"] == name)).collect();
            let summaries = summaries(server, nodes.iter()).await;
            let items: Vec<Value> = nodes
                .iter()
                .filter(|node| selected(node))
                .filter_map(|node| node_metrics(node, summaries.get(name_of(node))?))
                .collect();
            respond(name, items, "nodes", "NodeMetricsList")
        }
        Request::Pods { namespace, name } => {
            let pods = list(server, "pods", namespace).await?;
            let pods: Vec<Value> = pods
                .into_iter()
                .filter(|p| name.is_none_or(|name| p["metadata"]["name"] == name) && selected(p))
                .collect();
            let hosting: BTreeSet<&str> =
                pods.iter().filter_map(|p| p.pointer("/spec/nodeName").and_then(Value::as_str)).collect();
            let nodes = list(server, "nodes", None).await?;
            let summaries = summaries(server, nodes.iter().filter(|n| hosting.contains(name_of(n)))).await;
            let usage: HashMap<&str, &Value> = summaries
                .values()
                .flat_map(|s| s["pods"].as_array().into_iter().flatten())
                .filter_map(|p| Some((p.pointer("/podRef/uid")?.as_str()?, p)))
                .collect();
            let items: Vec<Value> = pods
                .iter()
                .filter_map(|pod| pod_metrics(pod, usage.get(pod.pointer("/metadata/uid")?.as_str()?)?))
                .collect();
            respond(name, items, "pods", "PodMetricsList")
        }
    }
}

fn name_of(object: &Value) -> &str {
    object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
}

async fn list(server: &ApiServer, plural: &str, namespace: Option<&str>) -> ApiResult<Vec<Value>> {
    let info = ApiServer::resource("", "v1", plural)?;
    Ok(server.objects.list(info, namespace, None, None, None).await?.items)
}

/// The summaries of `nodes`, fetched concurrently; a node that does not answer in time is left
/// out.
async fn summaries<'n>(server: &ApiServer, nodes: impl Iterator<Item = &'n Value>) -> HashMap<String, Value> {
    let fetches = nodes.filter_map(|node| {
        let endpoint = crate::node_proxy::endpoint_of(node)?;
        let name = name_of(node).to_string();
        Some(async move {
            let fetched =
                tokio::time::timeout(NODE_TIMEOUT, crate::node_proxy::get_json(server, &endpoint, "/stats/summary"))
                    .await;
            match fetched {
                Ok(Ok(summary)) => Some((name, summary)),
                Ok(Err(e)) => {
                    tracing::debug!(node = %name, error = %e, "no resource metrics from the node");
                    None
                }
                Err(_) => {
                    tracing::debug!(node = %name, "the node's resource metrics timed out");
                    None
                }
            }
        })
    });
    futures::future::join_all(fetches).await.into_iter().flatten().collect()
}

fn respond(name: Option<&str>, mut items: Vec<Value>, plural: &str, list_kind: &str) -> ApiResult<Response> {
    let Some(name) = name else {
        let list = json!({"kind": list_kind, "apiVersion": API_VERSION, "metadata": {}, "items": items});
        return Ok(json_response(StatusCode::OK, &list, &[]));
    };
    let item = items.pop().ok_or_else(|| {
        ApiError::NotFound(Target {
            resource: format!("{plural}.{GROUP}"),
            group: GROUP.into(),
            kind: if plural == "nodes" { "NodeMetrics" } else { "PodMetrics" }.into(),
            name: name.into(),
        })
    })?;
    Ok(json_response(StatusCode::OK, &item, &[]))
}

/// CPU in the API's quantity form: millicores when exact, else nanocores.
fn cpu_quantity(nano_cores: u64) -> String {
    if nano_cores.is_multiple_of(1_000_000) { format!("{}m", nano_cores / 1_000_000) } else { format!("{nano_cores}n") }
}

/// Memory in the API's quantity form: the largest binary suffix that divides it exactly.
fn memory_quantity(bytes: u64) -> String {
    const MI: u64 = 1 << 20;
    const KI: u64 = 1 << 10;
    if bytes != 0 && bytes.is_multiple_of(MI) {
        format!("{}Mi", bytes / MI)
    } else if bytes != 0 && bytes.is_multiple_of(KI) {
        format!("{}Ki", bytes / KI)
    } else {
        bytes.to_string()
    }
}

/// `{cpu, memory}` usage from a Summary API block holding `cpu` and `memory`; none until the CPU
/// rate is known.
fn usage(block: &Value) -> Option<Value> {
    let cpu = block.pointer("/cpu/usageNanoCores")?.as_u64()?;
    let memory = block.pointer("/memory/workingSetBytes").and_then(Value::as_u64).unwrap_or(0);
    Some(json!({"cpu": cpu_quantity(cpu), "memory": memory_quantity(memory)}))
}

fn metadata(object: &Value) -> Value {
    let mut metadata = json!({"name": name_of(object), "creationTimestamp": crate::meta::now()});
    if let Some(namespace) = object.pointer("/metadata/namespace") {
        metadata["namespace"] = namespace.clone();
    }
    if let Some(labels) = object.pointer("/metadata/labels") {
        metadata["labels"] = labels.clone();
    }
    metadata
}

fn node_metrics(node: &Value, summary: &Value) -> Option<Value> {
    let block = &summary["node"];
    Some(json!({
        "kind": "NodeMetrics", "apiVersion": API_VERSION, "metadata": metadata(node),
        "timestamp": block.pointer("/cpu/time").cloned().unwrap_or(Value::Null), "window": WINDOW,
        "usage": usage(block)?,
    }))
}

fn pod_metrics(pod: &Value, summary: &Value) -> Option<Value> {
    let containers: Vec<Value> = summary["containers"]
        .as_array()?
        .iter()
        .map(|c| Some(json!({"name": c["name"], "usage": usage(c)?})))
        .collect::<Option<_>>()?;
    if containers.is_empty() {
        return None;
    }
    Some(json!({
        "kind": "PodMetrics", "apiVersion": API_VERSION, "metadata": metadata(pod),
        "timestamp": summary.pointer("/cpu/time").cloned().unwrap_or(Value::Null), "window": WINDOW,
        "containers": containers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_nodes_and_pods() {
        assert_eq!(parse("/apis/metrics.k8s.io/v1beta1/nodes"), Some(Request::Nodes(None)));
        assert_eq!(parse("/apis/metrics.k8s.io/v1beta1/nodes/n1"), Some(Request::Nodes(Some("n1"))));
        assert_eq!(parse("/apis/metrics.k8s.io/v1beta1/pods"), Some(Request::Pods { namespace: None, name: None }));
        assert_eq!(
            parse("/apis/metrics.k8s.io/v1beta1/namespaces/d/pods/web"),
            Some(Request::Pods { namespace: Some("d"), name: Some("web") })
        );
        assert_eq!(parse("/apis/metrics.k8s.io/v1beta1"), None);
        assert_eq!(parse("/apis/metrics.k8s.io/v1beta1/namespaces/d/services"), None);
    }

    #[test]
    fn quantities_use_the_canonical_suffixes() {
        assert_eq!(cpu_quantity(250_000_000), "250m");
        assert_eq!(cpu_quantity(0), "0m");
        assert_eq!(cpu_quantity(123_456_789), "123456789n");
        assert_eq!(memory_quantity(64 << 20), "64Mi");
        assert_eq!(memory_quantity(1536), "1536");
        assert_eq!(memory_quantity(3 << 10), "3Ki");
        assert_eq!(memory_quantity(1000), "1000");
        assert_eq!(memory_quantity(0), "0");
    }

    #[test]
    fn pods_without_a_cpu_rate_have_no_metrics_yet() {
        let pod = json!({"metadata": {"name": "web", "namespace": "d", "labels": {"app": "web"}}});
        let summary = json!({
            "cpu": {"time": "2026-11-23T10:00:00Z", "usageNanoCores": 150_000_000},
            "containers": [{"name": "c", "cpu": {"usageNanoCores": 150_000_000}, "memory": {"workingSetBytes": 4_194_304}}],
        });
        let metrics = pod_metrics(&pod, &summary).unwrap_or_default();
        assert_eq!(metrics["metadata"]["labels"]["app"], "web");
        assert_eq!(metrics["containers"], json!([{"name": "c", "usage": {"cpu": "150m", "memory": "4Mi"}}]));
        let fresh = json!({"containers": [{"name": "c", "cpu": {"usageCoreNanoSeconds": 5}}]});
        assert_eq!(pod_metrics(&pod, &fresh), None);
    }
}
