//! `ResourceQuota` accounting shared by the `resource-quota` admission policy (which charges
//! each new pod) and the `resource-quota` controller (which recomputes `status.used` from what
//! exists): what one object uses, which objects still count, and quota maps to and from JSON.
//!
//! Usage is a map from quota resource name (`pods`, `requests.cpu`, `count/configmaps`, …) to a
//! quantity in thousandths ([`Milli`]), as `status.used` and `spec.hard` hold it.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::quantity::{self, Milli};

/// Quota resource name → amount in thousandths.
pub type Usage = BTreeMap<String, Milli>;

/// One kind whose objects a quota can count: its API group, version, kind and plural resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted {
    /// The API group; empty for the core group.
    pub group: &'static str,
    /// The version read.
    pub version: &'static str,
    /// The kind.
    pub kind: &'static str,
    /// The plural resource name, as in `count/<plural>`.
    pub plural: &'static str,
}

impl Counted {
    /// The object-count resource name: `count/configmaps`, `count/deployments.apps`.
    #[must_use]
    pub fn count_name(&self) -> String {
        count_name(self.group, self.plural)
    }

    /// The legacy name upstream also counts this kind under (`configmaps`, `pods`, …), if any.
    #[must_use]
    pub fn legacy_name(&self) -> Option<&'static str> {
        (self.group.is_empty() && LEGACY.contains(&self.plural)).then_some(self.plural)
    }
}

/// The core kinds upstream also counts under their plural alone (`pods: 2`).
const LEGACY: [&str; 7] =
    ["pods", "services", "configmaps", "secrets", "persistentvolumeclaims", "replicationcontrollers", "resourcequotas"];

/// The object-count resource name of any resource: `count/configmaps`, `count/widgets.example.com`.
#[must_use]
pub fn count_name(group: &str, plural: &str) -> String {
    if group.is_empty() { format!("count/{plural}") } else { format!("count/{plural}.{group}") }
}

/// The kinds quotas count (all namespaced), pods first.
pub const COUNTED: [Counted; 10] = [
    Counted { group: "", version: "v1", kind: "Pod", plural: "pods" },
    Counted { group: "", version: "v1", kind: "Service", plural: "services" },
    Counted { group: "", version: "v1", kind: "ConfigMap", plural: "configmaps" },
    Counted { group: "", version: "v1", kind: "Secret", plural: "secrets" },
    Counted { group: "", version: "v1", kind: "PersistentVolumeClaim", plural: "persistentvolumeclaims" },
    Counted { group: "", version: "v1", kind: "ReplicationController", plural: "replicationcontrollers" },
    Counted { group: "apps", version: "v1", kind: "Deployment", plural: "deployments" },
    Counted { group: "apps", version: "v1", kind: "StatefulSet", plural: "statefulsets" },
    Counted { group: "batch", version: "v1", kind: "Job", plural: "jobs" },
    Counted { group: "batch", version: "v1", kind: "CronJob", plural: "cronjobs" },
];

/// Pods, as [`COUNTED`] lists them.
pub const PODS: Counted = COUNTED[0];

/// The quota resource names an object of `counted` adds to, with its own amounts (pods: their
/// requests and limits; services: node ports and load balancers; claims: requested storage).
#[must_use]
pub fn object_usage(counted: &Counted, object: &Value) -> Usage {
    resource_usage(counted.group, counted.plural, object)
}

/// What one object of any resource (API group and plural) uses: [`object_usage`] for the kinds
/// [`COUNTED`] lists, and `count/<plural>.<group>` for every other.
#[must_use]
pub fn resource_usage(group: &str, plural: &str, object: &Value) -> Usage {
    let core = group.is_empty();
    let mut usage = match plural {
        "pods" if core => pod_resources(object),
        "services" if core => service_resources(object),
        "persistentvolumeclaims" if core => claim_resources(object),
        _ => Usage::new(),
    };
    usage.insert(count_name(group, plural), 1000);
    if core && LEGACY.contains(&plural) {
        usage.insert(plural.to_owned(), 1000);
    }
    usage
}

/// What one pod uses: `pods`, `count/pods`, and its containers' requests and limits of CPU and
/// memory (`requests.cpu` also as `cpu`, `requests.memory` as `memory`).
#[must_use]
pub fn pod_usage(pod: &Value) -> Usage {
    object_usage(&PODS, pod)
}

fn pod_resources(pod: &Value) -> Usage {
    let mut usage = Usage::new();
    for (section, resource) in [("requests", "cpu"), ("requests", "memory"), ("limits", "cpu"), ("limits", "memory")] {
        let amount = effective(pod, section, resource);
        usage.insert(format!("{section}.{resource}"), amount);
        if section == "requests" {
            usage.insert(resource.to_owned(), amount);
        }
    }
    usage
}

/// A pod's effective request or limit (`section`) of `resource`, as upstream's resource helpers
/// compute it: its containers and sidecars (init containers with `restartPolicy: Always`) summed,
/// or the largest one-off init container with the sidecars started before it, whichever is
/// more, plus the pod's `overhead` (added to a limit only when the limit is set).
fn effective(pod: &Value, section: &str, resource: &str) -> Milli {
    let path = format!("/resources/{section}/{resource}");
    let amount = |container: &Value| container.pointer(&path).and_then(Value::as_str).and_then(quantity::parse);
    let list = |name: &str| pod.get("spec").and_then(|s| s.get(name)).and_then(Value::as_array).into_iter().flatten();
    let mut sum: Milli = list("containers").filter_map(amount).sum();
    let (mut sidecars, mut one_off) = (0, 0);
    for container in list("initContainers") {
        let own = amount(container).unwrap_or(0);
        if container.get("restartPolicy").and_then(Value::as_str) == Some("Always") {
            sum += own;
            sidecars += own;
        } else {
            one_off = one_off.max(own + sidecars);
        }
    }
    let total = sum.max(one_off);
    let overhead = pod.pointer(&format!("/spec/overhead/{resource}")).and_then(Value::as_str).and_then(quantity::parse);
    match overhead {
        Some(overhead) if section == "requests" || total > 0 => total + overhead,
        _ => total,
    }
}

/// The CPU and memory resources whose quota makes every container state them.
const STATED: [&str; 6] = ["cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"];

/// Upstream's rule that a quota on pods' CPU or memory (`hard` naming `requests.cpu`, `cpu`,
/// `limits.memory`, …) admits only pods whose every container and init container states that
/// request or limit itself. Returns the refusal, `must specify limits.cpu for: app; …`, naming
/// the missing resources in order with the containers missing each.
#[must_use]
pub fn unstated(pod: &Value, hard: &Usage) -> Option<String> {
    let required: Vec<&str> = STATED.iter().copied().filter(|r| hard.contains_key(*r)).collect();
    if required.is_empty() {
        return None;
    }
    let mut missing: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
    let lists =
        ["containers", "initContainers"].map(|name| pod.pointer(&format!("/spec/{name}")).and_then(Value::as_array));
    for container in lists.into_iter().flatten().flatten() {
        let stated =
            |section: &str, resource: &str| container.pointer(&format!("/resources/{section}/{resource}")).is_some();
        let name = container.get("name").and_then(Value::as_str).unwrap_or_default();
        for resource in &required {
            let present = match *resource {
                "cpu" | "memory" => stated("requests", resource),
                other => other.split_once('.').is_some_and(|(section, name)| stated(section, name)),
            };
            if !present {
                missing.entry(resource).or_default().insert(name);
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(resource, names)| format!("{resource} for: {}", names.iter().copied().collect::<Vec<_>>().join(",")))
        .collect();
    Some(format!("must specify {}", parts.join("; ")))
}

/// What an update adds: for each resource, how much more `new` uses than `old`, where it uses
/// more (upstream charges an update only for its increase; the controller gives back decreases).
#[must_use]
pub fn increase(new: &Usage, old: &Usage) -> Usage {
    new.iter()
        .filter_map(|(resource, amount)| {
            let grown = amount - old.get(resource).copied().unwrap_or(0);
            (grown > 0).then(|| (resource.clone(), grown))
        })
        .collect()
}

fn service_resources(service: &Value) -> Usage {
    let kind = service.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
    let node_ports = match kind {
        "NodePort" | "LoadBalancer" => service.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len),
        _ => 0,
    };
    Usage::from([
        ("services.nodeports".to_owned(), node_ports as Milli * 1000),
        ("services.loadbalancers".to_owned(), if kind == "LoadBalancer" { 1000 } else { 0 }),
    ])
}

fn claim_resources(claim: &Value) -> Usage {
    let storage = claim
        .pointer("/spec/resources/requests/storage")
        .and_then(Value::as_str)
        .and_then(quantity::parse)
        .unwrap_or(0);
    Usage::from([("requests.storage".to_owned(), storage)])
}

/// Whether an object still counts against quota: not being deleted and, for a pod, not finished
/// (`Succeeded`/`Failed` pods hold no resources, as upstream).
#[must_use]
pub fn counts(object: &Value) -> bool {
    let phase = object.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
    object.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null)
        && phase != "Succeeded"
        && phase != "Failed"
}

/// Adds `usage` into `total`.
pub fn add(total: &mut Usage, usage: &Usage) {
    for (resource, amount) in usage {
        *total.entry(resource.clone()).or_insert(0) += amount;
    }
}

/// The summed usage of the `objects` of `counted` that still count and that `scopes` select.
#[must_use]
pub fn total<'a>(counted: &Counted, scopes: &Scopes, objects: impl IntoIterator<Item = &'a Value>) -> Usage {
    let mut sum = Usage::new();
    for object in objects.into_iter().filter(|o| counts(o) && scopes.matches(counted.group, counted.plural, o)) {
        add(&mut sum, &object_usage(counted, object));
    }
    sum
}

/// What a quota limiting `hard` and selecting `scopes` has in use, computed from what exists:
/// `list` reads the objects of one kind in the quota's namespace. Only the resources of `hard`
/// some tracked kind provides are in the answer (`nvidia.com/gpu` is not).
///
/// # Errors
///
/// The first error `list` returns.
pub fn compute<E>(
    hard: &Usage,
    scopes: &Scopes,
    mut list: impl FnMut(&Counted) -> Result<Vec<Value>, E>,
) -> Result<Usage, E> {
    let mut totals = Usage::new();
    for counted in COUNTED.iter().filter(|c| hard.keys().any(|r| sources(r).contains(c))) {
        add(&mut totals, &total(counted, scopes, &list(counted)?));
    }
    Ok(hard
        .keys()
        .filter(|resource| !sources(resource).is_empty())
        .map(|resource| (resource.clone(), totals.get(resource).copied().unwrap_or(0)))
        .collect())
}

/// The kinds that feed a quota resource name (`cpu` → pods, `count/secrets` → secrets);
/// empty for names no tracked kind provides.
#[must_use]
pub fn sources(resource: &str) -> Vec<&'static Counted> {
    COUNTED
        .iter()
        .filter(|counted| {
            let own = match counted.plural {
                "pods" if counted.group.is_empty() => POD_RESOURCES.contains(&resource),
                "services" if counted.group.is_empty() => resource.starts_with("services."),
                "persistentvolumeclaims" if counted.group.is_empty() => resource == "requests.storage",
                _ => false,
            };
            own || counted.count_name() == resource || counted.legacy_name() == Some(resource)
        })
        .collect()
}

/// The quota scopes upstream knows (`spec.scopes`, `spec.scopeSelector`'s `scopeName`).
pub const SCOPES: [&str; 6] =
    ["Terminating", "NotTerminating", "BestEffort", "NotBestEffort", "PriorityClass", "CrossNamespacePodAffinity"];

/// One condition a quota puts on what it counts: an entry of `spec.scopes` (operator `Exists`)
/// or of `spec.scopeSelector.matchExpressions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeRequirement {
    /// The scope: one of [`SCOPES`].
    pub scope: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// The values of `In` and `NotIn` (priority class names).
    pub values: Vec<String>,
}

/// A quota's scopes: all of them must select an object for the quota to count it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scopes(pub Vec<ScopeRequirement>);

impl Scopes {
    /// The scopes of a `ResourceQuota`: `spec.scopes` then `spec.scopeSelector`.
    #[must_use]
    pub fn of(quota: &Value) -> Self {
        let strings = |value: Option<&Value>| -> Vec<String> {
            value.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
        };
        let listed = strings(quota.pointer("/spec/scopes")).into_iter().map(|scope| ScopeRequirement {
            scope,
            operator: "Exists".to_owned(),
            values: Vec::new(),
        });
        let expressions = quota.pointer("/spec/scopeSelector/matchExpressions").and_then(Value::as_array);
        let selected = expressions.into_iter().flatten().map(|expression| {
            let text = |field: &str| expression.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
            ScopeRequirement {
                scope: text("scopeName"),
                operator: text("operator"),
                values: strings(expression.get("values")),
            }
        });
        Self(listed.chain(selected).collect())
    }

    /// Whether the quota counts `object` of resource `group`/`plural`: everything when it has no
    /// scopes; otherwise only the pods every scope selects (upstream's evaluators for other kinds
    /// match no scope).
    #[must_use]
    pub fn matches(&self, group: &str, plural: &str, object: &Value) -> bool {
        self.0.is_empty() || group.is_empty() && plural == "pods" && self.0.iter().all(|r| r.selects(object))
    }
}

impl ScopeRequirement {
    /// Whether this requirement selects `pod`, as upstream's pod evaluator decides.
    #[must_use]
    pub fn selects(&self, pod: &Value) -> bool {
        match self.scope.as_str() {
            "Terminating" => terminating(pod),
            "NotTerminating" => !terminating(pod),
            "BestEffort" => best_effort(pod),
            "NotBestEffort" => !best_effort(pod),
            "PriorityClass" => {
                let class = pod.pointer("/spec/priorityClassName").and_then(Value::as_str).filter(|c| !c.is_empty());
                let listed = |class: &str| self.values.iter().any(|v| v == class);
                match self.operator.as_str() {
                    "Exists" => class.is_some(),
                    "DoesNotExist" => class.is_none(),
                    "In" => class.is_some_and(listed),
                    "NotIn" => class.is_none_or(|c| !listed(c)),
                    _ => false,
                }
            }
            "CrossNamespacePodAffinity" => cross_namespace_affinity(pod),
            _ => false,
        }
    }
}

/// A pod with an `activeDeadlineSeconds` of 0 or more.
fn terminating(pod: &Value) -> bool {
    pod.pointer("/spec/activeDeadlineSeconds").and_then(Value::as_i64).is_some_and(|s| s >= 0)
}

/// A pod whose quality-of-service class is `BestEffort`: no container (init containers and pod-level resources
/// included) requests or limits any CPU or memory.
#[must_use]
pub fn best_effort(pod: &Value) -> bool {
    let spec = pod.get("spec");
    let containers = ["containers", "initContainers"]
        .into_iter()
        .flat_map(|field| spec.and_then(|s| s.get(field)).and_then(Value::as_array).into_iter().flatten());
    let resources = containers.filter_map(|c| c.get("resources")).chain(spec.and_then(|s| s.get("resources")));
    !resources.into_iter().any(|resources| {
        ["requests", "limits"].into_iter().any(|section| {
            ["cpu", "memory"].into_iter().any(|name| {
                resources
                    .pointer(&format!("/{section}/{name}"))
                    .and_then(Value::as_str)
                    .and_then(quantity::parse)
                    .is_some_and(|amount| amount > 0)
            })
        })
    })
}

/// A pod with a pod (anti-)affinity term naming other namespaces or a namespace selector.
fn cross_namespace_affinity(pod: &Value) -> bool {
    let cross = |term: &Value| {
        term.get("namespaces").and_then(Value::as_array).is_some_and(|n| !n.is_empty())
            || term.get("namespaceSelector").is_some_and(|s| !s.is_null())
    };
    ["podAffinity", "podAntiAffinity"].into_iter().any(|kind| {
        let Some(affinity) = pod.pointer(&format!("/spec/affinity/{kind}")) else { return false };
        let required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution").and_then(Value::as_array);
        let preferred = affinity.get("preferredDuringSchedulingIgnoredDuringExecution").and_then(Value::as_array);
        required.into_iter().flatten().any(cross)
            || preferred.into_iter().flatten().filter_map(|p| p.get("podAffinityTerm")).any(cross)
    })
}

/// The quota resource names upstream calls standard (the others, such as `count/…` and
/// extended resources, are not checked against scopes).
const STANDARD: [&str; 19] = [
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "services.nodeports",
    "services.loadbalancers",
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.storage",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
];

/// Whether a quota of `scope` may limit `resource`: `BestEffort` only the pod count, the other
/// pod scopes the pod count and CPU and memory.
#[must_use]
pub fn scope_allows(scope: &str, resource: &str) -> bool {
    if !STANDARD.contains(&resource) {
        return true;
    }
    match scope {
        "BestEffort" => resource == "pods",
        "Terminating" | "NotTerminating" | "NotBestEffort" | "PriorityClass" | "CrossNamespacePodAffinity" => {
            resource == "pods" || POD_RESOURCES.contains(&resource)
        }
        _ => true,
    }
}

/// Upstream's validation of a quota's `spec.scopes` and `spec.scopeSelector` against its
/// `spec.hard`: field errors as `kubectl` shows them, none when valid.
#[must_use]
pub fn validate_scopes(spec: &Value) -> Vec<String> {
    let hard: Vec<&String> =
        spec.get("hard").and_then(Value::as_object).map(|h| h.keys().collect()).unwrap_or_default();
    let mut errors = Vec::new();
    let conflicting = |names: &[&str]| {
        [("BestEffort", "NotBestEffort"), ("Terminating", "NotTerminating")]
            .iter()
            .filter(|(a, b)| names.contains(a) && names.contains(b))
            .count()
    };
    if let Some(scopes) = spec.get("scopes").and_then(Value::as_array).filter(|s| !s.is_empty()) {
        let names: Vec<&str> = scopes.iter().filter_map(Value::as_str).collect();
        let invalid = |message: &str| format!("spec.scopes: Invalid value: {}: {message}", Value::from(scopes.clone()));
        for name in &names {
            if !SCOPES.contains(name) {
                errors.push(invalid("unsupported scope"));
            }
            errors.extend(
                hard.iter()
                    .filter(|r| !scope_allows(name, r))
                    .map(|_| invalid("unsupported scope applied to resource")),
            );
        }
        errors.extend((0..conflicting(&names)).map(|_| invalid("conflicting scopes")));
    }
    let Some(selector) = spec.get("scopeSelector").filter(|s| !s.is_null()) else { return errors };
    let path = "spec.scopeSelector.matchExpressions";
    let mut names = Vec::new();
    for expression in selector.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let text = |field: &str| expression.get(field).and_then(Value::as_str).unwrap_or_default();
        let (name, operator) = (text("scopeName"), text("operator"));
        let values = expression.get("values").and_then(Value::as_array).map_or(0, Vec::len);
        if !SCOPES.contains(&name) {
            errors.push(format!("{path}.scopeName: Invalid value: {name:?}: unsupported scope"));
        }
        for _ in hard.iter().filter(|r| !scope_allows(name, r)) {
            errors.push(format!("{path}: Invalid value: {selector}: unsupported scope applied to resource"));
        }
        if name != "PriorityClass" && SCOPES.contains(&name) && operator != "Exists" {
            errors.push(format!(
                "{path}.operator: Invalid value: {operator:?}: must be 'Exist' when scope is any of \
                 ResourceQuotaScopeTerminating, ResourceQuotaScopeNotTerminating, ResourceQuotaScopeBestEffort, \
                 ResourceQuotaScopeNotBestEffort or ResourceQuotaScopeCrossNamespacePodAffinity"
            ));
        }
        match operator {
            "In" | "NotIn" if values == 0 => errors.push(format!(
                "{path}.values: Required value: must be at least one value when `operator` is 'In' or 'NotIn' for \
                 scope selector"
            )),
            "Exists" | "DoesNotExist" if values > 0 => errors.push(format!(
                "{path}.values: Invalid value: {}: must be no value when `operator` is 'Exist' or 'DoesNotExist' \
                 for scope selector",
                expression["values"]
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            _ => errors.push(format!("{path}.operator: Invalid value: {operator:?}: not a valid selector operator")),
        }
        names.push(name);
    }
    errors.extend((0..conflicting(&names)).map(|_| format!("{path}: Invalid value: {selector}: conflicting scopes")));
    errors
}

/// The pod resource names besides counts.
const POD_RESOURCES: [&str; 6] = ["requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "cpu", "memory"];

/// Reads a quantity map (`spec.hard`, `status.used`); entries that are not quantities are left
/// out.
#[must_use]
pub fn quantities(value: Option<&Value>) -> Usage {
    value
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str().and_then(quantity::parse)?))).collect())
        .unwrap_or_default()
}

/// Writes a quantity map as JSON (`{"pods": "2", "requests.cpu": "500m"}`).
#[must_use]
pub fn to_json(usage: &Usage) -> Value {
    Value::Object(usage.iter().map(|(k, v)| (k.clone(), json!(quantity::format_for(k, *v)))).collect::<Map<_, _>>())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{
        COUNTED, PODS, Scopes, Usage, compute, counts, increase, object_usage, pod_usage, quantities, resource_usage,
        sources, to_json, total, unstated, validate_scopes,
    };

    #[test]
    fn a_pod_uses_its_requests_and_limits_and_counts_once() {
        let pod = json!({"spec": {"containers": [
            {"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
            {"resources": {"requests": {"cpu": "250m"}}},
        ]}});
        let usage = pod_usage(&pod);
        for (resource, amount) in [
            ("pods", 1000),
            ("count/pods", 1000),
            ("requests.cpu", 500),
            ("cpu", 500),
            ("limits.cpu", 1000),
            ("requests.memory", (64 * 1000) << 20),
            ("limits.memory", 0),
        ] {
            assert_eq!(usage[resource], amount, "{resource}");
        }
    }

    #[test]
    fn init_containers_sidecars_and_overhead_count_as_upstream_sums_them() {
        let request = |cpu: &str| json!({"resources": {"requests": {"cpu": cpu}, "limits": {"cpu": cpu}}});
        let sidecar = |cpu: &str| {
            let mut container = request(cpu);
            container["restartPolicy"] = json!("Always");
            container
        };
        // (containers, init containers, overhead, requests.cpu)
        let cases = [
            (vec![request("100m"), request("200m")], vec![], None, 300),
            // A one-off init container larger than the containers sets the request.
            (vec![request("100m")], vec![request("500m")], None, 500),
            (vec![request("600m")], vec![request("500m")], None, 600),
            // Sidecars run beside the containers and beside later init containers.
            (vec![request("100m")], vec![sidecar("50m"), request("400m")], None, 450),
            (vec![request("500m")], vec![sidecar("50m"), request("100m")], None, 550),
            (vec![request("100m")], vec![], Some("250m"), 350),
        ];
        for (containers, init, overhead, cpu) in cases {
            let mut spec = json!({"containers": containers, "initContainers": init});
            if let Some(overhead) = overhead {
                spec["overhead"] = json!({"cpu": overhead});
            }
            let usage = pod_usage(&json!({"spec": spec}));
            assert_eq!(usage["requests.cpu"], cpu, "{spec}");
            assert_eq!(usage["limits.cpu"], cpu, "{spec}");
        }
        // Overhead adds to a limit only when the pod has one.
        let unlimited = json!({"spec": {"containers": [{}], "overhead": {"memory": "1Ki"}}});
        assert_eq!(pod_usage(&unlimited)["limits.memory"], 0);
        assert_eq!(pod_usage(&unlimited)["requests.memory"], 1_024_000);
    }

    #[test]
    fn quotas_on_cpu_or_memory_make_every_container_state_them() {
        let hard = |names: &[&str]| names.iter().map(|n| ((*n).to_owned(), 1000)).collect::<Usage>();
        let pod = json!({"spec": {
            "initContainers": [{"name": "setup", "resources": {"requests": {"cpu": "1", "memory": "1Mi"}}}],
            "containers": [
                {"name": "web", "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}}},
                {"name": "app", "resources": {}},
            ],
        }});
        // The message upstream gives for the same pod and quota.
        assert_eq!(
            unstated(&pod, &hard(&["pods", "requests.cpu", "limits.cpu", "limits.memory"])).as_deref(),
            Some("must specify limits.cpu for: app,setup; limits.memory for: app,setup,web; requests.cpu for: app"),
        );
        assert_eq!(unstated(&pod, &hard(&["memory"])).as_deref(), Some("must specify memory for: app,web"));
        assert_eq!(unstated(&pod, &hard(&["pods", "count/pods", "requests.storage"])), None);
        let stated = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "0"}}}]}});
        assert_eq!(unstated(&stated, &hard(&["cpu", "requests.cpu"])), None, "a zero request is stated");
    }

    #[test]
    fn an_update_is_charged_only_what_it_adds() {
        let usage =
            |pairs: &[(&str, super::Milli)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect::<Usage>();
        let old = usage(&[("services", 1000), ("services.nodeports", 0), ("services.loadbalancers", 0)]);
        let new = usage(&[("services", 1000), ("services.nodeports", 2000), ("services.loadbalancers", 1000)]);
        assert_eq!(increase(&new, &old), usage(&[("services.nodeports", 2000), ("services.loadbalancers", 1000)]));
        assert_eq!(increase(&old, &new), Usage::new(), "a decrease is not charged");
        assert_eq!(increase(&new, &new), Usage::new());
    }

    #[test]
    fn object_counts_use_upstream_names() {
        // (kind index in COUNTED, object, resource, amount)
        let cases = [
            (2, json!({}), "count/configmaps", 1000),
            (2, json!({}), "configmaps", 1000),
            (3, json!({}), "secrets", 1000),
            (1, json!({"spec": {"type": "NodePort", "ports": [{}, {}]}}), "services.nodeports", 2000),
            (1, json!({"spec": {"type": "LoadBalancer", "ports": [{}]}}), "services.loadbalancers", 1000),
            (1, json!({"spec": {}}), "services.nodeports", 0),
            (4, json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}}), "requests.storage", 1000 << 30),
            (6, json!({}), "count/deployments.apps", 1000),
        ];
        for (index, object, resource, amount) in cases {
            assert_eq!(object_usage(&COUNTED[index], &object).get(resource), Some(&amount), "{resource}");
        }
        assert!(!object_usage(&COUNTED[6], &json!({})).contains_key("deployments"), "no legacy name for apps");
    }

    #[test]
    fn finished_and_terminating_objects_do_not_count() {
        let cases = [
            (json!({"status": {"phase": "Running"}}), true),
            (json!({"status": {"phase": "Succeeded"}}), false),
            (json!({"status": {"phase": "Failed"}}), false),
            (json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}), false),
            (json!({}), true),
        ];
        for (object, expected) in cases {
            assert_eq!(counts(&object), expected, "{object}");
        }
        let pods = [json!({"status": {"phase": "Running"}}), json!({"status": {"phase": "Succeeded"}})];
        assert_eq!(total(&PODS, &Scopes::default(), &pods)["pods"], 1000);
    }

    #[test]
    fn resource_names_map_to_the_kinds_that_feed_them() {
        let plural = |name: &str| sources(name).iter().map(|c| c.plural).collect::<Vec<_>>();
        assert_eq!(plural("cpu"), ["pods"]);
        assert_eq!(plural("count/pods"), ["pods"]);
        assert_eq!(plural("configmaps"), ["configmaps"]);
        assert_eq!(plural("services.nodeports"), ["services"]);
        assert_eq!(plural("requests.storage"), ["persistentvolumeclaims"]);
        assert_eq!(plural("count/jobs.batch"), ["jobs"]);
        assert!(plural("nvidia.com/gpu").is_empty());
    }

    #[test]
    fn quantity_maps_round_trip() {
        let usage = Usage::from([("pods".to_owned(), 2000), ("cpu".to_owned(), 500)]);
        assert_eq!(quantities(Some(&to_json(&usage))), usage);
        assert_eq!(to_json(&usage), json!({"pods": "2", "cpu": "500m"}));
    }

    #[test]
    fn any_resource_is_counted_under_count_names() {
        let usage = resource_usage("example.com", "widgets", &json!({}));
        assert_eq!(usage, Usage::from([("count/widgets.example.com".to_owned(), 1000)]));
        let usage = resource_usage("", "secrets", &json!({}));
        assert_eq!(usage, Usage::from([("count/secrets".to_owned(), 1000), ("secrets".to_owned(), 1000)]));
    }

    fn pod(spec: &serde_json::Value) -> serde_json::Value {
        json!({"spec": spec})
    }

    #[test]
    fn scopes_select_pods_as_upstream() {
        let best_effort = pod(&json!({"containers": [{"name": "a"}]}));
        let zero = pod(&json!({"containers": [{"resources": {"requests": {"cpu": "0"}}}]}));
        let burstable = pod(&json!({"containers": [{"name": "a"}, {"resources": {"limits": {"memory": "1Mi"}}}]}));
        let init = pod(&json!({"containers": [{}], "initContainers": [{"resources": {"requests": {"cpu": "1m"}}}]}));
        let deadline = pod(&json!({"activeDeadlineSeconds": 30, "containers": [{}]}));
        let high = pod(&json!({"priorityClassName": "high", "containers": [{}]}));
        let low = pod(&json!({"priorityClassName": "low", "containers": [{}]}));
        let affinity = pod(&json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "podAffinityTerm": {"namespaceSelector": {}, "topologyKey": "zone"}}]}}}));
        let quota = |spec: serde_json::Value| Scopes::of(&json!({"spec": spec}));
        let priority = |operator: &str, values: &[&str]| {
            quota(json!({"scopeSelector": {"matchExpressions": [
                {"scopeName": "PriorityClass", "operator": operator, "values": values}]}}))
        };
        // (scopes, pod, selected)
        let cases = [
            (quota(json!({})), &burstable, true),
            (quota(json!({"scopes": ["BestEffort"]})), &best_effort, true),
            (quota(json!({"scopes": ["BestEffort"]})), &zero, true),
            (quota(json!({"scopes": ["BestEffort"]})), &burstable, false),
            (quota(json!({"scopes": ["BestEffort"]})), &init, false),
            (quota(json!({"scopes": ["NotBestEffort"]})), &burstable, true),
            (quota(json!({"scopes": ["NotBestEffort"]})), &best_effort, false),
            (quota(json!({"scopes": ["Terminating"]})), &deadline, true),
            (quota(json!({"scopes": ["Terminating"]})), &best_effort, false),
            (quota(json!({"scopes": ["NotTerminating"]})), &best_effort, true),
            (quota(json!({"scopes": ["NotTerminating", "BestEffort"]})), &deadline, false),
            (quota(json!({"scopes": ["PriorityClass"]})), &high, true),
            (quota(json!({"scopes": ["PriorityClass"]})), &best_effort, false),
            (priority("In", &["high"]), &high, true),
            (priority("In", &["high"]), &low, false),
            (priority("In", &["high"]), &best_effort, false),
            (priority("NotIn", &["high"]), &low, true),
            (priority("NotIn", &["high"]), &best_effort, true),
            (priority("NotIn", &["high"]), &high, false),
            (priority("Exists", &[]), &low, true),
            (priority("DoesNotExist", &[]), &low, false),
            (priority("DoesNotExist", &[]), &best_effort, true),
            (quota(json!({"scopes": ["CrossNamespacePodAffinity"]})), &affinity, true),
            (quota(json!({"scopes": ["CrossNamespacePodAffinity"]})), &high, false),
        ];
        for (index, (scopes, object, selected)) in cases.iter().enumerate() {
            assert_eq!(scopes.matches("", "pods", object), *selected, "case {index}: {scopes:?} {object}");
        }
        let scoped = quota(json!({"scopes": ["NotTerminating"]}));
        assert!(!scoped.matches("", "configmaps", &json!({})), "a scoped quota counts only pods");
        assert!(quota(json!({})).matches("", "configmaps", &json!({})));
    }

    #[test]
    fn a_scoped_quota_computes_only_the_pods_it_selects() {
        let pods = [
            json!({"spec": {"containers": [{}]}}),
            json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}}),
            json!({"spec": {"containers": [{}]}, "status": {"phase": "Succeeded"}}),
        ];
        let hard = Usage::from([("pods".to_owned(), 5000), ("nvidia.com/gpu".to_owned(), 1000)]);
        let scopes = Scopes::of(&json!({"spec": {"scopes": ["BestEffort"]}}));
        let used = compute(&hard, &scopes, |counted| {
            Ok::<_, ()>(if counted.plural == "pods" { pods.to_vec() } else { vec![] })
        });
        assert_eq!(used, Ok(Usage::from([("pods".to_owned(), 1000)])), "unknown names are left out");
    }

    #[test]
    fn scopes_are_validated_against_the_limits_as_upstream() {
        // (spec, expected errors, each given by a part of its message)
        let cases: [(serde_json::Value, &[&str]); 9] = [
            (json!({"hard": {"pods": "2"}, "scopes": ["BestEffort"]}), &[]),
            (json!({"hard": {"cpu": "1", "pods": "2"}, "scopes": ["NotBestEffort", "Terminating"]}), &[]),
            (
                json!({"hard": {"cpu": "1"}, "scopes": ["BestEffort"]}),
                &[r#"spec.scopes: Invalid value: ["BestEffort"]: unsupported scope applied to resource"#],
            ),
            (
                json!({"hard": {"configmaps": "1"}, "scopes": ["Terminating"]}),
                &["unsupported scope applied to resource"],
            ),
            (json!({"hard": {"count/configmaps": "1"}, "scopes": ["Terminating"]}), &[]),
            (
                json!({"hard": {"pods": "1"}, "scopes": ["BestEffort", "NotBestEffort", "Sometimes"]}),
                &["unsupported scope", "conflicting scopes"],
            ),
            (
                json!({"hard": {"pods": "1"}, "scopeSelector": {"matchExpressions": [
                    {"scopeName": "PriorityClass", "operator": "In", "values": []}]}}),
                &["spec.scopeSelector.matchExpressions.values: Required value: must be at least one value"],
            ),
            (
                json!({"hard": {"pods": "1"}, "scopeSelector": {"matchExpressions": [
                    {"scopeName": "BestEffort", "operator": "DoesNotExist"}]}}),
                &["spec.scopeSelector.matchExpressions.operator: Invalid value: \"DoesNotExist\": must be 'Exist'"],
            ),
            (
                json!({"hard": {"services": "1"}, "scopeSelector": {"matchExpressions": [
                    {"scopeName": "PriorityClass", "operator": "Matches", "values": ["x"]}]}}),
                &["unsupported scope applied to resource", "not a valid selector operator"],
            ),
        ];
        for (spec, expected) in cases {
            let errors = validate_scopes(&spec);
            assert_eq!(errors.len(), expected.len(), "{spec}: {errors:?}");
            for (error, part) in errors.iter().zip(expected) {
                assert!(error.contains(part), "{spec}: {error:?} lacks {part:?}");
            }
        }
    }
}
