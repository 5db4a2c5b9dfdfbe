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
    /// The Job a `job` gate judged or started, and its uid, recorded with its result.
    pub job: Option<String>,
    pub job_uid: Option<String>,
    /// A `compare` gate's judgement, recorded with the analysis' counters.
    pub comparison: Option<greenlight_api::compare::Comparison>,
}

impl GateOutcome {
    pub fn new(verdict: GateVerdict, message: impl Into<String>) -> Self {
        Self {
            verdict,
            value: None,
            message: message.into(),
            recheck_at: None,
            job: None,
            job_uid: None,
            comparison: None,
        }
    }

    pub fn with_value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }

    pub fn with_job(mut self, job: impl Into<String>) -> Self {
        self.job = Some(job.into());
        self
    }

    pub fn with_job_uid(mut self, uid: Option<String>) -> Self {
        self.job_uid = uid;
        self
    }

    pub fn recheck_at(mut self, at: Timestamp) -> Self {
        self.recheck_at = Some(at);
        self
    }
}
