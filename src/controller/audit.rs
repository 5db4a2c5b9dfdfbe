//! The audit trail in each Release's status: entries are appended, never edited or removed.
//! Each append is guarded by the Release's resourceVersion, so two writers can never drop each
//! other's entries.

use kube::api::{Patch, PatchParams};
use serde_json::json;
use tracing::warn;

use super::Context;
use super::error::ReconcileError;
use crate::api::Release;
use crate::api::release::AuditEntry;

const ATTEMPTS: usize = 5;

/// Appends `entries` that the trail does not hold yet; returns those it appended.
pub async fn append(
    ctx: &Context,
    namespace: &str,
    release: &str,
    entries: Vec<AuditEntry>,
) -> Result<Vec<AuditEntry>, ReconcileError> {
    if entries.is_empty() {
        return Ok(vec![]);
    }
    let api = ctx.api::<Release>(namespace);
    for _ in 0..ATTEMPTS {
        let Some(current) = api.get_opt(release).await? else {
            return Ok(vec![]);
        };
        let trail = current.status.map(|s| s.audit).unwrap_or_default();
        let fresh: Vec<AuditEntry> = entries
            .iter()
            .filter(|e| !trail.iter().any(|t| same_record(t, e)))
            .cloned()
            .collect();
        if fresh.is_empty() {
            return Ok(vec![]);
        }
        let mut extended = trail;
        extended.extend(fresh.iter().cloned());
        let patch = json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "status": {"audit": extended},
        });
        ctx.metrics.write("release_audit");
        match api
            .patch_status(release, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => return Ok(fresh),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        }
    }
    warn!(
        release,
        "audit trail: gave up after repeated write conflicts"
    );
    Err(ReconcileError::Conflict("Release status.audit"))
}

/// Whether two entries record the same fact: one Approval is recorded once, and one action at
/// one stage at one instant once.
fn same_record(a: &AuditEntry, b: &AuditEntry) -> bool {
    match (&a.approval, &b.approval) {
        (Some(x), Some(y)) => x == y && a.action == b.action,
        (None, None) => a.time == b.time && a.stage == b.stage && a.action == b.action,
        _ => false,
    }
}
