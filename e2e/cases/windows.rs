//! Release windows: a blackout holds a release and lets it go the moment it ends.

use std::time::Duration;

use greenlight::api::stage::StagePhase;
use jiff::{SignedDuration, Timestamp, ToSpan};

use crate::env::{TestEnv, image, release_yaml, target_yaml};

/// dev, then prod with a "quarterly close" deny window on `cron` lasting `duration_secs`.
fn dev_and_prod_with_a_blackout(cron: &str, duration_secs: i64) -> String {
    format!(
        r#"apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {{name: dev}}
spec:
  pipeline: shop
  target: {{name: web-dev}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {{name: prod}}
spec:
  pipeline: shop
  requires: [dev]
  target: {{name: web-prod}}
  windows:
  - kind: deny
    schedule: "{cron}"
    duration: {duration_secs}s
    timeZone: Europe/Paris
    reason: quarterly close
"#
    )
}

pub async fn blackout_window_holds_prod_until_it_ends(mut env: TestEnv) {
    // A deny window that started at the top of this minute and ends 15 s from now.
    let now = Timestamp::now();
    let zoned = now.to_zoned(jiff::tz::TimeZone::get("Europe/Paris").unwrap());
    let minute_start = zoned.with().second(0).subsec_nanosecond(0).build().unwrap();
    let ends = now + 15.seconds();
    let duration_secs = ends.duration_since(minute_start.timestamp()).as_secs() + 1;
    let cron = format!("{} {} * * *", zoned.minute(), zoned.hour());
    env.apply(&[target_yaml("web-dev"), target_yaml("web-prod")].join("---\n"));
    env.apply(&dev_and_prod_with_a_blackout(&cron, duration_secs));
    let window_end = minute_start.timestamp() + SignedDuration::from_secs(duration_secs);
    env.start_controller();
    env.apply(&release_yaml("shop-2", "shop", "2.0.0", &image("shop-2")));

    env.wait_release_stage("shop-2", "dev", "Succeeded", Duration::from_secs(60))
        .await;
    assert_prod_is_held_inside_the_window_saying_why(&env, window_end).await;
    assert_prod_starts_the_moment_the_window_ends(&env, window_end).await;
}

async fn assert_prod_is_held_inside_the_window_saying_why(env: &TestEnv, window_end: Timestamp) {
    let held = env
        .wait_for(
            "prod held by the blackout",
            Duration::from_secs(30),
            || async {
                let r = env.release("shop-2").await;
                let reason = r
                    .status
                    .as_ref()
                    .and_then(|s| s.stages.get("prod"))
                    .and_then(|e| e.reason.clone());
                if reason.as_deref() == Some("BlockedByWindow") {
                    Ok(r)
                } else {
                    Err(format!("{reason:?}"))
                }
            },
        )
        .await;
    assert!(
        Timestamp::now() < window_end,
        "the test must observe the hold inside the window"
    );
    let entry = &held.status.unwrap().stages["prod"];
    assert_eq!(entry.reason.as_deref(), Some("BlockedByWindow"));
    assert!(
        entry
            .message
            .as_deref()
            .unwrap_or("")
            .contains("quarterly close"),
        "{entry:?}"
    );
    env.wait_for(
        "prod to say why it waits",
        Duration::from_secs(10),
        || async {
            let s = env.stage("prod").await.status.unwrap_or_default();
            match (s.phase, s.message.as_deref()) {
                (Some(StagePhase::Waiting), Some(m)) if m.contains("quarterly close") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

async fn assert_prod_starts_the_moment_the_window_ends(env: &TestEnv, window_end: Timestamp) {
    let done = env
        .wait_release_stage("shop-2", "prod", "Succeeded", Duration::from_secs(60))
        .await;
    let started = done.status.unwrap().stages["prod"].started_at.unwrap();
    assert!(
        started >= window_end,
        "prod started at {started}, inside the blackout that ended at {window_end}"
    );
    let late = Duration::try_from(started.duration_since(window_end)).unwrap_or_default();
    crate::support::figures::record("a blackout's end to the held release's start", late);
    // Woken by a timer as the window closes, not by a requeue up to five minutes later.
    assert!(
        late < Duration::from_secs(30),
        "prod started {started}, window ended {window_end}"
    );
    assert_eq!(env.images("web-prod-primary").await, vec![image("shop-2")]);
    let held: Vec<String> = env
        .events("BlockedByWindow")
        .await
        .into_iter()
        .filter_map(|e| e.note)
        .collect();
    assert!(
        held.iter().any(|n| n.contains("quarterly close")),
        "the hold is announced: {held:?}"
    );
}
