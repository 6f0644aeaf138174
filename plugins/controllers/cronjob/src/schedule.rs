//! A CronJob's schedule in its time zone: the next time it is due, the most recent time it was
//! due, and how a scheduled time is written.

use std::str::FromStr as _;

use chrono::{DateTime, SecondsFormat, TimeZone as _};
use chrono_tz::Tz;
use croner::Cron;
use serde_json::Value;

/// Most scheduled times counted one by one when looking for missed ones.
const COUNT_LIMIT: usize = 101;

/// A parsed schedule and its time zone.
pub struct Schedule {
    cron: Cron,
    zone: Tz,
}

impl Schedule {
    /// The schedule of a CronJob (`spec.schedule` in `spec.timeZone`, UTC when unset); on error
    /// the reason and message of the Event upstream records.
    pub fn of(cron_job: &Value) -> Result<Self, (&'static str, String)> {
        let zone = match cron_job.pointer("/spec/timeZone").and_then(Value::as_str) {
            None => Tz::UTC,
            Some(name) => {
                Tz::from_str(name).map_err(|e| ("UnknownTimeZone", format!("invalid timeZone: {name:?}: {e}")))?
            }
        };
        let text = cron_job.pointer("/spec/schedule").and_then(Value::as_str).unwrap_or_default();
        Self::parse(text, zone).map_err(|e| ("UnparseableSchedule", format!("unparseable schedule: {text:?} : {e}")))
    }

    /// Parses a 5-field cron expression or a macro (`@hourly`, `@daily`, `@weekly`, `@monthly`,
    /// `@yearly`, `@annually`).
    pub fn parse(text: &str, zone: Tz) -> Result<Self, croner::errors::CronError> {
        Ok(Self { cron: Cron::new(text.trim()).parse()?, zone })
    }

    fn at(&self, seconds: i64) -> Option<DateTime<Tz>> {
        self.zone.timestamp_opt(seconds, 0).single()
    }

    /// The first scheduled time strictly after `seconds`.
    #[must_use]
    pub fn next_after(&self, seconds: i64) -> Option<i64> {
        let from = self.at(seconds)?;
        self.cron.find_next_occurrence(&from, false).ok().map(|t| t.timestamp())
    }

    /// The most recent scheduled time in `(earliest, now]`, and how many there are (exact up to
    /// a hundred, a lower bound beyond).
    #[must_use]
    pub fn most_recent(&self, earliest: i64, now: i64) -> (Option<i64>, usize) {
        let mut last = None;
        let mut count = 0;
        let mut cursor = earliest;
        while let Some(time) = self.next_after(cursor).filter(|t| *t <= now) {
            last = Some(time);
            count += 1;
            if count >= COUNT_LIMIT {
                return (self.latest_before(now, earliest).or(last), count);
            }
            cursor = time;
        }
        (last, count)
    }

    /// The latest scheduled time in `(earliest, now]`, searching back from `now` in growing
    /// windows (a minute, an hour, a day, …) so that long gaps stay cheap.
    fn latest_before(&self, now: i64, earliest: i64) -> Option<i64> {
        for window in [60, 3600, 86_400, 31 * 86_400, 366 * 86_400, 5 * 366 * 86_400] {
            let start = (now - window).max(earliest);
            let mut cursor = start;
            let mut last = None;
            while let Some(time) = self.next_after(cursor).filter(|t| *t <= now) {
                last = Some(time);
                cursor = time;
            }
            if last.is_some() || start == earliest {
                return last;
            }
        }
        None
    }

    /// `seconds` as RFC 3339 in the schedule's time zone (`Z` for UTC), as upstream writes the
    /// scheduled-timestamp annotation.
    #[must_use]
    pub fn format(&self, seconds: i64) -> String {
        self.at(seconds).map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)).unwrap_or_default()
    }
}
