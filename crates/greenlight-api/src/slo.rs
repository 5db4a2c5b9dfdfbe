//! The `slo` gate's settings: a service level objective in the shape Pyrra and Sloth use (an
//! objective, a period, and a ratio of bad to all events), judged as an error budget before
//! a rollout and as multiwindow burn rates on the canary's own series during an analysis.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::server::PrometheusServer;

/// A duration that may start with whole days, as SLO tools write them: `30d`, `1d12h`, `5m`.
pub const SLO_DURATION_PATTERN: &str = r"^([0-9]+d)?([0-9]+(\.[0-9]+)?(ms|s|m|h))*$";

/// An objective such as `99.9` (percent): below 100, at most six decimals.
pub const OBJECTIVE_PATTERN: &str = r"^[0-9]{1,2}(\.[0-9]{1,6})?$";
/// A share of the budget such as `10%`.
pub const PERCENT_PATTERN: &str = r"^(100|[0-9]{1,2}(\.[0-9]{1,3})?)%$";

/// Outside an analysis the gate passes while at least `minBudgetRemaining` of the period's
/// error budget is left. In a canary analysis it fails when the canary burns budget faster
/// than a `burnRates` factor over both windows of a pair.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SloGate {
    /// The Prometheus, as a `prometheus` gate names it.
    #[serde(flatten)]
    pub server: PrometheusServer,
    /// The share of good events promised, in percent, e.g. "99.9": 100 minus it is the budget.
    #[schemars(regex(pattern = OBJECTIVE_PATTERN))]
    pub objective: String,
    /// What the budget is counted over: 1h..90d. Default 30d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32), regex(pattern = SLO_DURATION_PATTERN))]
    pub period: Option<String>,
    pub indicator: SloIndicator,
    /// Outside an analysis: the least share of the budget left for the gate to pass, e.g.
    /// "10%". Default "0%": it passes while any budget is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = PERCENT_PATTERN))]
    pub min_budget_remaining: Option<String>,
    /// In an analysis: the pairs of windows judged, at most 4. Default the SRE Workbook's
    /// 14.4× over 1h and 5m, and 6× over 6h and 30m, each scaled by `compressHourTo`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub burn_rates: Vec<BurnRate>,
    /// In an analysis: how long an hour of the burn-rate windows lasts, so that windows made
    /// for alerts fit a canary that runs for minutes: 1m..1h. Default 10m (1h/5m becomes
    /// 10m/50s). The factors are not scaled: only how long a burn must last shrinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32), regex(pattern = SLO_DURATION_PATTERN))]
    pub compress_hour_to: Option<String>,
    /// No scaled window is shorter than this: 5s..1h. Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32), regex(pattern = SLO_DURATION_PATTERN))]
    pub min_window: Option<String>,
    /// A window with fewer events than this is no data (inconclusive): 1..10⁹. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub min_events: Option<i64>,
}

/// What counts as a bad event: exactly one of `ratio` and `errorRatio`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SloIndicator {
    /// Counters of bad (or good) and of all events, as Pyrra's ratio indicator. Needed in an
    /// analysis, where the windows are the operator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<RatioIndicator>,
    /// A query giving the error ratio over the whole period, such as a Sloth or Pyrra
    /// recording rule (`slo:sli_error:ratio_rate30d{...}`). Only outside an analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_ratio: Option<ErrorRatioIndicator>,
}

/// Counters as plain selectors; the operator adds `increase(...[window])` and `sum`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RatioIndicator {
    /// Bad events. Exactly one of `errors` and `good`; no series counts as none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<EventSelector>,
    /// Good events; bad ones are `total` less these. No series is no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub good: Option<EventSelector>,
    pub total: EventSelector,
}

/// A counter's selector, e.g. `http_requests_total{job="web",code=~"5.."}`. In an analysis
/// it must hold `workload="{{workload}}"`, so that it reads the canary's own series.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventSelector {
    #[schemars(length(min = 1, max = 1024))]
    pub metric: String,
}

/// One PromQL query answering the period's error ratio (0..1) as a single series.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRatioIndicator {
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
}

/// A breach is a burn at least `factor` times the sustainable rate over both windows.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BurnRate {
    #[schemars(range(min = 1.0, max = 1000.0))]
    pub factor: f64,
    /// The long window before scaling: 1m..30d.
    #[schemars(length(min = 2, max = 32), regex(pattern = SLO_DURATION_PATTERN))]
    pub long: String,
    /// The short window before scaling, shorter than `long`. Default a twelfth of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32), regex(pattern = SLO_DURATION_PATTERN))]
    pub short: Option<String>,
}
