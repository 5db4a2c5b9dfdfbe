//! The comparison judge: is the canary worse than the baseline it runs beside? Each metric's
//! two samples are compared by a Mann-Whitney U test with a Hodges-Lehmann shift and its 98%
//! interval, classified High, Low, Pass or NoData, and the classes are scored 0..100 by
//! weighted groups, as Kayenta's NetflixACAJudge does. Two deliberate differences: missing
//! data gives `NoData` (inconclusive), never a failing score of 0, and two constant samples
//! are compared as they are instead of with added noise, so a judgement is reproducible.

pub mod burn;
mod classify;
mod hl;
mod mwu;
mod rank;
mod score;

#[cfg(test)]
mod judge_tests;
#[cfg(test)]
mod oracle_tests;
#[cfg(test)]
mod samples;

use std::collections::BTreeMap;

pub use classify::{Class, Comparison, classify};
pub use hl::{Shift, shift};
pub use mwu::{MannWhitney, mann_whitney};
pub use score::{GroupScore, Judgement, Verdict, score};

/// How far beyond a quarter of the estimated shift the interval must lie to count.
pub const TOLERANCE: f64 = 0.25;
/// The most recent values of a sample that are compared (10⁶ differences at most).
pub const MAX_SAMPLES: usize = 1000;

pub use crate::api::compare::{MetricDirection as Direction, NanStrategy};

/// How one metric is judged.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub name: String,
    pub group: String,
    pub direction: Direction,
    /// A critical metric that is not Pass decides the judgement alone.
    pub critical: bool,
    /// The mean ratio canary/baseline at or above which an increase counts (≥ 1).
    pub allowed_increase: f64,
    /// The mean ratio at or below which a decrease counts (0..1).
    pub allowed_decrease: f64,
    pub nan_strategy: NanStrategy,
    /// Fewer samples on either side than this is NoData.
    pub min_samples: usize,
}

/// The scores at which a judgement passes, and below which it fails.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    pub pass: f64,
    pub marginal: f64,
}

/// One metric with its canary and baseline samples, oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampled {
    pub metric: Metric,
    pub canary: Vec<f64>,
    pub baseline: Vec<f64>,
}

/// The judgement of every metric's samples, scored by group `weights` (groups without one
/// share what is left of 100).
pub fn judge(
    sampled: &[Sampled],
    weights: &BTreeMap<String, f64>,
    thresholds: Thresholds,
) -> Judgement {
    let comparisons = sampled
        .iter()
        .map(|s| {
            let c = classify(&s.metric, &s.canary, &s.baseline);
            (c, s.metric.group.clone(), s.metric.critical)
        })
        .collect();
    score(comparisons, weights, thresholds)
}

/// The defaults a metric's unset fields take.
pub const DEFAULT_MIN_SAMPLES: usize = 10;
pub const DEFAULT_THRESHOLDS: Thresholds = Thresholds {
    pass: 95.0,
    marginal: 75.0,
};

impl Metric {
    /// The metric as the gate's spec sets it, with the defaults for what it leaves out.
    pub fn from_spec(spec: &crate::api::compare::CompareMetric) -> Self {
        Metric {
            name: spec.name.clone(),
            group: spec.group.clone().unwrap_or_else(|| spec.name.clone()),
            direction: spec.direction,
            critical: spec.critical,
            allowed_increase: spec.allowed_increase.unwrap_or(1.0),
            allowed_decrease: spec.allowed_decrease.unwrap_or(1.0),
            nan_strategy: spec.nan_strategy,
            min_samples: spec.min_samples.map_or(DEFAULT_MIN_SAMPLES, |n| {
                n.clamp(1, MAX_SAMPLES as i32) as usize
            }),
        }
    }
}

impl Judgement {
    /// What the Release's status records of it.
    pub fn status(&self) -> crate::api::compare::Comparison {
        use crate::api::compare::{ComparisonVerdict, MetricClass, MetricComparison};
        let verdict = match self.verdict {
            Verdict::Pass => ComparisonVerdict::Pass,
            Verdict::Marginal => ComparisonVerdict::Marginal,
            Verdict::Fail => ComparisonVerdict::Fail,
            Verdict::NoData => ComparisonVerdict::NoData,
        };
        let metrics = self.comparisons.iter().map(|c| MetricComparison {
            metric: c.metric.clone(),
            class: match c.class {
                Class::Pass => MetricClass::Pass,
                Class::High => MetricClass::High,
                Class::Low => MetricClass::Low,
                Class::NoData => MetricClass::NoData,
            },
            canary_samples: c.canary_samples as i32,
            baseline_samples: c.baseline_samples as i32,
            shift: c.shift.map(|s| s.estimate),
            lower: c.shift.map(|s| s.lower),
            upper: c.shift.map(|s| s.upper),
            p_value: c.test.map(|t| t.p_value),
            ratio: c.ratio,
        });
        crate::api::compare::Comparison {
            score: self.score,
            verdict,
            metrics: metrics.collect(),
        }
    }
}
