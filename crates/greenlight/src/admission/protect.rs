//! Protected stages: a spec change or deletion of a Stage marked `protected` (turning it on or
//! off included), a change of its owner references or finalizers, a spec change of a Gate
//! such a stage names anywhere (gates and canary analysis), and another Stage taking its
//! target, each need the `edit-protected` verb on that stage besides the usual write access,
//! asked of the apiserver with a SubjectAccessReview for the requester.
//! So a release manager who may steer prod cannot switch off its approvals, and a platform
//! team grants the verb to the few who may.

use kube::ResourceExt;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};

use super::AdmissionState;
use super::label::protected_stages;
use super::mutate::changed_fields;
use crate::api::{GROUP, STAGE_FINALIZER as FINALIZER};
use crate::validation::FieldError;

/// The verb a Role grants on `stages` to let someone change a protected stage.
pub const EDIT_PROTECTED: &str = "edit-protected";

/// Field errors refusing a change to a protected stage by someone without the verb. Run by
/// the mutating webhook before it stamps the change, so no change is ever stamped (and so
/// counted as verified) without this check having passed.
pub async fn check(req: &AdmissionRequest<DynamicObject>, ctx: &AdmissionState) -> Vec<FieldError> {
    let user = req.user_info.username.as_deref().unwrap_or_default();
    if req.operation == Operation::Delete && cluster_clean_up(user) {
        return vec![];
    }
    let guarded = match req.kind.kind.as_str() {
        "Stage" => guarded_stage(req, ctx).await,
        "Gate" => guarded_gate(req, ctx).await,
        _ => return vec![],
    };
    let guarded = match guarded {
        Ok(guarded) => guarded,
        Err(why) => return vec![FieldError::new("metadata.name", why)],
    };
    let answers = futures::future::join_all(
        guarded
            .iter()
            .map(|g| allowed(req, ctx, &g.namespace, &g.stage)),
    )
    .await;
    let mut errors = vec![];
    for (g, answer) in guarded.iter().zip(answers) {
        let Err(why) = answer else { continue };
        for field in &g.fields {
            errors.push(FieldError::new(field.clone(), format!("{}: {why}", g.what)));
        }
    }
    errors
}

/// A protected stage a request touches, the fields by which it does, and how to say so.
struct Guarded {
    namespace: String,
    stage: String,
    fields: Vec<String>,
    what: String,
}

/// What a Stage request changes that protection covers: its spec, its protection itself (on
/// or off), its deletion, and the metadata by which it could be deleted or held (owner
/// references, finalizers); and a new target that a protected stage already serves.
async fn guarded_stage(
    req: &AdmissionRequest<DynamicObject>,
    ctx: &AdmissionState,
) -> Result<Vec<Guarded>, String> {
    let namespace = req.namespace.clone().unwrap_or_default();
    let name = req.name.clone();
    let old = req.old_object.as_ref();
    let new = req.object.as_ref();
    let protected = |o: Option<&DynamicObject>| {
        o.and_then(|o| o.data.get("spec")?.get("protected")?.as_bool())
            .unwrap_or(false)
    };
    let mut guarded = vec![];
    let fields = stage_changes(req);
    if (protected(old) || protected(new)) && !fields.is_empty() {
        guarded.push(Guarded {
            namespace: namespace.clone(),
            stage: name.clone(),
            fields,
            what: format!("stage '{name}' is protected"),
        });
    }
    let target = |o: Option<&DynamicObject>| {
        o.and_then(|o| o.data.get("spec")?.get("target")?.get("name")?.as_str())
            .map(String::from)
    };
    let new_target = target(new).filter(|t| target(old).as_ref() != Some(t));
    if let Some(new_target) = new_target {
        let stages = protected_stages(&namespace, ctx).await?;
        let serving = stages
            .iter()
            .filter(|s| s.name_any() != name && s.spec.target.name == new_target);
        for other in serving {
            let stage = other.name_any();
            guarded.push(Guarded {
                namespace: namespace.clone(),
                stage: stage.clone(),
                fields: vec!["spec.target.name".into()],
                what: format!(
                    "Deployment '{new_target}' is the target of protected stage '{stage}'"
                ),
            });
        }
    }
    Ok(guarded)
}

/// The protected stages that name this Gate anywhere (gates, canary analysis).
async fn guarded_gate(
    req: &AdmissionRequest<DynamicObject>,
    ctx: &AdmissionState,
) -> Result<Vec<Guarded>, String> {
    let Some(fields) = spec_changes(req) else {
        return Ok(vec![]);
    };
    let namespace = req.namespace.clone().unwrap_or_default();
    let gate = req.name.clone();
    let stages = protected_stages(&namespace, ctx).await?;
    Ok(stages
        .iter()
        .filter(|s| s.spec.named_gates().iter().any(|(_, g)| *g == gate))
        .map(|s| Guarded {
            namespace: namespace.clone(),
            stage: s.name_any(),
            fields: fields.clone(),
            what: format!("gate '{gate}' guards protected stage '{}'", s.name_any()),
        })
        .collect())
}

/// The spec fields a request changes (`metadata.name` for a deletion), or `None`.
fn spec_changes(req: &AdmissionRequest<DynamicObject>) -> Option<Vec<String>> {
    let old_spec = req.old_object.as_ref().and_then(|o| o.data.get("spec"));
    let new_spec = req.object.as_ref().and_then(|o| o.data.get("spec"));
    let fields = match (&req.operation, new_spec) {
        (Operation::Delete, _) => vec!["metadata.name".to_string()],
        (Operation::Create | Operation::Update, Some(new)) => changed_fields(old_spec, new)
            .into_iter()
            .map(|f| format!("spec.{f}"))
            .collect(),
        _ => return None,
    };
    (!fields.is_empty()).then_some(fields)
}

/// A Stage request's guarded changes: its spec fields, and the metadata by which the garbage
/// collector could delete it (owner references) or its deletion be held or hurried
/// (finalizers). The operator's own finalizer may come and go: it is added to hold a
/// deletion until traffic is safe, and removed once the stage is being deleted or routes
/// nothing.
fn stage_changes(req: &AdmissionRequest<DynamicObject>) -> Vec<String> {
    let mut fields = spec_changes(req).unwrap_or_default();
    let (Some(old), Some(new)) = (req.old_object.as_ref(), req.object.as_ref()) else {
        return fields;
    };
    if old.metadata.owner_references != new.metadata.owner_references {
        fields.push("metadata.ownerReferences".into());
    }
    let ours = |f: &String| f == FINALIZER;
    let others = |o: &DynamicObject| -> Vec<String> {
        o.finalizers()
            .iter()
            .filter(|f| !ours(f))
            .cloned()
            .collect()
    };
    let removed_ours = old.finalizers().iter().any(ours) && !new.finalizers().iter().any(ours);
    let may_go = old.metadata.deletion_timestamp.is_some() || !routes_traffic(new);
    if others(old) != others(new) || (removed_ours && !may_go) {
        fields.push("metadata.finalizers".into());
    }
    fields
}

/// Whether a Stage's canary shifts traffic through a router, which the finalizer restores.
fn routes_traffic(stage: &DynamicObject) -> bool {
    stage
        .data
        .get("spec")
        .and_then(|s| s.get("strategy")?.get("canary")?.get("trafficRouting"))
        .is_some_and(|r| !r.is_null())
}

/// The namespace and garbage collectors, which delete what a deleted namespace held.
fn cluster_clean_up(user: &str) -> bool {
    user == "system:kube-controller-manager"
        || user.starts_with("system:serviceaccount:kube-system:")
}

/// Whether the requester may `edit-protected` the stage, or why not.
async fn allowed(
    req: &AdmissionRequest<DynamicObject>,
    ctx: &AdmissionState,
    namespace: &str,
    stage: &str,
) -> Result<(), String> {
    let user = req.user_info.username.clone().unwrap_or_default();
    match super::access::may(req, ctx, namespace, stage, EDIT_PROTECTED).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "changing it needs the '{EDIT_PROTECTED}' verb on stages.{GROUP}, which {user} does not have"
        )),
        Err(e) => Err(format!(
            "cannot check the '{EDIT_PROTECTED}' permission: {e}"
        )),
    }
}
