//! Reviews of emergency rollouts, read from a release's audit trail: a `BreakGlass` entry
//! opens one, due at its `reviewDue`; a `ReviewClosed` entry naming it closes it. Nothing
//! else holds them, so they survive anything the trail survives.

use jiff::Timestamp;
use serde::Serialize;

use crate::api::release::{AuditAction, AuditEntry, Release};

/// One review, open or closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Review {
    /// The `BreakGlass` entry's id.
    pub id: String,
    pub release: String,
    pub stage: String,
    /// Who asked for the emergency.
    pub requester: String,
    /// What the emergency was and what it bypassed, in the controller's words.
    pub emergency: String,
    pub opened: Timestamp,
    pub due: Option<Timestamp>,
    /// Who closed it and the post-mortem it links, once closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_mortem: Option<String>,
}

impl Review {
    pub fn open(&self) -> bool {
        self.closed_by.is_none()
    }

    /// Open past its due date.
    pub fn overdue(&self, now: Timestamp) -> bool {
        self.open() && self.due.is_some_and(|d| d <= now)
    }
}

/// Every review of a release, oldest first.
pub fn reviews(release: &Release) -> Vec<Review> {
    let trail: &[AuditEntry] = release.status.as_ref().map_or(&[], |s| &s.audit);
    let name = release.metadata.name.clone().unwrap_or_default();
    let mut found: Vec<Review> = trail
        .iter()
        .filter(|e| e.action == AuditAction::BreakGlass)
        .map(|e| Review {
            id: e.id.clone(),
            release: name.clone(),
            stage: e.stage.clone(),
            requester: e.actor.clone(),
            emergency: e.message.clone(),
            opened: e.time,
            due: e.review_due,
            closed_by: None,
            post_mortem: None,
        })
        .collect();
    for close in trail
        .iter()
        .filter(|e| e.action == AuditAction::ReviewClosed)
    {
        let review = found
            .iter_mut()
            .find(|r| Some(&r.id) == close.review.as_ref());
        if let Some(review) = review.filter(|r| r.open()) {
            review.closed_by = Some(close.actor.clone());
            review.post_mortem = Some(close.message.clone());
        }
    }
    found.sort_by_key(|r| r.opened);
    found
}

/// The open review of `release` at `stage`, if it has one: what a `closeReview` closes.
pub fn open_at<'a>(reviews: &'a [Review], stage: &str) -> Option<&'a Review> {
    reviews.iter().find(|r| r.open() && r.stage == stage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: AuditAction, id: &str, review: Option<&str>) -> serde_json::Value {
        serde_json::json!({
            "id": id, "time": "2026-12-07T10:00:00Z", "stage": "prod", "action": action,
            "actor": "alice", "message": "m", "reviewDue": "2026-12-07T10:00:30Z", "review": review,
        })
    }

    #[test]
    fn a_break_glass_opens_a_review_that_its_own_close_closes_and_no_other() {
        let release: Release = serde_json::from_value(serde_json::json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Release", "metadata": {"name": "r1"},
            "spec": {"pipeline": "shop", "version": "1", "artifacts": [{"name": "web", "image": "w@sha256:00"}]},
            "status": {"audit": [
                entry(AuditAction::BreakGlass, "prod/r1/BreakGlass/1", None),
                entry(AuditAction::ReviewClosed, "x", Some("prod/r1/BreakGlass/9")),
            ]},
        }))
        .unwrap();
        let found = reviews(&release);
        assert_eq!(found.len(), 1);
        assert!(found[0].open(), "a close of another review closes nothing");
        let (before, after) = (
            "2026-12-07T10:00:29Z".parse().unwrap(),
            "2026-12-07T10:00:30Z".parse().unwrap(),
        );
        assert!(!found[0].overdue(before) && found[0].overdue(after));
        let mut closed = release.clone();
        let audit = &mut closed.status.as_mut().unwrap().audit;
        audit[1].review = Some("prod/r1/BreakGlass/1".into());
        assert_eq!(reviews(&closed)[0].closed_by.as_deref(), Some("alice"));
        assert!(open_at(&reviews(&closed), "prod").is_none());
    }
}
