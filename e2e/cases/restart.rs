//! The controller dies mid-promotion; its successor resumes from the status it left.

use std::time::Duration;

use greenlight::api::stage::StagePhase;

use crate::cases::promotion::{targets, three_stage_pipeline};
use crate::env::{TestEnv, image, release_yaml};
use crate::support::kubelet::Hold;

pub async fn controller_killed_mid_promotion_resumes_without_repeating_finished_stages(
    mut env: TestEnv,
) {
    env.apply(&targets());
    env.apply(&three_stage_pipeline("shop", "[]"));
    let hold = Hold::Label {
        namespace: env.ns.clone(),
        key: "greenlight.dev/stage".into(),
        value: "test".into(),
    };
    env.kubelet.hold(hold.clone());
    env.start_controller();
    env.apply(&release_yaml("shop-5", "shop", "5.0.0", &image("shop-5")));

    env.wait_release_stage("shop-5", "test", "Progressing", Duration::from_secs(60))
        .await;
    let test_rollout = env
        .wait_for(
            "test's rollout recorded",
            Duration::from_secs(10),
            || async {
                let s = env.stage("test").await.status.unwrap_or_default();
                s.rollout.clone().ok_or(format!("{s:?}"))
            },
        )
        .await;
    let dev_before = env.stage("dev").await.status.unwrap();
    assert_eq!(dev_before.history.len(), 1);

    env.kill_controller();
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.kubelet.release(&hold);
    env.start_controller();

    env.wait_release_stage("shop-5", "prod", "Succeeded", Duration::from_secs(90))
        .await;
    let dev_after = env.stage("dev").await.status.unwrap();
    assert_eq!(
        dev_after.history, dev_before.history,
        "dev's finished rollout is not repeated"
    );
    let test = env.stage("test").await.status.unwrap();
    assert_eq!(test.history.len(), 1);
    assert_eq!(
        test.history[0].started_at, test_rollout.started_at,
        "test's rollout resumed rather than restarted"
    );
    assert_eq!(test.phase, Some(StagePhase::Idle));
    let started: Vec<String> = env
        .events("RolloutStarted")
        .await
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Stage"))
        .filter_map(|e| e.regarding.and_then(|r| r.name))
        .collect();
    let mut sorted = started.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["dev", "prod", "test"],
        "one RolloutStarted per stage: {started:?}"
    );
    assert_eq!(env.images("web-prod-primary").await, vec![image("shop-5")]);
}
