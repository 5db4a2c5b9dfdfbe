//! The decision being drafted: a stage's next status, release entries, workloads, traffic
//! and events, with the steps every rollout shares (recording entries and events, finishing,
//! rolling back, holding). The rolling and canary strategies build on it.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::events::{FailureCause, Pinned, StageEvent, Transition};
use super::types::{
    Command, DesiredPrimary, Due, GateReport, MAX_REQUEUE, Outcome, ReleaseView, StageInput,
};
use crate::api::conditions::{Condition, Health, kstatus};
use crate::api::gate::GateList;
use crate::api::release::{
    GateResultStatus, GateVerdict, ReleaseStageStatus, StagePhaseForRelease as RP,
};
use crate::api::stage::{
    ActiveRollout, RolloutDirection, RolloutOutcome, RolloutRecord, StagePhase, StageStatus,
};
use crate::validation::StagePlan;
use crate::verdict::GateOutcome;

pub(super) struct Draft<'a> {
    pub(super) input: &'a StageInput<'a>,
    /// The plan for the release in question: its policy's, or the stage's own.
    pub(super) plan: &'a StagePlan,
    pub(super) status: StageStatus,
    pub(super) updates: BTreeMap<String, ReleaseStageStatus>,
    pub(super) primary: Option<DesiredPrimary>,
    pub(super) events: Vec<StageEvent>,
    pub(super) wake_at: Vec<Timestamp>,
    pub(super) health: (Health, &'static str, String),
    pub(super) passed_gates: Option<Vec<GateResultStatus>>,
    pub(super) canary: Option<DesiredPrimary>,
    pub(super) weight: Option<i32>,
    pub(super) scale_weight: Option<i32>,
    pub(super) due: Vec<Due>,
    /// The person's command was acted upon (or refused with an event).
    pub(super) command_taken: bool,
    /// The person's command waits for a later pass.
    pub(super) command_deferred: bool,
    /// A check list whose gates must be evaluated before the decision can be made.
    /// A check list to evaluate before deciding: the list, since when this run of it runs,
    /// and its gates.
    pub(super) checks_due: Option<(crate::api::gate::GateList, jiff::Timestamp, Vec<String>)>,
}

impl<'a> Draft<'a> {
    pub(super) fn new(input: &'a StageInput<'a>) -> Self {
        let rollout = input.status.rollout.as_ref();
        let policy = rollout.and_then(|r| r.policy.as_deref());
        let policy = policy.and_then(|name| input.plan.policy_named(name));
        let emergency = rollout.filter(|r| r.emergency.is_some()).and_then(|r| {
            let release = input.releases.iter().find(|v| v.name == r.release)?;
            input
                .plan
                .for_type(release.release_type)
                .emergency
                .as_deref()
        });
        let plan = match (emergency, policy) {
            (Some(e), _) => &e.plan,
            (None, Some(p)) => &p.plan,
            (None, None) => input.plan,
        };
        Self {
            input,
            plan,
            status: input.status.clone(),
            updates: BTreeMap::new(),
            primary: None,
            events: Vec::new(),
            wake_at: Vec::new(),
            health: (Health::Ready, "Idle", String::new()),
            passed_gates: None,
            canary: None,
            weight: None,
            scale_weight: None,
            due: Vec::new(),
            command_taken: false,
            command_deferred: false,
            checks_due: None,
        }
    }

    pub(super) fn release(&self, name: &str) -> Option<&'a ReleaseView> {
        self.input.releases.iter().find(|r| r.name == name)
    }

    /// The rollout's release on the rollout's template: what the workload running it must
    /// be built from.
    pub(super) fn desired_for(&self, rollout: &ActiveRollout) -> Option<DesiredPrimary> {
        let artifacts = self.release(&rollout.release)?.artifacts.clone();
        Some(DesiredPrimary::Release {
            name: rollout.release.clone(),
            artifacts,
            template: rollout.template.clone(),
        })
    }

    /// The release and template that ran before the rollout: where a rollback goes.
    pub(super) fn previous_of(&self, rollout: &ActiveRollout) -> Option<DesiredPrimary> {
        let name = rollout.previous_release.clone()?;
        Some(DesiredPrimary::Release {
            name,
            artifacts: rollout.previous_artifacts.clone(),
            template: rollout.previous_template.clone(),
        })
    }

    /// Whether the release is the subject of a configuration rollout here: its entry, final
    /// already, is left alone, and the rollout's progress is the stage's alone.
    fn configuring(&self, name: &str) -> bool {
        let rollout = self
            .status
            .rollout
            .as_ref()
            .or(self.input.status.rollout.as_ref());
        rollout.is_some_and(|r| r.configuration && r.release == name)
    }

    pub(super) fn entry(&self, name: &str) -> Option<&ReleaseStageStatus> {
        self.updates.get(name).or_else(|| {
            self.release(name)
                .and_then(|r| r.stages.get(self.input.name))
        })
    }

    /// Records a release's progress here, keeping timestamps and gate results it already has.
    /// True when its phase or reason changed.
    pub(super) fn set_entry(
        &mut self,
        name: &str,
        phase: RP,
        reason: &str,
        message: String,
    ) -> bool {
        if self.configuring(name) {
            return false;
        }
        let now = self.input.now;
        let previous = self.entry(name).cloned();
        let mut next = previous
            .clone()
            .unwrap_or_else(|| ReleaseStageStatus::new(phase));
        next.phase = phase;
        next.reason = Some(reason.to_string());
        next.message = Some(message);
        next.policy = self.policy_summary(name);
        if phase == RP::Progressing && next.started_at.is_none() {
            next.started_at = Some(now);
        }
        if phase.is_final() && next.finished_at.is_none() {
            next.finished_at = Some(now);
        }
        let moved = previous
            .as_ref()
            .is_none_or(|p| (p.phase, p.reason.as_deref()) != (phase, Some(reason)));
        if previous.as_ref() != Some(&next) {
            self.updates.insert(name.to_string(), next);
        }
        moved
    }

    /// A release held here or handed over (superseded, never promoted), announced when it moves
    /// into that state; rollout transitions announce themselves.
    pub(super) fn settle_entry(
        &mut self,
        name: &str,
        phase: RP,
        kind: Transition,
        message: String,
    ) {
        let note = format!("{}: {message}", self.version_of(name));
        if self.set_entry(name, phase, kind.reason(), message) {
            self.event(kind, note, Some(name));
        }
    }

    pub(super) fn version_of(&self, release: &str) -> String {
        self.release(release)
            .map_or_else(|| release.to_string(), |r| r.version.clone())
    }

    pub(super) fn event(&mut self, kind: Transition, note: String, release: Option<&str>) {
        self.event_at(kind, note, release, None);
    }

    /// An event, with the canary step a person's promote acted at.
    pub(super) fn event_at(
        &mut self,
        kind: Transition,
        note: String,
        release: Option<&str>,
        step: Option<u32>,
    ) {
        let attempt = release
            .and_then(|r| self.entry(r))
            .and_then(|e| e.attempt)
            .unwrap_or(1);
        let by_person = match kind {
            Transition::Resumed | Transition::PromotedByHand | Transition::RetryRequested => true,
            Transition::CommandRefused => true,
            Transition::EmergencyRequested | Transition::EmergencyCancelled => true,
            Transition::ReviewClosed => true,
            Transition::RolloutFailed | Transition::PreRolloutFailed => {
                self.input.command == Some(Command::Abort)
            }
            _ => false,
        };
        if by_person {
            self.command_taken = true;
        }
        let pinned = self.pinned_facts(release);
        let policy = release.and_then(|r| self.policy_summary(r));
        self.events.push(StageEvent {
            kind,
            note,
            release: release.map(str::to_string),
            attempt,
            step,
            by_person,
            cause: None,
            pinned,
            check: None,
            policy,
            actor: None,
            item: None,
            review_due: None,
        });
    }

    /// What the release policy that applies to this release here changes, if one applies.
    pub(super) fn policy_summary(&self, release: &str) -> Option<String> {
        let release = self.release(release)?;
        let policy = self.input.plan.policy_for(release.release_type)?;
        Some(policy.summary.clone())
    }

    /// The templates of the rollout an event about `release` concerns, if one is under way
    /// (or just finished) for it.
    fn pinned_facts(&self, release: Option<&str>) -> Option<Pinned> {
        let rollout = self
            .status
            .rollout
            .as_ref()
            .or(self.input.status.rollout.as_ref())
            .filter(|r| Some(r.release.as_str()) == release)?;
        let configuration = rollout.configuration.then(|| {
            let change = self.status.target_change.as_ref();
            change.map_or_else(String::new, |c| {
                format!("{} changed {}", c.changed_by, c.fields.join(", "))
            })
        });
        Some(Pinned {
            template: rollout.template.clone(),
            previous: rollout.previous_template.clone(),
            configuration,
            started_at: Some(rollout.started_at),
        })
    }

    /// A command that did nothing is refused with an event that says why.
    fn refuse_unused_command(&mut self) {
        let Some(command) = self.input.command.clone() else {
            return;
        };
        if self.command_taken {
            return;
        }
        let name = self.input.name;
        let before = self.input.status;
        // The rollback may have finished in this very pass: the retry waits one more.
        let rolling_back = self.status.rollout.as_ref().or(before.rollout.as_ref());
        if let (Command::Retry(r), Some(rollout)) = (&command, rolling_back) {
            let failed = self.entry(r).is_some_and(|e| e.phase == RP::Failed);
            if failed && rollout.release == *r && rollout.direction == RolloutDirection::Rollback {
                // Asked as soon as the failure showed: it waits for the rollback to finish.
                self.command_deferred = true;
                return;
            }
        }
        let why = match (&command, before.rollout.as_ref()) {
            (Command::Retry(r), _) => format!(
                "retry: release '{r}' has not failed at stage '{name}'; only a failed release can be retried"
            ),
            (Command::Promote, None) => {
                format!("promote: stage '{name}' has no rollout in progress")
            }
            (Command::Abort, None) => {
                format!("abort: stage '{name}' has no rollout in progress")
            }
            (Command::Emergency(e), _) => self.emergency_refusal(e),
            (Command::CloseReview { release, by, .. }, _) => match self.release(release) {
                Some(r) if r.review_open.as_deref() == Some(by.as_str()) => format!(
                    "closeReview: {by} asked for the emergency of '{release}' and may not close its review; someone else closes it"
                ),
                _ => {
                    format!("closeReview: release '{release}' has no open review at stage '{name}'")
                }
            },
            (Command::Promote, Some(r)) if r.canary.is_none() => format!(
                "promote: the rolling rollout of {} has no steps to skip",
                r.version
            ),
            (_, Some(r)) => format!(
                "{}: the rollout of {} is past the point where it applies ({:?})",
                command.as_str(),
                r.version,
                before.phase.unwrap_or(StagePhase::Idle)
            ),
        };
        let release = match &command {
            Command::Retry(r) if self.release(r).is_some() => Some(r.clone()),
            Command::CloseReview { release, .. } if self.release(release).is_some() => {
                Some(release.clone())
            }
            _ => before
                .rollout
                .as_ref()
                .map(|r| r.release.clone())
                .or_else(|| before.current_release.clone()),
        };
        self.event(Transition::CommandRefused, why, release.as_deref());
    }

    /// The release runs here and every check has passed: it succeeded at this stage.
    pub(super) fn complete_forward(&mut self, rollout: &ActiveRollout) {
        let now = self.input.now;
        let secs = now.duration_since(rollout.started_at).as_secs();
        self.set_entry(
            &rollout.release,
            RP::Succeeded,
            "RolledOut",
            format!("available after {secs}s"),
        );
        self.record(rollout, RolloutOutcome::Succeeded, None);
        self.status.current_release = Some(rollout.release.clone());
        self.status.current_version = Some(rollout.version.clone());
        self.event(
            Transition::RolloutSucceeded,
            format!("{} is available after {secs}s", rollout.what()),
            Some(&rollout.release),
        );
        self.status.rollout = None;
        if rollout.template.is_some() {
            self.status.template = rollout.template.clone();
        }
        if self.status.target_change.as_ref().map(|c| &c.digest) == rollout.template.as_ref() {
            self.status.target_change = None;
        }
        // The next candidate, if any, is looked at on the next pass.
        self.status.phase = Some(StagePhase::Idle);
        self.status.message = Some(format!("running {}", rollout.version));
        self.health = (
            Health::Ready,
            "RolledOut",
            format!("running {}", rollout.version),
        );
        self.wake_at.push(now);
    }

    pub(super) fn start_rollback(
        &mut self,
        rollout: &ActiveRollout,
        reason: &'static str,
        message: String,
    ) {
        self.set_entry(&rollout.release, RP::Failed, reason, message.clone());
        let mut next = rollout.clone();
        next.direction = RolloutDirection::Rollback;
        next.reason = Some(format!("{reason}: {message}"));
        let to = rollout
            .previous_version
            .clone()
            .unwrap_or_else(|| "nothing (scale to zero)".into());
        self.event(
            Transition::RolloutFailed,
            format!("{}: {message}; rolling back to {to}", rollout.version),
            Some(&rollout.release),
        );
        if let Some(event) = self.events.last_mut() {
            event.cause = Some(FailureCause {
                reason: reason.to_string(),
                gate: super::events::failed_gate(&message),
            });
        }
        self.status.rollout = Some(next.clone());
        self.status.phase = Some(StagePhase::RollingBack);
        self.status.message = Some(format!(
            "{} failed ({reason}); rolling back to {to}",
            rollout.version
        ));
        self.health = (
            Health::Progressing,
            "RollingBack",
            format!("{} failed: {message}", rollout.version),
        );
        self.primary = Some(self.previous_of(&next).unwrap_or(DesiredPrimary::Empty));
        self.wake_at.push(self.input.now);
    }

    pub(super) fn finish_rollback(&mut self, rollout: &ActiveRollout) {
        self.record(rollout, RolloutOutcome::RolledBack, rollout.reason.clone());
        self.status.current_release = rollout.previous_release.clone();
        self.status.current_version = rollout.previous_version.clone();
        let to = rollout
            .previous_version
            .clone()
            .unwrap_or_else(|| "nothing".into());
        let recovery = self.recovery(rollout);
        self.event(
            Transition::RollbackCompleted,
            format!("{} was rolled back; running {to}{recovery}", rollout.what()),
            Some(&rollout.release),
        );
        self.status.rollout = None;
        self.status.template = rollout.previous_template.clone();
        self.fail_target_change(rollout);
        self.status.phase = Some(StagePhase::Failed);
        let why = rollout.reason.clone().unwrap_or_default();
        self.status.message = Some(format!(
            "{} rolled back ({why}); running {to}",
            rollout.version
        ));
        self.health = (
            Health::Stalled,
            "RolledBack",
            format!("{} failed and was rolled back: {why}", rollout.version),
        );
        self.wake_at.push(self.input.now);
    }

    /// How long the failed rollout affected the stage, against its policy's `timeToRecover`.
    fn recovery(&self, rollout: &ActiveRollout) -> String {
        let Some(target) = self.plan.time_to_recover else {
            return String::new();
        };
        let took = self
            .input
            .now
            .duration_since(rollout.started_at)
            .as_secs()
            .max(0);
        let verdict = match took as u64 <= target.as_secs() {
            true => "met",
            false => "MISSED",
        };
        format!(
            "; recovered {took}s after the rollout started: time-to-recover target of {}s {verdict}",
            target.as_secs()
        )
    }

    /// An edit whose rollout failed (alone, or carried by a release) is not tried again until
    /// the target changes once more.
    pub(super) fn fail_target_change(&mut self, rollout: &ActiveRollout) {
        if let Some(change) = self.status.target_change.as_mut()
            && Some(&change.digest) == rollout.template.as_ref()
        {
            change.failed = true;
        }
    }

    pub(super) fn record(
        &mut self,
        rollout: &ActiveRollout,
        outcome: RolloutOutcome,
        reason: Option<String>,
    ) {
        let now = self.input.now;
        self.status.history.insert(
            0,
            RolloutRecord {
                release: rollout.release.clone(),
                version: rollout.version.clone(),
                outcome,
                started_at: rollout.started_at,
                finished_at: now,
                duration_seconds: now.duration_since(rollout.started_at).as_secs(),
                reason,
                template: rollout.template.clone(),
                configuration: rollout.configuration,
            },
        );
        self.status.history.truncate(self.plan.history_limit);
    }

    /// Each named gate's result in `report` (a gate after the first that did not pass is
    /// `Skipped`), keeping the time since which a result has not changed, and the first gate
    /// that did not pass.
    pub(super) fn gate_results(
        &self,
        names: &[String],
        report: &GateReport,
        previous: &[GateResultStatus],
        list: Option<GateList>,
    ) -> (Vec<GateResultStatus>, Option<(String, GateOutcome)>) {
        let now = self.input.now;
        let mut gates = Vec::new();
        let mut blocking = None;
        for name in names {
            let result = report
                .results
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, o)| o);
            let (verdict, value, message) = match result {
                Some(o) => (o.verdict, o.value.clone(), o.message.clone()),
                None => (
                    GateVerdict::Skipped,
                    None,
                    "not evaluated: an earlier gate did not pass".into(),
                ),
            };
            // A Job once started stays on record even while the gate is not asked.
            let earlier = previous.iter().find(|g| &g.name == name);
            let job = result.and_then(|o| o.job.clone());
            let job_uid = match (&job, earlier) {
                (Some(j), Some(e)) if e.job.as_ref() == Some(j) && e.job_uid.is_some() => {
                    e.job_uid.clone()
                }
                _ => result.and_then(|o| o.job_uid.clone()),
            };
            let (job, job_uid) = match job {
                Some(job) => (Some(job), job_uid),
                None => (
                    earlier.and_then(|g| g.job.clone()),
                    earlier.and_then(|g| g.job_uid.clone()),
                ),
            };
            if let Some(o) = result.filter(|o| o.verdict != GateVerdict::Passed) {
                blocking.get_or_insert((name.clone(), o.clone()));
            }
            let since = previous
                .iter()
                .find(|g| {
                    &g.name == name
                        && g.result == verdict
                        && g.value == value
                        && g.message == message
                })
                .map_or(now, |g| g.since);
            gates.push(GateResultStatus {
                name: name.clone(),
                result: verdict,
                value,
                message,
                since,
                list,
                job,
                job_uid,
            });
        }
        (gates, blocking)
    }

    pub(super) fn attach_gates(&mut self, release: &str, gates: Vec<GateResultStatus>) {
        if let Some(mut entry) = self.entry(release).cloned()
            && entry.gates != gates
        {
            entry.gates = gates;
            self.updates.insert(release.to_string(), entry);
        }
    }

    pub(super) fn hold(&mut self, candidate: &ReleaseView, kind: Transition, message: String) {
        let reason = kind.reason();
        self.settle_entry(&candidate.name, RP::Waiting, kind, message.clone());
        self.status.phase = Some(StagePhase::Waiting);
        self.status.message = Some(format!("{} waits: {message}", candidate.version));
        let running = self.status.current_version.clone();
        self.health = match running {
            Some(v) => (
                Health::Ready,
                reason,
                format!("running {v}; {} waits: {message}", candidate.version),
            ),
            None => (
                Health::Ready,
                reason,
                format!("{} waits: {message}", candidate.version),
            ),
        };
        self.keep_failed_phase();
    }

    pub(super) fn idle(&mut self) {
        if self.status.phase == Some(StagePhase::Failed) {
            self.keep_failed_phase();
            return;
        }
        self.status.phase = Some(StagePhase::Idle);
        let running = self.status.current_version.clone();
        self.status.message = running.as_ref().map(|v| format!("running {v}"));
        self.health = (
            Health::Ready,
            "Idle",
            running.map_or("no release yet".into(), |v| format!("running {v}")),
        );
    }

    /// After a rollback the stage stays Failed until a newer release rolls out, so the
    /// failure stays visible at a glance.
    pub(super) fn keep_failed_phase(&mut self) {
        if self.input.status.phase != Some(StagePhase::Failed) {
            return;
        }
        let last = self.status.history.first().cloned();
        if let Some(last) = last.filter(|l| l.outcome == RolloutOutcome::RolledBack) {
            let why = last.reason.clone().unwrap_or_default();
            let waiting = self
                .status
                .message
                .clone()
                .filter(|_| self.status.phase == Some(StagePhase::Waiting));
            self.status.phase = Some(StagePhase::Failed);
            let mut message = format!("{} rolled back ({why})", last.version);
            if let Some(w) = waiting {
                message.push_str("; ");
                message.push_str(&w);
            }
            self.status.message = Some(message.clone());
            self.health = (Health::Stalled, "RolledBack", message);
        }
    }

    pub(super) fn finish(mut self) -> Outcome {
        self.refuse_unused_command();
        let now = self.input.now;
        let (health, reason, message) = self.health;
        let mut status = self.status;
        if status.phase != self.input.status.phase {
            status.phase_since = Some(now);
        }
        let conditions: Vec<Condition> = kstatus(health, reason, &message);
        status.conditions = conditions;
        let requeue_after = self
            .wake_at
            .iter()
            .map(|t| {
                let d = t.duration_since(now);
                if d.is_negative() {
                    Duration::ZERO
                } else {
                    d.unsigned_abs()
                }
            })
            .min()
            .unwrap_or(MAX_REQUEUE)
            .min(MAX_REQUEUE);
        Outcome {
            status,
            release_updates: self.updates,
            primary: self.primary,
            canary: self.canary,
            weight: self.weight,
            canary_scale_weight: self.scale_weight.or(self.weight),
            events: self.events,
            requeue_after,
            command_deferred: self.command_deferred,
        }
    }
}

/// Where a canary's pre-promotion checks stand.
pub(super) enum PrePromotion {
    /// Passed (or none): promotion goes on.
    Passed,
    /// Running: the split stays as it is.
    Waiting,
    /// Failed or timed out: the rollout is being rolled back.
    Ended,
}

/// A release on a pinned template, as a workload runs it.
pub(super) type Running = (String, Option<String>);

/// Whether a workload that runs `release` on `template` runs `want` (a workload from before
/// templates were pinned, or a rollout that pinned none, matches on the release alone).
pub(super) fn runs(release: Option<&str>, template: Option<&str>, want: &Running) -> bool {
    release == Some(want.0.as_str()) && (want.1.is_none() || template == want.1.as_deref())
}
