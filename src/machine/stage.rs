//! What a stage does next. Given its compiled spec, its status, the releases of its pipeline,
//! the primary workload and (when asked for) the candidate's gate results, [`decide`] returns
//! the stage's next status, each release's progress at this stage, the workload the primary
//! should run, events to emit and when to look again.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use crate::api::conditions::{Condition, Health, kstatus};
use crate::api::release::{
    Artifact, GateResultStatus, GateVerdict, ReleaseStageStatus, StagePhaseForRelease as RP,
};
use crate::api::stage::{
    ActiveRollout, RolloutDirection, RolloutOutcome, RolloutRecord, StagePhase, StageStatus,
};
use crate::api::validation::{CompiledTrigger, StagePlan};
use crate::gates::GateOutcome;
use crate::schedule::{WindowVerdict, evaluate_windows};

#[path = "canary.rs"]
pub mod canary;
pub use canary::{CanaryView, Command, Due};

/// Longest wait before a stage is looked at again, whatever it is waiting for.
pub const MAX_REQUEUE: Duration = Duration::from_secs(300);

/// A release as the stage sees it.
#[derive(Debug, Clone)]
pub struct ReleaseView {
    pub name: String,
    pub version: String,
    pub artifacts: Vec<Artifact>,
    pub valid: bool,
    /// Why this release cannot run at this stage (e.g. an artifact names no container).
    pub unfit: Option<String>,
    /// The release's progress at every stage of the pipeline.
    pub stages: BTreeMap<String, ReleaseStageStatus>,
}

/// The managed primary Deployment as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct PrimaryView {
    /// Release named by the pod template's annotation.
    pub release: Option<String>,
    pub replicas: i32,
    /// Every replica runs the current template and is available.
    pub available: bool,
    /// At least one replica is available (or none is wanted): Services route to it.
    pub serving: bool,
    /// A short description of its rollout, e.g. `1/3 updated, 0/3 available`.
    pub detail: String,
}

/// Results of the candidate's gates, in the declared order, up to the first that did not pass.
#[derive(Debug, Clone)]
pub struct GateReport {
    pub release: String,
    pub results: Vec<(String, GateOutcome)>,
    /// When each gate that did not pass should be evaluated again.
    pub recheck_after: Duration,
}

pub struct StageInput<'a> {
    pub name: &'a str,
    pub plan: &'a StagePlan,
    pub status: &'a StageStatus,
    /// Releases of the pipeline, oldest first.
    pub releases: &'a [ReleaseView],
    pub primary: Option<&'a PrimaryView>,
    /// The canary workload, for the canary strategy.
    pub canary: Option<&'a CanaryView>,
    pub gates: Option<&'a GateReport>,
    /// Results of the measurements asked for with [`Decision::Measure`].
    pub measurements: Option<&'a [Measurement]>,
    pub command: Option<Command>,
    pub now: Timestamp,
}

/// The result of one due gate measurement of a canary analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub scope: String,
    pub gate: String,
    pub outcome: GateOutcome,
}

/// What the primary workload should run.
#[derive(Debug, Clone, PartialEq)]
pub enum DesiredPrimary {
    Release {
        name: String,
        artifacts: Vec<Artifact>,
    },
    /// No release to run: scale to zero (a first rollout that failed).
    Empty,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
    /// The release the event also concerns, if any.
    pub release: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Evaluate the gates for this release and decide again with their results.
    EvaluateGates {
        release: String,
    },
    /// Measure these analysis gates for the rolling-out release and decide again.
    Measure {
        release: String,
        due: Vec<Due>,
    },
    Act(Box<Outcome>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: StageStatus,
    /// New progress entries at this stage, per release; only those that change.
    pub release_updates: BTreeMap<String, ReleaseStageStatus>,
    pub primary: Option<DesiredPrimary>,
    /// What the canary workload should run (canary strategy only).
    pub canary: Option<DesiredPrimary>,
    /// The canary's share of traffic, in percent, for the traffic router.
    pub weight: Option<i32>,
    /// The weight the canary workload is sized for (replica ratio): the step's weight, which
    /// may run ahead of `weight` while the canary scales up.
    pub canary_scale_weight: Option<i32>,
    pub events: Vec<StageEvent>,
    pub requeue_after: Duration,
}

/// Event reasons are static strings (they become metric-free, greppable identifiers).
fn event_reason(reason: &str) -> &'static str {
    match reason {
        "WaitingForRequires" => "WaitingForRequires",
        "WaitingForSchedule" => "WaitingForSchedule",
        "BlockedByWindow" => "BlockedByWindow",
        "GateFailed" => "GateFailed",
        "GateInconclusive" => "GateInconclusive",
        "GateInvalid" => "GateInvalid",
        "WaitingForGate" => "WaitingForGate",
        "NotPromoted" => "NotPromoted",
        _ => "Superseded",
    }
}

pub fn decide(input: &StageInput) -> Decision {
    let mut out = Draft::new(input);
    match input.status.rollout.clone() {
        Some(rollout) => {
            match (&input.plan.canary, rollout.direction) {
                (Some(plan), RolloutDirection::Forward) if rollout.canary.is_some() => {
                    out.continue_canary(plan, rollout.clone())
                }
                _ => out.continue_rollout(rollout.clone()),
            }
            if !out.due.is_empty() && input.measurements.is_none() {
                return Decision::Measure {
                    release: rollout.release,
                    due: out.due,
                };
            }
        }
        None => {
            if let Some(release) = out.choose_candidate() {
                return Decision::EvaluateGates { release };
            }
        }
    }
    Decision::Act(Box::new(out.finish()))
}

struct Draft<'a> {
    input: &'a StageInput<'a>,
    status: StageStatus,
    updates: BTreeMap<String, ReleaseStageStatus>,
    primary: Option<DesiredPrimary>,
    events: Vec<StageEvent>,
    wake_at: Vec<Timestamp>,
    health: (Health, &'static str, String),
    passed_gates: Option<Vec<GateResultStatus>>,
    canary: Option<DesiredPrimary>,
    weight: Option<i32>,
    scale_weight: Option<i32>,
    due: Vec<Due>,
}

impl<'a> Draft<'a> {
    fn new(input: &'a StageInput<'a>) -> Self {
        Self {
            input,
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
        }
    }

    fn release(&self, name: &str) -> Option<&'a ReleaseView> {
        self.input.releases.iter().find(|r| r.name == name)
    }

    fn entry(&self, name: &str) -> Option<&ReleaseStageStatus> {
        self.updates.get(name).or_else(|| {
            self.release(name)
                .and_then(|r| r.stages.get(self.input.name))
        })
    }

    /// Records a release's progress here, keeping timestamps and gate results it already has.
    fn set_entry(&mut self, name: &str, phase: RP, reason: &str, message: String) {
        let now = self.input.now;
        let previous = self.entry(name).cloned();
        let mut next = previous.clone().unwrap_or(ReleaseStageStatus {
            phase,
            reason: None,
            message: None,
            started_at: None,
            finished_at: None,
            gates: Vec::new(),
        });
        next.phase = phase;
        next.reason = Some(reason.to_string());
        next.message = Some(message);
        if phase == RP::Progressing && next.started_at.is_none() {
            next.started_at = Some(now);
        }
        if phase.is_final() && next.finished_at.is_none() {
            next.finished_at = Some(now);
        }
        let moved = previous
            .as_ref()
            .is_none_or(|p| (p.phase, p.reason.as_deref()) != (phase, Some(reason)));
        // Rollout transitions announce themselves; holds and hand-overs are announced here.
        if moved && matches!(phase, RP::Waiting | RP::Superseded) {
            let warning = matches!(reason, "GateFailed" | "GateInconclusive" | "GateInvalid");
            let note = format!(
                "{}: {}",
                self.version_of(name),
                next.message.clone().unwrap_or_default()
            );
            self.events.push(StageEvent {
                warning,
                reason: event_reason(reason),
                note,
                release: Some(name.to_string()),
            });
        }
        if previous.as_ref() != Some(&next) {
            self.updates.insert(name.to_string(), next);
        }
    }

    fn version_of(&self, release: &str) -> String {
        self.release(release)
            .map_or_else(|| release.to_string(), |r| r.version.clone())
    }

    fn event(&mut self, warning: bool, reason: &'static str, note: String, release: Option<&str>) {
        self.events.push(StageEvent {
            warning,
            reason,
            note,
            release: release.map(str::to_string),
        });
    }

    fn continue_rollout(&mut self, rollout: ActiveRollout) {
        let now = self.input.now;
        let deadline = rollout.started_at + self.input.plan.progress_deadline;
        let (target, desired) = match rollout.direction {
            RolloutDirection::Forward => {
                let artifacts = self.release(&rollout.release).map(|r| r.artifacts.clone());
                match artifacts {
                    Some(artifacts) => (
                        Some(rollout.release.clone()),
                        DesiredPrimary::Release {
                            name: rollout.release.clone(),
                            artifacts,
                        },
                    ),
                    None => {
                        // The release was deleted mid-rollout: revert to what ran before.
                        self.start_rollback(
                            &rollout,
                            "ReleaseDeleted",
                            "the Release was deleted during its rollout".into(),
                        );
                        return;
                    }
                }
            }
            RolloutDirection::Rollback => match &rollout.previous_release {
                Some(prev) => (
                    Some(prev.clone()),
                    DesiredPrimary::Release {
                        name: prev.clone(),
                        artifacts: rollout.previous_artifacts.clone(),
                    },
                ),
                None => (None, DesiredPrimary::Empty),
            },
        };
        self.primary = Some(desired);
        let primary = self.input.primary;
        let mut reached = match (&target, primary) {
            (Some(t), Some(p)) => p.release.as_deref() == Some(t.as_str()) && p.available,
            (None, p) => p.is_none_or(|p| p.replicas == 0 && p.available),
            (Some(_), None) => false,
        };
        if rollout.direction == RolloutDirection::Rollback && self.input.plan.canary.is_some() {
            reached &= self.continue_canary_rollback(&rollout);
        }
        let detail = primary
            .map(|p| p.detail.clone())
            .unwrap_or_else(|| "primary not created yet".into());
        match (rollout.direction, reached) {
            (RolloutDirection::Forward, true) => self.finish_forward(&rollout),
            (RolloutDirection::Rollback, true) => self.finish_rollback(&rollout),
            (RolloutDirection::Forward, false) if now >= deadline => {
                let secs = self.input.plan.progress_deadline.as_secs();
                self.start_rollback(
                    &rollout,
                    "ProgressDeadlineExceeded",
                    format!(
                        "primary not available within the progress deadline of {secs}s ({detail})"
                    ),
                );
            }
            (RolloutDirection::Forward, false) => {
                self.status.phase = Some(StagePhase::Progressing);
                self.status.message = Some(format!("rolling out {} ({detail})", rollout.version));
                self.health = (
                    Health::Progressing,
                    "RollingOut",
                    format!("rolling out {}: {detail}", rollout.version),
                );
                self.wake_at.push(deadline);
            }
            (RolloutDirection::Rollback, false) => {
                let to = rollout
                    .previous_version
                    .clone()
                    .unwrap_or_else(|| "nothing (scale to zero)".into());
                self.status.phase = Some(StagePhase::RollingBack);
                self.status.message = Some(format!("rolling back to {to} ({detail})"));
                let stalled = now >= deadline + self.input.plan.progress_deadline;
                self.health = if stalled {
                    (
                        Health::Stalled,
                        "RollbackStuck",
                        format!("rollback to {to} is not available: {detail}"),
                    )
                } else {
                    (
                        Health::Progressing,
                        "RollingBack",
                        format!("rolling back to {to}: {detail}"),
                    )
                };
                if !stalled {
                    self.wake_at
                        .push(deadline + self.input.plan.progress_deadline);
                }
            }
        }
    }

    fn finish_forward(&mut self, rollout: &ActiveRollout) {
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
        self.status.rollout = None;
        self.event(
            false,
            "RolloutSucceeded",
            format!("{} is available after {secs}s", rollout.version),
            Some(&rollout.release),
        );
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

    fn start_rollback(&mut self, rollout: &ActiveRollout, reason: &'static str, message: String) {
        self.set_entry(&rollout.release, RP::Failed, reason, message.clone());
        let mut next = rollout.clone();
        next.direction = RolloutDirection::Rollback;
        next.reason = Some(format!("{reason}: {message}"));
        let to = rollout
            .previous_version
            .clone()
            .unwrap_or_else(|| "nothing (scale to zero)".into());
        self.event(
            true,
            "RolloutFailed",
            format!("{}: {message}; rolling back to {to}", rollout.version),
            Some(&rollout.release),
        );
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
        self.primary = Some(match &next.previous_release {
            Some(prev) => DesiredPrimary::Release {
                name: prev.clone(),
                artifacts: next.previous_artifacts.clone(),
            },
            None => DesiredPrimary::Empty,
        });
        self.wake_at.push(self.input.now);
    }

    fn finish_rollback(&mut self, rollout: &ActiveRollout) {
        self.record(rollout, RolloutOutcome::RolledBack, rollout.reason.clone());
        self.status.current_release = rollout.previous_release.clone();
        self.status.current_version = rollout.previous_version.clone();
        self.status.rollout = None;
        let to = rollout
            .previous_version
            .clone()
            .unwrap_or_else(|| "nothing".into());
        self.event(
            true,
            "RollbackCompleted",
            format!("{} was rolled back; running {to}", rollout.version),
            Some(&rollout.release),
        );
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

    fn record(&mut self, rollout: &ActiveRollout, outcome: RolloutOutcome, reason: Option<String>) {
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
            },
        );
        self.status.history.truncate(self.input.plan.history_limit);
    }

    /// Picks the next release for this stage and settles every other one. Returns the candidate
    /// when its gates must be evaluated before the decision can be made.
    fn choose_candidate(&mut self) -> Option<String> {
        let now = self.input.now;
        let plan = self.input.plan;
        let releases = self.input.releases;
        let current = self.status.current_release.clone();
        if let Some(r) = current.as_deref().and_then(|c| self.release(c)) {
            self.primary = Some(DesiredPrimary::Release {
                name: r.name.clone(),
                artifacts: r.artifacts.clone(),
            });
        }
        // Only releases newer than the current one can come here.
        let start = current
            .as_ref()
            .and_then(|c| releases.iter().position(|r| &r.name == c))
            .map_or(0, |i| i + 1);
        if self.input.plan.canary.is_some() {
            // Between rollouts all traffic stays on the primary.
            self.weight = Some(0);
        }
        let retried = match &self.input.command {
            Some(Command::Retry(name)) => self.retry(name),
            _ => None,
        };
        let open = |r: &ReleaseView| {
            r.valid
                && (retried.as_deref() == Some(r.name.as_str())
                    || r.stages
                        .get(self.input.name)
                        .is_none_or(|e| !e.phase.is_final()))
        };
        for r in &releases[..start] {
            if open(r) && current.as_deref() != Some(r.name.as_str()) {
                let by = self.status.current_version.clone().unwrap_or_default();
                self.set_entry(
                    &r.name,
                    RP::Superseded,
                    "Superseded",
                    format!("{by} is newer and already here"),
                );
            }
        }
        let newer: Vec<&ReleaseView> = releases[start..].iter().filter(|r| open(r)).collect();
        let failed_upstream = |r: &ReleaseView| {
            plan.requires.iter().find(|s| {
                r.stages
                    .get(*s)
                    .is_some_and(|e| matches!(e.phase, RP::Failed | RP::Superseded))
            })
        };
        let ready = |r: &ReleaseView| {
            plan.requires
                .iter()
                .all(|s| r.stages.get(s).is_some_and(|e| e.phase == RP::Succeeded))
        };
        let candidate = newer
            .iter()
            .rev()
            .find(|r| ready(r) && r.unfit.is_none())
            .copied();
        for r in &newer {
            if candidate.is_some_and(|c| c.name == r.name) {
                continue;
            }
            if let Some(why) = r.unfit.as_ref().filter(|_| ready(r)) {
                self.set_entry(&r.name, RP::Failed, "IncompatibleWithTarget", why.clone());
                if self.updates.contains_key(&r.name) {
                    self.event(
                        true,
                        "IncompatibleWithTarget",
                        format!("{}: {why}", r.version),
                        Some(&r.name),
                    );
                }
                continue;
            }
            if let Some(up) = failed_upstream(r) {
                let phase = r.stages[up].phase;
                self.set_entry(
                    &r.name,
                    RP::Superseded,
                    "NotPromoted",
                    format!("{phase:?} at '{up}'; never promoted further"),
                );
            } else if let Some(c) = candidate.filter(|c| ready(r) || !self.is_newer(r, Some(c))) {
                // Older than the candidate (or ready but not the newest): it will never come here.
                let by = c.version.clone();
                self.set_entry(
                    &r.name,
                    RP::Superseded,
                    "Superseded",
                    format!("superseded by {by}"),
                );
            } else {
                let waiting: Vec<&str> = plan
                    .requires
                    .iter()
                    .filter(|s| r.stages.get(*s).is_none_or(|e| e.phase != RP::Succeeded))
                    .map(String::as_str)
                    .collect();
                self.set_entry(
                    &r.name,
                    RP::Waiting,
                    "WaitingForRequires",
                    format!("waiting to succeed in {}", waiting.join(", ")),
                );
            }
        }
        let Some(candidate) = candidate else {
            self.status.candidate_release = None;
            self.status.candidate_version = None;
            self.status.candidate_since = None;
            self.idle();
            return None;
        };
        if self.status.candidate_since.is_none() {
            self.status.candidate_since = Some(now);
        }
        self.status.candidate_release = Some(candidate.name.clone());
        self.status.candidate_version = Some(candidate.version.clone());
        let since = self.status.candidate_since.unwrap_or(now);
        if let CompiledTrigger::Schedule { schedule, tz } = &plan.trigger {
            match schedule.next_after(since, tz) {
                Some(tick) if tick <= now => {}
                Some(tick) => {
                    self.hold(
                        candidate,
                        "WaitingForSchedule",
                        format!("the schedule fires next at {tick}"),
                    );
                    self.wake_at.push(tick);
                    return None;
                }
                None => {
                    self.hold(
                        candidate,
                        "WaitingForSchedule",
                        "the schedule never fires again".into(),
                    );
                    return None;
                }
            }
        }
        if let WindowVerdict::Closed { until, reason } = evaluate_windows(&plan.windows, now) {
            self.hold(candidate, "BlockedByWindow", reason);
            self.wake_at.push(until);
            return None;
        }
        if !plan.gates.is_empty() {
            match self.input.gates {
                Some(report) if report.release == candidate.name => {
                    if !self.apply_gate_report(candidate, report) {
                        return None;
                    }
                }
                _ => return Some(candidate.name.clone()),
            }
        }
        self.start_rollout(candidate);
        None
    }

    /// A release that failed here may run again when a person asks; returns its name.
    fn retry(&mut self, name: &str) -> Option<String> {
        let failed_here = self.entry(name).is_some_and(|e| e.phase == RP::Failed);
        if !failed_here {
            return None;
        }
        self.set_entry(
            name,
            RP::Waiting,
            "RetryRequested",
            "retry requested through greenlight.dev/retry".into(),
        );
        self.event(
            false,
            "RetryRequested",
            format!("{} will be rolled out again", self.version_of(name)),
            Some(name),
        );
        Some(name.to_string())
    }

    fn is_newer(&self, r: &ReleaseView, than: Option<&ReleaseView>) -> bool {
        let pos = |name: &str| self.input.releases.iter().position(|x| x.name == name);
        match than {
            Some(t) => pos(&r.name) > pos(&t.name),
            None => true,
        }
    }

    /// Records gate results on the candidate; true when every gate passed.
    fn apply_gate_report(&mut self, candidate: &ReleaseView, report: &GateReport) -> bool {
        let now = self.input.now;
        let previous = self
            .entry(&candidate.name)
            .map(|e| e.gates.clone())
            .unwrap_or_default();
        let mut gates = Vec::new();
        let mut blocking = None;
        for name in &self.input.plan.gates {
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
            });
        }
        let Some((gate, outcome)) = blocking else {
            self.passed_gates = Some(gates);
            return true;
        };
        let reason = match outcome.verdict {
            GateVerdict::Failed => "GateFailed",
            GateVerdict::Inconclusive => "GateInconclusive",
            GateVerdict::Invalid => "GateInvalid",
            _ => "WaitingForGate",
        };
        self.hold(
            candidate,
            reason,
            format!("gate '{gate}': {}", outcome.message),
        );
        self.attach_gates(&candidate.name, gates);
        let recheck = now + report.recheck_after;
        self.wake_at
            .push(outcome.recheck_at.map_or(recheck, |at| at.min(recheck)));
        false
    }

    fn attach_gates(&mut self, release: &str, gates: Vec<GateResultStatus>) {
        if let Some(mut entry) = self.entry(release).cloned()
            && entry.gates != gates
        {
            entry.gates = gates;
            self.updates.insert(release.to_string(), entry);
        }
    }

    fn hold(&mut self, candidate: &ReleaseView, reason: &'static str, message: String) {
        self.set_entry(&candidate.name, RP::Waiting, reason, message.clone());
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

    fn idle(&mut self) {
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
    fn keep_failed_phase(&mut self) {
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

    fn start_rollout(&mut self, candidate: &ReleaseView) {
        let now = self.input.now;
        let previous = self.status.current_release.clone();
        let previous_artifacts = previous
            .as_ref()
            .and_then(|p| self.release(p))
            .map(|r| r.artifacts.clone())
            .or_else(|| {
                self.input
                    .status
                    .rollout
                    .as_ref()
                    .map(|r| r.previous_artifacts.clone())
            })
            .unwrap_or_default();
        let rollout = ActiveRollout {
            release: candidate.name.clone(),
            version: candidate.version.clone(),
            started_at: now,
            direction: RolloutDirection::Forward,
            previous_release: previous,
            previous_version: self.status.current_version.clone(),
            previous_artifacts,
            reason: None,
            // A first release has nothing to compare with: it rolls out directly.
            canary: self
                .input
                .plan
                .canary
                .as_ref()
                .filter(|_| self.status.current_release.is_some())
                .map(|_| canary::fresh_progress(now)),
        };
        self.set_entry(
            &candidate.name,
            RP::Progressing,
            "RollingOut",
            "rolling out".into(),
        );
        if let Some(gates) = self.passed_gates.take() {
            self.attach_gates(&candidate.name, gates);
        }
        self.event(
            false,
            "RolloutStarted",
            format!("rolling out {}", candidate.version),
            Some(&candidate.name),
        );
        let rollout_is_canary = rollout.canary.is_some();
        self.status.rollout = Some(rollout);
        self.status.candidate_release = None;
        self.status.candidate_version = None;
        self.status.candidate_since = None;
        self.status.phase = Some(StagePhase::Progressing);
        self.status.message = Some(format!("rolling out {}", candidate.version));
        self.health = (
            Health::Progressing,
            "RollingOut",
            format!("rolling out {}", candidate.version),
        );
        let desired = DesiredPrimary::Release {
            name: candidate.name.clone(),
            artifacts: candidate.artifacts.clone(),
        };
        if rollout_is_canary {
            // The release starts beside the primary, with no traffic.
            self.canary = Some(desired);
            self.weight = Some(0);
        } else {
            self.primary = Some(desired);
        }
        self.wake_at.push(now + self.input.plan.progress_deadline);
    }

    fn finish(self) -> Outcome {
        let now = self.input.now;
        let (health, reason, message) = self.health;
        let mut status = self.status;
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
        }
    }
}

#[cfg(test)]
#[path = "stage_tests.rs"]
mod tests;
