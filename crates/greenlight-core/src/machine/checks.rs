//! The check lists of a rollout: `preRollout` before any workload changes, `prePromotion`
//! before traffic moves to a canary's new primary, and `verify` once the release runs here.
//! Each list runs in the user's order up to the first gate that does not pass. A failure
//! fails the release before its rollout (no workload touched) or rolls it back, a list that
//! neither passes nor fails in its time ends the same way (or, for `verify` with
//! `onTimeout: hold`, waits for a person), and a release counts as `Succeeded` here only once
//! its verification passed.

use super::draft::{Draft, PrePromotion};
use super::events::Transition;
use super::types::{Command, GateReport};
use crate::api::canary::CanaryProgress;
use crate::api::conditions::Health;
use crate::api::gate::GateList;
use crate::api::release::{GateResultStatus, GateVerdict, StagePhaseForRelease as RP};
use crate::api::stage::{ActiveRollout, Checks, OnTimeout, RolloutOutcome, StagePhase};
use crate::schedule::later;

/// Where a check list stands after this pass's report.
enum ListVerdict {
    Passed,
    /// The gate that failed, and why.
    Failed(String, String),
    /// Why it waits (pending, inconclusive or invalid: only a failure fails a list).
    Waiting(String),
}

impl Draft<'_> {
    /// The pre-rollout checks of a rollout that has touched no workload yet.
    pub(super) fn begin_pre_rollout(&mut self, mut rollout: ActiveRollout) {
        let now = self.input.now;
        rollout.checks = Some(Checks {
            running: Some(GateList::PreRollout),
            since: Some(now),
            gates: self.plan.gates_in(GateList::PreRollout).to_vec(),
            ..Checks::default()
        });
        let note = format!(
            "{} will roll out once its pre-rollout checks pass",
            rollout.what()
        );
        self.event(Transition::RolloutUpcoming, note, Some(&rollout.release));
        // Recorded first: a configuration change's checks leave the release's entry alone.
        self.status.rollout = Some(rollout.clone());
        self.show_checking(&rollout, "running its pre-rollout checks".into());
        // Evaluated on the next pass, so the notice is out before a check starts.
        self.wake_at.push(now);
    }

    /// A pass of the pre-rollout checks: the workloads stay as they are until they pass.
    pub(super) fn continue_pre_rollout(&mut self, rollout: ActiveRollout) {
        if self.plan.canary.is_some() {
            self.weight = Some(0);
        }
        let stop = match (self.input.invalid, &self.input.command) {
            (Some(why), _) => Some((
                "InvalidSpec",
                format!("the stage's spec became invalid: {why}"),
            )),
            (None, Some(Command::Abort)) => Some(("Aborted", "aborted by an abort command".into())),
            _ if self.release(&rollout.release).is_none() => {
                Some(("ReleaseDeleted", "the Release was deleted".to_string()))
            }
            _ => None,
        };
        if let Some((reason, why)) = stop {
            return self.fail_before_rollout(&rollout, reason, why);
        }
        let Some(report) = self.report_for(GateList::PreRollout, &rollout) else {
            self.checks_due = Some(self.due(&rollout, GateList::PreRollout));
            return self.show_checking(&rollout, "running its pre-rollout checks".into());
        };
        match self.judge_list(GateList::PreRollout, &rollout, &report) {
            ListVerdict::Passed => self.after_pre_rollout(rollout),
            ListVerdict::Failed(gate, why) => {
                let why = format!("gate '{gate}' failed: {why}");
                self.fail_before_rollout(&rollout, "PreRolloutFailed", why)
            }
            ListVerdict::Waiting(why) => {
                let since = rollout.checks.as_ref().and_then(|c| c.since);
                let deadline = later(
                    since.unwrap_or(rollout.started_at),
                    self.plan.progress_deadline,
                );
                if self.input.now >= deadline {
                    let why = format!("{why}; not passed within the progress deadline");
                    return self.fail_before_rollout(&rollout, "PreRolloutTimedOut", why);
                }
                self.wake_at.push(deadline);
                self.show_checking(&rollout, why);
                self.status.rollout = Some(rollout);
            }
        }
    }

    /// The pre-rollout checks passed: the rollout starts on the workloads now, and its
    /// progress deadline counts from here.
    fn after_pre_rollout(&mut self, mut rollout: ActiveRollout) {
        let now = self.input.now;
        mark_passed(&mut rollout, GateList::PreRollout);
        rollout.started_at = now;
        let canary = self.plan.canary.is_some() && rollout.previous_release.is_some();
        rollout.canary = canary.then(|| super::canary::fresh_progress(now));
        rollout.routing = self.plan.canary.as_ref().and_then(|c| c.routing.clone());
        self.set_entry(
            &rollout.release,
            RP::Progressing,
            "RollingOut",
            "rolling out".into(),
        );
        let note = format!(
            "rolling out {}: its pre-rollout checks passed",
            rollout.what()
        );
        self.begin_workloads(rollout, note);
    }

    /// A release that failed before its rollout: nothing to roll back, the stage runs what
    /// it ran.
    fn fail_before_rollout(&mut self, rollout: &ActiveRollout, reason: &'static str, why: String) {
        self.set_entry(&rollout.release, RP::Failed, reason, why.clone());
        let full = format!("{reason}: {why}");
        self.record(rollout, RolloutOutcome::RolledBack, Some(full.clone()));
        let running = self
            .status
            .current_version
            .clone()
            .unwrap_or_else(|| "nothing".into());
        let note = format!(
            "{} failed before its rollout: {why}; running {running}",
            rollout.what()
        );
        self.event(Transition::PreRolloutFailed, note, Some(&rollout.release));
        if let Some(event) = self.events.last_mut() {
            event.cause = Some(super::events::FailureCause {
                reason: reason.to_string(),
                gate: super::events::failed_gate(&why),
            });
        }
        self.fail_target_change(rollout);
        self.status.rollout = None;
        self.status.phase = Some(StagePhase::Failed);
        let message = format!(
            "{} failed before its rollout ({full}); running {running}",
            rollout.version
        );
        self.status.message = Some(message.clone());
        self.health = (Health::Stalled, reason, message);
        self.wake_at.push(self.input.now);
    }

    /// The release runs here (rolled out, or promoted and baked): it succeeds once its
    /// verification passes.
    pub(super) fn finish_forward(&mut self, rollout: &ActiveRollout) {
        // A verification under way runs to its end on the gates it started with, whatever
        // the spec says now.
        if rollout.running(GateList::Verify) {
            return self.continue_verify(rollout.clone());
        }
        let verify = &self.plan.checks.verify;
        if verify.is_empty() || rollout.passed(GateList::Verify) {
            return self.complete_forward(rollout);
        }
        self.start_verify(rollout.clone())
    }

    /// Verification starts in a pass of its own: the run's start is recorded before any of
    /// its gates starts a Job named by it.
    fn start_verify(&mut self, mut rollout: ActiveRollout) {
        let now = self.input.now;
        let checks = rollout.checks.get_or_insert_with(Checks::default);
        (checks.running, checks.since, checks.held) = (Some(GateList::Verify), Some(now), false);
        checks.gates = self.plan.checks.verify.clone();
        let note = format!("{} runs here; verifying it", rollout.what());
        let release = rollout.release.clone();
        self.event(Transition::VerificationStarted, note, Some(&release));
        self.wake_at.push(now);
        self.show_verifying(rollout, "starting its verification".into());
    }

    fn continue_verify(&mut self, rollout: ActiveRollout) {
        let now = self.input.now;
        let checks = rollout.checks.clone().unwrap_or_default();
        let (since, held) = (checks.since.unwrap_or(now), checks.held);
        if held && self.input.command == Some(Command::Promote) {
            let note = format!(
                "{}: its held verification was accepted by a promote command",
                rollout.what()
            );
            let release = rollout.release.clone();
            self.event(Transition::PromotedByHand, note, Some(&release));
            return self.verified(rollout);
        }
        let Some(report) = self.report_for(GateList::Verify, &rollout) else {
            self.checks_due = Some(self.due(&rollout, GateList::Verify));
            return self.show_verifying(rollout, "verifying".into());
        };
        match self.judge_list(GateList::Verify, &rollout, &report) {
            ListVerdict::Passed => self.verified(rollout),
            ListVerdict::Failed(gate, why) => {
                let why = format!("gate '{gate}' failed: {why}");
                self.fail_checked(&rollout, "VerificationFailed", why)
            }
            ListVerdict::Waiting(why) => self.verification_waits(rollout, since, why),
        }
    }

    /// A verification whose primary became unavailable: nothing is judged until it is
    /// available again, and the verification's timeout still runs.
    pub(super) fn verify_while_unavailable(&mut self, rollout: ActiveRollout, detail: &str) {
        let since = rollout.checks.as_ref().and_then(|c| c.since);
        let since = since.unwrap_or(self.input.now);
        let why = format!("the primary is not available ({detail})");
        self.verification_waits(rollout, since, why)
    }

    fn verification_waits(
        &mut self,
        mut rollout: ActiveRollout,
        since: jiff::Timestamp,
        why: String,
    ) {
        let timeout = self.plan.checks.verify_timeout;
        let deadline = later(since, timeout);
        if self.input.now < deadline {
            self.wake_at.push(deadline);
            return self.show_verifying(rollout, why);
        }
        let secs = timeout.as_secs();
        if self.plan.checks.on_timeout == OnTimeout::Rollback {
            let why = format!("verification did not pass within {secs}s: {why}");
            return self.fail_checked(&rollout, "VerificationTimedOut", why);
        }
        let checks = rollout.checks.get_or_insert_with(Checks::default);
        if !checks.held {
            checks.held = true;
            let note = format!(
                "{}: verification did not pass within {secs}s ({why}); held for a person's promote or abort",
                rollout.what()
            );
            self.event(Transition::VerificationHeld, note, Some(&rollout.release));
        }
        let why = format!("held after {secs}s for a promote or an abort: {why}");
        self.show_verifying(rollout, why);
        self.health.0 = Health::Stalled;
        self.health.1 = "VerificationHeld";
    }

    fn verified(&mut self, mut rollout: ActiveRollout) {
        mark_passed(&mut rollout, GateList::Verify);
        let note = format!("{} passed its verification", rollout.what());
        self.event(Transition::Verified, note, Some(&rollout.release));
        self.complete_forward(&rollout);
    }

    /// A check after the workloads changed failed: the rollout is rolled back, a canary's
    /// without sending traffic to a broken workload.
    fn fail_checked(&mut self, rollout: &ActiveRollout, reason: &'static str, why: String) {
        match rollout.canary.clone() {
            Some(progress) => self.fail_rollout_safely(rollout, &progress, reason, why),
            None => self.start_rollback(rollout, reason, why),
        }
    }

    /// A pass of a canary's pre-promotion checks, once its steps are done and before the
    /// primary takes the release. The split stays as it is while they run.
    pub(super) fn pre_promotion(
        &mut self,
        rollout: &mut ActiveRollout,
        progress: &CanaryProgress,
    ) -> PrePromotion {
        let list = GateList::PrePromotion;
        let planned = !self.plan.checks.pre_promotion.is_empty();
        if !rollout.running(list) && (!planned || rollout.passed(list)) {
            return PrePromotion::Passed;
        }
        let now = self.input.now;
        self.weight = Some(progress.weight);
        let checks = rollout.checks.get_or_insert_with(Checks::default);
        if checks.running != Some(list) {
            // Started in a pass of its own, like verification.
            (checks.running, checks.since) = (Some(list), Some(now));
            checks.gates = self.plan.checks.pre_promotion.clone();
            self.wake_at.push(now);
            return PrePromotion::Waiting;
        }
        let Some(report) = self.report_for(list, rollout) else {
            self.checks_due = Some(self.due(rollout, list));
            return PrePromotion::Waiting;
        };
        match self.judge_list(list, rollout, &report) {
            ListVerdict::Passed => {
                mark_passed(rollout, list);
                PrePromotion::Passed
            }
            ListVerdict::Failed(gate, why) => {
                let why = format!("gate '{gate}' failed: {why}");
                self.fail_rollout_safely(rollout, progress, "PrePromotionFailed", why);
                PrePromotion::Ended
            }
            ListVerdict::Waiting(why) => {
                let deadline = later(progress.step_started_at, self.plan.progress_deadline);
                if now >= deadline {
                    let why = format!("{why}; not passed within the progress deadline");
                    self.fail_rollout_safely(rollout, progress, "PrePromotionTimedOut", why);
                    return PrePromotion::Ended;
                }
                self.wake_at.push(deadline);
                PrePromotion::Waiting
            }
        }
    }

    /// The list to evaluate for `rollout`: since when this run of it runs, and its gates.
    fn due(
        &self,
        rollout: &ActiveRollout,
        list: GateList,
    ) -> (GateList, jiff::Timestamp, Vec<String>) {
        let since = rollout.checks.as_ref().and_then(|c| c.since);
        let gates = pinned(rollout, list).unwrap_or_else(|| self.plan.gates_in(list).to_vec());
        (list, since.unwrap_or(rollout.started_at), gates)
    }

    /// This pass's report for `list` of the rollout's release, if the controller ran it.
    fn report_for(&self, list: GateList, rollout: &ActiveRollout) -> Option<GateReport> {
        self.input
            .gates
            .filter(|r| r.list == list && r.release == rollout.release)
            .cloned()
    }

    /// Records the list's results on the release's entry, announces each gate whose verdict
    /// became final, and says where the list stands.
    fn judge_list(
        &mut self,
        list: GateList,
        rollout: &ActiveRollout,
        report: &GateReport,
    ) -> ListVerdict {
        let names = pinned(rollout, list).unwrap_or_else(|| self.plan.gates_in(list).to_vec());
        let all = self
            .entry(&rollout.release)
            .map(|e| e.checks.clone())
            .unwrap_or_default();
        let previous: Vec<GateResultStatus> = all
            .iter()
            .filter(|g| g.list == Some(list))
            .cloned()
            .collect();
        let (results, blocking) = self.gate_results(&names, report, &previous, Some(list));
        self.announce_checks(list, rollout, &results, &previous);
        self.attach_checks(&rollout.release, list, results);
        match blocking {
            None => ListVerdict::Passed,
            Some((gate, o)) if o.verdict == GateVerdict::Failed => {
                ListVerdict::Failed(gate, o.message)
            }
            Some((gate, o)) => {
                let recheck = later(self.input.now, report.recheck_after);
                self.wake_at
                    .push(o.recheck_at.map_or(recheck, |at| at.min(recheck)));
                ListVerdict::Waiting(format!("gate '{gate}': {}", o.message))
            }
        }
    }

    /// One event per gate whose verdict became `Passed` or `Failed` in this pass.
    fn announce_checks(
        &mut self,
        list: GateList,
        rollout: &ActiveRollout,
        results: &[GateResultStatus],
        previous: &[GateResultStatus],
    ) {
        for r in results {
            let kind = match r.result {
                GateVerdict::Passed => Transition::CheckPassed,
                GateVerdict::Failed => Transition::CheckFailed,
                _ => continue,
            };
            if previous
                .iter()
                .any(|p| p.name == r.name && p.result == r.result)
            {
                continue;
            }
            let verb = match kind {
                Transition::CheckPassed => "passed",
                _ => "failed",
            };
            let note = format!(
                "{}: {} gate '{}' {verb}: {}",
                rollout.what(),
                list.as_str(),
                r.name,
                r.message
            );
            self.event(kind, note, Some(&rollout.release));
            if let Some(event) = self.events.last_mut() {
                event.check = Some((list, r.name.clone()));
            }
        }
    }

    /// The entry's check results: this list's replaced, the others' kept.
    fn attach_checks(&mut self, release: &str, list: GateList, results: Vec<GateResultStatus>) {
        let Some(mut entry) = self.entry(release).cloned() else {
            return;
        };
        let mut checks: Vec<GateResultStatus> = entry
            .checks
            .iter()
            .filter(|g| g.list != Some(list))
            .cloned()
            .collect();
        checks.extend(results);
        if entry.checks != checks {
            entry.checks = checks;
            self.updates.insert(release.to_string(), entry);
        }
    }

    fn show_checking(&mut self, rollout: &ActiveRollout, why: String) {
        let what = rollout.what();
        self.set_entry(&rollout.release, RP::Progressing, "PreRollout", why.clone());
        self.status.phase = Some(StagePhase::Progressing);
        self.status.message = Some(format!("{what}: before its rollout, {why}"));
        self.health = (
            Health::Progressing,
            "PreRollout",
            format!("{what}: before its rollout, {why}"),
        );
    }

    /// Verifying: the release runs here and is not `Succeeded` until its checks pass.
    fn show_verifying(&mut self, rollout: ActiveRollout, why: String) {
        let what = rollout.what();
        self.set_entry(&rollout.release, RP::Progressing, "Verifying", why.clone());
        self.status.phase = Some(StagePhase::Verifying);
        self.status.message = Some(format!("verifying {what}: {why}"));
        self.health = (
            Health::Progressing,
            "Verifying",
            format!("verifying {what}: {why}"),
        );
        self.status.rollout = Some(rollout);
    }
}

/// The gates a running list started with, when it recorded them.
fn pinned(rollout: &ActiveRollout, list: GateList) -> Option<Vec<String>> {
    let checks = rollout
        .checks
        .as_ref()
        .filter(|c| c.running == Some(list))?;
    (!checks.gates.is_empty()).then(|| checks.gates.clone())
}

fn mark_passed(rollout: &mut ActiveRollout, list: GateList) {
    let checks = rollout.checks.get_or_insert_with(Checks::default);
    checks.running = None;
    checks.held = false;
    checks.gates.clear();
    if !checks.passed.contains(&list) {
        checks.passed.push(list);
    }
}
