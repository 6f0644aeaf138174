//! `Ingress`: NAME CLASS HOSTS ADDRESS PORTS AGE.

use std::collections::BTreeSet;

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, list, name, text, text_or};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    Column::text("Class", "The name of the IngressClass resource that should be used for additional configuration"),
    Column::text("Hosts", "Hosts that incoming requests are matched against before the ingress rule"),
    Column::text("Address", "Address is a list containing ingress points for the load-balancer"),
    Column::text("Ports", "Ports of TLS configurations that open"),
    AGE,
];

/// At most this many hosts are listed; the rest are counted.
const SHOWN: usize = 3;

fn cells(ingress: &Value, now: Timestamp) -> Vec<Value> {
    let ports = if list(ingress, "/spec/tls").is_empty() { "80" } else { "80, 443" };
    vec![
        name(ingress),
        text_or(ingress, "/spec/ingressClassName", "<none>").into(),
        hosts(ingress).into(),
        address(ingress).into(),
        ports.into(),
        age(ingress, now),
    ]
}

/// The first three hosts rules name, `*` when none does. Upstream counts every rule, named or
/// not, toward "more".
fn hosts(ingress: &Value) -> String {
    let rules = list(ingress, "/spec/rules");
    let mut shown = Vec::new();
    let mut more = false;
    for rule in rules {
        if shown.len() == SHOWN {
            more = true;
            break;
        }
        let host = text(rule, "/host");
        if !host.is_empty() {
            shown.push(host);
        }
    }
    match (shown.is_empty(), more) {
        (true, _) => "*".to_owned(),
        (false, true) => format!("{} + {} more...", shown.join(","), rules.len() - SHOWN),
        (false, false) => shown.join(","),
    }
}

/// Load balancer IPs, or hostnames where there is no IP, sorted and without repeats.
fn address(ingress: &Value) -> String {
    let addresses: BTreeSet<&str> = list(ingress, "/status/loadBalancer/ingress")
        .iter()
        .map(|point| text_or(point, "/ip", text(point, "/hostname")))
        .filter(|address| !address.is_empty())
        .collect();
    addresses.into_iter().collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn row_lists_hosts_addresses_and_ports() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let ingress = json!({"spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["a.example"]}],
                "rules": [{"host": "a.example"}, {"host": "b.example"}, {}, {"host": "d.example"}, {"host": "e.example"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}});
        assert_eq!(
            cells(&ingress, now)[1..5],
            [json!("nginx"), json!("a.example,b.example,d.example + 2 more..."), json!("1.2.3.4"), json!("80, 443")]
        );
        assert_eq!(
            cells(&json!({"spec": {"rules": [{}]}}), now)[1..5],
            [json!("<none>"), json!("*"), json!(""), json!("80")]
        );
    }
}
