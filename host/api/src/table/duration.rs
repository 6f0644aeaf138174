//! How long ago something happened, in upstream's `duration.HumanDuration` style: two or three
//! significant figures ("5s", "3m2s", "12m", "5h", "3d4h", "45d", "2y30d").

use k8s_openapi::jiff::{SignedDuration, Timestamp};

const MINUTE: i64 = 60;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const YEAR: i64 = 365 * DAY;

/// The time from `then` to `now`; `<unknown>` when `then` is not set.
pub(super) fn since(then: Option<Timestamp>, now: Timestamp) -> String {
    then.map_or_else(|| "<unknown>".to_owned(), |then| human_duration(now.duration_since(then)))
}

/// Renders `duration` with the precision upstream's `HumanDuration` gives each range.
pub(super) fn human_duration(duration: SignedDuration) -> String {
    let seconds = duration.as_secs();
    // Clocks of different machines disagree a little: up to a second in the future reads as now.
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 2 * MINUTE {
        return format!("{seconds}s");
    }
    let minutes = seconds / MINUTE;
    if minutes < 10 {
        return with_remainder(minutes, "m", seconds % MINUTE, "s");
    }
    if minutes < 3 * 60 {
        return format!("{minutes}m");
    }
    let hours = seconds / HOUR;
    if hours < 8 {
        return with_remainder(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = seconds / DAY;
    if hours < 8 * 24 {
        return with_remainder(days, "d", hours % 24, "h");
    }
    if days < 2 * 365 {
        return format!("{days}d");
    }
    let years = seconds / YEAR;
    if years < 8 {
        return with_remainder(years, "y", days % 365, "d");
    }
    format!("{years}y")
}

/// `3m2s`, or just `3m` when the smaller unit is zero.
fn with_remainder(major: i64, major_unit: &str, minor: i64, minor_unit: &str) -> String {
    if minor == 0 { format!("{major}{major_unit}") } else { format!("{major}{major_unit}{minor}{minor_unit}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_upstream_renders_them() {
        let cases = [
            (-3, "<invalid>"),
            (-2, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (2 * MINUTE, "2m"),
            (3 * MINUTE + 2, "3m2s"),
            (9 * MINUTE + 59, "9m59s"),
            (10 * MINUTE + 30, "10m"),
            (12 * MINUTE, "12m"),
            (179 * MINUTE, "179m"),
            (3 * HOUR, "3h"),
            (5 * HOUR + 20 * MINUTE, "5h20m"),
            (8 * HOUR + 20 * MINUTE, "8h"),
            (47 * HOUR, "47h"),
            (2 * DAY, "2d"),
            (3 * DAY + 4 * HOUR, "3d4h"),
            (7 * DAY + 23 * HOUR, "7d23h"),
            (8 * DAY + 5 * HOUR, "8d"),
            (45 * DAY, "45d"),
            (729 * DAY, "729d"),
            (2 * YEAR, "2y"),
            (2 * YEAR + 30 * DAY, "2y30d"),
            (7 * YEAR + 364 * DAY, "7y364d"),
            (8 * YEAR + 100 * DAY, "8y"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(human_duration(SignedDuration::from_secs(seconds)), expected, "{seconds}s");
        }
    }

    #[test]
    fn sub_second_skew_truncates_toward_zero() {
        assert_eq!(human_duration(SignedDuration::from_millis(-1_500)), "0s");
        assert_eq!(human_duration(SignedDuration::from_millis(1_999)), "1s");
    }

    #[test]
    fn elapsed_time_is_measured_from_the_timestamp() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let then: Timestamp = "2024-05-01T11:57:58Z".parse().expect("valid time");
        assert_eq!(since(Some(then), now), "2m2s");
        assert_eq!(since(None, now), "<unknown>");
    }
}
