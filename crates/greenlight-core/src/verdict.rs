//! What one evaluation of a gate found: the only thing the machine knows of gates.

use greenlight_api::release::GateVerdict;
use jiff::Timestamp;

/// One evaluation of one gate.
#[derive(Debug, Clone, PartialEq)]
pub struct GateOutcome {
    pub verdict: GateVerdict,
    pub value: Option<String>,
    pub message: String,
    /// When the verdict can change at the earliest (soak end, window opening).
    pub recheck_at: Option<Timestamp>,
}

impl GateOutcome {
    pub fn new(verdict: GateVerdict, message: impl Into<String>) -> Self {
        Self {
            verdict,
            value: None,
            message: message.into(),
            recheck_at: None,
        }
    }

    pub fn with_value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }

    pub fn recheck_at(mut self, at: Timestamp) -> Self {
        self.recheck_at = Some(at);
        self
    }
}
