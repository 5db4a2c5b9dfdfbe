//! Observe: everything a stage's decision is made from, read from the index (and, for the
//! workloads, from [`fresh`](super::fresh) reads as current as the apiserver's), plus the
//! checks across objects that a single spec cannot make (the pipeline's DAG, the target's
//! owner, the gates).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;

use super::Context;
use super::canary::CanaryIo;
use super::error::ReconcileError;
use super::steering::{self, Steering};
use crate::api::GateType;
use crate::api::gate::GateList;
use crate::api::release::Release;
use crate::api::stage::{Stage, StagePhase, TriggerType};
use crate::index::own::Read;
use crate::index::{Index, release_problem};
use crate::machine::{CanaryView, PrimaryView, ReleaseView};
use crate::pipeline::{PipelineError, topological_order, upstream_of};
use crate::validation::{
    FieldError, MANUAL_NEEDS_APPROVAL_GATE, StagePlan, ValidationErrors, compile_stage,
    rollback_plan,
};
use crate::workload::{build_primary, observe, primary_name};

/// The stage's spec compiled, with its place in the pipeline and its gates checked.
pub fn validate_stage(stage: &Stage, ctx: &Context) -> Result<StagePlan, ValidationErrors> {
    let plan = compile_stage(&stage.name_any(), &stage.spec)?;
    let mut errors: Vec<FieldError> = check_dag(stage, &ctx.index).err().into_iter().collect();
    if errors.is_empty() {
        errors.extend(invalid_upstream(stage, &ctx.index));
    }
    if let Some(owner) = ctx.index.target_owner(stage) {
        errors.push(FieldError::new(
            "spec.target.name",
            format!(
                "Deployment '{}' is already the target of stage '{}'; give each stage its own target",
                stage.spec.target.name,
                owner.name_any()
            ),
        ));
    }
    // Gates hold new rollouts only: one in progress keeps its deadline, its analysis (where a
    // broken gate is an inconclusive measurement) and its steering.
    if stage.status.as_ref().is_none_or(|s| s.rollout.is_none()) {
        errors.extend(check_gates(stage, ctx));
    }
    let namespace = stage.namespace().unwrap_or_default();
    let gate_type = |g: &str| ctx.index.gate(&namespace, g).map(|g| g.spec.gate_type);
    errors.extend(crate::validation::checks::misplaced_gates(
        &stage.spec,
        &gate_type,
    ));
    let manual = stage.spec.trigger.trigger_type == TriggerType::Manual;
    for (field, gates) in crate::validation::checks::gate_lists(&stage.spec) {
        let approval = gates
            .iter()
            .any(|g| gate_type(g) == Some(GateType::Approval));
        if manual && !approval {
            errors.push(FieldError::new(field, MANUAL_NEEDS_APPROVAL_GATE));
        }
    }
    match errors.is_empty() {
        true => Ok(plan),
        false => Err(ValidationErrors(errors)),
    }
}

/// Only the stage's own upstream is checked, so a broken stage invalidates just the stages
/// that depend on it, and they name it.
fn check_dag(stage: &Stage, index: &Index) -> Result<(), FieldError> {
    let name = stage.name_any();
    let namespace = stage.namespace().unwrap_or_default();
    let pipeline = &stage.spec.pipeline;
    let mut graph: BTreeMap<String, Vec<String>> = index
        .pipeline_stages(&namespace, pipeline)
        .iter()
        .map(|s| (s.name_any(), s.spec.requires.clone()))
        .collect();
    graph.insert(name.clone(), stage.spec.requires.clone());
    let upstream = upstream_of(&name, &graph);
    graph.retain(|s, _| *s == name || upstream.contains(s));
    let Err(e) = topological_order(pipeline, &graph) else {
        return Ok(());
    };
    let culprit = match &e {
        PipelineError::Cycle { cycle, .. } if cycle.contains(&name) => None,
        PipelineError::Cycle { cycle, .. } => cycle.first().cloned(),
        PipelineError::MissingStage { stage, .. } if *stage == name => None,
        PipelineError::MissingStage { stage, .. } => Some(stage.clone()),
    };
    let why = e
        .to_string()
        .trim_start_matches("spec.requires: ")
        .to_string();
    Err(FieldError::new(
        "spec.requires",
        match culprit {
            None => why,
            Some(c) => format!("upstream stage '{c}' is invalid: {why}"),
        },
    ))
}

/// An upstream stage that reports itself invalid, for whatever reason (a bad time zone, a
/// missing gate): its releases never come, so this stage says so and names it rather than
/// wait looking healthy.
fn invalid_upstream(stage: &Stage, index: &Index) -> Option<FieldError> {
    let namespace = stage.namespace().unwrap_or_default();
    stage.spec.requires.iter().find_map(|name| {
        let upstream = index.stage(&namespace, name)?;
        let status = upstream.status.as_ref()?;
        (status.phase == Some(StagePhase::Invalid)).then(|| {
            let why = status.message.as_deref().unwrap_or("no reason given");
            FieldError::new(
                "spec.requires",
                format!("upstream stage '{name}' is invalid: {why}"),
            )
        })
    })
}

/// Every gate the stage names must exist and be valid: a stage held by a broken gate would
/// otherwise wait for ever looking healthy.
fn check_gates(stage: &Stage, ctx: &Context) -> Vec<FieldError> {
    let namespace = stage.namespace().unwrap_or_default();
    let named = stage.spec.named_gates();
    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    for (field, gate) in named {
        if !seen.insert(gate.clone()) {
            continue;
        }
        let Err(problems) = ctx.runner.compiled(&namespace, &gate) else {
            continue;
        };
        let message = match ctx.index.gate(&namespace, &gate) {
            None => format!("Gate '{gate}' does not exist in namespace '{namespace}'"),
            Some(_) => format!("Gate '{gate}' is invalid: {}", ValidationErrors(problems)),
        };
        errors.push(FieldError::new(field, message));
    }
    errors
}

/// The releases of the stage's pipeline, oldest first, as the machine sees them. The stage's
/// own entry in each is its last write of it, which the index may not hold yet: a decision
/// that saw a stale one would announce its transition again, or refuse a retry of a failure
/// it has just recorded. Also the releases whose entry only the apiserver can tell.
pub fn release_views(
    stage: &Stage,
    target: &Deployment,
    index: &Index,
) -> (Vec<ReleaseView>, Vec<String>) {
    let name = stage.name_any();
    let mut ask = Vec::new();
    let views = index
        .pipeline_releases(&stage.namespace().unwrap_or_default(), &stage.spec.pipeline)
        .iter()
        .map(|r| {
            let release = Some((r.name_any(), &r.spec.artifacts));
            let release = release.as_ref().map(|(n, a)| (n.as_str(), a.as_slice()));
            let unfit = build_primary(target, "", release, 1)
                .err()
                .map(|e| e.to_string());
            let mut stages = r
                .status
                .as_ref()
                .map(|s| s.stages.clone())
                .unwrap_or_default();
            match index.own_entries.entry(r, &name) {
                Read::Known(Some(entry)) => drop(stages.insert(name.clone(), entry)),
                Read::Known(None) => drop(stages.remove(&name)),
                Read::Unknown => ask.push(r.name_any()),
            }
            ReleaseView {
                release_type: r.spec.release_type,
                name: r.name_any(),
                version: r.spec.version.clone(),
                artifacts: r.spec.artifacts.clone(),
                valid: release_problem(r).is_none(),
                unfit,
                review_open: None,
                stages,
            }
        })
        .collect();
    (views, ask)
}

/// Says whether the release a `closeReview` names has an open review here: only that one is
/// looked up, so no pass reads every trail.
fn mark_open_review(
    releases: &mut [ReleaseView],
    steering: &steering::Steering,
    stage: &Stage,
    ctx: &Context,
) {
    let Some(crate::machine::Command::CloseReview { release, .. }) = &steering.command else {
        return;
    };
    let namespace = stage.namespace().unwrap_or_default();
    let Some(found) = ctx.index.release(&namespace, release) else {
        return;
    };
    let reviews = greenlight_core::review::reviews(&found);
    let open = greenlight_core::review::open_at(&reviews, &stage.name_any());
    let open = open.map(|r| r.requester.clone());
    if let Some(view) = releases.iter_mut().find(|r| &r.name == release) {
        view.review_open = open;
    }
}

/// Reads from the apiserver the entries of the releases named in `ask`; what it read is held
/// as `stage`'s latest until the watch brings it.
async fn freshen(
    releases: &mut [ReleaseView],
    ask: Vec<String>,
    (namespace, stage): (&str, &str),
    ctx: &Context,
) -> Result<(), ReconcileError> {
    for name in ask {
        let Some(fresh) = ctx.api::<Release>(namespace).get_opt(&name).await? else {
            continue;
        };
        let status = fresh.status.clone().unwrap_or_default();
        let entry = status.stages.get(stage).cloned();
        ctx.index.own_entries.wrote(&fresh, stage, entry);
        if let Some(view) = releases.iter_mut().find(|r| r.name == name) {
            view.stages = status.stages;
        }
    }
    Ok(())
}

/// How many pods the stage's primary runs now (a rollback started before replicas were
/// recorded keeps them).
async fn primary_replicas(stage: &Stage, ctx: &Context) -> Result<i32, ReconcileError> {
    let namespace = stage.namespace().unwrap_or_default();
    let name = primary_name(&stage.spec.target.name);
    let primary = ctx.deployments.get(&namespace, &name).await?;
    Ok(primary.and_then(|d| d.spec.as_ref()?.replicas).unwrap_or(1))
}

/// Why a plan cannot carry on the rollout in progress: its traffic is routed another way
/// than when the rollout started (another strategy, router or route), so the router now
/// would leave the one that holds the traffic as it is. Such a rollout is rolled back by
/// the router it started with. A rollout that recorded no router (the replica ratio, or one
/// an operator from before the record started) follows the spec as before.
fn rerouted(
    plan: &StagePlan,
    rollout: Option<&crate::api::stage::ActiveRollout>,
) -> Option<(&'static str, String)> {
    // Before its pre-rollout checks pass nothing has moved: the router is recorded after them.
    let rollout = rollout.filter(|r| r.canary.is_some() && !r.running(GateList::PreRollout))?;
    let started = rollout.routing.as_ref()?;
    let now = plan.canary.as_ref().and_then(|c| c.routing.as_ref());
    (now != Some(started)).then(|| {
        let why = "the strategy's traffic routing changed during the rollout; rolling back the way it started";
        ("InvalidSpec", why.to_string())
    })
}

/// What one stage's decision is made from.
pub struct World {
    pub stage: Stage,
    pub plan: StagePlan,
    pub target: Arc<Deployment>,
    pub primary: Option<Arc<Deployment>>,
    pub primary_view: Option<PrimaryView>,
    pub releases: Vec<ReleaseView>,
    pub canary: Option<(CanaryIo, Option<Arc<Deployment>>, CanaryView)>,
    pub steering: Steering,
    /// Why the spec does not compile, when it stopped compiling mid-rollout: `plan` is then a
    /// rollback plan.
    pub invalid: Option<String>,
    /// The time the decision is made at.
    pub now: jiff::Timestamp,
    /// The target's template now, pinnable, and as the machine sees it.
    pub pin: crate::workload::PinnedSource,
    pub target_template: crate::machine::TargetTemplate,
}

pub type Invalid = (Stage, &'static str, String);

/// Reads what the decision needs; an invalid spec or a missing target is reported instead.
pub async fn observe_stage(
    stage: Stage,
    ctx: &Context,
    now: jiff::Timestamp,
) -> Result<Result<World, Invalid>, ReconcileError> {
    let namespace = stage.namespace().unwrap_or_default();
    let problem = match super::protection::unverified(&stage, ctx) {
        Some(why) => Err(("UnverifiedChange", why)),
        None => validate_stage(&stage, ctx).map_err(|e| ("InvalidSpec", e.to_string())),
    };
    let rollout = stage.status.as_ref().and_then(|s| s.rollout.clone());
    let problem = problem.and_then(|plan| rerouted(&plan, rollout.as_ref()).map_or(Ok(plan), Err));
    let (plan, invalid) = match (problem, rollout) {
        (Ok(plan), _) => (plan, None),
        // A rollout in progress is rolled back rather than left serving on a spec that no
        // longer says how.
        (Err((_, why)), Some(rollout)) => {
            let plan = rollback_plan(&rollout, primary_replicas(&stage, ctx).await?);
            (plan, Some(why))
        }
        (Err((reason, why)), None) => return Ok(Err((stage, reason, why))),
    };
    let Some(target) = ctx
        .deployments
        .get(&namespace, &stage.spec.target.name)
        .await?
    else {
        let message = format!(
            "spec.target.name: Deployment '{}' not found in namespace '{namespace}'",
            stage.spec.target.name
        );
        return Ok(Err((stage, "TargetNotFound", message)));
    };
    let primary = ctx
        .deployments
        .get(&namespace, &primary_name(&stage.spec.target.name))
        .await?;
    let canary = match CanaryIo::new(&stage, &plan, ctx) {
        Some(io) => {
            let decided = stage
                .status
                .as_ref()
                .and_then(|s| s.rollout.as_ref()?.canary.as_ref())
                .map(|c| c.weight);
            let (deployment, view) = io.observe(ctx, decided).await?;
            Some((io, deployment, view))
        }
        None => None,
    };
    let steering = steering::read(
        &stage,
        ctx.index.pending_commands(&namespace, &stage.name_any()),
        &ctx.index.identity,
    );
    let status = stage.status.clone().unwrap_or_default();
    let (pin, target_template) = super::pins::observe(&target, &status, ctx).await?;
    let (mut releases, ask) = release_views(&stage, &target, &ctx.index);
    let at = (namespace.as_str(), stage.name_any());
    freshen(&mut releases, ask, (at.0, &at.1), ctx).await?;
    mark_open_review(&mut releases, &steering, &stage, ctx);
    Ok(Ok(World {
        primary_view: primary.as_deref().map(observe),
        releases,
        invalid,
        steering,
        now,
        stage,
        plan,
        target,
        primary,
        canary,
        pin,
        target_template,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stage::ActiveRollout;

    fn plan(strategy: serde_json::Value) -> StagePlan {
        let spec = serde_json::json!({"pipeline": "shop", "target": {"name": "web"}, "strategy": strategy});
        let spec = serde_json::from_value(spec).expect("a StageSpec");
        crate::validation::compile_stage("prod", &spec).expect("a valid spec")
    }

    fn rollout_routed(routing: serde_json::Value) -> ActiveRollout {
        let rollout = serde_json::json!({
            "release": "v2", "version": "2", "startedAt": "2026-12-07T10:00:00Z",
            "direction": "Forward", "routing": routing,
            "canary": {"phase": "Stepping", "step": 3, "stepStartedAt": "2026-12-07T10:00:00Z", "weight": 100},
        });
        serde_json::from_value(rollout).expect("an ActiveRollout")
    }

    #[test]
    fn a_blue_green_rollout_whose_spec_turns_to_another_router_is_rolled_back_by_its_own() {
        let switched = rollout_routed(serde_json::json!({"serviceSwitch": {}}));
        let blue_green = plan(serde_json::json!({"type": "blueGreen", "blueGreen": {}}));
        assert_eq!(rerouted(&blue_green, Some(&switched)), None);
        let canary = serde_json::json!({"type": "canary", "canary": {
            "steps": [{"setWeight": 50}], "trafficRouting": {"gatewayAPI": {"httpRoute": "web"}}}});
        let rolling = serde_json::json!({"type": "rolling"});
        for other in [plan(canary), plan(rolling)] {
            let why = rerouted(&other, Some(&switched)).expect("refused").1;
            assert!(why.contains("traffic routing changed"), "{why}");
        }
    }
}
