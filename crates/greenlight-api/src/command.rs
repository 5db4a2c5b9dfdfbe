//! `StageCommand`: one person's request to promote, abort or retry at a stage. It needs no
//! write access to the Stage: creating one is the request. The admission webhook stamps the
//! requesting user into `spec.requestedBy`, binds the request to the Stage it was made for
//! (`spec.stageRef`: uid and generation) and signs both; the object is immutable once created.
//! The stage controller acts on each request once and says so in its status.

// Each `printcolumn(...)` repeats `type_ = ...`, which this lint mistakes for a duplicate.
#![allow(clippy::duplicated_attributes)]

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::approval::Identity;
use super::patterns::NAME_PATTERN;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "greenlight.dev",
    version = "v1alpha1",
    kind = "StageCommand",
    namespaced,
    status = "StageCommandStatus",
    shortname = "stagecmd",
    category = "greenlight",
    doc = "A request to promote, abort or retry at a stage. The requester is stamped by Greenlight's admission webhook; whatever a client writes there is replaced.",
    printcolumn(name = "Stage", type_ = "string", json_path = ".spec.stage"),
    printcolumn(name = "Action", type_ = "string", json_path = ".spec.action"),
    printcolumn(name = "Release", type_ = "string", json_path = ".spec.release"),
    printcolumn(
        name = "By",
        type_ = "string",
        json_path = ".spec.requestedBy.username"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct StageCommandSpec {
    /// Name of the Stage in this namespace.
    #[schemars(length(min = 1, max = 63), regex(pattern = NAME_PATTERN))]
    pub stage: String,
    pub action: CommandAction,
    /// The release to roll out again; required for `retry`, not allowed otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub comment: Option<String>,
    /// Why an emergency is needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub reason: Option<String>,
    /// The incident or ticket an emergency answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub reference: Option<String>,
    /// The post-mortem a `closeReview` links (a URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub post_mortem: Option<String>,
    /// Set by the admission webhook from the request's authenticated user; never trusted
    /// from the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<Identity>,
    /// Set by the admission webhook: the Stage as it was when the request was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_ref: Option<StageRef>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CommandAction {
    /// Skip the rest of the current canary step or analysis wait.
    Promote,
    /// Take traffic off the canary and roll back. Honoured whatever the Stage's generation.
    Abort,
    /// Roll out `release` again after it failed here.
    Retry,
    /// Roll `release` out past what `spec.emergency.bypass` allows, once the emergency's
    /// approvers agree; needs `reason` and `reference`.
    Emergency,
    /// Close the review of `release`'s emergency rollout here, linking `postMortem`.
    #[serde(rename = "closeReview")]
    CloseReview,
}

impl CommandAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Promote => "promote",
            Self::Abort => "abort",
            Self::Retry => "retry",
            Self::Emergency => "emergency",
            Self::CloseReview => "closeReview",
        }
    }
}

/// The one Stage object a request was made for.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageRef {
    #[schemars(length(max = 64))]
    pub uid: String,
    pub generation: i64,
    /// Set by the admission webhook: why the requester may steer this stage (the `promote` or
    /// `abort` verb on it, or a place among its approval gate's users or groups); absent when
    /// they may not, and the command is then refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub authorized_as: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageCommandStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<CommandPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Time>")]
    pub handled_at: Option<Timestamp>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CommandPhase {
    /// The stage acted on it.
    Applied,
    /// It was not acted upon; the message says why.
    Refused,
    /// An abort requested later in the same moment took its place.
    Superseded,
}
