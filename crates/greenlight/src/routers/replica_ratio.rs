//! Replica ratio: no mesh or gateway. The canary's pods join the Services that select the
//! target's labels, so its share of traffic is its share of the pods. The primary keeps its
//! full size; the canary gets `total × w / (100 − w)` replicas, rounded up.

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;

use super::{RouterContext, RouterError, TrafficRouter};
use crate::api::WEIGHT_ANNOTATION;

pub struct ReplicaRatio;

/// The canary's replicas at `weight`: enough that canary / (canary + total) ≈ weight.
pub fn replicas_for(total: i32, weight: i32) -> i32 {
    let total = i64::from(total.max(0));
    let weight = i64::from(weight.clamp(0, 100));
    if weight == 0 || total == 0 {
        return 0;
    }
    if weight == 100 {
        return total as i32;
    }
    let n = (total * weight + (100 - weight) - 1) / (100 - weight);
    n.clamp(1, total * 20) as i32
}

impl TrafficRouter for ReplicaRatio {
    fn canary_replicas(&self, total: i32, weight: i32) -> i32 {
        replicas_for(total, weight)
    }

    fn sizes_by_weight(&self) -> bool {
        true
    }

    /// The share goes through the user's own Service, which selects the template's labels.
    fn routes_through_canary_service(&self) -> bool {
        false
    }

    fn set_weight<'a>(
        &'a self,
        _ctx: &'a RouterContext,
        _weight: i32,
    ) -> BoxFuture<'a, Result<bool, RouterError>> {
        // The weight takes effect through the canary's replica count, applied with the workload.
        Box::pin(async { Ok(false) })
    }

    fn weight_in_effect<'a>(
        &'a self,
        _ctx: &'a RouterContext,
        canary: Option<&'a Deployment>,
    ) -> BoxFuture<'a, Result<Option<i32>, RouterError>> {
        Box::pin(async move {
            let Some(d) = canary else {
                return Ok(Some(0));
            };
            let view = crate::workload::observe(d);
            let weight = d
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(WEIGHT_ANNOTATION))
                .and_then(|w| w.parse().ok());
            // A weight is in effect once the canary runs the replicas for it.
            Ok(if view.available {
                weight.or(Some(0))
            } else {
                None
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_share_of_pods_approximates_its_weight() {
        assert_eq!(replicas_for(4, 0), 0);
        assert_eq!(replicas_for(4, 5), 1);
        assert_eq!(replicas_for(4, 20), 1);
        assert_eq!(replicas_for(4, 50), 4);
        assert_eq!(replicas_for(3, 25), 1);
        assert_eq!(replicas_for(4, 100), 4);
        for total in 1..20 {
            for w in 1..100 {
                let c = replicas_for(total, w);
                let share = f64::from(c) / f64::from(c + total) * 100.0;
                assert!(
                    c >= 1 && share + 1e-9 >= f64::from(w).min(95.0) || c == total * 20,
                    "total {total} weight {w}: {c} pods, {share:.1}%"
                );
            }
        }
    }
}
