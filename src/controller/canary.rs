//! The IO half of canary rollouts: the canary workload and the Services in front of both
//! workloads, the traffic router, gate measurements, and the annotations people steer with.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::Context;
use super::error::ReconcileError;
use super::stage::{evaluate_gate, gate_context};
use crate::api::canary::CanaryPhase;
use crate::api::stage::Stage;
use crate::api::validation::{CanaryPlan, StagePlan};
use crate::api::{
    ABORT_ANNOTATION, FIELD_MANAGER, PROMOTE_ANNOTATION, REQUESTED_BY_ANNOTATION, RETRY_ANNOTATION,
    WEIGHT_ANNOTATION,
};
use crate::machine::stage::{CanaryView, Command, DesiredPrimary, Due, Measurement, ReleaseView};
use crate::routers::{RouterContext, TrafficRouter, for_routing};
use crate::workload::{
    build_service, build_workload, canary_name, matches_desired, observe, primary_name,
};

/// The router of a canary stage and what it needs to know.
pub struct CanaryIo {
    pub plan: CanaryPlan,
    pub router: Box<dyn TrafficRouter>,
    pub router_ctx: RouterContext,
}

impl CanaryIo {
    pub fn new(stage: &Stage, plan: &StagePlan, ctx: &Context) -> Option<CanaryIo> {
        let canary = plan.canary.clone()?;
        let target = &stage.spec.target.name;
        Some(CanaryIo {
            router: for_routing(&canary.routing),
            plan: canary,
            router_ctx: RouterContext {
                client: ctx.client.clone(),
                namespace: stage.namespace().unwrap_or_default(),
                primary_service: primary_name(target),
                canary_service: canary_name(target),
                canary_deployment: canary_name(target),
            },
        })
    }

    /// The canary workload as it is, with the weight the router has in effect.
    pub async fn observe(
        &self,
        ctx: &Context,
    ) -> Result<(Option<Deployment>, CanaryView), ReconcileError> {
        let deployment = ctx
            .api::<Deployment>(&self.router_ctx.namespace)
            .get_opt(&self.router_ctx.canary_deployment)
            .await?;
        let view = deployment.as_ref().map(observe);
        let weight = self.router.weight_in_effect(&self.router_ctx).await?;
        Ok((
            deployment,
            CanaryView {
                release: view.as_ref().and_then(|v| v.release.clone()),
                replicas: view.as_ref().map_or(0, |v| v.replicas),
                // Services send traffic only to ready pods, so one available pod is enough to serve.
                available: view.as_ref().is_some_and(|v| v.serving),
                weight_in_effect: weight,
            },
        ))
    }

    /// Puts the machine's decision into effect: traffic first, then the canary workload.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply(
        &self,
        stage: &Stage,
        target: &Deployment,
        observed: Option<&Deployment>,
        desired: Option<&DesiredPrimary>,
        weight: Option<i32>,
        scale_weight: Option<i32>,
        replicas: i32,
        ctx: &Context,
    ) -> Result<(), ReconcileError> {
        // The Services matter only while a canary runs; idle reconciles read nothing more.
        if matches!(desired, Some(DesiredPrimary::Release { .. })) {
            self.ensure_services(stage, target, ctx).await?;
        }
        if let Some(w) = weight
            && self.router.set_weight(&self.router_ctx, w).await?
        {
            ctx.metrics.write("traffic_weight");
        }
        let Some(desired) = desired else {
            return Ok(());
        };
        let owner = stage
            .controller_owner_ref(&())
            .ok_or(ReconcileError::MissingField("metadata.uid"))?;
        let (release, canary_replicas) = match desired {
            DesiredPrimary::Release { name, artifacts } => (
                Some((name.as_str(), artifacts.as_slice())),
                self.router
                    .canary_replicas(replicas, scale_weight.or(weight).unwrap_or(0)),
            ),
            DesiredPrimary::Empty => (None, 0),
        };
        if release.is_none() && observed.is_none() {
            return Ok(());
        }
        let mut deployment = match release {
            Some(r) => build_workload(
                target,
                &self.router_ctx.canary_deployment,
                &stage.name_any(),
                owner,
                Some(r),
                canary_replicas,
            )?,
            // Scaled to zero, the canary keeps its template so its pods can be inspected later.
            None => match observed {
                Some(o) => {
                    let mut d = o.clone();
                    if let Some(spec) = d.spec.as_mut() {
                        spec.replicas = Some(0);
                    }
                    d.status = None;
                    d.metadata = kube::api::ObjectMeta {
                        name: o.metadata.name.clone(),
                        namespace: o.metadata.namespace.clone(),
                        labels: o.metadata.labels.clone(),
                        annotations: o.metadata.annotations.clone(),
                        owner_references: o.metadata.owner_references.clone(),
                        ..Default::default()
                    };
                    d
                }
                None => return Ok(()),
            },
        };
        deployment
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(
                WEIGHT_ANNOTATION.to_string(),
                canary_weight_label(desired, scale_weight.or(weight)),
            );
        if observed.is_some_and(|o| matches_desired(o, &deployment)) {
            return Ok(());
        }
        super::stage::server_side_apply(&deployment, &stage.namespace().unwrap_or_default(), ctx)
            .await
    }

    async fn ensure_services(
        &self,
        stage: &Stage,
        target: &Deployment,
        ctx: &Context,
    ) -> Result<(), ReconcileError> {
        let owner = stage
            .controller_owner_ref(&())
            .ok_or(ReconcileError::MissingField("metadata.uid"))?;
        let api = ctx.api::<Service>(&self.router_ctx.namespace);
        for name in [
            &self.router_ctx.primary_service,
            &self.router_ctx.canary_service,
        ] {
            if api.get_opt(name).await?.is_some() {
                continue;
            }
            let service = build_service(target, name, &stage.name_any(), owner.clone());
            let mut body = serde_json::to_value(&service)?;
            body["apiVersion"] = json!("v1");
            body["kind"] = json!("Service");
            ctx.metrics.write("service_apply");
            api.patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(body),
            )
            .await?;
        }
        Ok(())
    }
}

/// The weight the canary is sized for, as written on it; zero once it is emptied.
fn canary_weight_label(desired: &DesiredPrimary, weight: Option<i32>) -> String {
    match desired {
        DesiredPrimary::Empty => "0".into(),
        DesiredPrimary::Release { .. } => weight.unwrap_or(0).to_string(),
    }
}

/// Measures the due gates of a canary analysis for `release`.
pub async fn measure(
    stage: &Stage,
    releases: &[ReleaseView],
    release: &str,
    due: &[Due],
    ctx: &Context,
    now: Timestamp,
) -> Vec<Measurement> {
    let mut gate_ctx = gate_context(stage, releases, release, now);
    // `{{canary}}` names the workload running the release under test: after promotion, the primary.
    let baking = stage
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .and_then(|r| r.canary.as_ref())
        .is_some_and(|c| c.phase == CanaryPhase::Baking);
    if baking {
        gate_ctx.canary_workload = gate_ctx.primary_workload.clone();
    }
    let mut out = Vec::with_capacity(due.len());
    for d in due {
        let (outcome, _) = evaluate_gate(&d.gate, &gate_ctx, ctx).await;
        out.push(Measurement {
            scope: d.scope.clone(),
            gate: d.gate.clone(),
            outcome,
        });
    }
    out
}

/// The instruction a person left on the Stage, if any (abort wins over promote).
pub fn command(stage: &Stage) -> Option<Command> {
    let annotations = stage.metadata.annotations.as_ref()?;
    if annotations.contains_key(ABORT_ANNOTATION) {
        Some(Command::Abort)
    } else if annotations.contains_key(PROMOTE_ANNOTATION) {
        Some(Command::Promote)
    } else {
        annotations
            .get(RETRY_ANNOTATION)
            .map(|r| Command::Retry(r.clone()))
    }
}

/// Removes the steering annotations once acted upon, so an instruction is carried out once.
pub async fn clear_commands(stage: &Stage, ctx: &Context) -> Result<(), ReconcileError> {
    let patch = json!({"metadata": {"annotations": {
        ABORT_ANNOTATION: null,
        PROMOTE_ANNOTATION: null,
        RETRY_ANNOTATION: null,
        REQUESTED_BY_ANNOTATION: null,
    }}});
    ctx.metrics.write("stage_annotations");
    ctx.api::<Stage>(&stage.namespace().unwrap_or_default())
        .patch(
            &stage.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await?;
    Ok(())
}
