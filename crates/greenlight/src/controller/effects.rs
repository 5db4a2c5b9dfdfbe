//! Effect: a stage's decision handed to the writer, in an order that keeps a crash between
//! any two writes safe. Workloads and traffic first (a refusal there leaves no trace of a
//! transition that did not happen), except when traffic leaves the canary, which is recorded
//! first; the audit trail, the record of truth, whose entries have identities so a replay
//! adds nothing; then release entries and the stage status that make the transition final;
//! then Events, named after the audit entries they announce; last, the StageCommands handled,
//! each marked with what became of it.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::Context;
use super::error::ReconcileError;
use super::observe::World;
use super::writer::Announcement;
use crate::api::conditions::{Condition, STRATEGY_OVERRIDDEN, TARGET_CHANGED, TARGET_RUNS_PODS};
use crate::api::release::{AuditAction, AuditEntry};
use crate::api::stage::RolloutOutcome;
use crate::api::{OPERATOR_ACTOR, ORPHANED_ANNOTATION};
use crate::machine::{DesiredPrimary, Outcome, StageEvent};
use crate::metrics::{DurationLabels, RolloutLabels};
use crate::workload::{build_primary, matches_desired};

pub(crate) async fn apply(
    world: &World,
    outcome: Outcome,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action, ReconcileError> {
    // Traffic taken away from the canary (a rollback, an abort, a pause on failure) is recorded
    // first: a controller killed between the two writes then finds the decision and carries
    // it on, instead of deciding afresh and sending traffic back to a failing canary.
    let retreat = match (outcome.weight, world.canary.as_ref()) {
        (Some(w), Some((_, _, view))) => view.weight_in_effect.is_some_and(|now| w < now),
        _ => false,
    };
    if !retreat {
        apply_workloads(world, &outcome, ctx).await?;
    }
    let unaudited = record(world, &outcome, ctx, now, retreat || rolls_back(&outcome)).await?;
    if retreat {
        apply_workloads(world, &outcome, ctx).await?;
    }
    announce(world, &outcome.events, ctx).await;
    if outcome.events.iter().any(|e| ends_checks(e.kind)) {
        let rolling_out = outcome.status.rollout.as_ref().map(|r| r.release.as_str());
        let (ns, name) = (
            world.stage.namespace().unwrap_or_default(),
            world.stage.name_any(),
        );
        super::jobs::sweep(&ns, &name, rolling_out, &ctx.index, &ctx.writer).await;
    }
    world
        .steering
        .mark(&world.stage, &outcome, ctx, now)
        .await?;
    if let Some(refused) = unaudited {
        // The retreat went on and its Events are out; the trail that refused its entries is
        // shown like any refused write.
        return Err(refused.into());
    }
    let acting = world.steering.acting.is_some() && !outcome.command_deferred;
    let more = !world.steering.superseded.is_empty() || acting;
    if more && outcome.requeue_after > Duration::from_secs(1) {
        // A command that came after the one handled now waits for no timer.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    Ok(Action::requeue(
        outcome.requeue_after.max(Duration::from_secs(1)),
    ))
}

/// A transition after which a rollout's gate Jobs are done with.
fn ends_checks(kind: crate::machine::Transition) -> bool {
    use crate::machine::Transition::*;
    matches!(
        kind,
        RolloutSucceeded | RollbackCompleted | PreRolloutFailed | Verified
    )
}

/// The decision fails a rollout or carries a rollback on: a retreat, which no state of the
/// audit trail may hold up (the rolling kind moves its workloads first, like any decision).
fn rolls_back(outcome: &Outcome) -> bool {
    use crate::api::stage::RolloutDirection::Rollback;
    use crate::machine::Transition::{RollbackCompleted, RolloutFailed};
    let failing = outcome
        .events
        .iter()
        .any(|e| matches!(e.kind, RolloutFailed | RollbackCompleted));
    let rollout = outcome.status.rollout.as_ref();
    failing || rollout.is_some_and(|r| r.direction == Rollback)
}

/// The canary and its traffic, then the primary.
async fn apply_workloads(
    world: &World,
    outcome: &Outcome,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    // The Service checks reach the release by: before a forward move (a refusal then stops
    // it before any workload changed), after a retreat's (which nothing holds up).
    let retreating = rolls_back(outcome);
    if !retreating {
        super::jobs::ensure_primary_service(world, ctx).await?;
    }
    if let Some((io, observed, view)) = &world.canary {
        let template = match &outcome.canary {
            Some(DesiredPrimary::Release { template, .. }) => template.as_deref(),
            _ => None,
        };
        let status = world.stage.status.as_ref();
        let source = super::pins::source(&world.target, status, &world.pin, template)?;
        let (stage, target, replicas) = (&world.stage, &source, replicas(world));
        let problem = view.router_problem.as_ref();
        // Its ports are what the primary serves on, never a template no one approved yet.
        let ports_from = world.primary.as_deref().unwrap_or(target);
        let rolling_out = outcome.status.rollout.is_some();
        io.ensure_active(stage, ports_from, rolling_out, ctx)
            .await?;
        io.apply(
            stage,
            target,
            observed.as_deref(),
            problem,
            outcome,
            replicas,
            ctx,
        )
        .await?;
    }
    if let Some(desired) = &outcome.primary {
        apply_primary(world, desired, ctx).await?;
    }
    if retreating && let Err(e) = super::jobs::ensure_primary_service(world, ctx).await {
        tracing::warn!(error = %e, "could not put back the primary Service during a rollback");
    }
    Ok(())
}

/// The pods each workload runs. A blue-green rollout keeps the count it started with to its
/// end, so an edit of `replicas` never resizes a side while it serves or is about to.
fn replicas(world: &World) -> i32 {
    let rollout = world.stage.status.as_ref().and_then(|s| s.rollout.as_ref());
    let started_with = rollout.and_then(|r| r.replicas);
    match (world.stage.spec.strategy.strategy_type, started_with) {
        (crate::api::stage::StrategyType::BlueGreen, Some(n)) => n.clamp(0, 10_000),
        _ => world.plan.replicas,
    }
}

/// The audit trail, then the release entries, then the stage status that makes it final. In
/// a retreat, a trail that refuses the append does not stop it: the rest is recorded, and
/// the refusal is returned to be shown once the traffic has moved.
async fn record(
    world: &World,
    outcome: &Outcome,
    ctx: &Context,
    now: Timestamp,
    retreat: bool,
) -> Result<Option<super::writer::WriteError>, ReconcileError> {
    let stage = &world.stage;
    let namespace = stage.namespace().unwrap_or_default();
    let ns = namespace.as_str();
    let audits = audit_entries(world, &outcome.events, ctx, now);
    let audits: Vec<Write<'_>> = audits
        .into_iter()
        .map(|(release, entries)| -> Write<'_> {
            Box::pin(async move { ctx.writer.audit(ns, &release, entries).await.map(|_| ()) })
        })
        .collect();
    let unaudited = tolerated(concurrently(audits).await, retreat)?;
    // A retreat goes on when another writer got to a Release first: its entry is written on
    // a later pass, after the traffic has moved.
    let unentered = tolerated(release_entries(world, outcome, ctx, now).await, retreat)?;
    let old = stage.status.clone().unwrap_or_default();
    let mut status = outcome.status.clone();
    super::pins::keep(&mut status, &old, &world.pin);
    status.conditions.extend(target_runs_pods(world));
    status.conditions.extend(target_changed(&status));
    status.conditions.extend(strategy_overridden(world));
    (status.last_command, status.last_command_refused) = world.steering.recorded(&old, outcome);
    let history = status.history.clone();
    super::changes::write_stage_status(stage, &old, status, ctx, now).await?;
    // Counted once written, so a refused write that is retried counts once.
    count_rollouts(
        &old.history,
        &history,
        stage.spec.strategy.strategy_type,
        ctx,
    );
    Ok(unaudited.or(unentered))
}

type Write<'a> = futures::future::BoxFuture<'a, Result<(), super::writer::WriteError>>;

/// A refusal a retreat goes on without, to be shown once the traffic has moved.
fn tolerated(
    result: Result<(), super::writer::WriteError>,
    retreat: bool,
) -> Result<Option<super::writer::WriteError>, ReconcileError> {
    match result {
        Err(refused @ super::writer::WriteError::Refused { .. }) if retreat => Ok(Some(refused)),
        result => {
            result?;
            Ok(None)
        }
    }
}

/// This stage's entry in each Release the decision changed, with the Release's summary.
async fn release_entries(
    world: &World,
    outcome: &Outcome,
    ctx: &Context,
    now: Timestamp,
) -> Result<(), super::writer::WriteError> {
    let namespace = world.stage.namespace().unwrap_or_default();
    let (ns, name) = (namespace.as_str(), world.stage.name_any());
    let mut entries: Vec<Write<'_>> = Vec::new();
    for (release, entry) in &outcome.release_updates {
        let before = world
            .releases
            .iter()
            .find(|r| &r.name == release)
            .and_then(|r| r.stages.get(&name));
        let summary = summary_patch(ctx, ns, release, &name, entry, now);
        let name = &name;
        entries.push(Box::pin(async move {
            ctx.writer
                .release_entry(ns, release, name, (before, entry), summary)
                .await
        }));
    }
    concurrently(entries).await
}

/// Runs writes to different releases a few at a time. A superseding stage may write dozens
/// of releases in one pass; one after another, on a busy apiserver, that pass took seconds.
/// Each write is idempotent, so a kill part-way leaves nothing the next pass does not mend.
async fn concurrently(writes: Vec<Write<'_>>) -> Result<(), super::writer::WriteError> {
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(writes)
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn apply_primary(
    world: &World,
    desired: &DesiredPrimary,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let (release, template) = match desired {
        DesiredPrimary::Release {
            name,
            artifacts,
            template,
        } => (
            Some((name.as_str(), artifacts.as_slice())),
            template.as_deref(),
        ),
        DesiredPrimary::Empty => (
            None,
            world
                .stage
                .status
                .as_ref()
                .and_then(|s| s.template.as_deref()),
        ),
    };
    if release.is_none() && world.primary.is_none() {
        return Ok(());
    }
    let name = world.stage.name_any();
    let status = world.stage.status.as_ref();
    let source = super::pins::source(&world.target, status, &world.pin, template)?;
    let deployment = build_primary(&source, &name, release, replicas(world))?;
    let observed = world.primary.as_ref();
    if observed.is_some_and(|o| matches_desired(o, &deployment)) {
        return Ok(());
    }
    let applied = ctx
        .writer
        .apply_seen("deployment_apply", &deployment, observed.map(|o| &**o))
        .await?;
    let applied = match observed.is_some_and(|o| o.annotations().contains_key(ORPHANED_ANNOTATION))
    {
        // A Stage made again takes its orphaned primary back.
        true => ctx.writer.mark_orphaned(&applied, None).await?,
        false => applied,
    };
    ctx.deployments.wrote(applied);
    Ok(())
}

/// The audit entries for this decision's transitions, by release: the operator's own, and
/// the steering a person asked for, under their verified name.
fn audit_entries(
    world: &World,
    events: &[StageEvent],
    ctx: &Context,
    now: Timestamp,
) -> BTreeMap<String, Vec<AuditEntry>> {
    let stage = &world.stage;
    let mut trail: BTreeMap<String, Vec<AuditEntry>> = BTreeMap::new();
    for event in events {
        let (Some(release), Some(action)) = (&event.release, audit_action(event)) else {
            continue;
        };
        if action == AuditAction::CommandRefused && refusals_recorded(ctx, stage, release) {
            continue;
        }
        let actor = match (&event.actor, event.by_person) {
            (Some(actor), _) => actor.clone(),
            (None, true) => world.steering.requester.clone(),
            (None, false) => OPERATOR_ACTOR.to_string(),
        };
        trail.entry(release.clone()).or_default().push(AuditEntry {
            id: audit_id(world, event),
            time: now,
            stage: stage.name_any(),
            action,
            actor,
            message: event.note.clone(),
            approval: None,
            reason: event
                .cause
                .as_ref()
                .map(|c| c.reason.clone())
                .or_else(|| event.check.as_ref().map(|(l, _)| l.as_str().to_string())),
            gate: event
                .cause
                .as_ref()
                .and_then(|c| c.gate.clone())
                .or_else(|| event.check.as_ref().map(|(_, g)| g.clone())),
            template: event.pinned.as_ref().and_then(|p| p.template.clone()),
            previous_template: event.pinned.as_ref().and_then(|p| p.previous.clone()),
            configuration: event.pinned.as_ref().and_then(|p| p.configuration.clone()),
            policy: event.policy.clone(),
            change_ticket: ticket_of(ctx, stage, release),
            review_due: event.review_due,
            review: (action == AuditAction::ReviewClosed)
                .then(|| open_review(ctx, stage, release))
                .flatten(),
        });
    }
    trail
}

/// The open review of `release` at this stage: what a `ReviewClosed` entry closes.
fn open_review(ctx: &Context, stage: &crate::api::Stage, release: &str) -> Option<String> {
    let namespace = stage.namespace().unwrap_or_default();
    let release = ctx.index.release(&namespace, release)?;
    let reviews = greenlight_core::review::reviews(&release);
    greenlight_core::review::open_at(&reviews, &stage.name_any()).map(|r| r.id.clone())
}

/// The change request a release names, if it does.
fn ticket_of(ctx: &Context, stage: &crate::api::Stage, release: &str) -> Option<String> {
    let namespace = stage.namespace().unwrap_or_default();
    ctx.index
        .release(&namespace, release)?
        .spec
        .change_ticket
        .clone()
}

/// Most refused commands one Release's trail records; past that they are Events only, so
/// annotating a Stage cannot fill a trail and stop its rollouts.
const REFUSALS_RECORDED: usize = 20;

fn refusals_recorded(ctx: &Context, stage: &crate::api::Stage, release: &str) -> bool {
    let namespace = stage.namespace().unwrap_or_default();
    let trail = ctx.index.release(&namespace, release);
    let refused = trail
        .iter()
        .flat_map(|r| r.status.iter())
        .flat_map(|s| s.audit.iter());
    refused
        .filter(|e| e.action == AuditAction::CommandRefused)
        .count()
        >= REFUSALS_RECORDED
}

fn audit_action(event: &StageEvent) -> Option<AuditAction> {
    event.kind.audit_action(event.by_person)
}

/// The audit id of an event. A refused command is told apart by the StageCommand's uid: the
/// same request replayed after a crash has the same, a new request a new one.
fn audit_id(world: &World, event: &StageEvent) -> String {
    let stage = world.stage.name_any();
    let Some(action) = audit_action(event) else {
        // Not in the trail, so not replayed: the time tells a recurring transition apart.
        let release = event.release.as_deref().unwrap_or("-");
        let reason = event.kind.reason();
        return format!("{stage}/{release}/{reason}/{}/{}", event.attempt, world.now);
    };
    let id = event.audit_id(&stage, action);
    match event.kind {
        crate::machine::Transition::CommandRefused => {
            let command = world.steering.text.clone().unwrap_or_default();
            let digest = ring::digest::digest(&ring::digest::SHA256, command.as_bytes());
            let short: String = digest.as_ref()[..6]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("{id}/{short}")
        }
        _ => id,
    }
}

/// Each transition's Event, on the Stage and on its Release, each naming both; an Event's
/// name comes from its audit id, so a replay after a restart does not add a second.
async fn announce(world: &World, events: &[StageEvent], ctx: &Context) {
    let stage = &world.stage;
    let namespace = stage.namespace().unwrap_or_default();
    for event in events {
        let key = audit_id(world, event);
        let reason = event.kind.reason();
        tracing::info!(reason, note = %event.note, "transition");
        let on_stage = match &event.release {
            Some(r) => format!("{} (release {r})", event.note),
            None => event.note.clone(),
        };
        let a = Announcement {
            warning: event.kind.warning(),
            reason,
            note: on_stage,
            key: key.clone(),
            notify_stage: None,
        };
        ctx.writer.events.publish(stage, a).await;
        let release = event
            .release
            .as_deref()
            .and_then(|r| ctx.index.release(&namespace, r));
        if let Some(release) = release {
            // The Release's Event is the outbox entry of the notice, when there is one to send.
            let kind = crate::notify::notice_kind(reason, &event.note);
            // A wait for approval is told once per attempt, however often its tally changes.
            let key = match kind {
                Some(crate::api::NoticeKind::WaitingForApproval) => format!(
                    "{}/{}/{}/WaitingForApproval",
                    stage.name_any(),
                    release.name_any(),
                    event.attempt
                ),
                _ => key,
            };
            let ticket = release.spec.change_ticket.as_deref();
            let ticket = ticket.map(|t| format!(" [change {t}]")).unwrap_or_default();
            let a = Announcement {
                warning: event.kind.warning(),
                reason,
                note: format!("stage {}: {}{ticket}", stage.name_any(), event.note),
                key,
                notify_stage: crate::notify::outbox_stage(stage, reason, &event.note).or_else(
                    || {
                        let due = super::worknotes::due(ctx, stage, &release, reason, &event.note);
                        due.then(|| stage.name_any())
                    },
                ),
            };
            ctx.writer.events.publish(&*release, a).await;
        }
    }
}

fn target_runs_pods(world: &World) -> Option<Condition> {
    let pods = world.target.status.as_ref()?.replicas.filter(|n| *n > 0)?;
    Some(Condition::new(
        TARGET_RUNS_PODS,
        true,
        "TargetNotScaledToZero",
        format!(
            "target Deployment '{}' runs {pods} pod(s) of its own; declare it with replicas: 0",
            world.stage.spec.target.name
        ),
    ))
}

/// The target's template was edited and the edit has not reached the primary: what changed,
/// who changed it, and what it waits for (or that its rollout failed here).
fn target_changed(status: &crate::api::StageStatus) -> Option<Condition> {
    let change = status.target_change.as_ref()?;
    let (reason, what) = match change.failed {
        true => (
            "ConfigurationRolledBack",
            "its rollout failed here and was rolled back; it is not tried again until the target changes",
        ),
        false => (
            "ConfigurationPending",
            "it reaches the primary only through a rollout here, with the stage's gates",
        ),
    };
    Some(Condition::new(
        TARGET_CHANGED,
        true,
        reason,
        format!(
            "the target's template ({}) was changed by {} (its field manager, as the writer named itself): {}; {what}",
            change.digest,
            change.changed_by,
            change.fields.join(", ")
        ),
    ))
}

/// The target asks for a strategy that could leave a workload with traffic and no available
/// pods; the managed workloads roll safely instead, and the stage says so.
fn strategy_overridden(world: &World) -> Option<Condition> {
    let asked = crate::workload::overridden_strategy(&world.target)?;
    Some(Condition::new(
        STRATEGY_OVERRIDDEN,
        true,
        "TargetStrategyOverridden",
        format!(
            "target Deployment '{}' uses {asked}; the managed workloads roll with RollingUpdate and maxUnavailable 0 instead, so traffic only ever reaches available pods",
            world.stage.spec.target.name
        ),
    ))
}

/// The release's phase, summary, message and conditions as `entry` at `stage` makes them,
/// where they change: written with the entry, so a Release moves in one write, not two.
fn summary_patch(
    ctx: &Context,
    namespace: &str,
    release: &str,
    stage: &str,
    entry: &crate::api::release::ReleaseStageStatus,
    now: Timestamp,
) -> Option<serde_json::Value> {
    let current = ctx.index.release(namespace, release)?;
    let old = current.status.clone().unwrap_or_default();
    let mut next = old.clone();
    next.stages.insert(stage.to_string(), entry.clone());
    let derived = super::release::derived_status(&current, &next, ctx, now);
    let fields = |s: &crate::api::release::ReleaseStatus| {
        serde_json::json!({
            "observedGeneration": s.observed_generation, "phase": s.phase,
            "summary": s.summary, "message": s.message, "conditions": s.conditions,
        })
    };
    super::patch::merge_diff(&fields(&old), &fields(&derived))
}

/// Counts the rollouts this pass finished, and how long each took, by strategy.
fn count_rollouts(
    old: &[crate::api::stage::RolloutRecord],
    new: &[crate::api::stage::RolloutRecord],
    strategy: crate::api::stage::StrategyType,
    ctx: &Context,
) {
    let strategy = match strategy {
        crate::api::stage::StrategyType::Rolling => "rolling",
        crate::api::stage::StrategyType::Canary => "canary",
        crate::api::stage::StrategyType::BlueGreen => "blue_green",
    };
    for record in new.iter().take_while(|h| !old.contains(h)) {
        let outcome = match record.outcome {
            RolloutOutcome::Succeeded => "succeeded",
            RolloutOutcome::RolledBack => "rolled_back",
        };
        ctx.metrics
            .rollouts
            .get_or_create(&RolloutLabels { outcome })
            .inc();
        ctx.metrics
            .rollout_duration
            .get_or_create(&DurationLabels { strategy, outcome })
            .observe(record.duration_seconds.max(0) as f64);
    }
}
