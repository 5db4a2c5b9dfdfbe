//! The IO half of canary rollouts: the canary workload and the Services in front of both
//! workloads, and the traffic router.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;

use super::Context;
use super::error::ReconcileError;
use crate::api::WEIGHT_ANNOTATION;
use crate::api::stage::Stage;
use crate::machine::{CanaryView, DesiredPrimary, Outcome};
use crate::routers::{RouterContext, TrafficRouter, for_routing};
use crate::validation::{CanaryPlan, StagePlan};
use crate::workload::{
    build_service, build_service_named, build_workload, label_revision, matches_desired, observe,
    revision, revision_of,
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
        Some(CanaryIo {
            // Validated with the plan, so the fallback is never taken.
            router: for_routing(canary.routing.as_ref())
                .unwrap_or_else(|_| Box::new(crate::routers::replica_ratio::ReplicaRatio)),
            plan: canary,
            router_ctx: RouterContext::for_stage(stage, ctx.client.clone()),
        })
    }

    /// The canary workload as it is, with the weight the router has in effect (and who else
    /// changed it, when it is not the `decided` one).
    pub async fn observe(
        &self,
        ctx: &Context,
        decided: Option<i32>,
    ) -> Result<(Option<Arc<Deployment>>, CanaryView), ReconcileError> {
        let deployment = ctx
            .deployments
            .get(
                &self.router_ctx.namespace,
                &self.router_ctx.canary_deployment,
            )
            .await?;
        let view = deployment.as_deref().map(observe);
        let narrowed = match self.router.routes_through_canary_service() {
            true => self.narrowed(ctx, deployment.as_deref()).await?,
            false => true,
        };
        // A router that cannot tell the weight is an input to the decision, not an error that
        // would stop the decision from being made (and the rollout from ever ending).
        let in_effect = self
            .router
            .weight_in_effect(&self.router_ctx, deployment.as_deref());
        let (weight, router_problem) = match in_effect.await {
            Ok(weight) => (weight, None),
            Err(crate::routers::RouterError::Kube(e)) => return Err(e.into()),
            Err(e) => (None, Some(e.to_string())),
        };
        let changed_by = match (weight, decided) {
            (Some(w), Some(d)) if w != d => self.router.last_writer(&self.router_ctx).await,
            _ => None,
        };
        Ok((
            deployment,
            CanaryView {
                release: view.as_ref().and_then(|v| v.release.clone()),
                template: view.as_ref().and_then(|v| v.template.clone()),
                replicas: view.as_ref().map_or(0, |v| v.replicas),
                // Services send traffic only to ready pods, so one available pod is enough to
                // serve, once the canary's Service reaches only the pods of its revision.
                available: view.as_ref().is_some_and(|v| v.serving) && narrowed,
                complete: view.as_ref().is_some_and(|v| v.available) && narrowed,
                weight_in_effect: weight,
                router_problem,
                changed_by,
            },
        ))
    }

    /// Puts the machine's traffic and canary decisions into effect: the Services (only while
    /// a canary runs), then traffic, then the canary workload.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply(
        &self,
        stage: &Stage,
        target: &Deployment,
        observed: Option<&Deployment>,
        router_problem: Option<&String>,
        outcome: &Outcome,
        replicas: i32,
        ctx: &Context,
    ) -> Result<(), ReconcileError> {
        let desired = outcome.canary.as_ref();
        if matches!(desired, Some(DesiredPrimary::Release { .. })) {
            self.ensure_services(stage, target, observed, ctx).await?;
        }
        match (outcome.weight, router_problem) {
            // Without a route nothing sends traffic to the canary: zero is in effect already,
            // and more cannot be: the machine rolls back by its deadline.
            (Some(_), Some(problem)) => tracing::debug!(%problem, "traffic weight not set"),
            (Some(w), None) => {
                let router = self.router.as_ref();
                ctx.writer.set_weight(router, &self.router_ctx, w).await?;
            }
            (None, _) => {}
        }
        let scale = outcome.canary_scale_weight.or(outcome.weight);
        let Some(deployment) = self.desired(stage, target, observed, desired, scale, replicas)?
        else {
            return Ok(());
        };
        if observed.is_some_and(|o| matches_desired(o, &deployment)) {
            return Ok(());
        }
        let applied = ctx
            .writer
            .apply_seen("deployment_apply", &deployment, observed)
            .await?;
        ctx.deployments.wrote(applied);
        Ok(())
    }

    /// The canary Deployment the decision asks for, if it asks for one.
    fn desired(
        &self,
        stage: &Stage,
        target: &Deployment,
        observed: Option<&Deployment>,
        desired: Option<&DesiredPrimary>,
        weight: Option<i32>,
        replicas: i32,
    ) -> Result<Option<Deployment>, ReconcileError> {
        let Some(desired) = desired else {
            return Ok(None);
        };
        let mut deployment = match (desired, observed) {
            (
                DesiredPrimary::Release {
                    name,
                    artifacts,
                    template,
                },
                _,
            ) => {
                let mut canary = build_workload(
                    target,
                    &self.router_ctx.canary_deployment,
                    &stage.name_any(),
                    Some((name.as_str(), artifacts.as_slice())),
                    self.router.canary_replicas(replicas, weight.unwrap_or(0)),
                )?;
                // A canary an older operator started keeps its pods: no label, no restart,
                // and its Service selects the workload as it did (see `narrowed`).
                if !observed.is_some_and(|o| unlabelled_run_of(o, name, template.as_deref())) {
                    let revision = revision(name, template.as_deref(), artifacts);
                    label_revision(&mut canary, &revision);
                }
                canary
            }
            // Scaled to zero, the canary keeps its template so its pods can be inspected later.
            (DesiredPrimary::Empty, Some(o)) => scaled_to_zero(o),
            (DesiredPrimary::Empty, None) => return Ok(None),
        };
        let annotations = deployment
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new);
        // A Deployment's generation goes up with any change to its annotations, and until the
        // deployment controller catches up it does not count as serving: so the weight is
        // written only where the router sizes the canary by it (and its replicas change anyway).
        if self.router.sizes_by_weight() {
            let label = canary_weight_label(desired, weight);
            annotations.insert(WEIGHT_ANNOTATION.to_string(), label);
        } else {
            annotations.remove(WEIGHT_ANNOTATION);
        }
        Ok(Some(deployment))
    }

    /// Blue-green's `-active` Service, which clients reach: made selecting the primary when
    /// it is missing; made plain again when someone pointed it elsewhere (and, while no
    /// rollout runs, onto the primary's ports); and, while no rollout runs, put back on the
    /// primary. During a rollout the router writes its selector and ports (in this same pass,
    /// after this).
    pub async fn ensure_active(
        &self,
        stage: &Stage,
        ports_from: &Deployment,
        rolling_out: bool,
        ctx: &Context,
    ) -> Result<(), ReconcileError> {
        if self
            .plan
            .routing
            .as_ref()
            .is_none_or(|r| r.service_switch.is_none())
        {
            return Ok(());
        }
        let rc = &self.router_ctx;
        let existing = ctx.services.get(&rc.namespace, &rc.active_service).await?;
        let (name, primary) = (&rc.active_service, &rc.primary_service);
        let mut built = build_service_named(ports_from, name, primary, &stage.name_any(), None);
        if let Some(spec) = built.spec.as_mut() {
            spec.type_ = Some("ClusterIP".into());
        }
        let Some(existing) = existing else {
            return self.create(&built, ctx).await;
        };
        // During a rollout its ports are the selected side's, which the router writes.
        let ports_fine = rolling_out || same_ports(&existing, &built);
        let existing = match plain(&existing) && ports_fine {
            true => existing,
            false => {
                let made = ctx.writer.plain_service(&existing, &built).await?;
                ctx.services.wrote(made.clone());
                Arc::new(made)
            }
        };
        match rolling_out || serves_as_built(&existing, &built) {
            true => Ok(()),
            false => Ok(ctx.writer.set_weight(self.router.as_ref(), rc, 0).await?),
        }
    }

    async fn create(&self, service: &Service, ctx: &Context) -> Result<(), ReconcileError> {
        let applied = ctx.writer.apply("service_apply", service).await?;
        ctx.services.wrote(applied);
        Ok(())
    }

    /// The primary's Service, and the canary's narrowed to the revision the canary serves:
    /// while a new revision's pods are not yet available it stays on the one before, so
    /// the canary never reaches no pod at all, and gets no weight (see [`Self::narrowed`]).
    async fn ensure_services(
        &self,
        stage: &Stage,
        target: &Deployment,
        observed: Option<&Deployment>,
        ctx: &Context,
    ) -> Result<(), ReconcileError> {
        let namespace = &self.router_ctx.namespace;
        let (primary, canary) = (
            &self.router_ctx.primary_service,
            &self.router_ctx.canary_service,
        );
        ensure_service(namespace, primary, stage, target, ctx).await?;
        // Only to a revision with a pod available: a canary sized to none "serves" nothing.
        let serving = observed.filter(|o| {
            let view = observe(o);
            view.serving && view.replicas > 0
        });
        let serving = serving.and_then(revision_of);
        let selecting = serving.map_or(Selecting::AsNow, Selecting::Revision);
        ensure_selecting(namespace, canary, stage, target, selecting, ctx).await
    }

    /// Whether the canary's Service selects exactly the revision its pods run now: until it
    /// does, pods of a release still draining could answer the canary's share. A canary
    /// from before revisions (no label) is narrowed while its Service selects none either.
    async fn narrowed(
        &self,
        ctx: &Context,
        canary: Option<&Deployment>,
    ) -> Result<bool, ReconcileError> {
        let name = &self.router_ctx.canary_service;
        let service = ctx.services.get(&self.router_ctx.namespace, name).await?;
        let Some(service) = service else {
            return Ok(false);
        };
        Ok(selected_revision(&service) == canary.and_then(revision_of))
    }
}

/// Which pods a managed Service selects beyond its workload's.
pub(super) enum Selecting<'a> {
    /// All of the workload's.
    Workload,
    /// Only those of one revision.
    Revision(&'a str),
    /// The revision it selects now, if any.
    AsNow,
}

/// Whether `observed` already runs `release` on `template` with no revision label: a canary
/// an operator from before revisions started.
fn unlabelled_run_of(observed: &Deployment, release: &str, template: Option<&str>) -> bool {
    let view = observe(observed);
    revision_of(observed).is_none()
        && view.release.as_deref() == Some(release)
        && view.template.as_deref() == template
}

/// The revision a Service's selector narrows to, if any.
fn selected_revision(service: &k8s_openapi::api::core::v1::Service) -> Option<&str> {
    let selector = service.spec.as_ref()?.selector.as_ref()?;
    selector.get(crate::api::REVISION_LABEL).map(String::as_str)
}

/// The Service `name` in front of a managed workload, made from the target's ports, and put
/// back when someone points it elsewhere (what checks and traffic reach depends on it).
pub(super) async fn ensure_service(
    namespace: &str,
    name: &str,
    stage: &Stage,
    target: &Deployment,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    ensure_selecting(namespace, name, stage, target, Selecting::Workload, ctx).await
}

/// [`ensure_service`], selecting the pods `selecting` says.
async fn ensure_selecting(
    namespace: &str,
    name: &str,
    stage: &Stage,
    target: &Deployment,
    selecting: Selecting<'_>,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let existing = ctx.services.get(namespace, name).await?;
    let revision = match selecting {
        Selecting::Workload => None,
        Selecting::Revision(r) => Some(r.to_string()),
        Selecting::AsNow => existing
            .as_deref()
            .and_then(selected_revision)
            .map(String::from),
    };
    let service = build_service(target, name, &stage.name_any(), revision.as_deref());
    match existing {
        Some(e) if serves_as_built(&e, &service) => return Ok(()),
        // An apply leaves the fields it does not set: an external name, external IPs or
        // unready addresses someone added would stay.
        Some(e) if !plain(&e) => ctx
            .services
            .wrote(ctx.writer.plain_service(&e, &service).await?),
        _ => {}
    }
    let applied = ctx.writer.apply("service_apply", &service).await?;
    ctx.services.wrote(applied);
    Ok(())
}

/// Whether `existing` sends traffic where `built` would: a plain Service with its selector
/// and ports.
fn serves_as_built(existing: &Service, built: &Service) -> bool {
    let selector = |s: &Service| s.spec.as_ref().and_then(|s| s.selector.clone());
    plain(existing) && selector(existing) == selector(built) && same_ports(existing, built)
}

/// A Service that sends only to its selected, ready pods: no external name, no external IPs,
/// no unready addresses. (A NodePort or LoadBalancer one is someone's choice to expose it,
/// and still sends only there.)
fn plain(service: &Service) -> bool {
    let Some(spec) = service.spec.as_ref() else {
        return false;
    };
    spec.type_.as_deref() != Some("ExternalName")
        && spec.external_name.is_none()
        && spec.external_ips.as_ref().is_none_or(Vec::is_empty)
        && spec.publish_not_ready_addresses != Some(true)
}

fn same_ports(existing: &Service, built: &Service) -> bool {
    let ports = |s: &Service| {
        let ports = s.spec.iter().flat_map(|s| s.ports.iter().flatten());
        ports
            .map(|p| (p.port, p.target_port.clone(), p.protocol.clone()))
            .collect::<Vec<_>>()
    };
    ports(existing) == ports(built)
}

/// The weight the canary is sized for, as written on it; zero once it is emptied.
fn canary_weight_label(desired: &DesiredPrimary, weight: Option<i32>) -> String {
    match desired {
        DesiredPrimary::Empty => "0".into(),
        DesiredPrimary::Release { .. } => weight.unwrap_or(0).to_string(),
    }
}

/// The canary as it is, with no replicas and no server-set fields.
fn scaled_to_zero(observed: &Deployment) -> Deployment {
    let mut d = observed.clone();
    if let Some(spec) = d.spec.as_mut() {
        spec.replicas = Some(0);
    }
    d.status = None;
    d.metadata = kube::api::ObjectMeta {
        name: observed.metadata.name.clone(),
        namespace: observed.metadata.namespace.clone(),
        labels: observed.metadata.labels.clone(),
        annotations: observed.metadata.annotations.clone(),
        owner_references: observed.metadata.owner_references.clone(),
        ..Default::default()
    };
    d
}
