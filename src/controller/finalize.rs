//! The finalizer of Stages whose canary shifts traffic through a router (an HTTPRoute): it
//! is added while the stage routes traffic, and on deletion the route goes back to the
//! primary alone (the canary's backendRef removed) before the finalizer is taken off. A
//! route or a Gateway API that is gone has nothing to restore, so it never holds the
//! deletion; a refused write does, with backoff, until it goes through.

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::Context;
use super::error::ReconcileError;
use crate::api::Stage;
use crate::api::stage::StrategyType;
use crate::routers::{RouterContext, TrafficRouter, for_routing};
use crate::workload::{canary_name, primary_name};

pub use crate::api::STAGE_FINALIZER as FINALIZER;

/// Keeps the finalizer where it is needed; for a Stage being deleted, restores its route and
/// lets it go, and the pass ends there (`Some`).
pub async fn guard(stage: &Stage, ctx: &Context) -> Result<Option<Action>, ReconcileError> {
    let has = stage.finalizers().iter().any(|f| f == FINALIZER);
    if stage.metadata.deletion_timestamp.is_some() {
        if has {
            if let Some((router, router_ctx)) = router_of(stage, ctx) {
                ctx.writer.restore_primary(&*router, &router_ctx).await?;
                tracing::info!("deleted stage: all traffic restored to the primary");
            }
            ctx.writer.stage_finalizers(stage, without(stage)).await?;
        }
        return Ok(Some(Action::await_change()));
    }
    let needed = router_of(stage, ctx).is_some();
    if needed && !has {
        let mut finalizers = stage.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        ctx.writer.stage_finalizers(stage, finalizers).await?;
    } else if has && !needed {
        ctx.writer.stage_finalizers(stage, without(stage)).await?;
    }
    Ok(None)
}

fn without(stage: &Stage) -> Vec<String> {
    let mut finalizers = stage.finalizers().to_vec();
    finalizers.retain(|f| f != FINALIZER);
    finalizers
}

/// The router of a canary stage that routes traffic through one, with what it needs.
fn router_of(stage: &Stage, ctx: &Context) -> Option<(Box<dyn TrafficRouter>, RouterContext)> {
    if stage.spec.strategy.strategy_type != StrategyType::Canary {
        return None;
    }
    let canary = stage.spec.strategy.canary.as_ref()?;
    let router = for_routing(Some(canary.traffic_routing.as_ref()?)).ok()?;
    if router.sizes_by_weight() {
        // Replica ratio: no route to restore; the workloads go with the Stage.
        return None;
    }
    let target = &stage.spec.target.name;
    let router_ctx = RouterContext {
        client: ctx.client.clone(),
        namespace: stage.namespace().unwrap_or_default(),
        primary_service: primary_name(target),
        canary_service: canary_name(target),
        canary_deployment: canary_name(target),
    };
    Some((router, router_ctx))
}
