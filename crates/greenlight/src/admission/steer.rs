//! Who may steer a stage. A StageCommand is authorised per stage when it is stamped: `promote`
//! and `retry` need the `promote` verb on that Stage, or a place among the users or groups
//! of one of its approval gates; `abort` needs the `abort` verb; `emergency` and `closeReview`
//! need the `emergency` verb, which nothing else stands in for. The apiserver answers for the
//! verbs (SubjectAccessReview, as Kargo's custom `promote` verb does), so a Role can grant
//! steering of one stage by name. The answer is signed into the stamp; the controller refuses
//! a command whose stamp carries none, saying what was missing.

use kube::ResourceExt;
use kube::core::DynamicObject;
use kube::core::admission::AdmissionRequest;

use super::AdmissionState;
use crate::api::{CommandAction, GROUP, Stage};

/// The verb that lets a person promote or retry at a stage.
pub const PROMOTE: &str = "promote";
/// The verb that lets a person abort a stage's rollout.
pub const ABORT: &str = "abort";
/// The verb that lets a person ask for an emergency at a stage, and close its review.
pub const EMERGENCY: &str = "emergency";

/// The verb `action` needs.
pub fn verb(action: CommandAction) -> &'static str {
    match action {
        CommandAction::Abort => ABORT,
        CommandAction::Promote | CommandAction::Retry => PROMOTE,
        CommandAction::Emergency | CommandAction::CloseReview => EMERGENCY,
    }
}

/// Why the requester may take `action` at `stage`, or `None` when they may not.
pub async fn authorize(
    req: &AdmissionRequest<DynamicObject>,
    state: &AdmissionState,
    stage: &Stage,
    action: CommandAction,
) -> Option<String> {
    let user = req.user_info.username.clone().unwrap_or_default();
    let groups = req.user_info.groups.clone().unwrap_or_default();
    if matches!(action, CommandAction::Promote | CommandAction::Retry) {
        let gates = state
            .index
            .approval_gates(stage, rolled_out_type(state, stage));
        if let Some((gate, _)) = gates.iter().find(|(_, p)| p.admits(&user, &groups)) {
            return Some(format!("an approver at gate '{gate}'"));
        }
    }
    let verb = verb(action);
    let (namespace, name) = (stage.namespace().unwrap_or_default(), stage.name_any());
    match super::access::may(req, state, &namespace, &name, verb).await {
        Ok(true) => Some(format!("the '{verb}' verb on stages.{GROUP}")),
        Ok(false) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot ask the apiserver whether a command is allowed");
            None
        }
    }
}

/// The type of the release the stage rolls out (else its candidate): its approvers are
/// those of the gates that release met, under its policy.
fn rolled_out_type(state: &AdmissionState, stage: &Stage) -> crate::api::release::ReleaseType {
    let status = stage.status.as_ref();
    let rollout = status
        .and_then(|s| s.rollout.as_ref())
        .map(|r| r.release.clone());
    let release = rollout.or_else(|| status.and_then(|s| s.candidate_release.clone()));
    let namespace = stage.namespace().unwrap_or_default();
    release
        .and_then(|name| state.index.release(&namespace, &name))
        .map(|r| r.spec.release_type)
        .unwrap_or_default()
}

/// What a command without authorisation lacked, for its `Refused` message.
pub fn missing(action: CommandAction, stage: &str, user: &str) -> String {
    let verb = verb(action);
    match action {
        CommandAction::Abort | CommandAction::Emergency | CommandAction::CloseReview => format!(
            "'{}' needs the '{verb}' verb on stage '{stage}' (stages.{GROUP}), which {user} does not have",
            action.as_str()
        ),
        _ => format!(
            "'{}' needs the '{verb}' verb on stage '{stage}' (stages.{GROUP}) or a place among the users or groups of its approval gate; {user} has neither",
            action.as_str()
        ),
    }
}
