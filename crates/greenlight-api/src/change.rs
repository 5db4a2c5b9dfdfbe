//! Who changed a Stage's or Gate's spec, and what: the admission webhook stamps each change
//! into the object's `greenlight.dev/changed-by` annotation, signed over the spec it let in,
//! and the controllers copy it into the object's status history.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::approval::Identity;

/// Annotation the admission webhook writes on each Stage or Gate spec change.
pub const CHANGED_BY_ANNOTATION: &str = "greenlight.dev/changed-by";
/// How many spec changes an object's status keeps.
pub const CHANGES_KEPT: usize = 20;

/// The stamp of one spec change: who, which top-level spec fields, a digest of the spec as
/// admitted, and which object and generation it makes. The signature covers them all.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SpecChange {
    pub by: Identity,
    pub fields: Vec<String>,
    pub digest: String,
    /// The object's uid; empty for a creation, when it has none yet.
    #[serde(default)]
    pub uid: String,
    /// The generation the change makes: restoring an older spec with its old stamp does not
    /// verify.
    pub generation: i64,
}

/// One spec change as recorded in status, newest first.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeRecord {
    pub generation: i64,
    /// The verified user, or `unverified (...)` when no valid stamp covers this spec.
    pub by: String,
    pub verified: bool,
    /// Top-level spec fields that changed (all of them for a creation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// When the controller saw the change.
    #[schemars(with = "Time")]
    pub time: Timestamp,
}
