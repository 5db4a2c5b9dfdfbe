//! The audit trail in each Release's status: entries are appended, never edited or removed.
//! Each append is guarded by the Release's resourceVersion, so two writers can never drop each
//! other's entries, and each entry has an identity, so a replay never records a fact twice.

use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::{WriteError, Writer};
use crate::api::Release;
use crate::api::release::{AuditAction, AuditEntry};

const ATTEMPTS: usize = 5;
/// The most entries one Release's trail holds. A trail this long means something loops; the
/// append is then refused (and the refusal shown on the Stage), never dropped silently.
pub const AUDIT_LIMIT: usize = 500;
/// The last entries of a trail are kept for safety: a rollback, an abort and their ends may
/// use them, nothing else may, so no one who writes to a trail can fill it before a retreat.
pub const SAFETY_RESERVE: usize = 100;

/// Entries that record a retreat: the reserve is theirs.
fn is_safety(entry: &AuditEntry) -> bool {
    matches!(
        entry.action,
        AuditAction::RolledBack | AuditAction::AbortRequested | AuditAction::RollbackCompleted
    )
}

/// How many entries a trail may hold once `fresh` is appended.
fn room_for(fresh: &[AuditEntry]) -> usize {
    match fresh.iter().all(is_safety) {
        true => AUDIT_LIMIT,
        false => AUDIT_LIMIT - SAFETY_RESERVE,
    }
}

pub(super) async fn append(
    writer: &Writer,
    namespace: &str,
    release: &str,
    entries: Vec<AuditEntry>,
) -> Result<Vec<AuditEntry>, WriteError> {
    if entries.is_empty() {
        return Ok(vec![]);
    }
    let api: Api<Release> = Api::namespaced(writer.client.clone(), namespace);
    for _ in 0..ATTEMPTS {
        writer.may_write()?;
        let read = api.get_opt(release).await;
        let what = || format!("audit trail of Release '{release}'");
        let Some(current) = read.map_err(|e| WriteError::from_kube("release_audit", what(), e))?
        else {
            return Ok(vec![]);
        };
        let trail = current.status.map(|s| s.audit).unwrap_or_default();
        let fresh = unrecorded(&trail, &entries);
        if fresh.is_empty() {
            return Ok(vec![]);
        }
        let room = room_for(&fresh);
        if trail.len() + fresh.len() > room {
            writer.metrics.refused("release_audit", "AuditTrailFull");
            return Err(WriteError::Refused {
                kind: "release_audit",
                what: what(),
                reason: "AuditTrailFull",
                message: format!(
                    "the trail holds {} entries, the most it may hold for these is {room}; the rollout stops here rather than drop a record (a retreat goes on all the same)",
                    trail.len()
                ),
            });
        }
        let mut extended = trail;
        extended.extend(fresh.iter().cloned());
        let patch = json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "status": {"audit": extended},
        });
        // Checked again right before the write: the read above may have taken a while.
        writer.may_write()?;
        let result = api
            .patch_status(release, &PatchParams::default(), &Patch::Merge(patch))
            .await;
        match result {
            Err(kube::Error::Api(e)) if e.code == 409 => writer.metrics.write("release_audit"),
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(vec![]),
            result => {
                writer.counted("release_audit", what, result)?;
                return Ok(fresh);
            }
        }
    }
    Err(WriteError::Refused {
        kind: "release_audit",
        what: format!("audit trail of Release '{release}'"),
        reason: "Conflict",
        message: "kept changing under concurrent writers".into(),
    })
}

/// The entries the trail does not hold yet.
fn unrecorded(trail: &[AuditEntry], entries: &[AuditEntry]) -> Vec<AuditEntry> {
    let mut fresh: Vec<AuditEntry> = Vec::new();
    for e in entries {
        let known = trail.iter().chain(fresh.iter()).any(|t| same_record(t, e));
        if !known {
            fresh.push(e.clone());
        }
    }
    fresh
}

/// Whether two entries record the same fact: by identity when both have one; one Approval's
/// decision once; otherwise one action at one stage at one instant once.
fn same_record(a: &AuditEntry, b: &AuditEntry) -> bool {
    if !a.id.is_empty() && !b.id.is_empty() {
        return a.id == b.id;
    }
    match (&a.approval, &b.approval) {
        (Some(x), Some(y)) => x == y && a.action == b.action,
        (None, None) => a.time == b.time && a.stage == b.stage && a.action == b.action,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, time: &str) -> AuditEntry {
        AuditEntry {
            id: id.into(),
            time: time.parse().unwrap(),
            stage: "prod".into(),
            action: AuditAction::RolloutStarted,
            actor: "greenlight".into(),
            message: "rolling out 1.0.0".into(),
            approval: None,
            reason: None,
            gate: None,
            template: None,
            previous_template: None,
            configuration: None,
            policy: None,
            change_ticket: None,
            review_due: None,
            review: None,
        }
    }

    #[test]
    fn a_replayed_entry_with_a_later_time_is_recognised_by_its_identity() {
        let trail = vec![entry("prod/r1/RolloutStarted/1", "2026-11-27T10:00:00Z")];
        let replay = entry("prod/r1/RolloutStarted/1", "2026-11-27T10:00:07Z");
        assert!(unrecorded(&trail, &[replay]).is_empty());
        let retry = entry("prod/r1/RolloutStarted/2", "2026-11-27T10:00:07Z");
        assert_eq!(
            unrecorded(&trail, std::slice::from_ref(&retry)),
            vec![retry]
        );
    }

    #[test]
    fn the_last_hundred_places_of_a_trail_are_kept_for_retreats() {
        let mut rollback = entry("prod/r1/RolledBack/1", "2026-11-27T10:00:00Z");
        rollback.action = AuditAction::RolledBack;
        let approval = entry("approval/a1/Approved", "2026-11-27T10:00:00Z");
        assert_eq!(room_for(std::slice::from_ref(&rollback)), AUDIT_LIMIT);
        assert_eq!(
            room_for(std::slice::from_ref(&approval)),
            AUDIT_LIMIT - SAFETY_RESERVE
        );
        assert_eq!(
            room_for(&[rollback, approval]),
            AUDIT_LIMIT - SAFETY_RESERVE,
            "a batch with anything else in it gets no reserve"
        );
    }

    #[test]
    fn one_batch_never_records_the_same_fact_twice() {
        let twice = [
            entry("prod/r1/RolloutStarted/1", "2026-11-27T10:00:00Z"),
            entry("prod/r1/RolloutStarted/1", "2026-11-27T10:00:01Z"),
        ];
        assert_eq!(unrecorded(&[], &twice).len(), 1);
    }
}
