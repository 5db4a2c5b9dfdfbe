//! The leader Lease is the operator's alone. Anyone else who may write it (a tenant granted
//! Leases in the operator's namespace) could name a holder that never renews and stop every
//! pipeline; this webhook refuses their changes and deletions of a Lease the operator labelled
//! `greenlight.dev/lease`. It fails open, so a cluster where no replica answers can still
//! elect one; the operator waits out a holder that does not renew after its own lease
//! duration whatever happens here (see [`crate::leader`]).

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};

pub use crate::api::LEASE_LABEL;

/// Why the request may not change the Lease, if it may not.
pub fn guard(req: &AdmissionRequest<DynamicObject>, writer: Option<&str>) -> Option<String> {
    if req.kind.kind != "Lease" || !matches!(req.operation, Operation::Update | Operation::Delete) {
        return None;
    }
    let writer = writer?;
    let user = req.user_info.username.as_deref().unwrap_or_default();
    (user != writer).then(|| {
        format!(
            "Lease '{}' elects Greenlight's leader: only {writer} may change or delete it, not {user}",
            req.name
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(operation: &str, user: &str) -> AdmissionRequest<DynamicObject> {
        let review: kube::core::admission::AdmissionReview<DynamicObject> =
            serde_json::from_value(serde_json::json!({
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {
                    "uid": "u", "namespace": "greenlight-system", "name": "greenlight-controller",
                    "operation": operation,
                    "kind": {"group": "coordination.k8s.io", "version": "v1", "kind": "Lease"},
                    "resource": {"group": "coordination.k8s.io", "version": "v1", "resource": "leases"},
                    "userInfo": {"username": user},
                }
            }))
            .unwrap();
        review.try_into().unwrap()
    }

    #[test]
    fn only_the_operator_may_change_or_delete_its_lease() {
        let operator = Some("system:serviceaccount:greenlight-system:greenlight");
        let us = "system:serviceaccount:greenlight-system:greenlight";
        assert_eq!(guard(&request("UPDATE", us), operator), None);
        let refused = guard(&request("UPDATE", "erin"), operator).unwrap();
        assert!(refused.contains("not erin"), "{refused}");
        assert!(guard(&request("DELETE", "erin"), operator).is_some());
        assert_eq!(
            guard(&request("UPDATE", "erin"), None),
            None,
            "no writer named: RBAC alone"
        );
    }
}
