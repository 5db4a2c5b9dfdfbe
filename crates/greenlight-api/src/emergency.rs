//! The emergency path: what a stage lets an emergency bypass, who must approve one, and the
//! request an `emergency` StageCommand makes. An emergency never bypasses its approvals, and
//! every rollout it lets through opens a review on the Release.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::patterns::{DURATION_PATTERN, NAME_PATTERN};

/// A stage's rules for emergencies (`spec.emergency`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmergencySpec {
    /// Who must approve an emergency here, as Approvals of the release at this stage. Never
    /// bypassed, and the requester's own approval never counts.
    pub approvals: EmergencyApprovals,
    /// What an approved emergency may skip. Nothing else is skipped.
    #[serde(default)]
    pub bypass: EmergencyBypass,
    /// When the review of an emergency rollout is due, from its start. Default: 5 working
    /// days (Saturdays and Sundays do not count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub review_within: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmergencyApprovals {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), inner(length(min = 1, max = 253)))]
    pub users: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(min = 1, max = 253)))]
    pub groups: Vec<String>,
    /// Distinct people, besides the requester. Default 2.
    #[serde(default = "two")]
    #[schemars(range(min = 1, max = 10))]
    pub required: i32,
}

fn two() -> i32 {
    2
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmergencyBypass {
    /// The stage's windows and blackouts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub windows: bool,
    /// Stages of `spec.requires` the release need not have passed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(min = 1, max = 63), regex(pattern = NAME_PATTERN)))]
    pub requires: Vec<String>,
    /// Gates of `spec.gates` (a soak, a change ticket) it need not pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(min = 1, max = 253)))]
    pub gates: Vec<String>,
}

/// An emergency someone asked for, as the stage keeps it until its rollout starts, and as
/// the rollout keeps it after.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmergencyRequest {
    #[schemars(length(max = 253))]
    pub release: String,
    /// Who asked, as the admission webhook verified them.
    #[schemars(length(max = 253))]
    pub requester: String,
    #[schemars(length(max = 1024))]
    pub reason: String,
    /// The incident or ticket it answers.
    #[schemars(length(max = 128))]
    pub reference: String,
    #[schemars(with = "Time")]
    pub since: Timestamp,
}

/// The name under which an emergency's approvals are asked for in a stage's gate list: not a
/// Gate's name (which cannot hold a colon), so no Gate can stand in for it.
pub fn approval_gate(stage: &str) -> String {
    format!("emergency:{stage}")
}
