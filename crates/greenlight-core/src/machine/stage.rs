//! What a stage does next. Given its compiled spec, its status, the releases of its pipeline,
//! the primary workload and (when asked for) the candidate's gate results, [`decide`] returns
//! the stage's next status, each release's progress at this stage, the workload the primary
//! should run, events to emit and when to look again. This file holds the rolling strategy and
//! the choice of candidate; [`super::canary`] holds the canary strategy.

use super::canary;
use super::draft::{Draft, Running, runs};
use super::events::Transition;
use super::types::{
    Command, Decision, DesiredPrimary, GateReport, ReleaseView, StageInput, TargetTemplate,
};
use crate::api::conditions::Health;
use crate::api::gate::GateList;
use crate::api::release::{GateVerdict, StagePhaseForRelease as RP};
use crate::api::stage::{ActiveRollout, RolloutDirection, StagePhase, TargetChange};
use crate::schedule::later;
use crate::schedule::{WindowVerdict, evaluate_windows};
use crate::validation::CompiledTrigger;
use jiff::Timestamp;

pub fn decide(input: &StageInput) -> Decision {
    let mut out = Draft::new(input);
    out.close_review();
    match input.status.rollout.clone() {
        Some(rollout) => {
            let forward = rollout.direction == RolloutDirection::Forward;
            match &out.plan.canary {
                _ if forward && rollout.running(GateList::PreRollout) => {
                    out.continue_pre_rollout(rollout.clone())
                }
                Some(plan) if forward && rollout.canary.is_some() => {
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
            if let Some((list, since, gates)) = out.checks_due {
                return Decision::EvaluateGates {
                    release: rollout.release,
                    configuration: None,
                    list,
                    run: Some(since),
                    gates,
                    emergency: None,
                };
            }
        }
        None => {
            if let Some((release, configuration)) = out.choose_candidate() {
                let emergency = out.emergency_judged(&release);
                return Decision::EvaluateGates {
                    release,
                    configuration,
                    list: GateList::Gates,
                    run: None,
                    gates: out.plan.gates.clone(),
                    emergency,
                };
            }
        }
    }
    out.continue_drain();
    Decision::Act(Box::new(out.finish()))
}

impl Draft<'_> {
    fn continue_rollout(&mut self, rollout: ActiveRollout) {
        let forward = rollout.direction == RolloutDirection::Forward;
        if let (true, Some(why)) = (forward, self.input.invalid) {
            let why = format!("the stage's spec became invalid during the rollout: {why}");
            return self.start_rollback(&rollout, "InvalidSpec", why);
        }
        if forward && self.input.command == Some(Command::Abort) {
            let why = "aborted by an abort command".to_string();
            return self.start_rollback(&rollout, "Aborted", why);
        }
        let Some((target, desired)) = self.rollout_target(&rollout) else {
            // The release was deleted mid-rollout: revert to what ran before.
            let why = "the Release was deleted during its rollout".to_string();
            return self.start_rollback(&rollout, "ReleaseDeleted", why);
        };
        self.primary = Some(desired);
        let primary = self.input.primary;
        let on_target = match (&target, primary) {
            (Some(t), Some(p)) => runs(p.release.as_deref(), p.template.as_deref(), t),
            (None, p) => p.is_none_or(|p| p.replicas == 0),
            (Some(_), None) => false,
        };
        let mut reached = on_target && primary.is_none_or(|p| p.available);
        if !forward && self.plan.canary.is_some() {
            reached &= self.continue_canary_rollback(&rollout);
        }
        let detail = primary
            .map(|p| p.detail.clone())
            .unwrap_or_else(|| "primary not created yet".into());
        // Once verifying, the release ran here: a readiness blip holds the verification up
        // within its own timeout, not the rollout's progress deadline.
        if forward && on_target && !reached && rollout.running(GateList::Verify) {
            return self.verify_while_unavailable(rollout, &detail);
        }
        match (forward, reached) {
            (true, true) => self.finish_forward(&rollout),
            (false, true) => self.finish_rollback(&rollout),
            (true, false) => self.still_rolling_out(&rollout, &detail),
            (false, false) => self.still_rolling_back(&rollout, &detail),
        }
    }

    /// What the primary should run in this direction (release and template) and the workload
    /// for it; `None` when a forward rollout's release no longer exists.
    fn rollout_target(&self, rollout: &ActiveRollout) -> Option<(Option<Running>, DesiredPrimary)> {
        let desired = match rollout.direction {
            RolloutDirection::Forward => self.desired_for(rollout)?,
            RolloutDirection::Rollback => {
                self.previous_of(rollout).unwrap_or(DesiredPrimary::Empty)
            }
        };
        let running = match &desired {
            DesiredPrimary::Release { name, template, .. } => {
                Some((name.clone(), template.clone()))
            }
            DesiredPrimary::Empty => None,
        };
        Some((running, desired))
    }

    fn still_rolling_out(&mut self, rollout: &ActiveRollout, detail: &str) {
        let deadline = later(rollout.started_at, self.plan.progress_deadline);
        if self.input.now >= deadline {
            let secs = self.plan.progress_deadline.as_secs();
            let why =
                format!("primary not available within the progress deadline of {secs}s ({detail})");
            return self.start_rollback(rollout, "ProgressDeadlineExceeded", why);
        }
        // Also clears a `Blocked` left by a refused write once the rollout moves again.
        self.set_entry(
            &rollout.release,
            RP::Progressing,
            "RollingOut",
            "rolling out".into(),
        );
        self.status.phase = Some(StagePhase::Progressing);
        let what = rollout.what();
        self.status.message = Some(format!("rolling out {what} ({detail})"));
        self.health = (
            Health::Progressing,
            "RollingOut",
            format!("rolling out {what}: {detail}"),
        );
        self.wake_at.push(deadline);
    }

    fn still_rolling_back(&mut self, rollout: &ActiveRollout, detail: &str) {
        let deadline = later(rollout.started_at, self.plan.progress_deadline);
        let to = rollout
            .previous_version
            .clone()
            .unwrap_or_else(|| "nothing (scale to zero)".into());
        self.status.phase = Some(StagePhase::RollingBack);
        self.status.message = Some(format!("rolling back to {to} ({detail})"));
        let give_up_at = later(deadline, self.plan.progress_deadline);
        if self.input.now >= give_up_at {
            let why = format!("rollback to {to} is not available: {detail}");
            self.health = (Health::Stalled, "RollbackStuck", why);
        } else {
            let why = format!("rolling back to {to}: {detail}");
            self.health = (Health::Progressing, "RollingBack", why);
            self.wake_at.push(give_up_at);
        }
    }

    /// Picks the next release for this stage (or a configuration change of the current one)
    /// and settles every other one. Returns the candidate when its gates must be evaluated
    /// before the decision can be made.
    fn choose_candidate(&mut self) -> Option<(String, Option<(String, Timestamp)>)> {
        let releases = self.input.releases;
        let current = self.status.current_release.clone();
        if let Some(r) = current.as_deref().and_then(|c| self.release(c)) {
            self.primary = Some(DesiredPrimary::Release {
                name: r.name.clone(),
                artifacts: r.artifacts.clone(),
                template: self.status.template.clone(),
            });
        }
        // Only releases newer than the current one can come here.
        let start = current
            .as_ref()
            .and_then(|c| releases.iter().position(|r| &r.name == c))
            .map_or(0, |i| i + 1);
        if self.plan.canary.is_some() {
            // Between rollouts all traffic stays on the primary.
            self.weight = Some(0);
        }
        let retried = match &self.input.command {
            Some(Command::Retry(name)) => self.retry(name),
            _ => None,
        };
        let name = self.input.name;
        let open = |r: &ReleaseView| {
            r.valid
                && (retried.as_deref() == Some(r.name.as_str())
                    || r.stages.get(name).is_none_or(|e| !e.phase.is_final()))
        };
        let older: Vec<&ReleaseView> = releases[..start].iter().filter(|r| open(r)).collect();
        self.supersede_older(&older, current.as_deref());
        let newer: Vec<&ReleaseView> = releases[start..].iter().filter(|r| open(r)).collect();
        self.take_emergency(&newer);
        let candidate = self.emergency_candidate(&newer).or_else(|| {
            let mut ready = newer.iter().rev();
            ready
                .find(|r| self.upstream_succeeded(r) && r.unfit.is_none())
                .copied()
        });
        for r in &newer {
            if candidate.is_none_or(|c| c.name != r.name) {
                self.settle(r, candidate);
            }
        }
        self.note_target_change();
        let pending = self.pending_change();
        match candidate {
            Some(candidate) => self.admit(candidate, None).map(|r| (r, pending)),
            None => match self.configuration_candidate() {
                Some((current, change)) => {
                    let asked = self.admit(&current, Some(&change));
                    asked.map(|r| (r, pending))
                }
                None => {
                    self.status.candidate_release = None;
                    self.status.candidate_version = None;
                    self.status.candidate_since = None;
                    self.idle();
                    None
                }
            },
        }
    }

    /// Releases older than the one running here will never come here.
    fn supersede_older(&mut self, older: &[&ReleaseView], current: Option<&str>) {
        for r in older {
            if current != Some(r.name.as_str()) {
                let by = self.status.current_version.clone().unwrap_or_default();
                let why = format!("{by} is newer and already here");
                self.settle_entry(&r.name, RP::Superseded, Transition::Superseded, why);
            }
        }
    }

    /// The release succeeded at every stage this one requires of its type.
    fn upstream_succeeded(&self, r: &ReleaseView) -> bool {
        self.input
            .plan
            .for_type(r.release_type)
            .requires
            .iter()
            .all(|s| r.stages.get(s).is_some_and(|e| e.phase == RP::Succeeded))
    }

    /// Settles a newer release that is not the candidate: unfit, never promoted (it failed
    /// upstream), superseded by the candidate, or waiting for its upstream stages.
    fn settle(&mut self, r: &ReleaseView, candidate: Option<&ReleaseView>) {
        let plan = self.input.plan.for_type(r.release_type);
        let ready = self.upstream_succeeded(r);
        if let Some(why) = r.unfit.as_ref().filter(|_| ready) {
            self.set_entry(&r.name, RP::Failed, "IncompatibleWithTarget", why.clone());
            if self.updates.contains_key(&r.name) {
                let note = format!("{}: {why}", r.version);
                self.event(Transition::IncompatibleWithTarget, note, Some(&r.name));
            }
            return;
        }
        let failed_upstream = plan.requires.iter().find(|s| {
            r.stages
                .get(*s)
                .is_some_and(|e| matches!(e.phase, RP::Failed | RP::Superseded))
        });
        if let Some(up) = failed_upstream {
            let phase = r.stages[up].phase;
            let why = format!("{phase:?} at '{up}'; never promoted further");
            self.settle_entry(&r.name, RP::Superseded, Transition::NotPromoted, why);
        } else if let Some(c) = candidate.filter(|c| self.is_emergency(c)) {
            // A pending emergency supersedes nothing: it may be cancelled, or never approved.
            let why = format!("waiting behind the emergency of {}", c.version);
            self.settle_entry(&r.name, RP::Waiting, Transition::WaitingForRequires, why);
        } else if let Some(c) = candidate.filter(|c| ready || !self.is_newer(r, Some(c))) {
            // Older than the candidate (or ready but not the newest): it will never come here.
            let why = format!("superseded by {}", c.version);
            self.settle_entry(&r.name, RP::Superseded, Transition::Superseded, why);
        } else {
            let waiting: Vec<&str> = plan
                .requires
                .iter()
                .filter(|s| r.stages.get(*s).is_none_or(|e| e.phase != RP::Succeeded))
                .map(String::as_str)
                .collect();
            let why = format!("waiting to succeed in {}", waiting.join(", "));
            self.settle_entry(&r.name, RP::Waiting, Transition::WaitingForRequires, why);
        }
    }

    /// The candidate (a release, or a configuration change of the current one) passes its
    /// trigger, windows and gates in that order, or is held at the first that stops it.
    /// Returns it when its gates must be evaluated first.
    fn admit(
        &mut self,
        candidate: &ReleaseView,
        change: Option<&TargetTemplate>,
    ) -> Option<String> {
        let now = self.input.now;
        let emergency = self.emergency_plan_for(&candidate.name);
        self.plan = match (self.is_emergency(candidate), emergency, change) {
            (true, Some(emergency), None) => &emergency.plan,
            // A configuration change is the stage's own: no release's policy judges it.
            (_, _, Some(_)) => self.input.plan,
            _ => self.input.plan.for_type(candidate.release_type),
        };
        let plan = self.plan;
        if self.status.candidate_since.is_none() {
            self.status.candidate_since = Some(now);
        }
        self.status.candidate_release = Some(candidate.name.clone());
        self.status.candidate_version = Some(match change {
            Some(_) => format!("{} (configuration change)", candidate.version),
            None => candidate.version.clone(),
        });
        let since = self.status.candidate_since.unwrap_or(now);
        if let CompiledTrigger::Schedule { schedule, tz } = &plan.trigger {
            let (why, wake) = match schedule.next_after(since, tz) {
                Some(tick) if tick <= now => (None, None),
                Some(tick) => (
                    Some(format!("the schedule fires next at {tick}")),
                    Some(tick),
                ),
                None => (Some("the schedule never fires again".to_string()), None),
            };
            if let Some(why) = why {
                self.hold_either(candidate, change, Transition::WaitingForSchedule, why);
                self.wake_at.extend(wake);
                return None;
            }
        }
        if let WindowVerdict::Closed { until, reason } = evaluate_windows(&plan.windows, now) {
            self.hold_either(candidate, change, Transition::BlockedByWindow, reason);
            self.wake_at.push(until);
            return None;
        }
        if !plan.gates.is_empty() {
            // A release that would carry a pending edit of the target is judged as the edit
            // is: approvals given before the edit do not count for it either.
            let template = self.pending_change().map(|(t, _)| t);
            match self.input.gates {
                Some(report)
                    if report.list == GateList::Gates
                        && report.release == candidate.name
                        && report.template == template =>
                {
                    if !self.apply_gate_report(candidate, report, change) {
                        return None;
                    }
                }
                _ => return Some(candidate.name.clone()),
            }
        }
        self.start_rollout(candidate, change);
        None
    }

    /// Holds a release candidate (on its entry here) or a configuration change (on the stage
    /// alone: the release's entry there is final already).
    fn hold_either(
        &mut self,
        candidate: &ReleaseView,
        change: Option<&TargetTemplate>,
        kind: Transition,
        why: String,
    ) {
        if change.is_none() {
            return self.hold(candidate, kind, why);
        }
        let what = format!("the configuration change of {}", candidate.version);
        self.status.phase = Some(StagePhase::Waiting);
        self.status.message = Some(format!("{what} waits: {why}"));
        self.health = (
            Health::Ready,
            kind.reason(),
            format!("running {}; {what} waits: {why}", candidate.version),
        );
        self.keep_failed_phase();
    }

    /// The target's template differs from the one that serves, and its change has not failed
    /// here: the current release, to roll out again on the target's template.
    fn configuration_candidate(&self) -> Option<(ReleaseView, TargetTemplate)> {
        let change = self.status.target_change.as_ref().filter(|c| !c.failed)?;
        let target = self.input.target.filter(|t| t.digest == change.digest)?;
        let current = self.release(self.status.current_release.as_deref()?)?;
        // A release the edited template cannot run (an artifact names a container the edit
        // removed) waits for the next edit rather than failing on every pass.
        current
            .unfit
            .is_none()
            .then(|| (current.clone(), target.clone()))
    }

    /// The edit of the target that waits, with since when: what a rollout starting now would
    /// carry to the primary.
    fn pending_change(&self) -> Option<(String, Timestamp)> {
        let change = self.status.target_change.as_ref()?;
        let target = self.input.target.filter(|t| t.digest == change.digest)?;
        Some((
            target.digest.clone(),
            change.since.unwrap_or(self.input.now),
        ))
    }

    /// Notes an edit of the target that has not reached the primary, once per edit. A stage
    /// that runs a release but has pinned nothing yet (one from before templates were pinned)
    /// pins the target's template as it is.
    fn note_target_change(&mut self) {
        let Some(target) = self.input.target else {
            return;
        };
        let Some(serving) = self.status.template.clone() else {
            if self.status.current_release.is_some() {
                self.status.template = Some(target.digest.clone());
            }
            return;
        };
        if target.digest == serving {
            self.status.target_change = None;
            return;
        }
        if self
            .status
            .target_change
            .as_ref()
            .is_some_and(|c| c.digest == target.digest)
        {
            return;
        }
        self.status.target_change = Some(TargetChange {
            digest: target.digest.clone(),
            fields: target.fields.clone(),
            changed_by: target.changed_by.clone(),
            failed: false,
            since: Some(self.input.now),
        });
        let running = self.status.current_version.clone().unwrap_or_default();
        let note = format!(
            "{running}: the target's template was changed by {} ({}); it reaches the primary only through a rollout here",
            target.changed_by,
            target.fields.join(", ")
        );
        let current = self.status.current_release.clone();
        self.event(Transition::TargetChanged, note, current.as_deref());
    }

    /// A release that failed here may run again when a person asks; returns its name.
    fn retry(&mut self, name: &str) -> Option<String> {
        let failed_here = self.entry(name).is_some_and(|e| e.phase == RP::Failed);
        if !failed_here {
            return None;
        }
        let attempt = self.entry(name).and_then(|e| e.attempt).unwrap_or(1) + 1;
        self.set_entry(
            name,
            RP::Waiting,
            "RetryRequested",
            format!("retry requested by a retry command (attempt {attempt})"),
        );
        if let Some(entry) = self.updates.get_mut(name) {
            entry.attempt = Some(attempt);
            entry.started_at = None;
            entry.finished_at = None;
            entry.gates.clear();
            entry.checks.clear();
            entry.comparisons.clear();
        }
        self.event(
            Transition::RetryRequested,
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
    fn apply_gate_report(
        &mut self,
        candidate: &ReleaseView,
        report: &GateReport,
        change: Option<&TargetTemplate>,
    ) -> bool {
        let now = self.input.now;
        let previous = self
            .entry(&candidate.name)
            .map(|e| e.gates.clone())
            .unwrap_or_default();
        let names = self.plan.gates.clone();
        let (gates, blocking) = self.gate_results(&names, report, &previous, None);
        let Some((gate, outcome)) = blocking else {
            self.passed_gates = change.is_none().then_some(gates);
            return true;
        };
        let reason = match outcome.verdict {
            GateVerdict::Failed => Transition::GateFailed,
            GateVerdict::Inconclusive => Transition::GateInconclusive,
            GateVerdict::Invalid => Transition::GateInvalid,
            _ => Transition::WaitingForGate,
        };
        let why = format!("gate '{gate}': {}", outcome.message);
        self.hold_either(candidate, change, reason, why);
        if change.is_none() {
            self.attach_gates(&candidate.name, gates);
        }
        let recheck = later(now, report.recheck_after);
        self.wake_at
            .push(outcome.recheck_at.map_or(recheck, |at| at.min(recheck)));
        false
    }

    /// The rollout of `candidate` (on the target's template as it is now, pinned from here
    /// on), as it starts.
    fn new_rollout(
        &self,
        candidate: &ReleaseView,
        change: Option<&TargetTemplate>,
    ) -> ActiveRollout {
        let now = self.input.now;
        let adopted = self.adopted_primary(candidate);
        let previous = self
            .status
            .current_release
            .clone()
            .or_else(|| adopted.as_ref().map(|(r, _)| r.name.clone()));
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
        let previous_version = self
            .status
            .current_version
            .clone()
            .or_else(|| adopted.as_ref().map(|(r, _)| r.version.clone()));
        let canary = self.plan.canary.as_ref();
        ActiveRollout {
            release: candidate.name.clone(),
            version: candidate.version.clone(),
            started_at: now,
            direction: RolloutDirection::Forward,
            // A first release has nothing to compare with: it rolls out directly.
            canary: canary
                .filter(|_| previous.is_some())
                .map(|_| canary::fresh_progress(now)),
            previous_release: previous,
            previous_version,
            previous_artifacts,
            reason: None,
            replicas: Some(self.plan.replicas),
            routing: canary.and_then(|c| c.routing.clone()),
            template: self.input.target.map(|t| t.digest.clone()),
            previous_template: self
                .status
                .template
                .clone()
                .or_else(|| adopted.and_then(|(_, t)| t)),
            configuration: change.is_some(),
            checks: None,
            emergency: None,
            // A configuration change runs under the stage's own spec, as it was judged.
            policy: match change {
                Some(_) => None,
                None => self
                    .input
                    .plan
                    .policy_for(candidate.release_type)
                    .map(|p| p.name.clone()),
            },
        }
    }

    /// A primary that serves a release of the pipeline though the stage has run none: one
    /// whose Stage was deleted and made again. It is what a failed first rollout goes back
    /// to, never nothing: scaling it to zero would stop what serves.
    fn adopted_primary(&self, candidate: &ReleaseView) -> Option<(&ReleaseView, Option<String>)> {
        if self.status.current_release.is_some() {
            return None;
        }
        let primary = self.input.primary.filter(|p| p.replicas > 0 && p.serving)?;
        let running = primary
            .release
            .as_deref()
            .filter(|r| *r != candidate.name)?;
        let release = self.input.releases.iter().find(|r| r.name == running)?;
        Some((release, primary.template.clone()))
    }

    fn start_rollout(&mut self, candidate: &ReleaseView, change: Option<&TargetTemplate>) {
        let mut rollout = self.new_rollout(candidate, change);
        if change.is_none() && self.is_emergency(candidate) {
            self.break_glass(&mut rollout);
        }
        if change.is_none() {
            self.set_entry(
                &candidate.name,
                RP::Progressing,
                "RollingOut",
                "rolling out".into(),
            );
        }
        if let Some(gates) = self.passed_gates.take() {
            self.attach_gates(&candidate.name, gates);
        }
        self.status.candidate_release = None;
        self.status.candidate_version = None;
        self.status.candidate_since = None;
        let note = match change {
            Some(c) => format!(
                "rolling out {}: {} changed the target's {}",
                rollout.what(),
                c.changed_by,
                c.fields.join(", ")
            ),
            None => format!("rolling out {}", rollout.what()),
        };
        if !self.plan.checks.pre_rollout.is_empty() {
            // Nothing changes on the workloads until the pre-rollout checks pass; the canary's
            // progress starts then.
            rollout.canary = None;
            return self.begin_pre_rollout(rollout);
        }
        self.begin_workloads(rollout, note);
    }

    /// The rollout changes the workloads: the canary starts beside the primary with no
    /// traffic, or the primary takes the release.
    pub(super) fn begin_workloads(&mut self, rollout: ActiveRollout, note: String) {
        let now = self.input.now;
        let what = rollout.what();
        let release = rollout.release.clone();
        let desired = self.desired_for(&rollout);
        let rollout_is_canary = rollout.canary.is_some();
        let note = match self.policy_summary(&release) {
            Some(policy) => format!("{note} under the {policy}"),
            None => note,
        };
        self.status.rollout = Some(rollout);
        self.event(Transition::RolloutStarted, note, Some(&release));
        self.status.phase = Some(StagePhase::Progressing);
        self.status.message = Some(format!("rolling out {what}"));
        self.health = (
            Health::Progressing,
            "RollingOut",
            format!("rolling out {what}"),
        );
        if rollout_is_canary {
            self.canary = desired;
            self.weight = Some(0);
        } else {
            self.primary = desired;
        }
        self.wake_at.push(later(now, self.plan.progress_deadline));
    }
}
