//! Discovery: the legacy lists (`/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`) and the aggregated
//! v2 documents kubectl 1.32 asks for first.

use capstan_api::{GroupVersionKind, Registry, ResourceInfo};
use serde_json::{Value, json};

/// Resources served without storage (reviews), listed in discovery beside the stored ones.
pub struct VirtualResource {
    /// Its kind.
    pub gvk: GroupVersionKind,
    /// Plural name.
    pub plural: &'static str,
    /// Whether it is namespaced.
    pub namespaced: bool,
    /// Verbs.
    pub verbs: &'static [&'static str],
}

/// The reviews `kubectl auth can-i` and `kubectl auth whoami` post.
pub const VIRTUAL: &[VirtualResource] = &[
    VirtualResource {
        gvk: GroupVersionKind { group: "authorization.k8s.io", version: "v1", kind: "SelfSubjectAccessReview" },
        plural: "selfsubjectaccessreviews",
        namespaced: false,
        verbs: &["create"],
    },
    VirtualResource {
        gvk: GroupVersionKind { group: "authentication.k8s.io", version: "v1", kind: "SelfSubjectReview" },
        plural: "selfsubjectreviews",
        namespaced: false,
        verbs: &["create"],
    },
    // The resource metrics API (`kubectl top`), served by `metrics_api`.
    VirtualResource {
        gvk: GroupVersionKind { group: "metrics.k8s.io", version: "v1beta1", kind: "NodeMetrics" },
        plural: "nodes",
        namespaced: false,
        verbs: &["get", "list"],
    },
    VirtualResource {
        gvk: GroupVersionKind { group: "metrics.k8s.io", version: "v1beta1", kind: "PodMetrics" },
        plural: "pods",
        namespaced: true,
        verbs: &["get", "list"],
    },
];

/// The media type of aggregated discovery v2.
pub const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the `Accept` header asks for aggregated discovery v2.
#[must_use]
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let part = part.replace(' ', "");
        part.contains("g=apidiscovery.k8s.io") && part.contains("v=v2;") && part.contains("as=APIGroupDiscoveryList")
            || part.ends_with("g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    })
}

/// All served group/versions, core first, including those with only virtual resources.
fn group_versions(registry: &Registry) -> Vec<(&'static str, &'static str)> {
    let mut all = registry.group_versions();
    for v in VIRTUAL {
        if !all.contains(&(v.gvk.group, v.gvk.version)) {
            all.push((v.gvk.group, v.gvk.version));
        }
    }
    all
}

/// The named groups with their versions, in first-served order.
fn groups(registry: &Registry) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut groups: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for (group, version) in group_versions(registry).into_iter().filter(|(g, _)| !g.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, versions)) => versions.push(version),
            None => groups.push((group, vec![version])),
        }
    }
    groups
}

fn group_version_text(group: &str, version: &str) -> String {
    if group.is_empty() { version.to_string() } else { format!("{group}/{version}") }
}

/// `GET /api` (legacy).
#[must_use]
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn api_group(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": group_version_text(group, v), "version": v})).collect();
    json!({"name": group, "versions": versions, "preferredVersion": versions.first().cloned().unwrap_or(Value::Null)})
}

/// `GET /apis` (legacy).
#[must_use]
pub fn api_group_list(registry: &Registry) -> Value {
    let groups: Vec<Value> = groups(registry).iter().map(|(g, vs)| api_group(g, vs)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/<group>` (legacy), if the group is served.
#[must_use]
pub fn api_group_document(registry: &Registry, group: &str) -> Option<Value> {
    groups(registry).iter().find(|(g, _)| *g == group).map(|(g, vs)| {
        let mut doc = api_group(g, vs);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        doc
    })
}

fn resource_entries<'r>(
    registry: &'r Registry,
    group: &str,
    version: &str,
) -> (Vec<&'r ResourceInfo>, Vec<&'static VirtualResource>) {
    let stored = registry.resources().iter().filter(|r| r.gvk.group == group && r.gvk.version == version).collect();
    let virtual_ = VIRTUAL.iter().filter(|v| v.gvk.group == group && v.gvk.version == version).collect();
    (stored, virtual_)
}

/// `GET /api/v1` or `/apis/<group>/<version>` (legacy `APIResourceList`), if served.
#[must_use]
pub fn api_resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let (stored, virtual_) = resource_entries(registry, group, version);
    if stored.is_empty() && virtual_.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for r in stored {
        resources.push(json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.gvk.kind,
            "verbs": r.verbs,
            "shortNames": r.short_names,
            "categories": r.categories,
        }));
        for sub in r.subresources {
            let kind = sub.kind.unwrap_or(r.gvk);
            let mut entry = json!({
                "name": format!("{}/{}", r.plural, sub.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind.kind,
                "verbs": sub.verbs,
            });
            if sub.kind.is_some() {
                entry["group"] = json!(kind.group);
                entry["version"] = json!(kind.version);
            }
            resources.push(entry);
        }
    }
    for v in virtual_ {
        resources.push(json!({
            "name": v.plural, "singularName": v.gvk.kind.to_ascii_lowercase(), "namespaced": v.namespaced,
            "kind": v.gvk.kind, "verbs": v.verbs,
        }));
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version_text(group, version),
        "resources": resources,
    }))
}

fn gvk_json(gvk: &GroupVersionKind) -> Value {
    json!({"group": gvk.group, "version": gvk.version, "kind": gvk.kind})
}

fn aggregated_version(registry: &Registry, group: &str, version: &str) -> Value {
    let (stored, virtual_) = resource_entries(registry, group, version);
    let mut resources: Vec<Value> = stored
        .iter()
        .map(|r| {
            let subresources: Vec<Value> = r
                .subresources
                .iter()
                .map(|s| json!({"subresource": s.name, "responseKind": gvk_json(&s.kind.unwrap_or(r.gvk)), "verbs": s.verbs}))
                .collect();
            let mut entry = json!({
                "resource": r.plural,
                "responseKind": gvk_json(&r.gvk),
                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": r.singular,
                "verbs": r.verbs,
                "subresources": subresources,
            });
            if !r.short_names.is_empty() {
                entry["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                entry["categories"] = json!(r.categories);
            }
            entry
        })
        .collect();
    resources.extend(virtual_.iter().map(|v| {
        json!({
            "resource": v.plural, "responseKind": gvk_json(&v.gvk),
            "scope": if v.namespaced { "Namespaced" } else { "Cluster" },
            "singularResource": v.gvk.kind.to_ascii_lowercase(), "verbs": v.verbs,
        })
    }));
    json!({"version": version, "resources": resources, "freshness": "Current"})
}

/// Aggregated discovery for `/api` (`core == true`) or `/apis`.
#[must_use]
pub fn aggregated(registry: &Registry, core: bool) -> Value {
    let items: Vec<Value> = if core {
        vec![json!({"metadata": {"name": ""}, "versions": [aggregated_version(registry, "", "v1")]})]
    } else {
        groups(registry)
            .iter()
            .map(|(g, vs)| {
                let versions: Vec<Value> = vs.iter().map(|v| aggregated_version(registry, g, v)).collect();
                json!({"metadata": {"name": g}, "versions": versions})
            })
            .collect()
    };
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_accept_header_selects_aggregated_discovery() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert!(wants_aggregated(kubectl));
        assert!(!wants_aggregated("application/json"));
    }

    #[test]
    fn pods_are_listed_with_subresources_and_short_names() {
        let registry = Registry::builtin();
        let list = api_resource_list(&registry, "", "v1").expect("core/v1 served");
        let names: Vec<&str> =
            list["resources"].as_array().into_iter().flatten().filter_map(|r| r["name"].as_str()).collect();
        for want in ["pods", "pods/status", "pods/binding", "namespaces", "nodes"] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let aggregated = aggregated(&registry, false);
        let apps = aggregated["items"].as_array().into_iter().flatten().find(|i| i["metadata"]["name"] == "apps");
        let deploy = apps.and_then(|a| {
            a["versions"][0]["resources"]
                .as_array()
                .and_then(|rs| rs.iter().find(|r| r["resource"] == "deployments").cloned())
        });
        let deploy = deploy.expect("deployments in aggregated discovery");
        assert_eq!(deploy["shortNames"], json!(["deploy"]));
        assert_eq!(deploy["scope"], "Namespaced");
    }
}
