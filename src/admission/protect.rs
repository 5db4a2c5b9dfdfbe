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

/// Field errors refusing a change to a protected stage by someone without the verb.
pub async fn check(req: &AdmissionRequest<DynamicObject>, ctx: &AdmissionState) -> Vec<FieldError> {
    let Some(old) = req.old_object.as_ref() else {
        return vec![];
    };
    let namespace = req.namespace.clone().unwrap_or_default();
    let old_spec = old.data.get("spec");
    let new_spec = req.object.as_ref().and_then(|o| o.data.get("spec"));
    let fields = match (&req.operation, new_spec) {
        (Operation::Delete, _) => vec!["metadata.name".to_string()],
        (Operation::Update, Some(new)) => changed_fields(old_spec, new)
            .into_iter()
            .map(|f| format!("spec.{f}"))
            .collect(),
        _ => return vec![],
    };
    if fields.is_empty() {
        return vec![];
    }
    let name = old.name_any();
    let guarded: Vec<String> = match req.kind.kind.as_str() {
        "Stage" if old_spec.and_then(|s| s.get("protected")) == Some(&true.into()) => {
            vec![name.clone()]
        }
        "Gate" => ctx
            .index
            .stages_where(&namespace, |s| {
                s.spec.protected && s.spec.gates.contains(&name)
            })
            .iter()
            .map(|s| s.name_any())
            .collect(),
        _ => return vec![],
    };
    let mut errors = vec![];
    for stage in guarded {
        if let Err(why) = allowed(req, ctx, &namespace, &stage).await {
            let what = match req.kind.kind.as_str() {
                "Stage" => format!("stage '{stage}' is protected"),
                _ => format!("gate '{name}' guards protected stage '{stage}'"),
            };
            for field in &fields {
                errors.push(FieldError::new(field.clone(), format!("{what}: {why}")));
            }
        }
    }
    errors
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
