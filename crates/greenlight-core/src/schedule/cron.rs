//! Five-field cron schedules (`minute hour day-of-month month day-of-week`) evaluated in an
//! IANA time zone.
//!
//! Daylight-saving changes follow the "compatible" rule: a local time that does not exist
//! (spring forward) fires at the same offset after the gap, e.g. 02:30 becomes 03:30; a local
//! time that happens twice (fall back) fires once, at its first occurrence.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error(
        "cron '{expr}' must have 5 fields (minute hour day-of-month month day-of-week), found {found}"
    )]
    FieldCount { expr: String, found: usize },
    #[error("cron '{expr}': {field} field '{value}' is invalid: {why}")]
    Field {
        expr: String,
        field: &'static str,
        value: String,
        why: String,
    },
    #[error("cron '{0}' never fires")]
    NeverFires(String),
    #[error("unknown time zone '{0}'; use an IANA name such as Europe/Paris")]
    UnknownTimeZone(String),
}

/// A parsed cron expression: the set of matching values of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: Vec<i8>,
    hours: Vec<i8>,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    dom_restricted: bool,
    dow_restricted: bool,
}

/// How far the search for a tick goes: five years covers every 29 February.
const SEARCH_DAYS: i32 = 5 * 366;

struct FieldSpec {
    name: &'static str,
    min: u8,
    max: u8,
    names: &'static [&'static str],
}

const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl Schedule {
    pub fn parse(expr: &str) -> Result<Self, CronError> {
        let expanded = match expr.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(CronError::FieldCount {
                expr: expr.to_string(),
                found: fields.len(),
            });
        }
        let minutes = parse_field(expr, fields[0], &MINUTE)?;
        let hours = parse_field(expr, fields[1], &HOUR)?;
        let dom = parse_field(expr, fields[2], &DAY_OF_MONTH)?;
        let months = parse_field(expr, fields[3], &MONTH)?;
        let mut dow = parse_field(expr, fields[4], &DAY_OF_WEEK)?;
        if dow & (1 << 7) != 0 {
            dow |= 1; // 7 is Sunday too
        }
        let schedule = Self {
            minutes: bits(minutes, 0, 59),
            hours: bits(hours, 0, 23),
            days_of_month: dom as u32,
            months: months as u16,
            days_of_week: (dow & 0x7f) as u8,
            dom_restricted: !fields[2].starts_with('*'),
            dow_restricted: !fields[4].starts_with('*'),
        };
        let probe: Timestamp = "2000-01-01T00:00:00Z".parse().expect("valid constant");
        if schedule.next_after(probe, &TimeZone::UTC).is_none() {
            return Err(CronError::NeverFires(expr.to_string()));
        }
        Ok(schedule)
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = t.to_zoned(tz.clone()).datetime();
        let mut date = local.date();
        for _ in 0..SEARCH_DAYS {
            if self.matches_day(date) {
                for &h in &self.hours {
                    for &m in &self.minutes {
                        let civil = date.at(h, m, 0, 0);
                        if civil < floor_minute(local) {
                            continue;
                        }
                        let tick = to_instant(civil, tz)?;
                        if tick > t {
                            return Some(tick);
                        }
                    }
                }
            }
            date = date.checked_add(1.day()).ok()?;
        }
        None
    }

    /// The last tick at or before `t`.
    pub fn last_at_or_before(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = t.to_zoned(tz.clone()).datetime();
        let mut date = local.date();
        for _ in 0..SEARCH_DAYS {
            if self.matches_day(date) {
                for &h in self.hours.iter().rev() {
                    for &m in self.minutes.iter().rev() {
                        let civil = date.at(h, m, 0, 0);
                        if civil > local {
                            continue;
                        }
                        let tick = to_instant(civil, tz)?;
                        if tick <= t {
                            return Some(tick);
                        }
                    }
                }
            }
            date = date.checked_sub(1.day()).ok()?;
        }
        None
    }

    fn matches_day(&self, date: Date) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.days_of_month & (1 << date.day()) != 0;
        let dow = self.days_of_week & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        // Classic cron: when both day fields are restricted, either may match.
        match (self.dom_restricted, self.dow_restricted) {
            (true, true) => dom || dow,
            _ => dom && dow,
        }
    }
}

fn floor_minute(dt: DateTime) -> DateTime {
    dt.date().at(dt.hour(), dt.minute(), 0, 0)
}

fn to_instant(civil: DateTime, tz: &TimeZone) -> Option<Timestamp> {
    tz.to_ambiguous_zoned(civil)
        .compatible()
        .ok()
        .map(|z| z.timestamp())
}

fn bits(mask: u64, min: i8, max: i8) -> Vec<i8> {
    (min..=max).filter(|v| mask & (1 << v) != 0).collect()
}

fn parse_field(expr: &str, text: &str, spec: &FieldSpec) -> Result<u64, CronError> {
    let err = |why: String| CronError::Field {
        expr: expr.to_string(),
        field: spec.name,
        value: text.to_string(),
        why,
    };
    let mut mask = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u8 = step
                    .parse()
                    .map_err(|_| err(format!("step '{step}' is not a number")))?;
                if step == 0 {
                    return Err(err("step must be at least 1".into()));
                }
                (range, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, spec).map_err(&err)?, value(b, spec).map_err(&err)?)
        } else {
            let v = value(range, spec).map_err(&err)?;
            // `5/15` means "from 5 to the end, every 15".
            (v, if part.contains('/') { spec.max } else { v })
        };
        if lo > hi {
            return Err(err(format!("range {lo}-{hi} runs backwards")));
        }
        let mut v = lo;
        while v <= hi {
            mask |= 1 << v;
            v = v.saturating_add(step);
        }
    }
    Ok(mask)
}

fn value(text: &str, spec: &FieldSpec) -> Result<u8, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(pos) = spec.names.iter().position(|n| *n == lower) {
        return Ok(pos as u8 + spec.min);
    }
    let v: u8 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number"))?;
    if v < spec.min || v > spec.max {
        return Err(format!("{v} is outside {}..{}", spec.min, spec.max));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    #[test]
    fn every_minute_fires_on_the_next_minute_boundary() {
        let s = Schedule::parse("* * * * *").unwrap();
        let t = ts("2026-03-01T10:00:30Z");
        assert_eq!(
            s.next_after(t, &TimeZone::UTC),
            Some(ts("2026-03-01T10:01:00Z"))
        );
        assert_eq!(
            s.last_at_or_before(t, &TimeZone::UTC),
            Some(ts("2026-03-01T10:00:00Z"))
        );
    }

    #[test]
    fn a_tick_exactly_now_is_the_last_one_not_the_next_one() {
        let s = Schedule::parse("0 3 * * *").unwrap();
        let t = ts("2026-03-01T03:00:00Z");
        assert_eq!(s.last_at_or_before(t, &TimeZone::UTC), Some(t));
        assert_eq!(
            s.next_after(t, &TimeZone::UTC),
            Some(ts("2026-03-02T03:00:00Z"))
        );
    }

    #[test]
    fn a_local_schedule_fires_at_local_time_in_its_zone() {
        let s = Schedule::parse("0 3 * * *").unwrap();
        // 03:00 in Tokyo (UTC+9, no DST) is 18:00 UTC the previous day.
        let next = s.next_after(ts("2026-06-01T12:00:00Z"), &tz("Asia/Tokyo"));
        assert_eq!(next, Some(ts("2026-06-01T18:00:00Z")));
    }

    #[test]
    fn spring_forward_moves_a_missing_local_time_past_the_gap() {
        // Europe/Berlin skips 02:00-03:00 on 2026-03-29.
        let s = Schedule::parse("30 2 * * *").unwrap();
        let next = s.next_after(ts("2026-03-28T12:00:00Z"), &tz("Europe/Berlin"));
        // 03:30 CEST = 01:30 UTC
        assert_eq!(next, Some(ts("2026-03-29T01:30:00Z")));
        let after = s.next_after(next.unwrap(), &tz("Europe/Berlin"));
        // back to 02:30 CEST = 00:30 UTC the next day
        assert_eq!(after, Some(ts("2026-03-30T00:30:00Z")));
    }

    #[test]
    fn fall_back_fires_a_repeated_local_time_once() {
        // Europe/Berlin repeats 02:00-03:00 on 2026-10-25.
        let s = Schedule::parse("30 2 * * *").unwrap();
        let first = s
            .next_after(ts("2026-10-24T12:00:00Z"), &tz("Europe/Berlin"))
            .unwrap();
        assert_eq!(first, ts("2026-10-25T00:30:00Z")); // 02:30 CEST
        let second = s.next_after(first, &tz("Europe/Berlin")).unwrap();
        assert_eq!(second, ts("2026-10-26T01:30:00Z")); // 02:30 CET the next day
    }

    #[test]
    fn day_of_week_names_steps_and_ranges_parse() {
        let s = Schedule::parse("*/15 9-17 * * mon-fri").unwrap();
        // 2026-11-21 is a Saturday: next tick Monday 09:00.
        let next = s.next_after(ts("2026-11-21T12:00:00Z"), &TimeZone::UTC);
        assert_eq!(next, Some(ts("2026-11-23T09:00:00Z")));
        let s = Schedule::parse("0 0 * * 7").unwrap();
        let next = s.next_after(ts("2026-11-21T12:00:00Z"), &TimeZone::UTC);
        assert_eq!(next, Some(ts("2026-11-22T00:00:00Z")));
    }

    #[test]
    fn restricted_day_of_month_and_week_match_either() {
        let s = Schedule::parse("0 0 1 * mon").unwrap();
        // The 23rd is a Monday, before the 1st of December.
        let next = s.next_after(ts("2026-11-21T12:00:00Z"), &TimeZone::UTC);
        assert_eq!(next, Some(ts("2026-11-23T00:00:00Z")));
    }

    #[test]
    fn leap_day_schedule_finds_the_next_leap_year() {
        let s = Schedule::parse("0 0 29 feb *").unwrap();
        let next = s.next_after(ts("2026-11-21T12:00:00Z"), &TimeZone::UTC);
        assert_eq!(next, Some(ts("2028-02-29T00:00:00Z")));
    }

    #[test]
    fn malformed_expressions_say_which_field_is_wrong() {
        let cases = [
            ("* * * *", "5 fields"),
            ("61 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day-of-month"),
            ("* * * 13 *", "month"),
            ("* * * * 8", "day-of-week"),
            ("*/0 * * * *", "step"),
            ("5-1 * * * *", "backwards"),
            ("0 0 31 feb *", "never fires"),
        ];
        for (expr, needle) in cases {
            let err = Schedule::parse(expr).unwrap_err().to_string();
            assert!(err.contains(needle), "{expr}: {err}");
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    const ZONES: &[&str] = &[
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "Asia/Kolkata",
        "America/Sao_Paulo",
    ];
    const EXPRS: &[&str] = &[
        "* * * * *",
        "*/7 * * * *",
        "30 2 * * *",
        "0 0 * * 0",
        "15 1-3 * * mon-fri",
        "0 12 1,15 * *",
        "59 23 31 12 *",
        "0 */6 * * *",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The next tick is after `t`, is itself a tick, and no tick lies between.
        #[test]
        fn next_tick_is_the_first_tick_after(secs in 1_700_000_000i64..1_900_000_000, zone in 0..ZONES.len(), expr in 0..EXPRS.len()) {
            let tz = TimeZone::get(ZONES[zone]).unwrap();
            let schedule = Schedule::parse(EXPRS[expr]).unwrap();
            let t = Timestamp::from_second(secs).unwrap();
            let next = schedule.next_after(t, &tz).unwrap();
            prop_assert!(next > t);
            prop_assert_eq!(schedule.last_at_or_before(next, &tz), Some(next));
            let before_next = next - jiff::SignedDuration::from_secs(1);
            let last = schedule.last_at_or_before(before_next, &tz).unwrap();
            prop_assert!(last <= t, "tick {} lies between {} and {}", last, t, next);
        }
    }
}
