//! Stage reconciliation: read the stage, its pipeline, the releases and the primary workload;
//! let [`machine::stage::decide`] choose; apply the workload, the status and the events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::info;

use super::canary::{self, CanaryIo};
use super::error::ReconcileError;
use super::patch::merge_diff;
use super::{
    Context, error_policy, instrumented, key, pipeline_releases, pipeline_stages, refs_of,
    scoped_api,
};
use super::{approval, audit};
use crate::admission::mutate::requester;
use crate::api::conditions::{self, Condition, Health, TARGET_RUNS_PODS, kstatus};
use crate::api::release::{AuditAction, AuditEntry, GateVerdict, Release, ReleaseStageStatus};
use crate::api::stage::{Stage, StagePhase, StageStatus, TriggerType};
use crate::api::validation::{
    FieldError, MANUAL_NEEDS_APPROVAL_GATE, StagePlan, ValidationErrors, compile_stage,
};
use crate::api::{Approval, FIELD_MANAGER, Gate, GateType, OPERATOR_ACTOR};
use crate::gates::{self, GateContext, GateOutcome};
use crate::identity::Unverified;
use crate::machine::stage::{
    self as machine, Command, Decision, DesiredPrimary, GateReport, Outcome, ReleaseView,
    StageInput,
};
use crate::pipeline::topological_order;
use crate::workload::{build_primary, canary_name, matches_desired, observe, primary_name};
use kube::runtime::reflector::ObjectRef;

const CONTROLLER: &str = "stage";
/// How soon an invalid stage is looked at again (its fix may come from another object).
const INVALID_RETRY: Duration = Duration::from_secs(30);

pub async fn controller(ctx: Arc<Context>, client: &Client, namespace: &Option<String>) {
    let stages = ctx.stages.clone();
    let by_release = stages.clone();
    let by_gate = stages.clone();
    let by_stage = stages.clone();
    let by_deployment = stages.clone();
    Controller::new(
        scoped_api::<Stage>(client, namespace),
        watcher::Config::default(),
    )
    // Every Deployment: primaries map to their Stage by owner, targets by name, so a target
    // that starts running pods of its own is reported at once.
    .watches(
        scoped_api::<Deployment>(client, namespace),
        watcher::Config::default(),
        move |d: Deployment| {
            let ns = d.namespace().unwrap_or_default();
            let name = d.name_any();
            refs_of(by_deployment.state().into_iter().filter(|s| {
                s.namespace().as_deref() == Some(ns.as_str())
                    && [
                        s.spec.target.name.clone(),
                        primary_name(&s.spec.target.name),
                        canary_name(&s.spec.target.name),
                    ]
                    .contains(&name)
            }))
        },
    )
    .watches(
        scoped_api::<Release>(client, namespace),
        watcher::Config::default(),
        move |r: Release| {
            refs_of(pipeline_stages(
                &by_release,
                &r.namespace().unwrap_or_default(),
                &r.spec.pipeline,
            ))
        },
    )
    .watches(
        scoped_api::<Gate>(client, namespace),
        watcher::Config::default(),
        move |g: Gate| {
            let ns = g.namespace().unwrap_or_default();
            let name = g.name_any();
            refs_of(by_gate.state().into_iter().filter(|s| {
                s.namespace().as_deref() == Some(ns.as_str()) && s.spec.gates.contains(&name)
            }))
        },
    )
    .watches(
        scoped_api::<Approval>(client, namespace),
        watcher::Config::default(),
        |a: Approval| {
            let stage = ObjectRef::<Stage>::new(&a.spec.stage);
            match a.namespace() {
                Some(ns) => vec![stage.within(&ns)],
                None => vec![],
            }
        },
    )
    .watches(
        scoped_api::<Stage>(client, namespace),
        watcher::Config::default(),
        move |s: Stage| {
            refs_of(pipeline_stages(
                &by_stage,
                &s.namespace().unwrap_or_default(),
                &s.spec.pipeline,
            ))
        },
    )
    .shutdown_on_signal()
    .run(reconcile, error_policy(CONTROLLER), ctx)
    .for_each(|_| futures::future::ready(()))
    .await;
}

async fn reconcile(trigger: Arc<Stage>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let key = key(&*trigger)?;
    instrumented(
        CONTROLLER,
        "Stage",
        &key,
        &ctx,
        reconcile_stage(&key.1, &key.0, &ctx),
    )
    .await
}

async fn reconcile_stage(
    name: &str,
    namespace: &str,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    // Read fresh rather than from the cache: decisions must build on our own last write.
    let Some(stage) = ctx.api::<Stage>(namespace).get_opt(name).await? else {
        return Ok(Action::await_change());
    };
    let now = Timestamp::now();
    let old_status = stage.status.clone().unwrap_or_default();
    let plan = match validate_stage(&stage, ctx) {
        Ok(plan) => plan,
        Err(errors) => {
            return report_invalid(
                &stage,
                &old_status,
                "InvalidSpec",
                errors.to_string(),
                ctx,
                now,
            )
            .await;
        }
    };
    let deployments = ctx.api::<Deployment>(namespace);
    let target = deployments.get_opt(&stage.spec.target.name).await?;
    let Some(target) = target else {
        let message = format!(
            "spec.target.name: Deployment '{}' not found in namespace '{namespace}'",
            stage.spec.target.name
        );
        return report_invalid(&stage, &old_status, "TargetNotFound", message, ctx, now).await;
    };
    let primary = deployments
        .get_opt(&primary_name(&stage.spec.target.name))
        .await?;
    let primary_view = primary.as_ref().map(observe);
    let releases = release_views(&stage, &target, ctx);
    let canary_io = CanaryIo::new(&stage, &plan, ctx);
    let (canary, canary_view) = match &canary_io {
        Some(io) => {
            let (d, v) = io.observe(ctx).await?;
            (d, Some(v))
        }
        None => (None, None),
    };
    let command = canary::command(&stage);
    let mut input = StageInput {
        name,
        plan: &plan,
        status: &old_status,
        releases: &releases,
        primary: primary_view.as_ref(),
        canary: canary_view.as_ref(),
        gates: None,
        measurements: None,
        command: command.clone(),
        now,
    };
    let (report, measured);
    let outcome = match machine::decide(&input) {
        Decision::Act(outcome) => outcome,
        Decision::EvaluateGates { release } => {
            report = evaluate_gates(&stage, &plan, &releases, &release, ctx, now).await;
            input.gates = Some(&report);
            decided(machine::decide(&input))
        }
        Decision::Measure { release, due } => {
            measured = canary::measure(&stage, &releases, &release, &due, ctx, now).await;
            input.measurements = Some(&measured);
            decided(machine::decide(&input))
        }
    };
    if let Some(io) = &canary_io {
        io.apply(
            &stage,
            &target,
            canary.as_ref(),
            outcome.canary.as_ref(),
            outcome.weight,
            outcome.canary_scale_weight,
            plan.replicas,
            ctx,
        )
        .await?;
    }
    // The trail is written before the status that makes a transition final, so a failed
    // write repeats an entry rather than losing it.
    for (release, entries) in audit_entries(&stage, &outcome.events, command.as_ref(), ctx, now) {
        audit::append(ctx, namespace, &release, entries).await?;
    }
    let action = apply(
        &stage,
        &target,
        primary.as_ref(),
        &plan,
        &old_status,
        *outcome,
        ctx,
        now,
    )
    .await?;
    if command.is_some() {
        canary::clear_commands(&stage, ctx).await?;
    }
    Ok(action)
}

/// The audit entries for this pass's transitions, by release: the operator's own decisions,
/// and the steering a person asked for, under their verified name.
fn audit_entries(
    stage: &Stage,
    events: &[machine::StageEvent],
    command: Option<&Command>,
    ctx: &Context,
    now: Timestamp,
) -> BTreeMap<String, Vec<AuditEntry>> {
    let namespace = stage.namespace().unwrap_or_default();
    let asked_by = || {
        let annotations = stage.metadata.annotations.clone().unwrap_or_default();
        match requester(&namespace, &stage.name_any(), &annotations, &ctx.identity) {
            Ok(user) => user,
            Err(why) => format!("unknown ({why})"),
        }
    };
    let mut trail: BTreeMap<String, Vec<AuditEntry>> = BTreeMap::new();
    for event in events {
        let Some(release) = &event.release else {
            continue;
        };
        let (action, actor) = match (event.reason, command) {
            ("RolloutFailed", Some(Command::Abort)) => (AuditAction::AbortRequested, asked_by()),
            ("PromotedByHand" | "Resumed", _) => (AuditAction::PromoteRequested, asked_by()),
            ("RetryRequested", _) => (AuditAction::RetryRequested, asked_by()),
            ("RolloutStarted", _) => (AuditAction::RolloutStarted, OPERATOR_ACTOR.to_string()),
            ("RolloutSucceeded", _) => (AuditAction::Promoted, OPERATOR_ACTOR.to_string()),
            ("RolloutFailed", _) => (AuditAction::RolledBack, OPERATOR_ACTOR.to_string()),
            _ => continue,
        };
        trail.entry(release.clone()).or_default().push(AuditEntry {
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

/// The second decision, made with the results the first asked for, always acts.
fn decided(decision: Decision) -> Box<Outcome> {
    match decision {
        Decision::Act(outcome) => outcome,
        other => unreachable!("decide asks for results once per reconcile, then acts: {other:?}"),
    }
}

/// Marks the stage Invalid (Stalled) with a message naming the field, and announces it once.
async fn report_invalid(
    stage: &Stage,
    old_status: &StageStatus,
    reason: &'static str,
    message: String,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action, ReconcileError> {
    let mut status = old_status.clone();
    status.phase = Some(StagePhase::Invalid);
    status.message = Some(message.clone());
    status.conditions = kstatus(Health::Stalled, reason, &message);
    if old_status.message.as_deref() != Some(message.as_str()) {
        ctx.publish(stage, true, reason, message).await;
    }
    write_stage_status(stage, old_status, status, ctx, now).await?;
    Ok(Action::requeue(INVALID_RETRY))
}

/// The stage's spec compiled, with its place in the pipeline and its gates checked.
fn validate_stage(stage: &Stage, ctx: &Context) -> Result<StagePlan, ValidationErrors> {
    let namespace = stage.namespace().unwrap_or_default();
    let plan = compile_stage(&stage.name_any(), &stage.spec)?;
    let graph: BTreeMap<String, Vec<String>> =
        pipeline_stages(&ctx.stages, &namespace, &stage.spec.pipeline)
            .iter()
            .map(|s| (s.name_any(), s.spec.requires.clone()))
            .chain(std::iter::once((
                stage.name_any(),
                stage.spec.requires.clone(),
            )))
            .collect();
    topological_order(&stage.spec.pipeline, &graph).map_err(|e| {
        ValidationErrors(vec![FieldError::new(
            "spec.requires",
            e.to_string()
                .trim_start_matches("spec.requires: ")
                .to_string(),
        )])
    })?;
    // Two stages on one target would fight over one `<target>-primary`; the older one keeps it.
    let created = |s: &Stage| {
        (
            s.metadata.creation_timestamp.as_ref().map(|t| t.0),
            s.name_any(),
        )
    };
    if let Some(owner) = ctx.stages.state().iter().find(|s| {
        s.namespace().as_deref() == Some(namespace.as_str())
            && s.name_any() != stage.name_any()
            && s.spec.target.name == stage.spec.target.name
            && created(s) < created(stage)
    }) {
        return Err(ValidationErrors(vec![FieldError::new(
            "spec.target.name",
            format!(
                "Deployment '{}' is already the target of stage '{}'; give each stage its own target",
                stage.spec.target.name,
                owner.name_any()
            ),
        )]));
    }
    let missing: Vec<FieldError> = stage
        .spec
        .gates
        .iter()
        .enumerate()
        .filter(|(_, g)| {
            ctx.gates
                .get(&kube::runtime::reflector::ObjectRef::new(g).within(&namespace))
                .is_none()
        })
        .map(|(i, g)| {
            FieldError::new(
                format!("spec.gates[{i}]"),
                format!("Gate '{g}' does not exist in namespace '{namespace}'"),
            )
        })
        .collect();
    if !missing.is_empty() {
        return Err(ValidationErrors(missing));
    }
    let manual = stage.spec.trigger.trigger_type == TriggerType::Manual;
    let has_approval_gate = stage.spec.gates.iter().any(|g| {
        ctx.gates
            .get(&ObjectRef::new(g).within(&namespace))
            .is_some_and(|g| g.spec.gate_type == GateType::Approval)
    });
    if manual && !has_approval_gate {
        return Err(ValidationErrors(vec![FieldError::new(
            "spec.trigger.type",
            MANUAL_NEEDS_APPROVAL_GATE,
        )]));
    }
    Ok(plan)
}

fn release_views(stage: &Stage, target: &Deployment, ctx: &Context) -> Vec<ReleaseView> {
    let namespace = stage.namespace().unwrap_or_default();
    pipeline_releases(&ctx.releases, &namespace, &stage.spec.pipeline)
        .iter()
        .map(|r| {
            let valid = super::release_problem(r).is_none();
            let owner = stage.controller_owner_ref(&()).unwrap_or_default();
            let unfit = build_primary(
                target,
                "",
                owner,
                Some((&r.name_any(), &r.spec.artifacts)),
                1,
            )
            .err()
            .map(|e| e.to_string());
            ReleaseView {
                name: r.name_any(),
                version: r.spec.version.clone(),
                artifacts: r.spec.artifacts.clone(),
                valid,
                unfit,
                stages: r
                    .status
                    .as_ref()
                    .map(|s| s.stages.clone())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// What gates know about `release` at this stage.
pub(crate) fn gate_context(
    stage: &Stage,
    releases: &[ReleaseView],
    release: &str,
    now: Timestamp,
) -> GateContext {
    let view = releases.iter().find(|r| r.name == release);
    let namespace = stage.namespace().unwrap_or_default();
    GateContext {
        // Filled in by `evaluate_gate` for approval gates only, the ones that read them.
        approvals: vec![],
        release_author: Err(Unverified::Missing),
        namespace,
        pipeline: stage.spec.pipeline.clone(),
        stage: stage.name_any(),
        release: release.to_string(),
        version: view.map(|r| r.version.clone()).unwrap_or_default(),
        artifacts: view.map(|r| r.artifacts.clone()).unwrap_or_default(),
        release_stages: view.map(|r| r.stages.clone()).unwrap_or_default(),
        primary_workload: primary_name(&stage.spec.target.name),
        canary_workload: canary_name(&stage.spec.target.name),
        secrets: Default::default(),
        now,
    }
}

/// Evaluates one gate by name; also returns how soon it should be checked again.
pub(crate) async fn evaluate_gate(
    name: &str,
    gate_ctx: &GateContext,
    ctx: &Context,
) -> (GateOutcome, Duration) {
    let gate = ctx
        .gates
        .get(&kube::runtime::reflector::ObjectRef::new(name).within(&gate_ctx.namespace));
    let (kind, outcome, recheck) = match gate {
        None => (
            "missing",
            GateOutcome::new(
                GateVerdict::Invalid,
                format!("Gate '{name}' does not exist"),
            ),
            gates::DEFAULT_RECHECK,
        ),
        Some(gate) => match gates::compile(&gate.spec, &ctx.gate_env) {
            Err(errors) => (
                gate.spec.gate_type.as_str(),
                GateOutcome::new(GateVerdict::Invalid, ValidationErrors(errors).to_string()),
                gates::DEFAULT_RECHECK,
            ),
            Ok(compiled) => {
                let mut gate_ctx = gate_ctx.clone();
                if gate.spec.gate_type == GateType::Approval {
                    approval::fill_context(ctx, &mut gate_ctx);
                }
                match super::secrets::resolve(&gate.spec, &gate_ctx.namespace, ctx).await {
                    Ok(secrets) => gate_ctx.secrets = secrets,
                    Err(message) => {
                        let outcome = GateOutcome::new(GateVerdict::Inconclusive, message);
                        return (outcome, compiled.recheck_interval);
                    }
                }
                (
                    gate.spec.gate_type.as_str(),
                    compiled.check.evaluate(&gate_ctx).await,
                    compiled.recheck_interval,
                )
            }
        },
    };
    ctx.metrics
        .gate_evaluations
        .get_or_create(&crate::metrics::GateLabels {
            gate_type: kind,
            verdict: verdict_label(outcome.verdict),
        })
        .inc();
    (outcome, recheck)
}

/// Evaluates the stage's gates in order, stopping at the first that does not pass.
async fn evaluate_gates(
    stage: &Stage,
    plan: &StagePlan,
    releases: &[ReleaseView],
    release: &str,
    ctx: &Context,
    now: Timestamp,
) -> GateReport {
    let gate_ctx = gate_context(stage, releases, release, now);
    let mut results = Vec::new();
    let mut recheck_after = gates::DEFAULT_RECHECK;
    // Approvals are immutable, so their names tell whether an approval gate could change.
    let approvals = approval::names(ctx, &gate_ctx.namespace, release, &gate_ctx.stage).join(",");
    for name in &plan.gates {
        // A gate that did not pass is asked again only at its recheck time, however many
        // watch events arrive meanwhile; a pass is never reused.
        let generation = ctx
            .gates
            .get(&kube::runtime::reflector::ObjectRef::new(name).within(&gate_ctx.namespace))
            .and_then(|g| g.metadata.generation);
        let key = format!(
            "{}/{}/{release}/{name}/{generation:?}/{approvals}",
            gate_ctx.namespace, gate_ctx.stage
        );
        let cached = ctx
            .held_gates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .filter(|(until, _)| now < *until)
            .map(|(until, o)| (o.clone(), until.duration_since(now).unsigned_abs()));
        let (outcome, recheck) = match cached {
            Some((outcome, left)) => (outcome, left.max(Duration::from_millis(100))),
            None => {
                let (outcome, recheck) = evaluate_gate(name, &gate_ctx, ctx).await;
                if outcome.verdict != GateVerdict::Passed {
                    let until = outcome
                        .recheck_at
                        .map_or(now + recheck, |at| at.min(now + recheck));
                    let mut held = ctx.held_gates.lock().unwrap_or_else(|e| e.into_inner());
                    held.retain(|_, (u, _)| now < *u);
                    held.insert(key, (until, outcome.clone()));
                }
                (outcome, recheck)
            }
        };
        recheck_after = recheck_after.min(recheck);
        let passed = outcome.verdict == GateVerdict::Passed;
        results.push((name.clone(), outcome));
        if !passed {
            break;
        }
    }
    GateReport {
        release: release.to_string(),
        results,
        recheck_after,
    }
}

fn verdict_label(v: GateVerdict) -> &'static str {
    match v {
        GateVerdict::Passed => "passed",
        GateVerdict::Failed => "failed",
        GateVerdict::Pending => "pending",
        GateVerdict::Inconclusive => "inconclusive",
        GateVerdict::Invalid => "invalid",
        GateVerdict::Skipped => "skipped",
    }
}

#[allow(clippy::too_many_arguments)]
async fn apply(
    stage: &Stage,
    target: &Deployment,
    primary: Option<&Deployment>,
    plan: &StagePlan,
    old_status: &StageStatus,
    outcome: Outcome,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action, ReconcileError> {
    if let Some(desired) = &outcome.primary {
        apply_primary(stage, target, primary, plan, desired, ctx).await?;
    }
    for (release, entry) in &outcome.release_updates {
        patch_release_entry(stage, release, entry, ctx).await?;
    }
    let mut status = outcome.status;
    if let Some(pods) = target
        .status
        .as_ref()
        .and_then(|s| s.replicas)
        .filter(|n| *n > 0)
    {
        status.conditions.push(Condition::new(
            TARGET_RUNS_PODS,
            true,
            "TargetNotScaledToZero",
            format!(
                "target Deployment '{}' runs {pods} pod(s) of its own; declare it with replicas: 0",
                stage.spec.target.name
            ),
        ));
    }
    for history in status
        .history
        .iter()
        .take_while(|h| !old_status.history.contains(h))
    {
        let outcome = match history.outcome {
            crate::api::stage::RolloutOutcome::Succeeded => "succeeded",
            crate::api::stage::RolloutOutcome::RolledBack => "rolled_back",
        };
        ctx.metrics
            .rollouts
            .get_or_create(&crate::metrics::RolloutLabels { outcome })
            .inc();
    }
    write_stage_status(stage, old_status, status, ctx, now).await?;
    let namespace = stage.namespace().unwrap_or_default();
    for event in outcome.events {
        info!(reason = event.reason, note = %event.note, "transition");
        ctx.publish(stage, event.warning, event.reason, event.note.clone())
            .await;
        if let Some(release) = event.release.as_deref().and_then(|r| {
            ctx.releases
                .get(&kube::runtime::reflector::ObjectRef::new(r).within(&namespace))
        }) {
            ctx.publish(
                &*release,
                event.warning,
                event.reason,
                format!("stage {}: {}", stage.name_any(), event.note),
            )
            .await;
        }
    }
    Ok(Action::requeue(
        outcome.requeue_after.max(Duration::from_secs(1)),
    ))
}

async fn apply_primary(
    stage: &Stage,
    target: &Deployment,
    observed: Option<&Deployment>,
    plan: &StagePlan,
    desired: &DesiredPrimary,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let owner = stage
        .controller_owner_ref(&())
        .ok_or(ReconcileError::MissingField("metadata.uid"))?;
    let release = match desired {
        DesiredPrimary::Release { name, artifacts } => Some((name.as_str(), artifacts.as_slice())),
        DesiredPrimary::Empty => None,
    };
    if release.is_none() && observed.is_none() {
        return Ok(());
    }
    let deployment = build_primary(target, &stage.name_any(), owner, release, plan.replicas)?;
    if observed.is_some_and(|o| matches_desired(o, &deployment)) {
        return Ok(());
    }
    server_side_apply(&deployment, &stage.namespace().unwrap_or_default(), ctx).await
}

/// Applies a managed Deployment under the operator's field manager.
pub(crate) async fn server_side_apply(
    deployment: &Deployment,
    namespace: &str,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let mut body = serde_json::to_value(deployment)?;
    body["apiVersion"] = json!("apps/v1");
    body["kind"] = json!("Deployment");
    ctx.metrics.write("deployment_apply");
    ctx.api::<Deployment>(namespace)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await?;
    Ok(())
}

async fn patch_release_entry(
    stage: &Stage,
    release: &str,
    entry: &ReleaseStageStatus,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let namespace = stage.namespace().unwrap_or_default();
    let stage_name = stage.name_any();
    let cached = ctx
        .releases
        .get(&kube::runtime::reflector::ObjectRef::new(release).within(&namespace));
    let old = cached
        .as_ref()
        .and_then(|r| r.status.as_ref())
        .and_then(|s| s.stages.get(&stage_name))
        .map(serde_json::to_value)
        .transpose()?
        .unwrap_or(json!({}));
    let Some(diff) = merge_diff(&old, &serde_json::to_value(entry)?) else {
        return Ok(());
    };
    ctx.metrics.write("release_status");
    let patch = json!({"status": {"stages": {stage_name: diff}}});
    match ctx
        .api::<Release>(&namespace)
        .patch_status(release, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(()),
        // Deleted meanwhile: nothing to record.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn write_stage_status(
    stage: &Stage,
    old: &StageStatus,
    mut status: StageStatus,
    ctx: &Context,
    now: Timestamp,
) -> Result<(), ReconcileError> {
    status.observed_generation = stage.meta().generation;
    status.conditions = conditions::merge(
        &old.conditions,
        status.conditions,
        now,
        stage.meta().generation,
    );
    let Some(diff) = merge_diff(&serde_json::to_value(old)?, &serde_json::to_value(&status)?)
    else {
        return Ok(());
    };
    ctx.metrics.write("stage_status");
    ctx.api::<Stage>(&stage.namespace().unwrap_or_default())
        .patch_status(
            &stage.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": diff })),
        )
        .await?;
    Ok(())
}
