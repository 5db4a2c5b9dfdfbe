//! The canary half of the stage machine: starting the canary, walking the steps, measuring
//! gates, promoting, baking, and the fail-safe rules for traffic. Traffic only ever moves to a
//! workload that is available, and a failed analysis always ends with all traffic on primary.

use std::time::Duration;

use jiff::Timestamp;

use super::draft::Draft;
use super::events::Transition;
use super::types::{Command, DesiredPrimary, Due, Measurement};
use crate::api::canary::{
    AnalysisProgress, CanaryPhase, CanaryProgress, FailureCounting, FailurePolicy,
};
use crate::api::conditions::Health;
use crate::api::release::{GateVerdict, StagePhaseForRelease as RP};
use crate::api::stage::{ActiveRollout, RolloutDirection, StagePhase};
use crate::schedule::later;
use crate::validation::{AnalysisPlan, CanaryPlan, CanaryStepPlan};

pub const BACKGROUND: &str = "background";

pub fn fresh_progress(now: Timestamp) -> CanaryProgress {
    CanaryProgress {
        phase: CanaryPhase::Starting,
        step: 0,
        step_started_at: now,
        weight: 0,
        paused_reason: None,
        baking_since: None,
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
        let canary_ready = self
            .input
            .canary
            .is_some_and(|c| c.available && c.release.as_deref() == Some(rollout.release.as_str()));
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
        // Background analysis watches every phase but Starting.
        if let (true, Some(bg)) = (progress.phase != CanaryPhase::Starting, &plan.background) {
            let started = rollout.started_at;
            if let Some(verdict) = self.run_analysis(&mut progress, BACKGROUND, bg, started) {
                return self.analysis_verdict(plan, &mut rollout, progress, verdict, bg);
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
            CanaryPhase::Promoting => self.promote(&mut rollout, &mut progress, &artifacts),
            CanaryPhase::Baking => {
                self.weight = Some(0);
                let done_at = later(progress.baking_since.unwrap_or(now), plan.bake);
                if now >= done_at {
                    rollout.canary = Some(progress);
                    return self.finish_forward(&rollout);
                }
                self.wake_at.push(done_at);
            }
        }
        self.record_progress(rollout, progress);
    }

    /// What each workload runs: until promotion the primary keeps the previous release and the
    /// canary runs the new one; once promoted, the primary runs it and the canary stays empty,
    /// even while the bake is paused.
    fn place_workloads(
        &mut self,
        rollout: &ActiveRollout,
        progress: &CanaryProgress,
        artifacts: &[crate::api::release::Artifact],
    ) {
        let release = DesiredPrimary::Release {
            name: rollout.release.clone(),
            artifacts: artifacts.to_vec(),
        };
        if progress.baking_since.is_some() {
            self.canary = Some(DesiredPrimary::Empty);
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
        let deadline = later(rollout.started_at, self.input.plan.progress_deadline);
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
    fn record_progress(&mut self, mut rollout: ActiveRollout, progress: CanaryProgress) {
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
        if !canary_ready
            && now >= later(progress.step_started_at, self.input.plan.progress_deadline)
        {
            let p = progress.clone();
            let why = "the canary stopped being available".to_string();
            return self.fail_rollout_safely(rollout, &p, "CanaryUnavailable", why);
        }
        if let Some(problem) = self.input.canary.and_then(|c| c.router_problem.clone()) {
            let deadline = later(progress.step_started_at, self.input.plan.progress_deadline);
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
            return self.begin_promotion(progress);
        }
        let Some(step) = plan.steps.get(progress.step as usize).cloned() else {
            return self.begin_promotion(progress);
        };
        match step {
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
            false => self.begin_promotion(progress),
        }
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
            progress
                .analysis
                .iter()
                .any(|a| a.scope == scope && &a.gate == g && a.successes >= analysis.count)
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
        rollout: &mut ActiveRollout,
        progress: &mut CanaryProgress,
        artifacts: &[crate::api::release::Artifact],
    ) {
        let now = self.input.now;
        self.primary = Some(DesiredPrimary::Release {
            name: rollout.release.clone(),
            artifacts: artifacts.to_vec(),
        });
        let primary_ready = self
            .input
            .primary
            .is_some_and(|p| p.available && p.release.as_deref() == Some(rollout.release.as_str()));
        if primary_ready {
            // All traffic to the promoted primary; a replica-ratio canary shrinks to nothing.
            progress.weight = 0;
            self.weight = Some(0);
            // Without a route, nothing sends traffic to the canary.
            let moved = self
                .input
                .canary
                .is_some_and(|c| c.weight_in_effect == Some(0) || c.router_problem.is_some());
            if moved {
                self.canary = Some(DesiredPrimary::Empty);
                progress.phase = CanaryPhase::Baking;
                progress.baking_since = Some(now);
                progress.weight = 0;
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
            let deadline = later(progress.step_started_at, self.input.plan.progress_deadline);
            if now >= deadline {
                let p = progress.clone();
                let detail = self
                    .input
                    .primary
                    .map(|p| p.detail.clone())
                    .unwrap_or_default();
                self.fail_rollout_safely(rollout, &p, "ProgressDeadlineExceeded", format!("primary not available with the new release within the progress deadline ({detail})"));
                return;
            }
            self.wake_at.push(deadline);
        }
    }

    /// Measures due gates of one analysis; `Some` when it has failed or gone inconclusive.
    fn run_analysis(
        &mut self,
        progress: &mut CanaryProgress,
        scope: &str,
        plan: &AnalysisPlan,
        started: Timestamp,
    ) -> Option<AnalysisOutcome> {
        let now = self.input.now;
        let first_at = later(started, plan.initial_delay);
        for gate in &plan.gates {
            let idx = match progress
                .analysis
                .iter()
                .position(|a| a.scope == scope && &a.gate == gate)
            {
                Some(i) => i,
                None => {
                    progress.analysis.push(AnalysisProgress {
                        gate: gate.clone(),
                        scope: scope.to_string(),
                        measurements: 0,
                        successes: 0,
                        failures: 0,
                        consecutive_failures: 0,
                        inconclusive: 0,
                        consecutive_inconclusive: 0,
                        last_measured_at: None,
                        last_verdict: None,
                        last_value: None,
                        last_message: None,
                    });
                    progress.analysis.len() - 1
                }
            };
            let a = &mut progress.analysis[idx];
            if scope != BACKGROUND && a.successes >= plan.count {
                continue;
            }
            let due_at = a
                .last_measured_at
                .map_or(first_at, |t| later(t, plan.interval))
                .max(first_at);
            if now < due_at {
                self.wake_at.push(due_at);
                continue;
            }
            let Some(m) = self
                .input
                .measurements
                .and_then(|ms| ms.iter().find(|m| m.scope == scope && &m.gate == gate))
            else {
                self.due.push(Due {
                    scope: scope.to_string(),
                    gate: gate.clone(),
                });
                continue;
            };
            apply_measurement(a, m, now);
            self.wake_at.push(later(now, plan.interval));
            let failed = match plan.failure_counting {
                FailureCounting::Consecutive => a.consecutive_failures >= plan.failure_limit,
                FailureCounting::Total => a.failures >= plan.failure_limit,
            };
            let message = format!(
                "gate '{gate}' {}: {} (value {})",
                if failed { "failed" } else { "inconclusive" },
                a.last_message.clone().unwrap_or_default(),
                a.last_value.clone().unwrap_or_else(|| "none".into())
            );
            if failed {
                return Some(AnalysisOutcome::Failed(message));
            }
            if a.consecutive_inconclusive >= plan.inconclusive_limit {
                return Some(AnalysisOutcome::Inconclusive(message));
            }
        }
        None
    }

    fn analysis_verdict(
        &mut self,
        plan: &CanaryPlan,
        rollout: &mut ActiveRollout,
        mut progress: CanaryProgress,
        verdict: AnalysisOutcome,
        analysis: &AnalysisPlan,
    ) {
        let (policy, reason, message) = match verdict {
            AnalysisOutcome::Failed(m) => (plan.on_failure, "AnalysisFailed", m),
            AnalysisOutcome::Inconclusive(m) => {
                (analysis.on_inconclusive, "AnalysisInconclusive", m)
            }
        };
        match policy {
            FailurePolicy::Rollback => {
                self.fail_rollout_safely(rollout, &progress, reason, message)
            }
            FailurePolicy::Pause => {
                let newly = progress.phase != CanaryPhase::Paused;
                progress.phase = CanaryPhase::Paused;
                progress.paused_reason = Some(format!("{reason}: {message}"));
                if reason == "AnalysisFailed" && self.input.primary.is_some_and(|p| p.available) {
                    // Paused on failure: all traffic back on primary, the canary kept for inspection.
                    progress.weight = 0;
                }
                self.weight = Some(progress.weight);
                if newly {
                    let kind = match reason {
                        "AnalysisFailed" => Transition::AnalysisFailed,
                        _ => Transition::AnalysisInconclusive,
                    };
                    self.event(
                        kind,
                        format!("{}: {message}; paused", rollout.version),
                        Some(&rollout.release.clone()),
                    );
                }
                self.describe_canary(rollout, &progress);
                rollout.canary = Some(progress);
                self.status.rollout = Some(rollout.clone());
            }
        }
    }

    /// Starts the rollback of a canary rollout without sending traffic to a broken workload.
    fn fail_rollout_safely(
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
        let primary_ok = match (&rollout.previous_release, self.input.primary) {
            (Some(prev), Some(p)) => p.available && p.release.as_deref() == Some(prev.as_str()),
            (None, p) => p.is_none_or(|p| p.replicas == 0),
            (Some(_), None) => false,
        };
        let canary_ok = self
            .input
            .canary
            .is_some_and(|c| c.available && c.release.as_deref() == Some(rollout.release.as_str()));
        if primary_ok || !canary_ok {
            self.weight = Some(0);
        } else {
            self.weight = Some(progress.weight);
        }
        let moved = self
            .input
            .canary
            .is_none_or(|c| c.weight_in_effect.is_none_or(|w| w == 0));
        if primary_ok && moved {
            self.canary = Some(DesiredPrimary::Empty);
            return self.input.canary.is_none_or(|c| c.replicas == 0);
        }
        if !canary_ok || primary_ok {
            self.canary = Some(DesiredPrimary::Empty).filter(|_| moved);
        }
        false
    }

    fn keep_primary_on_previous(&mut self, rollout: &ActiveRollout) {
        self.primary = rollout
            .previous_release
            .as_ref()
            .map(|prev| DesiredPrimary::Release {
                name: prev.clone(),
                artifacts: rollout.previous_artifacts.clone(),
            });
    }

    fn describe_canary(&mut self, rollout: &ActiveRollout, progress: &CanaryProgress) {
        let steps = self.input.plan.canary.as_ref().map_or(0, |c| c.steps.len());
        let what = match progress.phase {
            CanaryPhase::Starting => "starting the canary".to_string(),
            CanaryPhase::Stepping => format!(
                "step {}/{steps}, canary at {}%",
                progress.step + 1,
                progress.weight
            ),
            CanaryPhase::Paused => format!(
                "paused at step {}/{steps} ({}%): {}",
                progress.step + 1,
                progress.weight,
                progress.paused_reason.clone().unwrap_or_default()
            ),
            CanaryPhase::Promoting => "promoting the canary to primary".to_string(),
            CanaryPhase::Baking => "promoted; baking".to_string(),
        };
        let message = format!("canary {}: {what}", rollout.version);
        self.status.phase = Some(StagePhase::Progressing);
        self.status.message = Some(message.clone());
        self.health = if progress.phase == CanaryPhase::Paused {
            (Health::Stalled, "Paused", message.clone())
        } else {
            (Health::Progressing, "Canary", message.clone())
        };
        self.set_entry(&rollout.release, RP::Progressing, "Canary", what);
    }
}

enum AnalysisOutcome {
    Failed(String),
    Inconclusive(String),
}

fn apply_measurement(a: &mut AnalysisProgress, m: &Measurement, now: Timestamp) {
    a.measurements += 1;
    a.last_measured_at = Some(now);
    a.last_verdict = Some(m.outcome.verdict);
    a.last_value = m.outcome.value.clone();
    a.last_message = Some(m.outcome.message.clone());
    match m.outcome.verdict {
        GateVerdict::Passed => {
            a.successes += 1;
            a.consecutive_failures = 0;
            a.consecutive_inconclusive = 0;
        }
        GateVerdict::Failed => {
            a.failures += 1;
            a.consecutive_failures += 1;
            a.consecutive_inconclusive = 0;
        }
        _ => {
            a.inconclusive += 1;
            a.consecutive_inconclusive += 1;
        }
    }
}
