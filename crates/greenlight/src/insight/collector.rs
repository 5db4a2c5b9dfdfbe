//! The series computed from the index at each scrape: every stage's phase, time in phase,
//! canary weight and step, each gate's last verdict and value, and the DORA figures of each
//! pipeline and stage. Their labels are namespace, pipeline, stage and gate (and a bounded
//! phase, verdict, quantile, outcome, figure or failure reason): the number of series grows
//! with Stages and Gates, never with Releases.

use std::fmt;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

use super::dora::{self, Figures, Window};
use crate::api::release::GateVerdict;
use crate::api::stage::{StagePhase, StrategyType};
use crate::api::{Release, Stage};
use crate::index::Index;

type Labels = Vec<(&'static str, String)>;

/// The samples of one gauge, gathered before it is written.
struct Gauge {
    name: &'static str,
    help: &'static str,
    rows: Vec<(Labels, f64)>,
}

impl Gauge {
    fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            rows: Vec::new(),
        }
    }

    fn add(&mut self, labels: Labels, value: f64) {
        self.rows.push((labels, value));
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let gauge = ConstGauge::new(0.0);
        let mut family =
            encoder.encode_descriptor(self.name, self.help, None, gauge.metric_type())?;
        for (labels, value) in &self.rows {
            ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }
}

const PHASES: [StagePhase; 8] = [
    StagePhase::Idle,
    StagePhase::Waiting,
    StagePhase::Progressing,
    StagePhase::Verifying,
    StagePhase::RollingBack,
    StagePhase::Failed,
    StagePhase::Invalid,
    StagePhase::Blocked,
];

const VERDICTS: [GateVerdict; 6] = [
    GateVerdict::Passed,
    GateVerdict::Failed,
    GateVerdict::Pending,
    GateVerdict::Inconclusive,
    GateVerdict::Invalid,
    GateVerdict::Skipped,
];

/// Reads the index at each scrape; DORA figures cover the last `window`.
pub struct StateCollector {
    index: Arc<Index>,
    window: SignedDuration,
}

impl fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateCollector")
            .field("window", &self.window)
            .finish()
    }
}

impl StateCollector {
    pub fn new(index: Arc<Index>, window: SignedDuration) -> Self {
        Self { index, window }
    }

    /// Every gauge with its samples at `now`.
    fn gather(&self, now: Timestamp) -> Vec<Gauge> {
        let stages = self.index.stages.state();
        let releases = self.index.releases.state();
        let mut gauges = stage_gauges(&stages, &self.index, now);
        let window = Window::last(self.window, now);
        let reports = dora::report(
            stages.iter().map(|s| &**s),
            releases.iter().map(|r| &**r),
            window,
        );
        gauges.extend(dora_gauges(&reports, self.window));
        gauges
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        for gauge in self.gather(Timestamp::now()) {
            gauge.encode(&mut encoder)?;
        }
        Ok(())
    }
}

fn stage_labels(stage: &Stage) -> Labels {
    vec![
        ("namespace", stage.namespace().unwrap_or_default()),
        ("pipeline", stage.spec.pipeline.clone()),
        ("stage", stage.name_any()),
    ]
}

fn with(mut labels: Labels, key: &'static str, value: impl Into<String>) -> Labels {
    labels.push((key, value.into()));
    labels
}

fn stage_gauges(stages: &[Arc<Stage>], index: &Index, now: Timestamp) -> Vec<Gauge> {
    let mut phase = Gauge::new(
        "stage_phase",
        "1 for the phase each stage is in, 0 for the others",
    );
    let mut time = Gauge::new(
        "stage_time_in_phase_seconds",
        "Seconds since each stage entered its phase",
    );
    let mut weight = Gauge::new(
        "stage_canary_weight",
        "Percent of traffic the canary of each canary stage gets (0 between rollouts)",
    );
    let mut step = Gauge::new(
        "stage_canary_step",
        "The canary step each canary stage is at, from 1 (0 between rollouts)",
    );
    let mut steps = Gauge::new(
        "stage_canary_steps",
        "The number of steps of each canary stage",
    );
    let mut verdict = Gauge::new(
        "gate_verdict",
        "1 for the last verdict of each gate of each stage, 0 for the others",
    );
    let mut value = Gauge::new(
        "gate_value",
        "The last value each gate of each stage measured, when it is a finite number",
    );
    for stage in stages {
        let labels = stage_labels(stage);
        let status = stage.status.clone().unwrap_or_default();
        for p in PHASES {
            let on = status.phase == Some(p);
            phase.add(
                with(labels.clone(), "phase", format!("{p:?}")),
                f64::from(u8::from(on)),
            );
        }
        if let Some(since) = phase_since(stage) {
            let secs = now.duration_since(since).as_secs_f64().max(0.0);
            time.add(labels.clone(), secs);
        }
        if stage.spec.strategy.strategy_type != StrategyType::Rolling {
            let progress = status.rollout.as_ref().and_then(|r| r.canary.as_ref());
            weight.add(
                labels.clone(),
                progress.map_or(0.0, |p| f64::from(p.weight)),
            );
            step.add(
                labels.clone(),
                progress.map_or(0.0, |p| f64::from(p.step + 1)),
            );
            let count = stage
                .spec
                .strategy
                .canary
                .as_ref()
                .map_or(0, |c| c.steps.len());
            steps.add(labels.clone(), count as f64);
        }
        for (gate, last, measured) in last_gate_results(stage, index) {
            let gate_labels = with(labels.clone(), "gate", gate);
            for v in VERDICTS {
                let on = f64::from(u8::from(last == v));
                verdict.add(with(gate_labels.clone(), "verdict", format!("{v:?}")), on);
            }
            let number = measured.and_then(|m| m.trim().parse::<f64>().ok());
            if let Some(n) = number.filter(|n| n.is_finite()) {
                value.add(gate_labels, n);
            }
        }
    }
    vec![phase, time, weight, step, steps, verdict, value]
}

/// When the stage entered its phase; for a status written before `phaseSince` existed, when
/// its conditions last changed.
fn phase_since(stage: &Stage) -> Option<Timestamp> {
    let status = stage.status.as_ref()?;
    status.phase?;
    status.phase_since.or_else(|| {
        let changed = status.conditions.iter().map(|c| c.last_transition_time);
        changed.max()
    })
}

/// Each gate's last verdict and value at this stage: from the rollout's analysis when one
/// runs, else from the entry of the release the stage is busy with or last ran.
fn last_gate_results(stage: &Stage, index: &Index) -> Vec<(String, GateVerdict, Option<String>)> {
    let Some(status) = stage.status.as_ref() else {
        return Vec::new();
    };
    let mut results: Vec<(String, GateVerdict, Option<String>)> = Vec::new();
    let release = status
        .rollout
        .as_ref()
        .map(|r| r.release.clone())
        .or_else(|| status.candidate_release.clone())
        .or_else(|| status.current_release.clone());
    let namespace = stage.namespace().unwrap_or_default();
    let entry = release
        .and_then(|r| index.release(&namespace, &r))
        .and_then(|r: Arc<Release>| r.status.as_ref()?.stages.get(&stage.name_any()).cloned());
    for g in entry.iter().flat_map(|e| &e.gates) {
        results.push((g.name.clone(), g.result, g.value.clone()));
    }
    let progress = status.rollout.as_ref().and_then(|r| r.canary.as_ref());
    for a in progress.iter().flat_map(|p| &p.analysis) {
        let Some(last) = a.last_verdict else { continue };
        results.retain(|(gate, _, _)| *gate != a.gate);
        results.push((a.gate.clone(), last, a.last_value.clone()));
    }
    results
}

fn dora_gauges(reports: &[dora::PipelineReport], window: SignedDuration) -> Vec<Gauge> {
    let mut set = DoraGauges::new();
    let mut span = Gauge::new(
        "dora_window_seconds",
        "The period the DORA figures cover, up to now",
    );
    span.add(Vec::new(), window.as_secs_f64());
    let mut reviews = Gauge::new(
        "emergency_reviews",
        "Reviews of emergency rollouts not closed yet, by pipeline; state=overdue counts those past their due date",
    );
    for report in reports {
        let base = vec![
            ("namespace", report.namespace.clone()),
            ("pipeline", report.pipeline.clone()),
        ];
        reviews.add(
            with(base.clone(), "state", "open"),
            report.reviews_open as f64,
        );
        reviews.add(
            with(base, "state", "overdue"),
            report.reviews_overdue as f64,
        );
    }
    for report in reports {
        let base = vec![
            ("namespace", report.namespace.clone()),
            ("pipeline", report.pipeline.clone()),
        ];
        set.add(with(base.clone(), "stage", ""), &report.figures);
        for stage in &report.stages {
            set.add(
                with(base.clone(), "stage", stage.stage.clone()),
                &stage.figures,
            );
        }
    }
    let mut gauges = vec![span, reviews];
    gauges.extend(set.into_gauges());
    gauges
}

/// The DORA gauges, one row per pipeline (`stage=""`) and per stage.
struct DoraGauges {
    per_day: Gauge,
    lead: Gauge,
    cfr: Gauge,
    restore: Gauge,
    rework: Gauge,
    open: Gauge,
    rollouts: Gauge,
    failures: Gauge,
    band: Gauge,
}

impl DoraGauges {
    fn new() -> Self {
        Self {
            per_day: Gauge::new(
                "dora_deployments_per_day",
                "Successful rollouts per day over the window (a pipeline's: at its production stages)",
            ),
            lead: Gauge::new(
                "dora_lead_time_seconds",
                "Seconds from the commit (else the Release's creation) to success at the stage, nearest-rank quantiles",
            ),
            cfr: Gauge::new(
                "dora_change_failure_ratio",
                "Rollouts that failed or were rolled back, over all finished rollouts",
            ),
            restore: Gauge::new(
                "dora_time_to_restore_seconds",
                "Seconds from a failed rollout to the next success at the same stage, nearest-rank quantiles",
            ),
            rework: Gauge::new(
                "dora_rework_ratio",
                "Successful rollouts of hotfix releases over all successful rollouts",
            ),
            open: Gauge::new(
                "dora_open_outages",
                "Stages whose last finished rollout failed and has not been followed by a success",
            ),
            rollouts: Gauge::new(
                "dora_rollouts",
                "Finished rollouts in the window, by outcome",
            ),
            failures: Gauge::new(
                "dora_failures",
                "Failed rollouts in the window, by reason and the gate that failed them",
            ),
            band: Gauge::new(
                "dora_band",
                "DORA performance band of each figure: 4 elite, 3 high, 2 medium, 1 low, 0 no data",
            ),
        }
    }

    fn add(&mut self, labels: Labels, f: &Figures) {
        self.per_day.add(labels.clone(), f.deployments_per_day);
        let quantiles = |s: Option<dora::Spread>| s.map(|s| [("0.5", s.p50), ("0.9", s.p90)]);
        for (q, secs) in quantiles(f.lead_time_seconds).into_iter().flatten() {
            self.lead
                .add(with(labels.clone(), "quantile", q), secs as f64);
        }
        for (q, secs) in quantiles(f.time_to_restore_seconds).into_iter().flatten() {
            self.restore
                .add(with(labels.clone(), "quantile", q), secs as f64);
        }
        if let Some(r) = f.change_failure_rate {
            self.cfr.add(labels.clone(), r);
        }
        if let Some(r) = f.rework_rate {
            self.rework.add(labels.clone(), r);
        }
        self.open.add(labels.clone(), f64::from(f.open_outages));
        let outcomes = [("succeeded", f.deployments), ("failed", f.failures)];
        for (outcome, n) in outcomes {
            self.rollouts
                .add(with(labels.clone(), "outcome", outcome), f64::from(n));
        }
        for cause in &f.failure_causes {
            let l = with(labels.clone(), "reason", cause.reason.clone());
            let gate = cause.gate.clone().unwrap_or_default();
            self.failures
                .add(with(l, "gate", gate), f64::from(cause.count));
        }
        let bands = [
            ("deployment_frequency", f.bands.deployment_frequency),
            ("lead_time", f.bands.lead_time),
            ("change_failure_rate", f.bands.change_failure_rate),
            ("time_to_restore", f.bands.time_to_restore),
        ];
        for (figure, band) in bands {
            let score = band.map_or(0, |b| b.score());
            self.band
                .add(with(labels.clone(), "figure", figure), score as f64);
        }
    }

    fn into_gauges(self) -> Vec<Gauge> {
        vec![
            self.per_day,
            self.lead,
            self.cfr,
            self.restore,
            self.rework,
            self.open,
            self.rollouts,
            self.failures,
            self.band,
        ]
    }
}

#[cfg(test)]
#[path = "collector_tests.rs"]
mod tests;
