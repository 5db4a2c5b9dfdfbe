//! What the apiserver says a requester may do to a Stage: a SubjectAccessReview for the
//! user and groups of the admission request, custom verbs (`edit-protected`, `promote`,
//! `abort`) included. Asked by the protection check and the steering check alike.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::core::DynamicObject;
use kube::core::admission::AdmissionRequest;

use super::AdmissionState;
use crate::api::GROUP;

/// Whether the requester may `verb` the Stage `stage`, as the apiserver answers a
/// SubjectAccessReview for them (custom verbs, such as `edit-protected` and `promote`,
/// included).
pub async fn may(
    req: &AdmissionRequest<DynamicObject>,
    ctx: &AdmissionState,
    namespace: &str,
    stage: &str,
    verb: &str,
) -> Result<bool, kube::Error> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: req.user_info.username.clone(),
            groups: req.user_info.groups.clone(),
            uid: req.user_info.uid.clone(),
            extra: req.user_info.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some(GROUP.into()),
                resource: Some("stages".into()),
                verb: Some(verb.into()),
                namespace: Some(namespace.into()),
                name: Some(stage.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api = kube::Api::<SubjectAccessReview>::all(ctx.client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}
