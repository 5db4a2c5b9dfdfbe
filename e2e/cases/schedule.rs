//! The schedule trigger: a stage promotes at its cron tick, not before.

use std::time::Duration;

use jiff::Timestamp;

use crate::env::{TestEnv, image, release_yaml, target_yaml};

pub async fn schedule_trigger_promotes_at_its_cron_tick_and_not_before(mut env: TestEnv) {
    env.apply(&target_yaml("web-nightly"));
    env.apply(
        r#"apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {name: nightly}
spec:
  pipeline: batch
  target: {name: web-nightly}
  trigger:
    type: schedule
    schedule: "* * * * *"
    timeZone: Asia/Kolkata
"#,
    );
    env.start_controller();
    env.apply(&release_yaml("batch-7", "batch", "7", &image("batch-7")));

    let waiting = env
        .wait_release_stage("batch-7", "nightly", "Waiting", Duration::from_secs(30))
        .await;
    let entry = &waiting.status.unwrap().stages["nightly"];
    assert_eq!(
        entry.reason.as_deref(),
        Some("WaitingForSchedule"),
        "{entry:?}"
    );
    let since = env
        .wait_for(
            "the stage to record its candidate",
            Duration::from_secs(10),
            || async {
                let s = env.stage("nightly").await.status.unwrap_or_default();
                s.candidate_since.ok_or(format!("{s:?}"))
            },
        )
        .await;
    // The first tick strictly after the release became the candidate: the next full minute.
    let tick =
        Timestamp::from_second(since.as_second() - since.as_second().rem_euclid(60) + 60).unwrap();
    if Timestamp::now() < tick {
        assert!(
            env.deployment("web-nightly-primary").await.is_none(),
            "nothing is deployed before the tick"
        );
    }

    let done = env
        .wait_release_stage("batch-7", "nightly", "Succeeded", Duration::from_secs(100))
        .await;
    let started = done.status.unwrap().stages["nightly"].started_at.unwrap();
    assert!(
        started >= tick,
        "rollout started at {started}, before the tick at {tick}"
    );
    let late = Duration::try_from(started.duration_since(tick)).unwrap_or_default();
    crate::support::figures::record("a cron tick to its rollout's start", late);
    // Woken by a timer at the tick, not by a requeue up to five minutes later.
    assert!(
        late < Duration::from_secs(30),
        "rollout started at {started}, tick was {tick}"
    );
    assert_eq!(
        env.images("web-nightly-primary").await,
        vec![image("batch-7")]
    );
}
