//! Table-driven tests of apply and update tracking over the built-in Deployment schema, as the
//! API server publishes it. Expected managed fields and messages follow kube-apiserver.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use super::*;
use crate::Registry;
use crate::openapi::OpenApi;

pub(crate) const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";

const T1: &str = "2025-01-01T00:00:01Z";
const T2: &str = "2025-01-01T00:00:02Z";
const T3: &str = "2025-01-01T00:00:03Z";

/// The component schemas of the built-in kinds, built once.
pub(crate) fn definitions() -> &'static Map<String, Value> {
    static OPENAPI: OnceLock<OpenApi> = OnceLock::new();
    OPENAPI.get_or_init(|| OpenApi::build(&Registry::builtin()).expect("builtin registry builds")).definitions()
}

fn writer(manager: &'static str, time: &'static str) -> Writer<'static> {
    Writer {
        manager,
        api_version: "apps/v1",
        subresource: None,
        time,
        schema: Schema::definition(definitions(), DEPLOYMENT),
        reset_fields: &[&["status"]],
    }
}

fn deployment(spec: Value) -> Value {
    let mut config = bare();
    config["spec"] = spec;
    config
}

/// A configuration with no spec at all (an empty `spec: {}` would be owned as a field).
fn bare() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}})
}

fn with_labels(mut object: Value, labels: Value) -> Value {
    object["metadata"]["labels"] = labels;
    object
}

fn nginx(extra: Value) -> Value {
    let mut container = json!({"name": "nginx", "image": "nginx:1.27"});
    if let (Value::Object(container), Value::Object(extra)) = (&mut container, extra) {
        container.extend(extra);
    }
    json!({"template": {"spec": {"containers": [container]}}})
}

fn apply_ok(live: Option<&Value>, config: &Value, writer: &Writer<'_>) -> Value {
    apply(live, config, writer, false).unwrap_or_else(|error| panic!("apply by {} failed: {error}", writer.manager))
}

/// `manager`'s entry for `operation`, if any.
fn entry<'v>(object: &'v Value, manager: &str, operation: &str) -> Option<&'v Value> {
    object
        .pointer("/metadata/managedFields")?
        .as_array()?
        .iter()
        .find(|entry| entry["manager"] == manager && entry["operation"] == operation)
}

fn owned<'v>(object: &'v Value, manager: &str, operation: &str) -> &'v Value {
    &entry(object, manager, operation).unwrap_or_else(|| panic!("{manager} has an {operation} entry"))["fieldsV1"]
}

fn without_managed_fields(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
        metadata.remove("managedFields");
    }
    object
}

#[test]
fn create_on_apply_stores_the_configuration_and_one_apply_entry() {
    let config = with_labels(
        deployment(json!({
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "nginx",
                    "image": "nginx:1.27",
                    "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}]
                }]}
            }
        })),
        json!({"app": "web"}),
    );
    let created = apply_ok(None, &config, &writer("kubectl", T1));
    assert_eq!(without_managed_fields(&created), config);
    let expected_fields = json!({
        "f:metadata": {"f:labels": {"f:app": {}}},
        "f:spec": {
            "f:replicas": {},
            "f:selector": {"f:matchLabels": {"f:app": {}}},
            "f:template": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:containers": {r#"k:{"name":"nginx"}"#: {
                    ".": {},
                    "f:image": {},
                    "f:name": {},
                    "f:ports": {
                        r#"k:{"containerPort":53,"protocol":"UDP"}"#: {".": {}, "f:containerPort": {}, "f:protocol": {}},
                        r#"k:{"containerPort":80,"protocol":"TCP"}"#: {".": {}, "f:containerPort": {}}
                    }
                }}}
            }
        }
    });
    assert_eq!(
        created["metadata"]["managedFields"],
        json!([{
            "manager": "kubectl",
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "time": T1,
            "fieldsType": "FieldsV1",
            "fieldsV1": expected_fields
        }])
    );
    let decoded = FieldSet::from_fields_v1(&expected_fields).expect("upstream encoding decodes");
    assert_eq!(decoded.to_fields_v1(), expected_fields);
}

#[test]
fn reapplying_without_a_field_removes_it() {
    let first = with_labels(deployment(json!({"replicas": 2, "paused": true})), json!({"app": "web", "tier": "front"}));
    let second = with_labels(deployment(json!({"paused": true})), json!({"app": "web"}));
    let created = apply_ok(None, &first, &writer("kubectl", T1));
    let applied = apply_ok(Some(&created), &second, &writer("kubectl", T2));
    assert_eq!(without_managed_fields(&applied), second);
    assert_eq!(
        *owned(&applied, "kubectl", "Apply"),
        json!({"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:paused": {}}})
    );
    assert_eq!(entry(&applied, "kubectl", "Apply").map(|e| &e["time"]), Some(&json!(T2)));
}

#[test]
fn reapplying_the_same_configuration_changes_nothing() {
    let config = deployment(json!({"replicas": 2}));
    let created = apply_ok(None, &config, &writer("kubectl", T1));
    assert_eq!(apply_ok(Some(&created), &config, &writer("kubectl", T2)), created);
}

#[test]
fn managers_applying_equal_values_share_the_field() {
    let config = deployment(json!({"replicas": 3}));
    let created = apply_ok(None, &config, &writer("alice", T1));
    let shared = apply_ok(Some(&created), &config, &writer("bob", T2));
    for manager in ["alice", "bob"] {
        assert_eq!(*owned(&shared, manager, "Apply"), json!({"f:spec": {"f:replicas": {}}}), "{manager}");
    }
    // Alice stops applying it; Bob still does, so the value stays.
    let alice_leaves = apply_ok(Some(&shared), &deployment(json!({"paused": false})), &writer("alice", T3));
    assert_eq!(alice_leaves["spec"], json!({"replicas": 3, "paused": false}));
}

/// A Deployment whose replicas `kubectl-client-side-apply` set by a (non-apply) update.
fn updated_by_client_side_apply() -> Value {
    let created = apply_ok(None, &deployment(nginx(json!({}))), &writer("kubectl", T1));
    let mut edited = created.clone();
    edited["spec"]["replicas"] = json!(2);
    track_update(Some(&created), &edited, &writer("kubectl-client-side-apply", T2))
}

#[test]
fn conflicts_name_the_owner_and_the_field_like_kube_apiserver() {
    let live = updated_by_client_side_apply();
    let mut config = deployment(nginx(json!({"image": "nginx:1.28"})));
    config["spec"]["replicas"] = json!(3);
    let cases = [
        (
            "one conflict",
            &writer("kubectl", T3),
            deployment(json!({"replicas": 3})),
            vec![(r#"conflict with "kubectl-client-side-apply" using apps/v1"#, ".spec.replicas")],
            r#"Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using apps/v1: .spec.replicas"#,
        ),
        (
            "conflicts grouped by owner",
            &writer("ci", T3),
            config,
            vec![
                (r#"conflict with "kubectl""#, r#".spec.template.spec.containers[name="nginx"].image"#),
                (r#"conflict with "kubectl-client-side-apply" using apps/v1"#, ".spec.replicas"),
            ],
            "Apply failed with 2 conflicts: conflicts with \"kubectl\":\n\
             - .spec.template.spec.containers[name=\"nginx\"].image\n\
             conflicts with \"kubectl-client-side-apply\" using apps/v1:\n\
             - .spec.replicas",
        ),
    ];
    for (name, writer, config, expected, message) in cases {
        let error = apply(Some(&live), &config, writer, false).expect_err(name);
        let ApplyError::Conflicts(conflicts) = &error else { panic!("{name}: {error:?}") };
        let found: Vec<(String, &str)> = conflicts.iter().map(|c| (c.message(), c.field_path.as_str())).collect();
        let expected: Vec<(String, &str)> = expected.into_iter().map(|(m, f)| (m.to_string(), f)).collect();
        assert_eq!(found, expected, "{name}");
        assert_eq!(error.to_string(), message, "{name}");
        assert_eq!(error.status_code(), 409);
    }
}

#[test]
fn applying_the_owned_value_is_no_conflict() {
    let live = updated_by_client_side_apply();
    let applied = apply_ok(Some(&live), &deployment(json!({"replicas": 2})), &writer("kubectl", T3));
    assert_eq!(*owned(&applied, "kubectl-client-side-apply", "Update"), json!({"f:spec": {"f:replicas": {}}}));
    assert_eq!(*owned(&applied, "kubectl", "Apply"), json!({"f:spec": {"f:replicas": {}}}));
}

#[test]
fn force_takes_ownership_from_other_managers() {
    let live = updated_by_client_side_apply();
    let forced = apply(Some(&live), &deployment(json!({"replicas": 3})), &writer("kubectl", T3), true)
        .expect("force overrides conflicts");
    assert_eq!(forced["spec"]["replicas"], 3);
    // The updater owned nothing else, so its entry is gone.
    assert_eq!(entry(&forced, "kubectl-client-side-apply", "Update"), None);
    assert_eq!(*owned(&forced, "kubectl", "Apply"), json!({"f:spec": {"f:replicas": {}}}));
}

#[test]
fn a_scale_gives_replicas_to_its_manager() {
    let created = apply_ok(None, &deployment(json!({"replicas": 1, "paused": false})), &writer("kubectl", T1));
    let mut request = created.clone();
    request["spec"]["replicas"] = json!(5);
    let kubectl_scale = Writer { subresource: Some("scale"), ..writer("kubectl-scale", T2) };
    let scaled = track_update(Some(&created), &request, &kubectl_scale);
    let scale_entry = entry(&scaled, "kubectl-scale", "Update").expect("scale entry");
    assert_eq!(scale_entry["subresource"], "scale");
    assert_eq!(scale_entry["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
    assert_eq!(*owned(&scaled, "kubectl", "Apply"), json!({"f:spec": {"f:paused": {}}}));

    let error =
        apply(Some(&scaled), &deployment(json!({"replicas": 1, "paused": false})), &writer("kubectl", T3), false)
            .expect_err("replicas now belong to kubectl-scale");
    assert_eq!(
        error.to_string(),
        r#"Apply failed with 1 conflict: conflict with "kubectl-scale" with subresource "scale" using apps/v1: .spec.replicas"#
    );
    // Leaving replicas out of the configuration lets the scaled value stand.
    let reapplied = apply_ok(Some(&scaled), &deployment(json!({"paused": false})), &writer("kubectl", T3));
    assert_eq!(reapplied["spec"]["replicas"], 5);
}

#[test]
fn atomic_lists_are_replaced_and_owned_whole() {
    let created = apply_ok(None, &deployment(nginx(json!({"args": ["--a", "--b"]}))), &writer("alice", T1));
    let args = r#".spec.template.spec.containers[name="nginx"].args"#;
    let bob = deployment(nginx(json!({"args": ["--c"]})));
    let error = apply(Some(&created), &bob, &writer("bob", T2), false).expect_err("alice owns the list");
    assert_eq!(error.to_string(), format!(r#"Apply failed with 1 conflict: conflict with "alice": {args}"#));
    let forced = apply(Some(&created), &bob, &writer("bob", T2), true).expect("forced");
    assert_eq!(forced["spec"]["template"]["spec"]["containers"][0]["args"], json!(["--c"]));
    let alice = owned(&forced, "alice", "Apply");
    assert_eq!(alice.pointer("/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"nginx\"}/f:args"), None);
    assert_eq!(
        alice.pointer("/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"nginx\"}/f:image"),
        Some(&json!({}))
    );
}

#[test]
fn granular_maps_merge_entries_of_different_managers() {
    let alice_config = with_labels(bare(), json!({"app": "web", "team": "a"}));
    let bob_config = with_labels(bare(), json!({"tier": "front"}));
    let alice = apply_ok(None, &alice_config, &writer("alice", T1));
    let both = apply_ok(Some(&alice), &bob_config, &writer("bob", T2));
    assert_eq!(both["metadata"]["labels"], json!({"app": "web", "team": "a", "tier": "front"}));
    assert_eq!(*owned(&both, "bob", "Apply"), json!({"f:metadata": {"f:labels": {"f:tier": {}}}}));
    // Alice drops one of her labels; Bob's stays.
    let alice_again = with_labels(bare(), json!({"app": "web"}));
    let pruned = apply_ok(Some(&both), &alice_again, &writer("alice", T3));
    assert_eq!(pruned["metadata"]["labels"], json!({"app": "web", "tier": "front"}));
}

#[test]
fn keyed_list_items_of_different_managers_merge() {
    let alice = apply_ok(None, &deployment(nginx(json!({"ports": [{"containerPort": 80}]}))), &writer("alice", T1));
    let sidecar = json!({"template": {"spec": {"containers": [{"name": "proxy", "image": "envoy"}]}}});
    let both = apply_ok(Some(&alice), &deployment(sidecar), &writer("bob", T2));
    let names: Vec<&Value> =
        both["spec"]["template"]["spec"]["containers"].as_array().expect("list").iter().map(|c| &c["name"]).collect();
    assert_eq!(names, [&json!("nginx"), &json!("proxy")]);
    // Bob's container goes when Bob stops applying it.
    let bob_leaves = apply_ok(Some(&both), &bare(), &writer("bob", T3));
    assert_eq!(bob_leaves["spec"]["template"]["spec"]["containers"], alice["spec"]["template"]["spec"]["containers"]);
    assert_eq!(entry(&bob_leaves, "bob", "Apply"), None);
}

#[test]
fn set_lists_merge_items_of_different_managers() {
    let finalizers = |names: Value| {
        let mut config = bare();
        config["metadata"]["finalizers"] = names;
        config
    };
    let alice = apply_ok(None, &finalizers(json!(["example.com/a"])), &writer("alice", T1));
    let both = apply_ok(Some(&alice), &finalizers(json!(["example.com/b"])), &writer("bob", T2));
    assert_eq!(both["metadata"]["finalizers"], json!(["example.com/a", "example.com/b"]));
    assert_eq!(*owned(&both, "bob", "Apply"), json!({"f:metadata": {"f:finalizers": {r#"v:"example.com/b""#: {}}}}));
    let alice_leaves = apply_ok(Some(&both), &bare(), &writer("alice", T3));
    assert_eq!(alice_leaves["metadata"]["finalizers"], json!(["example.com/b"]));
}

#[test]
fn first_apply_to_an_untracked_object_adopts_its_fields() {
    let live = deployment(json!({"replicas": 4}));
    let error = apply(Some(&live), &deployment(json!({"replicas": 1})), &writer("kubectl", T1), false)
        .expect_err("existing values belong to before-first-apply");
    assert_eq!(
        error.to_string(),
        r#"Apply failed with 1 conflict: conflict with "before-first-apply" using apps/v1: .spec.replicas"#
    );
    let applied = apply_ok(Some(&live), &deployment(json!({"replicas": 4})), &writer("kubectl", T1));
    assert_eq!(*owned(&applied, BEFORE_FIRST_APPLY, "Update"), json!({"f:spec": {"f:replicas": {}}}));
}

#[test]
fn reset_and_server_fields_are_neither_applied_nor_owned() {
    let mut live = apply_ok(None, &deployment(json!({"replicas": 1})), &writer("kubectl", T1));
    live["status"] = json!({"replicas": 1});
    live["metadata"]["uid"] = json!("1234");
    live["metadata"]["resourceVersion"] = json!("7");
    let mut config = deployment(json!({"replicas": 1}));
    config["status"] = json!({"replicas": 9});
    config["metadata"]["uid"] = json!("other");
    config["metadata"]["resourceVersion"] = json!("7");
    let applied = apply_ok(Some(&live), &config, &writer("kubectl", T2));
    assert_eq!(without_managed_fields(&applied), without_managed_fields(&live));
    assert_eq!(*owned(&applied, "kubectl", "Apply"), json!({"f:spec": {"f:replicas": {}}}));
}

#[test]
fn invalid_configurations_are_refused_with_a_fix() {
    let mut no_name = deployment(json!({}));
    no_name["metadata"] = json!({});
    let mut managed = deployment(json!({}));
    managed["metadata"]["managedFields"] = json!([]);
    let cases = [
        (json!([]), "an apply configuration must be an object"),
        (json!({"kind": "Deployment", "metadata": {"name": "web"}}), "has no apiVersion; set apiVersion: apps/v1"),
        (
            json!({"apiVersion": "apps/v1beta1", "kind": "Deployment", "metadata": {"name": "web"}}),
            "Incorrect version specified in apply patch. Specified patch version: apps/v1beta1, expected: apps/v1",
        ),
        (json!({"apiVersion": "apps/v1", "metadata": {"name": "web"}}), "has no kind"),
        (no_name, "has no metadata.name"),
        (managed, "metadata.managedFields must be nil"),
        (
            deployment(json!({"template": {"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}})),
            r#".spec.template.spec.containers: duplicate entries for key [name="a"]"#,
        ),
        (deployment(json!({"template": {"spec": {"containers": [{"image": "a"}]}}})), r#"omits key field "name""#),
    ];
    for (config, expected) in cases {
        let error = apply(None, &config, &writer("kubectl", T1), false).expect_err(expected);
        assert!(matches!(error, ApplyError::Invalid(_)), "{error:?}");
        assert!(error.to_string().contains(expected), "{error}");
        assert_eq!(error.status_code(), 400);
    }
}

#[test]
fn unreadable_stored_managed_fields_fail_the_apply() {
    let mut live = deployment(json!({}));
    live["metadata"]["managedFields"] = json!([{"manager": "x", "operation": "Sideways"}]);
    let error = apply(Some(&live), &deployment(json!({})), &writer("kubectl", T1), false).expect_err("corrupt");
    assert_eq!(error.status_code(), 500);
}

struct UpdateCase {
    name: &'static str,
    old: Option<Value>,
    new: Value,
    manager: &'static str,
    expected: Value,
}

#[test]
fn updates_move_changed_fields_to_their_manager() {
    let applied =
        apply_ok(None, &with_labels(deployment(json!({"replicas": 1})), json!({"a": "1"})), &writer("kubectl", T1));
    let mut relabelled = applied.clone();
    relabelled["metadata"]["labels"] = json!({"b": "2"});
    let mut cleared = applied.clone();
    cleared["metadata"]["managedFields"] = json!([{}]);
    cleared["spec"]["paused"] = json!(true);
    let apply_entry = |fields: Value| {
        json!({"manager": "kubectl", "operation": "Apply", "apiVersion": "apps/v1", "time": T1,
               "fieldsType": "FieldsV1", "fieldsV1": fields})
    };
    let update_entry = |manager: &str, fields: Value| {
        json!({"manager": manager, "operation": "Update", "apiVersion": "apps/v1", "time": T2,
               "fieldsType": "FieldsV1", "fieldsV1": fields})
    };
    let cases = [
        UpdateCase {
            name: "create gives every set field to the creator",
            old: None,
            new: with_labels(deployment(json!({"replicas": 1})), json!({"a": "1"})),
            manager: "kubectl-create",
            expected: json!([update_entry(
                "kubectl-create",
                json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {"f:replicas": {}}})
            )]),
        },
        UpdateCase {
            name: "removed fields leave their owner, added ones go to the updater",
            old: Some(applied.clone()),
            new: relabelled,
            manager: "kubectl-edit",
            expected: json!([
                apply_entry(json!({"f:spec": {"f:replicas": {}}})),
                update_entry("kubectl-edit", json!({"f:metadata": {"f:labels": {"f:b": {}}}}))
            ]),
        },
        UpdateCase {
            name: "an unchanged object records nothing",
            old: Some(applied.clone()),
            new: applied.clone(),
            manager: "kubectl-edit",
            expected: applied["metadata"]["managedFields"].clone(),
        },
        UpdateCase {
            name: "[{}] clears managed fields before recording",
            old: Some(applied.clone()),
            new: cleared,
            manager: "kubectl-patch",
            expected: json!([update_entry("kubectl-patch", json!({"f:spec": {"f:paused": {}}}))]),
        },
    ];
    for case in cases {
        let tracked = track_update(case.old.as_ref(), &case.new, &writer(case.manager, T2));
        assert_eq!(tracked["metadata"]["managedFields"], case.expected, "{}", case.name);
        assert_eq!(without_managed_fields(&tracked), without_managed_fields(&case.new), "{}", case.name);
    }
}
