//! What goes into a decision and what comes out of it: the observed state of releases,
//! workloads and gates, and the status, workloads, traffic and events the stage should have.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::events::StageEvent;
use crate::api::release::{Artifact, ReleaseStageStatus, ReleaseType};
use crate::api::stage::StageStatus;
pub use crate::observed::PrimaryView;
use crate::validation::StagePlan;
use crate::verdict::GateOutcome;

/// Longest wait before a stage is looked at again, whatever it is waiting for.
pub const MAX_REQUEUE: Duration = Duration::from_secs(300);

/// A release as the stage sees it.
#[derive(Debug, Clone)]
pub struct ReleaseView {
    pub name: String,
    pub version: String,
    pub artifacts: Vec<Artifact>,
    /// Chooses the stage's release policy for it.
    pub release_type: ReleaseType,
    pub valid: bool,
    /// Why this release cannot run at this stage (e.g. an artifact names no container).
    pub unfit: Option<String>,
    /// The requester of the emergency whose review is open here, if one is.
    pub review_open: Option<String>,
    /// The release's progress at every stage of the pipeline.
    pub stages: BTreeMap<String, ReleaseStageStatus>,
}

/// Results of one gate list (the candidate's gates, or a rollout's check list), in the
/// declared order, up to the first that did not pass.
#[derive(Debug, Clone)]
pub struct GateReport {
    pub release: String,
    /// Which list was evaluated.
    pub list: crate::api::gate::GateList,
    /// The template of a configuration change the gates judged, if they judged one.
    pub template: Option<String>,
    pub results: Vec<(String, GateOutcome)>,
    /// When each gate that did not pass should be evaluated again.
    pub recheck_after: Duration,
}

/// The target's pod template as observed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetTemplate {
    /// `sha256:...` of the template's JSON (with `minReadySeconds`).
    pub digest: String,
    /// The fields that differ from the serving template, at most 20.
    pub fields: Vec<String>,
    /// The field manager that last wrote the template.
    pub changed_by: String,
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
    /// Why the stage's spec no longer compiles, when it stopped mid-rollout: `plan` is then a
    /// rollback plan, and the rollout in progress is rolled back.
    pub invalid: Option<&'a str>,
    /// The target's template now; a rollout pins it when it starts.
    pub target: Option<&'a TargetTemplate>,
    pub now: Timestamp,
}

/// The result of one due gate measurement of a canary analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub scope: String,
    pub gate: String,
    /// The workload it read.
    pub workload: Measured,
    pub outcome: GateOutcome,
}

/// What the primary workload should run.
#[derive(Debug, Clone, PartialEq)]
pub enum DesiredPrimary {
    Release {
        name: String,
        artifacts: Vec<Artifact>,
        /// The pinned template to run it on (`None`: a rollout from before templates were
        /// pinned, on the target's).
        template: Option<String>,
    },
    /// No release to run: scale to zero (a first rollout that failed).
    Empty,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Evaluate the gates for this release and decide again with their results.
    EvaluateGates {
        release: String,
        /// For a configuration change: its template, and since when it waits (approvals
        /// given before it do not count for it).
        configuration: Option<(String, Timestamp)>,
        /// The list to evaluate: the stage's gates, or a check list of its rollout.
        list: crate::api::gate::GateList,
        /// Since when this run of a check list runs (none for the stage's gates): a Job gate
        /// names its Job by it, so each run has its own Job and a restart finds it.
        run: Option<Timestamp>,
        /// The gates to evaluate, in order: the list as it was when its run started.
        gates: Vec<String>,
        /// The emergency the release is judged for, if it is one: its requester's approval,
        /// and any given before it was asked, do not count.
        emergency: Option<(String, Timestamp)>,
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
    /// The person's command waits for a later pass (a retry asked while the failure it
    /// retries is still being rolled back): neither acted upon nor refused.
    pub command_deferred: bool,
}

/// The canary workload as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryView {
    pub release: Option<String>,
    /// The pinned template it runs, by digest.
    pub template: Option<String>,
    pub replicas: i32,
    pub available: bool,
    /// Every one of its replicas runs its template and is available (blue-green switches
    /// only to a preview in full).
    pub complete: bool,
    /// The canary weight the traffic router has in effect, when it can tell.
    pub weight_in_effect: Option<i32>,
    /// Why the router cannot tell (e.g. the HTTPRoute is gone), when it cannot.
    pub router_problem: Option<String>,
    /// Who else last changed the route, when the weight in effect is not the one decided.
    pub changed_by: Option<String>,
}

/// A person's instruction, given through a StageCommand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Continue past a pause without duration; elsewhere, skip the remaining steps.
    Promote,
    /// Roll back now.
    Abort,
    /// Run this release, failed here before, again.
    Retry(String),
    /// Roll this release out as an emergency, once its approvers agree.
    Emergency(crate::api::emergency::EmergencyRequest),
    /// Close the review of this release's emergency rollout here, linking the post-mortem;
    /// `by` is who asks, who may not be the emergency's requester.
    CloseReview {
        release: String,
        post_mortem: String,
        by: String,
    },
}

impl Command {
    /// The command's name, as a StageCommand's `spec.action` says it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Command::Promote => "promote",
            Command::Abort => "abort",
            Command::Retry(_) => "retry",
            Command::Emergency(_) => "emergency",
            Command::CloseReview { .. } => "closeReview",
        }
    }
}

/// One gate measurement the machine asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub scope: String,
    pub gate: String,
    /// The workload `{{canary}}` names in the gate's query.
    pub workload: Measured,
    /// Since when the analysis measures (its step's start, or the rollout's): data from
    /// before it may be another release's, under the same workload name.
    pub since: jiff::Timestamp,
}

/// Which workload serves the release under test, and so which one a measurement reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measured {
    Canary,
    Primary,
}

impl Measured {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canary => "canary",
            Self::Primary => "primary",
        }
    }
}
