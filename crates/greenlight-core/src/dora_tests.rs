use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::*;

const T0: &str = "2026-09-01T00:00:00Z";

fn at(hours: i64) -> Timestamp {
    let t0: Timestamp = T0.parse().unwrap();
    t0.checked_add(SignedDuration::from_hours(hours)).unwrap()
}

fn stage(name: &str, requires: &[&str]) -> Stage {
    serde_json::from_value(json!({
        "apiVersion": "greenlight.dev/v1alpha1", "kind": "Stage",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"pipeline": "web", "requires": requires, "target": {"name": "web"}}
    }))
    .unwrap()
}

/// A release created at `created` hours, with these audit entries: (stage, action, hours,
/// reason, gate).
/// (stage, action, hours, reason, gate)
type Entry<'a> = (&'a str, &'a str, i64, Option<&'a str>, Option<&'a str>);

fn release(name: &str, kind: &str, created: i64, commit: Option<i64>, trail: &[Entry]) -> Release {
    let audit: Vec<_> = trail
        .iter()
        .map(|(stage, action, t, reason, gate)| {
            json!({"time": at(*t).to_string(), "stage": stage, "action": action,
                   "actor": "greenlight", "message": "", "reason": reason, "gate": gate})
        })
        .collect();
    let source = commit.map(|c| json!({"commitTime": at(c).to_string()}));
    serde_json::from_value(json!({
        "apiVersion": "greenlight.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": name, "namespace": "shop",
                     "creationTimestamp": at(created).to_string()},
        "spec": {"pipeline": "web", "version": name, "type": kind, "source": source,
                 "artifacts": [{"name": "web", "image": format!("r/web@sha256:{}", "a".repeat(64))}]},
        "status": {"audit": audit}
    }))
    .unwrap()
}

fn window() -> Window {
    Window::last(SignedDuration::from_hours(24 * 90), at(24 * 89))
}

/// dev → prod: v1 and v2 succeed, v3 is rolled back at prod by its error-rate gate, the
/// hotfix v4 restores prod.
fn history() -> (Vec<Stage>, Vec<Release>) {
    let stages = vec![stage("dev", &[]), stage("prod", &["dev"])];
    let releases = vec![
        release(
            "v1",
            "feature",
            0,
            Some(-2),
            &[
                ("dev", "Promoted", 1, None, None),
                ("prod", "Promoted", 4, None, None),
            ],
        ),
        release(
            "v2",
            "feature",
            24,
            None,
            &[
                ("dev", "Promoted", 25, None, None),
                ("prod", "Promoted", 30, None, None),
            ],
        ),
        release(
            "v3",
            "feature",
            48,
            None,
            &[
                ("dev", "Promoted", 49, None, None),
                (
                    "prod",
                    "RolledBack",
                    50,
                    Some("AnalysisFailed"),
                    Some("error-rate"),
                ),
            ],
        ),
        release(
            "v4",
            "hotfix",
            51,
            None,
            &[
                ("dev", "Promoted", 52, None, None),
                ("prod", "Promoted", 53, None, None),
            ],
        ),
    ];
    (stages, releases)
}

#[test]
fn a_pipeline_is_judged_by_its_production_stage_and_each_stage_by_its_own_rollouts() {
    let (stages, releases) = history();
    let reports = report(&stages, &releases, window());
    assert_eq!(reports.len(), 1);
    let web = &reports[0];
    assert_eq!(web.production, vec!["prod"]);
    let prod = &web.figures;
    assert_eq!((prod.deployments, prod.failures), (3, 1));
    assert_eq!(prod.change_failure_rate, Some(0.25));
    assert!((prod.deployments_per_day - 3.0 / 90.0).abs() < 1e-9);
    assert!((prod.deployments_per_week - 7.0 * 3.0 / 90.0).abs() < 1e-9);
    // Lead times: v1 6 h from its commit, v2 6 h, v4 2 h from creation.
    let lead = prod.lead_time_seconds.unwrap();
    assert_eq!((lead.p50, lead.p90), (6 * 3600, 6 * 3600));
    // Down from 50 h (v3 rolled back) to 53 h (the hotfix promoted).
    assert_eq!(prod.restores, 1);
    assert_eq!(prod.time_to_restore_seconds.unwrap().p50, 3 * 3600);
    // One of the three releases that reached prod was a hotfix.
    assert_eq!((prod.hotfixes, prod.rework_rate), (1, Some(1.0 / 3.0)));
    assert_eq!(prod.open_outages, 0);
    let cause = &prod.failure_causes[0];
    assert_eq!(
        (cause.reason.as_str(), cause.gate.as_deref(), cause.count),
        ("AnalysisFailed", Some("error-rate"), 1)
    );
    let dev = &web
        .stages
        .iter()
        .find(|s| s.stage == "dev")
        .unwrap()
        .figures;
    assert_eq!(
        (dev.deployments, dev.failures, dev.change_failure_rate),
        (4, 0, Some(0.0))
    );
    assert_eq!(dev.time_to_restore_seconds, None);
}

#[test]
fn bands_follow_the_state_of_devops_thresholds() {
    let (stages, releases) = history();
    let bands = &report(&stages, &releases, window())[0].figures.bands;
    assert_eq!(
        bands.deployment_frequency,
        Some(Band::Medium),
        "3 in 90 days is monthly"
    );
    assert_eq!(bands.lead_time, Some(Band::Elite));
    assert_eq!(bands.change_failure_rate, Some(Band::Low));
    assert_eq!(bands.time_to_restore, Some(Band::High));
    assert_eq!(frequency_band(1.0), Band::Elite);
    assert_eq!(frequency_band(1.0 / 7.0), Band::High);
    assert_eq!(failure_rate_band(0.05), Band::Elite);
    assert_eq!(failure_rate_band(0.1), Band::High);
    assert_eq!(restore_band(3599), Band::Elite);
    assert_eq!(lead_time_band(30 * 86_400), Band::Low);
}

#[test]
fn events_before_the_window_do_not_count_but_a_restore_inside_it_does() {
    let (stages, releases) = history();
    // From 51 h: v3's failure (50 h) is out, the hotfix's success (53 h) is in.
    let late = Window {
        since: at(51),
        until: at(24 * 89),
    };
    let prod = report(&stages, &releases, late)[0].figures.clone();
    assert_eq!((prod.deployments, prod.failures), (1, 0));
    assert_eq!(prod.time_to_restore_seconds.unwrap().p50, 3 * 3600);
    assert_eq!(
        (prod.hotfixes, prod.rework_rate),
        (1, Some(1.0)),
        "only v4 shipped after 51 h"
    );
}

#[test]
fn two_failures_in_a_row_are_one_outage_measured_from_the_first() {
    let stages = vec![stage("prod", &[])];
    let releases = vec![
        release(
            "a",
            "feature",
            0,
            None,
            &[(
                "prod",
                "RolledBack",
                1,
                Some("ProgressDeadlineExceeded"),
                None,
            )],
        ),
        release(
            "b",
            "feature",
            1,
            None,
            &[("prod", "AbortRequested", 2, None, None)],
        ),
        release(
            "c",
            "patch",
            2,
            None,
            &[("prod", "Promoted", 5, None, None)],
        ),
    ];
    let prod = report(&stages, &releases, window())[0].figures.clone();
    assert_eq!(prod.restores, 1);
    assert_eq!(prod.time_to_restore_seconds.unwrap().p50, 4 * 3600);
    let reasons: Vec<&str> = prod
        .failure_causes
        .iter()
        .map(|c| c.reason.as_str())
        .collect();
    assert!(reasons.contains(&"Aborted") && reasons.contains(&"ProgressDeadlineExceeded"));
}

#[test]
fn a_pipeline_with_no_rollouts_has_no_figures_and_no_bands() {
    let reports = report(&[stage("prod", &[])], &[], window());
    let f = &reports[0].figures;
    assert_eq!(
        (f.deployments, f.change_failure_rate, f.rework_rate),
        (0, None, None)
    );
    assert_eq!(f.bands, Bands::default());
}

#[test]
fn nearest_rank_quantiles_are_observed_values() {
    let s = spread(vec![10, 40, 20, 30]).unwrap();
    assert_eq!((s.p50, s.p90), (20, 40));
    assert_eq!(spread(vec![]), None);
}

#[test]
fn a_period_is_days_weeks_or_a_duration_within_a_year() {
    assert_eq!(parse_period("90d"), Ok(SignedDuration::from_hours(90 * 24)));
    assert_eq!(parse_period("2w"), Ok(SignedDuration::from_hours(14 * 24)));
    assert_eq!(parse_period("12h"), Ok(SignedDuration::from_hours(12)));
    let too_long = parse_period("367d").unwrap_err();
    assert!(
        too_long.to_string().contains("from 1m to 366d"),
        "{too_long}"
    );
    assert!(parse_period("0d").is_err());
    assert!(parse_period("99999999999999999d").is_err());
    assert_eq!(
        parse_period("soon"),
        Err(PeriodError::Malformed("soon".into()))
    );
}

#[test]
fn a_release_shipped_to_two_production_regions_is_one_deployment() {
    let stages = vec![stage("eu", &[]), stage("us", &[])];
    let releases = vec![release(
        "a",
        "feature",
        0,
        None,
        &[
            ("eu", "Promoted", 1, None, None),
            ("us", "Promoted", 2, None, None),
        ],
    )];
    let web = &report(&stages, &releases, window())[0];
    assert_eq!(web.production, vec!["eu", "us"]);
    assert_eq!(web.figures.deployments, 1);
    assert_eq!(
        web.figures.lead_time_seconds.unwrap().p50,
        3600,
        "when it first reached production"
    );
}

#[test]
fn a_failure_not_yet_restored_is_an_open_outage_not_a_restore() {
    let stages = vec![stage("prod", &[])];
    let releases = vec![
        release(
            "a",
            "feature",
            0,
            None,
            &[("prod", "Promoted", 1, None, None)],
        ),
        release(
            "b",
            "feature",
            1,
            None,
            &[("prod", "RolledBack", 2, Some("AnalysisFailed"), None)],
        ),
    ];
    let prod = report(&stages, &releases, window())[0].figures.clone();
    assert_eq!((prod.restores, prod.open_outages), (0, 1));
    assert_eq!(prod.time_to_restore_seconds, None);
}

#[test]
fn an_attempt_recorded_twice_by_a_crash_replay_counts_once() {
    let mut r = release(
        "a",
        "feature",
        0,
        None,
        &[
            ("prod", "AbortRequested", 1, Some("Aborted"), None),
            ("prod", "RolledBack", 1, Some("Aborted"), None),
        ],
    );
    let audit = &mut r.status.as_mut().unwrap().audit;
    audit[0].id = "prod/a/AbortRequested/1".into();
    audit[1].id = "prod/a/RolledBack/1".into();
    let prod = report(&[stage("prod", &[])], &[r], window())[0]
        .figures
        .clone();
    assert_eq!(prod.failures, 1);
}
