//! `Release`: an immutable, versioned set of artifacts pinned by digest, published by CI, and
//! the record of its journey through each stage of its pipeline.

// Each `printcolumn(...)` repeats `type_ = ...`, which this lint mistakes for a duplicate.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::approval::Identity;
use super::conditions::Condition;
use super::patterns::{DIGEST_PATTERN, NAME_PATTERN, VERSION_PATTERN};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "greenlight.dev",
    version = "v1alpha1",
    kind = "Release",
    namespaced,
    status = "ReleaseStatus",
    shortname = "rel",
    category = "greenlight",
    doc = "An immutable, versioned set of artifacts that CI publishes for a build; Greenlight moves it through the stages of its pipeline.",
    printcolumn(name = "Pipeline", type_ = "string", json_path = ".spec.pipeline"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Stages", type_ = "string", json_path = ".status.summary"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseSpec {
    /// The pipeline (set of Stages with the same `pipeline`) this release travels through.
    #[schemars(length(min = 1, max = 63), regex(pattern = NAME_PATTERN))]
    pub pipeline: String,
    /// Human-facing version, e.g. `1.4.2` or a build number.
    #[schemars(length(min = 1, max = 128), regex(pattern = VERSION_PATTERN))]
    pub version: String,
    /// Container images of the release, each pinned by digest.
    #[schemars(length(min = 1))]
    pub artifacts: Vec<Artifact>,
    #[serde(default, rename = "type")]
    pub release_type: ReleaseType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// The change request this release goes out under (e.g. `CHG0030001`), which a
    /// `changeTicket` gate checks with the ITSM tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub change_ticket: Option<String>,
    /// Who created the release, stamped by the admission webhook at creation (a value sent by
    /// the client is replaced). Approval gates use it to refuse self-approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<Identity>,
}

/// One container image of a release.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Name of the container in the target's pod template that runs this image.
    #[schemars(length(min = 1, max = 63), regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// Image reference pinned by digest: `registry/repo@sha256:<64 hex>` (a tag may precede `@`).
    #[schemars(regex(pattern = DIGEST_PATTERN))]
    pub image: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseType {
    #[default]
    Feature,
    Patch,
    Hotfix,
}

/// Where the release was built from.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// When the commit was made. Lead time is measured from here when given, else from the
    /// Release's creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Time>")]
    pub commit_time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ReleasePhase>,
    /// One line per stage, e.g. `dev=Succeeded test=Progressing prod=Waiting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Progress at each stage, keyed by stage name. Each stage's controller writes its own key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stages: BTreeMap<String, ReleaseStageStatus>,
    /// Who approved, rejected, promoted, rolled back or steered this release, and when.
    /// Entries are only ever appended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit: Vec<AuditEntry>,
}

/// One line of a release's audit trail.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Identifies the fact recorded (stage, release, action and attempt), so that a replay
    /// after a crash never records it twice.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[schemars(with = "Time")]
    pub time: Timestamp,
    pub stage: String,
    pub action: AuditAction,
    /// The user who acted, as verified by the admission webhook; `greenlight` for the
    /// operator's own decisions.
    pub actor: String,
    pub message: String,
    /// The Approval behind an `Approved` or `Rejected` entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// Why a rollout failed (`RolledBack`, `AbortRequested`): a CamelCase reason such as
    /// `AnalysisFailed` or `ProgressDeadlineExceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The gate whose verdict failed the rollout, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// The digest of the pod template the rollout pinned (`sha256:...`), on the entries of a
    /// rollout: what ran is the release's images on exactly this template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 80))]
    pub template: Option<String>,
    /// The template that served before, on a rollout's first entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 80))]
    pub previous_template: Option<String>,
    /// On a configuration change (the target's template edited, rolled out with the release
    /// already running): who edited it, as the target's managed fields name them, and what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub configuration: Option<String>,
    /// The release policy the stage applied, and what it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub policy: Option<String>,
    /// On a `BreakGlass` entry: when its review is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Time>")]
    pub review_due: Option<Timestamp>,
    /// On a `ReviewClosed` entry: the `BreakGlass` entry whose review it closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub review: Option<String>,
    /// The change request the release went out under (`spec.changeTicket`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub change_ticket: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AuditAction {
    Approved,
    Rejected,
    RolloutStarted,
    Promoted,
    RolledBack,
    PromoteRequested,
    AbortRequested,
    RetryRequested,
    /// The rollback that followed a failure finished.
    RollbackCompleted,
    /// A StageCommand that could not act, with why.
    CommandRefused,
    /// A gate of `preRollout` failed: the release failed here before any workload changed.
    PreRolloutFailed,
    /// Every gate of `verify` passed: the release counts as succeeded here.
    Verified,
    /// A gate of a check list (preRollout, prePromotion, verify) passed.
    GatePassed,
    /// A gate of a check list failed.
    GateFailed,
    /// Someone asked for an emergency rollout of the release.
    EmergencyRequested,
    /// An abort cancelled an emergency before it rolled out, or its release could no longer
    /// roll out.
    EmergencyCancelled,
    /// One control an approved emergency skipped (a window, a gate, a required stage).
    Bypassed,
    /// An emergency rollout started: it opens a review, due at `reviewDue`.
    BreakGlass,
    /// The review of an emergency rollout was closed, with its post-mortem.
    ReviewClosed,
    /// The review of an emergency rollout passed its due date open (recorded once).
    ReviewOverdue,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ReleasePhase {
    /// Valid, not yet rolled out anywhere.
    Pending,
    /// On its way through the pipeline.
    Progressing,
    /// Rolled out successfully at every stage of the pipeline.
    Succeeded,
    /// Failed at a stage; it is never promoted further.
    Failed,
    /// A newer release took its place before it finished the pipeline.
    Superseded,
    /// The spec is invalid; see the conditions.
    Invalid,
}

/// The release's progress at one stage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStageStatus {
    pub phase: StagePhaseForRelease,
    /// CamelCase reason, e.g. `WaitingForRequires`, `BlockedByWindow`, `ProgressDeadlineExceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Time>")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Time>")]
    pub finished_at: Option<Timestamp>,
    /// Last result of each gate of the stage, in the declared order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateResultStatus>,
    /// Which attempt this is: absent for the first, 2 after the first retry, and so on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Last result of each gate of the check lists (preRollout, prePromotion, verify) that
    /// have run, in their order; each names its list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 60))]
    pub checks: Vec<GateResultStatus>,
    /// The last judgement of each compare gate of this stage's canary analyses: the score,
    /// the verdict and, per metric, the class and the figures behind it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub comparisons: Vec<super::compare::GateComparison>,
    /// The release policy that applies to this release here and what it changes, e.g.
    /// `hotfix policy: gate test-soak skipped; gate two-approvals required`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub policy: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StagePhaseForRelease {
    Waiting,
    Progressing,
    Succeeded,
    Failed,
    Superseded,
    /// The apiserver refused a write this rollout needs; retried with backoff.
    Blocked,
}

impl ReleaseStageStatus {
    /// A fresh entry in `phase`, with nothing recorded yet.
    pub fn new(phase: StagePhaseForRelease) -> Self {
        Self {
            phase,
            reason: None,
            message: None,
            started_at: None,
            finished_at: None,
            gates: Vec::new(),
            attempt: None,
            checks: Vec::new(),
            comparisons: Vec::new(),
            policy: None,
        }
    }
}

impl StagePhaseForRelease {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Superseded)
    }
}

/// The last evaluation of one gate for this release at one stage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateResultStatus {
    pub name: String,
    pub result: GateVerdict,
    /// The measured value, when the gate measures one (e.g. the PromQL result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub message: String,
    /// Since when the gate has given this same result.
    #[schemars(with = "Time")]
    pub since: Timestamp,
    /// The check list the gate ran in; absent for `spec.gates`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<super::gate::GateList>,
    /// The Job a `job` gate started for this result: one that has since gone is not started
    /// again, its verdict stands (or is inconclusive, if it had none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub job: Option<String>,
    /// That Job's uid: a Job made again under its name is not the one started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub job_uid: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum GateVerdict {
    Passed,
    Failed,
    /// Not yet: a soak time not reached, outside a window. Re-checked when it can change.
    Pending,
    /// No trustworthy answer (no data, NaN, unreachable). Never counts as a pass.
    Inconclusive,
    /// The gate is missing or misconfigured.
    Invalid,
    /// Not evaluated because an earlier gate did not pass.
    Skipped,
}
