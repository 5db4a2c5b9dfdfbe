//! The Hodges-Lehmann shift of the canary from the baseline and its confidence interval.
//!
//! The estimate is the median of every canary − baseline difference. The interval is the one
//! Kayenta (after R's `wilcox.test`) computes: the shifts μ at which the tie-corrected,
//! continuity-corrected rank-sum statistic of (canary − μ) against the baseline crosses the
//! normal quantile. That statistic only changes where canary − μ meets a baseline value, at one
//! of the differences, so the crossing is found by bisecting the sorted differences, the point
//! Kayenta's Brent solver converges to.

use super::rank::{ranks, tie_term};

/// A shift estimate with its confidence interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shift {
    pub estimate: f64,
    pub lower: f64,
    pub upper: f64,
}

/// z with P(Z ≥ z) = 1%: the two-sided 98% interval's quantile.
pub(crate) const Z_98: f64 = 2.326_347_874_040_840_8;

/// The shift of `canary` from `baseline` with its 98% interval; both non-empty and finite.
pub fn shift(canary: &[f64], baseline: &[f64]) -> Shift {
    let mut differences: Vec<f64> = canary
        .iter()
        .flat_map(|x| baseline.iter().map(move |y| x - y))
        .collect();
    differences.sort_by(f64::total_cmp);
    let estimate = median(&differences);
    differences.dedup();
    let quantile = Z_98;
    let statistic = |mu: f64| standardized(canary, baseline, mu);
    Shift {
        estimate,
        lower: crossing(&differences, quantile, &statistic),
        upper: crossing(&differences, -quantile, &statistic),
    }
}

fn median(sorted: &[f64]) -> f64 {
    let mid = sorted.len() / 2;
    match sorted.len() % 2 {
        1 => sorted[mid],
        _ => (sorted[mid - 1] + sorted[mid]) / 2.0,
    }
}

/// The rank-sum statistic of (canary − mu) against the baseline, centred, continuity
/// corrected and divided by its tie-corrected deviation; it falls as mu grows. Everything
/// tied gives 0.
fn standardized(canary: &[f64], baseline: &[f64], mu: f64) -> f64 {
    let (n1, n2) = (canary.len() as f64, baseline.len() as f64);
    let shifted: Vec<f64> = canary
        .iter()
        .map(|x| x - mu)
        .chain(baseline.iter().copied())
        .collect();
    let (ranks, ties) = ranks(&shifted);
    let sum: f64 = ranks[..canary.len()].iter().sum();
    let dz = sum - n1 * (n1 + 1.0) / 2.0 - n1 * n2 / 2.0;
    let correction = if dz == 0.0 { 0.0 } else { dz.signum() * 0.5 };
    let n = n1 + n2;
    let variance = n1 * n2 / 12.0 * ((n + 1.0) - tie_term(&ties) / (n * (n - 1.0)));
    match variance > 0.0 {
        true => (dz - correction) / variance.sqrt(),
        false => 0.0,
    }
}

/// The difference at which `statistic` falls through `level`: the smallest difference if it
/// is already at or below it there, the largest if it is still at or above it there, and
/// otherwise the difference between the last open stretch above and the first below.
fn crossing(differences: &[f64], level: f64, statistic: &dyn Fn(f64) -> f64) -> f64 {
    let (first, last) = (differences[0], differences[differences.len() - 1]);
    if statistic(first) - level <= 0.0 {
        return first;
    }
    if statistic(last) - level >= 0.0 {
        return last;
    }
    // Stretch k is the open interval (d_k, d_k+1); the statistic is constant on it.
    let stretches = differences.len() - 1;
    let below = |k: usize| statistic((differences[k] + differences[k + 1]) / 2.0) - level <= 0.0;
    let (mut lo, mut hi) = (0, stretches);
    while lo < hi {
        let mid = (lo + hi) / 2;
        match below(mid) {
            true => hi = mid,
            false => lo = mid + 1,
        }
    }
    differences[lo.min(differences.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::super::mwu::normal_tail;
    use super::*;

    #[test]
    fn the_quantile_leaves_one_percent_in_each_tail() {
        assert!((normal_tail(Z_98) - 0.01).abs() < 1e-17);
    }

    #[test]
    fn kayentas_own_example_has_its_estimate() {
        let shift = shift(&[10.0, 20.0, 30.0, 40.0], &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(shift.estimate, 22.5);
        // Four against four cannot exclude much at 98%: the interval is the full range.
        assert_eq!((shift.lower, shift.upper), (6.0, 39.0));
    }

    #[test]
    fn two_constant_samples_are_shifted_by_their_difference_exactly() {
        let shift = shift(&[5.0; 12], &[3.0; 20]);
        assert_eq!((shift.estimate, shift.lower, shift.upper), (2.0, 2.0, 2.0));
    }
}
