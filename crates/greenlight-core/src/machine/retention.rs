//! Which handled StageCommands and Approvals have been kept long enough. Both only grow
//! otherwise, and every object held costs memory and watch traffic. What they decided is on
//! the Release's audit trail, which outlives them; what they were is in the Events and logs
//! of the retention period.

use jiff::{SignedDuration, Timestamp};

use crate::api::release::ReleasePhase;
use crate::api::{Approval, StageCommand};

/// A command handled (applied or refused) longer ago than `retention`.
pub fn command_expired(command: &StageCommand, now: Timestamp, retention: SignedDuration) -> bool {
    let handled = command.status.as_ref().and_then(|s| s.handled_at);
    handled.is_some_and(|at| now.duration_since(at) > retention)
}

/// An Approval older than `retention` whose Release is gone or done moving (succeeded,
/// failed, superseded or invalid): it can count for nothing any more.
pub fn approval_expired(
    approval: &Approval,
    release: Option<ReleasePhase>,
    now: Timestamp,
    retention: SignedDuration,
) -> bool {
    let old = approval
        .metadata
        .creation_timestamp
        .as_ref()
        .is_some_and(|t| now.duration_since(t.0) > retention);
    let done = match release {
        None => true,
        Some(phase) => !matches!(phase, ReleasePhase::Pending | ReleasePhase::Progressing),
    };
    old && done
}

/// How many finished Jobs of Job gates a stage keeps, newest first, besides those of the
/// rollout under way: enough to read the last failures, never a pile.
pub const JOBS_KEPT_PER_STAGE: usize = 5;

/// What retention reads of a Job a Job gate started.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFacts {
    pub name: String,
    /// When it finished (completed or failed); `None` while it runs.
    pub finished_at: Option<Timestamp>,
    /// It checks the rollout under way: kept whatever its age.
    pub current: bool,
}

/// The finished Jobs of one stage past the newest `keep`: the ones to delete. A running Job
/// and one of the rollout under way are never among them.
pub fn jobs_past_keep(jobs: &[JobFacts], keep: usize) -> Vec<String> {
    let mut finished: Vec<&JobFacts> = jobs
        .iter()
        .filter(|j| j.finished_at.is_some() && !j.current)
        .collect();
    finished.sort_by(|a, b| b.finished_at.cmp(&a.finished_at).then(a.name.cmp(&b.name)));
    finished
        .into_iter()
        .skip(keep)
        .map(|j| j.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, finished: Option<i64>, current: bool) -> JobFacts {
        JobFacts {
            name: name.into(),
            finished_at: finished.map(|s| Timestamp::from_second(s).expect("time")),
            current,
        }
    }

    #[test]
    fn the_oldest_finished_jobs_past_the_kept_number_go_and_running_or_current_ones_stay() {
        let jobs = [
            job("a", Some(10), false),
            job("b", Some(20), false),
            job("c", Some(30), false),
            job("running", None, false),
            job("current", Some(1), true),
        ];
        assert_eq!(jobs_past_keep(&jobs, 2), ["a"]);
        assert_eq!(jobs_past_keep(&jobs, 0), ["c", "b", "a"]);
        assert!(jobs_past_keep(&jobs, 5).is_empty());
    }

    const WEEK: SignedDuration = SignedDuration::from_hours(7 * 24);

    fn command(handled: Option<&str>) -> StageCommand {
        let status = handled.map(|at| serde_json::json!({"phase": "Applied", "handledAt": at}));
        serde_json::from_value(serde_json::json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "StageCommand",
            "metadata": {"name": "c", "namespace": "ns"},
            "spec": {"stage": "prod", "action": "promote"},
            "status": status,
        }))
        .unwrap()
    }

    fn approval(created: &str) -> Approval {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Approval",
            "metadata": {"name": "a", "namespace": "ns", "creationTimestamp": created},
            "spec": {"release": "r", "stage": "prod", "decision": "approve"},
        }))
        .unwrap()
    }

    #[test]
    fn a_command_goes_a_retention_after_it_was_handled_and_a_waiting_one_never() {
        let now: Timestamp = "2026-12-20T00:00:00Z".parse().unwrap();
        assert!(command_expired(
            &command(Some("2026-12-01T00:00:00Z")),
            now,
            WEEK
        ));
        assert!(!command_expired(
            &command(Some("2026-12-15T00:00:00Z")),
            now,
            WEEK
        ));
        assert!(
            !command_expired(&command(None), now, WEEK),
            "not handled yet"
        );
    }

    #[test]
    fn an_approval_goes_once_old_and_its_release_is_done_or_gone() {
        let now: Timestamp = "2026-12-20T00:00:00Z".parse().unwrap();
        let old = approval("2026-12-01T00:00:00Z");
        assert!(approval_expired(&old, None, now, WEEK));
        assert!(approval_expired(
            &old,
            Some(ReleasePhase::Succeeded),
            now,
            WEEK
        ));
        assert!(approval_expired(
            &old,
            Some(ReleasePhase::Superseded),
            now,
            WEEK
        ));
        assert!(!approval_expired(
            &old,
            Some(ReleasePhase::Progressing),
            now,
            WEEK
        ));
        let young = approval("2026-12-19T00:00:00Z");
        assert!(!approval_expired(&young, None, now, WEEK));
    }
}
