//! The `greenlight.dev/v1alpha1` API: Release, Stage, Gate and Approval, their status, and the
//! kstatus-style conditions they share. Everything here is data; the rules are in
//! `crate::validation`.

pub mod approval;
pub mod canary;
pub mod conditions;
pub mod gate;
pub mod patterns;
pub mod release;
pub mod stage;

pub use approval::{Approval, ApprovalSpec, ApprovalStatus, Decision, Identity};
pub use conditions::{Condition, ConditionStatus};
pub use gate::{Gate, GateSpec, GateStatus, GateType};
pub use release::{Release, ReleaseSpec, ReleaseStatus};
pub use stage::{Stage, StageSpec, StageStatus};

/// API group of every Greenlight kind.
pub const GROUP: &str = "greenlight.dev";
/// Field manager used for every write the operator makes.
pub const FIELD_MANAGER: &str = "greenlight";
/// Annotation on workloads and pods naming the release they run.
pub const RELEASE_ANNOTATION: &str = "greenlight.dev/release";
/// Annotation on the canary workload with the weight its replica count was sized for.
pub const WEIGHT_ANNOTATION: &str = "greenlight.dev/weight";
/// Annotations on a Stage through which a person steers a rollout.
pub const PROMOTE_ANNOTATION: &str = "greenlight.dev/promote";
pub const ABORT_ANNOTATION: &str = "greenlight.dev/abort";
pub const RETRY_ANNOTATION: &str = "greenlight.dev/retry";
/// Label that ties a managed workload (and its pods) to its stage.
pub const STAGE_LABEL: &str = "greenlight.dev/stage";
/// Label that selects the pods of one managed workload.
pub const WORKLOAD_LABEL: &str = "greenlight.dev/workload";
/// Annotation the admission webhook stamps on a Stage with the verified user behind a
/// promote, abort or retry annotation.
pub const REQUESTED_BY_ANNOTATION: &str = "greenlight.dev/requested-by";
/// The actor recorded for the operator's own decisions.
pub const OPERATOR_ACTOR: &str = "greenlight";
