//! Traffic routers: how a canary's share of traffic is put into effect. One
//! [`TrafficRouter`] implementation per file; the state machine only asks for a weight.

pub mod gateway_api;
pub mod replica_ratio;
pub mod service_switch;

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;

use crate::api::canary::TrafficRouting;

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("HTTPRoute '{0}' not found")]
    RouteNotFound(String),
    #[error("HTTPRoute '{route}' has no rule with a backendRef to Service '{service}'")]
    NoPrimaryBackend { route: String, service: String },
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("HTTPRoute '{route}' is malformed: {why}")]
    Malformed { route: String, why: String },
    #[error("Service '{0}' not found")]
    ServiceNotFound(String),
}

impl RouterError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::RouteNotFound(_) => "route_not_found",
            Self::NoPrimaryBackend { .. } => "no_primary_backend",
            Self::Kube(_) => "kube_api",
            Self::Malformed { .. } => "malformed_route",
            Self::ServiceNotFound(_) => "service_not_found",
        }
    }
}

/// What a router needs to know about the stage's workloads.
#[derive(Clone)]
pub struct RouterContext {
    pub client: Client,
    pub namespace: String,
    pub primary_service: String,
    pub canary_service: String,
    pub canary_deployment: String,
    /// The Service a blue-green stage's clients reach, switched between the two sides.
    pub active_service: String,
}

impl RouterContext {
    /// The names a stage's workloads and Services take from its target.
    pub fn for_stage(stage: &crate::api::Stage, client: Client) -> RouterContext {
        use crate::api::blue_green::active_name;
        use crate::workload::{canary_name, primary_name};
        let target = &stage.spec.target.name;
        RouterContext {
            client,
            namespace: kube::ResourceExt::namespace(stage).unwrap_or_default(),
            primary_service: primary_name(target),
            canary_service: canary_name(target),
            canary_deployment: canary_name(target),
            active_service: active_name(target),
        }
    }
}

pub trait TrafficRouter: Send + Sync {
    /// Replicas the canary workload runs while it has `weight` percent of traffic.
    fn canary_replicas(&self, total: i32, weight: i32) -> i32;

    /// Whether the canary's size carries the weight (its workload is then annotated with it).
    fn sizes_by_weight(&self) -> bool {
        false
    }

    /// Whether the canary's share reaches it through the canary's own Service, which then
    /// must select only the revision under test before the canary counts as serving.
    fn routes_through_canary_service(&self) -> bool {
        true
    }

    /// Sends `weight` percent of traffic to the canary and the rest to the primary. Idempotent;
    /// writes nothing when the weights are already in place; true when it wrote.
    fn set_weight<'a>(
        &'a self,
        ctx: &'a RouterContext,
        weight: i32,
    ) -> BoxFuture<'a, Result<bool, RouterError>>;

    /// Takes the canary out of what the router steers, for a Stage being deleted: all
    /// traffic to the primary and no reference to the canary left. Idempotent; true when it
    /// wrote. A route, or a routing API, that is gone leaves nothing to restore.
    fn restore_primary<'a>(
        &'a self,
        ctx: &'a RouterContext,
    ) -> BoxFuture<'a, Result<bool, RouterError>> {
        let _ = ctx;
        Box::pin(async { Ok(false) })
    }

    /// The canary weight in effect now, when the router can tell; `canary` is the canary
    /// Deployment as it is (`None` when there is none).
    fn weight_in_effect<'a>(
        &'a self,
        ctx: &'a RouterContext,
        canary: Option<&'a Deployment>,
    ) -> BoxFuture<'a, Result<Option<i32>, RouterError>>;

    /// Who other than Greenlight made the latest change to what the router reads, when it can
    /// tell (the field manager of a route's latest update); `None` when the latest change was
    /// Greenlight's own. A weight drifted only when someone else changed it.
    fn last_writer<'a>(&'a self, ctx: &'a RouterContext) -> BoxFuture<'a, Option<String>> {
        let _ = ctx;
        Box::pin(async { None })
    }
}

/// One kind of router, chosen by its field under the strategy's `trafficRouting`.
pub trait RouterKind: Sync {
    /// Its router when its field is set (`None` when not), or the field path below
    /// `trafficRouting` and what is wrong with it.
    fn router_for(
        &self,
        routing: &TrafficRouting,
    ) -> Option<Result<Box<dyn TrafficRouter>, SpecError>>;
}

/// A field of `trafficRouting` that a router cannot work with: its path and why.
pub type SpecError = (&'static str, String);

/// Every router with a field of its own. Adding one is its file, its field in
/// `TrafficRouting` with what the field must hold in greenlight-core's `routing_errors`, and a
/// line here. Without any, the replica ratio splits traffic.
static KINDS: &[&dyn RouterKind] = &[&gateway_api::Kind, &service_switch::Kind];

/// The router for a stage's `trafficRouting`, or what is wrong with it.
pub fn for_routing(routing: Option<&TrafficRouting>) -> Result<Box<dyn TrafficRouter>, SpecError> {
    let chosen = routing.and_then(|r| KINDS.iter().find_map(|k| k.router_for(r)));
    chosen.unwrap_or_else(|| Ok(Box::new(replica_ratio::ReplicaRatio)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::canary::GatewayApiRouting;
    use crate::validation::routing_errors;

    /// Validation, which is pure and lives in the core, and the routers judge `trafficRouting`
    /// alike: a spec validation accepts always gets its router, so the replica-ratio fallback
    /// is never taken for a router someone asked for.
    #[test]
    fn validation_and_the_routers_agree_on_each_traffic_routing() {
        for route in ["", " ", "\t", "web", "web-route"] {
            let routing = TrafficRouting {
                gateway_api: Some(GatewayApiRouting {
                    http_route: route.to_string(),
                }),
                ..Default::default()
            };
            let routed = for_routing(Some(&routing)).err().map(|(field, _)| field);
            let refused = routing_errors(Some(&routing));
            let refused = refused.first().map(|e| e.field.as_str());
            assert_eq!(
                routed.map(|f| format!("spec.strategy.canary.trafficRouting.{f}")),
                refused.map(str::to_string),
                "route {route:?}"
            );
        }
    }
}
