//! A stage's emergency path compiled: the plan an approved emergency rolls out under (what
//! `spec.emergency.bypass` allows removed, the emergency's approvals added first), and each
//! control it skips, so every one is recorded.

use std::time::Duration;

use super::{CompiledTrigger, FieldError, StagePlan};
use crate::api::emergency::{EmergencySpec, approval_gate};
use crate::api::stage::StageSpec;
use crate::schedule::parse_duration;

/// The plan for an approved emergency, and what it skips.
#[derive(Debug, Clone)]
pub struct EmergencyPlan {
    pub plan: StagePlan,
    /// Each control skipped, in words: `windows`, `gate soaked-in-test`, `stage test`.
    pub bypassed: Vec<String>,
    pub review_within: ReviewWithin,
}

/// When an emergency's review is due after its rollout starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewWithin {
    WorkingDays(u32),
    Exactly(Duration),
}

impl ReviewWithin {
    /// The due date of a review opened at `from`.
    pub fn due(self, from: jiff::Timestamp) -> jiff::Timestamp {
        match self {
            Self::Exactly(d) => crate::schedule::later(from, d),
            Self::WorkingDays(n) => {
                let mut at = from.to_zoned(jiff::tz::TimeZone::UTC);
                let mut left = n;
                while left > 0 {
                    at = at.tomorrow().unwrap_or(at);
                    let weekday = at.weekday().to_monday_one_offset();
                    if weekday <= 5 {
                        left -= 1;
                    }
                }
                at.timestamp()
            }
        }
    }
}

pub(super) fn compile_emergency(
    name: &str,
    spec: &StageSpec,
    base: &StagePlan,
    errors: &mut Vec<FieldError>,
) -> Option<Box<EmergencyPlan>> {
    let emergency = spec.emergency.as_ref()?;
    let before = errors.len();
    check(emergency, spec, errors);
    let review_within = match emergency.review_within.as_deref().map(parse_duration) {
        None => ReviewWithin::WorkingDays(5),
        Some(Ok(d)) => ReviewWithin::Exactly(d),
        Some(Err(e)) => {
            errors.push(FieldError::new(
                "spec.emergency.reviewWithin",
                e.to_string(),
            ));
            ReviewWithin::WorkingDays(5)
        }
    };
    if errors.len() > before {
        return None;
    }
    let bypass = &emergency.bypass;
    let mut plan = base.clone();
    plan.policies.clear();
    plan.emergency = None;
    let mut bypassed = Vec::new();
    if bypass.windows
        && (!plan.windows.is_empty() || matches!(plan.trigger, CompiledTrigger::Schedule { .. }))
    {
        bypassed.push("windows".to_string());
        plan.windows.clear();
        plan.trigger = CompiledTrigger::Auto;
    }
    plan.requires.retain(|r| !bypass.requires.contains(r));
    bypassed.extend(bypass.requires.iter().map(|r| format!("stage {r}")));
    plan.gates.retain(|g| !bypass.gates.contains(g));
    bypassed.extend(bypass.gates.iter().map(|g| format!("gate {g}")));
    plan.gates.insert(0, approval_gate(name));
    Some(Box::new(EmergencyPlan {
        plan,
        bypassed,
        review_within,
    }))
}

/// An emergency names who approves it, and skips only what the stage has.
fn check(emergency: &EmergencySpec, spec: &StageSpec, errors: &mut Vec<FieldError>) {
    let approvals = &emergency.approvals;
    if approvals.users.is_empty() && approvals.groups.is_empty() {
        let why = "name who may approve an emergency (users or groups): no emergency goes out on its requester's word";
        errors.push(FieldError::new("spec.emergency.approvals", why));
    }
    for (i, r) in emergency.bypass.requires.iter().enumerate() {
        if !spec.requires.contains(r) {
            let why = format!("'{r}' is not in spec.requires");
            errors.push(FieldError::new(
                format!("spec.emergency.bypass.requires[{i}]"),
                why,
            ));
        }
    }
    let policy_gates = spec
        .policies
        .iter()
        .flat_map(|p| p.gates.iter().flatten().chain(&p.add_gates));
    let known: Vec<&String> = spec.gates.iter().chain(policy_gates).collect();
    for (i, g) in emergency.bypass.gates.iter().enumerate() {
        if !known.contains(&g) {
            let why = format!("'{g}' is not in spec.gates nor in a policy's gates");
            errors.push(FieldError::new(
                format!("spec.emergency.bypass.gates[{i}]"),
                why,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_listing_a_stages_emergency_approvals_as_a_gate_is_refused() {
        let spec = serde_json::json!({
            "pipeline": "shop", "target": {"name": "web"}, "gates": ["emergency:prod"],
        });
        let spec: StageSpec = serde_json::from_value(spec).unwrap();
        let err = super::super::compile_stage("dev", &spec)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.gates[0]: 'emergency:prod' is not a Gate's name"),
            "{err}"
        );
    }

    #[test]
    fn five_working_days_skip_the_weekend() {
        let friday: jiff::Timestamp = "2026-12-04T15:00:00Z".parse().unwrap();
        let due = ReviewWithin::WorkingDays(5).due(friday);
        assert_eq!(due.to_string(), "2026-12-11T15:00:00Z");
        let exactly = ReviewWithin::Exactly(Duration::from_secs(30)).due(friday);
        assert_eq!(exactly.to_string(), "2026-12-04T15:00:30Z");
    }

    #[test]
    fn an_emergency_without_approvers_or_skipping_what_the_stage_lacks_is_refused_by_field() {
        let spec = serde_json::json!({
            "pipeline": "shop", "requires": ["test"], "target": {"name": "web"}, "gates": ["soak"],
            "emergency": {"approvals": {}, "bypass": {"windows": true, "requires": ["qa"], "gates": ["nope"]}},
        });
        let spec: StageSpec = serde_json::from_value(spec).unwrap();
        let err = super::super::compile_stage("prod", &spec)
            .unwrap_err()
            .to_string();
        for field in [
            "spec.emergency.approvals: name who may approve",
            "spec.emergency.bypass.requires[0]: 'qa' is not in spec.requires",
            "spec.emergency.bypass.gates[0]: 'nope' is not in spec.gates",
        ] {
            assert!(err.contains(field), "expected '{field}' in {err}");
        }
    }

    #[test]
    fn the_emergency_plan_drops_only_what_bypass_names_and_asks_for_its_approvals_first() {
        let spec = serde_json::json!({
            "pipeline": "shop", "requires": ["test", "staging"], "target": {"name": "web"},
            "gates": ["soak", "signoff"],
            "windows": [{"kind": "deny", "schedule": "0 0 * * *", "duration": "24h"}],
            "emergency": {"approvals": {"groups": ["sre"]}, "bypass": {"windows": true, "requires": ["staging"], "gates": ["soak"]}},
        });
        let spec: StageSpec = serde_json::from_value(spec).unwrap();
        let plan = super::super::compile_stage("prod", &spec).unwrap();
        let emergency = plan.emergency.expect("an emergency plan");
        assert_eq!(emergency.plan.gates, ["emergency:prod", "signoff"]);
        assert_eq!(emergency.plan.requires, ["test"]);
        assert!(emergency.plan.windows.is_empty());
        assert_eq!(
            emergency.bypassed,
            ["windows", "stage staging", "gate soak"]
        );
    }
}
