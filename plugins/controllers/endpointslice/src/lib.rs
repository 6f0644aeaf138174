//! The EndpointSlice and Endpoints controllers as one Capstan component: for each Service with a
//! selector, the pods it selects (those with an IP and not finished) become endpoints —
//! EndpointSlices (`discovery.k8s.io/v1`, owned by the Service, labelled
//! `kubernetes.io/service-name` and managed by `endpointslice-controller.k8s.io`, at most 100
//! endpoints each, one set per distinct port mapping) and the legacy `Endpoints` object of the
//! Service's name (ready and not-ready addresses in subsets). Services without a selector are
//! left to whoever manages their endpoints.
//!
//! Start with [`reconcile`]; [`desired_slices`] and [`desired_endpoints`] are the pure parts the
//! table tests cover.

use std::collections::BTreeMap;

use capstan_plugin_sdk::controller::kinds::{endpoint_slice as slice, endpoints, node, pod, service};
use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::{
    Api, ApiError, Controller, DeleteOptions, GroupVersionKind, ListOptions, ObjectKey, ReconcileResult, RelatedKind,
    Watches, meta, outcome, owned,
};
use serde_json::{Map, Value, json};

/// Most endpoints in one slice (upstream's `--max-endpoints-per-slice` default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// The EndpointSlice and Endpoints controller.
pub struct EndpointSliceController;

impl Controller for EndpointSliceController {
    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn watches(&self) -> Watches {
        Watches {
            primary: service(),
            owned: vec![slice()],
            others: vec![
                RelatedKind { kind: pod(), maps_to_keys: true },
                RelatedKind { kind: endpoints(), maps_to_keys: true },
                RelatedKind { kind: node(), maps_to_keys: false },
            ],
        }
    }

    fn map_to_keys(&self, api: &dyn Api, kind: &GroupVersionKind, object: &Value) -> Vec<ObjectKey> {
        if kind.kind == "Endpoints" {
            return vec![ObjectKey::of(object)];
        }
        let Ok(services) = api.list(&service(), &ListOptions::in_namespace(meta::namespace(object))) else {
            return Vec::new();
        };
        services.iter().filter(|s| selects(s, object)).map(ObjectKey::of).collect()
    }

    fn reconcile(&self, api: &dyn Api, key: &ObjectKey) -> ReconcileResult {
        outcome(reconcile(api, key).map(|()| None::<u64>))
    }
}

capstan_plugin_sdk::controller!(EndpointSliceController);

/// The Service's selector, when it has a non-empty one.
fn selector(svc: &Value) -> Option<&Map<String, Value>> {
    svc.pointer("/spec/selector").and_then(Value::as_object).filter(|s| !s.is_empty())
}

/// Whether `svc` selects `pod_object` (same namespace, every selector label matches).
fn selects(svc: &Value, pod_object: &Value) -> bool {
    let Some(selector) = selector(svc) else { return false };
    meta::namespace(svc) == meta::namespace(pod_object)
        && meta::selector_matches(Some(&json!({"matchLabels": selector})), meta::labels(pod_object))
}

/// Brings the EndpointSlices and Endpoints of Service `key` in line with its pods.
pub fn reconcile(api: &dyn Api, key: &ObjectKey) -> Result<(), ApiError> {
    let existing = owned_slices(api, key)?;
    let svc = api.get(&service(), key)?.filter(|s| !meta::is_terminating(s));
    let Some(svc) = svc.filter(|s| selector(s).is_some() && s.pointer("/spec/type") != Some(&json!("ExternalName")))
    else {
        // Gone, or not ours to manage: what we made for it goes.
        for slice_object in &existing {
            delete_if_present(api, &slice(), &ObjectKey::of(slice_object))?;
        }
        if api.get(&endpoints(), key)?.is_some_and(|e| meta::label(&e, MANAGED_BY_LABEL) == Some(MANAGED_BY)) {
            delete_if_present(api, &endpoints(), key)?;
        }
        return Ok(());
    };
    let label_selector = selector(&svc).map(|labels| json!({"matchLabels": labels}));
    let selected = owned::list_selected(api, &pod(), key.namespace.as_deref(), label_selector.as_ref())?;
    let pods: Vec<&Value> = selected.iter().filter(|p| has_ip_and_runs(p)).collect();
    let zones = zones(api, &pods);
    sync_slices(api, &svc, desired_slices(&svc, &pods, &zones), existing)?;
    sync_endpoints(api, &svc, desired_endpoints(&svc, &pods))
}

fn delete_if_present(api: &dyn Api, kind: &GroupVersionKind, key: &ObjectKey) -> Result<(), ApiError> {
    match api.delete(kind, key, &DeleteOptions::plain()) {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    }
}

fn has_ip_and_runs(pod_object: &Value) -> bool {
    pod_object.pointer("/status/podIP").and_then(Value::as_str).is_some_and(|ip| !ip.is_empty())
        && !meta::pod_is_finished(pod_object)
}

/// The zone of each pod's node, by node name, from the nodes' `topology.kubernetes.io/zone`.
fn zones(api: &dyn Api, pods: &[&Value]) -> BTreeMap<String, String> {
    let mut zones = BTreeMap::new();
    for pod_object in pods {
        let Some(node_name) = pod_object.pointer("/spec/nodeName").and_then(Value::as_str) else { continue };
        if zones.contains_key(node_name) {
            continue;
        }
        let key = ObjectKey { namespace: None, name: node_name.to_owned() };
        if let Some(zone) = api
            .get(&node(), &key)
            .ok()
            .flatten()
            .and_then(|n| meta::label(&n, "topology.kubernetes.io/zone").map(str::to_owned))
        {
            zones.insert(node_name.to_owned(), zone);
        }
    }
    zones
}

/// The Service's ports as they land on `pod_object`: named target ports resolved against the
/// pod's container ports (a port that does not resolve is left out, as upstream does).
fn ports_for(svc: &Value, pod_object: &Value) -> Vec<Value> {
    let container_ports: Vec<&Value> = pod_object
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| c.get("ports").and_then(Value::as_array).into_iter().flatten())
        .collect();
    let mut ports = Vec::new();
    for port in svc.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
        let protocol = port.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        let number = match port.get("targetPort") {
            Some(Value::String(name)) => container_ports
                .iter()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(name.as_str()))
                .and_then(|p| p.get("containerPort").and_then(Value::as_i64)),
            Some(Value::Number(n)) => n.as_i64(),
            _ => port.get("port").and_then(Value::as_i64),
        };
        let Some(number) = number else { continue };
        let mut entry = json!({"port": number, "protocol": protocol});
        if let Some(name) = port.get("name").and_then(Value::as_str) {
            entry["name"] = json!(name);
        }
        if let Some(app) = port.get("appProtocol") {
            entry["appProtocol"] = app.clone();
        }
        ports.push(entry);
    }
    ports
}

fn is_ready(pod_object: &Value) -> bool {
    meta::pod_is_ready(pod_object) && !meta::is_terminating(pod_object)
}

fn target_ref(pod_object: &Value) -> Value {
    json!({"kind": "Pod", "namespace": meta::namespace(pod_object), "name": meta::name(pod_object),
           "uid": meta::uid(pod_object)})
}

/// The hostname an endpoint gets: the pod's `spec.hostname` when its subdomain is the Service.
fn hostname(svc: &Value, pod_object: &Value) -> Option<String> {
    let subdomain = pod_object.pointer("/spec/subdomain").and_then(Value::as_str)?;
    (subdomain == meta::name(svc))
        .then(|| pod_object.pointer("/spec/hostname").and_then(Value::as_str).map(str::to_owned))?
}

/// The slices the Service should have: its pods grouped by port mapping, each group in chunks
/// of [`MAX_ENDPOINTS_PER_SLICE`], endpoints ordered by pod name. Each entry is the slice's
/// `ports` and `endpoints`.
#[must_use]
pub fn desired_slices(svc: &Value, pods: &[&Value], zones: &BTreeMap<String, String>) -> Vec<(Value, Vec<Value>)> {
    let publish_not_ready = svc.pointer("/spec/publishNotReadyAddresses").and_then(Value::as_bool) == Some(true);
    let mut groups: BTreeMap<String, (Value, Vec<(String, Value)>)> = BTreeMap::new();
    for pod_object in pods {
        let ports = Value::Array(ports_for(svc, pod_object));
        let ip = pod_object.pointer("/status/podIP").and_then(Value::as_str).unwrap_or_default();
        let terminating = meta::is_terminating(pod_object);
        let serving = meta::pod_is_ready(pod_object);
        let mut endpoint = json!({
            "addresses": [ip],
            "conditions": {"ready": publish_not_ready || is_ready(pod_object), "serving": serving,
                           "terminating": terminating},
            "targetRef": target_ref(pod_object),
        });
        if let Some(node_name) = pod_object.pointer("/spec/nodeName").and_then(Value::as_str) {
            endpoint["nodeName"] = json!(node_name);
            if let Some(zone) = zones.get(node_name) {
                endpoint["zone"] = json!(zone);
            }
        }
        if let Some(hostname) = hostname(svc, pod_object) {
            endpoint["hostname"] = json!(hostname);
        }
        let group = groups.entry(ports.to_string()).or_insert_with(|| (ports, Vec::new()));
        group.1.push((meta::name(pod_object).to_owned(), endpoint));
    }
    let mut slices = Vec::new();
    for (ports, mut members) in groups.into_values() {
        members.sort_by(|a, b| a.0.cmp(&b.0));
        let members: Vec<Value> = members.into_iter().map(|(_, e)| e).collect();
        for chunk in members.chunks(MAX_ENDPOINTS_PER_SLICE) {
            slices.push((ports.clone(), chunk.to_vec()));
        }
    }
    if slices.is_empty() {
        // A Service with no endpoints still gets one placeholder slice, as upstream keeps.
        slices.push((json!([]), Vec::new()));
    }
    slices
}

/// The slices the controller made for Service `key`.
fn owned_slices(api: &dyn Api, key: &ObjectKey) -> Result<Vec<Value>, ApiError> {
    let options = ListOptions {
        label_selector: Some(format!("{SERVICE_NAME_LABEL}={},{MANAGED_BY_LABEL}={MANAGED_BY}", key.name)),
        ..ListOptions::in_namespace(key.namespace.as_deref())
    };
    let mut slices: Vec<Value> = api
        .list(&slice(), &options)?
        .into_iter()
        .filter(|s| {
            meta::label(s, SERVICE_NAME_LABEL) == Some(key.name.as_str())
                && meta::label(s, MANAGED_BY_LABEL) == Some(MANAGED_BY)
        })
        .collect();
    slices.sort_by(|a, b| meta::name(a).cmp(meta::name(b)));
    Ok(slices)
}

fn labels_for(svc: &Value, extra: &[(&str, &str)]) -> Value {
    let mut labels = meta::labels(svc).cloned().unwrap_or_else(|| json!({}));
    for (key, value) in extra {
        labels[*key] = json!(value);
    }
    labels
}

/// Writes the desired slices over the existing ones: updates those whose content differs,
/// creates what is missing, deletes what is left over.
fn sync_slices(
    api: &dyn Api,
    svc: &Value,
    desired: Vec<(Value, Vec<Value>)>,
    existing: Vec<Value>,
) -> Result<(), ApiError> {
    let labels = labels_for(svc, &[(SERVICE_NAME_LABEL, meta::name(svc)), (MANAGED_BY_LABEL, MANAGED_BY)]);
    let mut existing = existing.into_iter();
    for (ports, members) in desired {
        if let Some(mut current) = existing.next() {
            let same = current.get("ports").unwrap_or(&json!([])) == &ports
                && current.get("endpoints").unwrap_or(&json!([])) == &json!(members)
                && meta::labels(&current) == Some(&labels);
            if !same {
                current["ports"] = ports;
                current["endpoints"] = json!(members);
                current["metadata"]["labels"] = labels.clone();
                api.update(&slice(), &current)?;
            }
        } else {
            let object = json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"generateName": format!("{}-", meta::name(svc)), "namespace": meta::namespace(svc),
                             "labels": labels,
                             "ownerReferences": [meta::controller_reference(&service(), svc)]},
                "addressType": "IPv4",
                "ports": ports,
                "endpoints": members,
            });
            api.create(&slice(), &object)?;
        }
    }
    for left_over in existing {
        delete_if_present(api, &slice(), &ObjectKey::of(&left_over))?;
    }
    Ok(())
}

/// Addresses with the names of their pods (to sort by).
type Named = Vec<(String, Value)>;

/// The legacy Endpoints `subsets` for the Service: one per port mapping, ready pods under
/// `addresses`, others under `notReadyAddresses`; terminating pods are left out.
#[must_use]
pub fn desired_endpoints(svc: &Value, pods: &[&Value]) -> Value {
    let publish_not_ready = svc.pointer("/spec/publishNotReadyAddresses").and_then(Value::as_bool) == Some(true);
    let mut subsets: BTreeMap<String, (Value, Named, Named)> = BTreeMap::new();
    for pod_object in pods.iter().filter(|p| !meta::is_terminating(p)) {
        let ports: Vec<Value> = ports_for(svc, pod_object)
            .into_iter()
            .map(|mut p| {
                if let Some(map) = p.as_object_mut() {
                    map.remove("appProtocol");
                }
                p
            })
            .collect();
        let ip = pod_object.pointer("/status/podIP").and_then(Value::as_str).unwrap_or_default();
        let mut address = json!({"ip": ip, "targetRef": target_ref(pod_object)});
        if let Some(node_name) = pod_object.pointer("/spec/nodeName").and_then(Value::as_str) {
            address["nodeName"] = json!(node_name);
        }
        if let Some(hostname) = hostname(svc, pod_object) {
            address["hostname"] = json!(hostname);
        }
        let ports = Value::Array(ports);
        let entry = subsets.entry(ports.to_string()).or_insert_with(|| (ports, Vec::new(), Vec::new()));
        let name = meta::name(pod_object).to_owned();
        if publish_not_ready || is_ready(pod_object) {
            entry.1.push((name, address));
        } else {
            entry.2.push((name, address));
        }
    }
    let subsets: Vec<Value> = subsets
        .into_values()
        .map(|(ports, mut ready, mut not_ready)| {
            ready.sort_by(|a, b| a.0.cmp(&b.0));
            not_ready.sort_by(|a, b| a.0.cmp(&b.0));
            let mut subset = json!({"ports": ports});
            if !ready.is_empty() {
                subset["addresses"] = json!(ready.into_iter().map(|(_, a)| a).collect::<Vec<_>>());
            }
            if !not_ready.is_empty() {
                subset["notReadyAddresses"] = json!(not_ready.into_iter().map(|(_, a)| a).collect::<Vec<_>>());
            }
            subset
        })
        .collect();
    Value::Array(subsets)
}

fn sync_endpoints(api: &dyn Api, svc: &Value, subsets: Value) -> Result<(), ApiError> {
    let key = ObjectKey::of(svc);
    let labels =
        labels_for(svc, &[(MANAGED_BY_LABEL, MANAGED_BY), ("endpointslice.kubernetes.io/skip-mirror", "true")]);
    if let Some(mut current) = api.get(&endpoints(), &key)? {
        let current_subsets = current.get("subsets").cloned().unwrap_or_else(|| json!([]));
        if current_subsets == subsets && meta::labels(&current) == Some(&labels) {
            return Ok(());
        }
        current["subsets"] = subsets;
        current["metadata"]["labels"] = labels;
        api.update(&endpoints(), &current)?;
    } else {
        let object = json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": meta::name(svc), "namespace": meta::namespace(svc), "labels": labels},
            "subsets": subsets,
        });
        match api.create(&endpoints(), &object) {
            Err(e) if !e.is_conflict() => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
