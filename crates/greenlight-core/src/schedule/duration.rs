//! Go-style duration strings (`1h30m`, `90s`, `500ms`), the form Kubernetes users know.

use std::time::Duration;

use jiff::Timestamp;

/// The longest duration any field takes: 366 days. Anything longer is refused when the spec
/// is checked, so no time arithmetic on it can overflow.
pub const LONGEST: Duration = Duration::from_secs(366 * 24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("'{0}' is not a duration; use a number with a unit, e.g. 30s, 10m, 1h30m")]
    Malformed(String),
    #[error("'{0}' is longer than the longest duration allowed, 8784h (366 days)")]
    TooLong(String),
}

/// `at + d`, or the end of time when that is past it: never a panic.
pub fn later(at: Timestamp, d: Duration) -> Timestamp {
    at.checked_add(d).unwrap_or(Timestamp::MAX)
}

/// The length of a release window: a window of no length never opens, so it is refused.
pub fn parse_window_length(text: &str) -> Result<Duration, String> {
    match parse_duration(text) {
        Ok(d) if d.is_zero() => Err(format!(
            "'{text}' is no length at all: the window would never open; give it a length, e.g. 1h"
        )),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let malformed = || DurationError::Malformed(text.to_string());
    let s = text.trim();
    if s.is_empty() {
        return Err(malformed());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(malformed)?;
        if number_len == 0 {
            return Err(malformed());
        }
        let value: f64 = rest[..number_len].parse().map_err(|_| malformed())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(malformed()),
        };
        total += value * seconds;
        rest = &rest[unit_len..];
    }
    if total > LONGEST.as_secs_f64() {
        return Err(DurationError::TooLong(text.to_string()));
    }
    Duration::try_from_secs_f64(total).map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_durations_parse() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5m").unwrap(), Duration::from_secs(90));
    }

    #[test]
    fn durations_past_a_year_are_refused_and_time_never_overflows() {
        assert_eq!(parse_duration("8784h").unwrap(), LONGEST);
        for huge in [
            "8785h",
            "100000000h",
            "99999999999999999999999999999999999h",
        ] {
            let err = parse_duration(huge).unwrap_err().to_string();
            assert!(err.contains("longest duration allowed"), "{huge}: {err}");
        }
        assert_eq!(later(Timestamp::MAX, LONGEST), Timestamp::MAX);
    }

    #[test]
    fn durations_without_a_known_unit_are_rejected() {
        for bad in ["", "10", "m", "10d", "1h-5m", "ten minutes"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
    }
}
