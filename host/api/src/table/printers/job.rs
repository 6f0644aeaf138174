//! Jobs: NAME STATUS COMPLETIONS DURATION AGE, and with `-o wide` CONTAINERS IMAGES SELECTOR.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, CONTAINERS, Column, IMAGES, NAME, Printer, SELECTOR, template_containers};
use crate::table::duration::human_duration;
use crate::table::object::{age, condition, deleting, field, format_label_selector, integer, name, since, time};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    Column::text("Status", "Status of the job."),
    Column::text("Completions", "The number of pods which reached phase Succeeded."),
    Column::text("Duration", "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn cells(job: &Value, now: Timestamp) -> Vec<Value> {
    let [names, images] = template_containers(job);
    vec![
        name(job),
        status(job).into(),
        completions(job).into(),
        duration(job, now).into(),
        age(job, now),
        names,
        images,
        format_label_selector(job.pointer("/spec/selector")).into(),
    ]
}

/// Terminal conditions first, then deletion, then conditions of a job still running.
fn status(job: &Value) -> &'static str {
    let holds = |kind: &str| condition(job, "/status/conditions", kind) == Some("True");
    if holds("Complete") {
        "Complete"
    } else if holds("Failed") {
        "Failed"
    } else if deleting(job) {
        "Terminating"
    } else if holds("Suspended") {
        "Suspended"
    } else if holds("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    }
}

/// `succeeded/completions`; jobs without a completion count finish with one success, and say
/// how many pods run in parallel toward it.
fn completions(job: &Value) -> String {
    let succeeded = integer(job, "/status/succeeded");
    if let Some(completions) = field(job, "/spec/completions") {
        return format!("{succeeded}/{}", completions.as_i64().unwrap_or_default());
    }
    match integer(job, "/spec/parallelism") {
        parallelism if parallelism > 1 => format!("{succeeded}/1 of {parallelism}"),
        _ => format!("{succeeded}/1"),
    }
}

/// Start to completion, or start to now while running; nothing before the job starts.
fn duration(job: &Value, now: Timestamp) -> String {
    match (time(job, "/status/startTime"), time(job, "/status/completionTime")) {
        (None, _) => String::new(),
        (Some(_), None) => since(job, "/status/startTime", now),
        (Some(start), Some(end)) => human_duration(end.duration_since(start)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_prefers_terminal_conditions() {
        let with = |conditions: Value| json!({"status": {"conditions": conditions}});
        let cases = [
            (with(json!([])), "Running"),
            (with(json!([{"type": "Complete", "status": "True"}])), "Complete"),
            (
                with(json!([{"type": "FailureTarget", "status": "True"}, {"type": "Failed", "status": "True"}])),
                "Failed",
            ),
            (with(json!([{"type": "Suspended", "status": "True"}])), "Suspended"),
            (with(json!([{"type": "Suspended", "status": "False"}])), "Running"),
            (with(json!([{"type": "FailureTarget", "status": "True"}])), "FailureTarget"),
            (json!({"metadata": {"deletionTimestamp": "2024-05-01T11:00:00Z"}}), "Terminating"),
        ];
        for (job, expected) in cases {
            assert_eq!(status(&job), expected, "{job}");
        }
    }

    #[test]
    fn completions_and_duration() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let cases = [
            (
                json!({"spec": {"completions": 3}, "status": {"succeeded": 1, "startTime": "2024-05-01T11:59:00Z"}}),
                "1/3",
                "60s",
            ),
            (
                json!({"spec": {"parallelism": 4}, "status": {"succeeded": 0, "startTime": "2024-05-01T10:00:00Z",
                    "completionTime": "2024-05-01T10:03:05Z"}}),
                "0/1 of 4",
                "3m5s",
            ),
            (json!({"spec": {"parallelism": 1}, "status": {}}), "0/1", ""),
        ];
        for (job, done, took) in cases {
            assert_eq!((completions(&job).as_str(), duration(&job, now).as_str()), (done, took), "{job}");
        }
    }
}
