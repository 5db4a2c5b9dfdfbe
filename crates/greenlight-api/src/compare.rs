//! The `compare` gate's settings, and the judgement it records: the canary's measurements
//! against the primary's over the same window, by a rank test per metric and a weighted score.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::patterns::{DURATION_PATTERN, NAME_PATTERN};
use super::server::PrometheusServer;

/// Each metric's query is run as a range query for the canary and for the primary, giving
/// one sample per `step` over the last `lookback` for each; the samples are compared by a
/// Mann-Whitney U test and the metrics' classes are scored 0..100.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompareGate {
    /// The Prometheus, as a `prometheus` gate names it.
    #[serde(flatten)]
    pub server: PrometheusServer,
    /// How far back each measurement looks, ending now: 10s..6h. Default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub lookback: Option<String>,
    /// One sample per step; at least 1s, at least the widest range in any query (samples
    /// that share data are not independent), and at most 1,000 steps per lookback.
    /// Default 15s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub step: Option<String>,
    #[schemars(length(min = 1, max = 20))]
    pub metrics: Vec<CompareMetric>,
    /// Weights of metric groups, summing to at most 100; groups without one share the rest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub groups: Vec<MetricGroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<ScoreThresholds>,
}

/// One measured metric.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompareMetric {
    #[schemars(length(min = 1, max = 63), regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// PromQL giving one series; `{{workload}}` stands for the workload measured (the
    /// canary's, then the primary's) and must appear. The release's other facts may too.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    #[serde(default)]
    pub direction: MetricDirection,
    /// A critical metric that is not Pass decides the judgement alone.
    #[serde(default)]
    pub critical: bool,
    /// The canary/primary mean ratio at or above which an increase counts (≥ 1; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0, max = 1000.0))]
    pub allowed_increase: Option<f64>,
    /// The mean ratio at or below which a decrease counts (0..1; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub allowed_decrease: Option<f64>,
    #[serde(default)]
    pub nan_strategy: NanStrategy,
    /// Fewer samples on either side is no data (inconclusive): 3..1000, default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 3, max = 1000))]
    pub min_samples: Option<i32>,
    /// The metric's group; default its own name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = NAME_PATTERN))]
    pub group: Option<String>,
}

/// Which way a metric gets worse.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MetricDirection {
    #[default]
    Increase,
    Decrease,
    Either,
}

/// What a step without a number (NaN, or no sample) becomes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NanStrategy {
    /// Left out.
    #[default]
    Remove,
    /// Counted as 0 (a counter that is absent when nothing happened).
    Replace,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricGroup {
    #[schemars(length(min = 1, max = 63), regex(pattern = NAME_PATTERN))]
    pub name: String,
    #[schemars(range(min = 0.0, max = 100.0))]
    pub weight: f64,
}

/// The score at or above which the judgement passes (default 95), and below which it fails
/// (default 75); between them it is marginal, which counts as inconclusive.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScoreThresholds {
    #[schemars(range(min = 0.0, max = 100.0))]
    pub pass: f64,
    #[schemars(range(min = 0.0, max = 100.0))]
    pub marginal: f64,
}

/// The last judgement of a compare gate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    pub score: f64,
    pub verdict: ComparisonVerdict,
    /// One per metric.
    #[schemars(length(max = 20))]
    pub metrics: Vec<MetricComparison>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ComparisonVerdict {
    Pass,
    Marginal,
    Fail,
    NoData,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MetricClass {
    Pass,
    High,
    Low,
    NoData,
}

/// One metric's classification and the figures behind it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricComparison {
    #[schemars(length(max = 63))]
    pub metric: String,
    pub class: MetricClass,
    pub canary_samples: i32,
    pub baseline_samples: i32,
    /// The Hodges-Lehmann shift of the canary from the primary, and its 98% interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// Mean canary / mean primary; absent when the primary's mean is 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
}

/// The most compare judgements a release keeps at one stage, one per gate and analysis.
pub const MAX_COMPARISONS: usize = 20;

/// A compare gate's last judgement in one analysis of a rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateComparison {
    #[schemars(length(max = 253))]
    pub gate: String,
    /// `step-N`, the canary step whose analysis judged.
    #[schemars(length(max = 16))]
    pub scope: String,
    #[serde(flatten)]
    pub judgement: Comparison,
}
