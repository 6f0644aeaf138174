//! Events: LAST SEEN TYPE REASON OBJECT MESSAGE, and with `-o wide` SUBOBJECT SOURCE FIRST SEEN
//! COUNT NAME. One printer serves `core/v1` and `events.k8s.io/v1`, which spell the fields apart.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{Column, NAME, Printer};
use crate::table::object::{field, integer, name, since, text};

pub(super) static CORE_PRINTER: Printer = Printer::new(COLUMNS, core_cells);
pub(super) static EVENTS_PRINTER: Printer = Printer::new(COLUMNS, events_cells);

const COLUMNS: &[Column] = &[
    Column::text("Last Seen", "The time at which the most recent occurrence of this event was recorded."),
    Column::text("Type", "Type of this event (Normal, Warning), new types could be added in the future"),
    Column::text(
        "Reason",
        "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
    ),
    Column::text("Object", "The object that this event is about."),
    Column::text("Subobject", "The field of the object this event is about, such as spec.containers{name}.").wide(),
    Column::text("Source", "The component reporting this event.").wide(),
    Column::text("Message", "A human-readable description of the status of this operation."),
    Column::text("First Seen", "The time at which the event was first recorded.").wide(),
    Column::text("Count", "The number of times this event has occurred.").wide(),
    NAME.wide(),
];

/// Where each version keeps what the table shows.
struct Fields {
    first_seen: &'static str,
    last_seen: &'static str,
    count: &'static str,
    regarding: &'static str,
    source: &'static str,
    reporting_controller: &'static str,
    message: &'static str,
}

const CORE: Fields = Fields {
    first_seen: "/firstTimestamp",
    last_seen: "/lastTimestamp",
    count: "/count",
    regarding: "/involvedObject",
    source: "/source",
    reporting_controller: "/reportingComponent",
    message: "/message",
};

const EVENTS: Fields = Fields {
    first_seen: "/deprecatedFirstTimestamp",
    last_seen: "/deprecatedLastTimestamp",
    count: "/deprecatedCount",
    regarding: "/regarding",
    source: "/deprecatedSource",
    reporting_controller: "/reportingController",
    message: "/note",
};

fn core_cells(event: &Value, now: Timestamp) -> Vec<Value> {
    cells(event, now, &CORE)
}

fn events_cells(event: &Value, now: Timestamp) -> Vec<Value> {
    cells(event, now, &EVENTS)
}

fn cells(event: &Value, now: Timestamp, fields: &Fields) -> Vec<Value> {
    let regarding = event.pointer(fields.regarding).unwrap_or(&Value::Null);
    let (last_seen, first_seen, count) = timing(event, now, fields);
    vec![
        last_seen.into(),
        text(event, "/type").into(),
        text(event, "/reason").into(),
        target(regarding).into(),
        text(regarding, "/fieldPath").into(),
        source(event, fields).into(),
        text(event, fields.message).trim().into(),
        first_seen.into(),
        count.into(),
        name(event),
    ]
}

/// LAST SEEN, FIRST SEEN and COUNT. Events recorded through the new API have only `eventTime`,
/// and a series carries its own count and last observation.
fn timing(event: &Value, now: Timestamp, fields: &Fields) -> (String, String, i64) {
    let first_seen = if field(event, fields.first_seen).is_some() {
        since(event, fields.first_seen, now)
    } else {
        since(event, "/eventTime", now)
    };
    let mut last_seen =
        if field(event, fields.last_seen).is_some() { since(event, fields.last_seen, now) } else { first_seen.clone() };
    let mut count = integer(event, fields.count);
    if let Some(series) = field(event, "/series") {
        last_seen = since(series, "/lastObservedTime", now);
        count = integer(series, "/count");
    } else if count == 0 {
        count = 1;
    }
    (last_seen, first_seen, count)
}

/// `kind/name` in lower case, or just the kind when the event is about no named object.
fn target(regarding: &Value) -> String {
    let kind = text(regarding, "/kind").to_lowercase();
    match text(regarding, "/name") {
        "" => kind,
        name => format!("{kind}/{name}"),
    }
}

/// `component, host`, falling back to the reporting controller and instance.
fn source(event: &Value, fields: &Fields) -> String {
    let first_set = |a: &'static str, b: &'static str| {
        let a = event.pointer(fields.source).map_or("", |source| text(source, a));
        if a.is_empty() { text(event, b) } else { a }
    };
    let component = first_set("/component", fields.reporting_controller);
    match first_set("/host", "/reportingInstance") {
        "" => component.to_owned(),
        instance => format!("{component}, {instance}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().expect("valid time")
    }

    #[test]
    fn core_events_show_when_what_and_where() {
        let event = json!({"metadata": {"name": "web.17c"}, "type": "Warning", "reason": "BackOff",
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}"},
            "source": {"component": "kubelet", "host": "node-1"}, "message": "Back-off restarting failed container\n",
            "firstTimestamp": "2024-05-01T11:00:00Z", "lastTimestamp": "2024-05-01T11:58:00Z", "count": 12});
        assert_eq!(
            core_cells(&event, now()),
            [
                json!("2m"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web"),
                json!("spec.containers{app}"),
                json!("kubelet, node-1"),
                json!("Back-off restarting failed container"),
                json!("60m"),
                json!(12),
                json!("web.17c"),
            ]
        );
    }

    #[test]
    fn new_api_events_use_event_time_series_and_reporting_controller() {
        let event = json!({"metadata": {"name": "e"}, "type": "Normal", "reason": "Scheduled",
            "regarding": {"kind": "Node"}, "note": "ok", "reportingController": "scheduler",
            "eventTime": "2024-05-01T11:59:00.000000Z", "series": {"count": 4, "lastObservedTime": "2024-05-01T11:59:50.000000Z"}});
        let cells = events_cells(&event, now());
        assert_eq!(cells[0], json!("10s"));
        assert_eq!(cells[3], json!("node"));
        assert_eq!(cells[5], json!("scheduler"));
        assert_eq!(cells[6], json!("ok"));
        assert_eq!(cells[7..9], [json!("60s"), json!(4)]);
    }

    #[test]
    fn singleton_events_count_once() {
        let event =
            json!({"eventTime": "2024-05-01T11:59:00.000000Z", "reportingComponent": "c", "reportingInstance": "i"});
        let cells = core_cells(&event, now());
        assert_eq!(cells[0], json!("60s"));
        assert_eq!(cells[5], json!("c, i"));
        assert_eq!(cells[8], json!(1));
    }
}
