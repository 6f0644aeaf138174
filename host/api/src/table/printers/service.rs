//! Services: NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE, and with `-o wide` SELECTOR.

use std::collections::BTreeSet;

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, format_labels, integer, list, name, text, text_or};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    Column::text("Type", "type determines how the Service is exposed."),
    Column::text("Cluster-IP", "clusterIP is the IP address of the service."),
    Column::text(
        "External-IP",
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
    ),
    Column::text("Port(s)", "The list of ports that are exposed by this service."),
    AGE,
    Column::text("Selector", "Route service traffic to pods with label keys and values matching this selector.").wide(),
];

fn cells(service: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(service),
        service_type(service).into(),
        cluster_ip(service).into(),
        external_ip(service).into(),
        ports(service).into(),
        age(service, now),
        format_labels(service.pointer("/spec/selector")).into(),
    ]
}

/// `spec.type`, which the API defaults to `ClusterIP`.
fn service_type(service: &Value) -> &str {
    text_or(service, "/spec/type", "ClusterIP")
}

fn cluster_ip(service: &Value) -> &str {
    let first = list(service, "/spec/clusterIPs").first().and_then(Value::as_str).unwrap_or_default();
    // Objects written before clusterIPs was filled in carry only the singular field.
    Some(first).filter(|ip| !ip.is_empty()).unwrap_or_else(|| text_or(service, "/spec/clusterIP", "<none>"))
}

fn external_ip(service: &Value) -> String {
    let external_ips: Vec<&str> = list(service, "/spec/externalIPs").iter().filter_map(Value::as_str).collect();
    match service_type(service) {
        "ClusterIP" | "NodePort" if external_ips.is_empty() => "<none>".to_owned(),
        "ClusterIP" | "NodePort" => external_ips.join(","),
        "LoadBalancer" => {
            let mut addresses = load_balancer_addresses(service);
            addresses.extend(external_ips);
            if addresses.is_empty() { "<pending>".to_owned() } else { addresses.join(",") }
        }
        "ExternalName" => text(service, "/spec/externalName").to_owned(),
        _ => "<unknown>".to_owned(),
    }
}

/// Load balancer ingress IPs (or hostnames where there is no IP), sorted and without repeats.
fn load_balancer_addresses(service: &Value) -> Vec<&str> {
    let addresses: BTreeSet<&str> = list(service, "/status/loadBalancer/ingress")
        .iter()
        .map(|ingress| text_or(ingress, "/ip", text(ingress, "/hostname")))
        .filter(|address| !address.is_empty())
        .collect();
    addresses.into_iter().collect()
}

/// `80/TCP,443:30443/TCP`: port, node port when allocated, protocol.
fn ports(service: &Value) -> String {
    let ports: Vec<String> = list(service, "/spec/ports")
        .iter()
        .map(|port| {
            let protocol = text_or(port, "/protocol", "TCP");
            match integer(port, "/nodePort") {
                node_port if node_port > 0 => format!("{}:{node_port}/{protocol}", integer(port, "/port")),
                _ => format!("{}/{protocol}", integer(port, "/port")),
            }
        })
        .collect();
    if ports.is_empty() { "<none>".to_owned() } else { ports.join(",") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ports_show_node_ports_and_protocols() {
        let cases = [
            (
                json!([{"port": 80, "protocol": "TCP"}, {"port": 443, "nodePort": 30443, "protocol": "TCP"}]),
                "80/TCP,443:30443/TCP",
            ),
            (json!([{"port": 53, "protocol": "UDP"}, {"port": 8080}]), "53/UDP,8080/TCP"),
            (json!([]), "<none>"),
        ];
        for (ports_list, expected) in cases {
            assert_eq!(ports(&json!({"spec": {"ports": ports_list}})), expected);
        }
    }

    #[test]
    fn external_ip_depends_on_the_service_type() {
        let cases = [
            (json!({"spec": {"type": "ClusterIP"}}), "<none>"),
            (json!({"spec": {"type": "NodePort", "externalIPs": ["1.2.3.4", "5.6.7.8"]}}), "1.2.3.4,5.6.7.8"),
            (json!({"spec": {"type": "LoadBalancer"}}), "<pending>"),
            (
                json!({"spec": {"type": "LoadBalancer", "externalIPs": ["9.9.9.9"]},
                    "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}, {"ip": "1.1.1.1"}]}}}),
                "1.1.1.1,lb.example.com,9.9.9.9",
            ),
            (json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}}), "db.example.com"),
        ];
        for (service, expected) in cases {
            assert_eq!(external_ip(&service), expected, "{service}");
        }
    }

    #[test]
    fn row_shows_type_cluster_ip_and_selector() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let service = json!({"metadata": {"name": "web", "creationTimestamp": "2024-04-28T08:00:00Z"},
            "spec": {"clusterIPs": ["10.96.0.10"], "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "web"}}});
        assert_eq!(
            cells(&service, now),
            [
                json!("web"),
                json!("ClusterIP"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80/TCP"),
                json!("3d4h"),
                json!("app=web")
            ]
        );
        assert_eq!(cluster_ip(&json!({"spec": {"clusterIP": "None"}})), "None");
        assert_eq!(cluster_ip(&json!({"spec": {}})), "<none>");
    }
}
