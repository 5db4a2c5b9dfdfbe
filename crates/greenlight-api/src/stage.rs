//! `Stage`: one environment on a release path, with its trigger, windows, gates, rollout
//! strategy, and the status of what it runs and what it is doing.

// Each `printcolumn(...)` repeats `type_ = ...`, which this lint mistakes for a duplicate.
#![allow(clippy::duplicated_attributes)]

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::canary::{Analysis, CanaryProgress, CanaryStrategy};
use super::conditions::Condition;
use super::gate::GateList;
use super::patterns::{DURATION_PATTERN, NAME_PATTERN};
use super::policy::ReleasePolicy;
use super::release::{Artifact, ReleaseType};
pub use super::verify::{OnTimeout, Verify};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "greenlight.dev",
    version = "v1alpha1",
    kind = "Stage",
    namespaced,
    status = "StageStatus",
    shortname = "stg",
    category = "greenlight",
    doc = "One environment on a release path: its trigger, windows, gates and rollout strategy.",
    printcolumn(name = "Pipeline", type_ = "string", json_path = ".spec.pipeline"),
    printcolumn(
        name = "Current",
        type_ = "string",
        json_path = ".status.currentVersion"
    ),
    printcolumn(
        name = "Candidate",
        type_ = "string",
        json_path = ".status.candidateVersion"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Weight",
        type_ = "integer",
        json_path = ".status.rollout.canary.weight"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct StageSpec {
    #[schemars(length(min = 1, max = 63), regex(pattern = NAME_PATTERN))]
    pub pipeline: String,
    /// Upstream stages where a release must have succeeded before it may come here.
    #[serde(default)]
    pub requires: Vec<String>,
    /// The Deployment used as the pod template. Git owns it; the operator never writes to it.
    /// Declare it with `replicas: 0`: the operator runs the pods in `<target>-primary`.
    pub target: TargetRef,
    /// Number of pods of the managed primary Deployment.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 10000))]
    pub replicas: i32,
    #[serde(default)]
    pub trigger: Trigger,
    /// Gate names, checked in this order before a rollout starts; the first that does not
    /// pass stops the evaluation, so list cheap checks first.
    #[serde(default)]
    pub gates: Vec<String>,
    /// Gates run once the `gates` pass, before any workload changes (a database snapshot, a
    /// migration): one that fails fails the release here with `PreRolloutFailed`, and no
    /// workload has been touched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(min = 1, max = 253)))]
    pub pre_rollout: Vec<String>,
    /// Gates run once the rollout is complete (rolling) or promoted (canary); the release
    /// counts as `Succeeded` here only when they pass, and one that fails rolls back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verify>,
    /// Notifiers (in this namespace) told when a release is upcoming, starts, changes step,
    /// waits for approval, succeeds, fails or is rolled back here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10), inner(length(min = 1, max = 253)))]
    pub notifiers: Vec<String>,
    /// Release windows; a `deny` entry (blackout) wins over `allow` entries.
    #[serde(default)]
    pub windows: Vec<Window>,
    #[serde(default)]
    pub strategy: Strategy,
    /// A rollout that is not available within this time is rolled back.
    #[serde(default = "default_progress_deadline")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub progress_deadline: String,
    /// How many finished rollouts `status.history` keeps.
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: i32,
    /// Spec changes (and deletion) need the `edit-protected` verb on `stages` besides
    /// `update`, and so do changes to the Gates this stage names. A change the admission
    /// webhook did not vouch for stops the stage until it is applied again through it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protected: bool,
    /// Rules per release type: the first policy that lists a release's type applies to it,
    /// and whatever it does not set is this spec's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub policies: Vec<super::policy::ReleasePolicy>,
    /// What an `emergency` StageCommand may bypass here, and who must approve it. Without
    /// it, the stage takes no emergencies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency: Option<super::emergency::EmergencySpec>,
}

impl StageSpec {
    /// Every gate the stage names, in `spec.gates`, its canary analyses (background and per
    /// step), its check lists and its policies, with the field that names it. Each decides
    /// what the stage does: each must exist, and each is guarded alike on a protected stage.
    pub fn named_gates(&self) -> Vec<(String, String)> {
        let mut named: Vec<(String, String)> = self
            .gates
            .iter()
            .enumerate()
            .map(|(i, g)| (format!("spec.gates[{i}]"), g.clone()))
            .collect();
        let canary = self.strategy.canary.as_ref();
        let steps = canary.into_iter().flat_map(|c| c.steps.iter().enumerate());
        let steps = steps.filter_map(|(i, s)| {
            let field = format!("spec.strategy.canary.steps[{i}].analysis.gates");
            s.analysis.as_ref().map(|a| (field, a))
        });
        let background = canary.and_then(|c| c.analysis.as_ref());
        let background = background.map(|a| ("spec.strategy.canary.analysis.gates".to_string(), a));
        for (field, analysis) in steps.chain(background).chain(self.blue_green_analyses()) {
            named.extend(analysis.gates.iter().map(|g| (field.clone(), g.clone())));
        }
        for list in [
            GateList::PreRollout,
            GateList::PrePromotion,
            GateList::Verify,
        ] {
            let gates = self.gates_in(list).iter().enumerate();
            let field = self.list_field(list);
            named.extend(gates.map(|(i, g)| (format!("{field}[{i}]"), g.clone())));
        }
        named.extend(self.policy_gates());
        named
    }

    /// The blue-green strategy's analyses, with the field of their gates.
    fn blue_green_analyses(&self) -> impl Iterator<Item = (String, &Analysis)> {
        let blue_green = self.strategy.blue_green.as_ref();
        let pre = blue_green.and_then(|b| b.pre_promotion_analysis.as_ref());
        let post = blue_green.and_then(|b| b.post_promotion_analysis.as_ref());
        let pre = pre.map(|a| ("spec.strategy.blueGreen.prePromotionAnalysis.gates", a));
        let post = post.map(|a| ("spec.strategy.blueGreen.postPromotionAnalysis.gates", a));
        pre.into_iter()
            .chain(post)
            .map(|(field, a)| (field.to_string(), a))
    }

    /// Where one list is in this spec: `prePromotion` is under the strategy that runs it.
    pub fn list_field(&self, list: GateList) -> &'static str {
        match (list, &self.strategy.blue_green) {
            (GateList::PrePromotion, Some(_)) => "spec.strategy.blueGreen.prePromotion",
            _ => list.field(),
        }
    }

    /// The gates of one list, in their order.
    pub fn gates_in(&self, list: GateList) -> &[String] {
        match list {
            GateList::Gates => &self.gates,
            GateList::PreRollout => &self.pre_rollout,
            GateList::PrePromotion => match (&self.strategy.canary, &self.strategy.blue_green) {
                (_, Some(b)) => &b.pre_promotion,
                (Some(c), None) => &c.pre_promotion,
                (None, None) => &[],
            },
            GateList::Verify => self.verify.as_ref().map_or(&[][..], |v| &v.gates),
        }
    }
}

fn default_replicas() -> i32 {
    1
}
fn default_progress_deadline() -> String {
    "10m".to_string()
}
fn default_history_limit() -> i32 {
    10
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// Name of a Deployment in the Stage's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    #[serde(default, rename = "type")]
    pub trigger_type: TriggerType,
    /// Five-field cron expression (`minute hour day-of-month month day-of-week`) for `schedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// IANA time zone of the schedule, e.g. `Europe/Paris`. Default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TriggerType {
    /// Promote as soon as a release is eligible.
    #[default]
    Auto,
    /// Promote the newest eligible release at each cron tick.
    Schedule,
    /// Promote only what people approve: the stage needs an approval gate, and the newest
    /// eligible release waits there until enough approvers have approved it.
    Manual,
}

/// A recurring window: opens at each `schedule` tick and stays open for `duration`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    pub kind: WindowKind,
    /// Five-field cron expression for the start of each window.
    #[schemars(length(min = 1))]
    pub schedule: String,
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub duration: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WindowKind {
    Allow,
    Deny,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Strategy {
    #[serde(default, rename = "type")]
    pub strategy_type: StrategyType,
    /// Settings of the `canary` strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStrategy>,
    /// Settings of the `blueGreen` strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<super::blue_green::BlueGreenStrategy>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StrategyType {
    /// Replace the primary's pods with a rolling update.
    #[default]
    Rolling,
    /// Run the release beside the primary and shift traffic to it step by step.
    Canary,
    /// Run the release in full beside the primary, check it, then switch all traffic to it.
    #[serde(rename = "blueGreen")]
    BlueGreen,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<StagePhase>,
    /// When the stage entered its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Time>")]
    pub phase_since: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The release the stage runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    /// The release that is next in line here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_version: Option<String>,
    /// When the candidate became next in line (the schedule trigger counts ticks from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Time>")]
    pub candidate_since: Option<Timestamp>,
    /// The rollout in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<ActiveRollout>,
    /// The StageCommand last acted upon (`name/uid`), so that a pass after a crash between
    /// this status write and the command's own does not act on it twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_command: Option<String>,
    /// Why that StageCommand was refused, when it was, so that a pass marking it after a
    /// crash says what the first pass decided instead of calling it applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_command_refused: Option<String>,
    /// Who changed the spec and what, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<super::change::ChangeRecord>,
    /// The canary has lost its traffic and keeps its pods until then (`scaleDownDelay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Time>")]
    pub canary_drain_until: Option<Timestamp>,
    /// Finished rollouts, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RolloutRecord>,
    /// The digest of the pod template the primary serves, pinned when its rollout started: a
    /// later edit of the target reaches the primary only through a rollout of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 80))]
    pub template: Option<String>,
    /// The pinned templates this status names (serving, rolling out, rolled back to), by
    /// digest. Only the operator writes them; what the target says later changes none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub templates: Vec<PinnedTemplate>,
    /// The target's template differs from the one that serves: what differs, who changed it,
    /// and whether its configuration rollout failed here (then it is not tried again until
    /// the target changes once more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_change: Option<TargetChange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// An emergency asked for, awaiting its approvals, until its rollout starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency: Option<super::emergency::EmergencyRequest>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StagePhase {
    /// Runs its current release; nothing newer is waiting.
    Idle,
    /// A candidate waits for requirements, the trigger, a window or a gate.
    Waiting,
    /// A rollout is in progress.
    Progressing,
    /// The release rolled out and its `verify` gates run; it is not `Succeeded` here until
    /// they pass.
    Verifying,
    /// A failed rollout is being reverted to the previous release.
    RollingBack,
    /// The last rollout failed and was reverted; waits for a newer release.
    Failed,
    /// The stage or its pipeline is misconfigured; see the conditions.
    Invalid,
    /// A write it needs was refused by the apiserver (a quota, a policy, RBAC); it retries
    /// with backoff, and the conditions say what was refused.
    Blocked,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActiveRollout {
    pub release: String,
    pub version: String,
    #[schemars(with = "Time")]
    pub started_at: Timestamp,
    pub direction: RolloutDirection,
    /// The release that ran before, the rollback target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
    /// Images of the previous release, kept so a rollback works even if that Release is deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_artifacts: Vec<Artifact>,
    /// Why a rollback runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Progress of a canary rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryProgress>,
    /// The primary's replicas when the rollout started: a rollback uses them even if the spec
    /// stops compiling meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// How the canary's traffic was routed when the rollout started, for the same reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<super::canary::TrafficRouting>,
    /// The digest of the pod template this rollout runs, fixed when it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 80))]
    pub template: Option<String>,
    /// The template that served before, the rollback target's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 80))]
    pub previous_template: Option<String>,
    /// A configuration change: the release already running here, on the target's new template.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub configuration: bool,
    /// The check lists (preRollout, prePromotion, verify) of this rollout: which runs, since
    /// when, and which have passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Checks>,
    /// The emergency this rollout answers, when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency: Option<super::emergency::EmergencyRequest>,
    /// The release policy this rollout runs under, by name (none: the stage's own spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub policy: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Checks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<GateList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Time>")]
    pub since: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub passed: Vec<GateList>,
    /// A verification past its timeout with `onTimeout: hold`: it waits for a person.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// The gates of the running list, fixed when it started: an edit of the Stage meanwhile
    /// (a gate removed, `verify` dropped) does not change what this run must pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(min = 1, max = 253)))]
    pub gates: Vec<String>,
}

impl ActiveRollout {
    /// Whether this check list runs now.
    pub fn running(&self, list: GateList) -> bool {
        self.checks
            .as_ref()
            .is_some_and(|c| c.running == Some(list))
    }

    /// Whether this check list has passed in this rollout.
    pub fn passed(&self, list: GateList) -> bool {
        self.checks
            .as_ref()
            .is_some_and(|c| c.passed.contains(&list))
    }

    /// What rolls out, in words: the version, or a configuration change of it.
    pub fn what(&self) -> String {
        match self.configuration {
            true => format!("the configuration change of {}", self.version),
            false => self.version.clone(),
        }
    }
}

/// A pod template as a rollout pinned it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PinnedTemplate {
    /// `sha256:` and the hex digest of the template's JSON.
    #[schemars(length(max = 80))]
    pub digest: String,
    /// The target's `spec.template` (and `minReadySeconds`) when it was pinned.
    #[schemars(schema_with = "super::any_object")]
    pub template: serde_json::Value,
}

/// An edit of the target that has not reached the primary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetChange {
    #[schemars(length(max = 80))]
    pub digest: String,
    /// The template fields that differ from the serving template's, at most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(max = 256)))]
    pub fields: Vec<String>,
    /// The field manager that last wrote the target's template (`kubectl-edit`, `argocd-controller`).
    #[schemars(length(max = 253))]
    pub changed_by: String,
    /// Its configuration rollout failed and was rolled back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failed: bool,
    /// When it was first seen: approvals given before it do not let it through, whether it
    /// rolls out alone or with a newer release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Time>")]
    pub since: Option<jiff::Timestamp>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RolloutDirection {
    Forward,
    Rollback,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRecord {
    pub release: String,
    pub version: String,
    pub outcome: RolloutOutcome,
    #[schemars(with = "Time")]
    pub started_at: Timestamp,
    #[schemars(with = "Time")]
    pub finished_at: Timestamp,
    pub duration_seconds: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The template digest the rollout ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 80))]
    pub template: Option<String>,
    /// A configuration change of the release already running.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub configuration: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RolloutOutcome {
    Succeeded,
    RolledBack,
}

impl StageSpec {
    /// The policy that applies to a release of this type, with its index.
    pub fn policy_for(&self, release_type: ReleaseType) -> Option<(usize, &ReleasePolicy)> {
        self.policies
            .iter()
            .enumerate()
            .find(|(_, p)| p.types.contains(&release_type))
    }

    /// This spec as a release under `policy` sees it: what the policy sets replaces the
    /// stage's, and the result has no policies of its own.
    pub fn under_policy(&self, policy: &ReleasePolicy) -> StageSpec {
        let mut spec = self.clone();
        spec.policies.clear();
        if let Some(gates) = &policy.gates {
            spec.gates = gates.clone();
        }
        for gate in &policy.add_gates {
            if !spec.gates.contains(gate) {
                spec.gates.push(gate.clone());
            }
        }
        spec.requires.retain(|r| !policy.skip_requires.contains(r));
        let canary = spec.strategy.canary.as_mut();
        if let (Some(canary), Some(set)) = (canary, &policy.canary) {
            if let Some(steps) = &set.steps {
                canary.steps = steps.clone();
            }
            if let Some(bake) = &set.bake {
                canary.bake = Some(bake.clone());
            }
        }
        let rollback = policy.rollback.clone().unwrap_or_default();
        if let (Some(canary), Some(on)) =
            (spec.strategy.canary.as_mut(), rollback.on_analysis_failure)
        {
            canary.on_failure = on;
        }
        if let (Some(verify), Some(on)) = (spec.verify.as_mut(), rollback.on_verify_timeout) {
            verify.on_timeout = on;
        }
        // An emergency of these releases skips what it names among their own gates and stages.
        if let Some(emergency) = spec.emergency.as_mut() {
            let (gates, requires) = (&spec.gates, &spec.requires);
            emergency.bypass.gates.retain(|g| gates.contains(g));
            emergency.bypass.requires.retain(|r| requires.contains(r));
        }
        spec
    }

    /// The gates a release of this type must pass before it rolls out here.
    pub fn gates_for(&self, release_type: ReleaseType) -> Vec<String> {
        match self.policy_for(release_type) {
            Some((_, policy)) => self.under_policy(policy).gates,
            None => self.gates.clone(),
        }
    }

    /// The gates the policies name, with the field that names each.
    pub(crate) fn policy_gates(&self) -> Vec<(String, String)> {
        let mut named = Vec::new();
        for (i, p) in self.policies.iter().enumerate() {
            let gates = p.gates.iter().flatten().enumerate();
            named.extend(gates.map(|(j, g)| (format!("spec.policies[{i}].gates[{j}]"), g.clone())));
            let added = p.add_gates.iter().enumerate();
            named.extend(
                added.map(|(j, g)| (format!("spec.policies[{i}].addGates[{j}]"), g.clone())),
            );
            let steps = p
                .canary
                .iter()
                .flat_map(|c| c.steps.iter().flatten().enumerate());
            for (j, step) in steps {
                let field = format!("spec.policies[{i}].canary.steps[{j}].analysis.gates");
                let gates = step.analysis.iter().flat_map(|a| &a.gates);
                named.extend(gates.map(|g| (field.clone(), g.clone())));
            }
        }
        named
    }
}
