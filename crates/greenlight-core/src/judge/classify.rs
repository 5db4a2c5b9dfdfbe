//! One metric's classification: the canary's sample against the baseline's, High, Low or
//! Pass as Kayenta's Mann-Whitney classifier decides, or NoData when a side has too little.

use super::hl::{Shift, shift};
use super::mwu::{MannWhitney, mann_whitney};
use super::{Direction, MAX_SAMPLES, Metric, NanStrategy, TOLERANCE};

/// What the comparison of one metric found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Pass,
    /// The canary is higher, beyond noise and the allowed increase.
    High,
    /// The canary is lower, beyond noise and the allowed decrease.
    Low,
    /// A side had fewer samples than the metric's `min_samples`.
    NoData,
}

/// One metric's comparison, with the figures that decided it.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub metric: String,
    pub class: Class,
    pub canary_samples: usize,
    pub baseline_samples: usize,
    /// The test, when both samples were compared.
    pub test: Option<MannWhitney>,
    /// The canary's shift from the baseline, when both samples were compared.
    pub shift: Option<Shift>,
    /// Mean canary / mean baseline; None when the baseline's mean is 0.
    pub ratio: Option<f64>,
    /// Why, in words.
    pub reason: String,
}

/// The comparison of `metric`'s canary and baseline samples (oldest first). An empty sample
/// is a series that was absent: no data, whatever `nanStrategy` says.
pub fn classify(metric: &Metric, canary: &[f64], baseline: &[f64]) -> Comparison {
    let (mut x, mut y) = (cleaned(metric, canary), cleaned(metric, baseline));
    tame_infinities(&mut x, &mut y);
    let mut comparison = Comparison {
        metric: metric.name.clone(),
        class: Class::Pass,
        canary_samples: x.len(),
        baseline_samples: y.len(),
        test: None,
        shift: None,
        ratio: None,
        reason: String::new(),
    };
    if x.len() < metric.min_samples || y.len() < metric.min_samples {
        comparison.class = Class::NoData;
        comparison.reason = format!(
            "{} canary and {} baseline samples, fewer than the {} needed",
            x.len(),
            y.len(),
            metric.min_samples
        );
        return comparison;
    }
    if same_values(&x, &y) {
        comparison.reason = "the canary's and the baseline's samples are the same".into();
        return comparison;
    }
    compare(metric, &x, &y, comparison)
}

/// The test, the shift and the effect size, and the class they give.
fn compare(metric: &Metric, x: &[f64], y: &[f64], mut comparison: Comparison) -> Comparison {
    let test = mann_whitney(x, y);
    let shift = shift(x, y);
    let ratio = Some(mean(y)).filter(|m| *m != 0.0).map(|m| mean(x) / m);
    let bound = TOLERANCE * shift.estimate.abs();
    // Without a baseline mean the effect size is undefined, and the interval alone decides:
    // errors where the baseline has none are an increase.
    let increased = ratio.is_none_or(|r| r >= metric.allowed_increase);
    let decreased = ratio.is_none_or(|r| r <= metric.allowed_decrease);
    let (up, down) = match metric.direction {
        Direction::Increase => (true, false),
        Direction::Decrease => (false, true),
        Direction::Either => (true, true),
    };
    let high = up && shift.lower > bound && increased;
    let low = down && shift.upper < -bound && decreased;
    comparison.class = match (high, low) {
        (true, _) => Class::High,
        (_, true) => Class::Low,
        _ => Class::Pass,
    };
    comparison.reason = format!(
        "shift {:.4} (98% interval {:.4} to {:.4}), mean ratio {}, p = {:.4}",
        shift.estimate,
        shift.lower,
        shift.upper,
        ratio.map_or("undefined".to_string(), |r| format!("{r:.3}")),
        test.p_value
    );
    (comparison.test, comparison.shift, comparison.ratio) = (Some(test), Some(shift), ratio);
    comparison
}

/// The sample's last `MAX_SAMPLES` values, with steps that had no number (NaN) removed or
/// counted as 0 as the metric says. Infinities are values: `histogram_quantile` answers +Inf
/// when the quantile is above the largest bucket, the worst a latency can be.
fn cleaned(metric: &Metric, sample: &[f64]) -> Vec<f64> {
    let recent = &sample[sample.len().saturating_sub(MAX_SAMPLES)..];
    recent
        .iter()
        .filter_map(|v| match (v.is_nan(), metric.nan_strategy) {
            (false, _) => Some(*v),
            (true, NanStrategy::Remove) => None,
            (true, NanStrategy::Replace) => Some(0.0),
        })
        .collect()
}

/// ±Inf made finite and beyond every finite value of either sample, so that ranks, shifts
/// and means see them as the extremes they are instead of as NaN.
fn tame_infinities(x: &mut [f64], y: &mut [f64]) {
    let finite = x.iter().chain(y.iter()).filter(|v| v.is_finite());
    let (low, high) = finite.fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
    let (low, high) = if low > high { (0.0, 0.0) } else { (low, high) };
    // Just beyond the data, on its own scale: a far-off stand-in would swamp the means.
    let reach = (high - low).abs().max(high.abs()).max(low.abs());
    let reach = if reach > 0.0 { reach } else { 1.0 };
    for v in x.iter_mut().chain(y.iter_mut()) {
        if *v == f64::INFINITY {
            *v = high + reach;
        } else if *v == f64::NEG_INFINITY {
            *v = low - reach;
        }
    }
}

/// Whether the two samples hold the same values, or only one value between them.
fn same_values(x: &[f64], y: &[f64]) -> bool {
    let sorted = |s: &[f64]| {
        let mut s = s.to_vec();
        s.sort_by(f64::total_cmp);
        s
    };
    let one_value = x.iter().chain(y).all(|v| *v == x[0]);
    one_value || sorted(x) == sorted(y)
}

fn mean(sample: &[f64]) -> f64 {
    sample.iter().sum::<f64>() / sample.len() as f64
}
