//! What each page of the dashboard shows, as data made from the watched objects alone (no
//! cluster, no server): the pipeline with each stage's depth in the DAG, a release's trail
//! and verdicts, the measurements of a stage's analyses against their thresholds, and DORA
//! figures week by week.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use greenlight_api::canary::AnalysisPoint;
use greenlight_api::compare::GateComparison;
use greenlight_api::release::{AuditEntry, ReleaseStageStatus};
use greenlight_api::{Gate, Release, Stage};
use greenlight_core::dora;

use crate::view::{self, PipelineView};

/// One pipeline of the namespace, for the list.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSummary {
    pub name: String,
    pub stages: usize,
    /// Stages rolling out, waiting or stopped, by phase.
    pub phases: BTreeMap<String, usize>,
}

pub fn pipelines(stages: &[Stage]) -> Vec<PipelineSummary> {
    let mut by_name: BTreeMap<String, PipelineSummary> = BTreeMap::new();
    for s in stages {
        let p = by_name
            .entry(s.spec.pipeline.clone())
            .or_insert_with(|| PipelineSummary {
                name: s.spec.pipeline.clone(),
                stages: 0,
                phases: BTreeMap::new(),
            });
        p.stages += 1;
        let phase = s.status.as_ref().and_then(|st| st.phase);
        let phase = phase.map_or_else(|| "Unknown".into(), |p| format!("{p:?}"));
        *p.phases.entry(phase).or_default() += 1;
    }
    by_name.into_values().collect()
}

/// A pipeline and where each stage sits in its graph: stages by depth, each after those it
/// requires.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PipelinePage {
    #[serde(flatten)]
    pub view: PipelineView,
    /// How many stages lie before each stage on its longest path from a first stage.
    pub depth: BTreeMap<String, usize>,
    /// The release a retry at each stage would roll out again: the last that failed there.
    pub retry: BTreeMap<String, String>,
}

pub fn pipeline(
    name: &str,
    namespace: &str,
    stages: &[Stage],
    releases: &[Release],
) -> Option<PipelinePage> {
    if !stages.iter().any(|s| s.spec.pipeline == name) {
        return None;
    }
    let view = view::pipeline(name, namespace, stages, releases);
    let mut depth: BTreeMap<String, usize> = BTreeMap::new();
    // DAG order puts each stage after those it requires, so one pass is enough; a stage in a
    // cycle (an invalid pipeline) counts what was placed before it.
    for s in &view.stages {
        let d = s
            .requires
            .iter()
            .filter_map(|r| depth.get(r))
            .map(|d| d + 1)
            .max();
        depth.insert(s.name.clone(), d.unwrap_or(0));
    }
    let retry = stages
        .iter()
        .filter(|s| s.spec.pipeline == name)
        .filter_map(|s| {
            Some((
                s.metadata.name.clone()?,
                crate::act::last_failed(s, releases)?,
            ))
        })
        .collect();
    Some(PipelinePage { view, depth, retry })
}

/// A release: what it is, where it is at each stage, and who did what to it.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReleasePage {
    pub name: String,
    pub pipeline: String,
    pub version: String,
    pub release_type: String,
    pub images: BTreeMap<String, String>,
    /// Free text from CI: release notes, the commit's author.
    pub notes: Option<String>,
    pub author: Option<String>,
    pub commit: Option<String>,
    pub phase: Option<String>,
    pub stages: BTreeMap<String, ReleaseStageStatus>,
    pub audit: Vec<AuditEntry>,
    /// Notices sent about it: filled in from its Events by the server.
    pub notices: Vec<Notice>,
    /// Why the notices could not be read (e.g. no right to list Events).
    pub notices_error: Option<String>,
}

/// A notice the operator sent: the Event it went out from, and to which Notifiers.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    pub reason: String,
    pub message: String,
    pub time: Option<String>,
    pub delivered_to: String,
}

pub fn release(release: &Release) -> ReleasePage {
    let status = release.status.clone().unwrap_or_default();
    let images = release.spec.artifacts.iter();
    let source = release.spec.source.as_ref();
    ReleasePage {
        name: release.metadata.name.clone().unwrap_or_default(),
        pipeline: release.spec.pipeline.clone(),
        version: release.spec.version.clone(),
        release_type: format!("{:?}", release.spec.release_type).to_lowercase(),
        images: images.map(|a| (a.name.clone(), a.image.clone())).collect(),
        notes: release.spec.notes.clone(),
        author: source.and_then(|s| s.author.clone()),
        commit: source.and_then(|s| s.commit.clone()),
        phase: status.phase.map(|p| format!("{p:?}")),
        stages: status.stages,
        audit: status.audit,
        notices: Vec::new(),
        notices_error: None,
    }
}

/// The analyses of the rollout at one stage: each gate's measurements, oldest first.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisPage {
    pub stage: String,
    pub release: Option<String>,
    pub version: Option<String>,
    pub series: Vec<Series>,
    /// The last judgement of each compare gate.
    pub comparisons: Vec<GateComparison>,
    /// The one-off checks (pre-rollout, pre-promotion, verify) and their verdicts.
    pub checks: Vec<view::GateView>,
}

/// One gate's measurements in one analysis.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    pub gate: String,
    /// `background`, or `step-N`.
    pub scope: String,
    /// The condition a value must meet (`< 0.01`), when the gate states one.
    pub condition: Option<Condition>,
    pub successes: i32,
    pub failures: i32,
    pub inconclusive: i32,
    pub points: Vec<Point>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Condition {
    pub op: String,
    pub threshold: f64,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Point {
    /// Seconds since the epoch.
    pub at: i64,
    /// The value, when it is a number.
    pub value: Option<f64>,
    pub verdict: String,
}

pub fn analysis(stage: &Stage, releases: &[Release], gates: &[Gate]) -> AnalysisPage {
    let name = stage.metadata.name.clone().unwrap_or_default();
    let status = stage.status.clone().unwrap_or_default();
    let rollout = status.rollout.as_ref();
    let release = rollout
        .map(|r| r.release.clone())
        .or(status.candidate_release.clone());
    let at_stage = releases
        .iter()
        .find(|r| r.metadata.name == release)
        .and_then(|r| r.status.as_ref()?.stages.get(&name).cloned());
    let analysis = rollout
        .and_then(|r| r.canary.as_ref())
        .map(|c| c.analysis.clone())
        .unwrap_or_default();
    let series = analysis.into_iter().map(|a| Series {
        condition: condition(gates, &a.gate),
        points: a.history.iter().map(point).collect(),
        successes: a.successes,
        failures: a.failures,
        inconclusive: a.inconclusive,
        gate: a.gate,
        scope: a.scope,
    });
    AnalysisPage {
        version: rollout.map(|r| r.version.clone()),
        series: series.collect(),
        comparisons: at_stage
            .as_ref()
            .map(|s| s.comparisons.clone())
            .unwrap_or_default(),
        checks: at_stage.as_ref().map(checks).unwrap_or_default(),
        release,
        stage: name,
    }
}

fn point(p: &AnalysisPoint) -> Point {
    Point {
        at: p.at.as_second(),
        value: p
            .value
            .as_deref()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite()),
        verdict: format!("{:?}", p.verdict),
    }
}

fn checks(at_stage: &ReleaseStageStatus) -> Vec<view::GateView> {
    at_stage
        .checks
        .iter()
        .map(|g| view::GateView {
            name: g
                .list
                .map_or_else(|| g.name.clone(), |l| format!("{} {}", l.as_str(), g.name)),
            verdict: format!("{:?}", g.result),
            value: g.value.clone(),
            message: g.message.clone(),
        })
        .collect()
}

/// A Prometheus gate's condition, `< 0.01`, as an operator and a threshold.
fn condition(gates: &[Gate], name: &str) -> Option<Condition> {
    let gate = gates
        .iter()
        .find(|g| g.metadata.name.as_deref() == Some(name))?;
    let text = gate.spec.prometheus.as_ref()?.condition.trim();
    let op_len = text.find(|c: char| !"<>=!".contains(c))?;
    let (op, threshold) = text.split_at(op_len);
    Some(Condition {
        op: op.to_string(),
        threshold: threshold.trim().parse().ok()?,
    })
}

/// DORA figures over the period, and week by week, from the same computation as
/// `kubectl greenlight dora`.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InsightPage {
    pub period_days: i64,
    pub reports: Vec<dora::PipelineReport>,
    pub weeks: Vec<Week>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Week {
    /// Seconds since the epoch at the week's start.
    pub since: i64,
    pub pipelines: Vec<dora::PipelineReport>,
}

pub fn insight(stages: &[Stage], releases: &[Release], now: Timestamp, weeks: i64) -> InsightPage {
    let week = SignedDuration::from_hours(24 * 7);
    let period = dora::Window::last(week * weeks as i32, now);
    let series = (0..weeks).rev().map(|back| {
        let until = now - week * back as i32;
        let window = dora::Window::last(week, until);
        Week {
            since: window.since.as_second(),
            pipelines: dora::report(stages, releases, window),
        }
    });
    InsightPage {
        period_days: weeks * 7,
        reports: dora::report(stages, releases, period),
        weeks: series.collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(name: &str, requires: &[&str]) -> Stage {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Stage",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"pipeline": "web", "target": {"name": "web"}, "requires": requires},
        }))
        .unwrap()
    }

    #[test]
    fn each_stage_sits_one_column_after_the_deepest_stage_it_requires() {
        let stages = [
            stage("prod", &["test", "staging"]),
            stage("dev", &[]),
            stage("staging", &["test"]),
            stage("test", &["dev"]),
        ];
        let page = pipeline("web", "shop", &stages, &[]).unwrap();
        let depth: Vec<(&str, usize)> = page.depth.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            depth,
            [("dev", 0), ("prod", 3), ("staging", 2), ("test", 1)]
        );
        assert!(pipeline("other", "shop", &stages, &[]).is_none());
    }

    #[test]
    fn a_prometheus_gates_condition_is_its_threshold() {
        let gate = |condition: &str| -> Gate {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "greenlight.dev/v1alpha1", "kind": "Gate",
                "metadata": {"name": "errors"},
                "spec": {"type": "prometheus", "prometheus": {"address": "http://p:9090", "query": "x", "condition": condition}},
            }))
            .unwrap()
        };
        let c = condition(&[gate("< 0.01")], "errors").unwrap();
        assert_eq!((c.op.as_str(), c.threshold), ("<", 0.01));
        let c = condition(&[gate(" >= 99.5 ")], "errors").unwrap();
        assert_eq!((c.op.as_str(), c.threshold), (">=", 99.5));
        assert!(condition(&[gate("< 1")], "latency").is_none());
    }
}
