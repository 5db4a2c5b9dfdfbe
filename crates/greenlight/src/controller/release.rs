//! Release reconciliation: validate the spec and derive the overall phase, summary and
//! conditions from the per-stage entries that the stage controller writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::error::ReconcileError;
use super::patch::merge_diff;
use super::writer::Announcement;
use super::{Context, error_policy, instrumented, key, refs_of};
use crate::api::conditions;
use crate::api::release::{AuditAction, AuditEntry, Release, ReleaseStatus};
use crate::api::stage::Stage;
use crate::index::release_problem;
use crate::machine::release::summarize;
use crate::pipeline::topological_order;

const CONTROLLER: &str = "release";

pub async fn controller(ctx: Arc<Context>) {
    let settle = ctx.queue.clone();
    let index = ctx.index.clone();
    // A release final everywhere has nothing to learn from its stages: only those still on
    // their way are looked at again when a stage changes.
    let of_pipeline = ctx
        .queue
        .on_changes::<Stage, Release, _>(&ctx.index, CONTROLLER, move |s| {
            let ns = s.namespace().unwrap_or_default();
            let releases = index.pipeline_releases(&ns, &s.spec.pipeline).into_iter();
            refs_of(releases.filter(|r| !is_final(r)))
        });
    super::queue::controller::<Release>(&ctx.index, &ctx.queue, CONTROLLER)
        .reconcile_on(of_pipeline)
        .shutdown_on_signal()
        .run(reconcile, error_policy(CONTROLLER), ctx)
        .for_each(|result| settle.settled(CONTROLLER, result))
        .await;
}

/// `status` with the phase, summary, message and conditions its stage entries make, in the
/// order of the release's pipeline; the entries and the trail as they are.
pub(crate) fn derived_status(
    release: &Release,
    status: &ReleaseStatus,
    ctx: &Context,
    now: Timestamp,
) -> ReleaseStatus {
    let namespace = release.namespace().unwrap_or_default();
    let stages = ctx
        .index
        .pipeline_stages(&namespace, &release.spec.pipeline);
    let graph: BTreeMap<String, Vec<String>> = stages
        .iter()
        .map(|s| (s.name_any(), s.spec.requires.clone()))
        .collect();
    let order = topological_order(&release.spec.pipeline, &graph)
        .unwrap_or_else(|_| graph.keys().cloned().collect());
    let invalid = release_problem(release);
    let summary = summarize(status, &order, invalid.as_deref());
    let generation = release.meta().generation;
    ReleaseStatus {
        observed_generation: generation,
        phase: Some(summary.phase),
        summary: Some(summary.summary).filter(|s| !s.is_empty()),
        message: Some(summary.message).filter(|s| !s.is_empty()),
        conditions: conditions::merge(&status.conditions, summary.conditions, now, generation),
        stages: status.stages.clone(),
        // The trail is only ever appended to, by `audit::append`; never written from here.
        audit: status.audit.clone(),
    }
}

fn is_final(release: &Release) -> bool {
    use crate::api::release::ReleasePhase::{Failed, Succeeded, Superseded};
    let phase = release.status.as_ref().and_then(|s| s.phase);
    matches!(phase, Some(Succeeded | Failed | Superseded))
}

async fn reconcile(release: Arc<Release>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let key = key(&*release)?;
    instrumented(
        CONTROLLER,
        &*release,
        &ctx,
        reconcile_release(&release, &key.0, &ctx),
    )
    .await
}

async fn reconcile_release(
    release: &Release,
    namespace: &str,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    announce_recent(release, namespace, ctx).await;
    let old = release.status.clone().unwrap_or_default();
    let new = derived_status(release, &old, ctx, Timestamp::now());
    if let Some(diff) = merge_diff(&serde_json::to_value(&old)?, &serde_json::to_value(&new)?) {
        ctx.writer.status("release_status", release, diff).await?;
    }
    Ok(announce_overdue(release, namespace, ctx, Timestamp::now()).await)
}

/// Each open review of an emergency rollout past its due date is recorded once in the trail
/// (so no restart tells it again) and told by an Event, the outbox entry of its
/// `ReviewOverdue` notice; the release is looked at again when the next one falls due.
async fn announce_overdue(
    release: &Release,
    namespace: &str,
    ctx: &Context,
    now: Timestamp,
) -> Action {
    let mut next: Option<Timestamp> = None;
    let reviews = greenlight_core::review::reviews(release);
    for review in reviews.iter().filter(|r| r.open()) {
        let Some(due) = review.due else {
            continue;
        };
        if due > now {
            next = Some(next.map_or(due, |n| n.min(due)));
            continue;
        }
        let note = format!(
            "stage {}: the review of the emergency rollout {} asked for is overdue (due {due}); close it with its post-mortem: kubectl greenlight review close {} --stage {} --post-mortem URL",
            review.stage,
            review.requester,
            release.name_any(),
            review.stage
        );
        let entry = overdue_entry(review, due, note, now);
        let appended = ctx
            .writer
            .audit(namespace, &release.name_any(), vec![entry])
            .await;
        let Some(entry) = appended.ok().and_then(|a| a.into_iter().next()) else {
            continue;
        };
        let stage = ctx.index.stage(namespace, &review.stage);
        let note = format!("stage {}: {}", entry.stage, entry.message);
        let notify_stage =
            stage.and_then(|s| crate::notify::outbox_stage(&s, "ReviewOverdue", &note));
        let a = Announcement {
            warning: true,
            reason: "ReviewOverdue",
            note,
            key: event_key(&entry),
            notify_stage,
        };
        ctx.writer.events.publish(release, a).await;
    }
    match next {
        Some(at) => {
            let wait = at.duration_since(now).unsigned_abs() + std::time::Duration::from_secs(1);
            Action::requeue(wait)
        }
        None => Action::await_change(),
    }
}

/// The trail entry that records a review past its due date, once.
fn overdue_entry(
    review: &greenlight_core::review::Review,
    due: Timestamp,
    message: String,
    now: Timestamp,
) -> AuditEntry {
    let message = message
        .strip_prefix(&format!("stage {}: ", review.stage))
        .unwrap_or(&message)
        .to_string();
    AuditEntry {
        id: format!("{}/ReviewOverdue", review.id),
        time: now,
        stage: review.stage.clone(),
        action: AuditAction::ReviewOverdue,
        actor: crate::api::OPERATOR_ACTOR.to_string(),
        message,
        approval: None,
        reason: None,
        gate: None,
        template: None,
        previous_template: None,
        configuration: None,
        policy: None,
        change_ticket: None,
        review_due: Some(due),
        review: Some(review.id.clone()),
    }
}

/// How far back the audit trail is announced again after a restart: Events live an hour.
const REPLAY_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_mins(50);

/// The Event of each recent audit entry, published unless it exists: a transition made final
/// just before a crash is announced after the restart. The trail is the record of truth.
async fn announce_recent(release: &Release, namespace: &str, ctx: &Context) {
    let trail = release
        .status
        .as_ref()
        .map(|s| s.audit.as_slice())
        .unwrap_or_default();
    // Later entries are this process's own, announced by the stage that made them.
    let (since, until) = (
        Timestamp::now() - REPLAY_WINDOW,
        ctx.writer.events.started(),
    );
    for entry in trail.iter().filter(|e| e.time >= since && e.time < until) {
        let (reason, warning) = event_of(entry.action);
        let key = event_key(entry);
        let stage = ctx.index.stage(namespace, &entry.stage);
        // A replayed transition carries its notice too: it may be the one the crash lost.
        let notify_stage = stage
            .as_ref()
            .and_then(|s| crate::notify::outbox_stage(s, reason, &entry.message));
        if let Some(stage) = stage.filter(|_| entry.approval.is_none()) {
            let note = format!("{} (release {})", entry.message, release.name_any());
            let a = Announcement {
                warning,
                reason,
                note,
                key: key.clone(),
                notify_stage: None,
            };
            ctx.writer.events.publish(&*stage, a).await;
        }
        let note = format!("stage {}: {}", entry.stage, entry.message);
        let a = Announcement {
            warning,
            reason,
            note,
            key,
            notify_stage,
        };
        ctx.writer.events.publish(release, a).await;
    }
}

/// The key an audit entry's Event is named by.
pub(crate) fn event_key(entry: &AuditEntry) -> String {
    match (&entry.id, &entry.approval) {
        (id, _) if !id.is_empty() => id.clone(),
        (_, Some(approval)) => format!("approval/{approval}/{:?}", entry.action),
        _ => format!("{}/{:?}/{}", entry.stage, entry.action, entry.time),
    }
}

/// The Event reason that announces an audit action, and whether it is a warning.
fn event_of(action: AuditAction) -> (&'static str, bool) {
    match action {
        AuditAction::Approved => ("Approved", false),
        AuditAction::Rejected => ("Rejected", true),
        AuditAction::RolloutStarted => ("RolloutStarted", false),
        AuditAction::Promoted => ("RolloutSucceeded", false),
        AuditAction::RolledBack => ("RolloutFailed", true),
        AuditAction::RollbackCompleted => ("RollbackCompleted", true),
        AuditAction::PromoteRequested => ("PromotedByHand", false),
        AuditAction::AbortRequested => ("RolloutFailed", true),
        AuditAction::RetryRequested => ("RetryRequested", false),
        AuditAction::CommandRefused => ("CommandRefused", true),
        AuditAction::PreRolloutFailed => ("PreRolloutFailed", true),
        AuditAction::Verified => ("Verified", false),
        AuditAction::GatePassed => ("CheckPassed", false),
        AuditAction::GateFailed => ("CheckFailed", true),
        AuditAction::EmergencyRequested => ("EmergencyRequested", false),
        AuditAction::EmergencyCancelled => ("EmergencyCancelled", false),
        AuditAction::Bypassed => ("Bypassed", true),
        AuditAction::BreakGlass => ("BreakGlass", true),
        AuditAction::ReviewClosed => ("ReviewClosed", false),
        AuditAction::ReviewOverdue => ("ReviewOverdue", true),
    }
}
