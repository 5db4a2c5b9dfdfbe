//! kstatus-style conditions (`Ready`, `Progressing`, `Reconciling`, `Stalled`) shared by every kind, and the
//! rule that a condition's `lastTransitionTime` moves only when its status does.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const STALLED: &str = "Stalled";
/// kstatus's name for "not yet where the spec and the releases say": Flux waits on it.
pub const RECONCILING: &str = "Reconciling";
/// Warns that the Git-owned target Deployment runs pods of its own.
pub const TARGET_RUNS_PODS: &str = "TargetRunsPods";
/// Says the managed workloads roll differently from what the target asks, and why.
pub const STRATEGY_OVERRIDDEN: &str = "StrategyOverridden";
/// The target's template was edited; the edit waits for a rollout of its own.
pub const TARGET_CHANGED: &str = "TargetChanged";

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One observation of an aspect of the object, in the shape of `metav1.Condition`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    /// A CamelCase word that says why, usable in alerts.
    pub reason: String,
    pub message: String,
    #[schemars(with = "Time")]
    pub last_transition_time: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    pub fn new(type_: &str, status: bool, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_: type_.to_string(),
            status: if status {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            },
            reason: reason.to_string(),
            message: message.into(),
            last_transition_time: Timestamp::UNIX_EPOCH,
            observed_generation: None,
        }
    }

    pub fn is_true(&self) -> bool {
        self.status == ConditionStatus::True
    }
}

/// The kstatus conditions for an object in one of three states: `Reconciling` (what kstatus
/// reads) says the same as `Progressing` (what people read).
pub fn kstatus(state: Health, reason: &str, message: &str) -> Vec<Condition> {
    let (ready, progressing, stalled) = match state {
        Health::Ready => (true, false, false),
        Health::Progressing => (false, true, false),
        Health::Stalled => (false, false, true),
    };
    vec![
        Condition::new(READY, ready, reason, message),
        Condition::new(PROGRESSING, progressing, reason, message),
        Condition::new(RECONCILING, progressing, reason, message),
        Condition::new(STALLED, stalled, reason, message),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Ready,
    Progressing,
    Stalled,
}

/// Merges freshly computed conditions with the previous ones: a condition whose status did not
/// change keeps its `lastTransitionTime`, so status writes stay no-ops when nothing changed.
pub fn merge(
    previous: &[Condition],
    mut next: Vec<Condition>,
    now: Timestamp,
    generation: Option<i64>,
) -> Vec<Condition> {
    for cond in &mut next {
        cond.observed_generation = generation;
        cond.last_transition_time = previous
            .iter()
            .find(|p| p.type_ == cond.type_ && p.status == cond.status)
            .map(|p| p.last_transition_time)
            .unwrap_or(now);
    }
    next
}

pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_condition_keeps_its_transition_time() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let first = merge(&[], kstatus(Health::Ready, "Idle", "ok"), t0, Some(1));
        let second = merge(&first, kstatus(Health::Ready, "Idle", "ok"), t1, Some(1));
        assert_eq!(first, second);
        let third = merge(
            &second,
            kstatus(Health::Progressing, "RollingOut", "x"),
            t1,
            Some(1),
        );
        assert_eq!(find(&third, READY).unwrap().last_transition_time, t1);
    }
}
