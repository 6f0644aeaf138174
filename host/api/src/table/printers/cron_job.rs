//! `CronJob`: NAME SCHEDULE TIMEZONE SUSPEND ACTIVE LAST SCHEDULE AGE, and with `-o wide`
//! CONTAINERS IMAGES SELECTOR of the job template.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, CONTAINERS, Column, IMAGES, NAME, Printer, SELECTOR};
use crate::table::object::{age, containers, field, format_label_selector, list, name, since, text, text_or};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    Column::text("Schedule", "The schedule in Cron format."),
    Column::text("Timezone", "The time zone name for the given schedule."),
    Column::new("Suspend", "boolean", "This flag tells the controller to suspend subsequent executions."),
    Column::integer("Active", "A list of pointers to currently running jobs."),
    Column::text("Last Schedule", "Information when was the last time the job was successfully scheduled."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn cells(cron_job: &Value, now: Timestamp) -> Vec<Value> {
    let job_spec = cron_job.pointer("/spec/jobTemplate/spec").unwrap_or(&Value::Null);
    let [names, images] = containers(job_spec.pointer("/template/spec").unwrap_or(&Value::Null));
    let last_schedule = match field(cron_job, "/status/lastScheduleTime") {
        Some(_) => since(cron_job, "/status/lastScheduleTime", now),
        None => "<none>".to_owned(),
    };
    vec![
        name(cron_job),
        text(cron_job, "/spec/schedule").into(),
        text_or(cron_job, "/spec/timeZone", "<none>").into(),
        suspend(cron_job).into(),
        list(cron_job, "/status/active").len().into(),
        last_schedule.into(),
        age(cron_job, now),
        names,
        images,
        format_label_selector(job_spec.get("selector")).into(),
    ]
}

/// Upstream prints the optional flag as `True`, `False` or `<unset>`.
fn suspend(cron_job: &Value) -> &'static str {
    match field(cron_job, "/spec/suspend").and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn row_shows_schedule_and_last_run() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let cron_job = json!({"metadata": {"name": "backup", "creationTimestamp": "2024-04-01T12:00:00Z"},
            "spec": {"schedule": "0 * * * *", "timeZone": "Etc/UTC", "suspend": false,
                "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "busybox"}]}}}}},
            "status": {"active": [{"name": "backup-1"}], "lastScheduleTime": "2024-05-01T11:00:00Z"}});
        assert_eq!(
            cells(&cron_job, now)[..9],
            [
                json!("backup"),
                json!("0 * * * *"),
                json!("Etc/UTC"),
                json!("False"),
                json!(1),
                json!("60m"),
                json!("30d"),
                json!("b"),
                json!("busybox")
            ]
        );
        let bare = json!({"spec": {"schedule": "@daily"}});
        assert_eq!(cells(&bare, now)[2..6], [json!("<none>"), json!("<unset>"), json!(0), json!("<none>")]);
    }
}
