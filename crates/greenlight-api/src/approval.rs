//! `Approval`: one person's decision (approve or reject) on one release at one stage. Who made
//! it is not the client's to say: the admission webhook stamps the requesting user into
//! `spec.approver` and signs the stamp; the object is immutable once created.

// Each `printcolumn(...)` repeats `type_ = ...`, which this lint mistakes for a duplicate.
#![allow(clippy::duplicated_attributes)]

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::Condition;
use super::patterns::NAME_PATTERN;

/// Condition: the approver stamp is this operator's (True), or why not (False).
pub const VERIFIED: &str = "Verified";
/// How an Approval's message says it counts at its stage (`kubectl greenlight approve` reads it).
pub const COUNTS: &str = "counts toward gate";

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "greenlight.dev",
    version = "v1alpha1",
    kind = "Approval",
    namespaced,
    status = "ApprovalStatus",
    shortname = "appr",
    category = "greenlight",
    doc = "A person's decision to approve or reject a release at a stage. The approver is stamped by Greenlight's admission webhook; whatever a client writes there is replaced.",
    printcolumn(name = "Release", type_ = "string", json_path = ".spec.release"),
    printcolumn(name = "Stage", type_ = "string", json_path = ".spec.stage"),
    printcolumn(name = "Decision", type_ = "string", json_path = ".spec.decision"),
    printcolumn(
        name = "Approver",
        type_ = "string",
        json_path = ".spec.approver.username"
    ),
    printcolumn(
        name = "Verified",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Verified\")].status"
    ),
    printcolumn(
        name = "Comment",
        type_ = "string",
        json_path = ".spec.comment",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalSpec {
    /// Name of the Release in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub release: String,
    /// Name of the Stage the decision is for.
    #[schemars(length(min = 1, max = 63), regex(pattern = NAME_PATTERN))]
    pub stage: String,
    pub decision: Decision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub comment: Option<String>,
    /// Set by the admission webhook from the request's authenticated user; never trusted
    /// from the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<Identity>,
    /// Set by the admission webhook: the Release as it was when the decision was made. A
    /// decision counts only for that Release, not for a later one of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_ref: Option<ReleaseRef>,
}

/// One Release object: its uid and a SHA-256 digest of its spec.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseRef {
    #[schemars(length(max = 64))]
    pub uid: String,
    #[schemars(length(max = 64))]
    pub digest: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
        }
    }
}

/// An authenticated Kubernetes user as the apiserver saw them, with the operator's signature
/// over the stamp and the object it was stamped into.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub username: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// HMAC-SHA256 by the operator's identity key; a stamp without a valid one is ignored.
    pub signature: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
