//! Error budgets and multiwindow burn rates, as the Google SRE Workbook (chapter 5) defines
//! them: with an objective o the budget is β = 1 − o of all events; a window's burn rate is
//! its error ratio over β. A pair of windows breaches when both burn at least its factor, so
//! a short spike that has already ended does not fail a release, and a slow leak does.
//!
//! The Workbook's windows are made for paging over hours; a canary runs for minutes. So an
//! hour of them is compressed to `hour` (default 10 minutes): 14.4× over 1h/5m becomes 14.4×
//! over 10m/50s. The factors stay as they are; only how long a burn must last shrinks. No
//! window is shorter than `min_window`, nor reaches back before the analysis began, whose
//! data under the canary's name may be another release's.

use std::time::Duration;

/// A pair of windows and the burn rate both must reach for a breach.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BurnRule {
    pub factor: f64,
    pub long: Duration,
    pub short: Duration,
}

/// The Workbook's two fastest alerts: 2% of a 30-day budget in an hour, 5% in six.
pub fn default_rules() -> Vec<BurnRule> {
    let hours = |h: u64| Duration::from_secs(h * 3600);
    vec![
        BurnRule {
            factor: 14.4,
            long: hours(1),
            short: Duration::from_secs(300),
        },
        BurnRule {
            factor: 6.0,
            long: hours(6),
            short: Duration::from_secs(1800),
        },
    ]
}

/// `rules` with each hour lasting `hour`, no window under `min_window`, and none longer
/// than the analysis has run (`elapsed`), each on whole seconds.
pub fn scaled(
    rules: &[BurnRule],
    hour: Duration,
    min_window: Duration,
    elapsed: Duration,
) -> Vec<BurnRule> {
    let scale = hour.as_secs_f64() / 3600.0;
    let fit = |w: Duration| {
        let secs = (w.as_secs_f64() * scale)
            .round()
            .max(min_window.as_secs_f64());
        Duration::from_secs(secs.min(elapsed.as_secs_f64()).floor() as u64)
    };
    rules
        .iter()
        .map(|r| BurnRule {
            factor: r.factor,
            long: fit(r.long),
            short: fit(r.short),
        })
        .collect()
}

/// Events counted over one window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Events {
    pub bad: f64,
    pub total: f64,
}

impl Events {
    /// The share of bad events, or none without events. Extrapolated counters can put bad
    /// a little above total or below 0, so the ratio is held to 0..1.
    pub fn error_ratio(&self) -> Option<f64> {
        (self.total > 0.0 && self.total.is_finite() && self.bad.is_finite())
            .then(|| (self.bad / self.total).clamp(0.0, 1.0))
    }
}

/// The share of the budget left after `error_ratio` over the period: 1 untouched, 0 spent,
/// below 0 overspent. `objective` is a fraction below 1.
pub fn budget_remaining(error_ratio: f64, objective: f64) -> f64 {
    1.0 - error_ratio / (1.0 - objective)
}

/// What the burn rates say of the canary.
#[derive(Clone, Debug, PartialEq)]
pub enum Burn {
    /// Some pair burns at least its factor over both windows.
    Breach,
    /// Every pair was measured, and none breaches.
    Within,
    /// Some pair had too few events to judge, and none breaches.
    NoData,
}

/// One pair's measured rates, for the verdict and the message.
#[derive(Clone, Debug, PartialEq)]
pub struct PairReading {
    pub rule: BurnRule,
    /// Burn rates over the long and the short window, if each had enough events.
    pub long: Option<f64>,
    pub short: Option<f64>,
}

impl PairReading {
    pub fn breaches(&self) -> bool {
        matches!((self.long, self.short), (Some(l), Some(s)) if l >= self.rule.factor && s >= self.rule.factor)
    }
}

/// Each pair's burn rates from its windows' events, a window under `min_events` unread;
/// then the verdict: harm shown by one pair decides before another's missing data.
pub fn assess(
    pairs: &[(BurnRule, Events, Events)],
    objective: f64,
    min_events: f64,
) -> (Burn, Vec<PairReading>) {
    let budget = 1.0 - objective;
    let rate = |e: &Events| {
        (e.total >= min_events)
            .then(|| e.error_ratio())
            .flatten()
            .map(|r| r / budget)
    };
    let readings: Vec<PairReading> = pairs
        .iter()
        .map(|(rule, long, short)| PairReading {
            rule: *rule,
            long: rate(long),
            short: rate(short),
        })
        .collect();
    let burn = if readings.iter().any(PairReading::breaches) {
        Burn::Breach
    } else if readings
        .iter()
        .any(|r| r.long.is_none() || r.short.is_none())
    {
        Burn::NoData
    } else {
        Burn::Within
    };
    (burn, readings)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn events(bad: f64, total: f64) -> Events {
        Events { bad, total }
    }

    #[test]
    fn an_hour_compressed_to_ten_minutes_makes_the_workbook_pairs_10m_50s_and_60m_5m() {
        let rules = scaled(
            &default_rules(),
            Duration::from_secs(600),
            Duration::from_secs(30),
            Duration::from_secs(86_400),
        );
        let windows: Vec<(u64, u64)> = rules
            .iter()
            .map(|r| (r.long.as_secs(), r.short.as_secs()))
            .collect();
        assert_eq!(windows, [(600, 50), (3600, 300)]);
        assert_eq!(rules[0].factor, 14.4, "the factors are not scaled");
    }

    #[test]
    fn no_window_is_shorter_than_the_least_nor_longer_than_the_analysis_has_run() {
        let rules = scaled(
            &default_rules(),
            MIN,
            Duration::from_secs(30),
            Duration::from_secs(200),
        );
        // 1h/5m at 1m per hour is 60s/5s: the short window is raised to 30s.
        assert_eq!(
            (rules[0].long.as_secs(), rules[0].short.as_secs()),
            (60, 30)
        );
        // 6h/30m is 360s/30s, cut to the 200s the analysis has run.
        assert_eq!(
            (rules[1].long.as_secs(), rules[1].short.as_secs()),
            (200, 30)
        );
    }

    #[test]
    fn a_budget_is_what_the_objective_leaves_and_can_be_overspent() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(budget_remaining(0.0, 0.999), 1.0));
        assert!(close(budget_remaining(0.0001, 0.999), 0.9));
        assert!(close(budget_remaining(0.001, 0.999), 0.0));
        assert!(close(budget_remaining(0.002, 0.999), -1.0));
    }

    #[test]
    fn five_percent_errors_at_99_9_breaches_both_default_pairs() {
        let rules = default_rules();
        let bad = events(50.0, 1000.0);
        let pairs: Vec<_> = rules.iter().map(|r| (*r, bad, bad)).collect();
        let (burn, readings) = assess(&pairs, 0.999, 100.0);
        assert_eq!(burn, Burn::Breach);
        assert!((readings[0].long.unwrap() - 50.0).abs() < 1e-9);
    }

    #[test]
    fn a_spike_that_has_ended_breaches_the_long_window_only_and_does_not_fail() {
        let rule = default_rules()[0];
        let (burn, readings) = assess(
            &[(rule, events(30.0, 1000.0), events(0.0, 200.0))],
            0.999,
            100.0,
        );
        assert_eq!(burn, Burn::Within);
        assert_eq!(readings[0].short, Some(0.0));
    }

    #[test]
    fn too_few_events_is_no_data_unless_another_pair_shows_harm() {
        let rules = default_rules();
        let few = events(5.0, 10.0);
        let (burn, readings) = assess(&[(rules[0], few, few)], 0.999, 100.0);
        assert_eq!(burn, Burn::NoData);
        assert_eq!(
            readings[0].long, None,
            "a 50% ratio on 10 events is not read"
        );
        let bad = events(100.0, 1000.0);
        let (burn, _) = assess(&[(rules[0], few, few), (rules[1], bad, bad)], 0.999, 100.0);
        assert_eq!(burn, Burn::Breach);
    }

    #[test]
    fn extrapolated_counters_are_held_to_a_ratio_between_0_and_1() {
        assert_eq!(events(-0.5, 100.0).error_ratio(), Some(0.0));
        assert_eq!(events(101.0, 100.0).error_ratio(), Some(1.0));
        assert_eq!(events(0.0, 0.0).error_ratio(), None);
        assert_eq!(events(f64::NAN, 10.0).error_ratio(), None);
    }
}
