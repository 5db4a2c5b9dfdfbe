//! The canary strategy of a Stage (`spec.strategy.canary`) and the progress of a canary
//! rollout (`status.rollout.canary`).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::patterns::DURATION_PATTERN;
use super::release::GateVerdict;

/// Shifts traffic to the new release step by step while analysis watches it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStrategy {
    /// Run in order; each step is exactly one of `setWeight`, `pause` or `analysis`.
    #[schemars(length(min = 1))]
    pub steps: Vec<CanaryStep>,
    /// Runs in the background for the whole rollout and through `bake`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
    /// The highest weight a step may set; reaching the end of the steps promotes. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_weight: Option<i32>,
    /// After promotion, how long the background analysis keeps watching; a breach then
    /// reverts the primary to the previous release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub bake: Option<String>,
    /// How traffic is split. Without it, the canary's replica count follows its weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_routing: Option<TrafficRouting>,
    /// What a failed analysis does: `rollback` (default) or `pause` for a person to decide.
    #[serde(default)]
    pub on_failure: FailurePolicy,
    /// How long the side traffic has left keeps its pods before it is scaled to zero, so
    /// requests a data plane still sends there (routes take effect with a delay) are served.
    /// Default 30s, at most 1h; only with a traffic router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub scale_down_delay: Option<String>,
    /// Gates run once the steps are done, before traffic moves to the new primary: each runs
    /// once (a Job against the canary), where an analysis measures again and again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(min = 1, max = 253)))]
    pub pre_promotion: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStep {
    /// Percent of traffic for the canary, 0..100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub set_weight: Option<i32>,
    /// Wait; without `duration`, until a StageCommand promotes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseStep>,
    /// Run these gates to completion before the next step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PauseStep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub duration: Option<String>,
}

/// Gates measured repeatedly.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    #[schemars(length(min = 1))]
    pub gates: Vec<String>,
    /// Time between two measurements of each gate. Default 1m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: Option<String>,
    /// Successful measurements each gate needs for a step analysis to pass. Default 1.
    /// Background analysis measures until the rollout ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub count: Option<i32>,
    /// Failed measurements that fail the analysis. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub failure_limit: Option<i32>,
    /// Whether `failureLimit` counts `consecutive` failures (default) or the `total`.
    #[serde(default)]
    pub failure_counting: FailureCounting,
    /// Consecutive inconclusive measurements (no data, NaN, too little traffic, Prometheus
    /// unreachable) that stop the rollout. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub inconclusive_limit: Option<i32>,
    /// What too many inconclusive measurements do: `pause` (default: never promote on
    /// missing data) or `rollback`.
    #[serde(default)]
    pub on_inconclusive: InconclusivePolicy,
    /// Wait this long after the analysis starts before the first measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub initial_delay: Option<String>,
    /// The longest a pause for want of data lasts; a pause resumes by itself as soon as the
    /// data is back and passes. Default 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub inconclusive_timeout: Option<String>,
    /// What `inconclusiveTimeout` does: `rollback` (default: take traffic off what cannot be
    /// judged) or `hold` (stay paused for a person, still resuming if the data returns).
    #[serde(default)]
    pub on_inconclusive_timeout: InconclusiveTimeoutPolicy,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InconclusiveTimeoutPolicy {
    #[default]
    Rollback,
    Hold,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailureCounting {
    #[default]
    Consecutive,
    Total,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    #[default]
    Rollback,
    Pause,
}

/// Like [`FailurePolicy`], but pausing by default: missing data never decides a rollout.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InconclusivePolicy {
    #[default]
    Pause,
    Rollback,
}

impl From<InconclusivePolicy> for FailurePolicy {
    fn from(p: InconclusivePolicy) -> Self {
        match p {
            InconclusivePolicy::Pause => FailurePolicy::Pause,
            InconclusivePolicy::Rollback => FailurePolicy::Rollback,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficRouting {
    /// Split traffic through the `backendRefs` weights of a Gateway API HTTPRoute.
    #[serde(
        default,
        rename = "gatewayAPI",
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_api: Option<GatewayApiRouting>,
    /// Switch all traffic at once through the selector of the `<target>-active` Service:
    /// blue-green's default, and for blue-green only (a canary's shares need a splitter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_switch: Option<ServiceSwitchRouting>,
}

/// Takes no settings: the Service is `<target>-active`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ServiceSwitchRouting {}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiRouting {
    /// HTTPRoute in the Stage's namespace whose rules send traffic to `<target>-primary`.
    #[schemars(length(min = 1))]
    pub http_route: String,
}

/// Where a canary rollout is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryProgress {
    pub phase: CanaryPhase,
    /// Index of the current step in `spec.strategy.canary.steps`.
    pub step: i32,
    #[schemars(with = "Time")]
    pub step_started_at: Timestamp,
    /// Percent of traffic the canary should get now.
    pub weight: i32,
    /// Why the rollout is paused, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_reason: Option<String>,
    /// When the bake period started, once promoted; moved on by the time an inconclusive
    /// pause took, which does not count as baking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Time>")]
    pub baking_since: Option<Timestamp>,
    /// Since when the rollout is paused for want of data, and which analysis paused it
    /// (`background` or `step-N`): it resumes by itself once that analysis passes again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Time>")]
    pub inconclusive_since: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive_scope: Option<String>,
    /// The phase an analysis paused, to go back to when it resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_from: Option<CanaryPhase>,
    /// Weights put back on the route after someone else changed them, since `driftSince`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drift_corrections: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Time>")]
    pub drift_since: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis: Vec<AnalysisProgress>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CanaryPhase {
    /// Waiting for the canary workload to become available.
    Starting,
    /// Working through the steps.
    Stepping,
    /// Stopped for a person: a pause step without duration, too many inconclusive
    /// measurements, or a failure with `onFailure: pause`.
    Paused,
    /// Updating the primary to the canary's template.
    Promoting,
    /// Promoted; background analysis keeps watching.
    Baking,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// Counters of one gate in one analysis.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisProgress {
    pub gate: String,
    /// `background`, or `step-N` for a step's analysis.
    pub scope: String,
    pub measurements: i32,
    pub successes: i32,
    pub failures: i32,
    pub consecutive_failures: i32,
    pub inconclusive: i32,
    pub consecutive_inconclusive: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Time>")]
    pub last_measured_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verdict: Option<GateVerdict>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<String>,
    /// The last measurements, oldest first (at most `MEASUREMENTS_KEPT`): what the dashboard
    /// charts against the gate's threshold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 60))]
    pub history: Vec<AnalysisPoint>,
}

/// How many measurements of one gate in one analysis the status keeps.
pub const MEASUREMENTS_KEPT: usize = 60;

/// One measurement of an analysis gate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisPoint {
    #[schemars(with = "Time")]
    pub at: Timestamp,
    pub verdict: GateVerdict,
    /// The measured value as the gate gave it, at most 64 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub value: Option<String>,
}
