//! The mutating webhook: stamps the authenticated user, signed, into new Approvals
//! (`spec.approver`), new Releases (`spec.createdBy`) and steering annotations on Stages
//! (`greenlight.dev/requested-by`). Whatever the client wrote in those places is replaced.

use std::collections::BTreeMap;

use json_patch::Patch;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};
use serde_json::{Value, json};

use crate::api::{
    ABORT_ANNOTATION, ApprovalSpec, Identity, PROMOTE_ANNOTATION, REQUESTED_BY_ANNOTATION,
    RETRY_ANNOTATION, ReleaseSpec,
};
use crate::identity::{IdentityKey, Subject};

/// The JSON patch that stamps the requester into the object, if it needs one.
pub fn stamp(req: &AdmissionRequest<DynamicObject>, key: &IdentityKey) -> Option<Patch> {
    let object = req.object.as_ref()?;
    let namespace = req.namespace.as_deref().unwrap_or_default();
    let username = req.user_info.username.clone().unwrap_or_default();
    let groups = req.user_info.groups.clone().unwrap_or_default();
    let spec = object.data.get("spec");
    let ops = match (req.kind.kind.as_str(), &req.operation) {
        ("Approval", Operation::Create) => {
            // A spec that does not parse is left to the schema to refuse.
            let spec: ApprovalSpec = serde_json::from_value(spec?.clone()).ok()?;
            let subject = Subject::Approval {
                namespace,
                spec: &spec,
            };
            let identity = key.stamp(&subject, &username, &groups);
            vec![json!({"op": "add", "path": "/spec/approver", "value": identity})]
        }
        ("Release", Operation::Create) => {
            let spec: ReleaseSpec = serde_json::from_value(spec?.clone()).ok()?;
            let subject = Subject::Release {
                namespace,
                spec: &spec,
            };
            let identity = key.stamp(&subject, &username, &groups);
            vec![json!({"op": "add", "path": "/spec/createdBy", "value": identity})]
        }
        ("Stage", Operation::Create | Operation::Update) => {
            let stage = object.metadata.name.as_deref().unwrap_or_default();
            let annotations = object.metadata.annotations.clone().unwrap_or_default();
            let old = req
                .old_object
                .as_ref()
                .and_then(|o| o.metadata.annotations.clone())
                .unwrap_or_default();
            command_stamp(
                namespace,
                stage,
                &annotations,
                &old,
                key,
                &username,
                &groups,
            )
        }
        _ => vec![],
    };
    if ops.is_empty() {
        return None;
    }
    serde_json::from_value(Value::Array(ops)).ok()
}

/// The steering annotations present, as one canonical text: what a requester stamp vouches for.
pub fn command_text(annotations: &BTreeMap<String, String>) -> Option<String> {
    let parts: Vec<String> = [PROMOTE_ANNOTATION, ABORT_ANNOTATION, RETRY_ANNOTATION]
        .iter()
        .filter_map(|k| annotations.get(*k).map(|v| format!("{k}={v}")))
        .collect();
    (!parts.is_empty()).then(|| parts.join(","))
}

/// Keeps the requester annotation true: stamped for a new or changed command, carried over
/// for an unchanged one, removed when there is no command.
fn command_stamp(
    namespace: &str,
    stage: &str,
    annotations: &BTreeMap<String, String>,
    old: &BTreeMap<String, String>,
    key: &IdentityKey,
    username: &str,
    groups: &[String],
) -> Vec<Value> {
    let path = format!(
        "/metadata/annotations/{}",
        REQUESTED_BY_ANNOTATION.replace('/', "~1")
    );
    let present = annotations.get(REQUESTED_BY_ANNOTATION);
    let Some(command) = command_text(annotations) else {
        return match present {
            Some(_) => vec![json!({"op": "remove", "path": path})],
            None => vec![],
        };
    };
    let carried = (command_text(old).as_deref() == Some(command.as_str()))
        .then(|| old.get(REQUESTED_BY_ANNOTATION).cloned())
        .flatten();
    let wanted = carried.unwrap_or_else(|| {
        let subject = Subject::Command {
            namespace,
            stage,
            command: &command,
        };
        serde_json::to_string(&key.stamp(&subject, username, groups))
            .expect("an identity always serializes")
    });
    if present == Some(&wanted) {
        return vec![];
    }
    vec![json!({"op": "add", "path": path, "value": wanted})]
}

/// Who asked for the command now on the stage, as verified from its stamp.
pub fn requester(
    namespace: &str,
    stage: &str,
    annotations: &BTreeMap<String, String>,
    key: &IdentityKey,
) -> Result<String, crate::identity::Unverified> {
    let command = command_text(annotations).unwrap_or_default();
    let stamp: Option<Identity> = annotations
        .get(REQUESTED_BY_ANNOTATION)
        .and_then(|v| serde_json::from_str(v).ok());
    key.verify(
        &Subject::Command {
            namespace,
            stage,
            command: &command,
        },
        stamp.as_ref(),
    )
    .map(|who| who.username.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Unverified;

    fn request(
        kind: &str,
        operation: &str,
        object: Value,
        old: Option<Value>,
    ) -> AdmissionRequest<DynamicObject> {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "greenlight.dev", "version": "v1alpha1", "kind": kind},
                "resource": {"group": "greenlight.dev", "version": "v1alpha1", "resource": "x"},
                "namespace": "shop",
                "operation": operation,
                "userInfo": {"username": "alice", "groups": ["release-managers", "system:authenticated"]},
                "object": object,
                "oldObject": old,
            }
        });
        let review: kube::core::admission::AdmissionReview<DynamicObject> =
            serde_json::from_value(review).unwrap();
        review.try_into().unwrap()
    }

    fn apply(patch: &Patch, object: &Value) -> Value {
        let mut out = object.clone();
        json_patch::patch(&mut out, patch).unwrap();
        out
    }

    fn key() -> IdentityKey {
        IdentityKey::from_bytes(b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn a_forged_approver_is_replaced_by_the_requesting_user() {
        let object = json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Approval",
            "metadata": {"name": "a", "namespace": "shop"},
            "spec": {"release": "web-1", "stage": "prod", "decision": "approve",
                     "approver": {"username": "mallory", "signature": "00"}}
        });
        let req = request("Approval", "CREATE", object.clone(), None);
        let patched = apply(&stamp(&req, &key()).unwrap(), &object);
        let spec: ApprovalSpec = serde_json::from_value(patched["spec"].clone()).unwrap();
        let who = spec.approver.clone().unwrap();
        assert_eq!(who.username, "alice");
        assert_eq!(who.groups, ["release-managers", "system:authenticated"]);
        let subject = Subject::Approval {
            namespace: "shop",
            spec: &spec,
        };
        assert!(key().verify(&subject, spec.approver.as_ref()).is_ok());
    }

    #[test]
    fn a_new_release_records_its_creator() {
        let object = json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": "web-1", "namespace": "shop"},
            "spec": {"pipeline": "web", "version": "1",
                     "artifacts": [{"name": "app", "image": format!("r/a@sha256:{}", "0".repeat(64))}]}
        });
        let req = request("Release", "CREATE", object.clone(), None);
        let patched = apply(&stamp(&req, &key()).unwrap(), &object);
        assert_eq!(patched["spec"]["createdBy"]["username"], "alice");
    }

    #[test]
    fn a_steering_annotation_is_stamped_carried_over_and_cleared() {
        let stage = |annotations: Value| {
            json!({"apiVersion": "greenlight.dev/v1alpha1", "kind": "Stage",
                   "metadata": {"name": "prod", "namespace": "shop", "annotations": annotations},
                   "spec": {}})
        };
        let with_forgery = stage(
            json!({PROMOTE_ANNOTATION: "true", REQUESTED_BY_ANNOTATION: "{\"username\":\"mallory\"}"}),
        );
        let req = request(
            "Stage",
            "UPDATE",
            with_forgery.clone(),
            Some(stage(json!({}))),
        );
        let stamped = apply(&stamp(&req, &key()).unwrap(), &with_forgery);
        let annotations: BTreeMap<String, String> =
            serde_json::from_value(stamped["metadata"]["annotations"].clone()).unwrap();
        assert_eq!(
            requester("shop", "prod", &annotations, &key()).as_deref(),
            Ok("alice")
        );

        // An unrelated edit by someone else keeps alice's stamp.
        let req = request("Stage", "UPDATE", stamped.clone(), Some(stamped.clone()));
        assert!(stamp(&req, &key()).is_none());

        // The command is gone: so is the stamp.
        let cleared =
            stage(json!({REQUESTED_BY_ANNOTATION: annotations[REQUESTED_BY_ANNOTATION].clone()}));
        let req = request("Stage", "UPDATE", cleared.clone(), Some(stamped));
        let after = apply(&stamp(&req, &key()).unwrap(), &cleared);
        assert!(
            after["metadata"]["annotations"]
                .get(REQUESTED_BY_ANNOTATION)
                .is_none()
        );
    }

    #[test]
    fn a_stamp_for_another_command_does_not_vouch() {
        let mut annotations = BTreeMap::new();
        annotations.insert(RETRY_ANNOTATION.to_string(), "web-1".to_string());
        let subject = Subject::Command {
            namespace: "shop",
            stage: "prod",
            command: "greenlight.dev/promote=true",
        };
        let stamp = serde_json::to_string(&key().stamp(&subject, "alice", &[])).unwrap();
        annotations.insert(REQUESTED_BY_ANNOTATION.to_string(), stamp);
        assert_eq!(
            requester("shop", "prod", &annotations, &key()),
            Err(Unverified::BadSignature)
        );
    }
}
