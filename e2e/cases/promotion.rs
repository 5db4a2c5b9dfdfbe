//! The happy path: a release through dev, test and prod.

use std::time::Duration;

use greenlight::api::release::ReleaseStatus;
use greenlight::api::stage::StagePhase;

use crate::env::{TestEnv, image, release_yaml, target_yaml};

pub fn three_stage_pipeline(pipeline: &str, prod_gates: &str) -> String {
    format!(
        r#"apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {{name: dev}}
spec:
  pipeline: {pipeline}
  target: {{name: web-dev}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {{name: test}}
spec:
  pipeline: {pipeline}
  requires: [dev]
  target: {{name: web-test}}
  replicas: 2
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {{name: prod}}
spec:
  pipeline: {pipeline}
  requires: [test]
  target: {{name: web-prod}}
  replicas: 3
  gates: {prod_gates}
"#
    )
}

/// A soak gate for prod: healthy in test for `duration`.
fn soak_gate(duration: &str) -> String {
    format!(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {{name: soaked-in-test}}\nspec:\n  type: soak\n  soak: {{stage: test, duration: {duration}}}\n"
    )
}

pub fn targets() -> String {
    ["web-dev", "web-test", "web-prod"]
        .map(target_yaml)
        .join("---\n")
}

pub async fn release_goes_dev_test_prod_and_soaks_before_prod(mut env: TestEnv) {
    env.apply(&targets());
    env.apply(&soak_gate("6s"));
    env.apply(&three_stage_pipeline("shop", "[soaked-in-test]"));
    env.start_controller();
    let digest = image("shop-1.0.0");
    env.apply(&release_yaml("shop-1-0-0", "shop", "1.0.0", &digest));

    let done = env
        .wait_release_stage("shop-1-0-0", "prod", "Succeeded", Duration::from_secs(120))
        .await;
    let status = done.status.clone().unwrap();
    assert_every_stage_runs_the_release(&env, &digest).await;
    assert_soak_held_prod_and_targets_are_untouched(&env, &status).await;
    assert_release_and_stages_report_success(&env).await;
    assert_metrics_counted_and_nothing_written_once_settled(&env).await;
    env.kill_controller();
}

async fn assert_every_stage_runs_the_release(env: &TestEnv, digest: &str) {
    for (stage, deployment, replicas) in [
        ("dev", "web-dev-primary", 1),
        ("test", "web-test-primary", 2),
        ("prod", "web-prod-primary", 3),
    ] {
        assert_eq!(
            env.images(deployment).await,
            vec![digest.to_string()],
            "{stage} runs the release's digest"
        );
        let d = env.deployment(deployment).await.unwrap();
        assert_eq!(
            d.spec.unwrap().replicas,
            Some(replicas),
            "{stage} primary replicas come from the Stage"
        );
        assert_eq!(
            d.status.unwrap().available_replicas,
            Some(replicas),
            "{stage} primary is available"
        );
        let s = env.stage(stage).await.status.unwrap();
        assert_eq!(s.current_release.as_deref(), Some("shop-1-0-0"));
        assert_eq!(s.history.len(), 1, "{stage} has one finished rollout");
    }
}

async fn assert_soak_held_prod_and_targets_are_untouched(env: &TestEnv, status: &ReleaseStatus) {
    // The soak gate held prod until the release had been healthy in test for 6s.
    let test_done = status.stages["test"].finished_at.unwrap();
    let prod_started = status.stages["prod"].started_at.unwrap();
    assert!(
        prod_started.duration_since(test_done) >= jiff::SignedDuration::from_secs(6),
        "prod started {prod_started}, test finished {test_done}"
    );
    let soak = &status.stages["prod"].gates[0];
    assert_eq!(soak.name, "soaked-in-test");
    assert_eq!(format!("{:?}", soak.result), "Passed");
    // The Git-owned targets were never written to: still zero replicas, generation 1.
    for target in ["web-dev", "web-test", "web-prod"] {
        let t = env.deployment(target).await.unwrap();
        assert_eq!(t.spec.unwrap().replicas, Some(0));
        assert_eq!(t.metadata.generation, Some(1), "{target} untouched");
    }
}

async fn assert_release_and_stages_report_success(env: &TestEnv) {
    // Release and stages tell the truth at a glance.
    env.wait_for(
        "release phase Succeeded",
        Duration::from_secs(20),
        || async {
            let r = env.release("shop-1-0-0").await;
            let s = r.status.unwrap_or_default();
            match (s.phase, s.summary.as_deref()) {
                (
                    Some(greenlight::api::release::ReleasePhase::Succeeded),
                    Some("dev=Succeeded test=Succeeded prod=Succeeded"),
                ) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let prod = env.stage("prod").await.status.unwrap();
    assert_eq!(prod.phase, Some(StagePhase::Idle));
    assert!(
        prod.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.is_true())
    );
    // Transitions emit Events,
    env.wait_event("RolloutSucceeded").await;
    // and holds are announced too.
    env.wait_event("WaitingForGate").await;
}

/// Resource versions of the release, the stages and their primaries.
async fn resource_versions(env: &TestEnv) -> Vec<Option<String>> {
    let mut v = vec![env.release("shop-1-0-0").await.metadata.resource_version];
    for stage in ["dev", "test", "prod"] {
        v.push(env.stage(stage).await.metadata.resource_version);
        v.push(
            env.deployment(&format!("web-{stage}-primary"))
                .await
                .unwrap()
                .metadata
                .resource_version,
        );
    }
    v
}

async fn assert_metrics_counted_and_nothing_written_once_settled(env: &TestEnv) {
    // The controller's metrics: help text on each, and the writes it made, by kind.
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", env.metrics_port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "greenlight_reconciles",
        "greenlight_reconcile_duration_seconds",
        "greenlight_gate_evaluations",
        "greenlight_rollouts",
        "greenlight_api_writes",
    ] {
        assert!(
            metrics.contains(&format!("# HELP {name} ")),
            "{name} has help text:\n{metrics}"
        );
    }
    assert!(
        metrics.contains(r#"greenlight_rollouts_total{outcome="succeeded"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"greenlight_gate_evaluations_total{gate_type="soak",verdict="passed"}"#),
        "{metrics}"
    );
    // Once settled, reconciles keep running but write nothing.
    let before = resource_versions(env).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        resource_versions(env).await,
        before,
        "no status or workload write without a change"
    );
}

pub async fn newer_release_supersedes_an_older_one_waiting_at_a_stage(mut env: TestEnv) {
    env.apply(&targets());
    env.apply(&soak_gate("20s"));
    env.apply(&three_stage_pipeline("shop", "[soaked-in-test]"));
    env.start_controller();
    env.apply(&release_yaml("r1", "shop", "1", &image("r1")));
    env.wait_release_stage("r1", "prod", "Waiting", Duration::from_secs(60))
        .await;
    env.apply(&release_yaml("r2", "shop", "2", &image("r2")));

    // r2 overtakes r1 in dev and test; at prod r1 is superseded, and r2 still soaks in full.
    let r1 = env
        .wait_release_stage("r1", "prod", "Superseded", Duration::from_secs(60))
        .await;
    assert!(
        r1.status.unwrap().stages["prod"]
            .message
            .as_deref()
            .unwrap()
            .contains('2')
    );
    let r2 = env
        .wait_release_stage("r2", "prod", "Succeeded", Duration::from_secs(90))
        .await;
    let s = r2.status.unwrap();
    let soaked = s.stages["prod"]
        .started_at
        .unwrap()
        .duration_since(s.stages["test"].finished_at.unwrap());
    assert!(
        soaked >= jiff::SignedDuration::from_secs(20),
        "r2 soaked only {soaked}"
    );
    // The Release's entry is written before the Stage's status that records the history.
    let released: Vec<String> = env
        .wait_for("prod's history", Duration::from_secs(20), || async {
            let history = env.stage("prod").await.status.unwrap_or_default().history;
            match history.is_empty() {
                true => Err("empty".to_string()),
                false => Ok(history.into_iter().map(|h| h.release).collect()),
            }
        })
        .await;
    assert_eq!(released, ["r2"], "r1 was never deployed to prod");
    env.wait_for("r1 phase Superseded", Duration::from_secs(20), || async {
        let p = env.release("r1").await.status.unwrap_or_default().phase;
        if p == Some(greenlight::api::release::ReleasePhase::Superseded) {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    })
    .await;
}

pub async fn a_target_running_pods_of_its_own_is_flagged_and_never_touched(mut env: TestEnv) {
    env.apply(&target_yaml("web-dev").replace("replicas: 0", "replicas: 1"));
    env.apply("apiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {name: dev}\nspec: {pipeline: shop, target: {name: web-dev}}\n");
    env.start_controller();
    env.apply(&release_yaml("shop-9", "shop", "9", &image("shop-9")));
    env.wait_release_stage("shop-9", "dev", "Succeeded", Duration::from_secs(60))
        .await;
    let condition = env
        .wait_for(
            "the TargetRunsPods warning",
            Duration::from_secs(30),
            || async {
                let s = env.stage("dev").await.status.unwrap_or_default();
                s.conditions
                    .iter()
                    .find(|c| c.type_ == "TargetRunsPods" && c.is_true())
                    .cloned()
                    .ok_or(format!("{:?}", s.conditions))
            },
        )
        .await;
    assert!(condition.message.contains("replicas: 0"), "{condition:?}");
    let target = env.deployment("web-dev").await.unwrap();
    assert_eq!(
        target.spec.unwrap().replicas,
        Some(1),
        "Git owns the target: the operator does not scale it"
    );
    assert_eq!(target.metadata.generation, Some(1));
    assert!(
        target
            .metadata
            .managed_fields
            .unwrap_or_default()
            .iter()
            .all(|m| m.manager.as_deref() != Some("greenlight"))
    );

    // Scaled to zero in Git, the warning goes away.
    env.apply(&target_yaml("web-dev"));
    env.wait_for("the warning to clear", Duration::from_secs(30), || async {
        let s = env.stage("dev").await.status.unwrap_or_default();
        if s.conditions.iter().any(|c| c.type_ == "TargetRunsPods") {
            Err(format!("{:?}", s.conditions))
        } else {
            Ok(())
        }
    })
    .await;
}
