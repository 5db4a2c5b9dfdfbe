//! Approval reconciliation: check each Approval's approver stamp, say on the Approval whether
//! and where it counts, and record the decision in its Release's audit trail with an Event.

use std::sync::Arc;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::error::ReconcileError;
use super::patch::merge_diff;
use super::{Context, audit, error_policy, instrumented, key, refs_of, scoped_api};
use crate::api::approval::ApprovalStatus;
use crate::api::conditions::{self, Condition};
use crate::api::release::{AuditAction, AuditEntry};
use crate::api::{Approval, Decision, Gate, GateType, Release, Stage};
use crate::gates::GateContext;
use crate::gates::approval::{ApprovalPolicy, ApprovalRecord};
use crate::identity::{Subject, Unverified};

const CONTROLLER: &str = "approval";
/// Condition: the approver stamp is this operator's (True), or why not (False).
pub const VERIFIED: &str = "Verified";
/// Reason of a verified Approval whose Release and Stage exist: it is in the audit trail.
const RECORDED: &str = "Verified";

pub async fn controller(ctx: Arc<Context>, client: &Client, namespace: &Option<String>) {
    let approvals = ctx.approvals.clone();
    Controller::new(
        scoped_api::<Approval>(client, namespace),
        watcher::Config::default(),
    )
    // An Approval may arrive before its Release (Git applies in any order).
    .watches(
        scoped_api::<Release>(client, namespace),
        watcher::Config::default(),
        move |r: Release| {
            let ns = r.namespace();
            let name = r.name_any();
            refs_of(
                approvals
                    .state()
                    .into_iter()
                    .filter(|a| a.namespace() == ns && a.spec.release == name && !recorded(a)),
            )
        },
    )
    .shutdown_on_signal()
    .run(reconcile, error_policy(CONTROLLER), ctx)
    .for_each(|_| futures::future::ready(()))
    .await;
}

async fn reconcile(approval: Arc<Approval>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let key = key(&*approval)?;
    instrumented(
        CONTROLLER,
        "Approval",
        &key,
        &ctx,
        reconcile_approval(&approval, &key.0, &ctx),
    )
    .await
}

async fn reconcile_approval(
    approval: &Approval,
    namespace: &str,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let spec = &approval.spec;
    let release = ctx
        .releases
        .get(&ObjectRef::new(&spec.release).within(namespace));
    let stage = ctx
        .stages
        .get(&ObjectRef::new(&spec.stage).within(namespace));
    let verified = ctx.identity.verify(
        &Subject::Approval { namespace, spec },
        spec.approver.as_ref(),
    );
    let (verified_stamp, reason, message) = match (&verified, &release, &stage) {
        (Err(why), _, _) => (false, "Unverified", format!("does not count: {why}")),
        (Ok(_), None, _) => (
            true,
            "ReleaseNotFound",
            format!("spec.release: Release '{}' not found", spec.release),
        ),
        (Ok(_), _, None) => (
            true,
            "StageNotFound",
            format!("spec.stage: Stage '{}' not found", spec.stage),
        ),
        (Ok(who), Some(release), Some(stage)) => {
            let author = release_author(ctx, release);
            let verdicts = eligibility(ctx, stage, who, &author);
            let message = format!(
                "{} by {}: {}",
                past_tense(spec.decision),
                who.username,
                verdicts.join("; ")
            );
            (true, RECORDED, message)
        }
    };
    write_status(approval, namespace, verified_stamp, reason, &message, ctx).await?;
    // Recorded once the decision can be judged: signed, for a Release and Stage that exist.
    let (Ok(who), Some(_), Some(_)) = (verified, release, stage) else {
        return Ok(Action::await_change());
    };
    let comment = spec
        .comment
        .as_deref()
        .map(|c| format!(" ({c})"))
        .unwrap_or_default();
    let entry = AuditEntry {
        time: approval
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or_else(Timestamp::now, |t| t.0),
        stage: spec.stage.clone(),
        action: match spec.decision {
            Decision::Approve => AuditAction::Approved,
            Decision::Reject => AuditAction::Rejected,
        },
        actor: who.username.clone(),
        message: format!("{message}{comment}"),
        approval: Some(approval.name_any()),
    };
    let appended = audit::append(ctx, namespace, &spec.release, vec![entry]).await?;
    if let (Some(entry), Some(release)) = (
        appended.first(),
        ctx.releases
            .get(&ObjectRef::new(&spec.release).within(namespace)),
    ) {
        let reason = match entry.action {
            AuditAction::Rejected => "Rejected",
            _ => "Approved",
        };
        let note = format!("stage {}: {}", spec.stage, entry.message);
        ctx.publish(
            &*release,
            entry.action == AuditAction::Rejected,
            reason,
            note,
        )
        .await;
    }
    Ok(Action::await_change())
}

/// Verified with its Release and Stage found, so recorded: nothing a Release change can alter.
fn recorded(approval: &Approval) -> bool {
    approval.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == VERIFIED && c.reason == RECORDED)
    })
}

fn past_tense(decision: Decision) -> &'static str {
    match decision {
        Decision::Approve => "approved",
        Decision::Reject => "rejected",
    }
}

/// For each approval gate of the stage: whether a decision by `who` counts there, and why not.
pub(crate) fn eligibility(
    ctx: &Context,
    stage: &Stage,
    who: &crate::api::Identity,
    author: &Result<String, Unverified>,
) -> Vec<String> {
    let namespace = stage.namespace().unwrap_or_default();
    let verdicts: Vec<String> = approval_gates(ctx, stage, &namespace)
        .into_iter()
        .map(|(name, policy)| match policy.refusal(who, author) {
            None => format!("counts toward gate '{name}'"),
            Some(why) => format!("does not count toward gate '{name}': {why}"),
        })
        .collect();
    if verdicts.is_empty() {
        vec![format!(
            "stage '{}' has no approval gate, so it counts nowhere",
            stage.name_any()
        )]
    } else {
        verdicts
    }
}

/// The stage's valid approval gates with their policies, in the stage's order.
pub(crate) fn approval_gates(
    ctx: &Context,
    stage: &Stage,
    namespace: &str,
) -> Vec<(String, ApprovalPolicy)> {
    approval_gates_in(&ctx.gates, stage, namespace)
}

pub(crate) fn approval_gates_in(
    gates: &kube::runtime::reflector::Store<Gate>,
    stage: &Stage,
    namespace: &str,
) -> Vec<(String, ApprovalPolicy)> {
    stage
        .spec
        .gates
        .iter()
        .filter_map(|name| {
            let gate = gates.get(&ObjectRef::new(name).within(namespace))?;
            if gate.spec.gate_type != GateType::Approval {
                return None;
            }
            let policy = ApprovalPolicy::compile(gate.spec.approval.as_ref()?).ok()?;
            Some((name.clone(), policy))
        })
        .collect()
}

/// The release's creator, if its stamp checks out.
pub(crate) fn release_author(ctx: &Context, release: &Release) -> Result<String, Unverified> {
    let namespace = release.namespace().unwrap_or_default();
    ctx.identity
        .verify(
            &Subject::Release {
                namespace: &namespace,
                spec: &release.spec,
            },
            release.spec.created_by.as_ref(),
        )
        .map(|who| who.username.clone())
}

/// What an approval gate reads: the approvals of the judged release at the judged stage, and
/// the release's verified author.
pub(crate) fn fill_context(ctx: &Context, gate_ctx: &mut GateContext) {
    gate_ctx.release_author = ctx
        .releases
        .get(&ObjectRef::new(&gate_ctx.release).within(&gate_ctx.namespace))
        .map_or(Err(Unverified::Missing), |r| release_author(ctx, &r));
    gate_ctx.approvals = records(ctx, &gate_ctx.namespace, &gate_ctx.release, &gate_ctx.stage);
}

/// Names of the Approvals of `release` at `stage`, sorted.
pub(crate) fn names(ctx: &Context, namespace: &str, release: &str, stage: &str) -> Vec<String> {
    let mut names: Vec<String> = of(ctx, namespace, release, stage)
        .map(|a| a.name_any())
        .collect();
    names.sort();
    names
}

fn of<'a>(
    ctx: &Context,
    namespace: &'a str,
    release: &'a str,
    stage: &'a str,
) -> impl Iterator<Item = Arc<Approval>> + 'a {
    ctx.approvals.state().into_iter().filter(move |a| {
        a.namespace().as_deref() == Some(namespace)
            && a.spec.release == release
            && a.spec.stage == stage
    })
}

/// Approvals of `release` at `stage`, each with its approver stamp checked.
fn records(ctx: &Context, namespace: &str, release: &str, stage: &str) -> Vec<ApprovalRecord> {
    let mut records: Vec<ApprovalRecord> = of(ctx, namespace, release, stage)
        .map(|a| ApprovalRecord {
            name: a.name_any(),
            decision: a.spec.decision,
            comment: a.spec.comment.clone(),
            created: a
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(Timestamp::UNIX_EPOCH, |t| t.0),
            approver: ctx
                .identity
                .verify(
                    &Subject::Approval {
                        namespace,
                        spec: &a.spec,
                    },
                    a.spec.approver.as_ref(),
                )
                .cloned(),
        })
        .collect();
    records.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
    records
}

async fn write_status(
    approval: &Approval,
    namespace: &str,
    verified: bool,
    reason: &str,
    message: &str,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let old = approval.status.clone().unwrap_or_default();
    let new = ApprovalStatus {
        message: Some(message.to_string()),
        conditions: conditions::merge(
            &old.conditions,
            vec![Condition::new(VERIFIED, verified, reason, message)],
            Timestamp::now(),
            approval.metadata.generation,
        ),
    };
    if let Some(diff) = merge_diff(&serde_json::to_value(&old)?, &serde_json::to_value(&new)?) {
        ctx.metrics.write("approval_status");
        ctx.api::<Approval>(namespace)
            .patch_status(
                &approval.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": diff })),
            )
            .await?;
    }
    Ok(())
}
