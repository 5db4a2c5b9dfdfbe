//! Stage reconciliation, observe → decide → effect: read the stage and what it depends on
//! ([`observe`](super::observe)), let [`machine::decide`] choose, and hand the outcome to the
//! writer in a fixed order (workloads and traffic, audit trail, release entries, stage status,
//! Events, StageCommand outcomes). A write the apiserver refuses leaves the stage `Stalled`
//! with the apiserver's words and backs off; nothing after it is written.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use super::effects;
use super::error::ReconcileError;
use super::observe::{World, observe_stage};
use super::writer::{Announcement, WriteError};
use super::{Context, backoff_key, error_policy, fingerprint, instrumented, key, refs_of};
use crate::api::blue_green::active_name;
use crate::api::conditions::{Health, kstatus};
use crate::api::release::{ReleaseStageStatus, StagePhaseForRelease};
use crate::api::stage::StrategyType;
use crate::api::stage::{Stage, StagePhase};
use crate::api::{Approval, Gate, Release, STAGE_LABEL, StageCommand};
use crate::index::own::{Follows, Read};
use crate::machine::{self, Decision, Outcome};
use crate::workload::{canary_name, primary_name};

pub(crate) const CONTROLLER: &str = "stage";
/// How soon an invalid stage is looked at again (its fix may come from another object).
const INVALID_RETRY: Duration = Duration::from_secs(30);

pub async fn controller(ctx: Arc<Context>, client: &Client, namespace: &Option<String>) {
    let settle = ctx.queue.clone();
    let (index, q) = (&ctx.index, &ctx.queue);
    let by_gate = index.clone();
    let by_stage = super::wake::on_stage(index.clone());
    let by_release = super::wake::on_release(index.clone());
    let mut controller = super::queue::controller::<Stage>(index, q, CONTROLLER)
        .reconcile_on(q.on_changes::<Stage, Stage, _>(index, CONTROLLER, by_stage))
        .reconcile_on(q.on_changes::<Release, Stage, _>(index, CONTROLLER, by_release))
        .reconcile_on(q.on_changes::<Gate, Stage, _>(index, CONTROLLER, move |g| {
            let (ns, name) = (g.namespace().unwrap_or_default(), g.name_any());
            refs_of(by_gate.stages_where(&ns, |s| {
                s.spec.named_gates().iter().any(|(_, g)| *g == name)
            }))
        }))
        .reconcile_on(q.on_changes::<Approval, Stage, _>(index, CONTROLLER, |a| {
            stage_of(a.namespace(), &a.spec.stage)
        }))
        .reconcile_on(
            q.on_changes::<StageCommand, Stage, _>(index, CONTROLLER, |c| {
                stage_of(c.namespace(), &c.spec.stage)
            }),
        );
    controller = on_deployments(controller, &ctx);
    controller = also_on_gates_and_routes(controller, &ctx, client, namespace).await;
    controller
        .shutdown_on_signal()
        .run(reconcile, error_policy(CONTROLLER), ctx)
        .for_each(|result| settle.settled(CONTROLLER, result))
        .await;
}

/// Primaries and canaries map to their Stage, targets by name, so a target that starts
/// running pods of its own is reported at once; the Services in front of a canary map to
/// their Stage too, so one deleted is put back. Only their names and versions are watched.
fn on_deployments(controller: Controller<Stage>, ctx: &Arc<Context>) -> Controller<Stage> {
    let (index, q) = (&ctx.index, &ctx.queue);
    let (by_deployment, by_service) = (index.clone(), index.clone());
    let deployments =
        q.on_changes::<PartialObjectMeta<Deployment>, Stage, _>(index, CONTROLLER, move |d| {
            let (ns, name) = (d.namespace().unwrap_or_default(), d.name_any());
            refs_of(by_deployment.stages_where(&ns, |s| {
                let t = &s.spec.target.name;
                [t.clone(), primary_name(t), canary_name(t)].contains(&name)
            }))
        });
    let services =
        q.on_changes::<PartialObjectMeta<Service>, Stage, _>(index, CONTROLLER, move |v| {
            let (ns, name) = (v.namespace().unwrap_or_default(), v.name_any());
            refs_of(by_service.stages_where(&ns, |s| {
                let t = &s.spec.target.name;
                let progressive = s.spec.strategy.strategy_type != StrategyType::Rolling;
                progressive && [primary_name(t), canary_name(t), active_name(t)].contains(&name)
            }))
        });
    // A Job gate's Job or pod moving on wakes its stage to judge it.
    let jobs = q.on_changes::<Job, Stage, _>(index, CONTROLLER, |j| {
        stage_of(j.namespace(), j.labels().get(STAGE_LABEL)?)
    });
    let pods = q.on_changes::<Pod, Stage, _>(index, CONTROLLER, |p| {
        stage_of(p.namespace(), p.labels().get(STAGE_LABEL)?)
    });
    controller
        .reconcile_on(deployments)
        .reconcile_on(services)
        .reconcile_on(jobs)
        .reconcile_on(pods)
}

fn stage_of(namespace: Option<String>, stage: &str) -> Option<ObjectRef<Stage>> {
    namespace.map(|ns| ObjectRef::<Stage>::new(stage).within(&ns))
}

/// Reconciles a stage when a gate it waits for answers, and when its HTTPRoute changes.
async fn also_on_gates_and_routes(
    mut controller: Controller<Stage>,
    ctx: &Arc<Context>,
    client: &Client,
    namespace: &Option<String>,
) -> Controller<Stage> {
    if let Some(finished) = ctx.runner.finished() {
        // A pass that left a gate evaluating is followed by one as soon as it answers.
        let queue = ctx.queue.clone();
        let stages = futures::stream::unfold(finished, move |mut rx| {
            let queue = queue.clone();
            async move {
                let (ns, name) = rx.recv().await?;
                let stage = ObjectRef::<Stage>::new(&name).within(&ns);
                queue.queued(CONTROLLER, [stage.clone()]);
                Some((stage, rx))
            }
        });
        controller = controller.reconcile_on(stages);
    }
    if let Some((routes, resource)) = http_routes(client, namespace).await {
        let by_route = ctx.index.clone();
        // A weight someone else changes is seen (and put back) at once, not at the next step.
        let map = ctx.queue.counting(CONTROLLER, move |r: DynamicObject| {
            let (ns, name) = (r.namespace().unwrap_or_default(), r.name_any());
            refs_of(by_route.stages_where(&ns, |s| routes_through(s, &name)))
        });
        controller = controller.watches_with(routes, resource, watcher::Config::default(), map);
    }
    controller
}

/// The HTTPRoutes API, when the cluster serves it (Gateway API installed).
async fn http_routes(
    client: &Client,
    namespace: &Option<String>,
) -> Option<(kube::Api<DynamicObject>, ApiResource)> {
    let served = client
        .list_api_group_resources("gateway.networking.k8s.io/v1")
        .await
        .ok()?;
    served.resources.iter().find(|r| r.name == "httproutes")?;
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    let resource = ApiResource::from_gvk(&gvk);
    let api = match namespace {
        Some(ns) => kube::Api::namespaced_with(client.clone(), ns, &resource),
        None => kube::Api::all_with(client.clone(), &resource),
    };
    Some((api, resource))
}

fn routes_through(stage: &Stage, route: &str) -> bool {
    let strategy = &stage.spec.strategy;
    let canary = strategy
        .canary
        .as_ref()
        .and_then(|c| c.traffic_routing.as_ref());
    let blue_green = strategy.blue_green.as_ref();
    let routing = canary.or(blue_green.and_then(|b| b.traffic_routing.as_ref()));
    routing
        .and_then(|r| r.gateway_api.as_ref())
        .is_some_and(|g| g.http_route == route)
}

async fn reconcile(trigger: Arc<Stage>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let key = key(&*trigger)?;
    let work = reconcile_stage(&key.1, &key.0, &ctx);
    instrumented(CONTROLLER, &*trigger, &ctx, work).await
}

pub(super) async fn reconcile_stage(
    name: &str,
    namespace: &str,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let Some(stage) = read_stage(namespace, name, ctx).await? else {
        return Ok(Action::await_change());
    };
    let backoff = backoff_key(CONTROLLER, &stage);
    if let Some(left) = ctx
        .backoff
        .remaining(&backoff, &fingerprint(&stage, &ctx.index))
    {
        return Err(ReconcileError::BackingOff(left));
    }
    if let Some(done) = super::finalize::guard(&stage, ctx).await? {
        return Ok(done);
    }
    super::protection::label(&stage, ctx).await?;
    let now = Timestamp::now();
    let world = match observe_stage(stage, ctx, now).await? {
        Ok(world) => world,
        Err((stage, reason, message)) => {
            return report_invalid(&stage, reason, message, ctx, now).await;
        }
    };
    let mut outcome = decide(&world, ctx, now).await;
    if ctx.runner.busy(namespace, name) {
        // A gate still evaluating is collected by a later pass, soon.
        let soon = super::runner::COLLECT_AFTER;
        outcome.requeue_after = outcome.requeue_after.min(soon);
    }
    tracing::debug!(
        canary = ?world.canary.as_ref().map(|(_, _, v)| v),
        weight = ?outcome.weight,
        "decided"
    );
    let moving = outcome.status.rollout.as_ref().map(|r| r.release.clone());
    match effects::apply(&world, outcome, ctx, now).await {
        // Someone wrote what this pass decided on since it read it (a new leader, a spec
        // edit): not a refusal to report, the next pass decides again on what is there now.
        Err(ReconcileError::Write(WriteError::Refused {
            kind,
            reason: "Conflict",
            ..
        })) => Err(ReconcileError::Conflict(kind)),
        // Reported on the Stage; the error policy then backs off.
        Err(ReconcileError::Write(refused @ WriteError::Refused { .. })) => {
            report_refusal(&world, moving.as_deref(), &refused, ctx, now).await?;
            Err(refused.into())
        }
        done => done,
    }
}

/// The stage as the operator last wrote it, or as the watch brought it since: decisions must
/// build on the operator's own last write. From the apiserver when neither can be trusted.
async fn read_stage(
    namespace: &str,
    name: &str,
    ctx: &Context,
) -> Result<Option<Stage>, ReconcileError> {
    if let Read::Known(stage) = ctx.index.stage_as_written(namespace, name) {
        return Ok(stage.map(|s| (*s).clone()));
    }
    let fresh = ctx.api::<Stage>(namespace).get_opt(name).await?;
    match &fresh {
        Some(stage) => ctx.index.own_stages.wrote(stage.clone()),
        None => ctx
            .index
            .own_stages
            .forget(&ObjectRef::new(name).within(namespace)),
    }
    Ok(fresh)
}

/// Asks the machine; when it wants measurements or a gate list's results first, gets them
/// and asks again: each kind of answer at most once a pass, so it acts on the third ask.
async fn decide(world: &World, ctx: &Context, now: Timestamp) -> Outcome {
    let status = world.stage.status.clone().unwrap_or_default();
    let name = world.stage.name_any();
    let mut report: Option<machine::GateReport> = None;
    let mut measured: Option<Vec<machine::Measurement>> = None;
    for _ in 0..3 {
        let input = stage_input(
            world,
            &status,
            &name,
            report.as_ref(),
            measured.as_deref(),
            now,
        );
        match machine::decide(&input) {
            Decision::Act(outcome) => return *outcome,
            Decision::EvaluateGates {
                release,
                configuration,
                list,
                run,
                gates,
                emergency,
            } if report.is_none() => {
                let mut gate_ctx = ctx
                    .runner
                    .context(&world.stage, &world.releases, &release, now);
                gate_ctx.configuration = configuration;
                gate_ctx.emergency = emergency;
                (gate_ctx.list, gate_ctx.run) = (list, run);
                gate_ctx.service_port = crate::workload::service_port(&world.target);
                report = Some(ctx.runner.evaluate_in_order(&gates, &gate_ctx, now).await);
            }
            Decision::Measure { release, due } if measured.is_none() => {
                let gate_ctx = ctx
                    .runner
                    .context(&world.stage, &world.releases, &release, now);
                measured = Some(ctx.runner.measure(&gate_ctx, &due).await);
            }
            other => unreachable!("decide asks for each answer once per reconcile: {other:?}"),
        }
    }
    unreachable!("decide acts once it has its measurements and one gate list's results")
}

fn stage_input<'a>(
    world: &'a World,
    status: &'a crate::api::StageStatus,
    name: &'a str,
    gates: Option<&'a machine::GateReport>,
    measurements: Option<&'a [machine::Measurement]>,
    now: Timestamp,
) -> machine::StageInput<'a> {
    machine::StageInput {
        name,
        plan: &world.plan,
        status,
        releases: &world.releases,
        primary: world.primary_view.as_ref(),
        canary: world.canary.as_ref().map(|(_, _, v)| v),
        gates,
        measurements,
        command: world.steering.command.clone(),
        invalid: world.invalid.as_deref(),
        target: Some(&world.target_template),
        now,
    }
}

/// Marks the stage Invalid (Stalled) with a message naming the field, and announces it once.
async fn report_invalid(
    stage: &Stage,
    reason: &'static str,
    message: String,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action, ReconcileError> {
    let old = stage.status.clone().unwrap_or_default();
    let mut status = old.clone();
    if status.phase != Some(StagePhase::Invalid) {
        status.phase_since = Some(now);
    }
    status.phase = Some(StagePhase::Invalid);
    status.message = Some(message.clone());
    status.conditions = kstatus(Health::Stalled, reason, &message);
    if old.message.as_deref() != Some(message.as_str()) {
        let announcement = Announcement {
            warning: true,
            reason,
            key: format!("{reason}/{now}"),
            notify_stage: None,
            note: message.clone(),
        };
        ctx.writer.events.publish(stage, announcement).await;
    }
    super::changes::write_stage_status(stage, &old, status, ctx, now).await?;
    super::steering::refuse_waiting(stage, &message, ctx, now).await?;
    Ok(Action::requeue(INVALID_RETRY))
}

/// A refused write: the stage says so in the apiserver's words, and the release it was
/// about to move is `Blocked` there. Nothing of the refused transition is recorded.
async fn report_refusal(
    world: &World,
    moving: Option<&str>,
    refused: &WriteError,
    ctx: &Context,
    now: Timestamp,
) -> Result<(), ReconcileError> {
    let stage = &world.stage;
    let old = stage.status.clone().unwrap_or_default();
    let message = refused.to_string();
    let mut status = old.clone();
    status.conditions = kstatus(Health::Stalled, "WriteRefused", &message);
    status.message = Some(format!("retrying with backoff: {message}"));
    if status.phase != Some(StagePhase::Blocked) {
        status.phase_since = Some(now);
    }
    status.phase = Some(StagePhase::Blocked);
    let namespace = stage.namespace().unwrap_or_default();
    if let Some(release) = moving.and_then(|r| world.releases.iter().find(|v| v.name == r)) {
        let before = release.stages.get(&stage.name_any());
        let mut entry = before
            .cloned()
            .unwrap_or_else(|| ReleaseStageStatus::new(StagePhaseForRelease::Blocked));
        if !entry.phase.is_final() {
            entry.phase = StagePhaseForRelease::Blocked;
            entry.reason = Some("WriteRefused".into());
            entry.message = Some(message.clone());
            let name = stage.name_any();
            ctx.writer
                .release_entry(&namespace, &release.name, &name, (before, &entry), None)
                .await?;
        }
    }
    let already = old
        .conditions
        .iter()
        .any(|c| c.reason == "WriteRefused" && c.message == message);
    if !already {
        let announcement = Announcement {
            warning: true,
            reason: "WriteRefused",
            key: format!("WriteRefused/{now}"),
            notify_stage: None,
            note: message,
        };
        ctx.writer.events.publish(stage, announcement).await;
    }
    ctx.writer.stage_status(stage, &old, status, now).await?;
    Ok(())
}
