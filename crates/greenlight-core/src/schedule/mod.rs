//! Time arithmetic for stages and gates: Go-style durations, five-field cron schedules in an
//! IANA time zone, and allow/deny windows built from them.

pub mod cron;
pub mod duration;
pub mod window;

pub use cron::{CronError, Schedule};
pub use duration::{DurationError, LONGEST, later, parse_duration, parse_window_length};
pub use window::{WindowSpec, WindowVerdict, evaluate_windows};

use jiff::tz::TimeZone;

/// Resolves an IANA time zone name; `None` means UTC.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, CronError> {
    match name {
        None | Some("") | Some("UTC") => Ok(TimeZone::UTC),
        Some(name) => TimeZone::get(name).map_err(|_| CronError::UnknownTimeZone(name.to_string())),
    }
}
