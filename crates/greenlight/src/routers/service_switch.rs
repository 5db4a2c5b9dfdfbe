//! Service switch: blue-green without a mesh or a gateway. Clients reach the stage through
//! the `<target>-active` Service, whose selector names one side at a time: the primary's
//! workload at weight 0, the canary's workload and revision at 100. The endpoints controller
//! replaces the Service's Endpoints in one update, so no moment of them names both versions
//! (each node's proxy, and a client's kept-alive connection, follow on their own time); a
//! selector that names neither side reads as a split, so the machine puts its own back.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServicePort};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::gateway_api::{ROUTER_FIELD_MANAGER, latest_other_manager};
use super::{RouterContext, RouterError, TrafficRouter};
use crate::api::{FIELD_MANAGER, REVISION_LABEL, WORKLOAD_LABEL};
use crate::workload::{revision_of, service_ports};

pub struct ServiceSwitch;

/// The selector that sends everything to one side: the canary (its revision only, when its
/// pods carry one) at any weight above 0, else the primary.
pub fn selector_for(sides: Sides<'_>, weight: i32, revision: Option<&str>) -> Selector {
    let mut selector = BTreeMap::new();
    let workload = match weight > 0 {
        true => sides.1,
        false => sides.0,
    };
    selector.insert(WORKLOAD_LABEL.to_string(), workload.to_string());
    if let Some(revision) = revision.filter(|_| weight > 0) {
        selector.insert(REVISION_LABEL.to_string(), revision.to_string());
    }
    selector
}

pub type Selector = BTreeMap<String, String>;

/// The primary's and the canary's workload names (the primary's is its Service's too).
pub type Sides<'a> = (&'a str, &'a str);

fn sides(ctx: &RouterContext) -> Sides<'_> {
    (&ctx.primary_service, &ctx.canary_deployment)
}

/// The weight a selector puts into effect: 0 or 100, or 50 for one that names neither side.
pub fn weight_of(sides: Sides<'_>, selector: &Selector, revision: Option<&str>) -> i32 {
    if *selector == selector_for(sides, 0, None) {
        0
    } else if *selector == selector_for(sides, 100, revision) {
        100
    } else {
        50
    }
}

async fn active(ctx: &RouterContext) -> Result<Service, RouterError> {
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let name = &ctx.active_service;
    api.get_opt(name)
        .await?
        .ok_or_else(|| RouterError::ServiceNotFound(name.clone()))
}

fn selector(service: &Service) -> Selector {
    let spec = service.spec.as_ref();
    spec.and_then(|s| s.selector.clone()).unwrap_or_default()
}

/// The side a weight selects, as its Deployment is now: its revision (the canary's) and the
/// ports its pods serve on, which the Service takes with the selector.
async fn side(
    ctx: &RouterContext,
    weight: i32,
) -> Result<(Option<String>, Option<Vec<ServicePort>>), RouterError> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let name = match weight > 0 {
        true => &ctx.canary_deployment,
        false => &ctx.primary_service,
    };
    let found = api.get_opt(name).await?;
    let revision = found.as_ref().and_then(revision_of).filter(|_| weight > 0);
    let ports = found.as_ref().map(service_ports);
    Ok((revision.map(str::to_string), ports))
}

/// `want` with the node ports the Service has for the same ports: a NodePort or LoadBalancer
/// Service someone made of it keeps them across a switch (a merge patch replaces the list).
fn keep_node_ports(mut want: Vec<ServicePort>, has: Option<Vec<ServicePort>>) -> Vec<ServicePort> {
    for port in &mut want {
        let same = has
            .iter()
            .flatten()
            .find(|h| h.port == port.port && h.protocol == port.protocol);
        port.node_port = same.and_then(|h| h.node_port);
    }
    want
}

fn ports(service: &Service) -> Option<Vec<ServicePort>> {
    service.spec.as_ref().and_then(|s| s.ports.clone())
}

/// Ports as a Service compares them: what it listens on and where it sends.
fn same_ports(a: Option<&Vec<ServicePort>>, b: Option<&Vec<ServicePort>>) -> bool {
    let key = |p: Option<&Vec<ServicePort>>| {
        let ports = p.into_iter().flatten();
        ports
            .map(|p| (p.port, p.target_port.clone(), p.protocol.clone()))
            .collect::<Vec<_>>()
    };
    key(a) == key(b)
}

impl TrafficRouter for ServiceSwitch {
    /// Both sides run at full size: the switch moves all traffic at once.
    fn canary_replicas(&self, total: i32, _weight: i32) -> i32 {
        total
    }

    fn set_weight<'a>(
        &'a self,
        ctx: &'a RouterContext,
        weight: i32,
    ) -> BoxFuture<'a, Result<bool, RouterError>> {
        Box::pin(async move {
            let service = active(ctx).await?;
            let now = selector(&service);
            let (revision, want_ports) = side(ctx, weight).await?;
            let want = selector_for(sides(ctx), weight, revision.as_deref());
            // A side with no Deployment keeps the ports the Service has.
            let want_ports = want_ports
                .map(|w| keep_node_ports(w, ports(&service)))
                .or_else(|| ports(&service));
            if now == want && same_ports(ports(&service).as_ref(), want_ports.as_ref()) {
                return Ok(false);
            }
            // A merge patch replaces the keys it names; a key to drop is named as null.
            let mut patch: serde_json::Map<String, serde_json::Value> =
                now.keys().map(|k| (k.clone(), json!(null))).collect();
            patch.extend(want.iter().map(|(k, v)| (k.clone(), json!(v))));
            let body = json!({"spec": {"selector": patch, "ports": want_ports}});
            let api: Api<Service> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
            let params = PatchParams {
                field_manager: Some(ROUTER_FIELD_MANAGER.to_string()),
                ..PatchParams::default()
            };
            api.patch(&ctx.active_service, &params, &Patch::Merge(body))
                .await?;
            Ok(true)
        })
    }

    fn restore_primary<'a>(
        &'a self,
        ctx: &'a RouterContext,
    ) -> BoxFuture<'a, Result<bool, RouterError>> {
        Box::pin(async move {
            match self.set_weight(ctx, 0).await {
                Err(RouterError::ServiceNotFound(_)) => Ok(false),
                other => other,
            }
        })
    }

    fn weight_in_effect<'a>(
        &'a self,
        ctx: &'a RouterContext,
        canary: Option<&'a Deployment>,
    ) -> BoxFuture<'a, Result<Option<i32>, RouterError>> {
        Box::pin(async move {
            let selector = selector(&active(ctx).await?);
            let revision = canary.and_then(revision_of);
            Ok(Some(weight_of(sides(ctx), &selector, revision)))
        })
    }

    fn last_writer<'a>(&'a self, ctx: &'a RouterContext) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            let service = active(ctx).await.ok()?;
            latest_other_manager(&service.metadata, &[ROUTER_FIELD_MANAGER, FIELD_MANAGER])
        })
    }
}

/// The `serviceSwitch` router, as registered in [`super::KINDS`].
pub struct Kind;

impl super::RouterKind for Kind {
    fn router_for(
        &self,
        routing: &crate::api::canary::TrafficRouting,
    ) -> Option<Result<Box<dyn TrafficRouter>, super::SpecError>> {
        routing
            .service_switch
            .as_ref()
            .map(|_| Ok(Box::new(ServiceSwitch) as Box<dyn TrafficRouter>))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIDES: Sides<'static> = ("web-primary", "web-canary");

    #[test]
    fn each_weight_names_exactly_one_side() {
        let primary = selector_for(SIDES, 0, Some("abc"));
        assert_eq!(
            primary.len(),
            1,
            "the primary is selected by its workload alone"
        );
        assert_eq!(primary[WORKLOAD_LABEL], "web-primary");
        let canary = selector_for(SIDES, 100, Some("abc"));
        assert_eq!(canary[WORKLOAD_LABEL], "web-canary");
        assert_eq!(canary[REVISION_LABEL], "abc");
        assert_eq!(weight_of(SIDES, &primary, Some("abc")), 0);
        assert_eq!(weight_of(SIDES, &canary, Some("abc")), 100);
        // The canary's pods moved on to another revision: the switch is not in effect.
        assert_eq!(weight_of(SIDES, &canary, Some("def")), 50);
        let elsewhere = Selector::from([("app".to_string(), "web".to_string())]);
        assert_eq!(weight_of(SIDES, &elsewhere, None), 50);
    }
}
