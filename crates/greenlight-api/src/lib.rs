//! The `greenlight.dev/v1alpha1` API: Release, Stage, Gate, Approval and StageCommand, their status, and the
//! kstatus-style conditions they share. Everything here is data; the rules are in
//! `greenlight_core::validation`.

pub mod approval;
pub mod blue_green;
pub mod canary;
pub mod change;
pub mod command;
pub mod compare;
pub mod conditions;
pub mod crdgen;
pub mod emergency;
pub mod gate;
pub mod notifier;
pub mod patterns;
pub mod policy;
pub mod release;
pub mod server;
pub mod slo;
pub mod stage;
pub mod ticket;
pub mod verify;

pub use approval::{Approval, ApprovalSpec, ApprovalStatus, Decision, Identity, ReleaseRef};
pub use command::{
    CommandAction, CommandPhase, StageCommand, StageCommandSpec, StageCommandStatus,
};
pub use conditions::{Condition, ConditionStatus};
pub use gate::{Gate, GateList, GateSpec, GateStatus, GateType};
pub use notifier::{NoticeKind, Notifier, NotifierSpec, NotifierStatus, NotifierType};
pub use release::{Release, ReleaseSpec, ReleaseStatus};
pub use stage::{Stage, StageSpec, StageStatus};

/// Label on a Job a `job` gate started, and on its pods: the Job's name.
pub const GATE_JOB_LABEL: &str = "greenlight.dev/gate-job";
/// Annotations on such a Job: the gate, the check list and the attempt it ran for.
pub const GATE_ANNOTATION: &str = "greenlight.dev/gate";
pub const GATE_LIST_ANNOTATION: &str = "greenlight.dev/gate-list";
pub const ATTEMPT_ANNOTATION: &str = "greenlight.dev/attempt";
/// The operator's seal over such a Job's name and what it runs: a Job of that name someone
/// else created does not carry a seal that checks out, and is not judged.
pub const JOB_SEAL_ANNOTATION: &str = "greenlight.dev/seal";

/// API group of every Greenlight kind.
pub const GROUP: &str = "greenlight.dev";
/// Field manager used for every write the operator makes.
pub const FIELD_MANAGER: &str = "greenlight";
/// Annotation on workloads and pods naming the release they run.
pub const RELEASE_ANNOTATION: &str = "greenlight.dev/release";
/// Annotation on the canary workload with the weight its replica count was sized for.
pub const WEIGHT_ANNOTATION: &str = "greenlight.dev/weight";
/// Label that ties a managed workload (and its pods) to its stage.
pub const STAGE_LABEL: &str = "greenlight.dev/stage";
/// Label that selects the pods of one managed workload.
pub const WORKLOAD_LABEL: &str = "greenlight.dev/workload";
/// Label on a canary's pods naming the release and template they run (a digest of both):
/// the canary's Service selects it, so pods of a release still draining get no traffic.
pub const REVISION_LABEL: &str = "greenlight.dev/revision";
/// The actor recorded for the operator's own decisions.
pub const OPERATOR_ACTOR: &str = "greenlight";
/// The operator's finalizer on Stages: a deletion waits until traffic is safe.
pub const STAGE_FINALIZER: &str = "greenlight.dev/restore-traffic";

/// The label on protected Stages and the Gates they name. The webhook that guards them
/// selects it and fails closed, so an outage of the webhook blocks changes to protected
/// objects only; the webhook and the controller keep it true.
pub const PROTECTED_LABEL: &str = "greenlight.dev/protected";

/// The label on the operator's leader Lease, which the webhook that keeps others off it
/// selects.
pub const LEASE_LABEL: &str = "greenlight.dev/lease";

/// The Deployment (and Service) that serves a stage's current release.
pub fn primary_name(target: &str) -> String {
    format!("{target}-primary")
}

/// The Deployment (and Service) that serves a canary.
pub fn canary_name(target: &str) -> String {
    format!("{target}-canary")
}
/// On a primary whose Stage was deleted: it keeps serving, and says so and since when.
pub const ORPHANED_ANNOTATION: &str = "greenlight.dev/orphaned";

/// The schema of a field that holds any JSON object, kept whole by the apiserver (a pinned
/// pod template: its full schema would make the CRD ten times its size).
pub(crate) fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// On a managed workload's pod template: the digest of the pinned template it was built from.
pub const TEMPLATE_ANNOTATION: &str = "greenlight.dev/template";
