//! The check lists of a stage (`preRollout`, `verify`, `prePromotion`): each gate named once
//! per list, and a verification timeout between 1s and 6h.

use std::time::Duration;

use super::FieldError;
use crate::api::gate::{GateList, GateType};
use crate::api::stage::{OnTimeout, StageSpec};
use crate::schedule::parse_duration;

/// Default and longest time a verification may take.
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(600);
pub const VERIFY_TIMEOUT_MAX: Duration = Duration::from_secs(6 * 3600);

/// The checks a stage runs on a release besides its `gates`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChecksPlan {
    pub pre_rollout: Vec<String>,
    pub pre_promotion: Vec<String>,
    pub verify: Vec<String>,
    pub verify_timeout: Duration,
    pub on_timeout: OnTimeout,
}

impl ChecksPlan {
    /// The gates of one check list (none for `spec.gates`, which the plan keeps itself).
    pub fn gates_in(&self, list: GateList) -> &[String] {
        match list {
            GateList::Gates => &[],
            GateList::PreRollout => &self.pre_rollout,
            GateList::PrePromotion => &self.pre_promotion,
            GateList::Verify => &self.verify,
        }
    }

    /// Whether the stage checks a release once it runs it.
    pub fn any(&self) -> bool {
        !(self.pre_rollout.is_empty() && self.pre_promotion.is_empty() && self.verify.is_empty())
    }
}

/// Compiles the check lists, pushing what is wrong with them to `errors`.
pub fn compile_checks(spec: &StageSpec, errors: &mut Vec<FieldError>) -> ChecksPlan {
    for list in [
        GateList::Gates,
        GateList::PreRollout,
        GateList::PrePromotion,
        GateList::Verify,
    ] {
        listed_twice(spec.gates_in(list), spec.list_field(list), errors);
    }
    let verify = spec.verify.as_ref();
    let timeout = verify.and_then(|v| v.timeout.as_deref());
    let verify_timeout = match timeout.map(parse_duration) {
        None => VERIFY_TIMEOUT,
        Some(Ok(d)) if d >= Duration::from_secs(1) && d <= VERIFY_TIMEOUT_MAX => d,
        Some(Ok(_)) => {
            errors.push(FieldError::new(
                "spec.verify.timeout",
                "must be between 1s and 6h",
            ));
            VERIFY_TIMEOUT
        }
        Some(Err(e)) => {
            errors.push(FieldError::new("spec.verify.timeout", e.to_string()));
            VERIFY_TIMEOUT
        }
    };
    ChecksPlan {
        pre_rollout: spec.pre_rollout.clone(),
        pre_promotion: spec.gates_in(GateList::PrePromotion).to_vec(),
        verify: spec.gates_in(GateList::Verify).to_vec(),
        verify_timeout,
        on_timeout: verify.map(|v| v.on_timeout).unwrap_or_default(),
    }
}

/// Gates listed where their kind cannot work, each naming the field: a job gate runs once
/// per rollout, so never in an analysis; a compare gate measures the canary against the
/// primary, so only in a canary step's analysis, where both serve.
pub fn misplaced_gates(
    spec: &StageSpec,
    gate_type: &dyn Fn(&str) -> Option<GateType>,
) -> Vec<FieldError> {
    let misplaced = |field: &str, kind: GateType| match kind {
        GateType::Job => field.to_lowercase().contains("analysis"),
        GateType::Compare => !(field.contains("canary.steps[") && field.contains(".analysis")),
        _ => false,
    };
    spec.named_gates()
        .into_iter()
        .filter_map(|(field, gate)| {
            let kind = gate_type(&gate)?;
            let why = match kind {
                GateType::Job => format!("'{gate}' is a job gate, which runs once per rollout; list it in spec.verify or the strategy's prePromotion"),
                _ => format!("'{gate}' is a compare gate, which compares the canary with the primary while both serve; list it in a canary step's analysis (spec.strategy.canary.steps[].analysis)"),
            };
            misplaced(&field, kind).then(|| FieldError::new(field, why))
        })
        .collect()
}

/// Each list of gates a release may meet before it rolls out here, with the field that answers
/// for it: the stage's own (its trigger's), and each policy's.
pub fn gate_lists(spec: &StageSpec) -> Vec<(String, Vec<String>)> {
    let own = ("spec.trigger.type".to_string(), spec.gates.clone());
    let policies = spec.policies.iter().enumerate().map(|(i, p)| {
        (
            format!("spec.policies[{i}].gates"),
            spec.under_policy(p).gates,
        )
    });
    std::iter::once(own).chain(policies).collect()
}

fn listed_twice(gates: &[String], field: &str, errors: &mut Vec<FieldError>) {
    for (i, g) in gates.iter().enumerate() {
        if gates[..i].contains(g) {
            errors.push(FieldError::new(
                format!("{field}[{i}]"),
                format!("gate '{g}' is listed twice"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stage::Verify;

    /// A stage spec of `web` with the fields given as JSON.
    fn spec(fields: serde_json::Value) -> StageSpec {
        let mut v = serde_json::json!({"pipeline": "p", "target": {"name": "web"}});
        v.as_object_mut()
            .expect("object")
            .extend(fields.as_object().cloned().unwrap_or_default());
        serde_json::from_value(v).expect("stage spec")
    }

    #[test]
    fn a_gate_named_twice_in_one_list_is_refused_naming_its_place() {
        let s = spec(
            serde_json::json!({"preRollout": ["a", "b", "a"], "verify": {"gates": ["c", "c"]}}),
        );
        let mut errors = vec![];
        compile_checks(&s, &mut errors);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.preRollout[2]", "spec.verify.gates[1]"]);
    }

    #[test]
    fn the_same_gate_may_sit_in_two_lists() {
        let s = spec(
            serde_json::json!({"gates": ["a"], "preRollout": ["a"], "verify": {"gates": ["a"]}}),
        );
        let mut errors = vec![];
        let plan = compile_checks(&s, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(plan.gates_in(GateList::Verify), ["a"]);
        assert!(plan.any());
    }

    #[test]
    fn a_verification_timeout_is_held_between_a_second_and_six_hours() {
        for (timeout, ok) in [
            ("0s", false),
            ("1s", true),
            ("6h", true),
            ("6h1s", false),
            ("x", false),
        ] {
            let mut s = spec(serde_json::json!({}));
            s.verify = Some(Verify {
                gates: vec!["a".into()],
                timeout: Some(timeout.into()),
                on_timeout: OnTimeout::Hold,
            });
            let mut errors = vec![];
            let plan = compile_checks(&s, &mut errors);
            assert_eq!(errors.is_empty(), ok, "{timeout}: {errors:?}");
            assert_eq!(plan.on_timeout, OnTimeout::Hold);
        }
    }

    #[test]
    fn a_compare_gate_outside_a_steps_analysis_and_a_job_gate_inside_one_are_refused_by_field() {
        let s = spec(serde_json::json!({
            "gates": ["vs-primary"],
            "verify": {"gates": ["vs-primary"]},
            "strategy": {"type": "canary", "canary": {
                "analysis": {"gates": ["vs-primary"]},
                "steps": [{"setWeight": 50}, {"analysis": {"gates": ["vs-primary", "smoke"]}}]}}
        }));
        let kind = |g: &str| match g {
            "vs-primary" => Some(GateType::Compare),
            "smoke" => Some(GateType::Job),
            _ => None,
        };
        let fields: Vec<String> = misplaced_gates(&s, &kind)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.gates[0]",
                "spec.strategy.canary.steps[1].analysis.gates",
                "spec.strategy.canary.analysis.gates",
                "spec.verify.gates[0]"
            ]
        );
    }

    #[test]
    fn a_stage_without_checks_has_none_and_the_default_timeout() {
        let mut errors = vec![];
        let plan = compile_checks(&spec(serde_json::json!({})), &mut errors);
        assert!(!plan.any());
        assert_eq!(plan.verify_timeout, VERIFY_TIMEOUT);
    }
}
