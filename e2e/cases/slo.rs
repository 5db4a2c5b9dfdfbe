//! Error-budget gates against a real Prometheus scraping real app processes: a spent budget
//! holds a release until the recorded series recover, and a canary burning budget too fast
//! is rolled back by its burn-rate analysis.

use std::time::Duration;

use greenlight::api::release::{GateResultStatus, GateVerdict};
use jiff::{SignedDuration, Timestamp};

use super::canary::{
    Bed, failing_scrape_to_primary, image, prometheus_address, start_bed_with,
    wait_traffic_on_primary, without_background_analysis,
};
use crate::env::{TestEnv, release_yaml};

/// The service's 30-day error ratio as a recording rule would keep it; every app process
/// exports one, so the gate reads their highest.
const RECORDED: &str = r#"max(slo:sli_error:ratio_rate30d{service="web"})"#;

fn budget_gate(prometheus: &str) -> String {
    format!(
        "---\napiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {{name: budget}}\nspec:\n  type: slo\n  recheckInterval: 2s\n  slo:\n    address: {prometheus}\n    timeout: 3s\n    objective: \"99.9\"\n    indicator: {{errorRatio: {{query: '{RECORDED}'}}}}\n    minBudgetRemaining: 10%\n"
    )
}

fn burn_gate(prometheus: &str) -> String {
    let errors = r#"http_requests_total{workload="{{workload}}",code=~"5.."}"#;
    let total = r#"http_requests_total{workload="{{workload}}"}"#;
    format!(
        "---\napiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {{name: burn}}\nspec:\n  type: slo\n  slo:\n    address: {prometheus}\n    timeout: 3s\n    objective: \"99\"\n    indicator: {{ratio: {{errors: {{metric: '{errors}'}}, total: {{metric: '{total}'}}}}}}\n    compressHourTo: 1m\n    minWindow: 10s\n    minEvents: 50\n"
    )
}

/// Sets the recorded error ratio v1's app exports, and waits until Prometheus has it.
async fn record(env: &TestEnv, bed: &Bed, v1: &str, ratio: f64) {
    let http = reqwest::Client::new();
    let port = bed.apps.ports[v1];
    http.post(format!("http://127.0.0.1:{port}/record?ratio={ratio}"))
        .send()
        .await
        .expect("the app records the ratio");
    env.wait_for(
        "Prometheus to scrape the recorded ratio",
        Duration::from_secs(30),
        || async {
            let v: serde_json::Value = http
                .get(format!("{}/api/v1/query", bed.prometheus.url))
                .query(&[("query", RECORDED)])
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            let seen = v["data"]["result"][0]["value"][1].as_str().unwrap_or("");
            match seen.parse::<f64>() {
                Ok(r) if (r - ratio).abs() < 1e-12 => Ok(()),
                _ => Err(format!("{v}")),
            }
        },
    )
    .await;
}

/// v2's result for `gate` in prod's spec.gates.
async fn gate_result(env: &TestEnv, gate: &str) -> Option<GateResultStatus> {
    let release = env.release("v2").await;
    let entry = release.status?.stages.remove("prod")?;
    entry.gates.into_iter().find(|g| g.name == gate)
}

pub async fn an_slo_gate_holds_a_release_while_the_budget_is_spent_and_lets_it_through_once_it_recovers(
    mut env: TestEnv,
) {
    let (v1, v2) = (image("healthy", "v1"), image("healthy", "v2"));
    let steps = "      - setWeight: 50\n";
    let bed = start_bed_with(&mut env, &v1, &[&v2], steps, |world| {
        let gate = budget_gate(&prometheus_address(&world));
        world.replacen(
            "  pipeline: shop\n",
            "  pipeline: shop\n  gates: [budget]\n",
            1,
        ) + &gate
    })
    .await;
    // 0.2% errors over the period against the 0.1% a 99.9% objective allows.
    record(&env, &bed, &v1, 0.002).await;
    env.apply(&release_yaml("v2", "shop", "2", &v2));
    let held = env
        .wait_for(
            "v2 held by the spent budget",
            Duration::from_secs(60),
            || async {
                match gate_result(&env, "budget").await {
                    Some(g) if g.result == GateVerdict::Failed => Ok(g),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    println!(
        "spent budget: {} ({})",
        held.value.clone().unwrap_or_default(),
        held.message
    );
    assert_eq!(held.value.as_deref(), Some("-100.0%"), "{held:?}");
    assert!(held.message.contains("floor 10.0%"), "{}", held.message);
    // Held for a few rechecks: the workload is not touched.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(env.images("web-primary").await, vec![v1.clone()]);
    assert_eq!(bed.load.weights_seen(), [0], "no traffic moved while held");
    record(&env, &bed, &v1, 0.00005).await;
    env.wait_release_stage("v2", "prod", "Succeeded", Duration::from_secs(120))
        .await;
    let passed = gate_result(&env, "budget")
        .await
        .expect("the budget's result");
    assert_eq!(passed.result, GateVerdict::Passed, "{passed:?}");
    assert_eq!(passed.value.as_deref(), Some("95.0%"), "{passed:?}");
    assert_eq!(env.images("web-primary").await, vec![v2]);
}

pub async fn a_canary_burning_its_error_budget_is_rolled_back_by_its_burn_rate_analysis(
    mut env: TestEnv,
) {
    let (v1, v2) = (image("healthy", "v1"), image("faulty", "v2-faulty"));
    let steps = "      - setWeight: 50\n      - analysis: {gates: [burn], interval: 3s, count: 20, failureLimit: 1, inconclusiveLimit: 10, initialDelay: 3s}\n";
    let bed = start_bed_with(&mut env, &v1, &[&v2], steps, |world| {
        let gate = burn_gate(&prometheus_address(&world));
        without_background_analysis(world) + &gate
    })
    .await;
    let started = Timestamp::now();
    env.apply(&release_yaml("v2", "shop", "2", &v2));
    let failed = env
        .wait_release_stage("v2", "prod", "Failed", Duration::from_secs(120))
        .await;
    let message = failed.status.unwrap().stages["prod"]
        .message
        .clone()
        .unwrap_or_default();
    println!("burn-rate rollback: {message}");
    assert!(
        message.contains("burning the error budget too fast"),
        "{message}"
    );
    assert!(message.contains("breached"), "{message}");
    assert_eq!(env.images("web-primary").await, vec![v1]);
    wait_traffic_on_primary(&env, &bed).await;
    assert!(
        bed.load.weights_seen().contains(&50),
        "the canary took traffic first"
    );
    // About minWindow (10 s, before which nothing of the canary's own is counted) plus one
    // interval and the apply (`make bench` prints it); the bound is that it acts at once.
    let reaction = failing_scrape_to_primary(&bed, started).await;
    let figure = Duration::try_from(reaction).unwrap_or_default();
    crate::support::figures::record("first failing scrape to primary, slo burn rates", figure);
    assert!(
        reaction < SignedDuration::from_secs(60),
        "took {reaction:#}"
    );
    env.wait_event("RolloutFailed").await;
}
