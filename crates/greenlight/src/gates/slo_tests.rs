//! The `slo` gate against a small server speaking Prometheus' query API: what it asks, and
//! what it makes of the answers, as a budget check and as a burn-rate analysis.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use serde_json::json;

use super::job_tests::ctx;
use super::slo::{SloCheck, parse_slo_duration};
use super::{GateCheck, GateContext, GateEnv, allow::AllowList};
use crate::api::release::GateVerdict;
use crate::api::slo::{
    BurnRate, ErrorRatioIndicator, EventSelector, RatioIndicator, SloGate, SloIndicator,
};

const ERRORS: &str = r#"http_requests_total{workload="{{workload}}",code=~"5.."}"#;
const TOTAL: &str = r#"http_requests_total{workload="{{workload}}"}"#;

/// A rule's value that answers with no series at all.
const NO_SERIES: f64 = f64::MIN;

/// Answers each instant query with the value of the first rule whose text it contains; a
/// query no rule matches (or matched by a [`NO_SERIES`] rule) gets an empty vector. Every query asked is kept.
#[derive(Clone, Default)]
struct Prom {
    rules: Arc<Vec<(String, f64)>>,
    asked: Arc<Mutex<Vec<String>>>,
    /// The `time` each query was asked for.
    times: Arc<Mutex<Vec<String>>>,
}

async fn answer(State(prom): State<Prom>, Query(q): Query<BTreeMap<String, String>>) -> String {
    let query = q.get("query").cloned().unwrap_or_default();
    prom.asked.lock().unwrap().push(query.clone());
    let time = q.get("time").cloned().unwrap_or_default();
    prom.times.lock().unwrap().push(time);
    let value = prom.rules.iter().find(|(k, _)| query.contains(k.as_str()));
    let result = match value {
        Some((_, v)) if *v != NO_SERIES => json!([{"metric": {}, "value": [1, v.to_string()]}]),
        _ => json!([]),
    };
    json!({"status": "success", "data": {"resultType": "vector", "result": result}}).to_string()
}

async fn serve(rules: &[(&str, f64)]) -> (String, Prom) {
    let prom = Prom {
        rules: Arc::new(rules.iter().map(|(k, v)| (k.to_string(), *v)).collect()),
        ..Default::default()
    };
    let app = axum::Router::new()
        .route("/api/v1/query", axum::routing::get(answer))
        .with_state(prom.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, prom)
}

fn env() -> GateEnv {
    let allow = AllowList::new(["127.0.0.1"]);
    GateEnv {
        http: super::http_client(&allow),
        webhook_allow: allow,
        prometheus_address: None,
        jobs: None,
        operator_account: None,
    }
}

fn counters(errors: &str, total: &str) -> SloIndicator {
    SloIndicator {
        ratio: Some(RatioIndicator {
            errors: Some(EventSelector {
                metric: errors.into(),
            }),
            good: None,
            total: EventSelector {
                metric: total.into(),
            },
        }),
        error_ratio: None,
    }
}

fn gate(address: &str, indicator: SloIndicator) -> SloGate {
    SloGate {
        server: crate::api::gate::PrometheusServer {
            address: address.into(),
            ..Default::default()
        },
        objective: "99.9".into(),
        period: None,
        indicator,
        min_budget_remaining: Some("10%".into()),
        burn_rates: vec![],
        compress_hour_to: Some("1m".into()),
        min_window: Some("10s".into()),
        min_events: None,
    }
}

fn refused(spec: &SloGate) -> Vec<String> {
    match SloCheck::compile(spec, &env()) {
        Ok(_) => vec![],
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

/// A measurement of an analysis that began `ran` seconds ago.
fn measuring(ran: i64) -> GateContext {
    let mut ctx = ctx();
    ctx.measuring = true;
    ctx.run = Some(ctx.now - jiff::SignedDuration::from_secs(ran));
    ctx
}

async fn outcome(spec: &SloGate, ctx: &GateContext) -> super::GateOutcome {
    let check = SloCheck::compile(spec, &env()).expect("compiles");
    check.evaluate(ctx).await
}

#[tokio::test]
async fn a_spent_budget_holds_the_release_and_a_recovered_one_lets_it_through() {
    let recorded = || SloIndicator {
        error_ratio: Some(ErrorRatioIndicator {
            query: r#"slo:sli_error:ratio_rate30d{service="web"}"#.into(),
        }),
        ratio: None,
    };
    let (spent, _) = serve(&[("slo:sli_error", 0.002)]).await;
    let held = outcome(&gate(&spent, recorded()), &ctx()).await;
    assert_eq!(held.verdict, GateVerdict::Failed, "{held:?}");
    assert_eq!(held.value.as_deref(), Some("-100.0%"));
    assert!(held.message.contains("floor 10.0%"), "{}", held.message);
    let (recovered, _) = serve(&[("slo:sli_error", 0.00005)]).await;
    let through = outcome(&gate(&recovered, recorded()), &ctx()).await;
    assert_eq!(through.verdict, GateVerdict::Passed, "{through:?}");
    assert_eq!(through.value.as_deref(), Some("95.0%"));
    let (thin, _) = serve(&[("slo:sli_error", 0.00095)]).await;
    let below_floor = outcome(&gate(&thin, recorded()), &ctx()).await;
    assert_eq!(
        below_floor.verdict,
        GateVerdict::Failed,
        "5% left is under the 10% floor"
    );
}

#[tokio::test]
async fn a_budget_from_counters_is_counted_over_the_period_and_needs_enough_events() {
    let (url, prom) = serve(&[("5..", 3.0), ("http_requests_total", 10_000.0)]).await;
    let service_wide = counters(r#"http_requests_total{code=~"5.."}"#, "http_requests_total");
    let spec = gate(&url, service_wide);
    let left = outcome(&spec, &ctx()).await;
    assert_eq!(left.verdict, GateVerdict::Passed, "{left:?}");
    assert_eq!(left.value.as_deref(), Some("70.0%"));
    let asked = prom.asked.lock().unwrap().clone();
    assert!(
        asked.contains(
            &r#"sum(increase(http_requests_total{code=~"5.."}[2592000s])) or vector(0)"#.into()
        ),
        "{asked:?}"
    );
    let (quiet, _) = serve(&[("5..", 0.0), ("http_requests_total", 40.0)]).await;
    let few = outcome(
        &SloGate {
            server: gate(&quiet, SloIndicator::default()).server,
            ..spec
        },
        &ctx(),
    )
    .await;
    assert_eq!(few.verdict, GateVerdict::Inconclusive, "{few:?}");
    assert!(few.message.contains("too few events"), "{}", few.message);
}

#[tokio::test]
async fn a_canary_burning_twenty_times_too_fast_fails_its_analysis_naming_each_window() {
    let (url, prom) = serve(&[("5..", 20.0), ("http_requests_total", 1000.0)]).await;
    let failed = outcome(&gate(&url, counters(ERRORS, TOTAL)), &measuring(600)).await;
    assert_eq!(failed.verdict, GateVerdict::Failed, "{failed:?}");
    assert_eq!(failed.value.as_deref(), Some("20.00x"));
    // 1h/5m and 6h/30m at a minute per hour: 60s/10s (5s raised to the 10s least) and 360s/30s.
    assert!(
        failed
            .message
            .contains("20.0x over 1m and 20.0x over 10s (breach at 14.4x: breached)"),
        "{}",
        failed.message
    );
    assert!(
        failed.message.contains("over 6m and 20.0x over 30s"),
        "{}",
        failed.message
    );
    let asked = prom.asked.lock().unwrap().clone();
    assert!(
        asked.iter().all(|q| q.contains(r#"workload="web-canary""#)),
        "only the canary's series are counted: {asked:?}"
    );
    let at = format!("{}.000", ctx().now.as_second());
    let times = prom.times.lock().unwrap().clone();
    assert!(
        times.iter().all(|t| *t == at),
        "windows end at the operator's now: {times:?}"
    );
}

#[tokio::test]
async fn a_spike_that_has_ended_fails_no_pair_and_each_window_is_read_as_its_own() {
    // Errors in the long windows (60s, 360s) only; the short ones (10s, 30s) have none.
    let (url, _) = serve(&[
        (r#"5.."}[10s]"#, 0.0),
        (r#"5.."}[30s]"#, 0.0),
        ("5..", 200.0),
        ("http_requests_total", 1000.0),
    ])
    .await;
    let ended = outcome(&gate(&url, counters(ERRORS, TOTAL)), &measuring(600)).await;
    assert_eq!(ended.verdict, GateVerdict::Passed, "{ended:?}");
    assert!(
        ended
            .message
            .contains("200.0x over 1m and 0.0x over 10s (breach at 14.4x)"),
        "{}",
        ended.message
    );
    let (url, _) = serve(&[
        (r#"5.."}[60s]"#, 0.0),
        (r#"5.."}[360s]"#, 0.0),
        ("5..", 200.0),
        ("http_requests_total", 1000.0),
    ])
    .await;
    let starting = outcome(&gate(&url, counters(ERRORS, TOTAL)), &measuring(600)).await;
    assert_eq!(
        starting.verdict,
        GateVerdict::Passed,
        "a burst too short to count: {starting:?}"
    );
}

#[tokio::test]
async fn an_analysis_start_in_the_future_counts_nothing_yet() {
    let (url, prom) = serve(&[("5..", 500.0), ("http_requests_total", 1000.0)]).await;
    let ahead = outcome(&gate(&url, counters(ERRORS, TOTAL)), &measuring(-30)).await;
    assert_eq!(ahead.verdict, GateVerdict::Inconclusive, "{ahead:?}");
    let mut unknown = measuring(600);
    unknown.run = None;
    let none = outcome(&gate(&url, counters(ERRORS, TOTAL)), &unknown).await;
    assert_eq!(none.verdict, GateVerdict::Inconclusive, "{none:?}");
    assert!(prom.asked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_budget_is_the_services_and_a_workload_in_its_counters_is_invalid_there() {
    let (url, prom) = serve(&[("5..", 0.0), ("http_requests_total", 1000.0)]).await;
    let invalid = outcome(&gate(&url, counters(ERRORS, TOTAL)), &ctx()).await;
    assert_eq!(invalid.verdict, GateVerdict::Invalid, "{invalid:?}");
    assert!(
        invalid.message.contains("service's budget"),
        "{}",
        invalid.message
    );
    assert!(prom.asked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_burn_within_bounds_passes_and_too_little_traffic_is_no_pass() {
    let (url, _) = serve(&[("5..", 1.0), ("http_requests_total", 1000.0)]).await;
    let within = outcome(&gate(&url, counters(ERRORS, TOTAL)), &measuring(600)).await;
    assert_eq!(within.verdict, GateVerdict::Passed, "{within:?}");
    let (quiet, _) = serve(&[("5..", 5.0), ("http_requests_total", 20.0)]).await;
    let few = outcome(&gate(&quiet, counters(ERRORS, TOTAL)), &measuring(600)).await;
    assert_eq!(few.verdict, GateVerdict::Inconclusive, "{few:?}");
    let (silent, _) = serve(&[]).await;
    let none = outcome(&gate(&silent, counters(ERRORS, TOTAL)), &measuring(600)).await;
    assert_eq!(
        none.verdict,
        GateVerdict::Inconclusive,
        "no series at all is no pass"
    );
}

#[tokio::test]
async fn a_window_never_reaches_back_before_the_analysis_began() {
    let (url, prom) = serve(&[("5..", 0.0), ("http_requests_total", 1000.0)]).await;
    let young = outcome(&gate(&url, counters(ERRORS, TOTAL)), &measuring(5)).await;
    assert_eq!(young.verdict, GateVerdict::Inconclusive, "{young:?}");
    assert!(
        prom.asked.lock().unwrap().is_empty(),
        "nothing is asked yet"
    );
    let _ = outcome(&gate(&url, counters(ERRORS, TOTAL)), &measuring(45)).await;
    let asked = prom.asked.lock().unwrap().clone();
    assert!(
        asked
            .iter()
            .all(|q| !q.contains("[60s]") && !q.contains("[360s]")),
        "{asked:?}"
    );
    assert!(asked.iter().any(|q| q.contains("[45s]")), "{asked:?}");
}

#[tokio::test]
async fn good_events_missing_are_no_data_not_all_bad() {
    let good = SloIndicator {
        ratio: Some(RatioIndicator {
            errors: None,
            good: Some(EventSelector {
                metric: r#"http_requests_total{workload="{{workload}}",code!~"5.."}"#.into(),
            }),
            total: EventSelector {
                metric: TOTAL.into(),
            },
        }),
        error_ratio: None,
    };
    let (url, _) = serve(&[("code!~", NO_SERIES), ("http_requests_total", 1000.0)]).await;
    let missing = outcome(&gate(&url, good.clone()), &measuring(600)).await;
    assert_eq!(missing.verdict, GateVerdict::Inconclusive, "{missing:?}");
    let (url, _) = serve(&[("code!~", 990.0), ("http_requests_total", 1000.0)]).await;
    let counted = outcome(&gate(&url, good), &measuring(600)).await;
    assert_eq!(
        counted.verdict,
        GateVerdict::Failed,
        "1% errors burns 10x: {counted:?}"
    );
}

#[tokio::test]
async fn an_analysis_needs_counters_scoped_to_the_workload() {
    let (url, prom) = serve(&[("", 0.0)]).await;
    let service_wide = counters(r#"http_requests_total{code=~"5.."}"#, "http_requests_total");
    let invalid = outcome(&gate(&url, service_wide), &measuring(600)).await;
    assert_eq!(invalid.verdict, GateVerdict::Invalid, "{invalid:?}");
    assert!(
        invalid.message.contains(r#"workload="{{workload}}""#),
        "{}",
        invalid.message
    );
    let recorded = SloIndicator {
        error_ratio: Some(ErrorRatioIndicator { query: "r".into() }),
        ratio: None,
    };
    let invalid = outcome(&gate(&url, recorded), &measuring(600)).await;
    assert_eq!(invalid.verdict, GateVerdict::Invalid, "{invalid:?}");
    assert!(prom.asked.lock().unwrap().is_empty());
}

#[test]
fn every_bad_setting_is_refused_naming_its_field() {
    let mut spec = gate("http://127.0.0.1:9090", counters(ERRORS, TOTAL));
    spec.objective = "100".into();
    spec.period = Some("91d".into());
    spec.min_budget_remaining = Some("110%".into());
    spec.compress_hour_to = Some("2h".into());
    spec.burn_rates = vec![
        BurnRate {
            factor: 0.5,
            long: "1h".into(),
            short: None,
        },
        BurnRate {
            factor: 2.0,
            long: "1h".into(),
            short: Some("2h".into()),
        },
    ];
    let fields: Vec<String> = refused(&spec)
        .iter()
        .map(|e| e.split(':').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        fields,
        [
            "spec.slo.objective",
            "spec.slo.period",
            "spec.slo.minBudgetRemaining",
            "spec.slo.burnRates[0].factor",
            "spec.slo.burnRates[1].short",
            "spec.slo.compressHourTo",
        ]
    );
}

#[test]
fn a_counter_must_be_one_plain_selector_with_facts_only_in_label_values() {
    let refusals = |errors: &str| refused(&gate("http://127.0.0.1:9090", counters(errors, TOTAL)));
    for not_a_selector in [
        r#"rate(http_requests_total{code="500"}[5m])"#,
        r#"http_requests_total{code="500"} offset 1h"#,
        r#"http_requests_total{code="500"} # comment"#,
        "http_requests_total{code=\"500\"} # comment\n",
        r#"http_requests_total{workload="{{workload}}",version="{{version}}"}"#,
        r#"http_requests_total{workload="{{canary}}"}"#,
        r#"http_requests_total{code="500"}[5m]"#,
        r#"{{version}}"#,
    ] {
        let errors = refusals(not_a_selector);
        assert_eq!(errors.len(), 1, "{not_a_selector}: {errors:?}");
        assert!(
            errors[0].starts_with("spec.slo.indicator.ratio.errors.metric: "),
            "{errors:?}"
        );
    }
    let narrowed =
        r#"http_requests_total{code="500",namespace="{{namespace}}",workload="{{workload}}"}"#;
    assert!(refusals(narrowed).is_empty(), "{:?}", refusals(narrowed));
    let both = SloIndicator {
        error_ratio: Some(ErrorRatioIndicator { query: "r".into() }),
        ..counters(ERRORS, TOTAL)
    };
    let errors = refused(&gate("http://127.0.0.1:9090", both));
    assert_eq!(
        errors,
        ["spec.slo.indicator: exactly one of ratio and errorRatio"]
    );
}

#[test]
fn slo_durations_may_start_with_days() {
    let secs = |t: &str| parse_slo_duration(t).map(|d| d.as_secs());
    assert_eq!(secs("30d"), Ok(30 * 86_400));
    assert_eq!(secs("1d12h"), Ok(36 * 3600));
    assert_eq!(secs("5m"), Ok(300));
    assert!(secs("d").is_err());
    assert!(secs("1x").is_err());
}

#[test]
fn bad_events_must_be_a_subset_of_all_events() {
    let refusals = |errors: &str, total: &str| {
        refused(&gate("http://127.0.0.1:9090", counters(errors, total)))
    };
    let other_metric = refusals(
        r#"http_request_errors_total{workload="{{workload}}"}"#,
        TOTAL,
    );
    assert_eq!(other_metric.len(), 1, "{other_metric:?}");
    assert!(
        other_metric[0].starts_with("spec.slo.indicator.ratio.errors.metric: must select a subset")
            && other_metric[0].contains(r#"__name__="http_requests_total""#),
        "{other_metric:?}"
    );
    let unscoped_errors = refusals(r#"http_requests_total{code=~"5.."}"#, TOTAL);
    assert!(
        unscoped_errors[0].contains(r#"lacks workload="{{workload}}""#),
        "{unscoped_errors:?}"
    );
    let nameless = refusals(r#"{job="web",code="500"}"#, r#"{job="web"}"#);
    assert_eq!(
        nameless,
        [
            "spec.slo.indicator.ratio.total.metric: must name its metric, e.g. http_requests_total{...}"
        ]
    );
}

#[test]
fn a_recorded_error_ratio_may_not_name_what_ci_writes_or_the_canary() {
    let recorded = |query: &str| SloIndicator {
        error_ratio: Some(ErrorRatioIndicator {
            query: query.into(),
        }),
        ratio: None,
    };
    let vanishing = r#"(sum(e{version="{{version}}"}) or vector(0)) / sum(t)"#;
    let errors = refused(&gate("http://127.0.0.1:9090", recorded(vanishing)));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("spec.slo.indicator.errorRatio.query: may not use {{version}}"),
        "{errors:?}"
    );
    let canary = recorded(r#"r{workload="{{workload}}"}"#);
    assert_eq!(refused(&gate("http://127.0.0.1:9090", canary)).len(), 1);
    let service = recorded(r#"slo:sli_error:ratio_rate30d{namespace="{{namespace}}"}"#);
    assert!(refused(&gate("http://127.0.0.1:9090", service)).is_empty());
}
