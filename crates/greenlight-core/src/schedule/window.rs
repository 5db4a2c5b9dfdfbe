//! Allow and deny windows. A deny window (blackout) that is open blocks; otherwise, when allow
//! windows exist, one of them must be open. The verdict says when to look again, so a held
//! release moves the moment its window opens.

use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::cron::Schedule;

#[derive(Debug, Clone)]
pub struct WindowSpec {
    pub allow: bool,
    pub schedule: Schedule,
    pub duration: Duration,
    pub tz: TimeZone,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowVerdict {
    Open,
    /// Closed until at least `until`, when the windows must be evaluated again.
    Closed {
        until: Timestamp,
        reason: String,
    },
}

impl WindowSpec {
    /// The end of the occurrence that covers `now`, if one does.
    pub fn open_until(&self, now: Timestamp) -> Option<Timestamp> {
        let start = self.schedule.last_at_or_before(now, &self.tz)?;
        let end = start.checked_add(self.duration).ok()?;
        (now < end).then_some(end)
    }

    pub fn next_opening(&self, now: Timestamp) -> Option<Timestamp> {
        self.schedule.next_after(now, &self.tz)
    }
}

pub fn evaluate_windows(windows: &[WindowSpec], now: Timestamp) -> WindowVerdict {
    let blackout = windows
        .iter()
        .filter(|w| !w.allow)
        .filter_map(|w| w.open_until(now).map(|end| (end, w)))
        .max_by_key(|(end, _)| *end);
    if let Some((end, w)) = blackout {
        return WindowVerdict::Closed {
            until: end,
            reason: format!("deny window '{}' is open until {end}", w.reason),
        };
    }
    let allows: Vec<&WindowSpec> = windows.iter().filter(|w| w.allow).collect();
    if allows.is_empty() || allows.iter().any(|w| w.open_until(now).is_some()) {
        return WindowVerdict::Open;
    }
    let next = allows.iter().filter_map(|w| w.next_opening(now)).min();
    match next {
        Some(until) => WindowVerdict::Closed {
            until,
            reason: format!("outside every allow window; the next opens at {until}"),
        },
        None => WindowVerdict::Closed {
            until: super::later(now, Duration::from_secs(3600)),
            reason: "outside every allow window and none opens again".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn window(allow: bool, cron: &str, minutes: u64, zone: &str) -> WindowSpec {
        WindowSpec {
            allow,
            schedule: Schedule::parse(cron).unwrap(),
            duration: Duration::from_secs(minutes * 60),
            tz: TimeZone::get(zone).unwrap(),
            reason: format!("{cron} for {minutes}m"),
        }
    }

    #[test]
    fn no_windows_means_always_open() {
        assert_eq!(
            evaluate_windows(&[], ts("2026-01-01T00:00:00Z")),
            WindowVerdict::Open
        );
    }

    #[test]
    fn an_open_blackout_holds_until_it_ends() {
        let w = [window(false, "0 22 * * *", 120, "UTC")];
        let verdict = evaluate_windows(&w, ts("2026-01-01T23:00:00Z"));
        assert!(
            matches!(verdict, WindowVerdict::Closed { until, .. } if until == ts("2026-01-02T00:00:00Z"))
        );
        assert_eq!(
            evaluate_windows(&w, ts("2026-01-02T00:00:00Z")),
            WindowVerdict::Open
        );
    }

    #[test]
    fn deny_wins_over_allow() {
        let w = [
            window(true, "0 0 * * *", 24 * 60, "UTC"),
            window(false, "0 12 * * *", 60, "UTC"),
        ];
        assert!(matches!(
            evaluate_windows(&w, ts("2026-01-01T12:30:00Z")),
            WindowVerdict::Closed { .. }
        ));
        assert_eq!(
            evaluate_windows(&w, ts("2026-01-01T13:30:00Z")),
            WindowVerdict::Open
        );
    }

    #[test]
    fn outside_allow_windows_waits_for_the_next_opening() {
        // Weekdays 09:00-17:00 in New York.
        let w = [window(true, "0 9 * * 1-5", 8 * 60, "America/New_York")];
        // Saturday 2026-11-21 noon UTC: next opening Monday 09:00 EST = 14:00 UTC.
        let verdict = evaluate_windows(&w, ts("2026-11-21T12:00:00Z"));
        assert!(
            matches!(verdict, WindowVerdict::Closed { until, .. } if until == ts("2026-11-23T14:00:00Z"))
        );
        assert_eq!(
            evaluate_windows(&w, ts("2026-11-23T15:00:00Z")),
            WindowVerdict::Open
        );
    }

    #[test]
    fn a_window_across_a_dst_change_keeps_its_length_in_real_time() {
        // Blackout 01:00 for 3h in Berlin on the spring-forward night: 00:00 UTC to 03:00 UTC.
        let w = [window(false, "0 1 29 3 *", 180, "Europe/Berlin")];
        assert!(matches!(
            evaluate_windows(&w, ts("2026-03-29T02:59:00Z")),
            WindowVerdict::Closed { .. }
        ));
        assert_eq!(
            evaluate_windows(&w, ts("2026-03-29T03:00:00Z")),
            WindowVerdict::Open
        );
    }
}
