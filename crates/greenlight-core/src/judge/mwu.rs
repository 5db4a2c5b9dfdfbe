//! The Mann-Whitney U test, two-sided, computed as SciPy's `mannwhitneyu` does by default:
//! the exact null distribution when a sample has at most 8 values and nothing is tied, and
//! otherwise the normal approximation with the tie correction and a continuity correction.

use super::rank::{ranks, tie_term};

/// The test's statistic and p-value for a canary sample against a baseline sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MannWhitney {
    /// U of the canary sample: how many (canary, baseline) pairs the canary wins, ties half.
    pub u: f64,
    /// The two-sided p-value.
    pub p_value: f64,
    /// Whether the p-value is from the exact distribution.
    pub exact: bool,
}

/// The largest sample the exact distribution is used for (SciPy's rule).
const EXACT_UP_TO: usize = 8;

/// The test of `canary` against `baseline`; both non-empty and finite.
pub fn mann_whitney(canary: &[f64], baseline: &[f64]) -> MannWhitney {
    let (n1, n2) = (canary.len(), baseline.len());
    let all: Vec<f64> = canary.iter().chain(baseline).copied().collect();
    let (ranks, ties) = ranks(&all);
    let r1: f64 = ranks[..n1].iter().sum();
    let u1 = r1 - (n1 * (n1 + 1)) as f64 / 2.0;
    let pairs = (n1 * n2) as f64;
    let u = u1.max(pairs - u1);
    let exact = (n1 <= EXACT_UP_TO || n2 <= EXACT_UP_TO) && ties.is_empty();
    let p = match exact {
        true => 2.0 * exact_upper_tail(u as u64, n1, n2),
        false => 2.0 * normal_upper_tail(u, n1, n2, &ties),
    };
    MannWhitney {
        u: u1,
        p_value: p.clamp(0.0, 1.0),
        exact,
    }
}

/// P(U ≥ u) under the null, with the tie-corrected normal approximation and a continuity
/// correction of one half. Everything tied gives 1.
fn normal_upper_tail(u: f64, n1: usize, n2: usize, ties: &[usize]) -> f64 {
    let (a, b, n) = (n1 as f64, n2 as f64, (n1 + n2) as f64);
    let variance = a * b / 12.0 * ((n + 1.0) - tie_term(ties) / (n * (n - 1.0)));
    if variance <= 0.0 {
        return 1.0;
    }
    let z = (u - a * b / 2.0 - 0.5) / variance.sqrt();
    normal_tail(z)
}

/// P(Z ≥ z) for a standard normal Z, as ½·erfc(z/√2): accurate far into the tail, where
/// 1 − Φ(z) would round to 0.
pub(crate) fn normal_tail(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// P(U ≥ u) under the null, exactly, for samples of `n1` and `n2` without ties: by symmetry
/// the lower tail up to n1·n2 − u, counted from the Gaussian binomial coefficient.
fn exact_upper_tail(u: u64, n1: usize, n2: usize) -> f64 {
    let counts = u_counts(n1.min(n2), n1.max(n2));
    let total: i128 = counts.iter().sum();
    let complement = (n1 * n2) as u64 - u.min((n1 * n2) as u64);
    let tail: i128 = counts.iter().take(complement as usize + 1).sum();
    tail as f64 / total as f64
}

/// How many arrangements of `k` canary and `m` baseline values give each U = 0..=k·m: the
/// coefficients of the Gaussian binomial [m+k choose k], built one factor
/// (1 − q^(m+i)) / (1 − q^i) at a time. Exact in integers; with k ≤ 8 and m ≤ 1000 the
/// largest count is below 2^70.
fn u_counts(k: usize, m: usize) -> Vec<i128> {
    let mut poly = vec![1i128];
    for i in 1..=k {
        let grown = poly.len() + m;
        poly.resize(grown, 0);
        for d in (m + i..grown).rev() {
            poly[d] -= poly[d - m - i];
        }
        for d in i..grown {
            poly[d] += poly[d - i];
        }
        poly.truncate(i * m + 1);
    }
    poly
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exact_counts_are_the_binomial_coefficients_split_by_u() {
        let counts = u_counts(2, 3);
        assert_eq!(counts, vec![1, 1, 2, 2, 2, 1, 1]);
        let total: i128 = u_counts(8, 1000).iter().sum();
        // C(1008, 8), exactly.
        assert_eq!(total, 25_708_099_169_553_626_826);
    }

    #[test]
    fn four_against_four_apart_is_as_significant_as_four_values_can_be() {
        // R: wilcox.test(c(10,20,30,40), c(1,2,3,4))$p.value == 2/70.
        let test = mann_whitney(&[10.0, 20.0, 30.0, 40.0], &[1.0, 2.0, 3.0, 4.0]);
        assert!(test.exact);
        assert_eq!(test.u, 16.0);
        assert!((test.p_value - 2.0 / 70.0).abs() < 1e-15);
    }
}
