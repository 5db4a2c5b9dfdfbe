//! What a stage checks once a release runs there (`spec.verify`), and what a verification
//! that runs out of time does.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::patterns::DURATION_PATTERN;

/// The checks run on a release once it runs here.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verify {
    #[schemars(length(min = 1, max = 20), inner(length(min = 1, max = 253)))]
    pub gates: Vec<String>,
    /// How long verification may take, at most 6h. Default 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: Option<String>,
    /// What a verification that runs out of time does: `rollback` (the default), or `hold`,
    /// which keeps the release and waits for a person's promote or abort.
    #[serde(default)]
    pub on_timeout: OnTimeout,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    #[default]
    Rollback,
    Hold,
}
