//! DORA figures of a pipeline and of each of its stages, computed from durable state only: the
//! Releases (their creation, source commit time and type) and their append-only audit trails,
//! where every rollout's success (`Promoted`) and failure (`RolledBack`, `AbortRequested`) is
//! recorded once, with its time and cause. A restart therefore changes nothing.
//!
//! A pipeline's figures are those of its production stages: the stages no other stage
//! requires; a release that succeeded at several of them (regions) counts once there. Rework
//! is the share of successful rollouts that were hotfixes. Quantiles are nearest-rank (always an observed value). Bands follow the 2023
//! State of DevOps report; it gives none for rework.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use kube_core::ResourceExt;
use serde::Serialize;

use crate::api::release::{AuditAction, ReleaseType};
use crate::api::{Release, Stage};

/// The period figures are computed over: events at or after `since`, up to `until`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub since: Timestamp,
    pub until: Timestamp,
}

impl Window {
    /// The `span` up to `until`.
    pub fn last(span: SignedDuration, until: Timestamp) -> Self {
        let since = until
            .checked_sub(span)
            .unwrap_or(Timestamp::MIN)
            .max(Timestamp::UNIX_EPOCH);
        Self { since, until }
    }

    fn days(&self) -> f64 {
        self.until.duration_since(self.since).as_secs_f64().max(1.0) / 86_400.0
    }

    fn holds(&self, t: Timestamp) -> bool {
        self.since <= t && t <= self.until
    }
}

/// Why a period (`--since`, `--dora-window`) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("'{0}' is not a period; use days, weeks or a duration, e.g. 90d, 2w, 12h")]
    Malformed(String),
    #[error("'{0}' is out of range: from 1m to 366d")]
    OutOfRange(String),
}

/// A period such as `90d`, `2w` or `12h`: whole days or weeks, or a Go-style duration; from
/// one minute to 366 days.
pub fn parse_period(text: &str) -> Result<SignedDuration, PeriodError> {
    let t = text.trim();
    let days = |n: &str, per: i64| n.parse::<i64>().ok().map(|n| n.saturating_mul(per));
    let seconds = match (t.strip_suffix('d'), t.strip_suffix('w')) {
        (Some(n), _) => days(n, 86_400),
        (_, Some(n)) => days(n, 7 * 86_400),
        _ => crate::schedule::duration::parse_duration(t)
            .ok()
            .map(|d| d.as_secs() as i64),
    };
    let seconds = seconds.ok_or_else(|| PeriodError::Malformed(text.to_string()))?;
    if !(60..=366 * 86_400).contains(&seconds) {
        return Err(PeriodError::OutOfRange(text.to_string()));
    }
    Ok(SignedDuration::from_secs(seconds))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Band {
    Low,
    Medium,
    High,
    Elite,
}

impl Band {
    /// 4 for elite down to 1 for low, as the band metric reports it.
    pub fn score(self) -> i64 {
        self as i64 + 1
    }
}

/// A median and a 90th percentile, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Spread {
    pub p50: i64,
    pub p90: i64,
}

/// How many failures had this cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CauseCount {
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    pub count: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bands {
    pub deployment_frequency: Option<Band>,
    pub lead_time: Option<Band>,
    pub change_failure_rate: Option<Band>,
    pub time_to_restore: Option<Band>,
}

/// The figures of one stage, or of a pipeline's production stages.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    /// Successful rollouts.
    pub deployments: u32,
    /// Rollouts that failed or were rolled back.
    pub failures: u32,
    pub deployments_per_day: f64,
    pub deployments_per_week: f64,
    pub lead_time_seconds: Option<Spread>,
    pub change_failure_rate: Option<f64>,
    /// Failures followed by a success at the same stage.
    pub restores: u32,
    /// Stages whose last finished rollout failed: outages not restored yet.
    pub open_outages: u32,
    pub time_to_restore_seconds: Option<Spread>,
    /// Successful rollouts of hotfix releases.
    pub hotfixes: u32,
    /// Hotfixes over all successful rollouts.
    pub rework_rate: Option<f64>,
    pub failure_causes: Vec<CauseCount>,
    pub bands: Bands,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageReport {
    pub stage: String,
    pub figures: Figures,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineReport {
    pub namespace: String,
    pub pipeline: String,
    /// The stages the pipeline's own figures are about.
    pub production: Vec<String>,
    pub figures: Figures,
    pub stages: Vec<StageReport>,
    /// The rollouts that finished in production in the period, newest first (at most 200),
    /// each with the change request it went out under: the trace an auditor asks for.
    pub changes: Vec<ProductionChange>,
    /// Reviews of emergency rollouts not closed yet (whenever they were opened).
    pub reviews_open: u32,
    /// Those of them past their due date.
    pub reviews_overdue: u32,
}

/// One rollout that finished at a production stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductionChange {
    pub stage: String,
    pub release: String,
    pub time: Timestamp,
    /// `Succeeded`, or why it failed.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_ticket: Option<String>,
}

/// Most production changes a report lists.
const CHANGES_LISTED: usize = 200;

/// One finished rollout of one release at one stage.
#[derive(Debug, Clone)]
struct Finish {
    stage: String,
    time: Timestamp,
    /// Where its lead time starts: the commit, else the Release's creation.
    origin: Timestamp,
    release: String,
    hotfix: bool,
    ticket: Option<String>,
    /// `None` for a success.
    failure: Option<(String, Option<String>)>,
}

/// The report of every pipeline that has Stages or Releases here, by namespace and name.
pub fn report<'a>(
    stages: impl IntoIterator<Item = &'a Stage>,
    releases: impl IntoIterator<Item = &'a Release>,
    window: Window,
) -> Vec<PipelineReport> {
    type Objects<'a> = (Vec<&'a Stage>, Vec<&'a Release>);
    let mut pipelines: BTreeMap<(String, String), Objects> = BTreeMap::new();
    for s in stages {
        let key = (s.namespace().unwrap_or_default(), s.spec.pipeline.clone());
        pipelines.entry(key).or_default().0.push(s);
    }
    for r in releases {
        let key = (r.namespace().unwrap_or_default(), r.spec.pipeline.clone());
        pipelines.entry(key).or_default().1.push(r);
    }
    pipelines
        .into_iter()
        .map(|((namespace, pipeline), (stages, releases))| {
            pipeline_report(namespace, pipeline, &stages, &releases, window)
        })
        .collect()
}

fn pipeline_report(
    namespace: String,
    pipeline: String,
    stages: &[&Stage],
    releases: &[&Release],
    window: Window,
) -> PipelineReport {
    let finishes: Vec<Finish> = releases.iter().flat_map(|r| finishes_of(r)).collect();
    let mut by_stage: BTreeMap<String, Vec<Finish>> =
        stages.iter().map(|s| (s.name_any(), Vec::new())).collect();
    for f in &finishes {
        by_stage.entry(f.stage.clone()).or_default().push(f.clone());
    }
    let production = production_stages(stages);
    let mut in_production: Vec<Finish> = production
        .iter()
        .flat_map(|p| by_stage.get(p).cloned().unwrap_or_default())
        .collect();
    first_success_per_release(&mut in_production);
    let reviews: Vec<crate::review::Review> = releases
        .iter()
        .flat_map(|r| crate::review::reviews(r))
        .collect();
    let open = reviews.iter().filter(|r| r.open()).count() as u32;
    let overdue = reviews.iter().filter(|r| r.overdue(window.until)).count() as u32;
    PipelineReport {
        reviews_open: open,
        reviews_overdue: overdue,
        changes: production_changes(&in_production, window),
        figures: figures(&in_production, window),
        stages: by_stage
            .into_iter()
            .map(|(stage, mine)| StageReport {
                figures: figures(&mine, window),
                stage,
            })
            .collect(),
        namespace,
        pipeline,
        production,
    }
}

fn production_changes(finishes: &[Finish], window: Window) -> Vec<ProductionChange> {
    let listed = finishes.iter().rev().filter(|f| window.holds(f.time));
    let listed = listed.take(CHANGES_LISTED).map(|f| ProductionChange {
        stage: f.stage.clone(),
        release: f.release.clone(),
        time: f.time,
        outcome: f
            .failure
            .as_ref()
            .map_or("Succeeded".into(), |(why, _)| why.clone()),
        change_ticket: f.ticket.clone(),
    });
    listed.collect()
}

/// Stages no other stage requires (none when no Stage exists any more).
fn production_stages(stages: &[&Stage]) -> Vec<String> {
    let required: BTreeSet<&String> = stages.iter().flat_map(|s| &s.spec.requires).collect();
    let mut sinks: Vec<String> = stages
        .iter()
        .map(|s| s.name_any())
        .filter(|n| !required.contains(n))
        .collect();
    sinks.sort();
    sinks
}

/// A release that reached several production stages (regions) was deployed once: when it
/// first succeeded there.
fn first_success_per_release(finishes: &mut Vec<Finish>) {
    finishes.sort_by_key(|f| f.time);
    let mut seen = BTreeSet::new();
    finishes.retain(|f| f.failure.is_some() || seen.insert(f.release.clone()));
}

fn created_at(release: &Release) -> Timestamp {
    release
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
}

/// The rollouts a release finished, from its audit trail: one outcome per attempt at a
/// stage (the first recorded, should a crash replay have recorded another).
fn finishes_of(release: &Release) -> Vec<Finish> {
    let origin = release
        .spec
        .source
        .as_ref()
        .and_then(|s| s.commit_time)
        .unwrap_or_else(|| created_at(release));
    let hotfix = release.spec.release_type == ReleaseType::Hotfix;
    let mut attempts = BTreeSet::new();
    let trail = release.status.iter().flat_map(|s| &s.audit);
    trail
        .filter_map(|entry| {
            let failure = match entry.action {
                AuditAction::Promoted => None,
                AuditAction::RolledBack | AuditAction::AbortRequested => {
                    let fallback = match entry.action {
                        AuditAction::AbortRequested => "Aborted",
                        _ => "RolledBack",
                    };
                    let reason = entry.reason.clone().unwrap_or_else(|| fallback.into());
                    Some((reason, entry.gate.clone()))
                }
                _ => return None,
            };
            attempts.insert(attempt_of(entry)).then(|| Finish {
                stage: entry.stage.clone(),
                time: entry.time,
                origin,
                release: release.name_any(),
                hotfix,
                ticket: release.spec.change_ticket.clone(),
                failure,
            })
        })
        .collect()
}

/// Which attempt an audit entry is about: its id (`stage/release/Action/attempt...`) without
/// the action; an entry without an id stands alone.
fn attempt_of(entry: &crate::api::release::AuditEntry) -> String {
    let mut parts: Vec<&str> = entry.id.split('/').collect();
    match parts.len() {
        4.. => {
            parts.remove(2);
            parts.join("/")
        }
        _ => format!("{}/{}/{:?}", entry.stage, entry.time, entry.action),
    }
}

/// The figures of these finished rollouts, in the window.
fn figures(finishes: &[Finish], window: Window) -> Figures {
    let inside: Vec<&Finish> = finishes.iter().filter(|f| window.holds(f.time)).collect();
    let successes: Vec<&Finish> = inside
        .iter()
        .copied()
        .filter(|f| f.failure.is_none())
        .collect();
    let deployments = successes.len() as u32;
    let failures = (inside.len() - successes.len()) as u32;
    let per_day = f64::from(deployments) / window.days();
    let lead: Vec<i64> = successes
        .iter()
        .map(|f| f.time.duration_since(f.origin).as_secs().max(0))
        .collect();
    let (restores, open_outages) = restore_times(finishes, window);
    let rollouts = deployments + failures;
    let cfr = (rollouts > 0).then(|| f64::from(failures) / f64::from(rollouts));
    let hotfixes = successes.iter().filter(|f| f.hotfix).count() as u32;
    let lead_time = spread(lead);
    let time_to_restore = spread(restores.clone());
    Figures {
        deployments,
        failures,
        deployments_per_day: per_day,
        deployments_per_week: per_day * 7.0,
        bands: Bands {
            deployment_frequency: (rollouts > 0).then(|| frequency_band(per_day)),
            lead_time: lead_time.map(|s| lead_time_band(s.p50)),
            change_failure_rate: cfr.map(failure_rate_band),
            time_to_restore: time_to_restore.map(|s| restore_band(s.p50)),
        },
        lead_time_seconds: lead_time,
        change_failure_rate: cfr,
        restores: restores.len() as u32,
        open_outages,
        time_to_restore_seconds: time_to_restore,
        hotfixes,
        rework_rate: (deployments > 0).then(|| f64::from(hotfixes) / f64::from(deployments)),
        failure_causes: causes(&inside),
    }
}

/// Seconds from the first failure of each outage to the success that ended it, per stage,
/// for outages that ended in the window; and how many outages have not ended.
fn restore_times(finishes: &[Finish], window: Window) -> (Vec<i64>, u32) {
    let mut by_stage: BTreeMap<&str, Vec<&Finish>> = BTreeMap::new();
    for f in finishes {
        by_stage.entry(&f.stage).or_default().push(f);
    }
    let (mut restores, mut open) = (Vec::new(), 0);
    for (_, mut list) in by_stage {
        list.sort_by_key(|f| f.time);
        let mut down_since: Option<Timestamp> = None;
        for f in list {
            match (&f.failure, down_since) {
                (Some(_), None) => down_since = Some(f.time),
                (None, Some(since)) => {
                    if window.holds(f.time) {
                        restores.push(f.time.duration_since(since).as_secs().max(0));
                    }
                    down_since = None;
                }
                _ => {}
            }
        }
        open += u32::from(down_since.is_some());
    }
    (restores, open)
}

fn causes(finishes: &[&Finish]) -> Vec<CauseCount> {
    let mut counts: BTreeMap<(String, Option<String>), u32> = BTreeMap::new();
    for (reason, gate) in finishes.iter().filter_map(|f| f.failure.clone()) {
        *counts.entry((reason, gate)).or_default() += 1;
    }
    let mut list: Vec<CauseCount> = counts
        .into_iter()
        .map(|((reason, gate), count)| CauseCount {
            reason,
            gate,
            count,
        })
        .collect();
    list.sort_by_key(|c| std::cmp::Reverse(c.count));
    list
}

/// Nearest-rank median and 90th percentile.
fn spread(mut values: Vec<i64>) -> Option<Spread> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = |q: f64| {
        let n = values.len();
        let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        values[i]
    };
    Some(Spread {
        p50: rank(0.5),
        p90: rank(0.9),
    })
}

const HOUR: i64 = 3_600;
const DAY: i64 = 24 * HOUR;

/// Elite: on demand (daily or more); high: weekly or more; medium: monthly or more.
pub fn frequency_band(per_day: f64) -> Band {
    match per_day {
        f if f >= 1.0 => Band::Elite,
        f if f >= 1.0 / 7.0 => Band::High,
        f if f >= 1.0 / 30.0 => Band::Medium,
        _ => Band::Low,
    }
}

/// Elite: under a day; high: under a week; medium: under a month.
pub fn lead_time_band(median: i64) -> Band {
    match median {
        s if s < DAY => Band::Elite,
        s if s < 7 * DAY => Band::High,
        s if s < 30 * DAY => Band::Medium,
        _ => Band::Low,
    }
}

/// Elite: 5% or less; high: 10% or less; medium: 15% or less.
pub fn failure_rate_band(rate: f64) -> Band {
    match rate {
        r if r <= 0.05 => Band::Elite,
        r if r <= 0.10 => Band::High,
        r if r <= 0.15 => Band::Medium,
        _ => Band::Low,
    }
}

/// Elite: under an hour; high: under a day; medium: under a week.
pub fn restore_band(median: i64) -> Band {
    match median {
        s if s < HOUR => Band::Elite,
        s if s < DAY => Band::High,
        s if s < 7 * DAY => Band::Medium,
        _ => Band::Low,
    }
}

#[cfg(test)]
#[path = "dora_tests.rs"]
mod tests;
