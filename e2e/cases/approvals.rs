//! Approvals with a verified identity, through the admission webhooks registered in the real
//! apiserver, with requests sent as different token-file users under the shipped example Roles.

use std::time::Duration;

use greenlight::api::release::AuditAction;
use greenlight::api::{Approval, CommandPhase, Release};
use kube::api::{Patch, PatchParams};

use crate::env::{Admission, SHIPPED_WEBHOOK_CONFIGURATION, TestEnv, image, target_yaml};

const WAIT: Duration = Duration::from_secs(60);

/// One manual prod stage guarded by an approval gate for the release managers.
fn signoff_pipeline(pipeline: &str) -> String {
    format!(
        r#"{target}---
apiVersion: greenlight.dev/v1alpha1
kind: Gate
metadata: {{name: prod-signoff}}
spec:
  type: approval
  approval:
    groups: [release-managers]
    required: 1
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {{name: prod}}
spec:
  pipeline: {pipeline}
  target: {{name: web-prod}}
  trigger: {{type: manual}}
  gates: [prod-signoff]
"#,
        target = target_yaml("web-prod")
    )
}

/// A Release whose YAML claims an author, as a forger would.
fn release_claiming(name: &str, pipeline: &str, digest: &str, claimed_author: &str) -> String {
    format!(
        r#"apiVersion: greenlight.dev/v1alpha1
kind: Release
metadata: {{name: {name}}}
spec:
  pipeline: {pipeline}
  version: "1.0.0"
  artifacts: [{{name: web, image: "{digest}"}}]
  createdBy: {{username: {claimed_author}, signature: "00"}}
"#
    )
}

fn approval_yaml(name: &str, release: &str, decision: &str, claimed_approver: &str) -> String {
    format!(
        r#"apiVersion: greenlight.dev/v1alpha1
kind: Approval
metadata: {{name: {name}}}
spec:
  release: {release}
  stage: prod
  decision: {decision}
  comment: "checked the dashboards"
  approver: {{username: {claimed_approver}, groups: [release-managers], signature: "00"}}
"#
    )
}

/// A namespace with the webhooks registered, the example Roles granted, and a controller.
async fn admitted(env: &mut TestEnv, pipeline: &str) {
    env.grant_example_roles();
    env.apply(&signoff_pipeline(pipeline));
    let ca = env.enable_admission(Admission::CertFiles);
    env.start_controller();
    let name = format!("greenlight-{}", env.ns);
    env.register_webhooks(&name, ca.as_deref()).await;
}

fn create_as(env: &TestEnv, user: &str, yaml: &str) -> Result<String, String> {
    let out = env.kubectl_as(user, &["create", "-f", "-"], yaml);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(stderr)
    } else {
        Err(stderr)
    }
}

/// Waits until the release's prod entry says something containing `text`.
async fn wait_prod_message(env: &TestEnv, release: &str, text: &str) -> Release {
    env.wait_for(&format!("prod to say '{text}'"), WAIT, || async {
        let r = env.release(release).await;
        let entry = r
            .status
            .as_ref()
            .and_then(|s| s.stages.get("prod"))
            .cloned();
        let said = entry
            .map(|e| {
                let gates: Vec<String> = e.gates.iter().map(|g| g.message.clone()).collect();
                format!("{:?} {:?} {}", e.phase, e.message, gates.join(" | "))
            })
            .unwrap_or_default();
        if said.contains(text) {
            Ok(r)
        } else {
            Err(said)
        }
    })
    .await
}

fn audit_actions(release: &Release) -> Vec<(AuditAction, String)> {
    release
        .status
        .as_ref()
        .map(|s| {
            s.audit
                .iter()
                .map(|e| (e.action, e.actor.clone()))
                .collect()
        })
        .unwrap_or_default()
}

pub async fn approval_by_a_release_manager_is_stamped_with_their_name_and_promotes(
    mut env: TestEnv,
) {
    admitted(&mut env, "shop").await;
    let digest = image("signed-off");
    assert_ci_publishes_under_its_own_name_but_may_not_approve(&env, &digest).await;
    assert_a_release_managers_approval_is_stamped_with_their_name(&env).await;
    assert_the_approval_promotes_and_is_audited_in_order(&env, &digest).await;
    assert_the_approval_is_verified_and_announced(&env).await;
}

async fn assert_ci_publishes_under_its_own_name_but_may_not_approve(env: &TestEnv, digest: &str) {
    create_as(
        env,
        "ci-bot",
        &release_claiming("shop-1", "shop", digest, "alice"),
    )
    .expect("CI may publish a Release");
    let release = env.release("shop-1").await;
    let author = release
        .spec
        .created_by
        .expect("the webhook stamps the creator");
    assert_eq!(author.username, "ci-bot", "a claimed author is replaced");
    assert_eq!(author.groups, ["ci", "system:authenticated"]);

    wait_prod_message(env, "shop-1", "waiting for approval: 0 of 1").await;
    assert_ne!(
        env.images("web-prod-primary").await,
        vec![digest.to_string()],
        "a manual stage does not promote without an approval"
    );
    let refused = create_as(
        env,
        "ci-bot",
        &approval_yaml("by-ci", "shop-1", "approve", "ci-bot"),
    )
    .expect_err("CI's Role does not allow Approvals");
    assert!(refused.contains("forbidden"), "{refused}");
}

async fn assert_a_release_managers_approval_is_stamped_with_their_name(env: &TestEnv) {
    create_as(
        env,
        "alice",
        &approval_yaml("alice-ok", "shop-1", "approve", "mallory"),
    )
    .expect("a release manager may approve");
    let approval = env
        .api::<Approval>()
        .get("alice-ok")
        .await
        .expect("approval");
    let approver = approval.spec.approver.expect("stamped");
    assert_eq!(
        approver.username, "alice",
        "a forged approver is overwritten"
    );
    assert!(approver.groups.contains(&"release-managers".to_string()));
}

async fn assert_the_approval_promotes_and_is_audited_in_order(env: &TestEnv, digest: &str) {
    let done = env
        .wait_release_stage("shop-1", "prod", "Succeeded", WAIT)
        .await;
    assert_eq!(
        env.images("web-prod-primary").await,
        vec![digest.to_string()]
    );
    let trail = audit_actions(&done);
    assert!(
        trail.contains(&(AuditAction::Approved, "alice".into())),
        "{trail:?}"
    );
    let gates = &done.status.as_ref().unwrap().stages["prod"].gates;
    assert_eq!(gates[0].message, "approved by alice");
    let done = env
        .wait_for("the promotion in the audit trail", WAIT, || async {
            let r = env.release("shop-1").await;
            let trail = audit_actions(&r);
            if trail.contains(&(AuditAction::Promoted, "greenlight".into())) {
                Ok(r)
            } else {
                Err(format!("{trail:?}"))
            }
        })
        .await;
    // Two controllers append, so the order of entries may vary; their times may not.
    let entries = done.status.clone().unwrap().audit;
    let at = |action| entries.iter().find(|e| e.action == action).unwrap().time;
    assert!(at(AuditAction::Approved) <= at(AuditAction::RolloutStarted));
    assert!(at(AuditAction::RolloutStarted) <= at(AuditAction::Promoted));
}

async fn assert_the_approval_is_verified_and_announced(env: &TestEnv) {
    let verified = env
        .wait_for("the approval to be verified", WAIT, || async {
            let a = env
                .api::<Approval>()
                .get("alice-ok")
                .await
                .map_err(|e| e.to_string())?;
            let c = a
                .status
                .iter()
                .flat_map(|s| s.conditions.clone())
                .find(|c| c.type_ == "Verified" && c.is_true());
            c.map(|c| c.message)
                .ok_or_else(|| format!("{:?}", a.status))
        })
        .await;
    assert!(
        verified.contains("counts toward gate 'prod-signoff'"),
        "{verified}"
    );
    // The approval is announced as an Event.
    env.wait_event("Approved").await;
}

pub async fn an_approval_by_the_release_author_is_refused_and_another_managers_counts(
    mut env: TestEnv,
) {
    admitted(&mut env, "shop").await;
    // Alice may publish here too, which is exactly when self-approval matters.
    env.apply("apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: alice-publishes}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: greenlight-ci-publisher}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]\n");
    let digest = image("self-approved");
    create_as(
        &env,
        "alice",
        &release_claiming("shop-2", "shop", &digest, "bob"),
    )
    .expect("alice may publish");
    assert_eq!(
        env.release("shop-2")
            .await
            .spec
            .created_by
            .unwrap()
            .username,
        "alice"
    );
    let refused = create_as(
        &env,
        "alice",
        &approval_yaml("own", "shop-2", "approve", "bob"),
    )
    .expect_err("the author's approval is refused");
    assert!(
        refused.contains("spec.release: alice created release 'shop-2' and may not approve it"),
        "{refused}"
    );
    assert!(
        env.api::<Approval>()
            .get_opt("own")
            .await
            .unwrap()
            .is_none(),
        "nothing is stored"
    );
    wait_prod_message(&env, "shop-2", "waiting for approval: 0 of 1").await;

    create_as(
        &env,
        "bob",
        &approval_yaml("bob-ok", "shop-2", "approve", "alice"),
    )
    .expect("bob may approve alice's release");
    env.wait_release_stage("shop-2", "prod", "Succeeded", WAIT)
        .await;
}

pub async fn approvals_from_outside_the_allowed_group_do_not_count_and_a_rejection_fails_the_gate(
    mut env: TestEnv,
) {
    admitted(&mut env, "shop").await;
    let digest = image("outsider");
    create_as(
        &env,
        "ci-bot",
        &release_claiming("shop-3", "shop", &digest, "ci-bot"),
    )
    .unwrap();
    assert_an_outsiders_approval_warns_and_does_not_count(&env, &digest).await;

    create_as(
        &env,
        "bob",
        &approval_yaml("bob-no", "shop-3", "reject", "bob"),
    )
    .unwrap();
    let release =
        wait_prod_message(&env, "shop-3", "rejected by bob: checked the dashboards").await;
    let entry = &release.status.as_ref().unwrap().stages["prod"];
    assert_eq!(entry.reason.as_deref(), Some("GateFailed"));
    assert_a_later_approval_does_not_undo_a_rejection(&env, &digest).await;
}

async fn assert_an_outsiders_approval_warns_and_does_not_count(env: &TestEnv, digest: &str) {
    let warnings = create_as(
        env,
        "carol",
        &approval_yaml("carol-ok", "shop-3", "approve", "alice"),
    )
    .expect("carol's Role lets her ask");
    assert!(
        warnings.contains("carol is not an allowed approver"),
        "the requester is warned: {warnings}"
    );
    let release = wait_prod_message(env, "shop-3", "carol is not an allowed approver").await;
    let entry = &release.status.as_ref().unwrap().stages["prod"];
    assert_eq!(format!("{:?}", entry.phase), "Waiting");
    assert!(
        entry.gates[0].message.contains("0 of 1"),
        "{:?}",
        entry.gates
    );
    assert_ne!(
        env.images("web-prod-primary").await,
        vec![digest.to_string()]
    );
}

async fn assert_a_later_approval_does_not_undo_a_rejection(env: &TestEnv, digest: &str) {
    // A later approval does not undo a rejection.
    create_as(
        env,
        "alice",
        &approval_yaml("alice-late", "shop-3", "approve", "alice"),
    )
    .unwrap();
    let release = env
        .wait_for("both decisions in the audit trail", WAIT, || async {
            let r = env.release("shop-3").await;
            let trail = audit_actions(&r);
            let wanted = [
                (AuditAction::Rejected, "bob".to_string()),
                (AuditAction::Approved, "alice".to_string()),
            ];
            if wanted.iter().all(|w| trail.contains(w)) {
                Ok(r)
            } else {
                Err(format!("{trail:?}"))
            }
        })
        .await;
    let entry = &release.status.as_ref().unwrap().stages["prod"];
    assert_eq!(entry.reason.as_deref(), Some("GateFailed"), "{entry:?}");
    assert_ne!(
        env.images("web-prod-primary").await,
        vec![digest.to_string()]
    );
    let trail = release.status.unwrap().audit;
    assert!(
        trail.iter().all(|e| e.actor != "carol"),
        "a decision that counts nowhere stays off the trail: {trail:?}"
    );
    let carol = env.api::<Approval>().get("carol-ok").await.unwrap();
    let said = carol.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        said.contains("does not count toward gate 'prod-signoff'")
            && said.contains("recorded on this Approval only"),
        "the Approval says it did not count, and where it is recorded: {said}"
    );
}

fn stage_yaml(name: &str, body: &str) -> String {
    format!(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {{name: {name}}}\nspec:\n  pipeline: web\n  target: {{name: {name}-app}}\n{body}"
    )
}

fn gate_yaml(name: &str, body: &str) -> String {
    format!(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {{name: {name}}}\nspec:\n{body}"
    )
}

/// Stages and Gates that admission refuses, each with the message that names the field.
fn invalid_stages_and_gates() -> [(String, &'static str); 9] {
    [
        (
            stage_yaml(
                "cron",
                "  trigger: {type: schedule, schedule: \"61 * * * *\"}\n",
            ),
            "spec.trigger.schedule",
        ),
        (
            stage_yaml(
                "zone",
                "  trigger: {type: schedule, schedule: \"0 9 * * 1\", timeZone: Mars/Olympus}\n",
            ),
            "spec.trigger.timeZone",
        ),
        (
            stage_yaml("staging", "  requires: [qa]\n"),
            "spec.requires: stages of pipeline 'web' form a cycle",
        ),
        (
            stage_yaml("manual", "  trigger: {type: manual}\n"),
            "spec.trigger.type: 'manual' promotes only through an approval gate",
        ),
        (
            stage_yaml(
                "windows",
                "  windows: [{kind: deny, schedule: \"0 25 * * *\", duration: 1h}]\n",
            ),
            "spec.windows[0].schedule",
        ),
        (
            stage_yaml(
                "canary",
                "  strategy: {type: canary, canary: {steps: [{setWeight: 150}]}}\n",
            ),
            "setWeight",
        ),
        (
            gate_yaml(
                "bad-window",
                "  type: window\n  window: {schedule: \"every day\", duration: 1h}\n",
            ),
            "spec.window.schedule",
        ),
        (
            gate_yaml(
                "internal",
                "  type: webhook\n  webhook: {url: \"http://169.254.169.254/latest\"}\n",
            ),
            "spec.webhook.url: destination '169.254.169.254:80' is a link-local (cloud metadata) address",
        ),
        (
            gate_yaml("nobody", "  type: approval\n  approval: {required: 2}\n"),
            "spec.approval: name who may approve",
        ),
    ]
}

/// Release rules that admission refuses: policies and emergencies.
fn invalid_release_rules() -> [(String, &'static str); 5] {
    [
        (
            stage_yaml("typo", "  policies: [{name: hotfix, types: [hotfx]}]\n"),
            "spec.policies.types: Unsupported value: \"hotfx\"",
        ),
        (
            stage_yaml(
                "skipper",
                "  requires: [staging]\n  policies: [{name: hotfix, types: [hotfix], skipRequires: [qa]}]\n",
            ),
            "spec.policies[0].skipRequires[0]: 'qa' is not in spec.requires",
        ),
        (
            stage_yaml(
                "bare",
                "  trigger: {type: manual}\n  gates: [prod-signoff]\n  policies: [{name: hotfix, types: [hotfix], gates: []}]\n",
            ),
            "spec.policies[0]: under this policy, spec.trigger.type: 'manual' promotes only through an approval gate",
        ),
        (
            stage_yaml("unguarded", "  emergency: {bypass: {windows: true}}\n"),
            "spec.emergency.approvals: Required value",
        ),
        (
            stage_yaml(
                "nobody-signs",
                "  emergency: {approvals: {required: 2}, bypass: {windows: true}}\n",
            ),
            "spec.emergency.approvals: name who may approve an emergency",
        ),
    ]
}

pub async fn edits_of_releases_and_approvals_and_invalid_stages_and_gates_are_refused_by_field(
    mut env: TestEnv,
) {
    admitted(&mut env, "shop").await;
    assert_edits_of_a_release_and_an_approval_are_refused(&env).await;

    env.apply(&stage_yaml("qa", "  requires: [staging]\n"));
    for (yaml, message) in invalid_stages_and_gates()
        .into_iter()
        .chain(invalid_release_rules())
    {
        let out = env.apply_raw(&yaml);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{yaml}");
        assert!(
            stderr.contains(message),
            "expected '{message}' in: {stderr}"
        );
    }
    let stages = env
        .cp
        .kubectl(&["get", "stages", "-n", &env.ns, "-o", "name"]);
    assert_eq!(
        stages.trim(),
        "stage.greenlight.dev/prod\nstage.greenlight.dev/qa"
    );
    let gates = env
        .cp
        .kubectl(&["get", "gates", "-n", &env.ns, "-o", "name"]);
    assert_eq!(gates.trim(), "gate.greenlight.dev/prod-signoff");
}

async fn assert_edits_of_a_release_and_an_approval_are_refused(env: &TestEnv) {
    let digest = image("immutable");
    create_as(
        env,
        "ci-bot",
        &release_claiming("shop-4", "shop", &digest, "ci-bot"),
    )
    .unwrap();
    let edit = env
        .api::<Release>()
        .patch(
            "shop-4",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"version": "9.9.9"}})),
        )
        .await
        .expect_err("a Release's spec is immutable");
    assert!(
        edit.to_string()
            .contains("spec.version: a Release is immutable once created"),
        "{edit}"
    );
    create_as(
        env,
        "bob",
        &approval_yaml("bob-ok", "shop-4", "approve", "bob"),
    )
    .unwrap();
    let edit = env
        .api::<Approval>()
        .patch(
            "bob-ok",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"decision": "reject"}})),
        )
        .await
        .expect_err("an Approval is immutable");
    assert!(
        edit.to_string()
            .contains("spec.decision: an Approval is immutable"),
        "{edit}"
    );
}

pub async fn the_operator_generates_its_certificate_and_keeps_its_webhooks_ca_bundle(
    mut env: TestEnv,
) {
    env.enable_admission(Admission::SelfSigned);
    env.start_controller();
    // No caBundle given: the apiserver can call the webhook only once the operator, under its
    // least-privilege role, has patched its CA into the configurations.
    env.register_webhooks(SHIPPED_WEBHOOK_CONFIGURATION, None)
        .await;
    let config = env.cp.kubectl(&[
        "get",
        "validatingwebhookconfiguration",
        SHIPPED_WEBHOOK_CONFIGURATION,
        "-o",
        "jsonpath={.webhooks[0].clientConfig.caBundle}",
    ]);
    assert!(config.len() > 100, "caBundle is set: {config}");
    // Git (or anyone) resetting it is repaired.
    env.cp.kubectl(&[
        "patch",
        "validatingwebhookconfiguration",
        SHIPPED_WEBHOOK_CONFIGURATION,
        "--type=json",
        "-p",
        r#"[{"op": "remove", "path": "/webhooks/0/clientConfig/caBundle"}]"#,
    ]);
    env.wait_for("the CA bundle to be restored", WAIT, || async {
        let now = env.cp.kubectl(&[
            "get",
            "validatingwebhookconfiguration",
            SHIPPED_WEBHOOK_CONFIGURATION,
            "-o",
            "jsonpath={.webhooks[0].clientConfig.caBundle}",
        ]);
        if now == config { Ok(()) } else { Err(now) }
    })
    .await;
}

pub async fn a_renewed_certificate_is_served_without_a_restart(mut env: TestEnv) {
    let first_ca = env.enable_admission(Admission::CertFiles).unwrap();
    env.start_controller();
    let pid = env.controller_pid();
    let url = format!("https://127.0.0.1:{}/healthz", env.admission_port);
    let trusting = |ca: &str| env.webhook_client(ca);
    let (old, url2) = (trusting(&first_ca), url.clone());
    env.wait_for("the webhook server to answer", WAIT, || {
        let (old, url) = (old.clone(), url2.clone());
        async move {
            old.get(&url)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        }
    })
    .await;
    let staged = env.dir.join("renewed");
    let second_ca = crate::support::certs::webhook_certs(&staged, "renewed");
    let new = trusting(&second_ca);
    assert!(
        new.get(&url).send().await.is_err(),
        "the renewed CA is not trusted before the files change"
    );
    for file in ["ca.crt", "tls.key", "tls.crt"] {
        std::fs::copy(staged.join(file), env.webhook_cert_dir().join(file)).unwrap();
    }
    env.wait_for("the renewed certificate to be served", WAIT, || {
        let (new, url) = (new.clone(), url.clone());
        async move {
            new.get(&url)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        }
    })
    .await;
    // A new client, so no TLS session from before can be resumed without a certificate.
    assert!(
        trusting(&first_ca).get(&url).send().await.is_err(),
        "the old certificate is no longer served"
    );
    assert_eq!(env.controller_pid(), pid, "no restart");
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", env.metrics_port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("greenlight_webhook_certificate_reloads_total 1"),
        "{metrics}"
    );
}

pub async fn a_retry_asked_by_a_release_manager_is_recorded_under_their_name(mut env: TestEnv) {
    env.grant_example_roles();
    env.apply(&format!(
        "{}---\napiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {{name: dev}}\nspec:\n  pipeline: shop\n  target: {{name: web-dev}}\n  progressDeadline: 5s\n",
        target_yaml("web-dev")
    ));
    let ca = env.enable_admission(Admission::CertFiles);
    env.start_controller();
    let name = format!("greenlight-{}", env.ns);
    env.register_webhooks(&name, ca.as_deref()).await;
    let flaky = image("flaky");
    let hold = crate::support::kubelet::Hold::Image(flaky.clone());
    env.kubelet.hold(hold.clone());
    create_as(
        &env,
        "ci-bot",
        &release_claiming("shop-5", "shop", &flaky, "ci-bot"),
    )
    .unwrap();
    env.wait_release_stage("shop-5", "dev", "Failed", WAIT)
        .await;

    // The cause is fixed; alice asks for a retry and tries to put it on mallory.
    env.kubelet.release(&hold);
    let yaml = "apiVersion: greenlight.dev/v1alpha1\nkind: StageCommand\nmetadata: {name: retry-5}\nspec:\n  stage: dev\n  action: retry\n  release: shop-5\n  requestedBy: {username: mallory, signature: '00'}\n";
    create_as(&env, "alice", yaml).expect("a release manager may ask for a retry");
    let done = env
        .wait_release_stage("shop-5", "dev", "Succeeded", WAIT)
        .await;
    let trail = audit_actions(&done);
    let expected = [
        (AuditAction::RolloutStarted, "greenlight".to_string()),
        (AuditAction::RolledBack, "greenlight".to_string()),
        (AuditAction::RetryRequested, "alice".to_string()),
    ];
    for entry in &expected {
        assert!(trail.contains(entry), "{entry:?} missing from {trail:?}");
    }
    let handled = env.wait_command("retry-5").await;
    assert_eq!(handled.phase, Some(CommandPhase::Applied), "{handled:?}");

    // The Role lets alice ask, not edit the stage: no patch on Stages.
    let out = env.kubectl_as(
        "alice",
        &[
            "patch",
            "stage",
            "dev",
            "--type=merge",
            "-p",
            r#"{"spec":{"gates":[]}}"#,
        ],
        "",
    );
    assert!(
        !out.status.success(),
        "a release manager cannot edit a Stage"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An approval waiting for a Release of that name (published later, or deleted and published
/// again with other images) approves nothing: it was given for something else.
pub async fn an_approval_given_before_its_release_was_created_does_not_count(mut env: TestEnv) {
    admitted(&mut env, "early").await;
    create_as(
        &env,
        "alice",
        &approval_yaml("too-early", "early-1", "approve", "alice"),
    )
    .expect("an Approval may name a Release that does not exist yet");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let digest = image("early-1");
    create_as(
        &env,
        "ci-bot",
        &release_claiming("early-1", "early", &digest, "ci-bot"),
    )
    .expect("CI may publish a Release");
    wait_prod_message(&env, "early-1", "before release 'early-1' existed").await;
    let approval = env.api::<Approval>().get("too-early").await.unwrap();
    let said = approval.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        said.contains("does not count: it was given before release 'early-1' existed"),
        "{said}"
    );
    assert_ne!(env.images("web-prod-primary").await, vec![digest.clone()]);
    create_as(
        &env,
        "bob",
        &approval_yaml("in-time", "early-1", "approve", "bob"),
    )
    .expect("a release manager approves");
    env.wait_release_stage("early-1", "prod", "Succeeded", WAIT)
        .await;
}

/// The prod stage of [`signoff_pipeline`], marked protected.
fn protected_prod(pipeline: &str) -> String {
    signoff_pipeline(pipeline).replace(
        "  gates: [prod-signoff]\n",
        "  gates: [prod-signoff]\n  protected: true\n",
    )
}

/// Waits until the newest recorded change of the prod Stage is at `generation`.
async fn newest_change(env: &TestEnv, generation: i64) -> greenlight::api::change::ChangeRecord {
    env.wait_for(&format!("change {generation} recorded"), WAIT, || async {
        let s = env.stage("prod").await.status.unwrap_or_default();
        match s.changes.first() {
            Some(c) if c.generation == generation => Ok(c.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// A user who may edit Stages and Gates (a team's edit role), without `edit-protected`.
fn grant_stage_editor(env: &TestEnv, user: &str) {
    env.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: stage-editor}}\nrules:\n- apiGroups: [greenlight.dev]\n  resources: [stages, gates]\n  verbs: [get, list, watch, update, patch]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: stage-editor}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: stage-editor}}\nsubjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]\n"
    ));
}

fn patch_as(env: &TestEnv, user: &str, kind: &str, name: &str, patch: &str) -> Result<(), String> {
    let out = env.kubectl_as(
        user,
        &["patch", kind, name, "--type=merge", "-p", patch],
        "",
    );
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// A protected stage's gates cannot be switched off by someone who may only edit Stages, nor
/// through its Gate; an admin with `edit-protected` can, and each change is recorded under the
/// verified name of whoever made it. A change behind the webhook's back stops the stage.
pub async fn a_protected_stage_refuses_edits_without_the_role_and_records_who_changed_it(
    mut env: TestEnv,
) {
    env.grant_example_roles();
    grant_stage_editor(&env, "erin");
    env.start_admitted_controller().await;
    env.apply(&protected_prod("guarded"));
    let created = newest_change(&env, 1).await;
    assert!(created.verified, "{created:?}");

    let refused = patch_as(&env, "erin", "stage", "prod", r#"{"spec":{"gates":[]}}"#).unwrap_err();
    assert!(
        refused.contains("spec.gates") && refused.contains("edit-protected"),
        "{refused}"
    );
    let refused = patch_as(
        &env,
        "erin",
        "gate",
        "prod-signoff",
        r#"{"spec":{"approval":{"groups":["anyone"]}}}"#,
    )
    .unwrap_err();
    assert!(
        refused.contains("guards protected stage 'prod'"),
        "{refused}"
    );
    let forbidden = patch_as(&env, "alice", "stage", "prod", r#"{"spec":{"gates":[]}}"#);
    assert!(forbidden.unwrap_err().contains("forbidden"));

    patch_as(
        &env,
        "dana",
        "stage",
        "prod",
        r#"{"spec":{"historyLimit":5}}"#,
    )
    .expect("an admin with edit-protected may change it");
    let change = newest_change(&env, 2).await;
    assert_eq!(
        (
            change.by.as_str(),
            change.fields.as_slice(),
            change.verified
        ),
        ("dana", ["historyLimit".to_string()].as_slice(), true)
    );

    an_unstamped_change_stops_the_protected_stage(&env).await;
}

/// The mutating webhook is gone: an edit lands unstamped, and the protected stage stops.
async fn an_unstamped_change_stops_the_protected_stage(env: &TestEnv) {
    let name = format!("greenlight-{}", env.ns);
    env.cp
        .kubectl(&["delete", "mutatingwebhookconfiguration", &name]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.cp.kubectl(&[
        "patch",
        "-n",
        &env.ns,
        "stage",
        "prod",
        "--type=merge",
        "-p",
        r#"{"spec":{"historyLimit":6}}"#,
    ]);
    let stopped = env
        .wait_for("the stage stalled", WAIT, || async {
            let s = env.stage("prod").await.status.unwrap_or_default();
            let stalled = s.conditions.iter().find(|c| c.reason == "UnverifiedChange");
            stalled
                .map(|c| c.message.clone())
                .ok_or(format!("{:?}", s.conditions))
        })
        .await;
    assert!(
        stopped.contains("not changed through the admission webhook"),
        "{stopped}"
    );
    let unverified = newest_change(env, 3).await;
    assert!(
        !unverified.verified && unverified.by.starts_with("unverified"),
        "{unverified:?}"
    );
}
