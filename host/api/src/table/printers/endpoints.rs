//! Endpoints: NAME ENDPOINTS AGE.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, integer, list, name, text};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] =
    &[NAME, Column::text("Endpoints", "The set of all endpoints is the union of all subsets."), AGE];

/// At most this many addresses are listed; the rest are counted.
const SHOWN: usize = 3;

fn cells(endpoints: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(endpoints), addresses(endpoints).into(), age(endpoints, now)]
}

/// `ip:port` for every address and port of every subset (bare IPs for headless services without
/// ports), the first three listed and the rest counted.
fn addresses(endpoints: &Value) -> String {
    let subsets = list(endpoints, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_owned();
    }
    let mut all = Vec::new();
    for subset in subsets {
        let ips: Vec<&str> = list(subset, "/addresses").iter().map(|address| text(address, "/ip")).collect();
        let ports = list(subset, "/ports");
        if ports.is_empty() {
            all.extend(ips.iter().map(|ip| (*ip).to_owned()));
            continue;
        }
        for port in ports {
            let number = integer(port, "/port");
            all.extend(ips.iter().map(|ip| join_host_port(ip, number)));
        }
    }
    let shown = all.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(",");
    match all.len() {
        total if total > SHOWN => format!("{shown} + {} more...", total - SHOWN),
        _ => shown,
    }
}

/// `host:port`, with IPv6 hosts in brackets.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_the_first_three_addresses() {
        let cases = [
            (json!({}), "<none>"),
            (json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}), "10.0.0.1:80"),
            (json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}]}), "10.0.0.1,10.0.0.2"),
            (json!({"subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 443}]}]}), "[fd00::1]:443"),
            (
                json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]}]}),
                "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more...",
            ),
        ];
        for (endpoints, expected) in cases {
            assert_eq!(addresses(&endpoints), expected, "{endpoints}");
        }
    }
}
