//! `ConfigMap`: NAME DATA AGE.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, entries, name};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[NAME, Column::text("Data", "Data contains the configuration data."), AGE];

fn cells(config_map: &Value, now: Timestamp) -> Vec<Value> {
    let keys = entries(config_map, "/data") + entries(config_map, "/binaryData");
    vec![name(config_map), keys.into(), age(config_map, now)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn data_counts_text_and_binary_keys() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let config_map = json!({"data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(cells(&config_map, now)[1], json!(3));
        assert_eq!(cells(&json!({}), now)[1], json!(0));
    }
}
