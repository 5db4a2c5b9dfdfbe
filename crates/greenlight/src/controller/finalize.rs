//! The finalizer every Stage carries: on deletion, the route goes back to the primary alone
//! (the canary's backendRef removed), and the primary, which has no owner, is marked
//! orphaned: it keeps serving the release it runs, with all traffic, whatever deleted the
//! Stage (a person, or a GitOps prune in any propagation). The canary, unowned while it may
//! serve, keeps its pods for its `scaleDownDelay` (the data plane applies the route with a
//! delay), and is then handed to the Stage and goes with it. A route or a Gateway API that is gone has nothing
//! to restore, so it never holds the deletion; a refused write does, with backoff, until it
//! goes through.
//!
//! Orphaning was chosen over handing the template back to the target: the target belongs to
//! Git, and writing its replicas or template would fight whoever syncs it (and lose, taking
//! the service down with it). A Stage made again with the same target adopts the primary.

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::Context;
use super::error::ReconcileError;
use crate::api::Stage;
use crate::api::canary::{ServiceSwitchRouting, TrafficRouting};
use crate::api::stage::StrategyType;
use crate::machine::drain::{Handover, deleted_stage_handover};
use crate::routers::{RouterContext, TrafficRouter, for_routing};
use crate::workload::{canary_name, primary_name};

pub use crate::api::STAGE_FINALIZER as FINALIZER;

/// Keeps the finalizer on every Stage; for a Stage being deleted, restores its route, marks
/// its primary orphaned and lets it go, and the pass ends there (`Some`).
pub async fn guard(stage: &Stage, ctx: &Context) -> Result<Option<Action>, ReconcileError> {
    let has = stage.finalizers().iter().any(|f| f == FINALIZER);
    if stage.metadata.deletion_timestamp.is_some() {
        if has {
            if let Some((router, router_ctx)) = router_of(stage, ctx) {
                ctx.writer.restore_primary(&*router, &router_ctx).await?;
                tracing::info!("deleted stage: all traffic restored to the primary");
            }
            orphan_primary(stage, ctx).await?;
            if let Some(wait) = drain_canary(stage, ctx).await? {
                return Ok(Some(Action::requeue(wait)));
            }
            hand_canary_over(stage, ctx).await?;
            ctx.writer.stage_finalizers(stage, without(stage)).await?;
        }
        return Ok(Some(Action::await_change()));
    }
    if !has {
        let mut finalizers = stage.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        ctx.writer.stage_finalizers(stage, finalizers).await?;
    }
    Ok(None)
}

/// How long the canary keeps its pods before it goes with the Stage (see
/// [`deleted_stage_handover`]); `None` once it may go.
async fn drain_canary(
    stage: &Stage,
    ctx: &Context,
) -> Result<Option<std::time::Duration>, ReconcileError> {
    let namespace = stage.namespace().unwrap_or_default();
    let canary = ctx
        .deployments
        .get(&namespace, &canary_name(&stage.spec.target.name))
        .await?;
    let has_pods = canary.is_some_and(|c| c.spec.as_ref().and_then(|s| s.replicas) != Some(0));
    let delay = crate::validation::compile_stage(&stage.name_any(), &stage.spec)
        .ok()
        .and_then(|plan| plan.canary)
        .map_or(std::time::Duration::from_secs(30), |c| c.scale_down_delay);
    let old = stage.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let until = match deleted_stage_handover(old.canary_drain_until, delay, has_pods, now) {
        Handover::Now => return Ok(None),
        Handover::Wait(until) => until,
        Handover::Record(until) => {
            let mut status = old.clone();
            status.canary_drain_until = Some(until);
            ctx.writer.stage_status(stage, &old, status, now).await?;
            tracing::info!(%until, "deleted stage: the canary keeps its pods while the route change reaches the data plane");
            until
        }
    };
    Ok(Some(until.duration_since(now).unsigned_abs()))
}

/// Once no route sends it traffic, the canary and its Service become the Stage's, for the
/// garbage collector to delete with it.
async fn hand_canary_over(stage: &Stage, ctx: &Context) -> Result<(), ReconcileError> {
    let namespace = stage.namespace().unwrap_or_default();
    let name = canary_name(&stage.spec.target.name);
    if let Some(canary) = ctx.deployments.get(&namespace, &name).await? {
        ctx.writer
            .hand_to_stage("deployment_owner", &*canary, stage)
            .await?;
    }
    if let Some(service) = ctx.services.get(&namespace, &name).await? {
        ctx.writer
            .hand_to_stage("service_owner", &*service, stage)
            .await?;
    }
    Ok(())
}

/// Marks the deleted stage's primary orphaned, saying what it serves and what to do.
async fn orphan_primary(stage: &Stage, ctx: &Context) -> Result<(), ReconcileError> {
    let namespace = stage.namespace().unwrap_or_default();
    let name = primary_name(&stage.spec.target.name);
    let Some(primary) = ctx.deployments.get(&namespace, &name).await? else {
        return Ok(());
    };
    let serving = stage
        .status
        .as_ref()
        .and_then(|s| s.current_version.clone())
        .unwrap_or_else(|| "what it ran".into());
    let note = format!(
        "Stage '{}' was deleted at {}; this Deployment keeps serving {serving} with all traffic and is no longer managed. Delete it when nothing needs it, or create the Stage again to adopt it.",
        stage.name_any(),
        jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_default(),
    );
    let marked = ctx.writer.mark_orphaned(&primary, Some(&note)).await?;
    ctx.deployments.wrote(marked);
    tracing::info!(primary = %name, "deleted stage: primary orphaned, still serving");
    Ok(())
}

fn without(stage: &Stage) -> Vec<String> {
    let mut finalizers = stage.finalizers().to_vec();
    finalizers.retain(|f| f != FINALIZER);
    finalizers
}

/// The router of a canary or blue-green stage that routes traffic through one, with what it
/// needs.
fn router_of(stage: &Stage, ctx: &Context) -> Option<(Box<dyn TrafficRouter>, RouterContext)> {
    let strategy = &stage.spec.strategy;
    // The router a rollout in progress started with holds the traffic, whatever the spec says
    // now (and a spec that does not compile still names its router).
    let recorded = stage
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref()?.routing.clone());
    let routing = match (recorded, strategy.strategy_type) {
        (Some(recorded), _) => recorded,
        (None, StrategyType::Rolling) => return None,
        (None, StrategyType::Canary) => strategy.canary.as_ref()?.traffic_routing.clone()?,
        (None, StrategyType::BlueGreen) => {
            let asked = strategy
                .blue_green
                .as_ref()
                .and_then(|b| b.traffic_routing.clone());
            let gateway = asked.filter(|r| r.gateway_api.is_some());
            gateway.unwrap_or_else(|| TrafficRouting {
                service_switch: Some(ServiceSwitchRouting {}),
                ..TrafficRouting::default()
            })
        }
    };
    let router = for_routing(Some(&routing)).ok()?;
    if router.sizes_by_weight() {
        // Replica ratio: no route to restore; the workloads go with the Stage.
        return None;
    }
    Some((router, RouterContext::for_stage(stage, ctx.client.clone())))
}
