//! The comparison judge against a real Prometheus scraping real app processes: a canary as
//! slow again as the primary fails though it is under any fixed threshold, and two versions
//! that are alike but not identical pass nearly every judgement.

use std::time::Duration;

use greenlight::api::compare::{Comparison, MetricClass};

use super::canary::{Bed, image, prometheus_address, start_bed_with, wait_traffic_on_primary};
use crate::env::{TestEnv, release_yaml};

/// p99 of the workload measured, over windows as wide as the gate's step: three scrapes of
/// the test bed's 1 s, so a late scrape does not leave a step empty.
const P99: &str = r#"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{workload="{{workload}}"}[3s])))"#;

fn latency_gate(prometheus: &str) -> String {
    format!(
        "---\napiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {{name: latency}}\nspec:\n  type: compare\n  compare:\n    address: {prometheus}\n    lookback: 30s\n    step: 3s\n    timeout: 3s\n    metrics:\n    - {{name: p99, query: '{P99}', direction: increase, allowedIncrease: 1.2, minSamples: 8}}\n"
    )
}

/// The bed with `v2` published, its canary judged at 50% by the `latency` compare gate.
async fn judged_bed(env: &mut TestEnv, v2: &str, analysis: &str) -> Bed {
    let steps =
        format!("      - setWeight: 50\n      - analysis: {{gates: [latency], {analysis}}}\n");
    let bed = start_bed_with(env, &image("healthy", "v1"), &[v2], &steps, |world| {
        let address = prometheus_address(&world);
        world + &latency_gate(&address)
    })
    .await;
    env.apply(&release_yaml("v2", "shop", "2", v2));
    bed
}

/// The step analysis' counters of the `latency` gate, while it runs.
async fn latency_counters(env: &TestEnv) -> Option<(i32, i32, i32, i32)> {
    let stage = env.stage("prod").await;
    let canary = stage.status?.rollout?.canary?;
    let a = canary.analysis.into_iter().find(|a| a.gate == "latency")?;
    Some((a.measurements, a.successes, a.failures, a.inconclusive))
}

/// The last judgement of the `latency` gate, as v2's record at prod keeps it.
async fn latency_judgement(env: &TestEnv) -> Option<Comparison> {
    let release = env.release("v2").await;
    let entry = release.status?.stages.remove("prod")?;
    let judged = entry
        .comparisons
        .into_iter()
        .find(|c| c.gate == "latency")?;
    Some(judged.judgement)
}

pub async fn a_canary_twice_as_slow_as_the_primary_is_failed_by_compare_though_under_any_threshold(
    mut env: TestEnv,
) {
    let v2 = image("slow", "v2-slow");
    let analysis = "interval: 3s, count: 3, failureLimit: 1, initialDelay: 30s";
    let bed = judged_bed(&mut env, &v2, analysis).await;
    let failed = env
        .wait_release_stage("v2", "prod", "Failed", Duration::from_secs(120))
        .await;
    wait_traffic_on_primary(&env, &bed).await;
    // The judge needs minSamples steps of the canary's own (8 × 3 s, after the 30 s initial
    // delay), so this is about a minute by design; `make bench` prints it.
    let first_traffic = bed
        .load
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.canary_weight > 0)
        .map(|s| s.at);
    let back = super::canary::canary_traffic_back_at(&bed);
    let took = back.duration_since(first_traffic.expect("the canary got traffic"));
    let figure = Duration::try_from(took).unwrap_or_default();
    crate::support::figures::record("canary's first traffic to primary, compare judge", figure);
    let judged = latency_judgement(&env)
        .await
        .expect("the judgement is on the release");
    let p99 = &judged.metrics[0];
    println!(
        "slow canary: score {}, p99 {:?}, shift {:?} ({:?}..{:?}), ratio {:?}, p {:?}, n {}/{}",
        judged.score,
        p99.class,
        p99.shift,
        p99.lower,
        p99.upper,
        p99.ratio,
        p99.p_value,
        p99.canary_samples,
        p99.baseline_samples
    );
    assert_eq!(p99.class, MetricClass::High, "{judged:?}");
    assert!(judged.score < 75.0, "below marginal: {judged:?}");
    // Both p99s are far under the 100 ms a fixed threshold would allow.
    let (shift, ratio) = (p99.shift.unwrap(), p99.ratio.unwrap());
    assert!(shift > 0.005 && shift < 0.05 && ratio > 1.5, "{judged:?}");
    let entry = &failed.status.as_ref().unwrap().stages["prod"];
    let message = entry.message.clone().unwrap_or_default();
    assert!(message.contains("p99 High"), "{message}");
    assert_eq!(
        env.images("web-primary").await,
        vec![image("healthy", "v1")]
    );
}

pub async fn two_alike_versions_pass_at_least_19_of_20_compare_judgements(mut env: TestEnv) {
    let v2 = image("healthy", "v2");
    let analysis = "interval: 3s, count: 20, failureLimit: 20, failureCounting: total, inconclusiveLimit: 20, initialDelay: 30s";
    let _bed = judged_bed(&mut env, &v2, analysis).await;
    let (measured, passed, failed, inconclusive) = env
        .wait_for(
            "20 judgements of two alike versions",
            Duration::from_secs(240),
            || async {
                match latency_counters(&env).await {
                    Some(counts) if counts.0 >= 20 => Ok(counts),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    let last = latency_judgement(&env).await;
    println!(
        "identical versions: {passed} of {measured} judgements passed, {failed} failed, {inconclusive} inconclusive"
    );
    // Of the first 20 judgements (21 if one more landed before this read), 19 pass.
    assert!(
        passed >= 19 && passed + 1 >= measured,
        "{passed} of {measured} passed, {failed} failed, {inconclusive} inconclusive: {last:?}"
    );
    let last = last.expect("the last judgement is on the release");
    assert!(last.metrics[0].canary_samples >= 8 && last.metrics[0].baseline_samples >= 8);
    env.wait_release_stage("v2", "prod", "Succeeded", Duration::from_secs(120))
        .await;
}
