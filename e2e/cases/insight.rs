//! Delivery insight on the real control plane: DORA figures that match a hand count of the
//! Releases' own records and survive a restart, kstatus verdicts as Flux computes them, and a
//! canary Stage whose deletion gives its route back to the primary.

use std::time::Duration;

use greenlight::api::release::{AuditAction, Release};
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use super::canary::{
    Bed, image as app_image, route_canary_weight, start_bed_with, without_background_analysis,
};
use super::plugin::plugin;
use crate::env::{TestEnv, image, metric_sum, release_yaml, target_yaml};
use crate::support::kstatus;
use crate::support::kubelet::Hold;

const WAIT: Duration = Duration::from_secs(90);

/// A canary Stage whose HTTPRoute does not exist.
const GHOST: &str = r#"apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {name: ghost}
spec:
  pipeline: ghosts
  target: {name: web}
  strategy:
    type: canary
    canary:
      trafficRouting: {gatewayAPI: {httpRoute: no-such-route}}
      steps: [{setWeight: 50}]
"#;

/// dev, then prod with a short progress deadline so a rollout that never gets ready fails.
const PIPELINE: &str = r#"apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {name: dev}
spec:
  pipeline: shop
  target: {name: web-dev}
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {name: prod}
spec:
  pipeline: shop
  requires: [dev]
  target: {name: web-prod}
  progressDeadline: 6s
"#;

/// A release with a type and, optionally, the time of its source commit.
fn typed_release(name: &str, version: &str, kind: &str, commit: Option<Timestamp>) -> String {
    let mut yaml = release_yaml(name, "shop", version, &image(name));
    yaml.push_str(&format!("  type: {kind}\n"));
    if let Some(t) = commit {
        yaml.push_str(&format!(
            "  source: {{commit: abc123, commitTime: \"{t}\"}}\n"
        ));
    }
    yaml
}

/// v1 and v2 succeed; v3 never gets ready at prod and is rolled back; the hotfix v4 restores
/// prod. The report and the metrics give exactly the figures counted by hand from the
/// Releases, before and after a restart; Flux's kstatus reads the prod Stage right throughout.
pub async fn dora_figures_match_a_hand_count_of_the_releases_and_survive_a_restart(
    mut env: TestEnv,
) {
    env.apply(&[target_yaml("web-dev"), target_yaml("web-prod")].join("---\n"));
    env.apply(PIPELINE);
    env.start_controller();
    let commit = Timestamp::now() - SignedDuration::from_hours(3);
    for (name, kind, commit) in [("v1", "feature", Some(commit)), ("v2", "feature", None)] {
        env.apply(&typed_release(name, name, kind, commit));
        env.wait_release_stage(name, "prod", "Succeeded", WAIT)
            .await;
    }
    // The Stage's status follows the Release's entry; kstatus reads the Stage.
    wait_stage_kstatus(&env, "prod", "Current").await;
    let hold = Hold::Label {
        namespace: env.ns.clone(),
        key: "greenlight.dev/stage".into(),
        value: "prod".into(),
    };
    env.kubelet.hold(hold.clone());
    env.apply(&typed_release("v3", "v3", "feature", None));
    env.wait_release_stage("v3", "prod", "Progressing", WAIT)
        .await;
    wait_stage_kstatus(&env, "prod", "InProgress").await;
    env.wait_release_stage("v3", "prod", "Failed", WAIT).await;
    env.kubelet.release(&hold);
    wait_stage_kstatus(&env, "prod", "Failed").await;
    env.apply(&typed_release("v4", "v4", "hotfix", None));
    env.wait_release_stage("v4", "prod", "Succeeded", WAIT)
        .await;
    wait_stage_kstatus(&env, "prod", "Current").await;

    let expected = hand_count(&env).await;
    assert_report_and_metrics(&env, &expected).await;
    env.kill_controller();
    env.start_controller();
    assert_report_and_metrics(&env, &expected).await;
}

async fn wait_stage_kstatus(env: &TestEnv, stage: &str, want: &str) {
    env.wait_for(&format!("kstatus {want} for {stage}"), WAIT, || async {
        let obj = env.json::<greenlight::api::Stage>(stage).await;
        match kstatus::of(&obj) {
            got if got == want => Ok(()),
            got => Err(format!("{got}: {}", obj["status"]["conditions"])),
        }
    })
    .await;
}

/// The figures, counted by hand from the Releases' records.
#[derive(Debug, PartialEq)]
struct Expected {
    prod_lead_p50: i64,
    prod_lead_p90: i64,
    restore: i64,
}

/// The time of `release`'s audit entry `action` at prod.
fn entry_time(release: &Release, action: AuditAction) -> Timestamp {
    let trail = &release.status.as_ref().expect("a status").audit;
    let entry = trail
        .iter()
        .find(|e| e.stage == "prod" && e.action == action);
    entry
        .unwrap_or_else(|| panic!("{action:?} at prod in {trail:?}"))
        .time
}

async fn hand_count(env: &TestEnv) -> Expected {
    let mut leads = Vec::new();
    for name in ["v1", "v2", "v4"] {
        let release = env.release(name).await;
        let origin = match release.spec.source.as_ref().and_then(|s| s.commit_time) {
            Some(t) => t,
            None => {
                release
                    .metadata
                    .creation_timestamp
                    .clone()
                    .expect("created")
                    .0
            }
        };
        let promoted = entry_time(&release, AuditAction::Promoted);
        leads.push(promoted.duration_since(origin).as_secs());
    }
    leads.sort();
    let failed = entry_time(&env.release("v3").await, AuditAction::RolledBack);
    let restored = entry_time(&env.release("v4").await, AuditAction::Promoted);
    assert!(
        leads[2] >= 3 * 3600,
        "v1's lead time counts from its commit 3h ago: {leads:?}"
    );
    Expected {
        // Nearest rank of three: the second and the third.
        prod_lead_p50: leads[1],
        prod_lead_p90: leads[2],
        restore: restored.duration_since(failed).as_secs(),
    }
}

async fn assert_report_and_metrics(env: &TestEnv, expected: &Expected) {
    let (code, out, err) = plugin(env, None, &["dora", "-o", "json", "--since", "90d"]);
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).expect("dora -o json");
    let pipeline = &report[0];
    assert_eq!(pipeline["production"], serde_json::json!(["prod"]));
    let f = &pipeline["figures"];
    assert_eq!(
        (f["deployments"].as_u64(), f["failures"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(f["changeFailureRate"].as_f64(), Some(0.25));
    assert_eq!(f["deploymentsPerDay"].as_f64(), Some(3.0 / 90.0));
    assert_eq!(
        f["leadTimeSeconds"]["p50"].as_i64(),
        Some(expected.prod_lead_p50)
    );
    assert_eq!(
        f["leadTimeSeconds"]["p90"].as_i64(),
        Some(expected.prod_lead_p90)
    );
    assert_eq!(
        f["timeToRestoreSeconds"]["p50"].as_i64(),
        Some(expected.restore)
    );
    // One of the three releases that reached prod was a hotfix.
    assert_eq!(f["hotfixes"].as_u64(), Some(1));
    assert_eq!(f["reworkRate"].as_f64(), Some(1.0 / 3.0));
    assert_eq!(f["openOutages"].as_u64(), Some(0));
    assert_eq!(f["failureCauses"][0]["reason"], "ProgressDeadlineExceeded");
    assert_eq!(f["bands"]["changeFailureRate"], "low");
    let dev = pipeline["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "dev");
    let dev = &dev.expect("dev's figures")["figures"];
    assert_eq!(
        (dev["deployments"].as_u64(), dev["failures"].as_u64()),
        (Some(4), Some(0))
    );
    let (_, table, _) = plugin(env, None, &["dora"]);
    eprintln!("kubectl greenlight dora:\n{table}");
    assert!(
        table.contains("PIPELINE shop") && table.contains("ProgressDeadlineExceeded x1"),
        "{table}"
    );
    assert_metrics(env, expected).await;
}

async fn assert_metrics(env: &TestEnv, expected: &Expected) {
    let text = env
        .wait_for("the DORA series", WAIT, || async {
            let text = env.metrics().await;
            match text.contains("greenlight_dora_change_failure_ratio{") {
                true => Ok(text),
                false => Err("no greenlight_dora_ series yet".into()),
            }
        })
        .await;
    let ns = env.ns.clone();
    let at = |stage: &'static str| {
        vec![
            ("namespace", ns.clone()),
            ("pipeline", "shop".into()),
            ("stage", stage.to_string()),
        ]
    };
    let value = |name: &str, labels: Vec<(&str, String)>, extra: &[(&str, &str)]| {
        let mut all: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(extra);
        metric_sum(&text, name, &all)
    };
    assert_eq!(
        value("greenlight_dora_change_failure_ratio", at(""), &[]),
        0.25
    );
    assert_eq!(
        value("greenlight_dora_rework_ratio", at(""), &[]),
        1.0 / 3.0
    );
    assert_eq!(
        value(
            "greenlight_dora_rollouts",
            at("dev"),
            &[("outcome", "succeeded")]
        ),
        4.0
    );
    let lead = value(
        "greenlight_dora_lead_time_seconds",
        at(""),
        &[("quantile", "0.5")],
    );
    assert_eq!(lead, expected.prod_lead_p50 as f64);
    let restore = value(
        "greenlight_dora_time_to_restore_seconds",
        at(""),
        &[("quantile", "0.5")],
    );
    assert_eq!(restore, expected.restore as f64);
    let cause = [("reason", "ProgressDeadlineExceeded"), ("gate", "")];
    assert_eq!(value("greenlight_dora_failures", at("prod"), &cause), 1.0);
    assert_eq!(
        value("greenlight_stage_phase", at("prod"), &[("phase", "Idle")]),
        1.0
    );
    assert!(
        !text.contains("release=\""),
        "no series is labelled by release"
    );
}

/// After its Stage went: no request found nothing to serve it, and the primary and its
/// Service are still there, unowned, saying what happened.
async fn the_primary_still_serves_marked_orphaned(env: &TestEnv, bed: &Bed) {
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        bed.load.unserved(),
        0,
        "every request found a pod to serve it"
    );
    let primary = env
        .deployment("web-primary")
        .await
        .expect("the primary still serves");
    let orphaned = primary.metadata.annotations.unwrap_or_default();
    assert!(
        orphaned
            .get("greenlight.dev/orphaned")
            .is_some_and(|n| n.contains("keeps serving 1")),
        "{orphaned:?}"
    );
    assert_eq!(primary.metadata.owner_references, None);
    let service = env
        .cp
        .kubectl(&["get", "-n", &env.ns, "service", "web-primary", "-o", "name"]);
    assert!(
        service.contains("web-primary"),
        "the route's backend is still there"
    );
}

/// A canary Stage is pruned as Argo CD prunes (foreground cascade) while its canary has a
/// quarter of the traffic: the route is left with the primary alone at full weight, the
/// primary and its Service keep serving (no request finds nothing to serve it), marked
/// orphaned, and the Stage goes. A Stage whose route does not exist is deleted too.
pub async fn deleting_a_canary_stage_mid_rollout_leaves_the_route_with_only_the_primary(
    mut env: TestEnv,
) {
    let (v1, v2) = (app_image("healthy", "v1"), app_image("healthy", "v2"));
    let steps = "      - setWeight: 25\n      - pause: {}\n";
    let bed: Bed = start_bed_with(&mut env, &v1, &[&v2], steps, without_background_analysis).await;
    let prod = env.stage("prod").await;
    assert!(
        prod.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"greenlight.dev/restore-traffic".to_string())
    );
    env.apply(&release_yaml("v2", "shop", "2", &v2));
    env.wait_for("the canary at 25%", WAIT, || async {
        match route_canary_weight(&env).await {
            25 => Ok(()),
            w => Err(format!("weight {w}")),
        }
    })
    .await;
    env.cp.kubectl(&[
        "delete",
        "-n",
        &env.ns,
        "stage",
        "prod",
        "--cascade=foreground",
        "--wait=true",
        "--timeout=60s",
    ]);
    the_primary_still_serves_marked_orphaned(&env, &bed).await;
    let route = env
        .cp
        .kubectl(&["get", "-n", &env.ns, "httproute", "web", "-o", "json"]);
    let route: Value = serde_json::from_str(&route).expect("route json");
    let refs = route["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .expect("backendRefs");
    let named: Vec<(&str, i64)> = refs
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default(),
                r["weight"].as_i64().unwrap_or(1),
            )
        })
        .collect();
    assert_eq!(named, [("web-primary", 100)], "{route}");
    env.apply(GHOST);
    env.wait_for("the finalizer on ghost", WAIT, || async {
        let s = env.stage("ghost").await;
        match s.metadata.finalizers.unwrap_or_default().is_empty() {
            false => Ok(()),
            true => Err("no finalizer yet".to_string()),
        }
    })
    .await;
    env.cp.kubectl(&[
        "delete",
        "-n",
        &env.ns,
        "stage",
        "ghost",
        "--wait=true",
        "--timeout=60s",
    ]);
}
