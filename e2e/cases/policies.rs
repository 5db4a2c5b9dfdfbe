//! Release policies: prod treats a hotfix by its own rules (no soak, two sign-offs) while a
//! feature takes the normal path, and the release's status, audit trail and Events say which
//! policy applied. Releases are published by ci-bot and approved by the release managers,
//! each as their own token user under the shipped example Roles.

use std::time::Duration;

use greenlight::api::release::{AuditAction, ReleaseStageStatus};

use crate::env::{TestEnv, image, release_yaml, target_yaml};

const WAIT: Duration = Duration::from_secs(90);

const HOTFIX_SUMMARY: &str =
    "hotfix policy: gate soaked-in-test skipped; gate two-signoffs required";

/// test, then prod behind a one-hour soak in test; hotfixes skip the soak at prod but need
/// two release managers.
fn pipeline() -> String {
    format!(
        r#"{test}---
{prod}---
apiVersion: greenlight.dev/v1alpha1
kind: Gate
metadata: {{name: soaked-in-test}}
spec: {{type: soak, soak: {{stage: test, duration: 1h}}}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Gate
metadata: {{name: two-signoffs}}
spec: {{type: approval, approval: {{groups: [release-managers], required: 2}}}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {{name: test}}
spec: {{pipeline: shop, target: {{name: web-test}}}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {{name: prod}}
spec:
  pipeline: shop
  requires: [test]
  target: {{name: web-prod}}
  gates: [soaked-in-test]
  policies:
  - name: hotfix
    types: [hotfix]
    gates: [two-signoffs]
"#,
        test = target_yaml("web-test"),
        prod = target_yaml("web-prod"),
    )
}

fn publish(env: &TestEnv, name: &str, version: &str, release_type: &str) {
    let yaml = release_yaml(name, "shop", version, &image(name))
        .replace("spec:\n", &format!("spec:\n  type: {release_type}\n"));
    let out = env.kubectl_as("ci-bot", &["create", "-f", "-"], &yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn approve(env: &TestEnv, user: &str, release: &str) {
    let yaml = format!(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Approval\nmetadata: {{name: {user}-{release}}}\nspec: {{release: {release}, stage: prod, decision: approve}}\n"
    );
    let out = env.kubectl_as(user, &["create", "-f", "-"], &yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the release's prod entry's message and gate messages contain `text`.
async fn prod_entry_says(env: &TestEnv, release: &str, text: &str) -> ReleaseStageStatus {
    env.wait_for(
        &format!("{release} at prod to say '{text}'"),
        WAIT,
        || async {
            let r = env.release(release).await;
            let entry = r.status.and_then(|s| s.stages.get("prod").cloned());
            let Some(entry) = entry else {
                return Err("no prod entry yet".to_string());
            };
            let gates: Vec<&str> = entry.gates.iter().map(|g| g.message.as_str()).collect();
            let said = format!(
                "{:?}: {:?} | {}",
                entry.phase,
                entry.message,
                gates.join(" | ")
            );
            match said.contains(text) {
                true => Ok(entry),
                false => Err(said),
            }
        },
    )
    .await
}

pub async fn a_hotfix_skips_the_soak_but_needs_two_signoffs_while_a_feature_takes_the_normal_path(
    mut env: TestEnv,
) {
    env.grant_example_roles();
    env.apply(&pipeline());
    env.start_admitted_controller().await;

    assert_a_feature_waits_for_the_soak_under_no_policy(&env, "shop-1", "1.0.0").await;
    assert_a_hotfix_skips_the_soak_and_one_signoff_is_not_enough(&env).await;
    approve(&env, "bob", "shop-2");
    env.wait_release_stage("shop-2", "prod", "Succeeded", WAIT)
        .await;
    assert_the_trail_and_events_name_the_policy(&env).await;
    assert_a_feature_waits_for_the_soak_under_no_policy(&env, "shop-3", "1.1.0").await;
}

async fn assert_a_feature_waits_for_the_soak_under_no_policy(
    env: &TestEnv,
    release: &str,
    version: &str,
) {
    publish(env, release, version, "feature");
    env.wait_release_stage(release, "test", "Succeeded", WAIT)
        .await;
    let entry = prod_entry_says(env, release, "gate 'soaked-in-test'").await;
    assert_eq!(entry.policy, None, "a feature takes the stage's own rules");
    let gates: Vec<&str> = entry.gates.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        gates,
        ["soaked-in-test"],
        "a feature is not asked for two sign-offs"
    );
}

async fn assert_a_hotfix_skips_the_soak_and_one_signoff_is_not_enough(env: &TestEnv) {
    publish(env, "shop-2", "1.0.1", "hotfix");
    env.wait_release_stage("shop-2", "test", "Succeeded", WAIT)
        .await;
    let entry = prod_entry_says(env, "shop-2", "0 of 2 distinct approvers").await;
    assert_eq!(entry.policy.as_deref(), Some(HOTFIX_SUMMARY));
    let gates: Vec<&str> = entry.gates.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        gates,
        ["two-signoffs"],
        "the hotfix is not held by the soak"
    );
    approve(env, "alice", "shop-2");
    let entry = prod_entry_says(env, "shop-2", "1 of 2 distinct approvers (so far: alice)").await;
    assert_eq!(
        format!("{:?}", entry.phase),
        "Waiting",
        "one sign-off does not promote"
    );
    let prod = env.stage("prod").await.status.unwrap_or_default();
    assert_eq!(prod.current_release, None, "nothing has reached prod yet");
    let (code, out, err) = super::plugin::plugin(env, Some("bob"), &["policy", "shop-2"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("shop-2 (1.0.1) is a hotfix release")
            && out.contains(&format!("spec.policies[0] lists hotfix; {HOTFIX_SUMMARY}"))
            && out.contains("no policy lists hotfix: the stage's own rules"),
        "{out}"
    );
}

async fn assert_the_trail_and_events_name_the_policy(env: &TestEnv) {
    env.wait_for("both sign-offs on the trail", WAIT, || async {
        let trail = env.release("shop-2").await.status.unwrap_or_default().audit;
        let approved = trail.iter().filter(|e| e.action == AuditAction::Approved);
        let mut approvers: Vec<String> = approved.map(|e| e.actor.clone()).collect();
        approvers.sort();
        match approvers == ["alice", "bob"] {
            true => Ok(()),
            false => Err(format!("{approvers:?}")),
        }
    })
    .await;
    let release = env.release("shop-2").await;
    let status = release.status.unwrap_or_default();
    assert_eq!(
        status.stages["prod"].policy.as_deref(),
        Some(HOTFIX_SUMMARY)
    );
    let at_prod: Vec<_> = status.audit.iter().filter(|e| e.stage == "prod").collect();
    let started = at_prod
        .iter()
        .find(|e| e.action == AuditAction::RolloutStarted)
        .expect("the prod rollout is in the trail");
    assert_eq!(started.policy.as_deref(), Some(HOTFIX_SUMMARY));
    assert!(
        started.message.contains(HOTFIX_SUMMARY),
        "{}",
        started.message
    );
    let test = status
        .audit
        .iter()
        .find(|e| e.stage == "test")
        .expect("test entries");
    assert_eq!(test.policy, None, "test has no policy for hotfixes");
    env.wait_event("RolloutStarted").await;
    let events = env.events("RolloutStarted").await;
    let told: Vec<&str> = events.iter().filter_map(|e| e.note.as_deref()).collect();
    assert!(
        told.iter()
            .any(|m| m.contains("shop-2") && m.contains(HOTFIX_SUMMARY)),
        "{told:?}"
    );
}
