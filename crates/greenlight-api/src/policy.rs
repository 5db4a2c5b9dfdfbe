//! Release policies: how one stage treats each release type (`feature`, `patch`, `hotfix`).
//! A policy changes only what it sets; the rest is the stage's own spec. Policies are part
//! of the Stage spec, so a protected stage protects them too.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::canary::{CanaryStep, FailurePolicy};
use super::patterns::{DURATION_PATTERN, NAME_PATTERN};
use super::release::ReleaseType;
use super::verify::OnTimeout;

/// The rules for releases of some types at this stage. The first policy that lists a
/// release's type applies to it; a type no policy lists takes the stage's own spec.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleasePolicy {
    /// Names the policy in the release's status, Events and audit trail.
    #[schemars(length(min = 1, max = 63), regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// The release types it applies to.
    #[schemars(length(min = 1, max = 3))]
    pub types: Vec<ReleaseType>,
    /// Replaces the stage's `gates` for these releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20), inner(length(min = 1, max = 253)))]
    pub gates: Option<Vec<String>>,
    /// Gates these releases must pass besides the stage's (or the replaced) `gates`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10), inner(length(min = 1, max = 253)))]
    pub add_gates: Vec<String>,
    /// Stages of the stage's `requires` these releases need not have passed. Only a stage
    /// named here is skipped, and each must be listed in `spec.requires`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(min = 1, max = 63), regex(pattern = NAME_PATTERN)))]
    pub skip_requires: Vec<String>,
    /// Canary steps and bake for these releases (canary strategy only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<PolicyCanary>,
    /// What a failure does to these releases, and how fast a failed one must be recovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<PolicyRollback>,
}

/// A policy's canary parameters; the traffic routing stays the stage's.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCanary {
    /// Replaces `spec.strategy.canary.steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 30))]
    pub steps: Option<Vec<CanaryStep>>,
    /// Replaces `spec.strategy.canary.bake`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub bake: Option<String>,
}

/// A policy's rollback rules.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRollback {
    /// Replaces `spec.strategy.canary.onFailure`: `rollback`, or `pause` for a person to decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "rollback_or_pause")]
    pub on_analysis_failure: Option<FailurePolicy>,
    /// Replaces `spec.verify.onTimeout`: `rollback`, or `hold` for a person to decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "rollback_or_hold")]
    pub on_verify_timeout: Option<OnTimeout>,
    /// How soon a failed rollout of these releases must be rolled back, from its start; the
    /// rollback's audit entry and Event say whether it was met.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub time_to_recover: Option<String>,
}

// An optional enum's generated schema lists `null` among its values, which a structural
// schema may not; these say the same without it.
fn rollback_or_pause(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "nullable": true, "enum": ["rollback", "pause"]})
}

fn rollback_or_hold(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "nullable": true, "enum": ["rollback", "hold"]})
}
