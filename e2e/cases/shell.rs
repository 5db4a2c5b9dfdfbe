//! The operator under a hostile shell: writes the apiserver refuses, a controller killed over and
//! over, events that must not fold into one another, and gates that exist but cannot work.
//!
//! New status fields and phases are read as JSON (`TestEnv::json`), so these cases do not depend
//! on the typed structs knowing them.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use greenlight::api::{CommandPhase, Release, Stage, StageCommand};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::cases::promotion::{targets, three_stage_pipeline};
use crate::env::{TestEnv, image, metric_sum, release_yaml, target_yaml};
use crate::support::http::WebhookServer;

const QUOTA: &str = "deployments";
const DEPLOYMENT_COUNT: &str = "count/deployments.apps";
const WRITES: &str = "greenlight_api_writes_total";
const REFUSALS: &str = "greenlight_api_write_refusals_total";
const DEPLOYMENT_APPLY: (&str, &str) = ("kind", "deployment_apply");

/// A one-stage pipeline `name` on target `web-{name}`, rolling out every new release.
fn one_stage(name: &str, gates: &str) -> String {
    format!(
        r#"{target}---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {{name: {name}}}
spec:
  pipeline: {name}
  target: {{name: web-{name}}}
  trigger: {{type: auto}}
  gates: {gates}
"#,
        target = target_yaml(&format!("web-{name}"))
    )
}

/// `status.stages.<stage>` of a release read as JSON; `Null` while it has none.
fn stage_entry<'a>(release: &'a Value, stage: &str) -> &'a Value {
    &release["status"]["stages"][stage]
}

/// The condition of this type in an object's status, when it is `True`.
fn true_condition(object: &Value, type_: &str) -> Option<Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
        .cloned()
}

/// The audit entries of a release (as JSON) with this action at this stage.
fn audit_entries(release: &Value, stage: &str, action: &str) -> Vec<Value> {
    release["status"]["audit"]
        .as_array()
        .map(|trail| {
            trail
                .iter()
                .filter(|e| e["stage"] == stage && e["action"] == action)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the release's entry at `stage` has `phase`; returns the release as JSON.
async fn wait_phase(
    env: &TestEnv,
    release: &str,
    stage: &str,
    phase: &str,
    timeout: Duration,
) -> Value {
    env.wait_for(
        &format!("release {release} to be {phase} at {stage}"),
        timeout,
        || async {
            let r = env.json::<Release>(release).await;
            if stage_entry(&r, stage)["phase"] == phase {
                Ok(r)
            } else {
                Err(r["status"].to_string())
            }
        },
    )
    .await
}

/// Events with this reason regarding the Stage `stage`.
async fn stage_events(env: &TestEnv, stage: &str, reason: &str) -> Vec<Event> {
    env.events(reason)
        .await
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("Stage") && r.name.as_deref() == Some(stage)
            })
        })
        .collect()
}

/// How many times an Event object says it was emitted: a folded event counts its series.
fn times_emitted(event: &Event) -> i32 {
    event.series.as_ref().map_or(1, |s| s.count)
}

/// What the events say, to show in a failure: name, note and series count of each.
fn describe(events: &[Event]) -> Vec<(String, String, i32)> {
    events
        .iter()
        .map(|e| {
            (
                e.metadata.name.clone().unwrap_or_default(),
                e.note.clone().unwrap_or_default(),
                times_emitted(e),
            )
        })
        .collect()
}

/// A quota on `count/deployments.apps` as high as the Deployments already here, so the next
/// one is refused with "exceeded quota". The test bed runs no quota controller, so the test
/// writes the quota's status as that controller would, then waits for a dry run to be refused.
async fn refuse_new_deployments(env: &TestEnv, existing: usize) {
    env.apply(&format!(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {{name: {QUOTA}}}\nspec:\n  hard: {{{DEPLOYMENT_COUNT}: \"{existing}\"}}\n"
    ));
    let counts = json!({ DEPLOYMENT_COUNT: existing.to_string() });
    env.api::<ResourceQuota>()
        .patch_status(
            QUOTA,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"hard": counts, "used": counts}})),
        )
        .await
        .expect("write the quota's status");
    let probe: Deployment = serde_norway::from_str(&target_yaml("quota-probe")).expect("probe");
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    env.wait_for(
        "the quota to refuse a new Deployment",
        Duration::from_secs(30),
        || async {
            match env.api::<Deployment>().create(&dry_run, &probe).await {
                Err(e) if e.to_string().contains("exceeded quota") => Ok(()),
                Err(e) => Err(e.to_string()),
                Ok(_) => Err("a dry-run Deployment was admitted".to_string()),
            }
        },
    )
    .await;
}

/// Waits until the Stage is Stalled by a refused write and the release Blocked there; returns
/// the Stalled condition's message.
async fn wait_write_refused(env: &TestEnv, stage: &str, release: &str) -> String {
    let (condition, entry) = env
        .wait_for(
            &format!("stage {stage} Stalled by a refused write and {release} Blocked there"),
            Duration::from_secs(90),
            || async {
                let s = env.json::<Stage>(stage).await;
                let r = env.json::<Release>(release).await;
                let entry = stage_entry(&r, stage).clone();
                match true_condition(&s, "Stalled") {
                    Some(c) if c["reason"] == "WriteRefused" && entry["phase"] == "Blocked" => {
                        Ok((c, entry))
                    }
                    _ => Err(format!(
                        "stage conditions {}; release entry {entry}",
                        s["status"]["conditions"]
                    )),
                }
            },
        )
        .await;
    assert_eq!(
        entry["reason"], "WriteRefused",
        "the release says why it is blocked: {entry}"
    );
    condition["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Deployment applies attempted and refused so far, from the controller's metrics.
async fn deployment_applies(env: &TestEnv) -> (u64, u64) {
    let text = env.metrics().await;
    (
        metric_sum(&text, WRITES, &[DEPLOYMENT_APPLY]) as u64,
        metric_sum(&text, REFUSALS, &[DEPLOYMENT_APPLY]) as u64,
    )
}

/// A minute of refusals: the controller keeps retrying, but with backoff and little CPU, and
/// counts every attempt and every refusal.
async fn backs_off_for_a_minute(env: &TestEnv) {
    let cpu_before = env.controller_cpu_seconds();
    let (attempts_before, _) = deployment_applies(env).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let cpu = env.controller_cpu_seconds() - cpu_before;
    let (attempts, refusals) = deployment_applies(env).await;
    assert!(
        attempts <= 8,
        "backoff: {attempts} deployment applies since the start, {attempts_before} of them before the last minute"
    );
    assert!(
        attempts >= attempts_before + 2,
        "still retrying: {attempts_before} deployment applies a minute ago, {attempts} now"
    );
    assert_eq!(
        refusals, attempts,
        "every deployment apply was refused, and each refusal is counted"
    );
    assert!(
        cpu < 3.0,
        "the controller used {cpu:.2}s of CPU in a minute of refusals"
    );
}

/// Nothing was rolled out at `stage`: the release not started there, no audit entry nor event
/// saying so, no primary.
async fn assert_not_started(env: &TestEnv, release: &str, stage: &str) {
    let r = env.json::<Release>(release).await;
    let phase = &stage_entry(&r, stage)["phase"];
    assert!(
        !matches!(phase.as_str(), Some("Progressing" | "Succeeded")),
        "{release} is not rolled out at {stage}: {}",
        stage_entry(&r, stage)
    );
    assert!(
        audit_entries(&r, stage, "RolloutStarted").is_empty(),
        "no RolloutStarted in the audit: {}",
        r["status"]["audit"]
    );
    let started = stage_events(env, stage, "RolloutStarted").await;
    assert!(
        started.is_empty(),
        "no RolloutStarted event: {:?}",
        describe(&started)
    );
    let primary = format!("web-{stage}-primary");
    assert!(
        env.deployment(&primary).await.is_none(),
        "{primary} must not exist"
    );
}

pub async fn a_write_refused_by_a_quota_stalls_the_stage_and_backs_off_until_the_quota_goes(
    mut env: TestEnv,
) {
    env.apply(&one_stage("quota", "[]"));
    refuse_new_deployments(&env, 1).await;
    env.start_controller();
    let digest = image("quota-1");
    env.apply(&release_yaml("quota-1", "quota", "1.0.0", &digest));

    let message = wait_write_refused(&env, "quota", "quota-1").await;
    assert!(
        message.contains("exceeded quota"),
        "the Stalled condition quotes the apiserver: {message}"
    );
    backs_off_for_a_minute(&env).await;
    let r = env.json::<Release>("quota-1").await;
    assert_eq!(
        stage_entry(&r, "quota")["phase"],
        "Blocked",
        "still blocked after a minute: {}",
        stage_entry(&r, "quota")
    );
    assert_not_started(&env, "quota-1", "quota").await;

    env.cp
        .kubectl(&["delete", "resourcequota", QUOTA, "-n", &env.ns]);
    // Within one backoff period: the longest wait is 120s, +20% jitter, plus the rollout.
    let done = wait_phase(
        &env,
        "quota-1",
        "quota",
        "Succeeded",
        Duration::from_secs(170),
    )
    .await;
    let started = audit_entries(&done, "quota", "RolloutStarted");
    assert_eq!(
        started.len(),
        1,
        "one RolloutStarted for the one rollout: {}",
        done["status"]["audit"]
    );
    assert_eq!(env.images("web-quota-primary").await, vec![digest]);
    env.wait_for(
        "the Stalled condition to clear",
        Duration::from_secs(30),
        || async {
            let s = env.json::<Stage>("quota").await;
            match true_condition(&s, "Stalled") {
                None => Ok(()),
                Some(c) => Err(c.to_string()),
            }
        },
    )
    .await;
}

/// Kills and restarts the controller every 2.5 to 3.5 s until `release` has succeeded at
/// `last_stage`, at most 40 times or for 3 minutes; returns how many restarts it made.
async fn restart_until_done(env: &mut TestEnv, release: &str, last_stage: &str) -> usize {
    let started = Instant::now();
    let mut restarts = 0;
    while restarts < 40 && started.elapsed() < Duration::from_secs(180) {
        let jitter = (restarts as u64 * 337) % 1000;
        tokio::time::sleep(Duration::from_millis(2500 + jitter)).await;
        let r = env.json::<Release>(release).await;
        if stage_entry(&r, last_stage)["phase"] == "Succeeded" {
            break;
        }
        env.kill_controller();
        env.start_controller();
        restarts += 1;
    }
    restarts
}

/// Every audit entry has an id, no two the same, and each stage holds exactly one
/// `RolloutStarted` and one `Promoted`.
fn assert_audit_once_per_stage(release: &Value, stages: &[&str], restarts: usize) {
    let trail = release["status"]["audit"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ids: Vec<String> = trail.iter().map(|e| e["id"].to_string()).collect();
    assert!(
        trail.iter().all(|e| match &e["id"] {
            Value::Null => false,
            Value::String(id) => !id.is_empty(),
            _ => true,
        }),
        "every audit entry has an id: {trail:#?}"
    );
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(
        distinct.len(),
        ids.len(),
        "audit ids are unique within the trail: {ids:?}"
    );
    for stage in stages {
        for action in ["RolloutStarted", "Promoted"] {
            let n = audit_entries(release, stage, action).len();
            assert_eq!(
                n, 1,
                "{stage}: {action} recorded {n} times after {restarts} restarts: {trail:#?}"
            );
        }
    }
}

/// For each stage, exactly one `RolloutStarted` and one `RolloutSucceeded` event regarding it,
/// emitted once, whose note names `version`.
async fn assert_one_event_per_audit_entry(env: &TestEnv, stages: &[&str], version: &str) {
    let wanted: Vec<(&str, &str)> = stages
        .iter()
        .flat_map(|s| [(*s, "RolloutStarted"), (*s, "RolloutSucceeded")])
        .collect();
    env.wait_for(
        "an event for every audit entry",
        Duration::from_secs(30),
        || async {
            for (stage, reason) in &wanted {
                if stage_events(env, stage, reason).await.is_empty() {
                    return Err(format!("no {reason} event regarding stage {stage} yet"));
                }
            }
            Ok(())
        },
    )
    .await;
    // A late duplicate, from a controller that replays its work, would show up by now.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (stage, reason) in &wanted {
        let events = stage_events(env, stage, reason).await;
        let emitted: i32 = events.iter().map(times_emitted).sum();
        assert_eq!(
            emitted,
            1,
            "{stage}: one {reason} event, emitted once: {:?}",
            describe(&events)
        );
        let note = events[0].note.as_deref().unwrap_or_default();
        assert!(
            note.contains(version),
            "{stage}: the {reason} note names {version}: {note:?}"
        );
    }
}

pub async fn a_controller_killed_every_few_seconds_records_each_rollout_and_promotion_once(
    mut env: TestEnv,
) {
    let stages = ["dev", "test", "prod"];
    env.apply(&targets());
    env.apply(&three_stage_pipeline("shop", "[]"));
    env.start_controller();
    env.apply(&release_yaml("shop-7", "shop", "7.0.3", &image("shop-7")));

    let restarts = restart_until_done(&mut env, "shop-7", "prod").await;
    // Past the cap the controller is left running to finish.
    wait_phase(
        &env,
        "shop-7",
        "prod",
        "Succeeded",
        Duration::from_secs(180),
    )
    .await;
    let release = env
        .wait_for(
            "the audit of every stage",
            Duration::from_secs(30),
            || async {
                let r = env.json::<Release>("shop-7").await;
                let complete = stages.iter().all(|s| {
                    !audit_entries(&r, s, "RolloutStarted").is_empty()
                        && !audit_entries(&r, s, "Promoted").is_empty()
                });
                if complete {
                    Ok(r)
                } else {
                    Err(r["status"]["audit"].to_string())
                }
            },
        )
        .await;
    assert_audit_once_per_stage(&release, &stages, restarts);
    assert_one_event_per_audit_entry(&env, &stages, "7.0.3").await;
    assert_eq!(env.images("web-prod-primary").await, vec![image("shop-7")]);
}

pub async fn two_releases_rolled_out_at_one_stage_give_two_distinct_rollout_started_events(
    mut env: TestEnv,
) {
    env.apply(&one_stage("web", "[]"));
    env.start_controller();
    env.apply(&release_yaml("web-1", "web", "1.0.0", &image("web-1")));
    wait_phase(&env, "web-1", "web", "Succeeded", Duration::from_secs(90)).await;
    env.apply(&release_yaml("web-2", "web", "2.0.0", &image("web-2")));
    wait_phase(&env, "web-2", "web", "Succeeded", Duration::from_secs(90)).await;

    let events = env
        .wait_for(
            "a RolloutStarted event naming each version",
            Duration::from_secs(30),
            || async {
                let events = stage_events(&env, "web", "RolloutStarted").await;
                let names = |v: &str| {
                    events
                        .iter()
                        .any(|e| e.note.as_deref().unwrap_or_default().contains(v))
                };
                if names("1.0.0") && names("2.0.0") {
                    Ok(events)
                } else {
                    Err(format!("{:?}", describe(&events)))
                }
            },
        )
        .await;
    let distinct: BTreeSet<String> = events
        .iter()
        .filter_map(|e| e.metadata.name.clone())
        .collect();
    let emitted: i32 = events.iter().map(times_emitted).sum();
    assert!(
        distinct.len() == 2 && emitted == 2,
        "two rollouts, two distinct RolloutStarted events: {:?}",
        describe(&events)
    );
}

fn webhook_gate(name: &str, url: &str) -> String {
    format!(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {{name: {name}}}\nspec:\n  type: webhook\n  recheckInterval: 2s\n  webhook: {{url: \"{url}\"}}\n"
    )
}

/// Waits until the Stage is Invalid and Stalled; returns the Stalled condition's message.
async fn wait_invalid(env: &TestEnv, stage: &str) -> String {
    env.wait_for(
        &format!("stage {stage} Invalid and Stalled"),
        Duration::from_secs(60),
        || async {
            let s = env.json::<Stage>(stage).await;
            match true_condition(&s, "Stalled") {
                Some(c) if s["status"]["phase"] == "Invalid" => {
                    Ok(c["message"].as_str().unwrap_or_default().to_string())
                }
                _ => Err(s["status"].to_string()),
            }
        },
    )
    .await
}

pub async fn a_stage_naming_an_invalid_gate_is_stalled_and_rolls_out_once_the_gate_is_fixed(
    mut env: TestEnv,
) {
    let hooks = WebhookServer::default();
    let addr = hooks.start().await;
    // Accepted by the CRD's `^https?://`, but no URL: port 99999 does not exist.
    env.apply(&webhook_gate(
        "change-check",
        "http://127.0.0.1:99999/200/ok",
    ));
    env.apply(&one_stage("gated", "[change-check]"));
    env.start_controller();
    let digest = image("gated-1");
    env.apply(&release_yaml("gated-1", "gated", "1.0.0", &digest));

    let message = wait_invalid(&env, "gated").await;
    assert!(
        message.contains("change-check") && message.contains("spec.gates[0]"),
        "the message names the gate and the field: {message}"
    );
    // The release waits for as long as the gate is broken.
    for _ in 0..10 {
        assert_not_started(&env, "gated-1", "gated").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    wait_invalid(&env, "gated").await;

    env.apply(&webhook_gate(
        "change-check",
        &format!("http://{addr}/200/ok"),
    ));
    wait_phase(
        &env,
        "gated-1",
        "gated",
        "Succeeded",
        Duration::from_secs(90),
    )
    .await;
    assert!(
        hooks.calls("/200/ok") >= 1,
        "the fixed gate was asked before the rollout"
    );
    assert_eq!(env.images("web-gated-primary").await, vec![digest]);
    let s = env.json::<Stage>("gated").await;
    assert_ne!(s["status"]["phase"], "Invalid", "fixed: {}", s["status"]);
}

/// Before durations were bounded, `progressDeadline: 100000000h` overflowed the time
/// arithmetic when a release came, and the controller exited.
pub async fn a_duration_past_a_year_stalls_its_stage_naming_the_field_and_the_rest_keeps_flowing(
    mut env: TestEnv,
) {
    let huge = one_stage("huge", "[]").replace(
        "  trigger: {type: auto}\n",
        "  trigger: {type: auto}\n  progressDeadline: 100000000h\n",
    );
    env.apply(&huge);
    env.apply(&one_stage("fine", "[]"));
    env.start_controller();
    env.apply(&release_yaml("huge-1", "huge", "1.0.0", &image("huge-1")));
    let message = wait_invalid(&env, "huge").await;
    assert!(
        message.contains("spec.progressDeadline") && message.contains("longest"),
        "the message names the field and the bound: {message}"
    );
    env.apply(&release_yaml("fine-1", "fine", "1.0.0", &image("fine-1")));
    wait_phase(&env, "fine-1", "fine", "Succeeded", Duration::from_secs(90)).await;
    assert_not_started(&env, "huge-1", "huge").await;
    assert!(
        env.controller_running(),
        "the controller is still running:\n{}",
        env.controller_log()
    );
}

/// A promote on a stage with nothing to promote is not dropped without a trace: it is
/// refused with an Event, an audit entry under the requester's name, and its own status, all
/// saying why.
pub async fn a_promote_with_nothing_to_promote_is_refused_saying_why(mut env: TestEnv) {
    env.apply(&one_stage("idle", "[]"));
    env.start_admitted_controller().await;
    env.apply(&release_yaml("idle-1", "idle", "1.0.0", &image("idle-1")));
    wait_phase(&env, "idle-1", "idle", "Succeeded", Duration::from_secs(90)).await;
    let promote = env.steer(None, "idle", "promote", None);
    let handled = env.wait_command(&promote).await;
    assert_eq!(handled.phase, Some(CommandPhase::Refused));
    let said = handled.message.unwrap_or_default();
    assert!(said.contains("no rollout in progress"), "{said}");
    let note = env
        .wait_for(
            "a CommandRefused Event",
            Duration::from_secs(30),
            || async {
                let events = stage_events(&env, "idle", "CommandRefused").await;
                let notes: Vec<String> = events.iter().filter_map(|e| e.note.clone()).collect();
                notes.first().cloned().ok_or(format!("{notes:?}"))
            },
        )
        .await;
    assert!(note.contains("no rollout in progress"), "{note}");
    let release = env.json::<Release>("idle-1").await;
    let refused = audit_entries(&release, "idle", "CommandRefused");
    assert_eq!(refused.len(), 1, "{}", release["status"]["audit"]);
    assert_ne!(refused[0]["actor"], "greenlight", "{}", refused[0]);
    let later = env.api::<StageCommand>().get(&promote).await.expect("read");
    let phase = later.status.and_then(|s| s.phase);
    assert_eq!(
        phase,
        Some(CommandPhase::Refused),
        "passes since left it alone"
    );
}
