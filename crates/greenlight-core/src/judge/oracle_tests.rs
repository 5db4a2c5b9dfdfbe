//! The judge against SciPy: 1,280 seeded cases (tiny, tied, constant, identical, with
//! outliers, at scales 1e-9..1e9, up to 500 a side), their samples remade here exactly as
//! `hack/oracle/mwu.py` made them, and what SciPy 1.17.1 and a Brent solver found for each.

use serde::Deserialize;

use super::samples::{Rng, Shape};
use super::*;

#[derive(Deserialize)]
struct Oracle {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    seed: u64,
    n1: usize,
    n2: usize,
    canary: Shape,
    baseline: Shape,
    direction: String,
    allowed_increase: f64,
    allowed_decrease: f64,
    identical: bool,
    expected: Expected,
}

#[derive(Deserialize)]
struct Expected {
    u: f64,
    p: f64,
    /// The method SciPy chose, when its two methods' p-values differ.
    exact: Option<bool>,
    estimate: f64,
    lower: f64,
    upper: f64,
    class: String,
}

impl Case {
    fn samples(&self) -> (Vec<f64>, Vec<f64>) {
        let mut rng = Rng::new(self.seed);
        let x = self.canary.draw(&mut rng, self.n1);
        let y = match self.identical {
            true => x.clone(),
            false => self.baseline.draw(&mut rng, self.n2),
        };
        (x, y)
    }

    fn metric(&self) -> Metric {
        let direction = match self.direction.as_str() {
            "Increase" => Direction::Increase,
            "Decrease" => Direction::Decrease,
            _ => Direction::Either,
        };
        Metric {
            name: format!("case-{}", self.seed),
            group: "all".into(),
            direction,
            critical: false,
            allowed_increase: self.allowed_increase,
            allowed_decrease: self.allowed_decrease,
            nan_strategy: NanStrategy::Remove,
            min_samples: 1,
        }
    }
}

fn oracle() -> Oracle {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/judge/oracle.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("the oracle's file")).expect("json")
}

/// Whether two interval ends agree. The statistic cannot tell shifts apart that are below
/// the resolution of the values themselves (x − μ rounds to x), so Brent's solver may stop
/// anywhere within that of the jump.
fn same_end(ours: f64, theirs: f64, x: &[f64], y: &[f64]) -> bool {
    let largest = x.iter().chain(y).fold(0f64, |m, v| m.max(v.abs()));
    (ours - theirs).abs() <= 1e-12 * largest.max(ours.abs()) + 1e-300
}

#[test]
fn the_test_the_shift_and_the_class_agree_with_scipy_on_every_seeded_case() {
    let oracle = oracle();
    assert!(oracle.cases.len() >= 1200, "{} cases", oracle.cases.len());
    let (mut worst_p, mut exact_cases, mut ends_apart) = (0f64, 0, 0);
    let (mut classes_apart, mut on_the_bound) = (0, 0);
    for case in &oracle.cases {
        let (x, y) = case.samples();
        let want = &case.expected;
        let test = mann_whitney(&x, &y);
        assert_eq!(test.u, want.u, "U of case {}", case.seed);
        if let Some(exact) = want.exact {
            assert_eq!(test.exact, exact, "method of case {}", case.seed);
        }
        if (test.p_value - want.p).abs() > 1e-12 {
            eprintln!(
                "case {}: p {} here, {} by SciPy ({:?}, n {} and {})",
                case.seed,
                test.p_value,
                want.p,
                test,
                x.len(),
                y.len()
            );
        }
        worst_p = worst_p.max((test.p_value - want.p).abs());
        exact_cases += usize::from(test.exact);
        let shift = shift(&x, &y);
        let estimate_apart = (shift.estimate - want.estimate).abs();
        assert!(
            estimate_apart <= 1e-12 * want.estimate.abs().max(1e-300),
            "estimate of case {}: {} here, {} by numpy",
            case.seed,
            shift.estimate,
            want.estimate
        );
        if !same_end(shift.lower, want.lower, &x, &y) || !same_end(shift.upper, want.upper, &x, &y)
        {
            ends_apart += 1;
            eprintln!(
                "case {}: interval {:?} here, {:?} by Brent",
                case.seed,
                (shift.lower, shift.upper),
                (want.lower, want.upper)
            );
        }
        let class = format!("{:?}", classify(&case.metric(), &x, &y).class);
        if class != want.class {
            // An end that both solvers put on the tolerance bound itself is a coin toss
            // between them, not a disagreement: counted, and shown.
            let bound = TOLERANCE * shift.estimate.abs();
            let on_bound =
                same_end(want.lower, bound, &x, &y) || same_end(want.upper, -bound, &x, &y);
            eprintln!(
                "case {}: {class} here, {} by the port ({shift:?}; on the bound: {on_bound})",
                case.seed, want.class
            );
            match on_bound {
                true => on_the_bound += 1,
                false => classes_apart += 1,
            }
        }
    }
    println!(
        "judge oracle: {} cases ({exact_cases} exact), largest |Δp| {worst_p:.3e}, interval ends apart {ends_apart}, classes apart {classes_apart}, classes decided on the bound {on_the_bound}",
        oracle.cases.len()
    );
    assert!(worst_p <= 1e-12, "largest |Δp| {worst_p:e}");
    assert_eq!(ends_apart, 0);
    assert_eq!(classes_apart, 0);
}
