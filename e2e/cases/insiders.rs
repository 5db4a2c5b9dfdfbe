//! Insider attacks: each case is run as a token user bound to the shipped example Roles (a
//! team editor, CI, a release manager), with the operator under its own ClusterRole and the
//! webhooks registered, trying to get round one control point through what that role can
//! write: metadata, another object the stage reads, a string the operator interpolates, the
//! right to create a command, a shared record's capacity, a route's weights.

use std::time::Duration;

use greenlight::api::CommandPhase;
use greenlight::api::canary::CanaryPhase;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};

use super::canary::{Bed, image, route_canary_weight, start_bed_with, without_background_analysis};
use crate::env::{TestEnv, metric_sum, release_yaml, target_yaml};

const WAIT: Duration = Duration::from_secs(90);

/// erin is a team editor: the shipped team-editor Role, and write access to Deployments, as
/// Kubernetes' own `edit` gives a team's developers (the test control plane runs no
/// ClusterRole aggregation, so its `edit` is empty: the same rules are granted by a Role).
pub(super) fn grant_team_editor(env: &TestEnv, user: &str) {
    let root = env!("CARGO_MANIFEST_DIR");
    env.cp.kubectl(&[
        "apply",
        "-n",
        &env.ns,
        "-f",
        &format!("{root}/config/rbac/team-editor-example.yaml"),
    ]);
    env.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: team-editor}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: greenlight-team-editor}}\nsubjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: edit-deployments}}\nrules:\n- apiGroups: [apps]\n  resources: [deployments]\n  verbs: [get, list, watch, create, update, patch, delete]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: edit-deployments}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: edit-deployments}}\nsubjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]\n"
    ));
}

/// `kubectl` as `user`: its stderr when refused.
pub(super) fn as_user(env: &TestEnv, user: &str, args: &[&str], stdin: &str) -> Result<(), String> {
    let out = env.kubectl_as(user, args, stdin);
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

pub(super) fn patch_as(
    env: &TestEnv,
    user: &str,
    what: &[&str],
    patch: &str,
) -> Result<(), String> {
    let mut args = vec!["patch"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["--type=merge", "-p", patch]);
    as_user(env, user, &args, "")
}

/// A protected prod behind an approval gate for the release managers, running v1.
pub(super) async fn protected_prod_running_v1(env: &mut TestEnv) {
    env.grant_example_roles();
    grant_team_editor(env, "erin");
    env.start_admitted_controller().await;
    env.apply(&format!(
        "{}---\napiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {{name: prod-signoff}}\nspec:\n  type: approval\n  approval: {{groups: [release-managers]}}\n---\napiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {{name: prod}}\nspec:\n  pipeline: shop\n  target: {{name: web-prod}}\n  trigger: {{type: manual}}\n  gates: [prod-signoff]\n  protected: true\n",
        target_yaml("web-prod")
    ));
    env.apply(&release_yaml("v1", "shop", "1", &crate::env::image("v1")));
    env.approve_as("alice", "v1", "prod");
    env.wait_release_stage("v1", "prod", "Succeeded", WAIT)
        .await;
}

/// The containers and pod labels of a Deployment.
async fn shape_of(env: &TestEnv, name: &str) -> (Vec<String>, Vec<String>) {
    let d = env.deployment(name).await.expect("the Deployment exists");
    let template = d.spec.map(|s| s.template).unwrap_or_default();
    let labels = template.metadata.and_then(|m| m.labels).unwrap_or_default();
    let containers = template.spec.map(|p| p.containers).unwrap_or_default();
    (
        containers.into_iter().map(|c| c.name).collect(),
        labels.into_keys().collect(),
    )
}

/// A team editor adds a sidecar and a label to protected prod's target. Nothing reaches the
/// primary: the stage reports the change and who made it, and rolls it out only once the
/// approval gate passes with an approval given after the change (the one v1 got does not
/// count); the audit trail records it as a configuration change with both template digests.
pub async fn a_template_edit_reaches_protected_prod_only_through_its_approval_gate(
    mut env: TestEnv,
) {
    protected_prod_running_v1(&mut env).await;
    let before = shape_of(&env, "web-prod-primary").await;
    let sidecar = r#"{"spec":{"template":{"metadata":{"labels":{"evil":"yes"}},"spec":{"containers":[{"name":"miner","image":"registry.example.com/evil/miner:latest"}]}}}}"#;
    let edit = ["patch", "deployment", "web-prod", "-p", sidecar];
    as_user(&env, "erin", &edit, "").expect("a team editor may edit the target");
    let reported = env
        .wait_for("the change reported", WAIT, || async {
            let s = env.stage("prod").await.status.unwrap_or_default();
            let c = s.conditions.iter().find(|c| c.type_ == "TargetChanged");
            c.map(|c| c.message.clone())
                .ok_or(format!("{:?}", s.conditions))
        })
        .await;
    assert!(
        reported.contains("kubectl-patch")
            && reported.contains("containers[miner]")
            && reported.contains("labels.evil"),
        "{reported}"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        shape_of(&env, "web-prod-primary").await,
        before,
        "nothing reached prod"
    );
    let waiting = env.stage("prod").await.status.unwrap_or_default().message;
    assert!(
        waiting
            .as_deref()
            .unwrap_or_default()
            .contains("before the configuration change"),
        "v1's approval does not let the edit through: {waiting:?}"
    );
    let approval = "apiVersion: greenlight.dev/v1alpha1\nkind: Approval\nmetadata: {name: v1-config-bob}\nspec: {release: v1, stage: prod, decision: approve}\n";
    as_user(&env, "bob", &["create", "-f", "-"], approval).expect("bob approves the change");
    env.wait_for("the change on the primary", WAIT, || async {
        match shape_of(&env, "web-prod-primary").await {
            (c, l) if c.contains(&"miner".to_string()) && l.contains(&"evil".to_string()) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    the_change_is_audited_with_both_templates(&env).await;
}

async fn the_change_is_audited_with_both_templates(env: &TestEnv) {
    let stage = env
        .wait_for("the change rolled out", WAIT, || async {
            let s = env.stage("prod").await.status.unwrap_or_default();
            match s.rollout.is_none() && s.history.first().is_some_and(|h| h.configuration) {
                true => Ok(s),
                false => Err(format!("{:?} {:?}", s.phase, s.message)),
            }
        })
        .await;
    let trail = env.release("v1").await.status.unwrap_or_default().audit;
    let change = trail
        .iter()
        .find(|e| e.configuration.is_some())
        .expect("the configuration change is on the trail");
    assert!(
        change
            .configuration
            .as_deref()
            .unwrap_or_default()
            .contains("kubectl-patch")
    );
    assert_eq!(change.template, stage.template);
    let first = trail
        .iter()
        .find(|e| e.configuration.is_none() && e.template.is_some());
    assert_eq!(
        change.previous_template,
        first.and_then(|e| e.template.clone()),
        "before and after: {trail:?}"
    );
    assert_ne!(change.previous_template, change.template);
}

/// A team editor cannot hand a protected Stage to the garbage collector (a dangling owner
/// reference), hold or hurry its deletion (finalizers), switch its protection off, or take
/// its Deployment with a Stage of their own; 30 s later the Stage and its primary still run.
pub async fn a_team_editor_cannot_delete_or_take_over_a_protected_stage_through_metadata(
    mut env: TestEnv,
) {
    protected_prod_running_v1(&mut env).await;
    let dangling = r#"{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"gone","uid":"00000000-0000-0000-0000-000000000000"}]}}"#;
    let refused = patch_as(&env, "erin", &["stage", "prod"], dangling).unwrap_err();
    assert!(
        refused.contains("metadata.ownerReferences") && refused.contains("edit-protected"),
        "{refused}"
    );
    let held = r#"{"metadata":{"finalizers":["example.com/hold"]}}"#;
    let refused = patch_as(&env, "erin", &["stage", "prod"], held).unwrap_err();
    assert!(refused.contains("metadata.finalizers"), "{refused}");
    let unprotect = r#"{"spec":{"protected":false}}"#;
    let refused = patch_as(&env, "erin", &["stage", "prod"], unprotect).unwrap_err();
    assert!(refused.contains("spec.protected"), "{refused}");
    let shadow = "apiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {name: shadow}\nspec: {pipeline: other, target: {name: web-prod}}\n";
    let refused = as_user(&env, "erin", &["create", "-f", "-"], shadow).unwrap_err();
    assert!(
        refused.contains("spec.target.name") && refused.contains("protected stage 'prod'"),
        "{refused}"
    );
    let newly_protected = "apiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {name: mine}\nspec: {pipeline: other, target: {name: web-mine}, protected: true}\n";
    let refused = as_user(&env, "erin", &["create", "-f", "-"], newly_protected).unwrap_err();
    assert!(refused.contains("edit-protected"), "{refused}");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let prod = env.stage("prod").await;
    assert!(prod.metadata.deletion_timestamp.is_none());
    assert_eq!(prod.metadata.owner_references, None);
    let primary = env.deployment("web-prod-primary").await;
    assert!(primary.is_some(), "production still runs");
}

/// A protected canary's analysis Gates are guarded like its gates: a team editor cannot make
/// the analysis pass whatever the error rate.
pub async fn a_team_editor_cannot_neuter_a_protected_canarys_analysis_gates(mut env: TestEnv) {
    env.grant_example_roles();
    grant_team_editor(&env, "erin");
    env.start_admitted_controller().await;
    let gate = |name: &str| {
        format!(
            "apiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {{name: {name}}}\nspec:\n  type: prometheus\n  prometheus: {{address: \"http://127.0.0.1:9\", query: 'sum(rate(http_requests_total{{workload=\"{{{{canary}}}}\",code=~\"5..\"}}[1m]))', condition: \"< 0.01\"}}\n---\n"
        )
    };
    env.apply(&format!(
        "{}{}{}apiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {{name: prod}}\nspec:\n  pipeline: shop\n  target: {{name: web}}\n  protected: true\n  strategy:\n    type: canary\n    canary:\n      analysis: {{gates: [error-rate], interval: 10s}}\n      steps:\n      - setWeight: 20\n      - analysis: {{gates: [step-check], interval: 10s}}\n",
        target_yaml("web"),
        gate("error-rate"),
        gate("step-check")
    ));
    for name in ["error-rate", "step-check"] {
        let neutered = r#"{"spec":{"prometheus":{"query":"vector(0)"}}}"#;
        let refused = patch_as(&env, "erin", &["gate", name], neutered).unwrap_err();
        assert!(
            refused.contains(&format!("gate '{name}' guards protected stage 'prod'")),
            "{refused}"
        );
        let refused = as_user(&env, "erin", &["delete", "gate", name], "").unwrap_err();
        assert!(refused.contains("edit-protected"), "{refused}");
    }
    patch_as(
        &env,
        "dana",
        &["gate", "step-check"],
        r#"{"spec":{"prometheus":{"timeout":"5s"}}}"#,
    )
    .expect("the protected-stage admin may change it");
}

/// CI may only publish Releases; a version that tries to turn a gate's query into one that
/// always passes is refused before it is stored, naming the field.
pub async fn ci_cannot_pass_a_prometheus_gate_by_injecting_promql_through_a_version(
    mut env: TestEnv,
) {
    env.grant_example_roles();
    env.start_admitted_controller().await;
    env.apply(&format!(
        "{}---\napiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {{name: dev}}\nspec: {{pipeline: shop, target: {{name: web-dev}}}}\n",
        target_yaml("web-dev")
    ));
    for version in [
        r#"x"}[5m])*0) or vector(0) #"#,
        "1.0 or vector(0)",
        "$(curl evil)",
    ] {
        let yaml = release_yaml("sneaky", "shop", "1", &crate::env::image("sneaky"))
            .replace("version: \"1\"", &format!("version: '{version}'"));
        let refused = as_user(&env, "ci-bot", &["create", "-f", "-"], &yaml).unwrap_err();
        assert!(refused.contains("spec.version"), "{version}: {refused}");
    }
    let fine = release_yaml("fine", "shop", "1.4.2+build.7", &crate::env::image("fine"));
    as_user(&env, "ci-bot", &["create", "-f", "-"], &fine).expect("a semver version is fine");
}

/// A canary paused for a person, with the route's weights the only thing that changes.
async fn paused_canary(env: &mut TestEnv, weight: i64) -> Bed {
    let (v1, v2) = (image("healthy", "v1"), image("healthy", "v2"));
    let steps = format!("      - setWeight: {weight}\n      - pause: {{}}\n");
    env.grant_example_roles();
    grant_team_editor(env, "erin");
    let bed = start_bed_with(env, &v1, &[&v2], &steps, without_background_analysis).await;
    env.apply(&release_yaml("v2", "shop", "2", &v2));
    env.wait_for(&format!("the canary at {weight}%"), WAIT, || async {
        match route_canary_weight(env).await {
            w if w == weight => Ok(()),
            w => Err(format!("weight {w}")),
        }
    })
    .await;
    bed
}

/// A team editor may create StageCommands but has neither the `promote` verb nor a place at
/// an approval gate: their promote and abort are refused, saying which verb was missing, and
/// move no weight. A release manager with the verbs promotes.
pub async fn a_promote_by_someone_with_neither_the_verb_nor_a_place_at_the_gate_is_refused(
    mut env: TestEnv,
) {
    let _bed = paused_canary(&mut env, 20).await;
    for action in ["promote", "abort"] {
        let name = env.steer(Some("erin"), "prod", action, None);
        let status = env.wait_command(&name).await;
        let message = status.message.unwrap_or_default();
        assert_eq!(status.phase, Some(CommandPhase::Refused), "{message}");
        assert!(
            message.contains(&format!("'{action}' verb")) && message.contains("erin"),
            "{message}"
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(route_canary_weight(&env).await, 20, "nothing moved");
    let name = env.steer(Some("alice"), "prod", "promote", None);
    assert_eq!(
        env.wait_command(&name).await.phase,
        Some(CommandPhase::Applied)
    );
    env.wait_release_stage("v2", "prod", "Succeeded", WAIT)
        .await;
}

/// 600 Approvals by someone who counts nowhere stay on the Approvals; a trail filled to the
/// brim by whoever may write it still does not hold a rollback: the canary's traffic is back
/// on the primary soon after the analysis fails.
pub async fn a_flood_of_approvals_and_a_full_trail_never_block_a_rollback(mut env: TestEnv) {
    let (v1, v2) = (image("healthy", "v1"), image("healthy", "v2-degrades"));
    env.grant_example_roles();
    grant_team_editor(&env, "erin");
    let steps = "      - setWeight: 20\n      - pause: {}\n";
    let bed = start_bed_with(&mut env, &v1, &[&v2], steps, |w| w).await;
    env.apply(&release_yaml("v2", "shop", "2", &v2));
    env.wait_for("the canary at 20%", WAIT, || async {
        match route_canary_weight(&env).await {
            20 => Ok(()),
            w => Err(format!("weight {w}")),
        }
    })
    .await;
    let flood: String = (0..600)
        .map(|i| format!("apiVersion: greenlight.dev/v1alpha1\nkind: Approval\nmetadata: {{name: flood-{i}}}\nspec: {{release: v2, stage: prod, decision: approve}}\n---\n"))
        .collect();
    as_user(&env, "erin", &["create", "-f", "-"], &flood).expect("erin may create Approvals");
    let last = env
        .wait_for("the last Approval judged", WAIT, || async {
            let a = env
                .api::<greenlight::api::Approval>()
                .get("flood-599")
                .await;
            let message = a.ok().and_then(|a| a.status).and_then(|s| s.message);
            message.ok_or_else(|| "not yet".to_string())
        })
        .await;
    assert!(last.contains("recorded on this Approval only"), "{last}");
    let trail = env.release("v2").await.status.unwrap_or_default().audit;
    assert!(trail.iter().all(|e| e.actor != "erin"), "{trail:?}");
    fill_the_trail(&env, "v2").await;
    bed.apps.degrade(&v2).await;
    env.wait_for(
        "all traffic back on the primary",
        Duration::from_secs(60),
        || async {
            match route_canary_weight(&env).await {
                0 => Ok(()),
                w => Err(format!("weight {w}")),
            }
        },
    )
    .await;
    let stage = env.stage("prod").await.status.unwrap_or_default();
    assert!(
        stage
            .rollout
            .is_none_or(|r| r.direction == greenlight::api::stage::RolloutDirection::Rollback)
    );
}

/// Whoever may write Release status (here the admin) fills v2's trail to its 500 entries.
async fn fill_the_trail(env: &TestEnv, release: &str) {
    let r = env.release(release).await;
    let mut audit = r.status.clone().unwrap_or_default().audit;
    let template = audit.first().cloned().expect("an entry to copy");
    let mut i = 0;
    while audit.len() < 500 {
        let mut e = template.clone();
        e.id = format!("filler/{i}");
        e.message = "filler".into();
        audit.push(e);
        i += 1;
    }
    env.api::<greenlight::api::Release>()
        .patch_status(
            release,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"audit": audit}})),
        )
        .await
        .expect("fill the trail");
}

/// Someone else sets the route's weights every 2 s for 90 s. The stage puts the weight back a
/// few times, then reports the fight instead of joining it: its status is written a handful
/// of times, and `driftCorrections` is the number of weights it put back.
pub async fn a_route_fought_over_for_90s_is_reported_with_few_status_writes(mut env: TestEnv) {
    let _bed = paused_canary(&mut env, 50).await;
    let before = status_writes(&env).await;
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    let routes: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(env.client.clone(), &env.ns, &ApiResource::from_gvk(&gvk));
    let fight = serde_json::json!({"spec": {"rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        "backendRefs": [{"name": "web-primary", "port": 8080, "weight": 90}, {"name": "web-canary", "port": 8080, "weight": 10}]}]}});
    let params = PatchParams {
        field_manager: Some("argocd-controller".into()),
        ..Default::default()
    };
    for _ in 0..45 {
        routes
            .patch("web", &params, &Patch::Merge(&fight))
            .await
            .expect("the other writer sets its weights");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let written = status_writes(&env).await - before;
    assert!(written <= 10.0, "{written} stage status writes in 90 s");
    let progress = env.stage("prod").await.status.unwrap_or_default();
    let canary = progress
        .rollout
        .and_then(|r| r.canary)
        .expect("still paused");
    assert_eq!(canary.phase, CanaryPhase::Paused);
    let on_the_stage = env
        .events("TrafficDrift")
        .await
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Stage"));
    let corrections = on_the_stage.count() as i32;
    assert_eq!(canary.drift_corrections, corrections);
    assert_eq!(corrections, 3, "put back three times, then reported");
    let contested = env
        .stage("prod")
        .await
        .status
        .unwrap_or_default()
        .conditions;
    assert!(
        contested.iter().any(|c| c.reason == "TrafficContested"),
        "{contested:?}"
    );
}

async fn status_writes(env: &TestEnv) -> f64 {
    let text = env.metrics().await;
    metric_sum(
        &text,
        "greenlight_api_writes_total",
        &[("kind", "stage_status")],
    )
}
