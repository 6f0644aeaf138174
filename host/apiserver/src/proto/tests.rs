//! Bodies encoded with `k8s-pb` + prost (an independent encoder) decode to the expected JSON.

use std::collections::BTreeMap;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Value, json};

use super::{MAGIC, ProtoError, decode};

/// A whole body as client-go writes it: magic, then the envelope around `object`.
fn body(api_version: &str, kind: &str, object: &impl Message) -> Vec<u8> {
    let envelope = Unknown {
        type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
        raw: Some(object.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut bytes = MAGIC.to_vec();
    bytes.extend(envelope.encode_to_vec());
    bytes
}

/// Metadata the way gogo-protobuf writes a Go value: every non-pointer field, zero or not.
fn metadata(name: &str, namespace: &str) -> meta::ObjectMeta {
    meta::ObjectMeta {
        name: Some(name.into()),
        generate_name: Some(String::new()),
        namespace: Some(namespace.into()),
        self_link: Some(String::new()),
        uid: Some(String::new()),
        resource_version: Some(String::new()),
        generation: Some(0),
        creation_timestamp: Some(meta::Time { seconds: Some(0), nanos: Some(0) }),
        labels: BTreeMap::from([("app".into(), "web".into())]),
        ..meta::ObjectMeta::default()
    }
}

fn decoded(api_version: &str, kind: &str, object: &impl Message) -> Value {
    decode(&body(api_version, kind, object)).expect("decodes")
}

#[test]
fn namespace_decodes_with_type_meta_and_without_go_zero_values() {
    let namespace = core::Namespace {
        metadata: Some(metadata("team-a", "")),
        spec: Some(core::NamespaceSpec::default()),
        status: Some(core::NamespaceStatus::default()),
    };
    let json = decoded("v1", "Namespace", &namespace);
    assert_eq!(
        json,
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "team-a", "generation": 0, "labels": {"app": "web"}},
            "spec": {},
            "status": {},
        })
    );
}

#[test]
fn config_map_keeps_empty_values_and_binary_data_is_base64() {
    let config_map = core::ConfigMap {
        metadata: Some(metadata("settings", "default")),
        data: BTreeMap::from([("mode".into(), "fast".into()), ("empty".into(), String::new())]),
        binary_data: BTreeMap::from([("blob".into(), vec![0, 159, 255])]),
        immutable: Some(false),
    };
    let json = decoded("v1", "ConfigMap", &config_map);
    assert_eq!(json["data"], json!({"mode": "fast", "empty": ""}));
    assert_eq!(json["binaryData"], json!({"blob": "AJ//"}));
    assert_eq!(json["immutable"], false, "a pointer bool set to false stays");
    assert_eq!(json["metadata"]["namespace"], "default");
}

#[test]
fn secret_binary_data_is_base64_and_type_survives() {
    let secret = core::Secret {
        metadata: Some(metadata("creds", "default")),
        data: BTreeMap::from([("key".into(), b"\x00\x01binary\xff".to_vec())]),
        r#type: Some("Opaque".into()),
        ..core::Secret::default()
    };
    let json = decoded("v1", "Secret", &secret);
    assert_eq!(json["data"]["key"], "AAFiaW5hcnn/");
    assert_eq!(json["type"], "Opaque");
}

fn container() -> core::Container {
    core::Container {
        name: Some("web".into()),
        image: Some("nginx:1.27".into()),
        ports: vec![core::ContainerPort {
            container_port: Some(80),
            protocol: Some("TCP".into()),
            ..core::ContainerPort::default()
        }],
        resources: Some(core::ResourceRequirements {
            limits: BTreeMap::from([("memory".into(), Quantity { string: Some("128Mi".into()) })]),
            requests: BTreeMap::from([("cpu".into(), Quantity { string: Some("250m".into()) })]),
            ..core::ResourceRequirements::default()
        }),
        env: vec![core::EnvVar {
            name: Some("FROM_CM".into()),
            value_from: Some(core::EnvVarSource {
                config_map_key_ref: Some(core::ConfigMapKeySelector {
                    local_object_reference: Some(core::LocalObjectReference { name: Some("settings".into()) }),
                    key: Some("mode".into()),
                    optional: None,
                }),
                ..core::EnvVarSource::default()
            }),
            ..core::EnvVar::default()
        }],
        ..core::Container::default()
    }
}

#[test]
fn deployment_decodes_int_or_string_quantities_times_and_inline_structs() {
    let mut template_meta = metadata("", "");
    template_meta.creation_timestamp = Some(meta::Time { seconds: Some(1_700_000_000), nanos: Some(0) });
    let deployment = apps::Deployment {
        metadata: Some(metadata("web", "default")),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(2),
            selector: Some(meta::LabelSelector {
                match_labels: BTreeMap::from([("app".into(), "web".into())]),
                ..meta::LabelSelector::default()
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(template_meta),
                spec: Some(core::PodSpec { containers: vec![container()], ..core::PodSpec::default() }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: Some("RollingUpdate".into()),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_surge: Some(IntOrString { r#type: Some(1), int_val: Some(0), str_val: Some("25%".into()) }),
                    max_unavailable: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(1),
                        str_val: Some(String::new()),
                    }),
                }),
            }),
            ..apps::DeploymentSpec::default()
        }),
        status: None,
    };
    let json = decoded("apps/v1", "Deployment", &deployment);
    assert_eq!(json["apiVersion"], "apps/v1");
    assert_eq!(json["spec"]["replicas"], 2);
    assert_eq!(json["spec"]["selector"]["matchLabels"]["app"], "web");
    assert_eq!(json["spec"]["strategy"]["rollingUpdate"], json!({"maxSurge": "25%", "maxUnavailable": 1}));
    assert_eq!(json["spec"]["template"]["metadata"]["creationTimestamp"], "2023-11-14T22:13:20Z");
    let container = &json["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["resources"], json!({"limits": {"memory": "128Mi"}, "requests": {"cpu": "250m"}}));
    assert_eq!(container["ports"], json!([{"containerPort": 80, "protocol": "TCP"}]));
    assert_eq!(container["env"][0]["valueFrom"]["configMapKeyRef"], json!({"name": "settings", "key": "mode"}));
}

#[test]
fn service_ports_and_target_ports_decode() {
    let port = |name: &str, port: i32, target: IntOrString| core::ServicePort {
        name: Some(name.into()),
        protocol: Some("TCP".into()),
        port: Some(port),
        target_port: Some(target),
        node_port: Some(0),
        ..core::ServicePort::default()
    };
    let service = core::Service {
        metadata: Some(metadata("web", "default")),
        spec: Some(core::ServiceSpec {
            ports: vec![
                port("http", 80, IntOrString { r#type: Some(0), int_val: Some(8080), str_val: Some(String::new()) }),
                port("named", 81, IntOrString { r#type: Some(1), int_val: Some(0), str_val: Some("metrics".into()) }),
                port("same", 82, IntOrString { r#type: Some(0), int_val: Some(0), str_val: Some(String::new()) }),
            ],
            selector: BTreeMap::from([("app".into(), "web".into())]),
            r#type: Some("ClusterIP".into()),
            cluster_ip: Some(String::new()),
            cluster_ips: vec!["10.0.0.10".into()],
            ..core::ServiceSpec::default()
        }),
        status: Some(core::ServiceStatus::default()),
    };
    let json = decoded("v1", "Service", &service);
    let ports = &json["spec"]["ports"];
    assert_eq!(ports[0], json!({"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 0}));
    assert_eq!(ports[1]["targetPort"], "metrics");
    assert!(ports[2].get("targetPort").is_none(), "a zero targetPort is left for defaulting: {ports}");
    assert_eq!(json["spec"]["type"], "ClusterIP");
    assert!(json["spec"].get("clusterIP").is_none());
    assert_eq!(json["spec"]["clusterIPs"], json!(["10.0.0.10"]));
}

#[test]
fn micro_time_duration_and_raw_extension_take_their_json_forms() {
    let event = k8s_pb::api::events::v1::Event {
        metadata: Some(metadata("e1", "default")),
        event_time: Some(meta::MicroTime { seconds: Some(1_700_000_000), nanos: Some(123_456_000) }),
        reason: Some("Started".into()),
        ..k8s_pb::api::events::v1::Event::default()
    };
    let json = decoded("events.k8s.io/v1", "Event", &event);
    assert_eq!(json["eventTime"], "2023-11-14T22:13:20.123456Z");

    let revision = apps::ControllerRevision {
        metadata: Some(metadata("rev", "default")),
        data: Some(k8s_pb::apimachinery::pkg::runtime::RawExtension { raw: Some(br#"{"spec":{"x":1}}"#.to_vec()) }),
        revision: Some(3),
    };
    let json = decoded("apps/v1", "ControllerRevision", &revision);
    assert_eq!(json["data"], json!({"spec": {"x": 1}}));
    assert_eq!(json["revision"], 3);
}

#[test]
fn access_review_decodes_through_the_generic_path() {
    use k8s_pb::api::authorization::v1 as authz;
    let review = authz::SelfSubjectAccessReview {
        spec: Some(authz::SelfSubjectAccessReviewSpec {
            resource_attributes: Some(authz::ResourceAttributes {
                namespace: Some("default".into()),
                verb: Some("create".into()),
                resource: Some("pods".into()),
                ..authz::ResourceAttributes::default()
            }),
            non_resource_attributes: None,
        }),
        ..authz::SelfSubjectAccessReview::default()
    };
    let json = decoded("authorization.k8s.io/v1", "SelfSubjectAccessReview", &review);
    assert_eq!(
        json["spec"]["resourceAttributes"],
        json!({"namespace": "default", "verb": "create", "resource": "pods"})
    );
}

#[test]
fn delete_options_decode_under_any_group_version() {
    let options = meta::DeleteOptions {
        propagation_policy: Some("Foreground".into()),
        grace_period_seconds: Some(0),
        ..meta::DeleteOptions::default()
    };
    let json = decoded("apps/v1", "DeleteOptions", &options);
    assert_eq!(json["propagationPolicy"], "Foreground");
    assert_eq!(json["gracePeriodSeconds"], 0);
}

#[test]
fn unknown_kinds_and_malformed_bytes_are_refused() {
    let namespace = core::Namespace { metadata: Some(metadata("x", "")), ..core::Namespace::default() };
    assert!(matches!(decode(&body("v1", "Gizmo", &namespace)), Err(ProtoError::UnknownKind(_))));
    assert!(matches!(decode(&body("example.com/v1", "Namespace", &namespace)), Err(ProtoError::UnknownKind(_))));
    let mut truncated = body("v1", "Namespace", &namespace);
    truncated.truncate(truncated.len() - 3);
    let err = decode(&truncated).expect_err("truncated body");
    assert!(matches!(err, ProtoError::Malformed(_)), "{err}");
    assert!(matches!(decode(b"{\"kind\":\"Namespace\"}"), Err(ProtoError::Malformed(_))));
    // A string field that is not UTF-8 inside a well-formed envelope.
    let bad = [0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe];
    let err = decode(
        &[
            MAGIC,
            &Unknown {
                type_meta: Some(TypeMeta { api_version: Some("v1".into()), kind: Some("Namespace".into()) }),
                raw: Some(bad.to_vec()),
                ..Unknown::default()
            }
            .encode_to_vec(),
        ]
        .concat(),
    )
    .expect_err("bad utf-8");
    assert!(err.to_string().contains("ObjectMeta.name"), "{err}");
}

#[test]
fn every_message_the_schema_refers_to_exists() {
    let schema = super::schema().expect("schema parses");
    let dangling: Vec<String> = schema
        .messages
        .iter()
        .flat_map(|(name, fields)| fields.values().map(move |f| (name, f)))
        .filter(|(_, f)| !f.message.is_empty() && !schema.messages.contains_key(&f.message))
        .map(|(name, f)| format!("{name}.{} -> {}", f.json, f.message))
        .collect();
    assert!(dangling.is_empty(), "{dangling:#?}");
}
