//! Canary rollouts in a closed loop: real HTTP traffic split by the HTTPRoute weights the
//! operator writes, a real Prometheus scraping the app processes, and gates querying it.

use std::time::Duration;

use greenlight::api::CommandPhase;
use greenlight::api::canary::CanaryPhase;
use greenlight::api::release::{AuditAction, ReleasePhase};
use greenlight::api::stage::RolloutOutcome;
use jiff::{SignedDuration, Timestamp};

use crate::env::{TestEnv, release_yaml};
use crate::support::prometheus::Prometheus;
use crate::support::traffic::{Apps, LoadGenerator};

pub const APP: &str = env!("CARGO_BIN_EXE_greenlight-e2e-app");
const INTERVAL_SECS: i64 = 2;
const FAILURE_LIMIT: i64 = 2;

pub fn image(tag: &str, seed: &str) -> String {
    let digest = crate::env::image(seed);
    digest.replace("registry.local/web@", &format!("registry.local/web:{tag}@"))
}

/// The error rate of the workload running the release under test; no 5xx series means 0.
pub const ERROR_RATE: &str = r#"(sum(rate(http_requests_total{workload="{{canary}}",code=~"5.."}[10s])) or vector(0)) / sum(rate(http_requests_total{workload="{{canary}}"}[10s]))"#;
pub const REQUESTS: &str = r#"sum(increase(http_requests_total{workload="{{canary}}"}[10s]))"#;

pub fn world_yaml(prometheus: &str, steps: &str, routing: bool) -> String {
    let routing = if routing {
        "      trafficRouting: {gatewayAPI: {httpRoute: web}}\n"
    } else {
        ""
    };
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: registry.local/web:template
        ports: [{{containerPort: 8080, name: http}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web}}
spec:
  parentRefs: [{{name: public}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /}}}}]
    backendRefs: [{{name: web-primary, port: 8080}}]
---
apiVersion: greenlight.dev/v1alpha1
kind: Gate
metadata: {{name: error-rate}}
spec:
  type: prometheus
  prometheus:
    address: {prometheus}
    query: '{ERROR_RATE}'
    condition: "< 0.01"
    timeout: 2s
    minSamples: {{query: '{REQUESTS}', minimum: 5}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {{name: prod}}
spec:
  pipeline: shop
  target: {{name: web}}
  replicas: 2
  progressDeadline: 60s
  strategy:
    type: canary
    canary:
{routing}      bake: 4s
      scaleDownDelay: 2s
      analysis: {{gates: [error-rate], interval: {INTERVAL_SECS}s, failureLimit: {FAILURE_LIMIT}, inconclusiveLimit: 3, initialDelay: 3s}}
      steps:
{steps}"#
    )
}

/// The world without its background analysis, so nothing but the route's and the objects'
/// watches wakes a paused stage.
pub fn without_background_analysis(world: String) -> String {
    let analysis = world
        .lines()
        .find(|l| l.trim_start().starts_with("analysis: {gates: [error-rate]"))
        .map(|l| format!("{l}\n"))
        .unwrap_or_default();
    world.replacen(&analysis, "", 1)
}

pub const STEPS: &str = "      - setWeight: 5
      - analysis: {gates: [error-rate], interval: 2s, count: 2, failureLimit: 2, initialDelay: 3s}
      - setWeight: 25
      - analysis: {gates: [error-rate], interval: 2s, count: 2, failureLimit: 2, initialDelay: 3s}
      - setWeight: 50
      - analysis: {gates: [error-rate], interval: 2s, count: 2, failureLimit: 2, initialDelay: 3s}
";

pub struct Bed {
    pub prometheus: Prometheus,
    pub load: LoadGenerator,
    /// Keeps the app processes alive; the benchmark also reads their ports.
    #[allow(dead_code)]
    pub apps: Apps,
}

/// `v1` running on the primary with traffic flowing; `others` are images later releases use.
pub async fn start_bed(env: &mut TestEnv, v1: &str, others: &[&str], steps: &str) -> Bed {
    start_bed_with(env, v1, others, steps, |world| world).await
}

/// [`start_bed`], with `edit` applied to the world's YAML first.
pub async fn start_bed_with(
    env: &mut TestEnv,
    v1: &str,
    others: &[&str],
    steps: &str,
    edit: impl Fn(String) -> String,
) -> Bed {
    let mut images = vec![v1];
    images.extend_from_slice(others);
    let apps = Apps::start(&images, &env.dir, APP);
    let mut prometheus = Prometheus::start(&apps.targets());
    prometheus.wait_for_series("up", images.len()).await;
    env.apply(&edit(world_yaml(&prometheus.url, steps, true)));
    env.start_admitted_controller().await;
    env.apply(&release_yaml("v1", "shop", "1", v1));
    env.wait_release_stage("v1", "prod", "Succeeded", Duration::from_secs(60))
        .await;
    let load = LoadGenerator::start(
        env.client.clone(),
        &env.ns,
        "web",
        "web",
        apps.ports.clone(),
        100,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    Bed {
        prometheus,
        load,
        apps,
    }
}

/// The bed, with `v2` published.
async fn bed(env: &mut TestEnv, v2: &str, steps: &str) -> Bed {
    let bed = start_bed(env, &image("healthy", "v1"), &[v2], steps).await;
    env.apply(&release_yaml("v2", "shop", "2", v2));
    bed
}

pub async fn healthy_canary_goes_5_25_50_then_all_traffic_and_is_promoted(mut env: TestEnv) {
    let v2 = image("healthy", "v2");
    let bed = bed(&mut env, &v2, STEPS).await;
    env.wait_release_stage("v2", "prod", "Succeeded", Duration::from_secs(120))
        .await;
    assert_eq!(
        bed.load.weights_seen(),
        [0, 5, 25, 50, 0],
        "traffic moved step by step, then all to the promoted primary"
    );
    assert_eq!(env.images("web-primary").await, vec![v2.clone()]);
    let canary = env.deployment("web-canary").await.unwrap();
    assert_eq!(
        canary.spec.unwrap().replicas,
        Some(0),
        "the canary is scaled to zero after promotion"
    );
    let stage = env.stage("prod").await.status.unwrap();
    assert_eq!(stage.history[0].outcome, RolloutOutcome::Succeeded);
    assert!(
        bed.load
            .sent
            .lock()
            .unwrap()
            .get("web-canary")
            .copied()
            .unwrap_or(0)
            > 20,
        "the canary served real traffic"
    );
    let r = env.release("v2").await.status.unwrap();
    assert_eq!(
        r.stages["prod"].phase,
        greenlight::api::release::StagePhaseForRelease::Succeeded
    );
    env.wait_event("WeightChanged").await;
}

pub async fn a_faulty_canary_is_rolled_back_at_its_first_step_as_soon_as_its_analysis_fails(
    mut env: TestEnv,
) {
    let v2 = image("faulty", "v2-faulty");
    let bed = bed(&mut env, &v2, STEPS).await;
    let started = Timestamp::now();
    let failed = env
        .wait_release_stage("v2", "prod", "Failed", Duration::from_secs(90))
        .await;
    let entry = &failed.status.unwrap().stages["prod"];
    assert_eq!(entry.reason.as_deref(), Some("AnalysisFailed"));
    let message = entry.message.clone().unwrap();
    for part in ["error-rate", "< 0.01", "http_requests_total", "value 0."] {
        assert!(
            message.contains(part),
            "the failure names the gate, query, value and threshold: {message}"
        );
    }
    env.wait_for("rollback to finish", Duration::from_secs(60), || async {
        let s = env.stage("prod").await.status.unwrap_or_default();
        if s.rollout.is_none() {
            Ok(())
        } else {
            Err(format!("{:?}", s.rollout))
        }
    })
    .await;
    assert_eq!(
        env.images("web-primary").await,
        vec![image("healthy", "v1")]
    );
    wait_canary_scaled_to_zero(&env).await;

    let reaction = failing_scrape_to_primary(&bed, started).await;
    let figure = Duration::try_from(reaction).unwrap_or_default();
    crate::support::figures::record("first failing scrape to all traffic on primary", figure);
    // Quiet, it is about interval × failureLimit + interval (`make bench` prints it). The bound
    // is the behaviour: the breach is acted on at once, not at a requeue minutes away.
    assert!(
        reaction < SignedDuration::from_secs(30),
        "took {reaction:#}, about {} s expected",
        INTERVAL_SECS * FAILURE_LIMIT + INTERVAL_SECS
    );
    assert!(
        bed.load.weights_seen().iter().all(|w| *w <= 5),
        "never got past the first step: {:?}",
        bed.load.weights_seen()
    );
    env.wait_event("RolloutFailed").await;
    env.wait_for("v2 marked Failed", Duration::from_secs(20), || async {
        let p = env.release("v2").await.status.unwrap_or_default().phase;
        if p == Some(ReleasePhase::Failed) {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    })
    .await;
}

pub async fn prometheus_stopped_mid_rollout_pauses_and_never_promotes(mut env: TestEnv) {
    let v2 = image("healthy", "v2-blind");
    let mut bed = bed(&mut env, &v2, STEPS).await;
    env.wait_for("the canary at 25%", Duration::from_secs(60), || async {
        if bed.load.weights_seen().contains(&25) {
            Ok(())
        } else {
            Err(format!("{:?}", bed.load.weights_seen()))
        }
    })
    .await;
    bed.prometheus.stop();
    let paused = env
        .wait_for(
            "the rollout to pause on missing data",
            Duration::from_secs(60),
            || async {
                let s = env.stage("prod").await.status.unwrap_or_default();
                let canary = s.rollout.as_ref().and_then(|r| r.canary.clone());
                match canary {
                    Some(c) if c.phase == CanaryPhase::Paused => Ok((s, c)),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    let (stage, progress) = paused;
    assert!(
        progress
            .paused_reason
            .as_deref()
            .unwrap_or("")
            .contains("AnalysisInconclusive"),
        "{progress:?}"
    );
    assert!(
        stage
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.is_true() && c.message.contains("unreachable")),
        "{:?}",
        stage.conditions
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        bed.load.weights_seen().iter().all(|w| *w <= 25),
        "never promoted on missing data: {:?}",
        bed.load.weights_seen()
    );
    assert_eq!(
        env.images("web-primary").await,
        vec![image("healthy", "v1")]
    );
    let s = env.stage("prod").await.status.unwrap();
    assert_eq!(
        s.rollout.and_then(|r| r.canary).map(|c| c.phase),
        Some(CanaryPhase::Paused)
    );
}

pub async fn controller_restarted_mid_canary_resumes_at_the_same_step_and_weights(
    mut env: TestEnv,
) {
    let v2 = image("healthy", "v2-resume");
    let steps = "      - setWeight: 5\n      - setWeight: 25\n      - pause: {}\n      - setWeight: 50\n      - analysis: {gates: [error-rate], interval: 2s, count: 2}\n";
    let bed = bed(&mut env, &v2, steps).await;
    let before = env
        .wait_for(
            "the manual pause at 25%",
            Duration::from_secs(60),
            || async {
                let s = env.stage("prod").await.status.unwrap_or_default();
                match s.rollout.as_ref().and_then(|r| r.canary.clone()) {
                    Some(c) if c.phase == CanaryPhase::Paused && c.weight == 25 => {
                        Ok(s.rollout.unwrap())
                    }
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    env.kill_controller();
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.start_controller();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = env.stage("prod").await.status.unwrap().rollout.unwrap();
    let (b, a) = (
        before.canary.clone().unwrap(),
        after.canary.clone().unwrap(),
    );
    assert_eq!(
        (a.step, a.weight, a.step_started_at, a.phase),
        (b.step, b.weight, b.step_started_at, b.phase),
        "resumed where it was"
    );
    assert_eq!(after.started_at, before.started_at);
    assert_eq!(
        *bed.load.weights_seen().last().unwrap(),
        25,
        "the route kept its weights"
    );
    let promote = env.steer(None, "prod", "promote", None);
    env.wait_release_stage("v2", "prod", "Succeeded", Duration::from_secs(90))
        .await;
    // 5% lasts only until the router confirms it, shorter than the load generator's poll.
    let seen = bed.load.weights_seen();
    let (last, rising) = seen.split_last().unwrap();
    assert!(
        rising.windows(2).all(|w| w[0] < w[1]) && rising.ends_with(&[25, 50]) && *last == 0,
        "{seen:?}"
    );
    let handled = env.wait_command(&promote).await;
    assert_eq!(
        handled.phase,
        Some(CommandPhase::Applied),
        "{:?}",
        handled.message
    );
}

pub async fn without_a_traffic_router_canary_replicas_follow_the_weight(mut env: TestEnv) {
    let v1 = image("healthy", "ratio-v1");
    let v2 = image("healthy", "ratio-v2");
    let steps = "      - setWeight: 20\n      - pause: {duration: 3s}\n      - setWeight: 50\n      - pause: {duration: 3s}\n";
    env.apply(&world_yaml("http://127.0.0.1:9", steps, false).replace("      analysis: {gates: [error-rate], interval: 2s, failureLimit: 2, inconclusiveLimit: 3, initialDelay: 3s}\n", ""));
    env.start_controller();
    env.apply(&release_yaml("v1", "shop", "1", &v1));
    env.wait_release_stage("v1", "prod", "Succeeded", Duration::from_secs(60))
        .await;
    env.apply(&release_yaml("v2", "shop", "2", &v2));
    let replicas = std::sync::Mutex::new(Vec::new());
    env.wait_for("v2 promoted", Duration::from_secs(60), || {
        let replicas = &replicas;
        let env = &env;
        async move {
            if let Some(d) = env.deployment("web-canary").await {
                let n = d.spec.and_then(|s| s.replicas).unwrap_or(0);
                let mut seen = replicas.lock().unwrap();
                if seen.last() != Some(&n) {
                    seen.push(n);
                }
            }
            let r = env.release("v2").await;
            match r.status.and_then(|s| s.stages.get("prod").cloned()) {
                Some(e) if format!("{:?}", e.phase) == "Succeeded" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    // Two primary replicas: 20% is one canary pod, 50% is two, then none after promotion.
    let seen: Vec<i32> = replicas
        .lock()
        .unwrap()
        .iter()
        .copied()
        .skip_while(|n| *n == 0)
        .collect();
    assert_eq!(seen, [1, 2, 0], "canary replicas over time");
    assert_eq!(env.images("web-primary").await, vec![v2]);
    assert_eq!(
        env.deployment("web-primary")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(2)
    );
}

async fn wait_canary_scaled_to_zero(env: &TestEnv) {
    let what = "the canary drained and scaled to zero";
    env.wait_for(what, Duration::from_secs(10), || async {
        let canary = env.deployment("web-canary").await.unwrap();
        match canary.spec.unwrap().replicas {
            Some(0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// The timestamp of the first sample of `query` above zero since `since`.
/// Reaction time: from the first scrape that saw a canary 5xx to all traffic on primary.
pub async fn failing_scrape_to_primary(bed: &Bed, started: Timestamp) -> SignedDuration {
    let first_failing_scrape = first_sample_above_zero(
        &bed.prometheus.url,
        r#"sum(http_requests_total{workload="web-canary",code="500"})"#,
        started,
    )
    .await;
    canary_traffic_back_at(bed).duration_since(first_failing_scrape)
}

/// Waits until the load generator has seen all traffic back on the primary.
pub async fn wait_traffic_on_primary(env: &TestEnv, bed: &Bed) {
    env.wait_for(
        "traffic back on the primary",
        Duration::from_secs(60),
        || async {
            match bed.load.weights_seen().last() {
                Some(0) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

/// The test bed Prometheus' address, as the world's YAML names it.
pub fn prometheus_address(world: &str) -> String {
    world
        .lines()
        .find_map(|l| l.trim().strip_prefix("address: "))
        .unwrap_or_default()
        .to_string()
}

/// When all traffic was back on the primary after the canary's first share of it.
pub fn canary_traffic_back_at(bed: &Bed) -> Timestamp {
    let seen = bed.load.seen.lock().unwrap().clone();
    let peak = seen
        .iter()
        .position(|s| s.canary_weight > 0)
        .expect("the canary got traffic");
    seen[peak..]
        .iter()
        .find(|s| s.canary_weight == 0)
        .expect("traffic went back to primary")
        .at
}

pub async fn first_sample_above_zero(prometheus: &str, query: &str, since: Timestamp) -> Timestamp {
    let end = Timestamp::now();
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{prometheus}/api/v1/query_range"))
        .query(&[
            ("query", query),
            ("start", &since.as_second().to_string()),
            ("end", &(end.as_second() + 1).to_string()),
            ("step", "1"),
        ])
        .send()
        .await
        .expect("query Prometheus")
        .json()
        .await
        .expect("Prometheus JSON");
    let values = body["data"]["result"][0]["values"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let first = values
        .iter()
        .find(|v| {
            v[1].as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0)
                > 0.0
        })
        .expect("a failing scrape");
    Timestamp::from_second(first[0].as_f64().unwrap() as i64).unwrap()
}

/// A canary held at 25% by a `pause: {}` step; its HTTPRoute is deleted. The stage cannot
/// tell or set the weight any more, and rolls back by its progress deadline (60s), saying why.
pub async fn a_route_deleted_mid_canary_rolls_back_by_the_deadline_and_says_why(mut env: TestEnv) {
    let v2 = image("healthy", "v2");
    let steps = "      - setWeight: 25\n      - pause: {}\n";
    let _bed = bed(&mut env, &v2, steps).await;
    env.wait_for(
        "the canary paused at 25%",
        Duration::from_secs(60),
        || async {
            let s = env.stage("prod").await.status.unwrap_or_default();
            match s.rollout.as_ref().and_then(|r| r.canary.clone()) {
                Some(c) if c.phase == CanaryPhase::Paused && c.weight == 25 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    env.cp
        .kubectl(&["delete", "httproute", "web", "-n", &env.ns, "--wait=false"]);
    let failed = env
        .wait_release_stage("v2", "prod", "Failed", Duration::from_secs(120))
        .await;
    let entry = failed.status.unwrap().stages["prod"].clone();
    assert_eq!(entry.reason.as_deref(), Some("TrafficUnknown"), "{entry:?}");
    let why = entry.message.unwrap_or_default();
    assert!(why.contains("HTTPRoute 'web' not found"), "{why}");
    env.wait_for("rolled back to v1", Duration::from_secs(60), || async {
        let s = env.stage("prod").await.status.unwrap_or_default();
        let stalled = s.conditions.iter().find(|c| c.type_ == "Stalled");
        match stalled {
            Some(c) if c.reason == "RolledBack" && c.message.contains("TrafficUnknown") => Ok(()),
            _ => Err(format!("{:?} {:?}", s.phase, s.conditions)),
        }
    })
    .await;
    assert_eq!(
        env.images("web-primary").await,
        vec![image("healthy", "v1")]
    );
}

/// An analysis gate whose endpoint takes 30 s to answer runs on its own task: an abort
/// created meanwhile is acted upon long before the answer (about 0.1 s on a quiet machine;
/// the bound leaves room for a loaded one, and is still far from the gate's 30 s).
pub async fn a_slow_gate_does_not_hold_up_an_abort(mut env: TestEnv) {
    let hooks = crate::support::http::WebhookServer::default();
    let addr = hooks.start().await;
    let steps =
        "      - setWeight: 20\n      - analysis: {gates: [slow], interval: 2s, count: 2}\n";
    let world = world_yaml("http://127.0.0.1:9", steps, false).replace(
        "      analysis: {gates: [error-rate], interval: 2s, failureLimit: 2, inconclusiveLimit: 3, initialDelay: 3s}\n",
        "",
    );
    env.apply(&format!(
        "{world}---\napiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {{name: slow}}\nspec:\n  type: webhook\n  webhook: {{url: \"http://{addr}/slow/30\", timeout: 40s}}\n"
    ));
    env.grant_example_roles();
    env.start_admitted_controller().await;
    env.apply(&release_yaml(
        "v1",
        "shop",
        "1",
        &image("healthy", "slow-v1"),
    ));
    env.wait_release_stage("v1", "prod", "Succeeded", Duration::from_secs(60))
        .await;
    env.apply(&release_yaml(
        "v2",
        "shop",
        "2",
        &image("healthy", "slow-v2"),
    ));
    env.wait_for("the slow gate asked", Duration::from_secs(60), || async {
        match hooks.calls("/slow/30") {
            0 => Err("not yet".to_string()),
            _ => Ok(()),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let abort = env.steer(Some("alice"), "prod", "abort", None);
    let asked = std::time::Instant::now();
    let api = env.api::<greenlight::api::StageCommand>();
    let handled = loop {
        let c = api.get(&abort).await.unwrap();
        if let Some(status) = c.status.filter(|s| s.phase.is_some()) {
            break status;
        }
        assert!(asked.elapsed() < Duration::from_secs(30), "never handled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = asked.elapsed();
    crate::support::figures::record("an abort beside a gate that answers after 30 s", took);
    assert_eq!(handled.phase, Some(CommandPhase::Applied), "{handled:?}");
    assert!(
        took < Duration::from_secs(10),
        "the abort waited {took:?} behind a gate that answers after 30 s"
    );
    let failed = env
        .wait_release_stage("v2", "prod", "Failed", Duration::from_secs(60))
        .await;
    let trail = failed.status.unwrap_or_default().audit;
    assert!(
        trail
            .iter()
            .any(|e| e.action == AuditAction::AbortRequested && e.actor == "alice"),
        "the abort is recorded under the release manager's name: {trail:?}"
    );
}

/// The canary weight the HTTPRoute `web` holds now.
pub async fn route_canary_weight(env: &TestEnv) -> i64 {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    let routes: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(env.client.clone(), &env.ns, &ApiResource::from_gvk(&gvk));
    let route = routes.get("web").await.expect("the route exists");
    crate::support::traffic::canary_weight(&route, "web-primary", "web-canary")
}

/// The controller is killed as soon as a rollback has taken the canary's traffic away; the
/// one started after it finds the rollback recorded and carries it on: the weight stays 0.
pub async fn a_controller_killed_right_after_a_rollback_sets_weight_0_keeps_it_there(
    mut env: TestEnv,
) {
    let v2 = image("faulty", "v2-killed");
    let _bed = bed(&mut env, &v2, STEPS).await;
    env.wait_for(
        "the canary gets traffic",
        Duration::from_secs(60),
        || async {
            match route_canary_weight(&env).await {
                0 => Err("0".to_string()),
                w => Ok(w),
            }
        },
    )
    .await;
    let watching = std::time::Instant::now();
    while route_canary_weight(&env).await > 0 {
        assert!(
            watching.elapsed() < Duration::from_secs(90),
            "never rolled back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    env.kill_controller();
    env.start_controller();
    let after = std::time::Instant::now();
    while after.elapsed() < Duration::from_secs(10) {
        assert_eq!(
            route_canary_weight(&env).await,
            0,
            "traffic went back to the failing canary after the restart:\n{}",
            env.controller_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.wait_release_stage("v2", "prod", "Failed", Duration::from_secs(60))
        .await;
    assert_eq!(
        env.images("web-primary").await,
        vec![image("healthy", "v1")]
    );
}
