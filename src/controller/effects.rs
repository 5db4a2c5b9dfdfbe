//! Effect: a stage's decision handed to the writer, in an order that keeps a crash between
//! any two writes safe. Workloads and traffic first (a refusal there leaves no trace of a
//! transition that did not happen), except when traffic leaves the canary, which is recorded
//! first; the audit trail, the record of truth, whose entries have identities so a replay
//! adds nothing; then release entries and the stage status that make the transition final;
//! then Events, named after the audit entries they announce; last, the steering annotations
//! acted upon.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::Context;
use super::error::ReconcileError;
use super::observe::World;
use super::writer::Announcement;
use crate::admission::mutate::requester;
use crate::api::OPERATOR_ACTOR;
use crate::api::conditions::{Condition, TARGET_RUNS_PODS};
use crate::api::release::{AuditAction, AuditEntry};
use crate::api::stage::RolloutOutcome;
use crate::machine::{DesiredPrimary, Outcome, StageEvent};
use crate::metrics::RolloutLabels;
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
    record(world, &outcome, ctx, now).await?;
    if retreat {
        apply_workloads(world, &outcome, ctx).await?;
    }
    announce(world, &outcome.events, ctx).await;
    if world.steering.text.is_some() {
        announce_dropped(world, ctx).await;
        ctx.writer.clear_commands(&world.stage).await?;
    }
    Ok(Action::requeue(
        outcome.requeue_after.max(Duration::from_secs(1)),
    ))
}

/// The canary and its traffic, then the primary.
async fn apply_workloads(
    world: &World,
    outcome: &Outcome,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    if let Some((io, observed, view)) = &world.canary {
        let (stage, target, replicas) = (&world.stage, &world.target, world.plan.replicas);
        let problem = view.router_problem.as_ref();
        io.apply(
            stage,
            target,
            observed.as_ref(),
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
    Ok(())
}

/// The audit trail, then the release entries, then the stage status that makes it final.
async fn record(
    world: &World,
    outcome: &Outcome,
    ctx: &Context,
    now: Timestamp,
) -> Result<(), ReconcileError> {
    let stage = &world.stage;
    let namespace = stage.namespace().unwrap_or_default();
    for (release, entries) in audit_entries(world, &outcome.events, ctx, now) {
        ctx.writer.audit(&namespace, &release, entries).await?;
    }
    let name = stage.name_any();
    for (release, entry) in &outcome.release_updates {
        let before = world
            .releases
            .iter()
            .find(|r| &r.name == release)
            .and_then(|r| r.stages.get(&name));
        ctx.writer
            .release_entry(&namespace, release, &name, before, entry)
            .await?;
    }
    let old = stage.status.clone().unwrap_or_default();
    let mut status = outcome.status.clone();
    if let Some(condition) = target_runs_pods(world) {
        status.conditions.push(condition);
    }
    status.last_command = world.steering.text.clone();
    count_rollouts(&old.history, &status.history, ctx);
    ctx.writer.stage_status(stage, &old, status, now).await?;
    Ok(())
}

async fn apply_primary(
    world: &World,
    desired: &DesiredPrimary,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let owner = world
        .stage
        .controller_owner_ref(&())
        .ok_or(ReconcileError::MissingField("metadata.uid"))?;
    let release = match desired {
        DesiredPrimary::Release { name, artifacts } => Some((name.as_str(), artifacts.as_slice())),
        DesiredPrimary::Empty => None,
    };
    if release.is_none() && world.primary.is_none() {
        return Ok(());
    }
    let name = world.stage.name_any();
    let deployment = build_primary(&world.target, &name, owner, release, world.plan.replicas)?;
    if world
        .primary
        .as_ref()
        .is_some_and(|o| matches_desired(o, &deployment))
    {
        return Ok(());
    }
    ctx.writer.apply("deployment_apply", &deployment).await?;
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
        let actor = match event.by_person {
            true => asked_by(stage, ctx),
            false => OPERATOR_ACTOR.to_string(),
        };
        trail.entry(release.clone()).or_default().push(AuditEntry {
            id: audit_id(world, event),
            time: now,
            stage: stage.name_any(),
            action,
            actor,
            message: event.note.clone(),
            approval: None,
        });
    }
    trail
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

/// Steering annotations that came with the one that acted are removed with it, and say so.
async fn announce_dropped(world: &World, ctx: &Context) {
    let acting = world.steering.text.clone().unwrap_or_default();
    for dropped in &world.steering.dropped {
        let note = format!(
            "{dropped} was not acted upon: {acting} took precedence (abort, then promote, then retry); set it again"
        );
        let a = Announcement {
            warning: true,
            reason: "CommandRefused",
            key: format!(
                "dropped/{dropped}/{}",
                world.stage.resource_version().unwrap_or_default()
            ),
            note,
        };
        ctx.writer.events.publish(&world.stage, a).await;
    }
}

/// The audit id of an event. A refused command is told apart by the Stage's version it was
/// read at: the same request replayed after a crash has the same, a new request a new one.
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
            let commands = super::fingerprint(&world.stage).commands.join(",");
            let digest = ring::digest::digest(&ring::digest::SHA256, commands.as_bytes());
            let short: String = digest.as_ref()[..6]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("{id}/{short}")
        }
        _ => id,
    }
}

fn asked_by(stage: &crate::api::Stage, ctx: &Context) -> String {
    let namespace = stage.namespace().unwrap_or_default();
    let annotations = stage.metadata.annotations.clone().unwrap_or_default();
    match requester(
        &namespace,
        &stage.name_any(),
        &annotations,
        &ctx.index.identity,
    ) {
        Ok(user) => user,
        Err(why) => format!("unknown ({why})"),
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
        };
        ctx.writer.events.publish(stage, a).await;
        let release = event
            .release
            .as_deref()
            .and_then(|r| ctx.index.release(&namespace, r));
        if let Some(release) = release {
            let a = Announcement {
                warning: event.kind.warning(),
                reason,
                note: format!("stage {}: {}", stage.name_any(), event.note),
                key,
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

fn count_rollouts(
    old: &[crate::api::stage::RolloutRecord],
    new: &[crate::api::stage::RolloutRecord],
    ctx: &Context,
) {
    for record in new.iter().take_while(|h| !old.contains(h)) {
        let outcome = match record.outcome {
            RolloutOutcome::Succeeded => "succeeded",
            RolloutOutcome::RolledBack => "rolled_back",
        };
        ctx.metrics
            .rollouts
            .get_or_create(&RolloutLabels { outcome })
            .inc();
    }
}
