//! Bad input gets a clear error naming the field, and never stops the other pipelines.

use std::time::Duration;

use greenlight::api::stage::StagePhase;

use crate::env::{TestEnv, image, release_yaml, target_yaml};

async fn invalid_stage(env: &TestEnv, name: &str) -> String {
    env.wait_for(
        &format!("stage {name} reported invalid"),
        Duration::from_secs(30),
        || async {
            let s = env.stage(name).await.status.unwrap_or_default();
            let stalled = s
                .conditions
                .iter()
                .find(|c| c.type_ == "Stalled" && c.is_true());
            match (s.phase, stalled) {
                (Some(StagePhase::Invalid), Some(c)) => Ok(c.message.clone()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// A cyclic pipeline, a stage naming a missing gate, a stage with a bad schedule and time zone
/// and a stage after it, and one healthy stage, each on its own target.
const BROKEN_AND_GOOD_STAGES: &str = r#"apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {name: loop-a}
spec: {pipeline: loop, requires: [loop-c], target: {name: web-loop}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {name: loop-b}
spec: {pipeline: loop, requires: [loop-a], target: {name: web-loop}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {name: loop-c}
spec: {pipeline: loop, requires: [loop-b], target: {name: web-loop}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {name: ghost}
spec: {pipeline: ghost, target: {name: web-ghost}, gates: [does-not-exist]}
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {name: cron}
spec:
  pipeline: cron
  target: {name: web-cron}
  trigger: {type: schedule, schedule: "61 * * * *", timeZone: Europe/Paris}
  windows:
  - {kind: deny, schedule: "0 22 * * *", duration: 2h, timeZone: Mars/Olympus_Mons}
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {name: after-cron}
spec: {pipeline: cron, requires: [cron], target: {name: web-after-cron}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {name: rules}
spec:
  pipeline: rules
  target: {name: web-rules}
  policies:
  - {name: hotfix, types: [hotfix], skipRequires: [qa], rollback: {onAnalysisFailure: pause}}
  emergency: {approvals: {required: 2}, bypass: {windows: true, gates: [soak]}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {name: good}
spec: {pipeline: good, target: {name: web-good}}
"#;

pub async fn bad_input_is_reported_on_the_object_and_other_pipelines_keep_flowing(
    mut env: TestEnv,
) {
    env.apply(
        &[
            target_yaml("web-good"),
            target_yaml("web-loop"),
            target_yaml("web-ghost"),
            target_yaml("web-cron"),
            target_yaml("web-after-cron"),
            target_yaml("web-rules"),
        ]
        .join("---\n"),
    );
    env.start_controller();

    assert_malformed_release_and_gate_are_refused(&env);

    env.apply(BROKEN_AND_GOOD_STAGES);
    for name in ["loop", "ghost", "cron"] {
        env.apply(&release_yaml(&format!("{name}-1"), name, "1", &image(name)));
    }
    env.apply(&release_yaml("good-1", "good", "1", &image("good")));

    assert_broken_stages_are_invalid_naming_the_field(&env).await;
    assert_good_pipeline_flows_and_a_stage_sharing_its_target_is_refused(&env).await;

    // Fixing the object clears the condition and the release moves.
    env.apply(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {name: cron}\nspec:\n  pipeline: cron\n  target: {name: web-cron}\n",
    );
    env.wait_release_stage("cron-1", "cron", "Succeeded", Duration::from_secs(60))
        .await;
    env.wait_release_stage("cron-1", "after-cron", "Succeeded", Duration::from_secs(90))
        .await;

    // A release whose artifact names no container of the target fails there, with the reason.
    env.apply(
        &release_yaml("good-2", "good", "2", &image("good-2"))
            .replace("  - name: web\n", "  - name: sidecar\n"),
    );
    let failed = env
        .wait_release_stage("good-2", "good", "Failed", Duration::from_secs(30))
        .await;
    let entry = &failed.status.unwrap().stages["good"];
    assert_eq!(entry.reason.as_deref(), Some("IncompatibleWithTarget"));
    assert!(entry.message.as_deref().unwrap().contains("sidecar"));
    assert_eq!(env.images("web-good-primary").await, vec![image("good")]);
}

fn assert_malformed_release_and_gate_are_refused(env: &TestEnv) {
    // A release without a digest never gets in: the API server refuses it, naming the field.
    let refused = env.apply_raw(&release_yaml(
        "tagged",
        "good",
        "1",
        "registry.local/web:1.0",
    ));
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("spec.artifacts") && stderr.contains("sha256"),
        "{stderr}"
    );
    // So does a Prometheus gate without a condition.
    let refused = env.apply_raw(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {name: no-condition}\nspec:\n  type: prometheus\n  prometheus: {address: 'http://127.0.0.1:9', query: up}\n",
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("spec.prometheus.condition"),
        "{stderr}"
    );
}

async fn assert_broken_stages_are_invalid_naming_the_field(env: &TestEnv) {
    for stage in ["loop-a", "loop-b", "loop-c"] {
        let message = invalid_stage(env, stage).await;
        assert!(
            message.contains("spec.requires") && message.contains("cycle"),
            "{stage}: {message}"
        );
        assert!(
            message.contains("loop-a") && message.contains("loop-b") && message.contains("loop-c"),
            "{message}"
        );
    }
    let message = invalid_stage(env, "ghost").await;
    assert!(
        message.contains("spec.gates[0]") && message.contains("does-not-exist"),
        "{message}"
    );
    let message = invalid_stage(env, "cron").await;
    assert!(
        message.contains("spec.trigger.schedule") && message.contains("minute"),
        "{message}"
    );
    assert!(
        message.contains("spec.windows[0].timeZone") && message.contains("Mars/Olympus_Mons"),
        "{message}"
    );
    // A policy skipping a stage the spec does not require, or setting a canary rule on a
    // rolling stage, is refused by the controller too when no webhook runs.
    let message = invalid_stage(env, "rules").await;
    assert!(
        message.contains("spec.policies[0].skipRequires[0]: 'qa' is not in spec.requires")
            && message.contains("spec.policies[0].rollback.onAnalysisFailure")
            && message.contains("spec.emergency.approvals: name who may approve an emergency")
            && message.contains("spec.emergency.bypass.gates[0]: 'soak' is not in spec.gates"),
        "{message}"
    );
    // The stage after it does not wait looking healthy: it names the culprit and its error.
    let message = invalid_stage(env, "after-cron").await;
    assert!(
        message.contains("upstream stage 'cron' is invalid")
            && message.contains("Mars/Olympus_Mons"),
        "{message}"
    );
}

async fn assert_good_pipeline_flows_and_a_stage_sharing_its_target_is_refused(env: &TestEnv) {
    // The healthy pipeline in the same namespace is served all the same.
    env.wait_release_stage("good-1", "good", "Succeeded", Duration::from_secs(60))
        .await;
    for name in ["web-loop-primary", "web-ghost-primary", "web-cron-primary"] {
        assert!(
            env.deployment(name).await.is_none(),
            "{name} must not be created"
        );
    }

    // A second stage on the same target would fight over its primary: refused, naming the field.
    env.apply("apiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {name: shadow}\nspec: {pipeline: other, target: {name: web-good}}\n");
    let message = invalid_stage(env, "shadow").await;
    assert!(
        message.contains("spec.target.name") && message.contains("stage 'good'"),
        "{message}"
    );
    assert_eq!(
        env.stage("good").await.status.unwrap().phase,
        Some(StagePhase::Idle),
        "the first stage keeps its target"
    );
}
