//! Failed rollouts: automatic rollback, and what a failed release may never do afterwards.

use std::time::Duration;

use greenlight::api::release::ReleasePhase;
use greenlight::api::stage::{RolloutOutcome, StagePhase};

use crate::env::{TestEnv, image, release_yaml, target_yaml};
use crate::support::kubelet::Hold;

/// dev with two replicas and an 8s progress deadline, then test.
const DEV_AND_TEST_STAGES: &str = r#"apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {name: dev}
spec:
  pipeline: shop
  target: {name: web-dev}
  replicas: 2
  progressDeadline: 8s
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {name: test}
spec:
  pipeline: shop
  requires: [dev]
  target: {name: web-test}
"#;

pub async fn release_whose_pods_never_become_ready_is_rolled_back(mut env: TestEnv) {
    env.apply(&[target_yaml("web-dev"), target_yaml("web-test")].join("---\n"));
    env.apply(DEV_AND_TEST_STAGES);
    env.start_controller();
    let good = image("shop-good");
    let crashing = image("shop-crashing");
    let fixed = image("shop-fixed");
    env.kubelet.hold(Hold::Image(crashing.clone()));

    env.apply(&release_yaml("v1", "shop", "1.0.0", &good));
    env.wait_release_stage("v1", "test", "Succeeded", Duration::from_secs(60))
        .await;
    env.apply(&release_yaml("v2", "shop", "2.0.0", &crashing));
    env.wait_release_stage("v2", "dev", "Progressing", Duration::from_secs(30))
        .await;
    // A newer release arrives mid-rollout: it must wait, not interrupt v2's rollout.
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.apply(&release_yaml("v3", "shop", "3.0.0", &fixed));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.images("web-dev-primary").await,
        vec![crashing.clone()],
        "v2's rollout is not interrupted by v3"
    );

    assert_v2_fails_at_dev_on_its_deadline_and_says_so(&env).await;
    assert_v3_follows_the_rollback_and_v2_never_reaches_test(&env, &fixed).await;
}

async fn assert_v2_fails_at_dev_on_its_deadline_and_says_so(env: &TestEnv) {
    let failed = env
        .wait_release_stage("v2", "dev", "Failed", Duration::from_secs(60))
        .await;
    let entry = failed.status.clone().unwrap().stages["dev"].clone();
    assert_eq!(entry.reason.as_deref(), Some("ProgressDeadlineExceeded"));
    assert!(
        entry.message.as_deref().unwrap().contains("8s"),
        "{entry:?}"
    );

    env.wait_for(
        "v2 marked Failed naming the stage",
        Duration::from_secs(30),
        || async {
            let s = env.release("v2").await.status.unwrap_or_default();
            match (s.phase, s.message.as_deref()) {
                (Some(ReleasePhase::Failed), Some(m))
                    if m.contains("'dev'") && m.contains("ProgressDeadlineExceeded") =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

async fn assert_v3_follows_the_rollback_and_v2_never_reaches_test(env: &TestEnv, fixed: &str) {
    // Then v3 rolls out; the history reads newest first.
    env.wait_release_stage("v3", "test", "Succeeded", Duration::from_secs(90))
        .await;
    let dev = env.stage("dev").await.status.unwrap();
    let outcomes: Vec<(String, RolloutOutcome)> = dev
        .history
        .iter()
        .map(|h| (h.release.clone(), h.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("v3".into(), RolloutOutcome::Succeeded),
            ("v2".into(), RolloutOutcome::RolledBack),
            ("v1".into(), RolloutOutcome::Succeeded)
        ]
    );
    assert!(
        dev.history[0].started_at >= dev.history[1].finished_at,
        "v3 started only after v2's rollback finished"
    );
    assert!(
        dev.history[1]
            .reason
            .as_deref()
            .unwrap()
            .contains("ProgressDeadlineExceeded")
    );

    // v2 never reached test; test went from v1 to v3.
    let v2 = env.release("v2").await.status.unwrap();
    let v2_at_test = v2.stages.get("test").map(|e| e.phase);
    assert!(
        !matches!(v2_at_test, Some(p) if format!("{p:?}") == "Succeeded" || format!("{p:?}") == "Progressing"),
        "{v2_at_test:?}"
    );
    // The release's entry is written before the stage status that makes it final: a loaded
    // machine can show one before the other.
    env.wait_for(
        "test's history to show v3 after v1",
        Duration::from_secs(30),
        || async {
            let test = env.stage("test").await.status.unwrap_or_default();
            let releases: Vec<String> = test.history.iter().map(|h| h.release.clone()).collect();
            match releases == ["v3", "v1"] {
                true => Ok(()),
                false => Err(format!("{releases:?}")),
            }
        },
    )
    .await;
    assert_eq!(
        env.images("web-test-primary").await,
        vec![fixed.to_string()]
    );
    assert_eq!(env.images("web-dev-primary").await, vec![fixed.to_string()]);
    assert_eq!(
        dev.phase,
        Some(StagePhase::Idle),
        "a successful newer rollout clears the failure"
    );

    env.wait_event("RolloutFailed").await;
    env.wait_event("RollbackCompleted").await;
}

pub async fn failed_rollout_reverts_primary_and_the_stage_says_so(mut env: TestEnv) {
    env.apply(&target_yaml("web-dev"));
    env.apply(
        r#"apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {name: dev}
spec:
  pipeline: shop
  target: {name: web-dev}
  progressDeadline: 5s
"#,
    );
    env.start_controller();
    let good = image("revert-good");
    let crashing = image("revert-crashing");
    env.kubelet.hold(Hold::Image(crashing.clone()));
    env.apply(&release_yaml("v1", "shop", "1.0.0", &good));
    env.wait_release_stage("v1", "dev", "Succeeded", Duration::from_secs(60))
        .await;
    env.apply(&release_yaml("v2", "shop", "2.0.0", &crashing));
    env.wait_release_stage("v2", "dev", "Failed", Duration::from_secs(60))
        .await;
    let stage = env
        .wait_for(
            "dev to finish its rollback",
            Duration::from_secs(60),
            || async {
                let s = env.stage("dev").await.status.unwrap_or_default();
                if s.phase == Some(StagePhase::Failed) {
                    Ok(s)
                } else {
                    Err(format!("{:?} {:?}", s.phase, s.message))
                }
            },
        )
        .await;
    assert_eq!(stage.current_release.as_deref(), Some("v1"));
    assert!(
        stage
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.is_true() && c.reason == "RolledBack"),
        "{:?}",
        stage.conditions
    );
    assert!(
        stage
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && !c.is_true())
    );
    let primary = env.deployment("web-dev-primary").await.unwrap();
    assert_eq!(env.images("web-dev-primary").await, vec![good]);
    assert_eq!(
        primary.status.unwrap().available_replicas,
        Some(1),
        "primary runs the previous release again"
    );
}
