//! Canary analysis in the machine: which gates are due and on which workload, what a
//! measurement counts as, what a failed or inconclusive analysis does, and the evidence a
//! phase needs before it completes. Two rules hold throughout: a measurement of a workload
//! with no available pods never passes (its series are stale), and missing data never
//! completes anything. It only pauses, and the pause resumes by itself once data returns
//! and passes, or ends at `inconclusiveTimeout`.

use std::time::Duration;

use jiff::Timestamp;

use super::draft::Draft;
use super::events::Transition;
use super::types::{Due, Measured, Measurement};
use crate::api::canary::{
    AnalysisPoint, AnalysisProgress, CanaryPhase, CanaryProgress, FailureCounting, FailurePolicy,
    InconclusiveTimeoutPolicy, MEASUREMENTS_KEPT,
};
use crate::api::compare::{Comparison, ComparisonVerdict, GateComparison, MAX_COMPARISONS};
use crate::api::release::GateVerdict;
use crate::api::stage::ActiveRollout;
use crate::schedule::later;
use crate::validation::{AnalysisPlan, CanaryPlan, CanaryStepPlan};
use crate::verdict::GateOutcome;

pub const BACKGROUND: &str = "background";

pub(super) enum AnalysisOutcome {
    Failed(String),
    Inconclusive { scope: String, message: String },
}

/// What an inconclusive pause does on this pass.
pub(super) enum PauseState {
    /// Data is back and passes: the rollout goes on from where it stopped.
    Resumed,
    /// Still waiting for data.
    Paused,
    /// It ended: rolled back at its timeout, or failed.
    Ended,
}

/// The workload a measurement of this rollout reads: the primary once the release under test
/// runs there (from promotion, through the bake, pauses included), else the canary.
pub fn measured(progress: &CanaryProgress) -> Measured {
    match progress.baking_since {
        Some(_) => Measured::Primary,
        None => Measured::Canary,
    }
}

/// The analysis plan of a scope (`background` or `step-N`).
fn analysis_of(plan: &CanaryPlan, scope: &str) -> Option<AnalysisPlan> {
    if scope == BACKGROUND {
        return plan.background.clone();
    }
    let step: usize = scope.strip_prefix("step-")?.parse().ok()?;
    match plan.steps.get(step)? {
        CanaryStepPlan::Analysis(a) => Some(a.clone()),
        _ => None,
    }
}

impl Draft<'_> {
    /// Measures due gates of one analysis; `Some` when it has failed or gone inconclusive.
    pub(super) fn run_analysis(
        &mut self,
        progress: &mut CanaryProgress,
        scope: &str,
        plan: &AnalysisPlan,
        started: Timestamp,
    ) -> Option<AnalysisOutcome> {
        let now = self.input.now;
        let first_at = later(started, plan.initial_delay);
        let workload = measured(progress);
        for gate in &plan.gates {
            let idx = counters(progress, scope, gate);
            let a = &progress.analysis[idx];
            let passed = a.last_verdict == Some(GateVerdict::Passed);
            if scope != BACKGROUND && a.successes >= plan.count && passed {
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
            let found = self.input.measurements.and_then(|ms| {
                ms.iter()
                    .find(|m| m.scope == scope && &m.gate == gate && m.workload == workload)
            });
            let Some(m) = found else {
                let (scope, gate) = (scope.to_string(), gate.clone());
                self.due.push(Due {
                    scope,
                    gate,
                    workload,
                    since: started,
                });
                continue;
            };
            let outcome = self.judged(m, workload);
            let a = &mut progress.analysis[idx];
            apply_measurement(a, &outcome, now);
            if let Some(judgement) = &outcome.comparison {
                // A pass read from a workload without pods counted as no data; so it shows.
                let mut judgement = judgement.clone();
                if outcome.verdict != m.outcome.verdict {
                    judgement.verdict = ComparisonVerdict::NoData;
                }
                self.record_comparison(gate, scope, &judgement);
            }
            let a = &progress.analysis[idx];
            self.wake_at.push(later(now, plan.interval));
            if let Some(verdict) = verdict(a, plan, gate, scope) {
                return Some(verdict);
            }
        }
        None
    }

    /// Keeps a compare gate's judgement on the release's entry here, where it outlives the
    /// rollout: the last one per gate and scope, at most [`MAX_COMPARISONS`].
    fn record_comparison(&mut self, gate: &str, scope: &str, judgement: &Comparison) {
        let rollout = self.input.status.rollout.as_ref();
        let Some(release) = rollout.map(|r| r.release.clone()) else {
            return;
        };
        let Some(mut entry) = self.entry(&release).cloned() else {
            return;
        };
        entry
            .comparisons
            .retain(|c| !(c.gate == gate && c.scope == scope));
        entry.comparisons.push(GateComparison {
            gate: gate.to_string(),
            scope: scope.to_string(),
            judgement: judgement.clone(),
        });
        let excess = entry.comparisons.len().saturating_sub(MAX_COMPARISONS);
        entry.comparisons.drain(..excess);
        self.updates.insert(release, entry);
    }

    /// What a measurement counts as: a pass from a workload with no available pods is
    /// inconclusive, as its series can only be stale.
    fn judged(&self, m: &Measurement, workload: Measured) -> GateOutcome {
        let serving = match workload {
            Measured::Primary => self
                .input
                .primary
                .is_some_and(|p| p.serving && p.replicas > 0),
            Measured::Canary => self
                .input
                .canary
                .is_some_and(|c| c.available && c.replicas > 0),
        };
        if serving || m.outcome.verdict != GateVerdict::Passed {
            return m.outcome.clone();
        }
        let message = format!(
            "the {} has no available pods, so its series are stale ({})",
            workload.as_str(),
            m.outcome.message
        );
        GateOutcome {
            verdict: GateVerdict::Inconclusive,
            message,
            ..m.outcome.clone()
        }
    }

    pub(super) fn analysis_verdict(
        &mut self,
        plan: &CanaryPlan,
        rollout: &mut ActiveRollout,
        mut progress: CanaryProgress,
        verdict: AnalysisOutcome,
        analysis: &AnalysisPlan,
    ) {
        let (policy, reason, message) = match verdict {
            AnalysisOutcome::Failed(m) => {
                progress.inconclusive_since = None;
                progress.inconclusive_scope = None;
                (plan.on_failure, "AnalysisFailed", m)
            }
            AnalysisOutcome::Inconclusive { .. }
                if progress.phase == CanaryPhase::Paused
                    && progress.inconclusive_since.is_none() =>
            {
                // Paused already, for a person or on a failure: that pause stands as it is.
                let reason = progress.paused_reason.clone().unwrap_or_default();
                let (why, message) = reason.split_once(": ").unwrap_or(("Paused", &reason));
                let why = if why == "AnalysisFailed" {
                    "AnalysisFailed"
                } else {
                    "Paused"
                };
                let message = message.to_string();
                return self.pause(rollout, progress, why, message);
            }
            AnalysisOutcome::Inconclusive { scope, message } => {
                let since = *progress.inconclusive_since.get_or_insert(self.input.now);
                progress.inconclusive_scope.get_or_insert(scope);
                if self.inconclusive_timed_out(rollout, &mut progress, analysis, since) {
                    return;
                }
                (analysis.on_inconclusive, "AnalysisInconclusive", message)
            }
        };
        match policy {
            FailurePolicy::Rollback => {
                self.fail_rollout_safely(rollout, &progress, reason, message)
            }
            FailurePolicy::Pause => self.pause(rollout, progress, reason, message),
        }
    }

    fn pause(
        &mut self,
        rollout: &mut ActiveRollout,
        mut progress: CanaryProgress,
        reason: &'static str,
        message: String,
    ) {
        let newly = progress.phase != CanaryPhase::Paused;
        if newly {
            progress.paused_from = Some(progress.phase);
        }
        progress.phase = CanaryPhase::Paused;
        if !progress
            .paused_reason
            .as_deref()
            .is_some_and(|r| r.starts_with("InconclusiveTimeout"))
        {
            progress.paused_reason = Some(format!("{reason}: {message}"));
        }
        if reason == "AnalysisFailed" && self.input.primary.is_some_and(|p| p.available) {
            // Paused on failure: all traffic back on primary, the canary kept for inspection.
            progress.weight = 0;
        }
        // A pause never leaves traffic on a canary that does not serve.
        self.weight = Some(self.held_weight(rollout, &progress));
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

    /// At `inconclusiveTimeout`, a pause for want of data rolls back, or holds for a person
    /// (still resuming if the data returns). True when it rolled back.
    fn inconclusive_timed_out(
        &mut self,
        rollout: &ActiveRollout,
        progress: &mut CanaryProgress,
        analysis: &AnalysisPlan,
        since: Timestamp,
    ) -> bool {
        let at = later(since, analysis.inconclusive_timeout);
        if self.input.now < at {
            self.wake_at.push(at);
            return false;
        }
        let waited = humantime(analysis.inconclusive_timeout);
        match analysis.on_inconclusive_timeout {
            InconclusiveTimeoutPolicy::Rollback => {
                let why = format!("no conclusive measurement for {waited} (inconclusiveTimeout)");
                self.fail_rollout_safely(rollout, progress, "InconclusiveTimeout", why);
                true
            }
            InconclusiveTimeoutPolicy::Hold => {
                progress.paused_reason = Some(format!(
                    "InconclusiveTimeout: no conclusive measurement for {waited}; held for a person to promote or abort"
                ));
                false
            }
        }
    }

    /// A rollout paused for want of data: keeps measuring the analysis that paused it,
    /// resumes once it passes again, rolls back or holds at its timeout.
    pub(super) fn inconclusive_pause(
        &mut self,
        plan: &CanaryPlan,
        rollout: &mut ActiveRollout,
        progress: &mut CanaryProgress,
    ) -> PauseState {
        let (Some(since), Some(scope)) = (
            progress.inconclusive_since,
            progress.inconclusive_scope.clone(),
        ) else {
            return PauseState::Resumed;
        };
        let Some(analysis) = analysis_of(plan, &scope) else {
            return self.resume(rollout, progress, since);
        };
        if scope != BACKGROUND {
            let started = progress.step_started_at;
            match self.run_analysis(progress, &scope, &analysis, started) {
                Some(failed @ AnalysisOutcome::Failed(_)) => {
                    self.analysis_verdict(plan, rollout, progress.clone(), failed, &analysis);
                    return PauseState::Ended;
                }
                Some(AnalysisOutcome::Inconclusive { .. }) | None => {}
            }
        }
        if self.evidence(progress, &scope, &analysis, since).is_ok() {
            return self.resume(rollout, progress, since);
        }
        match self.inconclusive_timed_out(rollout, progress, &analysis, since) {
            true => PauseState::Ended,
            false => PauseState::Paused,
        }
    }

    /// Back to where the pause found it: the bake goes on with the time it had left (a pause
    /// does not count as baking), the steps from the step they were at.
    fn resume(
        &mut self,
        rollout: &ActiveRollout,
        progress: &mut CanaryProgress,
        since: Timestamp,
    ) -> PauseState {
        let paused_for = self.input.now.duration_since(since).unsigned_abs();
        progress.baking_since = progress.baking_since.map(|b| later(b, paused_for));
        let fallback = match progress.baking_since {
            Some(_) => CanaryPhase::Baking,
            None => CanaryPhase::Stepping,
        };
        progress.phase = progress.paused_from.take().unwrap_or(fallback);
        progress.inconclusive_since = None;
        progress.inconclusive_scope = None;
        progress.paused_reason = None;
        let note = format!(
            "{}: the analysis has conclusive data again after {}; resumed",
            rollout.version,
            humantime(paused_for)
        );
        self.event(
            Transition::AnalysisResumed,
            note,
            Some(&rollout.release.clone()),
        );
        self.wake_at.push(self.input.now);
        PauseState::Resumed
    }

    /// Whether every gate of an analysis has passed, with its last measurement, since `since`;
    /// otherwise the gates still waiting for that evidence.
    pub(super) fn evidence(
        &self,
        progress: &CanaryProgress,
        scope: &str,
        analysis: &AnalysisPlan,
        since: Timestamp,
    ) -> Result<(), String> {
        let waiting: Vec<String> = analysis
            .gates
            .iter()
            .filter(|g| {
                !progress.analysis.iter().any(|a| {
                    let passed = a.last_verdict == Some(GateVerdict::Passed);
                    let fresh = a.last_measured_at.is_some_and(|t| t >= since);
                    // A step's gate that is done (and so no longer measured) counts.
                    let done = scope != BACKGROUND && a.successes >= analysis.count;
                    a.scope == scope && &a.gate == *g && passed && (fresh || done)
                })
            })
            .map(|g| format!("'{g}'"))
            .collect();
        match waiting.is_empty() {
            true => Ok(()),
            false => Err(format!(
                "waiting for a passing measurement of gate {}",
                waiting.join(", ")
            )),
        }
    }

    /// Whether every background gate has been measured and its last measurement passed: what
    /// the primary needs before it takes the release.
    pub(super) fn promotion_evidence(&self, progress: &CanaryProgress, bg: &AnalysisPlan) -> bool {
        bg.gates.iter().all(|g| {
            progress.analysis.iter().any(|a| {
                a.scope == BACKGROUND && &a.gate == g && a.last_verdict == Some(GateVerdict::Passed)
            })
        })
    }

    /// Promotion waits, with the split as it is, for the background analysis to pass; at the
    /// progress deadline the rollout is rolled back.
    pub(super) fn await_promotion_evidence(
        &mut self,
        rollout: &ActiveRollout,
        progress: &CanaryProgress,
    ) {
        self.weight = Some(self.held_weight(rollout, progress));
        self.keep_primary_on_previous(rollout);
        let deadline = later(progress.step_started_at, self.plan.progress_deadline);
        if self.input.now >= deadline {
            let why =
                "no passing measurement of the background analysis within the progress deadline";
            return self.fail_rollout_safely(
                rollout,
                progress,
                "ProgressDeadlineExceeded",
                why.into(),
            );
        }
        self.wake_at.push(deadline);
    }
}

/// The counters of `gate` in `scope`, created empty the first time.
fn counters(progress: &mut CanaryProgress, scope: &str, gate: &str) -> usize {
    if let Some(i) = progress
        .analysis
        .iter()
        .position(|a| a.scope == scope && a.gate == gate)
    {
        return i;
    }
    progress.analysis.push(AnalysisProgress {
        gate: gate.to_string(),
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
        history: Vec::new(),
    });
    progress.analysis.len() - 1
}

/// What the counters of one gate now say about its analysis, if they decide it.
fn verdict(
    a: &AnalysisProgress,
    plan: &AnalysisPlan,
    gate: &str,
    scope: &str,
) -> Option<AnalysisOutcome> {
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
    (a.consecutive_inconclusive >= plan.inconclusive_limit).then(|| AnalysisOutcome::Inconclusive {
        scope: scope.to_string(),
        message,
    })
}

fn apply_measurement(a: &mut AnalysisProgress, outcome: &GateOutcome, now: Timestamp) {
    a.measurements += 1;
    a.last_measured_at = Some(now);
    a.last_verdict = Some(outcome.verdict);
    a.last_value = outcome.value.clone();
    a.last_message = Some(outcome.message.clone());
    a.history.push(AnalysisPoint {
        at: now,
        verdict: outcome.verdict,
        value: outcome
            .value
            .as_deref()
            .map(|v| v.chars().take(64).collect()),
    });
    let over = a.history.len().saturating_sub(MEASUREMENTS_KEPT);
    a.history.drain(..over);
    match outcome.verdict {
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

/// A duration for messages: whole minutes (rounded up) from two minutes on, else seconds.
/// Coarse on purpose: a countdown in a status message must not change on every pass.
pub fn humantime(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 120 => format!("{}m", s.div_ceil(60)),
        s => format!("{s}s"),
    }
}
