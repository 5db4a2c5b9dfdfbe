//! Approval reconciliation: check each Approval's approver stamp, say on the Approval whether
//! and where it counts, and record the decision in its Release's audit trail with an Event.

use std::sync::Arc;

use futures::StreamExt;
use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::error::ReconcileError;
use super::patch::merge_diff;
use super::writer::Announcement;
use super::{Context, error_policy, instrumented, key, refs_of};
use crate::api::approval::ApprovalStatus;
use crate::api::conditions::{self, Condition};
use crate::api::release::{AuditAction, AuditEntry};
use crate::api::{Approval, Decision, Release, Stage};

const CONTROLLER: &str = "approval";
pub use greenlight_api::approval::{COUNTS, VERIFIED};
/// Reason of a verified Approval whose Release and Stage exist: it is in the audit trail.
const RECORDED: &str = "Verified";

pub async fn controller(ctx: Arc<Context>) {
    let settle = ctx.queue.clone();
    let index = ctx.index.clone();
    // An Approval may arrive before its Release (Git applies in any order).
    let of_release =
        ctx.queue
            .on_changes::<Release, Approval, _>(&ctx.index, CONTROLLER, move |r| {
                let (ns, name) = (r.namespace(), r.name_any());
                let waiting = index.approvals.state().into_iter();
                refs_of(
                    waiting
                        .filter(|a| a.namespace() == ns && a.spec.release == name)
                        .filter(|a| !recorded(a) || given_for_another(a, r)),
                )
            });
    super::queue::controller::<Approval>(&ctx.index, &ctx.queue, CONTROLLER)
        .reconcile_on(of_release)
        .shutdown_on_signal()
        .run(reconcile, error_policy(CONTROLLER), ctx)
        .for_each(|result| settle.settled(CONTROLLER, result))
        .await;
}

async fn reconcile(approval: Arc<Approval>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let key = key(&*approval)?;
    instrumented(
        CONTROLLER,
        &*approval,
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
    let release = ctx.index.release(namespace, &spec.release);
    let stage = ctx.index.stage(namespace, &spec.stage);
    let verified = ctx.index.approver(approval);
    // Recorded on the trail once the decision can be judged (signed, for a Release and Stage
    // that exist), and only when it counts somewhere, within a person's share of the trail.
    let (verified_stamp, reason, message, on_trail) = match (&verified, &release, &stage) {
        (Err(why), _, _) => (false, "Unverified", format!("does not count: {why}"), false),
        (Ok(_), None, _) => (
            true,
            "ReleaseNotFound",
            format!("spec.release: Release '{}' not found", spec.release),
            false,
        ),
        (Ok(_), _, None) => (
            true,
            "StageNotFound",
            format!("spec.stage: Stage '{}' not found", spec.stage),
            false,
        ),
        (Ok(who), Some(release), Some(stage)) => {
            let verdicts = verdicts(approval, release, stage, who, ctx);
            let by = format!("{} by {}", past_tense(spec.decision), who.username);
            let message = format!("{by}: {}", verdicts.join("; "));
            match kept_off_the_trail(&verdicts, release, approval, &who.username) {
                Some(why) => (true, RECORDED, format!("{message}; {why}"), false),
                None => (true, RECORDED, message, true),
            }
        }
    };
    write_status(approval, verified_stamp, reason, &message, ctx).await?;
    if let (Ok(who), true) = (verified, on_trail) {
        record_on_trail(approval, namespace, &who.username, &message, ctx).await?;
    }
    Ok(Action::await_change())
}

/// Appends the decision to its Release's audit trail and announces it with an Event.
async fn record_on_trail(
    approval: &Approval,
    namespace: &str,
    who: &str,
    message: &str,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let spec = &approval.spec;
    let comment = spec
        .comment
        .as_deref()
        .map(|c| format!(" ({c})"))
        .unwrap_or_default();
    let action = match spec.decision {
        Decision::Approve => AuditAction::Approved,
        Decision::Reject => AuditAction::Rejected,
    };
    let entry = AuditEntry {
        id: format!("approval/{}/{action:?}", approval.name_any()),
        time: approval
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or_else(Timestamp::now, |t| t.0),
        stage: spec.stage.clone(),
        action,
        actor: who.to_string(),
        message: format!("{message}{comment}"),
        approval: Some(approval.name_any()),
        reason: None,
        gate: None,
        template: None,
        previous_template: None,
        policy: None,
        change_ticket: None,
        review_due: None,
        review: None,
        configuration: None,
    };
    let appended = ctx
        .writer
        .audit(namespace, &spec.release, vec![entry])
        .await?;
    if let (Some(entry), Some(release)) = (
        appended.first(),
        ctx.index.release(namespace, &spec.release),
    ) {
        let rejected = entry.action == AuditAction::Rejected;
        let a = Announcement {
            warning: rejected,
            reason: if rejected { "Rejected" } else { "Approved" },
            note: format!("stage {}: {}", spec.stage, entry.message),
            key: super::release::event_key(entry),
            notify_stage: None,
        };
        ctx.writer.events.publish(&*release, a).await;
    }
    Ok(())
}

/// Where the decision counts and why not: nowhere when it was given for another Release object
/// than the one of that name now (before it was published, or for one deleted since).
fn verdicts(
    approval: &Approval,
    release: &Release,
    stage: &Stage,
    who: &crate::api::Identity,
    ctx: &Context,
) -> Vec<String> {
    let now = crate::api::ReleaseRef {
        uid: release.uid().unwrap_or_default(),
        digest: crate::identity::release_digest(&release.spec),
    };
    match &approval.spec.release_ref {
        Some(given) if *given == now => {
            let mut verdicts = eligibility(ctx, stage, release, who);
            if let Some(why) = not_for_the_emergency(stage, approval, who) {
                verdicts.retain(|v| !v.contains("'emergency approvals'"));
                verdicts.push(why);
            }
            verdicts
        }
        Some(_) => vec![format!(
            "does not count: it was given for an earlier release named '{}' (deleted and published again since); approve it again",
            release.name_any()
        )],
        None => vec![format!(
            "does not count: it was given before release '{}' existed; approve it again",
            release.name_any()
        )],
    }
}

/// How an Approval's message says it was kept on the Approval alone.
const OFF_THE_TRAIL: &str = "recorded on this Approval only";
/// Most decisions one person's Approvals add to one Release's trail at one stage: a person
/// who changes their mind is recorded, one who scripts Approvals cannot fill the trail.
pub const DECISIONS_PER_PERSON: usize = 10;

/// Why a verified decision stays off its Release's trail: it counts nowhere (anyone who may
/// create Approvals could otherwise fill the trail), or its author has used their share.
fn kept_off_the_trail(
    verdicts: &[String],
    release: &Release,
    approval: &Approval,
    who: &str,
) -> Option<String> {
    let (stage, name) = (&approval.spec.stage, approval.name_any());
    if !verdicts.iter().any(|v| v.starts_with(COUNTS)) {
        return Some(format!(
            "{OFF_THE_TRAIL}, not on the Release's audit trail, as it counts nowhere"
        ));
    }
    let trail = release.status.iter().flat_map(|s| s.audit.iter());
    let theirs = trail
        .filter(|e| e.actor == who && &e.stage == stage)
        .filter(|e| e.approval.as_ref().is_some_and(|a| *a != name))
        .count();
    (theirs >= DECISIONS_PER_PERSON).then(|| {
        format!(
            "{OFF_THE_TRAIL}: {who} has {theirs} decisions on the Release's audit trail for this stage, the most one person may add"
        )
    })
}

/// Whether the Approval was given for another Release object than `release` (one deleted and
/// published again under its name since): its verdict must be told again, as it counts no more.
fn given_for_another(approval: &Approval, release: &Release) -> bool {
    let given = approval.spec.release_ref.as_ref().map(|r| r.uid.as_str());
    given != release.metadata.uid.as_deref()
}

/// Verified with its Release and Stage found, so recorded: nothing a Release change can alter
/// but the Release being published again (see [`given_for_another`]).
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
/// Why an approval does not count toward the stage's pending (or rolling out) emergency:
/// its author asked for it, or gave it before it was asked.
fn not_for_the_emergency(
    stage: &Stage,
    approval: &Approval,
    who: &crate::api::Identity,
) -> Option<String> {
    let status = stage.status.as_ref()?;
    let rolling = status.rollout.as_ref().and_then(|r| r.emergency.as_ref());
    let request = status.emergency.as_ref().or(rolling)?;
    if request.release != approval.spec.release {
        return None;
    }
    let created = approval.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let why = match (who.username == request.requester, created) {
        (true, _) => format!(
            "{} asked for the emergency and may not approve it",
            who.username
        ),
        (false, Some(at)) if at < request.since => {
            "it was given before the emergency was asked for".to_string()
        }
        _ => return None,
    };
    Some(format!(
        "does not count toward gate 'emergency approvals': {why}"
    ))
}

/// The approvals a stage's emergencies need, as an approval gate's policy.
fn emergency_policy(stage: &Stage) -> Option<crate::gates::approval::ApprovalPolicy> {
    let a = &stage.spec.emergency.as_ref()?.approvals;
    let gate = serde_json::json!({"users": a.users, "groups": a.groups, "required": a.required});
    let gate = serde_json::from_value(gate).ok()?;
    crate::gates::approval::ApprovalPolicy::compile(&gate).ok()
}

pub(crate) fn eligibility(
    ctx: &Context,
    stage: &Stage,
    release: &Release,
    who: &crate::api::Identity,
) -> Vec<String> {
    let author = ctx.index.release_author(release);
    let emergency = emergency_policy(stage).map(|p| ("emergency approvals".to_string(), p));
    let verdicts: Vec<String> = ctx
        .index
        .approval_gates(stage, release.spec.release_type)
        .into_iter()
        .chain(emergency)
        .map(|(name, policy)| match policy.refusal(who, &author) {
            None => format!("{COUNTS} '{name}'"),
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

async fn write_status(
    approval: &Approval,
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
        ctx.writer.status("approval_status", approval, diff).await?;
    }
    Ok(())
}
