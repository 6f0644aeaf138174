//! Table-driven tests for strategic merge patch over a small hand-written schema shaped like the
//! one kube-apiserver serves. Patches mirror what `kubectl apply`/`kubectl patch` send; expected
//! results follow kube-apiserver.

use serde_json::{Map, Value, json};

use super::strategic_merge;
use crate::patch::{PatchError, SchemaNode};

const POD: &str = "io.k8s.api.core.v1.Pod";
const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";

fn reference(name: &str) -> Value {
    json!({"allOf": [{"$ref": format!("#/components/schemas/{name}")}]})
}

fn merged_list(items: &str, key: &str) -> Value {
    json!({
        "type": "array",
        "items": {"$ref": format!("#/components/schemas/{items}")},
        "x-kubernetes-patch-strategy": "merge",
        "x-kubernetes-patch-merge-key": key
    })
}

fn string_map() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}})
}

/// A Pod and a Deployment, reduced to the fields the cases touch.
fn schemas() -> Map<String, Value> {
    let schemas = json!({
        "io.k8s.api.core.v1.Pod": {"type": "object", "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": reference("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
            "spec": reference("io.k8s.api.core.v1.PodSpec")
        }},
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": {"type": "object", "properties": {
            "name": {"type": "string"},
            "labels": string_map(),
            "annotations": string_map(),
            "finalizers": {"type": "array", "items": {"type": "string"}, "x-kubernetes-patch-strategy": "merge"}
        }},
        "io.k8s.api.core.v1.PodSpec": {"type": "object", "properties": {
            "containers": merged_list("io.k8s.api.core.v1.Container", "name"),
            "volumes": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/io.k8s.api.core.v1.Volume"},
                "x-kubernetes-patch-strategy": "merge,retainKeys",
                "x-kubernetes-patch-merge-key": "name"
            },
            "tolerations": {"type": "array", "items": {"$ref": "#/components/schemas/io.k8s.api.core.v1.Toleration"}},
            "nodeSelector": string_map(),
            "securityContext": reference("io.k8s.api.core.v1.PodSecurityContext")
        }},
        "io.k8s.api.core.v1.Container": {"type": "object", "properties": {
            "name": {"type": "string"},
            "image": {"type": "string"},
            "args": {"type": "array", "items": {"type": "string"}},
            "env": merged_list("io.k8s.api.core.v1.EnvVar", "name"),
            "ports": merged_list("io.k8s.api.core.v1.ContainerPort", "containerPort"),
            "resources": reference("io.k8s.api.core.v1.ResourceRequirements")
        }},
        "io.k8s.api.core.v1.EnvVar": {"type": "object", "properties": {
            "name": {"type": "string"}, "value": {"type": "string"}
        }},
        "io.k8s.api.core.v1.ContainerPort": {"type": "object", "properties": {
            "containerPort": {"type": "integer"}, "name": {"type": "string"}, "protocol": {"type": "string"}
        }},
        "io.k8s.api.core.v1.ResourceRequirements": {"type": "object", "properties": {
            "limits": string_map(), "requests": string_map()
        }},
        "io.k8s.api.core.v1.Volume": {"type": "object", "properties": {
            "name": {"type": "string"},
            "emptyDir": reference("io.k8s.api.core.v1.EmptyDirVolumeSource"),
            "hostPath": reference("io.k8s.api.core.v1.HostPathVolumeSource")
        }},
        "io.k8s.api.core.v1.EmptyDirVolumeSource": {"type": "object", "properties": {"medium": {"type": "string"}}},
        "io.k8s.api.core.v1.HostPathVolumeSource": {"type": "object", "properties": {"path": {"type": "string"}}},
        "io.k8s.api.core.v1.Toleration": {"type": "object", "properties": {
            "key": {"type": "string"}, "operator": {"type": "string"}, "effect": {"type": "string"}
        }},
        "io.k8s.api.core.v1.PodSecurityContext": {"type": "object", "properties": {"runAsUser": {"type": "integer"}}},
        "io.k8s.api.apps.v1.Deployment": {"type": "object", "properties": {
            "metadata": reference("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
            "spec": reference("io.k8s.api.apps.v1.DeploymentSpec")
        }},
        "io.k8s.api.apps.v1.DeploymentSpec": {"type": "object", "properties": {
            "replicas": {"type": "integer"},
            "strategy": {
                "allOf": [{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentStrategy"}],
                "x-kubernetes-patch-strategy": "retainKeys"
            }
        }},
        "io.k8s.api.apps.v1.DeploymentStrategy": {"type": "object", "properties": {
            "type": {"type": "string"},
            "rollingUpdate": reference("io.k8s.api.apps.v1.RollingUpdateDeployment")
        }},
        "io.k8s.api.apps.v1.RollingUpdateDeployment": {"type": "object", "properties": {
            "maxSurge": {"type": "string"}, "maxUnavailable": {"type": "string"}
        }}
    });
    match schemas {
        Value::Object(map) => map,
        _ => unreachable!("the literal is an object"),
    }
}

struct Case {
    name: &'static str,
    kind: Option<&'static str>,
    original: Value,
    patch: Value,
    expected: Value,
}

fn pod(spec: Value) -> Value {
    let mut pod = json!({"kind": "Pod", "metadata": {"name": "p"}});
    pod["spec"] = spec;
    pod
}

fn container(name: &str, image: &str) -> Value {
    json!({"name": name, "image": image})
}

fn run(kind: Option<&str>, original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let defs = schemas();
    let schema = kind.map_or_else(|| SchemaNode::unknown(&defs), |kind| SchemaNode::definition(&defs, kind));
    strategic_merge(original, patch, schema)
}

/// Fails if any directive survived into a result.
fn assert_no_directives(value: &Value, case: &str) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                assert!(
                    !(key == "$patch"
                        || key == "$retainKeys"
                        || key.starts_with("$setElementOrder")
                        || key.starts_with("$deleteFromPrimitiveList")),
                    "{case}: directive {key} leaked"
                );
                assert_no_directives(value, case);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| assert_no_directives(item, case)),
        _ => {}
    }
}

fn check(cases: Vec<Case>) {
    for case in cases {
        let merged =
            run(case.kind, &case.original, &case.patch).unwrap_or_else(|error| panic!("{}: {error}", case.name));
        assert_eq!(merged, case.expected, "{}", case.name);
        assert_no_directives(&merged, case.name);
    }
}

#[test]
fn containers_merge_by_name() {
    let original = pod(json!({"containers": [container("a", "a:1"), container("b", "b:1")]}));
    check(vec![
        Case {
            name: "update the image of one container",
            kind: Some(POD),
            original: original.clone(),
            patch: json!({"spec": {"containers": [{"name": "b", "image": "b:2"}]}}),
            expected: pod(json!({"containers": [container("a", "a:1"), container("b", "b:2")]})),
        },
        Case {
            // kube-apiserver puts a new item before the server-only items when no
            // $setElementOrder says otherwise; kubectl apply always sends one.
            name: "add a container without $setElementOrder",
            kind: Some(POD),
            original: original.clone(),
            patch: json!({"spec": {"containers": [container("c", "c:1")]}}),
            expected: pod(json!({"containers": [container("c", "c:1"), container("a", "a:1"), container("b", "b:1")]})),
        },
        Case {
            name: "add a container with $setElementOrder appends it",
            kind: Some(POD),
            original: original.clone(),
            patch: json!({"spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
                "containers": [container("c", "c:1")]
            }}),
            expected: pod(json!({"containers": [container("a", "a:1"), container("b", "b:1"), container("c", "c:1")]})),
        },
        Case {
            name: "delete a container with $patch: delete",
            kind: Some(POD),
            original: original.clone(),
            patch: json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
            expected: pod(json!({"containers": [container("b", "b:1")]})),
        },
        Case {
            name: "delete removes every duplicate",
            kind: Some(POD),
            original: pod(json!({"containers": [container("a", "1"), container("b", "1"), container("a", "2")]})),
            patch: json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
            expected: pod(json!({"containers": [container("b", "1")]})),
        },
        Case {
            name: "kubectl apply changing containers from [a, b] to [a, c]",
            kind: Some(POD),
            original: original.clone(),
            patch: json!({"spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "c"}],
                "containers": [{"image": "c:1", "name": "c"}, {"$patch": "delete", "name": "b"}]
            }}),
            expected: pod(json!({"containers": [container("a", "a:1"), container("c", "c:1")]})),
        },
        Case {
            name: "deleting a container that does not exist changes nothing",
            kind: Some(POD),
            original: original.clone(),
            patch: json!({"spec": {"containers": [{"name": "zz", "$patch": "delete"}]}}),
            expected: original.clone(),
        },
        Case {
            name: "containers added to a pod without any, delete items dropped",
            kind: Some(POD),
            original: pod(json!({})),
            patch: json!({"spec": {"containers": [container("a", "a:1"), {"name": "x", "$patch": "delete"}]}}),
            expected: pod(json!({"containers": [container("a", "a:1")]})),
        },
    ]);
}

#[test]
fn set_element_order_reorders_merged_lists() {
    let abc = pod(json!({"containers": [container("a", "1"), container("b", "1"), container("c", "1")]}));
    check(vec![
        Case {
            name: "reorder containers without changing them",
            kind: Some(POD),
            original: abc.clone(),
            patch: json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}}),
            expected: pod(json!({"containers": [container("c", "1"), container("a", "1"), container("b", "1")]})),
        },
        Case {
            name: "reorder and update one",
            kind: Some(POD),
            original: abc.clone(),
            patch: json!({"spec": {
                "$setElementOrder/containers": [{"name": "b"}, {"name": "c"}, {"name": "a"}],
                "containers": [{"name": "c", "image": "2"}]
            }}),
            expected: pod(json!({"containers": [container("b", "1"), container("c", "2"), container("a", "1")]})),
        },
        Case {
            name: "server-only items keep their place relative to the original",
            kind: Some(POD),
            original: pod(json!({"containers": [container("a", "1"), container("sidecar", "1"), container("b", "1")]})),
            patch: json!({"spec": {
                "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                "containers": [{"name": "b", "image": "2"}]
            }}),
            expected: pod(json!({"containers": [container("sidecar", "1"), container("b", "2"), container("a", "1")]})),
        },
        Case {
            name: "order entries for items that do not exist are ignored",
            kind: Some(POD),
            original: pod(json!({"containers": [container("a", "1"), container("c", "1")]})),
            patch: json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "b"}, {"name": "a"}]}}),
            expected: pod(json!({"containers": [container("c", "1"), container("a", "1")]})),
        },
        Case {
            name: "ordering an absent list leaves it absent",
            kind: Some(POD),
            original: pod(json!({})),
            patch: json!({"spec": {"$setElementOrder/containers": [{"name": "a"}]}}),
            expected: pod(json!({})),
        },
        Case {
            name: "reorder finalizers (devel doc example)",
            kind: Some(POD),
            original: json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
            patch: json!({"metadata": {"$setElementOrder/finalizers": ["b", "c", "a"]}}),
            expected: json!({"metadata": {"finalizers": ["b", "c", "a"]}}),
        },
    ]);
}

#[test]
fn nested_lists_merge_by_their_own_keys() {
    let web = |env: Value, ports: Value| pod(json!({"containers": [{"name": "web", "env": env, "ports": ports}]}));
    let original = web(
        json!([{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]),
        json!([{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}]),
    );
    check(vec![
        Case {
            name: "env merged by name",
            kind: Some(POD),
            original: original.clone(),
            patch: json!({"spec": {"containers": [{"name": "web", "env": [{"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}]}]}}),
            expected: web(
                json!([{"name": "X", "value": "1"}, {"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}]),
                json!([{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}]),
            ),
        },
        Case {
            name: "env var deleted and its value field nulled in another",
            kind: Some(POD),
            original: original.clone(),
            patch: json!({"spec": {"containers": [{"name": "web", "env": [
                {"name": "X", "$patch": "delete"}, {"name": "Y", "value": null}
            ]}]}}),
            expected: web(
                json!([{"name": "Y"}]),
                json!([{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}]),
            ),
        },
        Case {
            name: "ports merged by containerPort",
            kind: Some(POD),
            original: original.clone(),
            patch: json!({"spec": {"containers": [{"name": "web", "ports": [
                {"containerPort": 443, "name": "https"}, {"containerPort": 8080}
            ]}]}}),
            expected: web(
                json!([{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]),
                json!([{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443, "name": "https"}, {"containerPort": 8080}]),
            ),
        },
        Case {
            name: "port deleted by containerPort",
            kind: Some(POD),
            original: original.clone(),
            patch: json!({"spec": {"containers": [{"name": "web", "ports": [{"containerPort": 80, "$patch": "delete"}]}]}}),
            expected: web(
                json!([{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]),
                json!([{"containerPort": 443}]),
            ),
        },
        Case {
            name: "args (no strategy) replaced inside a merged container",
            kind: Some(POD),
            original: pod(json!({"containers": [{"name": "web", "args": ["a", "b"]}]})),
            patch: json!({"spec": {"containers": [{"name": "web", "args": ["c"]}]}}),
            expected: pod(json!({"containers": [{"name": "web", "args": ["c"]}]})),
        },
    ]);
}

#[test]
fn maps_merge_and_null_deletes() {
    check(vec![
        Case {
            name: "labels: add, change, delete with null",
            kind: Some(POD),
            original: json!({"metadata": {"labels": {"app": "web", "tier": "front", "old": "x"}}}),
            patch: json!({"metadata": {"labels": {"tier": "back", "old": null, "env": "prod"}}}),
            expected: json!({"metadata": {"labels": {"app": "web", "tier": "back", "env": "prod"}}}),
        },
        Case {
            name: "null for a key that is not there adds nothing",
            kind: Some(POD),
            original: json!({"metadata": {"labels": {"app": "web"}}}),
            patch: json!({"metadata": {"labels": {"gone": null}, "annotations": null}}),
            expected: json!({"metadata": {"labels": {"app": "web"}}}),
        },
        Case {
            name: "nulls inside an added map are dropped",
            kind: Some(POD),
            original: json!({"metadata": {}}),
            patch: json!({"metadata": {"labels": {"app": "web", "gone": null}}}),
            expected: json!({"metadata": {"labels": {"app": "web"}}}),
        },
        Case {
            name: "$patch: replace on a map",
            kind: Some(POD),
            original: pod(json!({"nodeSelector": {"disk": "hdd", "zone": "a"}})),
            patch: json!({"spec": {"nodeSelector": {"$patch": "replace", "disk": "ssd"}}}),
            expected: pod(json!({"nodeSelector": {"disk": "ssd"}})),
        },
        Case {
            name: "$patch: replace on the whole object",
            kind: Some(POD),
            original: pod(json!({"nodeSelector": {"disk": "hdd"}})),
            patch: json!({"$patch": "replace", "kind": "Pod", "metadata": {"name": "q"}}),
            expected: json!({"kind": "Pod", "metadata": {"name": "q"}}),
        },
        Case {
            name: "$patch: delete on a map removes it",
            kind: Some(POD),
            original: pod(json!({"securityContext": {"runAsUser": 1000}, "nodeSelector": {"disk": "ssd"}})),
            patch: json!({"spec": {"securityContext": {"$patch": "delete"}}}),
            expected: pod(json!({"nodeSelector": {"disk": "ssd"}})),
        },
        Case {
            name: "$patch: delete on an absent map adds nothing",
            kind: Some(POD),
            original: pod(json!({})),
            patch: json!({"spec": {"securityContext": {"$patch": "delete"}}}),
            expected: pod(json!({})),
        },
        Case {
            name: "a value of another type is replaced",
            kind: Some(POD),
            original: pod(json!({"nodeSelector": "oops"})),
            patch: json!({"spec": {"nodeSelector": {"disk": "ssd"}}}),
            expected: pod(json!({"nodeSelector": {"disk": "ssd"}})),
        },
    ]);
}

#[test]
fn primitive_merge_lists_are_sets() {
    check(vec![
        Case {
            name: "finalizers union keeps original order",
            kind: Some(POD),
            original: json!({"metadata": {"finalizers": ["a", "b"]}}),
            patch: json!({"metadata": {"finalizers": ["b", "c"]}}),
            expected: json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
        },
        Case {
            name: "finalizers union collapses duplicates",
            kind: Some(POD),
            original: json!({"metadata": {"finalizers": ["a", "a"]}}),
            patch: json!({"metadata": {"finalizers": ["a"]}}),
            expected: json!({"metadata": {"finalizers": ["a"]}}),
        },
        Case {
            name: "$deleteFromPrimitiveList removes every occurrence",
            kind: Some(POD),
            original: json!({"metadata": {"finalizers": ["a", "b", "c", "b"]}}),
            patch: json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "zz"]}}),
            expected: json!({"metadata": {"finalizers": ["a", "c"]}}),
        },
        Case {
            name: "$deleteFromPrimitiveList on an absent list leaves it absent",
            kind: Some(POD),
            original: json!({"metadata": {"name": "p"}}),
            patch: json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
            expected: json!({"metadata": {"name": "p"}}),
        },
        Case {
            name: "kubectl apply changing finalizers from [a, b] to [a, c]",
            kind: Some(POD),
            original: json!({"metadata": {"finalizers": ["a", "b"]}}),
            patch: json!({"metadata": {
                "$deleteFromPrimitiveList/finalizers": ["b"],
                "$setElementOrder/finalizers": ["a", "c"],
                "finalizers": ["c"]
            }}),
            expected: json!({"metadata": {"finalizers": ["a", "c"]}}),
        },
    ]);
}

#[test]
fn list_replace_directive_and_replace_strategy() {
    check(vec![
        Case {
            name: "$patch: replace in a merged list replaces it",
            kind: Some(POD),
            original: pod(json!({"containers": [container("a", "1"), container("b", "1")]})),
            patch: json!({"spec": {"containers": [container("x", "1"), {"$patch": "replace"}]}}),
            expected: pod(json!({"containers": [container("x", "1")]})),
        },
        Case {
            name: "$patch: replace alone empties a merged list",
            kind: Some(POD),
            original: pod(json!({"containers": [container("a", "1")]})),
            patch: json!({"spec": {"containers": [{"$patch": "replace"}]}}),
            expected: pod(json!({"containers": []})),
        },
        Case {
            name: "list without strategy is replaced",
            kind: Some(POD),
            original: pod(json!({"tolerations": [{"key": "a"}, {"key": "b"}]})),
            patch: json!({"spec": {"tolerations": [{"key": "c"}]}}),
            expected: pod(json!({"tolerations": [{"key": "c"}]})),
        },
        Case {
            name: "$patch: replace marker in a replaced list is dropped",
            kind: Some(POD),
            original: pod(json!({"tolerations": [{"key": "a"}]})),
            patch: json!({"spec": {"tolerations": [{"key": "c"}, {"$patch": "replace"}]}}),
            expected: pod(json!({"tolerations": [{"key": "c"}]})),
        },
    ]);
}

#[test]
fn retain_keys_clears_other_members_of_a_union() {
    check(vec![
        Case {
            name: "volume source switched from emptyDir to hostPath (kubectl apply)",
            kind: Some(POD),
            original: pod(
                json!({"volumes": [{"name": "data", "emptyDir": {}}, {"name": "cache", "emptyDir": {"medium": "Memory"}}]}),
            ),
            patch: json!({"spec": {
                "$setElementOrder/volumes": [{"name": "data"}, {"name": "cache"}],
                "volumes": [{"$retainKeys": ["hostPath", "name"], "hostPath": {"path": "/srv"}, "name": "data"}]
            }}),
            expected: pod(json!({"volumes": [
                {"name": "data", "hostPath": {"path": "/srv"}},
                {"name": "cache", "emptyDir": {"medium": "Memory"}}
            ]})),
        },
        Case {
            name: "deployment strategy switched to Recreate",
            kind: Some(DEPLOYMENT),
            original: json!({"spec": {"replicas": 2, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}}}),
            patch: json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": null, "type": "Recreate"}}}),
            expected: json!({"spec": {"replicas": 2, "strategy": {"type": "Recreate"}}}),
        },
        Case {
            name: "retainKeys strategy without the directive merges normally",
            kind: Some(DEPLOYMENT),
            original: json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}}}),
            patch: json!({"spec": {"strategy": {"rollingUpdate": {"maxUnavailable": "1"}}}}),
            expected: json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "1"}}}}),
        },
    ]);
}

#[test]
fn unknown_schema_behaves_like_json_merge_patch() {
    check(vec![
        Case {
            name: "unknown field list replaced on a known kind",
            kind: Some(POD),
            original: pod(json!({"extraList": [{"name": "a"}, {"name": "b"}]})),
            patch: json!({"spec": {"extraList": [{"name": "c"}]}}),
            expected: pod(json!({"extraList": [{"name": "c"}]})),
        },
        Case {
            name: "custom resource: maps merged, lists replaced, null deletes",
            kind: None,
            original: json!({"spec": {"size": 1, "items": ["a", "b"], "nested": {"x": 1, "y": 2}}}),
            patch: json!({"spec": {"items": ["c"], "nested": {"y": null, "z": 3}}}),
            expected: json!({"spec": {"size": 1, "items": ["c"], "nested": {"x": 1, "z": 3}}}),
        },
        Case {
            name: "fields named with a dollar that are not directives are data",
            kind: None,
            original: json!({"spec": {"schema": {"$ref": "#/a"}}}),
            patch: json!({"spec": {"schema": {"$schema": "draft-04"}}}),
            expected: json!({"spec": {"schema": {"$ref": "#/a", "$schema": "draft-04"}}}),
        },
    ]);
}

#[test]
fn directives_inside_added_values_are_consumed() {
    check(vec![Case {
        name: "new container carrying nested directives",
        kind: Some(POD),
        original: pod(json!({"containers": [container("a", "1")]})),
        patch: json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{
                "name": "b",
                "$setElementOrder/env": [{"name": "Y"}, {"name": "X"}],
                "env": [{"name": "Y", "value": "2"}, {"name": "X", "value": "1"}, {"name": "Q", "$patch": "delete"}],
                "resources": {"$patch": "replace", "limits": {"cpu": "1"}},
                "args": ["run", null]
            }]
        }}),
        expected: pod(json!({"containers": [
            container("a", "1"),
            {
                "name": "b",
                "env": [{"name": "Y", "value": "2"}, {"name": "X", "value": "1"}],
                "resources": {"limits": {"cpu": "1"}},
                "args": ["run", null]
            }
        ]})),
    }]);
}

/// A patch the merge must refuse, with the status and a piece of the message a user sees.
struct Rejected {
    name: &'static str,
    kind: Option<&'static str>,
    original: Value,
    patch: Value,
    status: u16,
    message: &'static str,
}

fn check_rejected(cases: Vec<Rejected>) {
    for case in cases {
        let error = run(case.kind, &case.original, &case.patch).expect_err(case.name);
        let text = error.to_string();
        assert!(text.contains(case.message), "{}: message {text:?} lacks {:?}", case.name, case.message);
        assert_eq!(error.status_code(), case.status, "{}: {text}", case.name);
    }
}

fn two_containers() -> Value {
    pod(json!({"containers": [container("a", "1"), container("b", "1")]}))
}

/// Bodies that are not objects and malformed `$patch` or `$retainKeys` on maps.
#[test]
fn patch_bodies_and_map_directives_are_checked() {
    check_rejected(vec![
        Rejected {
            name: "patch body is a list",
            kind: Some(POD),
            original: two_containers(),
            patch: json!([1]),
            status: 400,
            message: "strategic merge patch body must be a JSON object",
        },
        Rejected {
            name: "object is a string",
            kind: Some(POD),
            original: json!("pod"),
            patch: json!({}),
            status: 400,
            message: "the object being patched must be a JSON object",
        },
        Rejected {
            name: "unknown $patch on a map",
            kind: Some(POD),
            original: two_containers(),
            patch: json!({"spec": {"$patch": "frob"}}),
            status: 400,
            message: "at .spec: unknown `$patch: \"frob\"`",
        },
        Rejected {
            name: "non-string $patch on a map",
            kind: Some(POD),
            original: two_containers(),
            patch: json!({"spec": {"$patch": 1}}),
            status: 400,
            message: "unknown `$patch: 1`",
        },
        Rejected {
            name: "$patch: delete on the whole object",
            kind: Some(POD),
            original: two_containers(),
            patch: json!({"$patch": "delete"}),
            status: 400,
            message: "send a DELETE request",
        },
        Rejected {
            name: "$retainKeys is not a list of names",
            kind: Some(DEPLOYMENT),
            original: json!({"spec": {"strategy": {"type": "Recreate"}}}),
            patch: json!({"spec": {"strategy": {"$retainKeys": "type"}}}),
            status: 400,
            message: "$retainKeys must be a list of field names",
        },
        Rejected {
            name: "patch sets a field $retainKeys drops",
            kind: Some(POD),
            original: pod(json!({"volumes": [{"name": "data", "emptyDir": {}}]})),
            patch: json!({"spec": {"volumes": [{"name": "data", "$retainKeys": ["name", "hostPath"], "emptyDir": {"medium": "Memory"}}]}}),
            status: 422,
            message: "at .spec.volumes[name=data]: \"emptyDir\" is set but not listed in $retainKeys",
        },
    ]);
}

/// List items with bad `$patch` values or without the merge key.
#[test]
fn list_items_are_checked() {
    check_rejected(vec![
        Rejected {
            name: "unknown $patch in a list",
            kind: Some(POD),
            original: two_containers(),
            patch: json!({"spec": {"containers": [{"name": "a", "$patch": "remove"}]}}),
            status: 400,
            message: "at .spec.containers[0]: unknown `$patch: \"remove\"`",
        },
        Rejected {
            name: "$patch: merge in a list",
            kind: Some(POD),
            original: two_containers(),
            patch: json!({"spec": {"containers": [{"$patch": "merge"}]}}),
            status: 400,
            message: "`$patch: merge` cannot be used in a list",
        },
        Rejected {
            name: "container without a name",
            kind: Some(POD),
            original: two_containers(),
            patch: json!({"spec": {"containers": [{"name": "a"}, {"image": "x"}]}}),
            status: 422,
            message: "at .spec.containers[1]: items of this list are matched by \"name\"",
        },
        Rejected {
            name: "container that is not an object",
            kind: Some(POD),
            original: two_containers(),
            patch: json!({"spec": {"containers": ["a"]}}),
            status: 422,
            message: "matched by \"name\"",
        },
        Rejected {
            name: "delete item without the merge key",
            kind: Some(POD),
            original: two_containers(),
            patch: json!({"spec": {"containers": [{"$patch": "delete"}]}}),
            status: 422,
            message: "matched by \"name\"",
        },
        Rejected {
            name: "error path names the item by key",
            kind: Some(POD),
            original: two_containers(),
            patch: json!({"spec": {"containers": [{"name": "a", "env": [{"value": "1"}]}]}}),
            status: 422,
            message: "at .spec.containers[name=a].env[0]",
        },
        Rejected {
            name: "$patch: delete in a list without merge strategy",
            kind: Some(POD),
            original: pod(json!({"tolerations": [{"key": "a"}]})),
            patch: json!({"spec": {"tolerations": [{"key": "a", "$patch": "delete"}]}}),
            status: 400,
            message: "replaced whole",
        },
        Rejected {
            name: "objects in a primitive merge list",
            kind: Some(POD),
            original: json!({"metadata": {"finalizers": ["a"]}}),
            patch: json!({"metadata": {"finalizers": [{"name": "b"}]}}),
            status: 400,
            message: "set of primitive values",
        },
    ]);
}

/// Malformed `$setElementOrder` and `$deleteFromPrimitiveList` directives.
#[test]
fn list_directives_are_checked() {
    check_rejected(vec![
        Rejected {
            name: "$setElementOrder is not a list",
            kind: Some(POD),
            original: two_containers(),
            patch: json!({"spec": {"$setElementOrder/containers": {"name": "a"}}}),
            status: 400,
            message: "\"$setElementOrder/containers\" must be a list",
        },
        Rejected {
            name: "$setElementOrder without a field name",
            kind: Some(POD),
            original: two_containers(),
            patch: json!({"spec": {"$setElementOrder": [{"name": "a"}]}}),
            status: 400,
            message: "malformed directive \"$setElementOrder\"",
        },
        Rejected {
            name: "$setElementOrder entry without the merge key",
            kind: Some(POD),
            original: two_containers(),
            patch: json!({"spec": {"$setElementOrder/containers": [{"image": "a"}]}}),
            status: 422,
            message: "at .spec.containers[0]",
        },
        Rejected {
            name: "patch list disagrees with $setElementOrder",
            kind: Some(POD),
            original: two_containers(),
            patch: json!({"spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "b", "image": "2"}, {"name": "a", "image": "2"}]
            }}),
            status: 400,
            message: "same relative order",
        },
        Rejected {
            name: "patch list item missing from $setElementOrder",
            kind: Some(POD),
            original: two_containers(),
            patch: json!({"spec": {"$setElementOrder/containers": [{"name": "a"}], "containers": [{"name": "c"}]}}),
            status: 400,
            message: "must all appear in $setElementOrder/containers",
        },
        Rejected {
            name: "$setElementOrder on a field that is not a list",
            kind: Some(POD),
            original: pod(json!({"containers": "a"})),
            patch: json!({"spec": {"$setElementOrder/containers": [{"name": "a"}]}}),
            status: 400,
            message: "needs a list, but the field is a string",
        },
        Rejected {
            name: "$deleteFromPrimitiveList on a field that is not a list",
            kind: Some(POD),
            original: json!({"metadata": {"name": "p"}}),
            patch: json!({"metadata": {"$deleteFromPrimitiveList/name": ["p"]}}),
            status: 400,
            message: "at .metadata.name: $deleteFromPrimitiveList/name needs a list",
        },
        Rejected {
            name: "$deleteFromPrimitiveList is not a list",
            kind: Some(POD),
            original: json!({"metadata": {"finalizers": ["a"]}}),
            patch: json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
            status: 400,
            message: "must be a list, not a string",
        },
    ]);
}
