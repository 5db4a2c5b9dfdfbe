//! The typed events the machine emits: each says what happened (a reason for the Kubernetes
//! Event), whether it is a warning, and which audit action, if any, records it.

use crate::api::gate::GateList;
use crate::api::release::AuditAction;

/// Something the stage did or decided, in the words of its Kubernetes Event reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    RolloutStarted,
    RolloutSucceeded,
    RolloutFailed,
    RollbackCompleted,
    Superseded,
    NotPromoted,
    WaitingForRequires,
    WaitingForSchedule,
    BlockedByWindow,
    WaitingForGate,
    GateFailed,
    GateInconclusive,
    GateInvalid,
    IncompatibleWithTarget,
    RetryRequested,
    Resumed,
    PromotedByHand,
    WeightChanged,
    /// All traffic moved to the promoted primary.
    Promoted,
    AnalysisFailed,
    AnalysisInconclusive,
    /// An analysis paused for want of data has conclusive data again.
    AnalysisResumed,
    /// Someone else changed the canary's weight on the route; it was put back.
    TrafficDrift,
    /// A StageCommand that could not act here, with why.
    CommandRefused,
    /// The target's template was edited; the edit waits for a rollout of its own.
    TargetChanged,
    /// The gates passed and the pre-rollout checks start: the release will roll out here.
    RolloutUpcoming,
    /// A pre-rollout check failed: the release failed here before any workload changed.
    PreRolloutFailed,
    /// The release rolled out; its verification starts.
    VerificationStarted,
    /// Every verify gate passed: the release counts as succeeded here.
    Verified,
    /// The verification ran out of time with `onTimeout: hold`: a person decides.
    VerificationHeld,
    /// A gate of a check list passed.
    CheckPassed,
    /// A gate of a check list failed.
    CheckFailed,
    /// Someone asked for an emergency rollout; it waits for its approvals.
    EmergencyRequested,
    /// An abort cancelled an emergency that had not rolled out.
    EmergencyCancelled,
    /// One control an approved emergency skipped.
    Bypassed,
    /// An approved emergency rollout starts; its review is due at `review_due`.
    BreakGlass,
    /// A person closed the review of an emergency rollout, linking its post-mortem.
    ReviewClosed,
}

impl Transition {
    /// The Kubernetes Event reason.
    pub fn reason(self) -> &'static str {
        use Transition::*;
        match self {
            RolloutStarted => "RolloutStarted",
            RolloutSucceeded => "RolloutSucceeded",
            RolloutFailed => "RolloutFailed",
            RollbackCompleted => "RollbackCompleted",
            Superseded => "Superseded",
            NotPromoted => "NotPromoted",
            WaitingForRequires => "WaitingForRequires",
            WaitingForSchedule => "WaitingForSchedule",
            BlockedByWindow => "BlockedByWindow",
            WaitingForGate => "WaitingForGate",
            GateFailed => "GateFailed",
            GateInconclusive => "GateInconclusive",
            GateInvalid => "GateInvalid",
            IncompatibleWithTarget => "IncompatibleWithTarget",
            RetryRequested => "RetryRequested",
            Resumed => "Resumed",
            PromotedByHand => "PromotedByHand",
            WeightChanged => "WeightChanged",
            Promoted => "Promoted",
            AnalysisFailed => "AnalysisFailed",
            AnalysisInconclusive => "AnalysisInconclusive",
            AnalysisResumed => "AnalysisResumed",
            TrafficDrift => "TrafficDrift",
            CommandRefused => "CommandRefused",
            TargetChanged => "TargetChanged",
            RolloutUpcoming => "RolloutUpcoming",
            PreRolloutFailed => "PreRolloutFailed",
            VerificationStarted => "Verifying",
            Verified => "Verified",
            VerificationHeld => "VerificationHeld",
            CheckPassed => "CheckPassed",
            CheckFailed => "CheckFailed",
            EmergencyRequested => "EmergencyRequested",
            EmergencyCancelled => "EmergencyCancelled",
            Bypassed => "Bypassed",
            BreakGlass => "BreakGlass",
            ReviewClosed => "ReviewClosed",
        }
    }

    pub fn warning(self) -> bool {
        use Transition::*;
        matches!(
            self,
            RolloutFailed
                | RollbackCompleted
                | GateFailed
                | GateInconclusive
                | GateInvalid
                | IncompatibleWithTarget
                | AnalysisFailed
                | AnalysisInconclusive
                | TrafficDrift
                | CommandRefused
                | TargetChanged
                | PreRolloutFailed
                | VerificationHeld
                | CheckFailed
                | Bypassed
                | BreakGlass
        )
    }

    /// The audit action that records this transition: a person's when `by_person`.
    pub fn audit_action(self, by_person: bool) -> Option<AuditAction> {
        use Transition::*;
        Some(match (self, by_person) {
            (RolloutFailed, true) => AuditAction::AbortRequested,
            (Resumed | PromotedByHand, _) => AuditAction::PromoteRequested,
            (RetryRequested, _) => AuditAction::RetryRequested,
            (CommandRefused, _) => AuditAction::CommandRefused,
            (RolloutStarted, _) => AuditAction::RolloutStarted,
            (RolloutSucceeded, _) => AuditAction::Promoted,
            (RolloutFailed, false) => AuditAction::RolledBack,
            (RollbackCompleted, _) => AuditAction::RollbackCompleted,
            (PreRolloutFailed, true) => AuditAction::AbortRequested,
            (PreRolloutFailed, false) => AuditAction::PreRolloutFailed,
            (Verified, _) => AuditAction::Verified,
            (CheckPassed, _) => AuditAction::GatePassed,
            (CheckFailed, _) => AuditAction::GateFailed,
            (EmergencyRequested, _) => AuditAction::EmergencyRequested,
            (EmergencyCancelled, _) => AuditAction::EmergencyCancelled,
            (Bypassed, _) => AuditAction::Bypassed,
            (BreakGlass, _) => AuditAction::BreakGlass,
            (ReviewClosed, _) => AuditAction::ReviewClosed,
            _ => return None,
        })
    }
}

/// One event of a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageEvent {
    pub kind: Transition,
    pub note: String,
    /// The release the event also concerns, if any.
    pub release: Option<String>,
    /// Which attempt of that release at this stage (1, then one more per retry).
    pub attempt: u32,
    /// The canary step a person's promote acted at.
    pub step: Option<u32>,
    /// Caused by a person's StageCommand, not by the operator.
    pub by_person: bool,
    /// Why a rollout failed (on `RolloutFailed` only).
    pub cause: Option<FailureCause>,
    /// The templates of the rollout it concerns.
    pub pinned: Option<Pinned>,
    /// The check list and gate a check's verdict concerns.
    pub check: Option<(GateList, String)>,
    /// The release policy that applies to the release, and what it changes.
    pub policy: Option<String>,
    /// Who acted, when not the operator nor the command of this pass (an emergency's
    /// requester, on its `BreakGlass`).
    pub actor: Option<String>,
    /// The one control a `Bypassed` event is about.
    pub item: Option<String>,
    /// When the review a `BreakGlass` opens is due.
    pub review_due: Option<jiff::Timestamp>,
}

/// The pod templates a rollout pinned, for its audit entries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pinned {
    pub template: Option<String>,
    pub previous: Option<String>,
    /// A configuration change: who changed the target, and what.
    pub configuration: Option<String>,
    /// When the rollout started: two configuration rollouts between the same templates
    /// (an edit undone and made again) are told apart by it.
    pub started_at: Option<jiff::Timestamp>,
}

/// What failed a rollout: the reason, and the gate whose verdict did, if one did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureCause {
    pub reason: String,
    pub gate: Option<String>,
}

/// The gate an analysis failure message names (`gate 'NAME' failed: ...`, as the canary
/// analysis words it).
pub(super) fn failed_gate(message: &str) -> Option<String> {
    let rest = message.strip_prefix("gate '")?;
    let (gate, rest) = rest.split_once('\'')?;
    rest.starts_with(" failed:").then(|| gate.to_string())
}

impl StageEvent {
    /// A stable identity for the audit entry that records this event at `stage`, so a replay
    /// after a crash recognises the entry it already wrote.
    pub fn audit_id(&self, stage: &str, action: AuditAction) -> String {
        let release = self.release.as_deref().unwrap_or("-");
        let mut id = format!("{stage}/{release}/{action:?}/{}", self.attempt);
        if let Some(step) = self.step {
            id.push_str(&format!("/step-{step}"));
        }
        if let Some((list, gate)) = &self.check {
            id.push_str(&format!("/{}/{gate}", list.as_str()));
        }
        if let Some(item) = &self.item {
            id.push_str(&format!("/{}", item.replace(' ', "-")));
        }
        // A configuration rollout of a release is told apart from its first rollout (and from
        // other configuration changes) by its template.
        let configuration = self.pinned.as_ref().filter(|p| p.configuration.is_some());
        if let Some(p) = configuration {
            let short = p.template.as_deref().unwrap_or_default();
            let short = short.trim_start_matches("sha256:");
            let at = p.started_at.map_or(0, |t| t.as_second());
            id.push_str(&format!("/template-{}/{at}", &short[..short.len().min(12)]));
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abort_is_recorded_as_the_persons_and_a_deadline_as_the_operators() {
        let t = Transition::RolloutFailed;
        assert_eq!(t.audit_action(true), Some(AuditAction::AbortRequested));
        assert_eq!(t.audit_action(false), Some(AuditAction::RolledBack));
        assert_eq!(Transition::WeightChanged.audit_action(false), None);
    }

    #[test]
    fn the_gate_of_an_analysis_failure_is_read_from_its_message() {
        let m = "gate 'error-rate' failed: 0.2 > 0.01 (value 0.2)";
        assert_eq!(failed_gate(m), Some("error-rate".into()));
        assert_eq!(
            failed_gate("gate 'x' inconclusive: no data (value none)"),
            None
        );
        assert_eq!(failed_gate("primary not available"), None);
    }

    #[test]
    fn audit_ids_differ_by_attempt_and_step_and_not_by_time() {
        let event = StageEvent {
            kind: Transition::Resumed,
            note: "resumed".into(),
            release: Some("r1".into()),
            attempt: 1,
            step: Some(2),
            by_person: true,
            cause: None,
            pinned: None,
            check: None,
            policy: None,
            actor: None,
            item: None,
            review_due: None,
        };
        let action = AuditAction::PromoteRequested;
        assert_eq!(
            event.audit_id("prod", action),
            "prod/r1/PromoteRequested/1/step-2"
        );
        let retried = StageEvent {
            attempt: 2,
            ..event.clone()
        };
        assert_ne!(
            retried.audit_id("prod", action),
            event.audit_id("prod", action)
        );
    }
}
