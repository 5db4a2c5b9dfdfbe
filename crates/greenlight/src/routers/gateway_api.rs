//! Gateway API: the weights of the `<target>-primary` and `<target>-canary` backendRefs of an
//! HTTPRoute. The rules are re-applied exactly as read with only those weights changed, by
//! server-side apply under the operator's own field manager; nothing else is touched.

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams};
use serde_json::{Value, json};

use super::{RouterContext, RouterError, TrafficRouter};

pub const ROUTER_FIELD_MANAGER: &str = "greenlight-router";

pub struct GatewayApi {
    pub route: String,
}

impl GatewayApi {
    /// The route's rules as they are now.
    async fn rules(&self, api: &Api<DynamicObject>) -> Result<Vec<Value>, RouterError> {
        let route = api
            .get_opt(&self.route)
            .await?
            .ok_or_else(|| RouterError::RouteNotFound(self.route.clone()))?;
        Ok(route.data["spec"]["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Applies the route's rules under the router's own field manager.
    async fn apply_rules(
        &self,
        api: &Api<DynamicObject>,
        rules: Vec<Value>,
    ) -> Result<(), RouterError> {
        let body = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": self.route},
            "spec": {"rules": rules},
        });
        let params = PatchParams::apply(ROUTER_FIELD_MANAGER).force();
        api.patch(&self.route, &params, &Patch::Apply(body)).await?;
        Ok(())
    }
}

fn http_routes(ctx: &RouterContext) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    Api::namespaced_with(
        ctx.client.clone(),
        &ctx.namespace,
        &ApiResource::from_gvk(&gvk),
    )
}

/// `rules` with `edit` applied to the backendRefs (and the primary's place among them) of
/// each rule that sends to `primary`; `None` when none does.
fn edit_primary_rules(
    rules: &[Value],
    primary: &str,
    edit: impl Fn(&mut Vec<Value>, usize),
) -> Option<Vec<Value>> {
    let mut found = false;
    let rules = rules
        .iter()
        .map(|rule| {
            let mut rule = rule.clone();
            let refs = rule.get_mut("backendRefs").and_then(Value::as_array_mut);
            let at = refs.and_then(|refs| {
                let p = refs.iter().position(|r| r["name"] == primary)?;
                Some((refs, p))
            });
            if let Some((refs, p)) = at {
                found = true;
                edit(refs, p);
            }
            rule
        })
        .collect();
    found.then_some(rules)
}

/// The rules with the canary at `weight` percent; `None` when no rule sends to the primary.
pub fn reweight(rules: &[Value], primary: &str, canary: &str, weight: i32) -> Option<Vec<Value>> {
    edit_primary_rules(rules, primary, |refs, p| {
        refs[p]["weight"] = json!(100 - weight);
        match refs.iter().position(|r| r["name"] == canary) {
            Some(c) => refs[c]["weight"] = json!(weight),
            None => {
                let mut c = refs[p].clone();
                c["name"] = json!(canary);
                c["weight"] = json!(weight);
                refs.insert(p + 1, c);
            }
        }
    })
}

/// The rules with the canary's backendRefs gone and the primary at full weight; `None` when
/// no rule sends to the primary.
pub fn primary_only(rules: &[Value], primary: &str, canary: &str) -> Option<Vec<Value>> {
    edit_primary_rules(rules, primary, |refs, p| {
        refs[p]["weight"] = json!(100);
        refs.retain(|r| r["name"] != canary);
    })
}

/// The canary's weight in the first rule that routes to the primary.
pub fn canary_weight(rules: &[Value], primary: &str, canary: &str) -> Option<i32> {
    let refs = rules
        .iter()
        .filter_map(|r| r["backendRefs"].as_array())
        .find(|refs| refs.iter().any(|r| r["name"] == primary))?;
    let weight = |name: &str| {
        refs.iter()
            .find(|r| r["name"] == name)
            .map(|r| r["weight"].as_i64().unwrap_or(1))
    };
    let (p, c) = (weight(primary).unwrap_or(0), weight(canary).unwrap_or(0));
    if p + c == 0 {
        return Some(0);
    }
    Some(((c * 100) as f64 / (p + c) as f64).round() as i32)
}

impl TrafficRouter for GatewayApi {
    fn canary_replicas(&self, total: i32, weight: i32) -> i32 {
        // Traffic is split by the gateway, so the canary runs at full size while it has any.
        let _ = weight;
        total
    }

    fn set_weight<'a>(
        &'a self,
        ctx: &'a RouterContext,
        weight: i32,
    ) -> BoxFuture<'a, Result<bool, RouterError>> {
        Box::pin(async move {
            let api = http_routes(ctx);
            let rules = self.rules(&api).await?;
            let next = reweight(&rules, &ctx.primary_service, &ctx.canary_service, weight)
                .ok_or_else(|| RouterError::NoPrimaryBackend {
                    route: self.route.clone(),
                    service: ctx.primary_service.clone(),
                })?;
            if next == rules {
                return Ok(false);
            }
            self.apply_rules(&api, next).await?;
            Ok(true)
        })
    }

    fn restore_primary<'a>(
        &'a self,
        ctx: &'a RouterContext,
    ) -> BoxFuture<'a, Result<bool, RouterError>> {
        Box::pin(async move {
            let api = http_routes(ctx);
            let rules = match self.rules(&api).await {
                Ok(rules) => rules,
                // The route, or the Gateway API itself, is gone: no traffic to restore.
                Err(RouterError::RouteNotFound(_)) => return Ok(false),
                Err(RouterError::Kube(kube::Error::Api(e))) if e.code == 404 => return Ok(false),
                Err(e) => return Err(e),
            };
            let primary = &ctx.primary_service;
            let Some(next) = primary_only(&rules, primary, &ctx.canary_service) else {
                return Ok(false);
            };
            if next == rules {
                return Ok(false);
            }
            self.apply_rules(&api, next).await?;
            Ok(true)
        })
    }

    fn weight_in_effect<'a>(
        &'a self,
        ctx: &'a RouterContext,
        _canary: Option<&'a Deployment>,
    ) -> BoxFuture<'a, Result<Option<i32>, RouterError>> {
        Box::pin(async move {
            let rules = self.rules(&http_routes(ctx)).await?;
            Ok(canary_weight(
                &rules,
                &ctx.primary_service,
                &ctx.canary_service,
            ))
        })
    }

    fn last_writer<'a>(&'a self, ctx: &'a RouterContext) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            let route = http_routes(ctx).get_opt(&self.route).await.ok()??;
            latest_other_manager(&route.metadata, &[ROUTER_FIELD_MANAGER])
        })
    }
}

/// The field manager of an object's latest change that was none of `ours`.
pub(super) fn latest_other_manager(meta: &ObjectMeta, ours: &[&str]) -> Option<String> {
    let entries = meta.managed_fields.as_ref()?;
    entries
        .iter()
        .filter(|e| e.manager.as_deref().is_some_and(|m| !ours.contains(&m)))
        .filter(|e| e.subresource.as_deref().unwrap_or_default().is_empty())
        .max_by_key(|e| e.time.as_ref().map(|t| t.0))
        .and_then(|e| e.manager.clone())
}

/// The `gatewayAPI` router, as registered in [`super::KINDS`].
pub struct Kind;

impl super::RouterKind for Kind {
    fn router_for(
        &self,
        routing: &crate::api::canary::TrafficRouting,
    ) -> Option<Result<Box<dyn TrafficRouter>, super::SpecError>> {
        let spec = routing.gateway_api.as_ref()?;
        Some(match spec.http_route.trim() {
            "" => Err(("gatewayAPI.httpRoute", "must name an HTTPRoute".to_string())),
            route => Ok(Box::new(GatewayApi {
                route: route.to_string(),
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Vec<Value> {
        vec![
            json!({"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}], "backendRefs": [{"name": "web-primary", "port": 80}]}),
            json!({"backendRefs": [{"name": "static", "port": 80}]}),
        ]
    }

    #[test]
    fn reweighting_adds_the_canary_beside_the_primary_and_touches_nothing_else() {
        let next = reweight(&rules(), "web-primary", "web-canary", 25).unwrap();
        assert_eq!(next[0]["matches"], rules()[0]["matches"]);
        assert_eq!(
            next[0]["backendRefs"],
            json!([{"name": "web-primary", "port": 80, "weight": 75}, {"name": "web-canary", "port": 80, "weight": 25}])
        );
        assert_eq!(
            next[1],
            rules()[1],
            "rules without the primary are untouched"
        );
        assert_eq!(canary_weight(&next, "web-primary", "web-canary"), Some(25));
        let back = reweight(&next, "web-primary", "web-canary", 0).unwrap();
        assert_eq!(canary_weight(&back, "web-primary", "web-canary"), Some(0));
    }

    #[test]
    fn restoring_the_primary_drops_the_canary_and_gives_the_primary_all_traffic() {
        let split = reweight(&rules(), "web-primary", "web-canary", 30).unwrap();
        let back = primary_only(&split, "web-primary", "web-canary").unwrap();
        assert_eq!(
            back[0]["backendRefs"],
            json!([{"name": "web-primary", "port": 80, "weight": 100}])
        );
        assert_eq!(back[1], rules()[1]);
        assert!(primary_only(&rules()[1..], "web-primary", "web-canary").is_none());
    }

    #[test]
    fn a_route_without_the_primary_is_an_error() {
        assert!(reweight(&rules()[1..], "web-primary", "web-canary", 5).is_none());
    }

    #[test]
    fn unset_weights_count_as_one() {
        let r = vec![json!({"backendRefs": [{"name": "web-primary"}, {"name": "web-canary"}]})];
        assert_eq!(canary_weight(&r, "web-primary", "web-canary"), Some(50));
    }
}
