//! Every other kind: upstream's default table, NAME and CREATED AT.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{CREATION_DOC, Column, NAME, Printer};
use crate::table::object::{name, time};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[NAME, Column::new("Created At", "date", CREATION_DOC)];

/// Go's zero time in RFC 3339, which upstream prints for objects without a creation time.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn cells(object: &Value, _now: Timestamp) -> Vec<Value> {
    let created = time(object, "/metadata/creationTimestamp")
        .map_or_else(|| ZERO_TIME.to_owned(), |created| created.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    vec![name(object), created.into()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shows_the_creation_time_in_utc() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let role = json!({"metadata": {"name": "admin", "creationTimestamp": "2024-04-30T22:15:07+02:00"}});
        assert_eq!(cells(&role, now), [json!("admin"), json!("2024-04-30T20:15:07Z")]);
        assert_eq!(cells(&json!({}), now), [json!(""), json!(ZERO_TIME)]);
    }
}
