//! The mutating webhook: stamps the authenticated user, signed, into new Approvals
//! (`spec.approver`, bound to the Release object by `spec.releaseRef`), new Releases
//! (`spec.createdBy`), new StageCommands (`spec.requestedBy`, bound to the Stage object by
//! `spec.stageRef`) and every spec change of a Stage or Gate (`greenlight.dev/changed-by`).
//! Whatever the client wrote in those places is replaced.

use json_patch::Patch;
use kube::ResourceExt;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::AdmissionState;
use crate::api::change::{CHANGED_BY_ANNOTATION, SpecChange};
use crate::api::command::StageRef;
use crate::api::{ApprovalSpec, GateSpec, ReleaseRef, ReleaseSpec, StageCommandSpec, StageSpec};
use crate::identity::{IdentityKey, Subject, digest, release_digest};

/// Who asks, as the apiserver authenticated them.
struct Requester<'a> {
    namespace: &'a str,
    username: String,
    groups: Vec<String>,
    key: &'a IdentityKey,
}

impl Requester<'_> {
    fn stamp(&self, subject: &Subject) -> crate::api::Identity {
        self.key.stamp(subject, &self.username, &self.groups)
    }
}

/// The JSON patch that stamps the requester into the object, if it needs one.
pub async fn stamp(req: &AdmissionRequest<DynamicObject>, state: &AdmissionState) -> Option<Patch> {
    let object = req.object.as_ref()?;
    let who = Requester {
        namespace: req.namespace.as_deref().unwrap_or_default(),
        username: req.user_info.username.clone().unwrap_or_default(),
        groups: req.user_info.groups.clone().unwrap_or_default(),
        key: &state.index.identity,
    };
    let spec = object.data.get("spec");
    let ops = match (req.kind.kind.as_str(), &req.operation) {
        ("Approval", Operation::Create) => {
            // A spec that does not parse is left to the schema to refuse.
            let mut spec: ApprovalSpec = typed(spec?)?;
            spec.release_ref =
                state
                    .release(who.namespace, &spec.release)
                    .await
                    .map(|r| ReleaseRef {
                        uid: r.uid().unwrap_or_default(),
                        digest: release_digest(&r.spec),
                    });
            let subject = Subject::Approval {
                namespace: who.namespace,
                spec: &spec,
            };
            vec![
                json!({"op": "add", "path": "/spec/releaseRef", "value": spec.release_ref}),
                json!({"op": "add", "path": "/spec/approver", "value": who.stamp(&subject)}),
            ]
        }
        ("Release", Operation::Create) => {
            let spec: ReleaseSpec = typed(spec?)?;
            let subject = Subject::Release {
                namespace: who.namespace,
                spec: &spec,
            };
            vec![json!({"op": "add", "path": "/spec/createdBy", "value": who.stamp(&subject)})]
        }
        ("StageCommand", Operation::Create) => {
            let mut spec: StageCommandSpec = typed(spec?)?;
            spec.stage_ref = match state.stage(who.namespace, &spec.stage).await {
                Some(s) => Some(StageRef {
                    uid: s.uid().unwrap_or_default(),
                    generation: s.metadata.generation.unwrap_or_default(),
                    authorized_as: super::steer::authorize(req, state, &s, spec.action).await,
                }),
                None => None,
            };
            let subject = Subject::Command {
                namespace: who.namespace,
                spec: &spec,
            };
            vec![
                json!({"op": "add", "path": "/spec/stageRef", "value": spec.stage_ref}),
                json!({"op": "add", "path": "/spec/requestedBy", "value": who.stamp(&subject)}),
            ]
        }
        ("Stage", Operation::Create | Operation::Update) => {
            let mut ops = change_stamp::<StageSpec>(req, &who)?;
            ops.extend(super::label::ops(req, state).await);
            ops
        }
        ("Gate", Operation::Create | Operation::Update) => {
            let mut ops = change_stamp::<GateSpec>(req, &who)?;
            ops.extend(super::label::ops(req, state).await);
            ops
        }
        _ => vec![],
    };
    if ops.is_empty() {
        return None;
    }
    serde_json::from_value(Value::Array(ops)).ok()
}

fn typed<T: DeserializeOwned>(value: &Value) -> Option<T> {
    serde_json::from_value(value.clone()).ok()
}

/// Keeps `greenlight.dev/changed-by` true: a new stamp for a changed spec, the old one for an
/// edit that leaves the spec alone.
fn change_stamp<S>(req: &AdmissionRequest<DynamicObject>, who: &Requester) -> Option<Vec<Value>>
where
    S: DeserializeOwned + serde::Serialize,
{
    let object = req.object.as_ref()?;
    let old = req
        .old_object
        .as_ref()
        .filter(|_| req.operation == Operation::Update);
    let spec = object.data.get("spec").cloned().unwrap_or_default();
    let old_spec = old.and_then(|o| o.data.get("spec"));
    let present = object.annotations().get(CHANGED_BY_ANNOTATION);
    let wanted = if old_spec == Some(&spec) {
        old.and_then(|o| o.annotations().get(CHANGED_BY_ANNOTATION).cloned())
    } else {
        let typed_spec: S = typed(&spec)?;
        let fields = changed_fields(old_spec, &spec);
        let digest = digest(&typed_spec);
        let name = object.metadata.name.clone().unwrap_or_default();
        // A spec change raises a custom resource's generation by one; a creation makes 1.
        let (uid, generation) = match old {
            Some(o) => (
                o.metadata.uid.clone().unwrap_or_default(),
                o.metadata.generation.unwrap_or(0) + 1,
            ),
            None => (String::new(), 1),
        };
        let subject = Subject::Spec {
            kind: &req.kind.kind,
            namespace: who.namespace,
            name: &name,
            fields: &fields,
            digest: &digest,
            uid: &uid,
            generation,
        };
        let change = SpecChange {
            by: who.stamp(&subject),
            fields,
            digest,
            uid,
            generation,
        };
        serde_json::to_string(&change).ok()
    };
    if present == wanted.as_ref() {
        return Some(vec![]);
    }
    let path = format!(
        "/metadata/annotations/{}",
        CHANGED_BY_ANNOTATION.replace('/', "~1")
    );
    let mut ops = vec![];
    if object.metadata.annotations.is_none() {
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
    }
    ops.push(match wanted {
        Some(value) => json!({"op": "add", "path": path, "value": value}),
        None => json!({"op": "remove", "path": path}),
    });
    Some(ops)
}

/// Top-level spec fields whose value differs (every field of a new object).
pub fn changed_fields(old: Option<&Value>, new: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let old_map = old.and_then(Value::as_object).unwrap_or(&empty);
    let new_map = new.as_object().unwrap_or(&empty);
    let mut fields: Vec<String> = old_map.keys().chain(new_map.keys()).cloned().collect();
    fields.sort();
    fields.dedup();
    fields.retain(|f| old.is_none() || old_map.get(f) != new_map.get(f));
    fields
}

/// Who changed `spec` of the object, as verified from its `changed-by` stamp.
pub fn changed_by<S: serde::Serialize>(
    kind: &str,
    meta: &kube::core::ObjectMeta,
    spec: &S,
    key: &IdentityKey,
) -> Result<SpecChange, crate::identity::Unverified> {
    use crate::identity::Unverified;
    let change: SpecChange = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(CHANGED_BY_ANNOTATION))
        .and_then(|v| serde_json::from_str(v).ok())
        .ok_or(Unverified::Missing)?;
    let uid = meta.uid.as_deref().unwrap_or_default();
    let made_here = change.uid == uid || (change.uid.is_empty() && change.generation == 1);
    if change.digest != digest(spec) || !made_here || Some(change.generation) != meta.generation {
        return Err(Unverified::OtherSpec);
    }
    let subject = Subject::Spec {
        kind,
        namespace: meta.namespace.as_deref().unwrap_or_default(),
        name: meta.name.as_deref().unwrap_or_default(),
        fields: &change.fields,
        digest: &change.digest,
        uid: &change.uid,
        generation: change.generation,
    };
    key.verify(&subject, Some(&change.by))?;
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Unverified;
    use crate::index::Objects;

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

    fn state(objects: Objects) -> AdmissionState {
        super::super::test_state(objects, key())
    }

    fn release(uid: &str) -> crate::api::Release {
        serde_json::from_value(json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": "web-1", "namespace": "shop", "uid": uid},
            "spec": {"pipeline": "web", "version": "1", "artifacts": []}
        }))
        .unwrap()
    }

    fn approval_object() -> Value {
        json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Approval",
            "metadata": {"name": "a", "namespace": "shop"},
            "spec": {"release": "web-1", "stage": "prod", "decision": "approve",
                     "approver": {"username": "mallory", "signature": "00"},
                     "releaseRef": {"uid": "forged", "digest": "forged"}}
        })
    }

    #[tokio::test]
    async fn a_forged_approver_is_replaced_by_the_requesting_user_bound_to_the_release() {
        let state = state(Objects {
            releases: vec![release("uid-1")],
            ..Default::default()
        });
        let object = approval_object();
        let req = request("Approval", "CREATE", object.clone(), None);
        let patched = apply(&stamp(&req, &state).await.unwrap(), &object);
        let spec: ApprovalSpec = serde_json::from_value(patched["spec"].clone()).unwrap();
        let who = spec.approver.clone().unwrap();
        assert_eq!(who.username, "alice");
        assert_eq!(who.groups, ["release-managers", "system:authenticated"]);
        assert_eq!(spec.release_ref.as_ref().unwrap().uid, "uid-1");
        let subject = Subject::Approval {
            namespace: "shop",
            spec: &spec,
        };
        assert!(key().verify(&subject, spec.approver.as_ref()).is_ok());
    }

    #[tokio::test]
    async fn an_approval_for_a_release_not_published_yet_is_bound_to_none() {
        let state = state(Objects::default());
        let object = approval_object();
        let req = request("Approval", "CREATE", object.clone(), None);
        let patched = apply(&stamp(&req, &state).await.unwrap(), &object);
        assert!(patched["spec"]["releaseRef"].is_null(), "{patched}");
    }

    #[tokio::test]
    async fn a_new_release_records_its_creator() {
        let object = json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": "web-1", "namespace": "shop"},
            "spec": {"pipeline": "web", "version": "1",
                     "artifacts": [{"name": "app", "image": format!("r/a@sha256:{}", "0".repeat(64))}]}
        });
        let req = request("Release", "CREATE", object.clone(), None);
        let patched = apply(
            &stamp(&req, &state(Objects::default())).await.unwrap(),
            &object,
        );
        assert_eq!(patched["spec"]["createdBy"]["username"], "alice");
    }

    fn stage_object(gates: Value, annotations: Value) -> Value {
        json!({"apiVersion": "greenlight.dev/v1alpha1", "kind": "Stage",
               "metadata": {"name": "prod", "namespace": "shop", "uid": "stage-uid",
                            "generation": 3, "annotations": annotations},
               "spec": {"pipeline": "shop", "target": {"name": "web"}, "gates": gates}})
    }

    #[tokio::test]
    async fn a_command_is_stamped_with_its_requester_and_bound_to_the_stage_as_seen() {
        let stage: crate::api::Stage =
            serde_json::from_value(stage_object(json!([]), json!({}))).unwrap();
        let state = state(Objects {
            stages: vec![stage],
            ..Default::default()
        });
        let object = json!({"apiVersion": "greenlight.dev/v1alpha1", "kind": "StageCommand",
                            "metadata": {"name": "c", "namespace": "shop"},
                            "spec": {"stage": "prod", "action": "promote",
                                     "requestedBy": {"username": "mallory", "signature": "00"}}});
        let req = request("StageCommand", "CREATE", object.clone(), None);
        let patched = apply(&stamp(&req, &state).await.unwrap(), &object);
        let spec: StageCommandSpec = serde_json::from_value(patched["spec"].clone()).unwrap();
        assert_eq!(
            spec.stage_ref,
            Some(StageRef {
                uid: "stage-uid".into(),
                generation: 3,
                authorized_as: None,
            }),
            "alice has no verb (the apiserver did not say yes) and the stage no approval gate"
        );
        let subject = Subject::Command {
            namespace: "shop",
            spec: &spec,
        };
        let who = key().verify(&subject, spec.requested_by.as_ref()).unwrap();
        assert_eq!(who.username, "alice");
    }

    #[tokio::test]
    async fn a_promote_by_an_approver_of_the_stage_is_authorised_as_such() {
        let stage: crate::api::Stage =
            serde_json::from_value(stage_object(json!(["signoff"]), json!({}))).unwrap();
        let gate: crate::api::Gate = serde_json::from_value(json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Gate",
            "metadata": {"name": "signoff", "namespace": "shop"},
            "spec": {"type": "approval", "approval": {"groups": ["release-managers"]}}}))
        .unwrap();
        let state = state(Objects {
            stages: vec![stage],
            gates: vec![gate],
            ..Default::default()
        });
        let command = |action: &str| {
            json!({"apiVersion": "greenlight.dev/v1alpha1", "kind": "StageCommand",
                   "metadata": {"name": "c", "namespace": "shop"},
                   "spec": {"stage": "prod", "action": action}})
        };
        let authorised = |object: Value| {
            let req = request("StageCommand", "CREATE", object.clone(), None);
            let state = &state;
            async move {
                let patched = apply(&stamp(&req, state).await.unwrap(), &object);
                let spec: StageCommandSpec =
                    serde_json::from_value(patched["spec"].clone()).unwrap();
                spec.stage_ref.unwrap().authorized_as
            }
        };
        assert_eq!(
            authorised(command("promote")).await.as_deref(),
            Some("an approver at gate 'signoff'")
        );
        assert_eq!(
            authorised(command("abort")).await,
            None,
            "an abort needs the verb, whoever approves"
        );
    }

    #[tokio::test]
    async fn a_spec_change_is_stamped_and_an_annotation_only_edit_keeps_the_stamp() {
        let state = state(Objects::default());
        let old = stage_object(json!(["approvals"]), json!({}));
        let new = stage_object(json!([]), json!({}));
        let req = request("Stage", "UPDATE", new.clone(), Some(old));
        let stamped = apply(&stamp(&req, &state).await.unwrap(), &new);
        let mut typed: crate::api::Stage = serde_json::from_value(stamped.clone()).unwrap();
        // The apiserver raises the generation after admission.
        typed.metadata.generation = Some(4);
        let change = changed_by("Stage", &typed.metadata, &typed.spec, &key()).unwrap();
        assert_eq!(
            (change.by.username.as_str(), change.fields),
            ("alice", vec!["gates".to_string()])
        );

        // Someone edits the stamp away in an edit that leaves the spec alone: it comes back.
        let mut tampered = stamped.clone();
        tampered["metadata"]["annotations"] = json!({CHANGED_BY_ANNOTATION: "{}"});
        let req = request("Stage", "UPDATE", tampered.clone(), Some(stamped.clone()));
        let restored = apply(&stamp(&req, &state).await.unwrap(), &tampered);
        assert_eq!(
            restored["metadata"]["annotations"],
            stamped["metadata"]["annotations"]
        );

        // The same spec at a later generation (restored with its old stamp) does not verify.
        let mut restored = typed.clone();
        restored.metadata.generation = Some(6);
        assert!(changed_by("Stage", &restored.metadata, &restored.spec, &key()).is_err());

        // A spec changed behind the webhook's back does not match the stamp.
        let mut behind = typed.clone();
        behind.spec.gates = vec!["other".into()];
        assert_eq!(
            changed_by("Stage", &behind.metadata, &behind.spec, &key()).err(),
            Some(Unverified::OtherSpec)
        );
    }
}
