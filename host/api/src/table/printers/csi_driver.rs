//! `CSIDriver`: NAME ATTACHREQUIRED PODINFOONMOUNT STORAGECAPACITY TOKENREQUESTS
//! REQUIRESREPUBLISH MODES AGE.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, field, list, name, text};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "AttachRequired",
        "boolean",
        "attachRequired indicates this CSI volume driver requires an attach operation.",
    ),
    Column::new(
        "PodInfoOnMount",
        "boolean",
        "podInfoOnMount indicates this CSI volume driver requires additional pod information during mount operations.",
    ),
    Column::new(
        "StorageCapacity",
        "boolean",
        "storageCapacity indicates that the CSI volume driver wants pod scheduling to consider the storage capacity.",
    ),
    Column::text(
        "TokenRequests",
        "tokenRequests indicates the CSI driver needs pods' service account tokens it is mounting volume for.",
    ),
    Column::new(
        "RequiresRepublish",
        "boolean",
        "requiresRepublish indicates the CSI driver wants NodePublishVolume being periodically called.",
    ),
    Column::text("Modes", "volumeLifecycleModes defines what kind of volumes this CSI volume driver supports."),
    AGE,
];

fn cells(driver: &Value, now: Timestamp) -> Vec<Value> {
    let flag = |pointer: &str, default: bool| field(driver, pointer).and_then(Value::as_bool).unwrap_or(default);
    let token_requests = field(driver, "/spec/tokenRequests").map_or_else(
        || "<unset>".to_owned(),
        |requests| {
            requests.as_array().into_iter().flatten().map(|r| text(r, "/audience")).collect::<Vec<_>>().join(",")
        },
    );
    let modes: Vec<&str> = list(driver, "/spec/volumeLifecycleModes").iter().filter_map(Value::as_str).collect();
    vec![
        name(driver),
        flag("/spec/attachRequired", true).into(),
        flag("/spec/podInfoOnMount", false).into(),
        flag("/spec/storageCapacity", false).into(),
        token_requests.into(),
        flag("/spec/requiresRepublish", false).into(),
        if modes.is_empty() { "<none>".to_owned() } else { modes.join(",") }.into(),
        age(driver, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flags_default_as_the_api_does() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        assert_eq!(
            cells(&json!({"spec": {}}), now)[1..7],
            [json!(true), json!(false), json!(false), json!("<unset>"), json!(false), json!("<none>")]
        );
        let driver = json!({"spec": {"tokenRequests": [{"audience": "vault"}], "volumeLifecycleModes": ["Persistent", "Ephemeral"]}});
        let cells = cells(&driver, now);
        assert_eq!((&cells[4], &cells[6]), (&json!("vault"), &json!("Persistent,Ephemeral")));
    }
}
