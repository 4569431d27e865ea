//! Times as a person reads them in a table: "in 4m", "12s ago", "5d ago". JSON and YAML keep
//! the absolute RFC 3339 time; only the text printed for people goes through here.
//!
//! Pure functions of (time, now), so that every table agrees and tests need no clock.

use std::time::Duration;

use crate::core::model::Timestamp;

/// "12s ago" for an instant before `now`, "in 4m" for one after it, "now" within a second.
pub fn relative(t: Timestamp, now: Timestamp) -> String {
    if t.millis() <= now.millis() {
        let ago = now.since(t);
        match ago < Duration::from_secs(1) {
            true => "now".into(),
            false => format!("{} ago", short(ago)),
        }
    } else {
        let left = t.since(now);
        match left < Duration::from_secs(1) {
            true => "now".into(),
            false => format!("in {}", short(left)),
        }
    }
}

/// `relative`, or `never` when there is no time: "last pass: never".
pub fn relative_or_never(t: Option<Timestamp>, now: Timestamp) -> String {
    t.map_or_else(|| "never".into(), |t| relative(t, now))
}

/// How long ago an instant was, bare ("3m"), for an AGE column as kubectl prints it.
pub fn age(t: Timestamp, now: Timestamp) -> String {
    short(now.since(t))
}

/// A duration in its largest whole unit, as kubectl prints ages: "45s", "3m", "2h", "5d".
pub fn short(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_700_000_000_000);

    fn at(offset_secs: i64) -> Timestamp {
        Timestamp(NOW.millis() + offset_secs * 1000)
    }

    #[test]
    fn past_times_read_as_ago() {
        assert_eq!(relative(at(-12), NOW), "12s ago");
        assert_eq!(relative(at(-119), NOW), "119s ago");
        assert_eq!(relative(at(-120), NOW), "2m ago");
        assert_eq!(relative(at(-3 * 3600), NOW), "3h ago");
        assert_eq!(relative(at(-5 * 86_400), NOW), "5d ago");
    }

    #[test]
    fn future_times_read_as_in() {
        assert_eq!(relative(at(4 * 60), NOW), "in 4m");
        assert_eq!(relative(at(30), NOW), "in 30s");
        assert_eq!(relative(at(2 * 86_400 + 5), NOW), "in 2d");
    }

    #[test]
    fn within_a_second_is_now() {
        assert_eq!(relative(NOW, NOW), "now");
        assert_eq!(relative(Timestamp(NOW.millis() - 999), NOW), "now");
        assert_eq!(relative(Timestamp(NOW.millis() + 999), NOW), "now");
    }

    #[test]
    fn never_and_age() {
        assert_eq!(relative_or_never(None, NOW), "never");
        assert_eq!(relative_or_never(Some(at(-60)), NOW), "60s ago");
        assert_eq!(age(at(-600), NOW), "10m");
        // A clock skewed into the future is not a negative age.
        assert_eq!(age(at(600), NOW), "0s");
    }

    #[test]
    fn extreme_times_do_not_panic() {
        assert!(relative(Timestamp(i64::MIN), NOW).ends_with(" ago"));
        assert!(relative(Timestamp(i64::MAX), NOW).starts_with("in "));
    }
}
