//! The emergency path, as the people it governs use it: during a blackout, alice (a release
//! manager) asks for an emergency; her own approval does not count, bob's alone is not
//! enough, and with carol's the release goes out past exactly what the stage allows. Each
//! skipped control is on the trail and in Events, the team hears of the break-glass, a review
//! opens and is told overdue when its due date passes, and bob (not alice) closes it with a
//! post-mortem.

use std::time::Duration;

use greenlight::api::release::{AuditAction, AuditEntry, Release};
use serde_json::Value;

use crate::env::{TestEnv, image, release_yaml, target_yaml};
use crate::support::http::Receiver;

const WAIT: Duration = Duration::from_secs(90);

fn world(port: u16) -> String {
    format!(
        r#"{test}---
{prod}---
apiVersion: v1
kind: Secret
metadata: {{name: hooks}}
stringData: {{team: "http://127.0.0.1:{port}/team"}}
---
{reader}---
apiVersion: greenlight.dev/v1alpha1
kind: Notifier
metadata: {{name: team}}
spec: {{type: webhook, urlSecretRef: {{name: hooks, key: team}}, events: [BreakGlass, ReviewOverdue]}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Gate
metadata: {{name: soaked-in-test}}
spec: {{type: soak, soak: {{stage: test, duration: 1h}}}}
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
  notifiers: [team]
  windows: [{{kind: deny, schedule: "0 0 * * *", duration: 24h, reason: year-end freeze}}]
  emergency:
    approvals: {{groups: [release-managers], users: [carol], required: 2}}
    bypass: {{windows: true, gates: [soaked-in-test]}}
    reviewWithin: 20s
"#,
        test = target_yaml("web-test"),
        prod = target_yaml("web-prod"),
        reader = crate::support::operator_may_read_secret("hooks"),
    )
}

fn as_user(env: &TestEnv, user: &str, yaml: &str) {
    let out = env.kubectl_as(user, &["create", "-f", "-"], yaml);
    assert!(
        out.status.success(),
        "{user}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn approve(env: &TestEnv, user: &str) {
    as_user(
        env,
        user,
        &format!(
            "apiVersion: greenlight.dev/v1alpha1\nkind: Approval\nmetadata: {{name: {user}-shop-1}}\nspec: {{release: shop-1, stage: prod, decision: approve}}\n"
        ),
    );
}

async fn prod_gate_says(env: &TestEnv, text: &str) {
    env.wait_for(&format!("prod's gates to say '{text}'"), WAIT, || async {
        let r = env.release("shop-1").await;
        let entry = r.status.and_then(|s| s.stages.get("prod").cloned());
        let said: Vec<String> = entry
            .iter()
            .flat_map(|e| e.gates.iter().map(|g| g.message.clone()))
            .collect();
        match said.iter().any(|m| m.contains(text)) {
            true => Ok(()),
            false => Err(format!("{said:?}")),
        }
    })
    .await;
}

pub async fn an_emergency_in_a_blackout_needs_two_approvals_besides_its_requester_and_is_reviewed(
    mut env: TestEnv,
) {
    let receiver = Receiver::default();
    let port = receiver.start().await;
    env.grant_example_roles();
    env.apply(&world(port));
    env.start_admitted_controller().await;
    as_user(
        &env,
        "ci-bot",
        &release_yaml("shop-1", "shop", "1.0.1", &image("shop-1")),
    );
    env.wait_release_stage("shop-1", "test", "Succeeded", WAIT)
        .await;
    assert_the_blackout_holds_it(&env).await;

    let (code, out, err) = super::plugin::plugin(
        &env,
        Some("alice"),
        &[
            "emergency",
            "shop-1",
            "--stage",
            "prod",
            "--reason",
            "checkout is down",
            "--reference",
            "INC-7",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_approvals_count_only_from_others_than_alice(&env).await;
    approve(&env, "carol");
    let done = env
        .wait_release_stage("shop-1", "prod", "Succeeded", WAIT)
        .await;
    assert_the_trail_records_each_bypass_and_opens_a_review(&done);
    assert_the_team_heard_of_the_break_glass_then_the_overdue_review(&env, &receiver).await;
    assert_bob_not_alice_closes_the_review_with_its_post_mortem(&env).await;
}

async fn assert_the_blackout_holds_it(env: &TestEnv) {
    env.wait_for("prod blocked by the freeze", WAIT, || async {
        let r = env.release("shop-1").await;
        let entry = r.status.and_then(|s| s.stages.get("prod").cloned());
        match entry.and_then(|e| e.reason) {
            Some(reason) if reason == "BlockedByWindow" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

async fn assert_approvals_count_only_from_others_than_alice(env: &TestEnv) {
    prod_gate_says(env, "0 of 2 distinct approvers").await;
    approve(env, "alice");
    prod_gate_says(env, "alice asked for the emergency and may not approve it").await;
    approve(env, "bob");
    prod_gate_says(env, "1 of 2 distinct approvers (so far: bob)").await;
    let prod = env.stage("prod").await.status.unwrap_or_default();
    assert_eq!(
        prod.current_release, None,
        "one approval besides alice's is not enough"
    );
    assert!(prod.emergency.is_some(), "the emergency waits on the stage");
}

fn assert_the_trail_records_each_bypass_and_opens_a_review(release: &Release) {
    let trail = release.status.clone().unwrap_or_default().audit;
    let at = |action: AuditAction| -> Vec<&AuditEntry> {
        trail
            .iter()
            .filter(|e| e.action == action && e.stage == "prod")
            .collect()
    };
    let asked = at(AuditAction::EmergencyRequested);
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].actor, "alice");
    let skipped: Vec<&str> = at(AuditAction::Bypassed)
        .iter()
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped[0].contains("windows (closed: deny window 'year-end freeze'"),
        "{skipped:?}"
    );
    assert!(
        skipped[1].contains("gate soaked-in-test bypassed by the emergency (INC-7)"),
        "{skipped:?}"
    );
    let glass = at(AuditAction::BreakGlass);
    assert_eq!((glass.len(), glass[0].actor.as_str()), (1, "alice"));
    assert!(glass[0].review_due.is_some() && glass[0].message.contains("INC-7"));
    let approvers: Vec<&str> = at(AuditAction::Approved)
        .iter()
        .map(|e| e.actor.as_str())
        .collect();
    assert!(
        approvers.contains(&"bob") && approvers.contains(&"carol"),
        "{approvers:?}"
    );
}

async fn notice_of(receiver: &Receiver, kind: &str) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let got = receiver.got("team");
        if let Some(n) = got.iter().find(|n| n["kind"] == kind) {
            return n.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {kind} notice: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn assert_the_team_heard_of_the_break_glass_then_the_overdue_review(
    env: &TestEnv,
    receiver: &Receiver,
) {
    let glass = notice_of(receiver, "BreakGlass").await;
    assert_eq!(glass["release"], "shop-1");
    assert!(
        glass["message"]
            .as_str()
            .unwrap_or("")
            .contains("checkout is down"),
        "{glass}"
    );
    let overdue = notice_of(receiver, "ReviewOverdue").await;
    assert!(
        overdue["message"]
            .as_str()
            .unwrap_or("")
            .contains("review close shop-1"),
        "{overdue}"
    );
    let (_, listed, _) = super::plugin::plugin(env, Some("bob"), &["reviews"]);
    assert!(
        listed.contains("shop-1") && listed.contains("OVERDUE"),
        "{listed}"
    );
    let text = env.metrics().await;
    let ns = env.ns.clone();
    let labels = [
        ("namespace", ns.as_str()),
        ("pipeline", "shop"),
        ("state", "overdue"),
    ];
    assert_eq!(
        crate::env::metric_sum(&text, "greenlight_emergency_reviews", &labels),
        1.0
    );
    let told: Vec<Value> = receiver
        .got("team")
        .into_iter()
        .filter(|n| n["kind"] == "ReviewOverdue")
        .collect();
    assert_eq!(told.len(), 1, "told once: {told:?}");
}

async fn assert_bob_not_alice_closes_the_review_with_its_post_mortem(env: &TestEnv) {
    let args = [
        "review",
        "close",
        "shop-1",
        "--stage",
        "prod",
        "--post-mortem",
        "https://wiki.example.com/pm/INC-7",
    ];
    let (code, out, _) = super::plugin::plugin(env, Some("alice"), &args);
    assert_eq!(
        code, 1,
        "the requester does not review her own emergency: {out}"
    );
    assert!(
        out.contains("alice asked for the emergency of 'shop-1' and may not close its review"),
        "{out}"
    );
    let (code, out, err) = super::plugin::plugin(env, Some("bob"), &args);
    assert_eq!(code, 0, "{out}{err}");
    let release = env.release("shop-1").await;
    let reviews = greenlight::review::reviews(&release);
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0].closed_by.as_deref(), Some("bob"));
    assert!(
        reviews[0]
            .post_mortem
            .as_deref()
            .unwrap_or("")
            .contains("https://wiki.example.com/pm/INC-7")
    );
    let (_, listed, _) = super::plugin::plugin(env, Some("bob"), &["reviews"]);
    assert_eq!(listed, "no open emergency reviews\n");
    let (code, _, _) = super::plugin::plugin(env, Some("bob"), &args);
    assert_eq!(code, 1, "a closed review is not closed twice");
}
