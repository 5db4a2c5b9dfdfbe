//! What `kubectl greenlight` shows, made from the objects alone (no cluster, no terminal):
//! the pipeline as a tree of stages in DAG order, where each release is at each stage, and a
//! release's audit trail. Each view is data (for `-o json|yaml`) and text (for people).

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::Serialize;

use greenlight_api::compare::GateComparison;
use greenlight_api::release::ReleaseStageStatus;
use greenlight_api::{Release, Stage};

/// One pipeline: its stages in DAG order.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PipelineView {
    pub pipeline: String,
    pub namespace: String,
    pub stages: Vec<StageView>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StageView {
    pub name: String,
    pub requires: Vec<String>,
    pub phase: String,
    pub strategy: String,
    /// `version (release)` of what the stage runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// `version (release)` of what is next in line, or rolling out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<String>,
    /// Why the stage waits or stopped, in the controller's words (with the next attempt's time
    /// where there is one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryView>,
    pub gates: Vec<GateView>,
    /// The last judgement of each compare gate of the release's canary analyses here.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub comparisons: Vec<GateComparison>,
    /// The digest of the pod template the stage serves on, pinned by its last rollout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The digest of that template's pod spec alone (containers, env, volumes...): stages
    /// with targets of their own differ in labels, not in what runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_spec: Option<String>,
    /// An edit of the target that has not reached the primary: who made it, and what.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_change: Option<String>,
    /// An emergency asked for here, or rolling out: who asked, for what, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emergency: Option<String>,
    /// Reviews of emergency rollouts here still open: the release, and when each is due.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub open_reviews: Vec<(String, Option<jiff::Timestamp>)>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryView {
    /// 1-based step, of `steps`.
    pub step: i32,
    pub steps: usize,
    pub weight: i32,
    pub phase: String,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GateView {
    pub name: String,
    pub verdict: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub message: String,
}

/// The stages of `pipeline` as a view, with the gate verdicts of the release each works on.
pub fn pipeline(
    pipeline: &str,
    namespace: &str,
    stages: &[Stage],
    releases: &[Release],
) -> PipelineView {
    let ours: Vec<&Stage> = stages
        .iter()
        .filter(|s| s.spec.pipeline == pipeline)
        .collect();
    let by_name: BTreeMap<String, &Release> = releases
        .iter()
        .filter_map(|r| Some((r.metadata.name.clone()?, r)))
        .collect();
    PipelineView {
        pipeline: pipeline.to_string(),
        namespace: namespace.to_string(),
        stages: dag_order(&ours)
            .into_iter()
            .map(|stage| stage_view(stage, &by_name))
            .collect(),
    }
}

/// The emergency a stage holds: asked for and waiting for approvals, or rolling out.
fn emergency_line(status: &greenlight_api::StageStatus) -> Option<String> {
    if let Some(e) = &status.emergency {
        return Some(format!(
            "EMERGENCY asked by {} for {}: {} ({}); waiting for the emergency's approvals",
            e.requester, e.release, e.reason, e.reference
        ));
    }
    let e = status.rollout.as_ref()?.emergency.as_ref()?;
    Some(format!(
        "BREAK-GLASS rollout asked by {} for {}: {} ({})",
        e.requester, e.release, e.reason, e.reference
    ))
}

/// The open reviews of emergency rollouts at `stage`, by release.
fn open_reviews(
    stage: &str,
    releases: &BTreeMap<String, &Release>,
) -> Vec<(String, Option<jiff::Timestamp>)> {
    let reviews = releases
        .values()
        .flat_map(|r| greenlight_core::review::reviews(r));
    reviews
        .filter(|r| r.open() && r.stage == stage)
        .map(|r| (r.release, r.due))
        .collect()
}

/// Stages ordered so each comes after those it requires; ties by name. Stages in a cycle
/// (which the controller reports as invalid) come last.
pub fn dag_order<'a>(stages: &[&'a Stage]) -> Vec<&'a Stage> {
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut order = Vec::new();
    let mut rest: Vec<&Stage> = stages.to_vec();
    rest.sort_by_key(|s| s.metadata.name.clone());
    loop {
        let (ready, waiting): (Vec<&Stage>, Vec<&Stage>) = rest
            .into_iter()
            .partition(|s| s.spec.requires.iter().all(|r| placed.contains(r)));
        if ready.is_empty() {
            order.extend(waiting);
            return order;
        }
        placed.extend(ready.iter().filter_map(|s| s.metadata.name.clone()));
        order.extend(ready);
        rest = waiting;
    }
}

fn stage_view(stage: &Stage, releases: &BTreeMap<String, &Release>) -> StageView {
    let name = stage.metadata.name.clone().unwrap_or_default();
    let status = stage.status.clone().unwrap_or_default();
    let labelled = |version: &Option<String>, release: &Option<String>| match (version, release) {
        (Some(v), Some(r)) => Some(clean(&format!("{v} ({r})"))),
        (None, Some(r)) => Some(clean(r)),
        _ => None,
    };
    let rollout = status.rollout.as_ref();
    let working_on = rollout
        .map(|r| r.release.clone())
        .or_else(|| status.candidate_release.clone());
    let candidate = match rollout {
        Some(r) => Some(clean(&format!("{} ({})", r.version, r.release))),
        None => labelled(&status.candidate_version, &status.candidate_release),
    };
    let at_stage = working_on
        .as_ref()
        .and_then(|r| releases.get(r))
        .and_then(|r| r.status.as_ref()?.stages.get(&name).cloned());
    let phase = status
        .phase
        .map(|p| format!("{p:?}"))
        .unwrap_or_else(|| "Unknown".into());
    StageView {
        why: why(&phase, status.message.as_deref(), at_stage.as_ref()),
        requires: stage.spec.requires.clone(),
        strategy: format!("{:?}", stage.spec.strategy.strategy_type),
        current: labelled(&status.current_version, &status.current_release),
        candidate,
        canary: rollout.and_then(|r| {
            let c = r.canary.as_ref()?;
            Some(CanaryView {
                step: c.step + 1,
                steps: stage
                    .spec
                    .strategy
                    .canary
                    .as_ref()
                    .map_or(0, |s| s.steps.len()),
                weight: c.weight,
                phase: format!("{:?}", c.phase),
            })
        }),
        gates: at_stage.as_ref().map(gate_views).unwrap_or_default(),
        comparisons: at_stage
            .as_ref()
            .map(|s| s.comparisons.clone())
            .unwrap_or_default(),
        template: status.template.clone(),
        pod_spec: pod_spec_digest(&status),
        emergency: emergency_line(&status),
        open_reviews: open_reviews(&name, releases),
        target_change: status.target_change.as_ref().map(|c| {
            let state = if c.failed {
                "rolled back"
            } else {
                "waiting for a rollout"
            };
            format!(
                "changed by {} ({}), {state}",
                c.changed_by,
                c.fields.join(", ")
            )
        }),
        phase,
        name,
    }
}

/// The digest of the serving template's pod spec, from the template the status keeps.
fn pod_spec_digest(status: &greenlight_api::StageStatus) -> Option<String> {
    let serving = status.template.as_deref()?;
    let pinned = status.templates.iter().find(|t| t.digest == serving)?;
    let spec = pinned.template.get("template")?.get("spec")?;
    Some(format!("sha256:{}", greenlight_core::digest::digest(spec)))
}

/// The short form of a template digest: its first 12 hex digits.
fn short(digest: &str) -> &str {
    let hex = digest.trim_start_matches("sha256:");
    &hex[..hex.len().min(12)]
}

/// Releases that run on different pod specs at different stages: the same bytes everywhere
/// means the same images on the same pod spec (labels aside, which differ by target).
fn template_splits(view: &PipelineView) -> Vec<String> {
    let mut by_release: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for s in &view.stages {
        if let (Some(current), Some(t)) = (&s.current, &s.pod_spec) {
            by_release
                .entry(current)
                .or_default()
                .push((&s.name, short(t)));
        }
    }
    by_release
        .into_iter()
        .filter(|(_, at)| at.iter().any(|(_, t)| *t != at[0].1))
        .map(|(release, at)| {
            let at: Vec<String> = at.iter().map(|(s, t)| format!("{s} {t}")).collect();
            format!("{release} runs on different pod specs: {}", at.join(", "))
        })
        .collect()
}

/// The stage's own message when it waits or stopped, else the release's at this stage.
fn why(
    phase: &str,
    message: Option<&str>,
    at_stage: Option<&ReleaseStageStatus>,
) -> Option<String> {
    if phase == "Idle" {
        return None;
    }
    message
        .filter(|m| !m.is_empty())
        .map(String::from)
        .or_else(|| at_stage.and_then(|s| s.message.clone()))
}

/// The stage's gates, then its checks (pre-rollout, pre-promotion, verify), each check named
/// with its list.
fn gate_views(at_stage: &ReleaseStageStatus) -> Vec<GateView> {
    at_stage
        .gates
        .iter()
        .chain(at_stage.checks.iter())
        .map(|g| GateView {
            name: match g.list {
                Some(list) => format!("{} {}", list.as_str(), g.name),
                None => g.name.clone(),
            },
            verdict: format!("{:?}", g.result),
            value: g.value.clone(),
            message: g.message.clone(),
        })
        .collect()
}

/// Text from objects (messages, comments) without control characters, so none of it can
/// move the cursor or change the terminal.
pub fn clean(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).collect()
}

/// Colours for text on a terminal; all empty when colour is off.
#[derive(Clone, Copy)]
pub struct Palette {
    pub on: bool,
}

impl Palette {
    fn paint(self, code: &str, text: &str) -> String {
        match self.on {
            true => format!("\x1b[{code}m{text}\x1b[0m"),
            false => text.to_string(),
        }
    }

    fn phase(self, phase: &str) -> String {
        let code = match phase {
            "Idle" | "Succeeded" | "Passed" => "32",
            "Waiting" | "Pending" | "Inconclusive" | "Blocked" => "33",
            "Progressing" | "Verifying" => "36",
            "RollingBack" | "Failed" => "31",
            _ => "35",
        };
        self.paint(code, phase)
    }

    fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }

    /// Break-glass colours: magenta for an emergency, red for what is overdue.
    pub fn emergency(self, text: &str) -> String {
        self.paint("1;35", text)
    }

    pub fn red(self, text: &str) -> String {
        self.paint("1;31", text)
    }

    pub fn yellow(self, text: &str) -> String {
        self.paint("33", text)
    }
}

/// A bar of `width` cells, `percent` of them full.
pub fn bar(percent: i32, width: usize) -> String {
    let full = (percent.clamp(0, 100) as usize * width + 50) / 100;
    format!("{}{}", "█".repeat(full), "░".repeat(width - full))
}

/// The pipeline as a tree, one stage per branch, its gates beneath it.
pub fn pipeline_text(view: &PipelineView, palette: Palette) -> String {
    let mut out = format!(
        "{}  {}\n",
        view.pipeline,
        palette.dim(&format!("(namespace {})", view.namespace))
    );
    if view.stages.is_empty() {
        out.push_str("  no stages in this pipeline\n");
    }
    let width = view.stages.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for (i, stage) in view.stages.iter().enumerate() {
        let last = i + 1 == view.stages.len();
        let (branch, stem) = if last {
            ("└─", "  ")
        } else {
            ("├─", "│ ")
        };
        out.push_str(&format!("{branch} {}\n", stage_line(stage, width, palette)));
        for line in stage_details(stage, palette) {
            out.push_str(&format!("{stem}    {line}\n"));
        }
    }
    for split in template_splits(view) {
        out.push_str(&format!("{}\n", palette.dim(&clean(&split))));
    }
    out
}

fn stage_line(stage: &StageView, width: usize, palette: Palette) -> String {
    // Padded after colouring: every phase is coloured, whatever its length.
    let pad = " ".repeat(11usize.saturating_sub(stage.phase.chars().count()));
    let phase = format!("{}{pad}", palette.phase(&stage.phase));
    let releases = match (&stage.current, &stage.candidate) {
        (Some(c), Some(n)) if c != n => format!("{c} → {n}"),
        (Some(c), _) => c.clone(),
        (None, Some(n)) => format!("→ {n}"),
        (None, None) => "no release yet".into(),
    };
    format!("{:<width$}  {phase} {releases}", stage.name)
}

fn stage_details(stage: &StageView, palette: Palette) -> Vec<String> {
    let mut lines = Vec::new();
    if stage.requires.len() > 1 {
        lines.push(palette.dim(&format!("requires {}", stage.requires.join(", "))));
    }
    if let Some(c) = &stage.canary {
        // Past the last step (promoting, baking) there is no step to show.
        let at = match c.step as usize > c.steps {
            true => "canary".to_string(),
            false => format!("canary step {}/{}", c.step, c.steps),
        };
        lines.push(format!(
            "{at} {} {:>3}%  {}",
            bar(c.weight, 20),
            c.weight,
            c.phase
        ));
    }
    if let Some(t) = &stage.template {
        lines.push(palette.dim(&format!("template {}", short(t))));
    }
    if let Some(change) = &stage.target_change {
        lines.push(format!("target {}", clean(change)));
    }
    if let Some(emergency) = &stage.emergency {
        lines.push(palette.emergency(&clean(emergency)));
    }
    let now = jiff::Timestamp::now();
    for (release, due) in &stage.open_reviews {
        let due_text = due.map_or("no due date".to_string(), |d| format!("due {d}"));
        let line = format!(
            "review open: emergency rollout of {} ({due_text})",
            clean(release)
        );
        let overdue = due.is_some_and(|d| d <= now);
        lines.push(match overdue {
            true => palette.red(&format!("{line} OVERDUE")),
            false => palette.emergency(&line),
        });
    }
    if let Some(why) = &stage.why {
        let label = match stage.phase.as_str() {
            "Progressing" | "Verifying" | "RollingBack" => "now",
            _ => "why",
        };
        lines.push(format!("{label}: {}", clean(why)));
    }
    for g in &stage.gates {
        let value = g
            .value
            .as_deref()
            .map(|v| format!(" = {v}"))
            .unwrap_or_default();
        lines.push(format!(
            "gate {} {}{value}  {}",
            g.name,
            palette.phase(&g.verdict),
            palette.dim(&clean(&g.message))
        ));
    }
    lines.extend(
        stage
            .comparisons
            .iter()
            .flat_map(|c| comparison_lines(c, palette)),
    );
    lines
}

/// A compare gate's last judgement: its verdict and score, then one line per metric with
/// its class, both sample sizes, the shift with its 98% interval, the mean ratio and p.
fn comparison_lines(view: &GateComparison, palette: Palette) -> Vec<String> {
    let j = &view.judgement;
    let verdict = format!("{:?}", j.verdict);
    let mut lines = vec![format!(
        "compare {} ({}) {} score {}",
        clean(&view.gate),
        clean(&view.scope),
        palette.phase(&verdict),
        j.score
    )];
    let number = |v: Option<f64>, signed: bool| match (v, signed) {
        (Some(v), true) => format!("{v:+.4}"),
        (Some(v), false) => format!("{v:.4}"),
        (None, _) => "-".into(),
    };
    for m in &j.metrics {
        lines.push(format!(
            "  {} {:?}  n {}/{}  shift {} (98% {}..{})  ratio {}  p {}",
            clean(&m.metric),
            m.class,
            m.canary_samples,
            m.baseline_samples,
            number(m.shift, true),
            number(m.lower, true),
            number(m.upper, true),
            number(m.ratio, false),
            number(m.p_value, false)
        ));
    }
    lines
}

/// One pipeline of a namespace: its stages in DAG order, each with its phase.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRow {
    pub pipeline: String,
    pub stages: Vec<(String, String)>,
}

/// The pipelines the Stages make up, by name.
pub fn pipelines(stages: &[Stage]) -> Vec<PipelineRow> {
    let mut by_pipeline: BTreeMap<&str, Vec<&Stage>> = BTreeMap::new();
    for s in stages {
        by_pipeline.entry(&s.spec.pipeline).or_default().push(s);
    }
    by_pipeline
        .into_iter()
        .map(|(pipeline, members)| PipelineRow {
            pipeline: pipeline.to_string(),
            stages: dag_order(&members)
                .into_iter()
                .map(|s| {
                    let phase = s.status.as_ref().and_then(|st| st.phase);
                    let phase = phase.map_or_else(|| "Unknown".into(), |p| format!("{p:?}"));
                    (s.metadata.name.clone().unwrap_or_default(), phase)
                })
                .collect(),
        })
        .collect()
}

/// One line per pipeline, then how to look at one.
pub fn pipelines_text(rows: &[PipelineRow], palette: Palette) -> String {
    let width = rows.iter().map(|r| r.pipeline.len()).max().unwrap_or(0);
    let mut out = String::new();
    for row in rows {
        let stages: Vec<String> = row
            .stages
            .iter()
            .map(|(s, phase)| format!("{}={}", clean(s), palette.phase(phase)))
            .collect();
        let name = clean(&row.pipeline);
        out.push_str(&format!("{name:<width$}  {}\n", stages.join(" ")));
    }
    let first = rows
        .first()
        .map_or("NAME".to_string(), |r| clean(&r.pipeline));
    out.push_str(&palette.dim(&format!(
        "pick one: kubectl greenlight get pipeline {first} [--watch]"
    )));
    out.push('\n');
    out
}

/// One row per release: its phase at each stage of its pipeline.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseRow {
    pub name: String,
    pub pipeline: String,
    pub version: String,
    pub phase: String,
    pub created: Option<Timestamp>,
    /// Stage name and this release's phase there, in DAG order.
    pub stages: Vec<(String, String)>,
}

/// Releases, newest first, with their phase at each stage of their pipeline.
pub fn releases(releases: &[Release], stages: &[Stage]) -> Vec<ReleaseRow> {
    let mut rows: Vec<ReleaseRow> = releases
        .iter()
        .map(|r| {
            let ours: Vec<&Stage> = stages
                .iter()
                .filter(|s| s.spec.pipeline == r.spec.pipeline)
                .collect();
            let at = r
                .status
                .as_ref()
                .map(|s| s.stages.clone())
                .unwrap_or_default();
            ReleaseRow {
                name: r.metadata.name.clone().unwrap_or_default(),
                pipeline: r.spec.pipeline.clone(),
                version: clean(&r.spec.version),
                phase: r
                    .status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .map_or("Pending".into(), |p| format!("{p:?}")),
                created: r.metadata.creation_timestamp.as_ref().map(|t| t.0),
                stages: dag_order(&ours)
                    .into_iter()
                    .filter_map(|s| s.metadata.name.clone())
                    .map(|s| {
                        let phase = at.get(&s).map_or("-".into(), |p| format!("{:?}", p.phase));
                        (s, phase)
                    })
                    .collect(),
            }
        })
        .collect();
    rows.sort_by(|a, b| b.created.cmp(&a.created).then(a.name.cmp(&b.name)));
    rows
}

pub fn releases_text(rows: &[ReleaseRow], now: Timestamp, palette: Palette) -> String {
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(7);
    let ver_w = rows
        .iter()
        .map(|r| r.version.len())
        .max()
        .unwrap_or(0)
        .max(7);
    let mut out = format!(
        "{:<name_w$}  {:<ver_w$}  {:<11}  {:>5}  STAGES\n",
        "RELEASE", "VERSION", "PHASE", "AGE"
    );
    for r in rows {
        let stages: Vec<String> = r
            .stages
            .iter()
            .map(|(s, p)| format!("{s}={}", palette.phase(p)))
            .collect();
        let age = r.created.map(|c| age(now, c)).unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<name_w$}  {:<ver_w$}  {}  {age:>5}  {}\n",
            r.name,
            r.version,
            palette.phase(&format!("{:<11}", r.phase)),
            stages.join(" ")
        ));
    }
    out
}

/// `45s`, `12m`, `3h`, `2d`, as kubectl shows ages.
pub fn age(now: Timestamp, then: Timestamp) -> String {
    let secs = now.as_second().saturating_sub(then.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The audit trail, oldest first: when, who, what, where, and the message.
pub fn history_text(release: &Release) -> String {
    let audit = release
        .status
        .as_ref()
        .map(|s| s.audit.clone())
        .unwrap_or_default();
    if audit.is_empty() {
        return "no audit entries yet\n".into();
    }
    let mut entries = audit;
    entries.sort_by_key(|e| e.time);
    let actor_w = entries
        .iter()
        .map(|e| e.actor.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut out = format!(
        "{:<20}  {:<actor_w$}  {:<18}  {:<10}  MESSAGE\n",
        "TIME", "ACTOR", "ACTION", "STAGE"
    );
    for e in entries {
        out.push_str(&format!(
            "{:<20}  {:<actor_w$}  {:<18}  {:<10}  {}\n",
            e.time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            e.actor,
            format!("{:?}", e.action),
            clean(&e.stage),
            clean(&e.message)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(name: &str, requires: &[&str], status: serde_json::Value) -> Stage {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Stage",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"pipeline": "web", "requires": requires, "target": {"name": name},
                     "strategy": {"type": if name == "prod" { "canary" } else { "rolling" },
                                  "canary": {"steps": [{"setWeight": 10}, {"setWeight": 50}, {"setWeight": 100}]}}},
            "status": status,
        }))
        .expect("stage")
    }

    fn release(name: &str, stages: serde_json::Value) -> Release {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": name, "namespace": "shop", "creationTimestamp": "2026-11-27T10:00:00Z"},
            "spec": {"pipeline": "web", "version": "1.2.0",
                     "artifacts": [{"name": "web", "image": format!("r/web@sha256:{}", "a".repeat(64))}]},
            "status": {"phase": "Progressing", "stages": stages,
                       "audit": [
                         {"time": "2026-11-27T10:05:00Z", "stage": "prod", "action": "Approved", "actor": "alice", "message": "approved"},
                         {"time": "2026-11-27T10:01:00Z", "stage": "dev", "action": "RolloutStarted", "actor": "greenlight", "message": "started"}]},
        }))
        .expect("release")
    }

    fn world() -> (Vec<Stage>, Vec<Release>) {
        let stages = vec![
            stage(
                "prod",
                &["test"],
                serde_json::json!({"phase": "Progressing", "currentRelease": "web-1", "currentVersion": "1.1.0",
                "rollout": {"release": "web-2", "version": "1.2.0", "startedAt": "2026-11-27T10:10:00Z", "direction": "Forward",
                            "canary": {"phase": "Stepping", "step": 1, "stepStartedAt": "2026-11-27T10:11:00Z", "weight": 50}}}),
            ),
            stage(
                "dev",
                &[],
                serde_json::json!({"phase": "Idle", "currentRelease": "web-2", "currentVersion": "1.2.0",
                                   "template": "sha256:aaaaaaaaaaaaaaaa",
                                   "templates": [{"digest": "sha256:aaaaaaaaaaaaaaaa",
                                                  "template": {"template": {"spec": {"containers": [{"name": "web"}]}}}}]}),
            ),
            stage(
                "test",
                &["dev"],
                serde_json::json!({"phase": "Waiting", "currentRelease": "web-1", "currentVersion": "1.1.0",
                "candidateRelease": "web-2", "candidateVersion": "1.2.0",
                "message": "the schedule fires next at 2026-11-28T03:00:00+01:00[Europe/Paris]"}),
            ),
        ];
        let releases = vec![release(
            "web-2",
            serde_json::json!({
                "dev": {"phase": "Succeeded"},
                "test": {"phase": "Waiting", "reason": "WaitingForSchedule"},
                "prod": {"phase": "Progressing", "gates": [{"name": "error-rate", "result": "Passed", "value": "0.002",
                         "message": "0.002 < 0.01", "since": "2026-11-27T10:12:00Z"}],
                         "comparisons": [{"gate": "latency", "scope": "step-1", "score": 0.0, "verdict": "Fail", "metrics": [
                           {"metric": "p99", "class": "High", "canarySamples": 11, "baselineSamples": 11,
                            "shift": 0.0102, "lower": 0.0088, "upper": 0.0117, "pValue": 0.00002, "ratio": 2.03}]}]},
            }),
        )];
        (stages, releases)
    }

    #[test]
    fn a_pipeline_shows_its_stages_in_dag_order_with_waits_weights_and_gates() {
        let (stages, releases) = world();
        let view = pipeline("web", "shop", &stages, &releases);
        let names: Vec<&str> = view.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["dev", "test", "prod"]);
        let text = pipeline_text(&view, Palette { on: false });
        assert!(
            text.contains("├─ dev   Idle        1.2.0 (web-2)"),
            "{text}"
        );
        assert!(
            text.contains("├─ test  Waiting     1.1.0 (web-1) → 1.2.0 (web-2)"),
            "{text}"
        );
        assert!(
            text.contains(
                "why: the schedule fires next at 2026-11-28T03:00:00+01:00[Europe/Paris]"
            ),
            "{text}"
        );
        assert!(
            text.contains("└─ prod  Progressing 1.1.0 (web-1) → 1.2.0 (web-2)"),
            "{text}"
        );
        assert!(
            text.contains(&format!("canary step 2/3 {}  50%  Stepping", bar(50, 20))),
            "{text}"
        );
        assert!(
            text.contains("gate error-rate Passed = 0.002  0.002 < 0.01"),
            "{text}"
        );
        assert!(
            text.contains("compare latency (step-1) Fail score 0"),
            "{text}"
        );
        assert!(
            text.contains(
                "p99 High  n 11/11  shift +0.0102 (98% +0.0088..+0.0117)  ratio 2.0300  p 0.0000"
            ),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "no colour when it is off");
        assert!(pipeline_text(&view, Palette { on: true }).contains("\x1b[36mProgressing"));
    }

    #[test]
    fn versions_written_into_a_status_cannot_drive_the_terminal() {
        let escape = "1.2.0\u{1b}]0;pwned\u{7}\u{1b}[2J";
        let stages = vec![stage(
            "dev",
            &[],
            serde_json::json!({"phase": "Idle", "currentRelease": "web-2", "currentVersion": escape}),
        )];
        let view = pipeline("web", "shop", &stages, &[]);
        let text = pipeline_text(&view, Palette { on: false });
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
        assert!(text.contains("1.2.0]0;pwned[2J (web-2)"), "{text}");
    }

    #[test]
    fn each_stage_shows_its_template_and_a_release_on_two_templates_is_called_out() {
        let (mut stages, releases) = world();
        let edited = serde_json::json!({"phase": "Idle", "currentRelease": "web-2",
            "currentVersion": "1.2.0", "template": "sha256:bbbbbbbbbbbbbbbb",
            "templates": [{"digest": "sha256:bbbbbbbbbbbbbbbb",
                           "template": {"template": {"spec": {"containers": [{"name": "web"}, {"name": "miner"}]}}}}],
            "targetChange": {"digest": "sha256:cc", "fields": ["template.spec.containers[miner]"],
                             "changedBy": "kubectl-patch"}});
        stages[2].status = serde_json::from_value(edited).ok();
        let view = pipeline("web", "shop", &stages, &releases);
        let text = pipeline_text(&view, Palette { on: false });
        assert!(text.contains("template aaaaaaaaaaaa"), "{text}");
        assert!(
            text.contains("target changed by kubectl-patch (template.spec.containers[miner]), waiting for a rollout"),
            "{text}"
        );
        let dev = pod_spec_digest(&stages[1].status.clone().unwrap()).unwrap();
        let test = pod_spec_digest(&stages[2].status.clone().unwrap()).unwrap();
        let split = format!(
            "1.2.0 (web-2) runs on different pod specs: dev {}, test {}",
            short(&dev),
            short(&test)
        );
        assert!(text.contains(&split), "{text}");
        stages[2].status.as_mut().unwrap().templates[0].template = serde_json::json!(
            {"template": {"metadata": {"labels": {"app": "test"}}, "spec": {"containers": [{"name": "web"}]}}}
        );
        let view = pipeline("web", "shop", &stages, &releases);
        let text = pipeline_text(&view, Palette { on: false });
        assert!(
            !text.contains("different pod specs"),
            "labels aside: {text}"
        );
    }

    #[test]
    fn without_a_name_each_pipeline_is_one_line_with_its_stages_phases() {
        let (mut stages, _) = world();
        let mut other = stage("edge", &[], serde_json::json!({"phase": "Idle"}));
        other.spec.pipeline = "api".into();
        stages.push(other);
        let text = pipelines_text(&pipelines(&stages), Palette { on: false });
        assert_eq!(
            text,
            "api  edge=Idle\nweb  dev=Idle test=Waiting prod=Progressing\npick one: kubectl greenlight get pipeline api [--watch]\n"
        );
    }

    #[test]
    fn a_bar_fills_in_proportion_and_stays_in_bounds() {
        assert_eq!(bar(0, 10), "░░░░░░░░░░");
        assert_eq!(bar(25, 4), "█░░░");
        assert_eq!(bar(100, 4), "████");
        assert_eq!(bar(250, 4), "████");
        assert_eq!(bar(-5, 4), "░░░░");
    }

    #[test]
    fn releases_show_their_phase_at_each_stage_and_history_runs_oldest_first() {
        let (stages, releases) = world();
        let rows = super::releases(&releases, &stages);
        assert_eq!(
            rows[0].stages,
            [
                ("dev".to_string(), "Succeeded".to_string()),
                ("test".into(), "Waiting".into()),
                ("prod".into(), "Progressing".into())
            ]
        );
        let now: Timestamp = "2026-11-27T12:00:00Z".parse().unwrap();
        let text = releases_text(&rows, now, Palette { on: false });
        assert!(
            text.contains(
                "web-2    1.2.0    Progressing     2h  dev=Succeeded test=Waiting prod=Progressing"
            ),
            "{text}"
        );
        let history = history_text(&releases[0]);
        let started = history.find("RolloutStarted").unwrap();
        let approved = history.find("Approved").unwrap();
        assert!(started < approved, "oldest first:\n{history}");
    }

    #[test]
    fn stages_in_a_cycle_come_last_instead_of_vanishing() {
        let a = stage("a", &["b"], serde_json::json!({}));
        let b = stage("b", &["a"], serde_json::json!({}));
        let c = stage("c", &[], serde_json::json!({}));
        let order: Vec<String> = dag_order(&[&a, &b, &c])
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        assert_eq!(order, ["c", "a", "b"]);
    }
}
