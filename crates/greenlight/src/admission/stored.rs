//! The object an update or delete starts from, read from the apiserver rather than taken from
//! the review. Stamps and protection checks rest on it, so a caller who reaches the server
//! directly cannot vouch for a change it made up: a review whose `oldObject` differs from the
//! stored object at the same resourceVersion is refused as forged, and one at another
//! resourceVersion (the apiserver retries a write that raced another) is judged on the stored
//! object.

use kube::api::{Api, ApiResource};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};

use crate::api::{Gate, Stage};

/// Replaces the review's `oldObject` of a Stage or Gate with the stored one; an error says
/// why the review cannot be trusted.
pub async fn trust_old(
    req: &mut AdmissionRequest<DynamicObject>,
    client: &kube::Client,
) -> Result<(), String> {
    if !matches!(req.operation, Operation::Update | Operation::Delete) {
        return Ok(());
    }
    let resource = match req.kind.kind.as_str() {
        "Stage" => ApiResource::erase::<Stage>(&()),
        "Gate" => ApiResource::erase::<Gate>(&()),
        _ => return Ok(()),
    };
    let namespace = req.namespace.clone().unwrap_or_default();
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &resource);
    let stored = match api.get_opt(&req.name).await {
        Ok(Some(stored)) => stored,
        Ok(None) => return Err(format!("{} {} is not stored", req.kind.kind, req.name)),
        Err(e) => return Err(format!("cannot read the stored {}: {e}", req.kind.kind)),
    };
    if let Some(claimed) = req.old_object.as_ref().filter(|c| forged(c, &stored)) {
        let version = claimed.metadata.resource_version.as_deref();
        return Err(format!(
            "the review's oldObject is not the stored {} at resourceVersion {}",
            req.kind.kind,
            version.unwrap_or("(none)")
        ));
    }
    req.old_object = Some(stored);
    Ok(())
}

/// Whether `claimed` says it is the stored version but differs in what checks read.
fn forged(claimed: &DynamicObject, stored: &DynamicObject) -> bool {
    let (c, s) = (&claimed.metadata, &stored.metadata);
    if c.resource_version != s.resource_version {
        return false;
    }
    claimed.data != stored.data
        || c.uid != s.uid
        || c.generation != s.generation
        || c.labels != s.labels
        || c.annotations != s.annotations
        || c.owner_references != s.owner_references
        || c.finalizers != s.finalizers
        || c.deletion_timestamp != s.deletion_timestamp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(rv: &str, spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Stage",
            "metadata": {"name": "prod", "resourceVersion": rv, "uid": "u1",
                         "labels": {"greenlight.dev/protected": "true"}},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn an_old_object_that_differs_from_the_stored_one_at_its_version_is_forged() {
        let stored = object("7", serde_json::json!({"protected": true}));
        assert!(!forged(&stored.clone(), &stored));
        let made_up = object("7", serde_json::json!({"protected": false}));
        assert!(forged(&made_up, &stored));
        let mut unlabelled = stored.clone();
        unlabelled.metadata.labels = None;
        assert!(forged(&unlabelled, &stored));
    }

    #[test]
    fn an_old_object_of_another_version_is_not_forged_but_replaced() {
        let stored = object("8", serde_json::json!({"protected": true}));
        let earlier = object("7", serde_json::json!({"protected": false}));
        assert!(!forged(&earlier, &stored));
    }
}
