//! `EndpointSlice`: NAME ADDRESSTYPE PORTS ENDPOINTS AGE.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, field, list, name, text};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    Column::text("AddressType", "addressType specifies the type of address carried by this EndpointSlice."),
    Column::text("Ports", "ports specifies the list of network ports exposed by each endpoint in this slice."),
    Column::text("Endpoints", "endpoints is a list of unique endpoints in this slice."),
    AGE,
];

/// At most this many ports or addresses are listed; the rest are counted.
const SHOWN: usize = 3;

fn cells(slice: &Value, now: Timestamp) -> Vec<Value> {
    let ports = list(slice, "/ports").iter().map(|port| match field(port, "/port") {
        Some(number) => number.to_string(),
        None => field(port, "/name").and_then(Value::as_str).unwrap_or("*").to_owned(),
    });
    let addresses = list(slice, "/endpoints")
        .iter()
        .flat_map(|endpoint| list(endpoint, "/addresses"))
        .filter_map(Value::as_str)
        .map(str::to_owned);
    vec![
        name(slice),
        text(slice, "/addressType").into(),
        some_of(&ports.collect::<Vec<_>>()).into(),
        some_of(&addresses.collect::<Vec<_>>()).into(),
        age(slice, now),
    ]
}

/// The first three items and how many more there are, `<unset>` when there are none.
fn some_of(items: &[String]) -> String {
    match items.len() {
        0 => "<unset>".to_owned(),
        total if total > SHOWN => format!("{} + {} more...", items[..SHOWN].join(","), total - SHOWN),
        _ => items.join(","),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_ports_and_addresses() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let slice = json!({"addressType": "IPv4", "ports": [{"port": 80}, {"name": "metrics"}, {}],
            "endpoints": [{"addresses": ["10.0.0.1", "10.0.0.2"]}, {"addresses": ["10.0.0.3", "10.0.0.4"]}]});
        assert_eq!(
            cells(&slice, now)[1..4],
            [json!("IPv4"), json!("80,metrics,*"), json!("10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...")]
        );
        assert_eq!(cells(&json!({}), now)[2..4], [json!("<unset>"), json!("<unset>")]);
    }
}
