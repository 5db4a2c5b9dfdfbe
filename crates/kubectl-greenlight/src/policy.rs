//! `kubectl greenlight policy`: which release policy applies to a release at each stage of
//! its pipeline, and why, from the Stage specs as the controller compiles them.

use serde::Serialize;

use super::view::{clean, dag_order};
use greenlight_api::{Release, Stage};
use greenlight_core::validation::compile_stage;

/// What one stage does with the release.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRow {
    pub stage: String,
    /// The policy that applies, if one does.
    pub policy: Option<String>,
    /// Why: the field that lists the release's type, or that none does.
    pub why: String,
    /// What the policy changes, or the stage's problem.
    pub changes: String,
}

/// One row per stage of the release's pipeline, in DAG order (or only `only`).
pub fn rows(release: &Release, stages: &[Stage], only: Option<&str>) -> Vec<PolicyRow> {
    let release_type = release.spec.release_type;
    let kind = format!("{release_type:?}").to_lowercase();
    let ours: Vec<&Stage> = stages
        .iter()
        .filter(|s| s.spec.pipeline == release.spec.pipeline)
        .filter(|s| only.is_none_or(|o| s.metadata.name.as_deref() == Some(o)))
        .collect();
    dag_order(&ours)
        .into_iter()
        .map(|stage| {
            let name = stage.metadata.name.clone().unwrap_or_default();
            let found = stage.spec.policy_for(release_type);
            let why = match found {
                Some((i, _)) => format!("spec.policies[{i}] lists {kind}"),
                None => format!("no policy lists {kind}: the stage's own rules"),
            };
            let changes = match compile_stage(&name, &stage.spec) {
                Err(e) => format!("the stage's spec is invalid: {e}"),
                Ok(plan) => plan
                    .policy_for(release_type)
                    .map(|p| p.summary.clone())
                    .unwrap_or_default(),
            };
            PolicyRow {
                stage: name,
                policy: found.map(|(_, p)| p.name.clone()),
                why,
                changes,
            }
        })
        .collect()
}

pub fn text(release: &Release, rows: &[PolicyRow]) -> String {
    let name = release.metadata.name.clone().unwrap_or_default();
    let kind = format!("{:?}", release.spec.release_type).to_lowercase();
    let mut out = format!(
        "{} ({}) is a {kind} release\n",
        clean(&name),
        clean(&release.spec.version)
    );
    if rows.is_empty() {
        out.push_str("no stage of its pipeline matches\n");
        return out;
    }
    let stage_w = rows.iter().map(|r| r.stage.len()).max().unwrap_or(0).max(5);
    out.push_str(&format!("{:<stage_w$}  {:<10}  WHY\n", "STAGE", "POLICY"));
    for r in rows {
        let policy = r.policy.as_deref().unwrap_or("-");
        let mut why = r.why.clone();
        if !r.changes.is_empty() {
            why = format!("{why}; {}", r.changes);
        }
        out.push_str(&format!(
            "{:<stage_w$}  {:<10}  {}\n",
            clean(&r.stage),
            clean(policy),
            clean(&why)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(name: &str, spec: serde_json::Value) -> Stage {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Stage",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn each_stage_says_which_policy_takes_a_hotfix_and_what_it_changes() {
        let release: Release = serde_json::from_value(serde_json::json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": "shop-2"},
            "spec": {"pipeline": "shop", "version": "1.0.1", "type": "hotfix",
                     "artifacts": [{"name": "web", "image": "web@sha256:00"}]},
        }))
        .unwrap();
        let stages = [
            stage(
                "prod",
                serde_json::json!({
                    "pipeline": "shop", "requires": ["test"], "target": {"name": "web-prod"},
                    "gates": ["soak"],
                    "policies": [{"name": "hotfix", "types": ["hotfix"], "gates": ["two-signoffs"]}],
                }),
            ),
            stage(
                "test",
                serde_json::json!({"pipeline": "shop", "target": {"name": "web-test"}}),
            ),
        ];
        let rows = rows(&release, &stages, None);
        let shown = text(&release, &rows);
        assert_eq!(
            shown,
            "shop-2 (1.0.1) is a hotfix release\n\
             STAGE  POLICY      WHY\n\
             test   -           no policy lists hotfix: the stage's own rules\n\
             prod   hotfix      spec.policies[0] lists hotfix; hotfix policy: gate soak skipped; gate two-signoffs required\n"
        );
    }
}
