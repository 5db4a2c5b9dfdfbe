//! Traffic routers: how a canary's share of traffic is put into effect. One
//! [`TrafficRouter`] implementation per file; the state machine only asks for a weight.

pub mod gateway_api;
pub mod replica_ratio;

use futures::future::BoxFuture;
use kube::Client;

use crate::api::validation::Routing;

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
}

impl RouterError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::RouteNotFound(_) => "route_not_found",
            Self::NoPrimaryBackend { .. } => "no_primary_backend",
            Self::Kube(_) => "kube_api",
            Self::Malformed { .. } => "malformed_route",
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
}

pub trait TrafficRouter: Send + Sync {
    /// Replicas the canary workload runs while it has `weight` percent of traffic.
    fn canary_replicas(&self, total: i32, weight: i32) -> i32;

    /// Sends `weight` percent of traffic to the canary and the rest to the primary. Idempotent;
    /// writes nothing when the weights are already in place; true when it wrote.
    fn set_weight<'a>(
        &'a self,
        ctx: &'a RouterContext,
        weight: i32,
    ) -> BoxFuture<'a, Result<bool, RouterError>>;

    /// The canary weight in effect now, when the router can tell.
    fn weight_in_effect<'a>(
        &'a self,
        ctx: &'a RouterContext,
    ) -> BoxFuture<'a, Result<Option<i32>, RouterError>>;
}

pub fn for_routing(routing: &Routing) -> Box<dyn TrafficRouter> {
    match routing {
        Routing::ReplicaRatio => Box::new(replica_ratio::ReplicaRatio),
        Routing::GatewayApi { http_route } => Box::new(gateway_api::GatewayApi {
            route: http_route.clone(),
        }),
    }
}
