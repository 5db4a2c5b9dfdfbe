//! The blue-green strategy of a Stage (`spec.strategy.blueGreen`): the release comes up in
//! full beside the serving one, is checked through its preview Service, takes all traffic at
//! once, and is switched back at once while the previous release is still warm.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::canary::{Analysis, TrafficRouting};
use super::patterns::DURATION_PATTERN;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenStrategy {
    /// Gates run once each (a Job against the preview, `<target>-canary`) before the switch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(min = 1, max = 253)))]
    pub pre_promotion: Vec<String>,
    /// Measured on the new release's pods through the preview, after `prePromotion` and
    /// before the switch; a failure rolls back with no traffic moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis: Option<Analysis>,
    /// Switch once the checks pass (default). `false` waits for a promote StageCommand.
    #[serde(default = "yes")]
    pub auto_promotion: bool,
    /// With `autoPromotion`, wait this long after the checks pass before the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub auto_promotion_after: Option<String>,
    /// Measured after the switch while the previous release stays up, serving nothing: a
    /// failure switches all traffic back to it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis: Option<Analysis>,
    /// How long the previous release stays up after the post-promotion analysis passed (and
    /// the new release's spare stack after traffic left it). Default 30s, at most 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub scale_down_delay: Option<String>,
    /// How traffic is switched. Without it, through the selector of the `<target>-active`
    /// Service, which Greenlight owns and clients should be sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_routing: Option<TrafficRouting>,
}

impl Default for BlueGreenStrategy {
    fn default() -> Self {
        Self {
            pre_promotion: vec![],
            pre_promotion_analysis: None,
            auto_promotion: true,
            auto_promotion_after: None,
            post_promotion_analysis: None,
            scale_down_delay: None,
            traffic_routing: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// The Service that sends a blue-green stage's traffic to whichever side serves.
pub fn active_name(target: &str) -> String {
    format!("{target}-active")
}
