//! Release policies compiled: each policy is the stage's spec as its releases see it,
//! compiled like the stage's own, with what it changes said in words for the release's
//! status and the audit trail.

use std::time::Duration;

use super::{FieldError, StagePlan, compile_stage};
use crate::api::policy::ReleasePolicy;
use crate::api::release::ReleaseType;
use crate::api::stage::StageSpec;
use crate::schedule::parse_duration;

/// Longest policy summary kept; it goes into statuses, Events and audit entries.
const SUMMARY_MAX: usize = 512;

/// One policy, compiled.
#[derive(Debug, Clone)]
pub struct PolicyPlan {
    pub name: String,
    pub types: Vec<ReleaseType>,
    /// What it changes, e.g. `hotfix policy: gate test-soak skipped; gate two-approvals
    /// required`.
    pub summary: String,
    /// The stage's plan for these releases.
    pub plan: StagePlan,
}

/// Compiles every policy of a spec whose own plan compiled; errors name the policy's field.
pub(super) fn compile_policies(
    name: &str,
    spec: &StageSpec,
    base: &StagePlan,
    errors: &mut Vec<FieldError>,
) -> Vec<PolicyPlan> {
    let mut plans = Vec::new();
    for (i, policy) in spec.policies.iter().enumerate() {
        let before = errors.len();
        check_policy(i, policy, spec, errors);
        if errors.len() > before {
            continue;
        }
        let effective = spec.under_policy(policy);
        match compile_stage(name, &effective) {
            Ok(mut plan) => {
                plan.time_to_recover = time_to_recover(policy);
                plans.push(PolicyPlan {
                    name: policy.name.clone(),
                    types: policy.types.clone(),
                    summary: summary(policy, base, &plan),
                    plan,
                });
            }
            Err(e) => errors.extend(e.0.into_iter().map(|e| {
                let why = format!("under this policy, {}: {}", e.field, e.message);
                FieldError::new(format!("spec.policies[{i}]"), why)
            })),
        }
    }
    plans
}

/// The rules a policy must keep on its own: a unique name, types no earlier policy takes,
/// skips of required stages only, and parameters only for the strategy and lists there are.
fn check_policy(i: usize, p: &ReleasePolicy, spec: &StageSpec, errors: &mut Vec<FieldError>) {
    let field = |f: &str| format!("spec.policies[{i}].{f}");
    let earlier = &spec.policies[..i];
    if earlier.iter().any(|e| e.name == p.name) {
        let why = format!("policy '{}' is named twice", p.name);
        errors.push(FieldError::new(field("name"), why));
    }
    for (j, t) in p.types.iter().enumerate() {
        if let Some(e) = earlier.iter().find(|e| e.types.contains(t)) {
            let why = format!(
                "{t:?} releases already take policy '{}', listed first",
                e.name
            );
            errors.push(FieldError::new(
                field(&format!("types[{j}]")),
                why.to_lowercase(),
            ));
        }
    }
    for (j, s) in p.skip_requires.iter().enumerate() {
        if !spec.requires.contains(s) {
            let why =
                format!("'{s}' is not in spec.requires: a policy skips only a required stage");
            errors.push(FieldError::new(field(&format!("skipRequires[{j}]")), why));
        }
    }
    let canary = spec.strategy.canary.is_some();
    if p.canary.is_some() && !canary {
        errors.push(FieldError::new(
            field("canary"),
            "set, but the stage has no canary strategy",
        ));
    }
    let rollback = p.rollback.clone().unwrap_or_default();
    if rollback.on_analysis_failure.is_some() && !canary {
        let why = "set, but the stage has no canary strategy";
        errors.push(FieldError::new(field("rollback.onAnalysisFailure"), why));
    }
    if rollback.on_verify_timeout.is_some() && spec.verify.is_none() {
        let why = "set, but the stage has no spec.verify";
        errors.push(FieldError::new(field("rollback.onVerifyTimeout"), why));
    }
    if let Some(Err(e)) = rollback.time_to_recover.as_deref().map(parse_duration) {
        errors.push(FieldError::new(
            field("rollback.timeToRecover"),
            e.to_string(),
        ));
    }
}

fn time_to_recover(p: &ReleasePolicy) -> Option<Duration> {
    let text = p.rollback.as_ref()?.time_to_recover.as_deref()?;
    parse_duration(text).ok()
}

/// What the policy changes against the stage's own plan, in words.
fn summary(p: &ReleasePolicy, base: &StagePlan, plan: &StagePlan) -> String {
    let mut said = Vec::new();
    let skipped = base.gates.iter().filter(|g| !plan.gates.contains(g));
    said.extend(skipped.map(|g| format!("gate {g} skipped")));
    let added = plan.gates.iter().filter(|g| !base.gates.contains(g));
    said.extend(added.map(|g| format!("gate {g} required")));
    let unrequired = base.requires.iter().filter(|s| !plan.requires.contains(s));
    said.extend(unrequired.map(|s| format!("stage {s} not required")));
    if let Some(c) = &p.canary {
        if let Some(steps) = &c.steps {
            said.push(format!("{} canary steps", steps.len()));
        }
        if let Some(bake) = &c.bake {
            said.push(format!("bake {bake}"));
        }
    }
    let rollback = p.rollback.clone().unwrap_or_default();
    if let Some(on) = rollback.on_analysis_failure {
        said.push(format!("on analysis failure: {on:?}").to_lowercase());
    }
    if let Some(on) = rollback.on_verify_timeout {
        said.push(format!("on verify timeout: {on:?}").to_lowercase());
    }
    if let Some(t) = &rollback.time_to_recover {
        said.push(format!("time to recover {t}"));
    }
    if said.is_empty() {
        said.push("no change".into());
    }
    let mut text = format!("{} policy: {}", p.name, said.join("; "));
    if text.len() > SUMMARY_MAX {
        let cut = (0..=SUMMARY_MAX - 3)
            .rev()
            .find(|i| text.is_char_boundary(*i));
        text.truncate(cut.unwrap_or(0));
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(policies: serde_json::Value) -> Result<StagePlan, String> {
        let spec = serde_json::json!({
            "pipeline": "shop", "requires": ["test"], "target": {"name": "web"},
            "gates": ["soak"], "policies": policies,
        });
        let spec: StageSpec = serde_json::from_value(spec).map_err(|e| e.to_string())?;
        compile_stage("prod", &spec).map_err(|e| e.to_string())
    }

    #[test]
    fn a_policy_is_said_in_words_by_what_it_changes() {
        let plan = compiled(serde_json::json!([{
            "name": "hotfix", "types": ["hotfix"], "gates": [], "addGates": ["two-signoffs"],
            "skipRequires": ["test"], "rollback": {"timeToRecover": "15m"},
        }]))
        .unwrap();
        let policy = plan.policy_for(ReleaseType::Hotfix).unwrap();
        assert_eq!(
            policy.summary,
            "hotfix policy: gate soak skipped; gate two-signoffs required; stage test not required; time to recover 15m"
        );
        assert_eq!(policy.plan.time_to_recover, Some(Duration::from_secs(900)));
        assert!(plan.policy_for(ReleaseType::Feature).is_none());
        assert_eq!(plan.for_type(ReleaseType::Feature).gates, ["soak"]);
    }

    #[test]
    fn a_skip_of_an_unrequired_stage_a_type_taken_twice_and_rules_for_absent_parts_are_refused_by_field()
     {
        let err = compiled(serde_json::json!([
            {"name": "hotfix", "types": ["hotfix"], "skipRequires": ["qa"]},
            {"name": "hotfix", "types": ["patch", "hotfix"], "canary": {"bake": "1m"},
             "rollback": {"onVerifyTimeout": "hold", "timeToRecover": "soon"}},
        ]))
        .unwrap_err();
        for field in [
            "spec.policies[0].skipRequires[0]: 'qa' is not in spec.requires",
            "spec.policies[1].name: policy 'hotfix' is named twice",
            "spec.policies[1].types[1]: hotfix releases already take policy 'hotfix'",
            "spec.policies[1].canary: set, but the stage has no canary strategy",
            "spec.policies[1].rollback.onVerifyTimeout: set, but the stage has no spec.verify",
            "spec.policies[1].rollback.timeToRecover",
        ] {
            assert!(err.contains(field), "expected '{field}' in: {err}");
        }
    }

    #[test]
    fn a_policy_that_breaks_the_spec_it_makes_is_refused_naming_the_policy() {
        let spec = serde_json::json!({
            "pipeline": "shop", "target": {"name": "web"}, "trigger": {"type": "manual"},
            "gates": ["signoff"], "policies": [{"name": "hotfix", "types": ["hotfix"], "gates": []}],
        });
        let spec: StageSpec = serde_json::from_value(spec).unwrap();
        let err = compile_stage("prod", &spec).unwrap_err().to_string();
        assert!(
            err.starts_with("spec.policies[0]: under this policy, spec.trigger.type: 'manual'"),
            "{err}"
        );
    }
}
