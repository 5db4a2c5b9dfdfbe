use std::collections::BTreeMap;

use proptest::prelude::*;

use super::samples::{Rng, Shape};
use super::*;

fn latency() -> Metric {
    Metric {
        name: "p99".into(),
        group: "latency".into(),
        direction: Direction::Increase,
        critical: false,
        allowed_increase: 1.1,
        allowed_decrease: 1.0,
        nan_strategy: NanStrategy::Remove,
        min_samples: 10,
    }
}

fn errors() -> Metric {
    Metric {
        name: "errors".into(),
        group: "errors".into(),
        ..latency()
    }
}

const KAYENTA: Thresholds = Thresholds {
    pass: 95.0,
    marginal: 75.0,
};

fn sampled(metric: Metric, canary: Shape, baseline: Shape, n: usize, seed: u64) -> Sampled {
    let mut rng = Rng::new(seed);
    Sampled {
        metric,
        canary: canary.draw(&mut rng, n),
        baseline: baseline.draw(&mut rng, n),
    }
}

fn judged(sampled: &[Sampled]) -> Judgement {
    judge(sampled, &BTreeMap::new(), KAYENTA)
}

#[test]
fn a_canary_whose_latency_doubled_is_high_and_fails_although_it_is_under_any_sane_threshold() {
    let slow = sampled(
        latency(),
        Shape::normal(0.080, 0.005),
        Shape::normal(0.040, 0.005),
        30,
        1,
    );
    let judgement = judged(&[slow]);
    let comparison = &judgement.comparisons[0];
    assert_eq!(comparison.class, Class::High, "{}", comparison.reason);
    let shift = comparison.shift.expect("a shift");
    assert!(shift.lower > 0.03 && shift.upper < 0.05, "{shift:?}");
    assert_eq!((judgement.score, judgement.verdict), (0.0, Verdict::Fail));
}

#[test]
fn two_samples_of_one_version_pass() {
    let same = sampled(
        latency(),
        Shape::normal(0.040, 0.005),
        Shape::normal(0.040, 0.005),
        30,
        2,
    );
    let judgement = judged(&[same]);
    assert_eq!(
        judgement.verdict,
        Verdict::Pass,
        "{:?}",
        judgement.comparisons
    );
    assert_eq!(judgement.score, 100.0);
}

#[test]
fn a_real_increase_smaller_than_the_allowed_one_passes() {
    // 5% slower, clearly measured, but 10% is allowed.
    let slower = sampled(
        latency(),
        Shape::normal(0.042, 0.0005),
        Shape::normal(0.040, 0.0005),
        50,
        3,
    );
    let comparison = classify(&slower.metric, &slower.canary, &slower.baseline);
    assert!(comparison.shift.unwrap().lower > 0.0);
    assert_eq!(comparison.class, Class::Pass, "{}", comparison.reason);
}

#[test]
fn a_decrease_of_a_metric_that_only_gets_worse_upwards_passes_and_one_of_either_is_low() {
    let faster = sampled(
        latency(),
        Shape::normal(0.020, 0.002),
        Shape::normal(0.040, 0.002),
        30,
        4,
    );
    assert_eq!(
        classify(&faster.metric, &faster.canary, &faster.baseline).class,
        Class::Pass
    );
    let either = Metric {
        direction: Direction::Either,
        ..latency()
    };
    assert_eq!(
        classify(&either, &faster.canary, &faster.baseline).class,
        Class::Low
    );
}

#[test]
fn errors_where_the_baseline_has_none_are_high_whatever_the_allowed_ratio() {
    let metric = Metric {
        allowed_increase: 5.0,
        ..errors()
    };
    let canary = [
        0.0, 0.02, 0.03, 0.01, 0.04, 0.02, 0.03, 0.05, 0.02, 0.03, 0.04, 0.02,
    ];
    let comparison = classify(&metric, &canary, &[0.0; 12]);
    assert_eq!(comparison.ratio, None);
    assert_eq!(comparison.class, Class::High, "{}", comparison.reason);
}

#[test]
fn a_critical_metric_that_is_high_fails_the_judgement_alone() {
    let critical = Metric {
        critical: true,
        ..errors()
    };
    let metrics = [
        sampled(
            critical,
            Shape::normal(0.05, 0.005),
            Shape::normal(0.01, 0.005),
            20,
            5,
        ),
        sampled(
            latency(),
            Shape::normal(0.04, 0.005),
            Shape::normal(0.04, 0.005),
            20,
            6,
        ),
    ];
    let judgement = judged(&metrics);
    assert_eq!((judgement.score, judgement.verdict), (0.0, Verdict::Fail));
    assert!(judgement.reason.contains("errors"), "{}", judgement.reason);
}

#[test]
fn half_the_metrics_without_data_is_inconclusive_never_a_failing_zero() {
    let mut missing = sampled(
        errors(),
        Shape::normal(1.0, 0.1),
        Shape::normal(1.0, 0.1),
        20,
        7,
    );
    missing.canary = vec![f64::NAN; 20];
    let fine = sampled(
        latency(),
        Shape::normal(1.0, 0.1),
        Shape::normal(1.0, 0.1),
        20,
        8,
    );
    let judgement = judged(&[missing.clone(), fine]);
    assert_eq!(judgement.comparisons[0].class, Class::NoData);
    assert_eq!(judgement.verdict, Verdict::NoData, "{}", judgement.reason);
    // Counted as zeros, the same values are data.
    missing.metric.nan_strategy = NanStrategy::Replace;
    let replaced = classify(&missing.metric, &missing.canary, &missing.baseline);
    assert_eq!(replaced.canary_samples, 20);
}

#[test]
fn a_canary_whose_p99_is_above_the_largest_bucket_is_high_not_missing() {
    // histogram_quantile answers +Inf then: the worst a latency can be, not a missing step.
    let mut slow = sampled(
        latency(),
        Shape::normal(0.04, 0.005),
        Shape::normal(0.04, 0.005),
        20,
        20,
    );
    slow.canary
        .iter_mut()
        .skip(4)
        .for_each(|v| *v = f64::INFINITY);
    let comparison = classify(&slow.metric, &slow.canary, &slow.baseline);
    assert_eq!(comparison.canary_samples, 20);
    assert_eq!(comparison.class, Class::High, "{}", comparison.reason);
    let counted_as_zero = Metric {
        nan_strategy: NanStrategy::Replace,
        ..latency()
    };
    let comparison = classify(&counted_as_zero, &slow.canary, &slow.baseline);
    assert_eq!(comparison.class, Class::High, "{}", comparison.reason);
}

#[test]
fn one_infinite_step_of_the_primary_does_not_hide_a_canary_twice_as_slow() {
    let mut baseline = vec![0.04; 15];
    baseline.push(f64::INFINITY);
    let comparison = classify(&latency(), &[0.08; 16], &baseline);
    assert!(comparison.ratio.unwrap() > 1.5, "{}", comparison.reason);
    assert_eq!(comparison.class, Class::High, "{}", comparison.reason);
}

#[test]
fn an_absent_series_is_no_data_even_where_missing_steps_count_as_zero() {
    let errors = Metric {
        nan_strategy: NanStrategy::Replace,
        ..errors()
    };
    let comparison = classify(&errors, &[], &[0.0; 20]);
    assert_eq!(comparison.class, Class::NoData);
    assert_eq!(classify(&errors, &[], &[]).class, Class::NoData);
    // Inside a series that exists, a missing step is a 0.
    let mut gappy = vec![0.01; 20];
    gappy[3] = f64::NAN;
    assert_eq!(classify(&errors, &gappy, &[0.01; 20]).canary_samples, 20);
}

#[test]
fn one_metric_without_data_keeps_a_passing_score_from_passing() {
    let ok = |name: &str, seed| {
        let metric = Metric {
            name: name.into(),
            group: name.into(),
            ..errors()
        };
        sampled(
            metric,
            Shape::normal(1.0, 0.1),
            Shape::normal(1.0, 0.1),
            20,
            seed,
        )
    };
    let mut silent = ok("latency", 21);
    silent.canary.clear();
    let metrics = [ok("errors", 22), ok("saturation", 23), silent];
    let judgement = judged(&metrics);
    assert_eq!(
        judgement.score, 100.0,
        "the unjudged group scores as Kayenta scores it"
    );
    assert_eq!(judgement.verdict, Verdict::NoData, "{}", judgement.reason);
    assert!(
        judgement.reason.contains("latency has no data"),
        "{}",
        judgement.reason
    );
}

#[test]
fn evidence_of_harm_fails_even_while_other_metrics_have_no_data() {
    let critical = |name: &str| Metric {
        name: name.into(),
        group: name.into(),
        critical: true,
        ..errors()
    };
    let mut silent = sampled(
        critical("saturation"),
        Shape::normal(1.0, 0.1),
        Shape::normal(1.0, 0.1),
        20,
        30,
    );
    silent.canary.clear();
    let harmful = sampled(
        critical("errors"),
        Shape::normal(0.05, 0.005),
        Shape::normal(0.01, 0.005),
        20,
        31,
    );
    // The silent critical metric comes first: the harmful one still decides.
    let judgement = judged(&[silent.clone(), harmful]);
    assert_eq!(
        (judgement.score, judgement.verdict),
        (0.0, Verdict::Fail),
        "{}",
        judgement.reason
    );
    let slow = sampled(
        latency(),
        Shape::normal(0.08, 0.005),
        Shape::normal(0.04, 0.005),
        20,
        32,
    );
    let mut quiet = silent;
    quiet.metric.critical = false;
    let judgement = judged(&[quiet, slow]);
    assert_eq!(
        judgement.verdict,
        Verdict::Fail,
        "a failing score is not waited on: {}",
        judgement.reason
    );
}

#[test]
fn a_critical_metric_without_data_is_inconclusive() {
    let critical = Metric {
        critical: true,
        ..errors()
    };
    let few = sampled(
        critical,
        Shape::normal(1.0, 0.1),
        Shape::normal(1.0, 0.1),
        5,
        9,
    );
    let judgement = judged(&[few]);
    assert_eq!(judgement.verdict, Verdict::NoData, "{}", judgement.reason);
}

#[test]
fn groups_without_a_weight_share_what_the_weights_leave_and_the_score_says_marginal() {
    let slow = sampled(
        latency(),
        Shape::normal(0.08, 0.005),
        Shape::normal(0.04, 0.005),
        20,
        10,
    );
    let ok = |name: &str, group: &str, seed| {
        let metric = Metric {
            name: name.into(),
            group: group.into(),
            ..errors()
        };
        sampled(
            metric,
            Shape::normal(1.0, 0.1),
            Shape::normal(1.0, 0.1),
            20,
            seed,
        )
    };
    let metrics = [
        slow,
        ok("errors", "errors", 11),
        ok("saturation", "saturation", 12),
    ];
    // latency 20 (fails: 0), errors and saturation share 80 (both pass: 100).
    let weights = BTreeMap::from([("latency".to_string(), 20.0)]);
    let judgement = judge(&metrics, &weights, KAYENTA);
    assert_eq!(judgement.score, 80.0);
    assert_eq!(judgement.verdict, Verdict::Marginal);
    let groups: Vec<(&str, f64)> = judgement
        .groups
        .iter()
        .map(|g| (g.group.as_str(), g.score))
        .collect();
    assert_eq!(
        groups,
        vec![("errors", 100.0), ("latency", 0.0), ("saturation", 100.0)]
    );
}

#[test]
fn only_the_most_recent_thousand_values_of_a_sample_are_compared() {
    let mut long = sampled(
        latency(),
        Shape::normal(1.0, 0.1),
        Shape::normal(1.0, 0.1),
        3000,
        13,
    );
    // The oldest values are far off; they are not the canary as it runs now.
    long.canary[..2000].iter_mut().for_each(|v| *v += 100.0);
    let comparison = classify(&long.metric, &long.canary, &long.baseline);
    assert_eq!(
        (comparison.canary_samples, comparison.baseline_samples),
        (MAX_SAMPLES, MAX_SAMPLES)
    );
    assert_eq!(comparison.class, Class::Pass, "{}", comparison.reason);
}

#[test]
fn identical_versions_fail_no_more_often_than_the_interval_allows() {
    // 2,000 judgements of two samples of one distribution, 30 a side, either way counting,
    // with no effect-size floor: only the 98% interval and the tolerance decide, so at most
    // about 2% may fail. With the default floor of 1.1 none may.
    let either = Metric {
        direction: Direction::Either,
        allowed_increase: 1.0,
        allowed_decrease: 1.0,
        ..latency()
    };
    let (mut bare, mut floored) = (0, 0);
    for seed in 0..2000 {
        let same = sampled(
            either.clone(),
            Shape::normal(1.0, 0.1),
            Shape::normal(1.0, 0.1),
            30,
            100 + seed,
        );
        bare += usize::from(judged(std::slice::from_ref(&same)).verdict != Verdict::Pass);
        let with_floor = Sampled {
            metric: latency(),
            ..same
        };
        floored += usize::from(judged(&[with_floor]).verdict != Verdict::Pass);
    }
    println!(
        "identical versions: {bare} of 2000 judgements failed on the interval alone, {floored} with the 1.1 floor"
    );
    assert!(bare <= 50, "{bare} of 2000");
    assert!(
        bare > 0,
        "the interval never excluded 0: the test would not see a too-wide one"
    );
    assert_eq!(floored, 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn the_p_value_is_a_probability_and_the_same_whichever_sample_is_called_the_canary(
        seed in 0u64..1_000_000, n1 in 1usize..40, n2 in 1usize..40, round in 0u8..3,
    ) {
        let shape = Shape { round_to: f64::from(round), ..Shape::normal(5.0, 1.0) };
        let mut rng = Rng::new(seed);
        let (x, y) = (shape.draw(&mut rng, n1), shape.draw(&mut rng, n2));
        let (a, b) = (mann_whitney(&x, &y), mann_whitney(&y, &x));
        prop_assert!((0.0..=1.0).contains(&a.p_value));
        prop_assert!((a.p_value - b.p_value).abs() < 1e-12);
        prop_assert_eq!(a.u + b.u, (n1 * n2) as f64);
    }

    #[test]
    fn the_interval_holds_the_estimate_and_moves_with_the_canary(
        seed in 0u64..1_000_000, n1 in 2usize..60, n2 in 2usize..60, by in -8i32..8,
    ) {
        let mut rng = Rng::new(seed);
        let shape = Shape::normal(5.0, 1.0);
        let (x, y) = (shape.draw(&mut rng, n1), shape.draw(&mut rng, n2));
        let s = shift(&x, &y);
        prop_assert!(s.lower <= s.estimate && s.estimate <= s.upper, "{:?}", s);
        // Moving the canary by a power of two moves every difference exactly as much.
        let delta = f64::from(by) * 0.25;
        let moved: Vec<f64> = x.iter().map(|v| v + delta).collect();
        let t = shift(&moved, &y);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        prop_assert!(close(t.estimate, s.estimate + delta), "{:?} {:?}", s, t);
        prop_assert!(close(t.lower, s.lower + delta) && close(t.upper, s.upper + delta), "{:?} {:?}", s, t);
    }
}
