//! Protected stages: a spec change or deletion of a Stage marked `protected`, or a spec change
//! of a Gate such a stage names, needs the `edit-protected` verb on that stage besides the
//! usual write access, asked of the apiserver with a SubjectAccessReview for the requester.
//! So a release manager who may steer prod cannot switch off its approvals, and a platform
//! team grants the verb to the few who may.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::ResourceExt;
use kube::api::PostParams;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};

use super::AdmissionState;
use super::mutate::changed_fields;
use crate::api::GROUP;
use crate::validation::FieldError;

/// The verb a Role grants on `stages` to let someone change a protected stage.
pub const EDIT_PROTECTED: &str = "edit-protected";

/// Field errors refusing a change to a protected stage by someone without the verb. Run by
/// the mutating webhook before it stamps the change, so no change is ever stamped (and so
/// counted as verified) without this check having passed.
pub async fn check(req: &AdmissionRequest<DynamicObject>, ctx: &AdmissionState) -> Vec<FieldError> {
    let Some(fields) = changed(req) else {
        return vec![];
    };
    let namespace = req.namespace.clone().unwrap_or_default();
    let old = req.old_object.as_ref();
    let name = req.name.clone();
    let guarded: Vec<String> = match req.kind.kind.as_str() {
        "Stage" => {
            let protected = old.and_then(|o| o.data.get("spec")?.get("protected")?.as_bool());
            match protected {
                Some(true) => vec![name.clone()],
                _ => return vec![],
            }
        }
        "Gate" => match protected_stages_naming(&name, &namespace, ctx).await {
            Ok(stages) => stages,
            Err(why) => return vec![FieldError::new("metadata.name", why)],
        },
        _ => return vec![],
    };
    let answers = futures::future::join_all(
        guarded
            .iter()
            .map(|stage| allowed(req, ctx, &namespace, stage)),
    )
    .await;
    let mut errors = vec![];
    for (stage, answer) in guarded.iter().zip(answers) {
        let Err(why) = answer else { continue };
        let what = match req.kind.kind.as_str() {
            "Stage" => format!("stage '{stage}' is protected"),
            _ => format!("gate '{name}' guards protected stage '{stage}'"),
        };
        for field in &fields {
            errors.push(FieldError::new(field.clone(), format!("{what}: {why}")));
        }
    }
    errors
}

/// The fields a request changes (`metadata.name` for a deletion), or `None` when it changes
/// no spec, or is the namespace's own clean-up: a namespace must always be deletable.
fn changed(req: &AdmissionRequest<DynamicObject>) -> Option<Vec<String>> {
    let old_spec = req.old_object.as_ref().and_then(|o| o.data.get("spec"));
    let new_spec = req.object.as_ref().and_then(|o| o.data.get("spec"));
    let user = req.user_info.username.as_deref().unwrap_or_default();
    let fields = match (&req.operation, new_spec) {
        (Operation::Delete, _) if cluster_clean_up(user) => return None,
        (Operation::Delete, _) => vec!["metadata.name".to_string()],
        (Operation::Create | Operation::Update, Some(new)) => changed_fields(old_spec, new)
            .into_iter()
            .map(|f| format!("spec.{f}"))
            .collect(),
        _ => return None,
    };
    (!fields.is_empty()).then_some(fields)
}

/// The namespace and garbage collectors, which delete what a deleted namespace held.
fn cluster_clean_up(user: &str) -> bool {
    user == "system:kube-controller-manager"
        || user.starts_with("system:serviceaccount:kube-system:")
}

/// The protected stages of the namespace that name Gate `gate`, read from the API rather than
/// the index, which may not have synced yet or may watch one namespace only.
async fn protected_stages_naming(
    gate: &str,
    namespace: &str,
    ctx: &AdmissionState,
) -> Result<Vec<String>, String> {
    let stages = kube::Api::<crate::api::Stage>::namespaced(ctx.client.clone(), namespace)
        .list(&Default::default())
        .await
        .map_err(|e| format!("cannot tell whether a protected stage names this gate: {e}"))?;
    Ok(stages
        .items
        .iter()
        .filter(|s| s.spec.protected && s.spec.gates.iter().any(|g| g == gate))
        .map(|s| s.name_any())
        .collect())
}

/// Whether the requester may `edit-protected` the stage, or why not.
async fn allowed(
    req: &AdmissionRequest<DynamicObject>,
    ctx: &AdmissionState,
    namespace: &str,
    stage: &str,
) -> Result<(), String> {
    let user = req.user_info.username.clone().unwrap_or_default();
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.clone()),
            groups: req.user_info.groups.clone(),
            uid: req.user_info.uid.clone(),
            extra: req.user_info.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some(GROUP.into()),
                resource: Some("stages".into()),
                verb: Some(EDIT_PROTECTED.into()),
                namespace: Some(namespace.into()),
                name: Some(stage.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api = kube::Api::<SubjectAccessReview>::all(ctx.client.clone());
    match api.create(&PostParams::default(), &review).await {
        Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => Ok(()),
        Ok(_) => Err(format!(
            "changing it needs the '{EDIT_PROTECTED}' verb on stages.{GROUP}, which {user} does not have"
        )),
        Err(e) => Err(format!(
            "cannot check the '{EDIT_PROTECTED}' permission: {e}"
        )),
    }
}
