//! The canary half of the stage machine: starting the canary, walking the steps, promoting,
//! baking, and the fail-safe rules for traffic (analysis is in [`super::analysis`]). Traffic
//! only ever moves to a workload that is available, a failed analysis always ends with all
//! traffic on primary, and no phase completes without evidence.

use std::time::Duration;

use jiff::Timestamp;

use super::analysis::{BACKGROUND, PauseState, humantime};
use super::draft::{Draft, PrePromotion};
use super::events::Transition;
use super::types::{Command, DesiredPrimary};
use crate::api::canary::{CanaryPhase, CanaryProgress};
use crate::api::conditions::Health;
use crate::api::gate::GateList;
use crate::api::release::StagePhaseForRelease as RP;
use crate::api::stage::{ActiveRollout, RolloutDirection, StagePhase};
use crate::schedule::later;
use crate::validation::{AnalysisPlan, CanaryPlan, CanaryStepPlan};

pub fn fresh_progress(now: Timestamp) -> CanaryProgress {
    CanaryProgress {
        phase: CanaryPhase::Starting,
        step: 0,
        step_started_at: now,
        weight: 0,
        paused_reason: None,
        baking_since: None,
        inconclusive_since: None,
        inconclusive_scope: None,
        paused_from: None,
        drift_corrections: 0,
        drift_since: None,
        analysis: Vec::new(),
    }
}

impl Draft<'_> {
    /// Advances a forward canary rollout by one decision.
    pub(super) fn continue_canary(&mut self, plan: &CanaryPlan, mut rollout: ActiveRollout) {
        let now = self.input.now;
        let mut progress = rollout
            .canary
            .clone()
            .unwrap_or_else(|| fresh_progress(now));
        let canary_ready = self.canary_serves(&rollout);
        let artifacts = self
            .release(&rollout.release)
            .map(|r| r.artifacts.clone())
            .unwrap_or_default();
        self.place_workloads(&rollout, &progress, &artifacts);
        if let Some(why) = self.input.invalid {
            let why = format!("the stage's spec became invalid during the rollout: {why}");
            return self.fail_rollout_safely(&rollout, &progress, "InvalidSpec", why);
        }
        if self.input.command == Some(Command::Abort) {
            let why = "aborted by an abort command".to_string();
            return self.fail_rollout_safely(&rollout, &progress, "Aborted", why);
        }
        let promote = self.input.command == Some(Command::Promote);
        if promote && progress.inconclusive_since.is_some() {
            self.promote_past_missing_data(&rollout, &mut progress);
        }
        // Background analysis watches every phase but Starting.
        if let (true, Some(bg)) = (progress.phase != CanaryPhase::Starting, &plan.background) {
            let started = rollout.started_at;
            if let Some(verdict) = self.run_analysis(&mut progress, BACKGROUND, bg, started) {
                return self.analysis_verdict(plan, &mut rollout, progress, verdict, bg);
            }
        }
        if progress.inconclusive_since.is_some() {
            match self.inconclusive_pause(plan, &mut rollout, &mut progress) {
                PauseState::Resumed => {}
                PauseState::Paused => return self.hold_paused(rollout, progress, canary_ready),
                PauseState::Ended => return,
            }
        }
        match progress.phase {
            CanaryPhase::Starting => {
                if !self.start_canary(&rollout, &mut progress, canary_ready) {
                    return;
                }
            }
            CanaryPhase::Stepping | CanaryPhase::Paused => {
                self.step(plan, &mut rollout, &mut progress, canary_ready)
            }
            CanaryPhase::Promoting => match self.pre_promotion(&mut rollout, &progress) {
                PrePromotion::Passed => self.promote(plan, &mut rollout, &mut progress, &artifacts),
                PrePromotion::Waiting => {}
                PrePromotion::Ended => return,
            },
            CanaryPhase::Baking => {
                if self.bake(plan, &progress) {
                    rollout.canary = Some(progress);
                    return self.finish_forward(&rollout);
                }
            }
        }
        self.record_progress(rollout, progress);
    }

    /// A person's promote on a rollout paused for want of data: a paused bake goes on baking
    /// (never from the start); elsewhere the pause is lifted and the promote acts as on any
    /// paused rollout.
    fn promote_past_missing_data(
        &mut self,
        rollout: &ActiveRollout,
        progress: &mut CanaryProgress,
    ) {
        let paused_at = progress.inconclusive_since.take();
        progress.inconclusive_scope = None;
        progress.paused_from = None;
        // The bake goes on with the time it had left when it paused, not from its start.
        if let Some(paused_at) = paused_at {
            let paused_for = self.input.now.duration_since(paused_at).unsigned_abs();
            progress.baking_since = progress.baking_since.map(|b| later(b, paused_for));
        }
        // Missing data is counted afresh: it pauses again only after another full run of it.
        for a in &mut progress.analysis {
            a.consecutive_inconclusive = 0;
        }
        if progress.baking_since.is_none() {
            return;
        }
        progress.phase = CanaryPhase::Baking;
        progress.paused_reason = None;
        let note = format!(
            "{}: paused bake resumed by a promote command",
            rollout.version
        );
        self.event(Transition::Resumed, note, Some(&rollout.release.clone()));
    }

    /// Whether the canary runs this rollout's release with pods to serve.
    pub(super) fn canary_serves(&self, rollout: &ActiveRollout) -> bool {
        let want = (rollout.release.clone(), rollout.template.clone());
        self.input.canary.is_some_and(|c| {
            c.available && super::draft::runs(c.release.as_deref(), c.template.as_deref(), &want)
        })
    }

    /// The weight a rollout that holds still keeps on the canary: its own while the canary
    /// serves and the release is not promoted yet, else none.
    pub(super) fn held_weight(&self, rollout: &ActiveRollout, progress: &CanaryProgress) -> i32 {
        match self.canary_serves(rollout) && progress.baking_since.is_none() {
            true => progress.weight,
            false => 0,
        }
    }

    /// A rollout paused for want of data keeps traffic only on a canary that serves, and rolls
    /// back if the canary stops serving for the progress deadline.
    fn hold_paused(
        &mut self,
        rollout: ActiveRollout,
        progress: CanaryProgress,
        canary_ready: bool,
    ) {
        let baking = progress.baking_since.is_some();
        self.weight = Some(self.held_weight(&rollout, &progress));
        let deadline = later(progress.step_started_at, self.plan.progress_deadline);
        if !baking && !canary_ready && self.input.now >= deadline {
            let why = "the canary stopped being available".to_string();
            return self.fail_rollout_safely(&rollout, &progress, "CanaryUnavailable", why);
        }
        self.record_progress(rollout, progress);
    }

    /// Whether the bake is over: its time is up and every background gate passed since it
    /// began, with its last measurement. Missing data extends it.
    fn bake(&mut self, plan: &CanaryPlan, progress: &CanaryProgress) -> bool {
        self.weight = Some(0);
        let now = self.input.now;
        let since = progress.baking_since.unwrap_or(now);
        let done_at = later(since, plan.bake);
        if now < done_at {
            self.wake_at.push(done_at);
            return false;
        }
        match &plan.background {
            None => true,
            Some(bg) => self.evidence(progress, BACKGROUND, bg, since).is_ok(),
        }
    }

    /// What each workload runs: until promotion the primary keeps the previous release and the
    /// canary runs the new one; once promoted, the primary runs it and the canary drains, even
    /// while the bake is paused.
    fn place_workloads(
        &mut self,
        rollout: &ActiveRollout,
        progress: &CanaryProgress,
        artifacts: &[crate::api::release::Artifact],
    ) {
        let release = DesiredPrimary::Release {
            name: rollout.release.clone(),
            artifacts: artifacts.to_vec(),
            template: rollout.template.clone(),
        };
        if progress.baking_since.is_some() {
            self.drain_canary();
            self.primary = Some(release);
        } else {
            self.canary = Some(release);
            self.keep_primary_on_previous(rollout);
        }
    }

    /// The canary starts with no traffic; steps begin once it is available. False when the
    /// rollout failed instead.
    fn start_canary(
        &mut self,
        rollout: &ActiveRollout,
        progress: &mut CanaryProgress,
        canary_ready: bool,
    ) -> bool {
        let now = self.input.now;
        let deadline = later(rollout.started_at, self.plan.progress_deadline);
        self.weight = Some(0);
        if canary_ready {
            progress.phase = CanaryPhase::Stepping;
            progress.step = 0;
            progress.step_started_at = now;
            self.wake_at.push(now);
        } else if now >= deadline {
            let detail = self
                .input
                .canary
                .map(|c| format!("{} replicas, available: {}", c.replicas, c.available))
                .unwrap_or_else(|| "not created".into());
            let why = format!("canary not available within the progress deadline ({detail})");
            let p = progress.clone();
            self.fail_rollout_safely(rollout, &p, "ProgressDeadlineExceeded", why);
            return false;
        } else {
            self.wake_at.push(deadline);
        }
        true
    }

    /// A forward rollout still in progress keeps its progress in the status.
    fn record_progress(&mut self, mut rollout: ActiveRollout, mut progress: CanaryProgress) {
        let forward = self
            .status
            .rollout
            .as_ref()
            .is_some_and(|r| r.direction == RolloutDirection::Forward);
        if !forward {
            return;
        }
        if matches!(
            progress.phase,
            CanaryPhase::Stepping | CanaryPhase::Paused | CanaryPhase::Promoting
        ) {
            self.scale_weight = Some(progress.weight);
        }
        self.describe_canary(&rollout, &progress);
        self.correct_drift(&rollout, &mut progress);
        rollout.canary = Some(progress);
        self.status.rollout = Some(rollout);
    }

    fn step(
        &mut self,
        plan: &CanaryPlan,
        rollout: &mut ActiveRollout,
        progress: &mut CanaryProgress,
        canary_ready: bool,
    ) {
        let now = self.input.now;
        // Traffic only ever goes to an available canary.
        self.weight = Some(if canary_ready { progress.weight } else { 0 });
        if !canary_ready && now >= later(progress.step_started_at, self.plan.progress_deadline) {
            let p = progress.clone();
            let why = "the canary stopped being available".to_string();
            return self.fail_rollout_safely(rollout, &p, "CanaryUnavailable", why);
        }
        if let Some(problem) = self.input.canary.and_then(|c| c.router_problem.clone()) {
            let deadline = later(progress.step_started_at, self.plan.progress_deadline);
            if now >= deadline {
                let p = progress.clone();
                let why = format!("the traffic router cannot tell the weight in effect: {problem}");
                return self.fail_rollout_safely(rollout, &p, "TrafficUnknown", why);
            }
            self.wake_at.push(deadline);
        }
        let promote = self.input.command == Some(Command::Promote);
        if progress.phase == CanaryPhase::Paused {
            if promote {
                self.resume_by_hand(plan, rollout, progress);
            }
            return;
        }
        if promote {
            let release = rollout.release.clone();
            let note = "remaining steps skipped by a promote command".to_string();
            let at = Some(progress.step.max(0) as u32);
            self.event_at(Transition::PromotedByHand, note, Some(&release), at);
            return self.promote_by_hand(plan, progress);
        }
        let Some(step) = plan.steps.get(progress.step as usize).cloned() else {
            return self.begin_promotion(progress);
        };
        match step {
            CanaryStepPlan::SetWeight(w) if plan.switch_step == Some(progress.step as usize) => {
                self.switch(plan, rollout, progress, w, canary_ready)
            }
            CanaryStepPlan::SetWeight(w) => {
                self.set_weight(plan, rollout, progress, w, canary_ready)
            }
            CanaryStepPlan::Pause(Some(d)) => {
                let until = later(progress.step_started_at, d);
                if now >= until {
                    self.next_step(plan, progress);
                } else {
                    self.wake_at.push(until);
                }
            }
            CanaryStepPlan::Pause(None) => {
                progress.phase = CanaryPhase::Paused;
                progress.paused_reason =
                    Some("waiting for a promote command (a StageCommand)".into());
            }
            CanaryStepPlan::Analysis(analysis) => {
                self.analysis_step(plan, rollout, progress, &analysis)
            }
            // Waiting, or failed and rolling back: either way this step is where it stands.
            CanaryStepPlan::Checks => {
                if let PrePromotion::Passed = self.pre_promotion(rollout, progress) {
                    self.next_step(plan, progress);
                }
            }
        }
    }

    /// A person's promote on a paused rollout: past a `pause: {}` step it goes on to the next
    /// step; a rollout paused for any other reason is promoted.
    fn resume_by_hand(
        &mut self,
        plan: &CanaryPlan,
        rollout: &ActiveRollout,
        progress: &mut CanaryProgress,
    ) {
        if progress.baking_since.is_some() {
            // Promoted already: the bake goes on, it does not start again.
            return self.promote_past_missing_data(rollout, progress);
        }
        let at_manual_pause = matches!(
            plan.steps.get(progress.step as usize),
            Some(CanaryStepPlan::Pause(None))
        );
        progress.phase = CanaryPhase::Stepping;
        progress.paused_reason = None;
        let (kind, note) = match at_manual_pause {
            true => (Transition::Resumed, "resumed by a promote command"),
            false => (
                Transition::PromotedByHand,
                "paused rollout promoted by a promote command",
            ),
        };
        let release = rollout.release.clone();
        let at = Some(progress.step.max(0) as u32);
        self.event_at(kind, note.into(), Some(&release), at);
        match at_manual_pause {
            true => self.next_step(plan, progress),
            false => self.promote_by_hand(plan, progress),
        }
    }

    /// Promotion asked for by a person: on to blue-green's switch while it is still ahead
    /// (or under way), else straight to promotion.
    fn promote_by_hand(&mut self, plan: &CanaryPlan, progress: &mut CanaryProgress) {
        match plan.switch_step {
            Some(switch) if switch >= progress.step.max(0) as usize => {
                progress.phase = CanaryPhase::Stepping;
                progress.paused_reason = None;
                if progress.step as usize != switch {
                    progress.step = switch as i32;
                    progress.step_started_at = self.input.now;
                }
                self.wake_at.push(self.input.now);
            }
            _ => self.begin_promotion(progress),
        }
    }

    /// Blue-green's switch: only once the preview checks have passed (a promote may have
    /// skipped their step, never them) and the preview runs in full; once all traffic is on
    /// it, a pod restarting there does not send it back.
    fn switch(
        &mut self,
        plan: &CanaryPlan,
        rollout: &mut ActiveRollout,
        progress: &mut CanaryProgress,
        weight: i32,
        canary_ready: bool,
    ) {
        match self.pre_promotion(rollout, progress) {
            PrePromotion::Passed => {}
            PrePromotion::Waiting | PrePromotion::Ended => return,
        }
        // Decided already (the status says so), whatever the Service shows this moment.
        let switched = progress.weight == weight;
        let complete = self.input.canary.is_some_and(|c| c.complete);
        if switched || canary_ready && complete {
            return self.set_weight(plan, rollout, progress, weight, canary_ready);
        }
        self.weight = Some(0);
        let deadline = later(progress.step_started_at, self.plan.progress_deadline);
        if self.input.now >= deadline {
            let why = "the preview did not run in full within the progress deadline".to_string();
            let p = progress.clone();
            return self.fail_rollout_safely(rollout, &p, "CanaryUnavailable", why);
        }
        // The preview's Deployment changing wakes the stage; the deadline is the backstop.
        self.wake_at.push(deadline);
    }

    fn set_weight(
        &mut self,
        plan: &CanaryPlan,
        rollout: &ActiveRollout,
        progress: &mut CanaryProgress,
        weight: i32,
        canary_ready: bool,
    ) {
        let w = weight.min(plan.max_weight);
        if progress.weight != w {
            progress.weight = w;
            let release = rollout.release.clone();
            self.event(
                Transition::WeightChanged,
                format!("canary weight {w}%"),
                Some(&release),
            );
        }
        self.weight = Some(if canary_ready { w } else { 0 });
        let in_effect = self.input.canary.and_then(|c| c.weight_in_effect) == Some(w);
        let router_lost = self
            .input
            .canary
            .is_some_and(|c| c.router_problem.is_some());
        if canary_ready && in_effect {
            self.next_step(plan, progress);
        } else if router_lost {
            // Looked at again now and then to see whether the route is back, and at the deadline.
            self.wake_at
                .push(later(self.input.now, Duration::from_secs(10)));
        } else {
            self.wake_at
                .push(later(self.input.now, Duration::from_secs(1)));
        }
    }

    fn analysis_step(
        &mut self,
        plan: &CanaryPlan,
        rollout: &mut ActiveRollout,
        progress: &mut CanaryProgress,
        analysis: &AnalysisPlan,
    ) {
        let scope = format!("step-{}", progress.step);
        let started = progress.step_started_at;
        if let Some(verdict) = self.run_analysis(progress, &scope, analysis, started) {
            let p = progress.clone();
            self.analysis_verdict(plan, rollout, p, verdict, analysis);
            if let Some(r) = self.status.rollout.as_ref().and_then(|r| r.canary.clone()) {
                *progress = r;
            }
            return;
        }
        let passed = analysis.gates.iter().all(|g| {
            progress.analysis.iter().any(|a| {
                let last_passed = a.last_verdict == Some(crate::api::release::GateVerdict::Passed);
                a.scope == scope && &a.gate == g && a.successes >= analysis.count && last_passed
            })
        });
        if passed {
            self.next_step(plan, progress);
        }
    }

    fn next_step(&mut self, plan: &CanaryPlan, progress: &mut CanaryProgress) {
        progress.step += 1;
        progress.step_started_at = self.input.now;
        self.wake_at.push(self.input.now);
        if progress.step as usize >= plan.steps.len() {
            self.begin_promotion(progress);
        }
    }

    fn begin_promotion(&mut self, progress: &mut CanaryProgress) {
        progress.phase = CanaryPhase::Promoting;
        progress.step_started_at = self.input.now;
        progress.paused_reason = None;
        self.wake_at.push(self.input.now);
    }

    /// Primary takes the canary's template; only once it is available does traffic move to it.
    fn promote(
        &mut self,
        plan: &CanaryPlan,
        rollout: &mut ActiveRollout,
        progress: &mut CanaryProgress,
        artifacts: &[crate::api::release::Artifact],
    ) {
        let now = self.input.now;
        let want = (rollout.release.clone(), rollout.template.clone());
        let runs_it = |p: &crate::machine::PrimaryView| {
            super::draft::runs(p.release.as_deref(), p.template.as_deref(), &want)
        };
        let switched = self.input.primary.is_some_and(runs_it);
        // The primary takes the release only once the background analysis has a passing last
        // measurement; until then the split stays as it is.
        let evidence = plan
            .background
            .as_ref()
            .is_none_or(|bg| self.promotion_evidence(progress, bg));
        if !evidence && !switched {
            return self.await_promotion_evidence(rollout, progress);
        }
        self.primary = Some(DesiredPrimary::Release {
            name: rollout.release.clone(),
            artifacts: artifacts.to_vec(),
            template: rollout.template.clone(),
        });
        let primary_ready = self
            .input
            .primary
            .is_some_and(|p| p.available && runs_it(p));
        if primary_ready && evidence {
            // All traffic to the promoted primary; a replica-ratio canary shrinks to nothing.
            progress.weight = 0;
            self.weight = Some(0);
            // Without a route, nothing sends traffic to the canary.
            let moved = self
                .input
                .canary
                .is_some_and(|c| c.weight_in_effect == Some(0) || c.router_problem.is_some());
            if moved {
                self.drain_canary();
                progress.phase = CanaryPhase::Baking;
                progress.baking_since = Some(now);
                progress.weight = 0;
                // CURRENT shows what serves: the primary runs the release from here on.
                self.status.current_release = Some(rollout.release.clone());
                self.status.current_version = Some(rollout.version.clone());
                self.event(
                    Transition::Promoted,
                    format!("{} is on primary with all traffic", rollout.version),
                    Some(&rollout.release.clone()),
                );
            }
            self.wake_at.push(later(now, Duration::from_secs(1)));
        } else {
            // Keep the split as it is: the canary is available, the updating primary may not be.
            self.weight = Some(progress.weight);
            let deadline = later(progress.step_started_at, self.plan.progress_deadline);
            if now >= deadline {
                let p = progress.clone();
                let detail = self
                    .input
                    .primary
                    .map(|p| p.detail.clone())
                    .unwrap_or_default();
                let why = match evidence {
                    true => format!("primary not available with the new release within the progress deadline ({detail})"),
                    false => "no passing measurement of the background analysis within the progress deadline".into(),
                };
                return self.fail_rollout_safely(rollout, &p, "ProgressDeadlineExceeded", why);
            }
            self.wake_at.push(deadline);
        }
    }

    /// Starts the rollback of a canary rollout without sending traffic to a broken workload.
    pub(super) fn fail_rollout_safely(
        &mut self,
        rollout: &ActiveRollout,
        progress: &CanaryProgress,
        reason: &'static str,
        message: String,
    ) {
        let mut failed = rollout.clone();
        failed.canary = Some(progress.clone());
        self.start_rollback(&failed, reason, message);
        self.canary_rollback_traffic(&failed, progress);
    }

    /// During a canary rollback: back to the previous release on primary, traffic to primary
    /// only once it is available, then the canary scaled to zero.
    pub(super) fn continue_canary_rollback(&mut self, rollout: &ActiveRollout) -> bool {
        let progress = rollout
            .canary
            .clone()
            .unwrap_or_else(|| fresh_progress(self.input.now));
        self.canary_rollback_traffic(rollout, &progress)
    }

    fn canary_rollback_traffic(
        &mut self,
        rollout: &ActiveRollout,
        progress: &CanaryProgress,
    ) -> bool {
        let previous = rollout.previous_release.clone();
        let previous = previous.map(|p| (p, rollout.previous_template.clone()));
        // Blue-green's previous release is warm at full size: losing a pod of it must not
        // keep all traffic on the failing side.
        // Not once promotion began: the primary may then hold pods of both releases.
        let switch = rollout
            .routing
            .as_ref()
            .is_some_and(|r| r.service_switch.is_some())
            && progress.phase != CanaryPhase::Promoting
            && progress.baking_since.is_none();
        let primary_ok = match (&previous, self.input.primary) {
            (Some(prev), Some(p)) => {
                (p.available || switch && p.serving)
                    && super::draft::runs(p.release.as_deref(), p.template.as_deref(), prev)
            }
            (None, p) => p.is_none_or(|p| p.replicas == 0),
            (Some(_), None) => false,
        };
        let canary_ok = self.canary_serves(rollout);
        if primary_ok || !canary_ok {
            self.weight = Some(0);
        } else {
            self.weight = Some(progress.weight);
        }
        // Without a router the canary's share is its share of the pods: scaling it down is
        // what takes its traffic away, so that cannot wait for the traffic to leave first.
        let by_replicas = rollout.routing.is_none()
            && self
                .plan
                .canary
                .as_ref()
                .is_none_or(|c| c.routing.is_none());
        let moved = by_replicas
            || self
                .input
                .canary
                .is_none_or(|c| c.weight_in_effect.is_none_or(|w| w == 0));
        if primary_ok && moved {
            self.drain_canary();
            return self.draining() || self.input.canary.is_none_or(|c| c.replicas == 0);
        }
        if !canary_ok || primary_ok {
            self.canary = Some(DesiredPrimary::Empty).filter(|_| moved);
        }
        false
    }

    pub(super) fn keep_primary_on_previous(&mut self, rollout: &ActiveRollout) {
        self.primary = self.previous_of(rollout);
    }

    pub(super) fn describe_canary(&mut self, rollout: &ActiveRollout, progress: &CanaryProgress) {
        let steps = self.plan.canary.as_ref().map_or(0, |c| c.steps.len());
        let reason = progress.paused_reason.clone().unwrap_or_default();
        let what = match progress.phase {
            CanaryPhase::Starting => "starting the canary".to_string(),
            CanaryPhase::Stepping => format!(
                "step {}/{steps}, canary at {}%",
                progress.step + 1,
                progress.weight
            ),
            CanaryPhase::Paused if progress.baking_since.is_some() => {
                format!("paused while baking: {reason}")
            }
            CanaryPhase::Paused => format!(
                "paused at step {}/{steps} ({}%): {reason}",
                (progress.step + 1).min(steps as i32),
                progress.weight
            ),
            CanaryPhase::Promoting if rollout.running(GateList::PrePromotion) => format!(
                "checking the canary at {}% before promotion (prePromotion)",
                progress.weight
            ),
            CanaryPhase::Promoting => "promoting the canary to primary".to_string(),
            CanaryPhase::Baking => self.baking(progress),
        };
        let blue_green = self.plan.canary.as_ref().and_then(|c| c.switch_step);
        let what = match (blue_green, progress.phase) {
            (Some(switch), CanaryPhase::Stepping) if (progress.step as usize) < switch => {
                format!("checking the preview ({what}, no traffic yet)")
            }
            (Some(_), CanaryPhase::Stepping) if progress.weight == 100 => {
                format!("switched ({what}); the previous release is kept up to switch back")
            }
            (Some(_), CanaryPhase::Stepping) => {
                format!("switching once the preview is checked and runs in full ({what})")
            }
            _ => what,
        };
        let kind = if blue_green.is_some() {
            "blue-green"
        } else {
            "canary"
        };
        let message = format!("{kind} {}: {what}", rollout.version);
        self.status.phase = Some(StagePhase::Progressing);
        self.status.message = Some(message.clone());
        self.health = if progress.phase == CanaryPhase::Paused {
            (Health::Stalled, "Paused", message.clone())
        } else {
            (Health::Progressing, "Canary", message.clone())
        };
        self.set_entry(&rollout.release, RP::Progressing, "Canary", what);
    }

    /// `promoted; baking, 40s left`, or what the bake waits for once its time is up.
    fn baking(&self, progress: &CanaryProgress) -> String {
        let now = self.input.now;
        let since = progress.baking_since.unwrap_or(now);
        let Some(plan) = self.plan.canary.as_ref() else {
            return "promoted; baking".into();
        };
        let done_at = later(since, plan.bake);
        if now < done_at {
            let left = humantime(done_at.duration_since(now).unsigned_abs());
            return format!("promoted; baking, {left} left");
        }
        match plan
            .background
            .as_ref()
            .map(|bg| self.evidence(progress, BACKGROUND, bg, since))
        {
            Some(Err(waiting)) => format!("promoted; bake time is up, {waiting}"),
            _ => "promoted; baked".into(),
        }
    }
}
