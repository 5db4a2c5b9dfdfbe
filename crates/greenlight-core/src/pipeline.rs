//! The shape of a pipeline: the stages that share a `pipeline` name form a DAG through their
//! `requires`; this module orders it and finds cycles and dangling references.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    #[error(
        "spec.requires: stage '{stage}' requires '{missing}', which is not a stage of pipeline '{pipeline}'"
    )]
    MissingStage {
        pipeline: String,
        stage: String,
        missing: String,
    },
    #[error("spec.requires: stages of pipeline '{pipeline}' form a cycle: {}", cycle.join(" -> "))]
    Cycle {
        pipeline: String,
        cycle: Vec<String>,
    },
}

/// Orders the stages of one pipeline so that every stage comes after the stages it requires
/// (ties broken by name, so the order is stable).
pub fn topological_order(
    pipeline: &str,
    requires: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<String>, PipelineError> {
    for (stage, deps) in requires {
        if let Some(missing) = deps.iter().find(|d| !requires.contains_key(*d)) {
            return Err(PipelineError::MissingStage {
                pipeline: pipeline.to_string(),
                stage: stage.clone(),
                missing: missing.clone(),
            });
        }
    }
    let mut order = Vec::with_capacity(requires.len());
    let mut done = BTreeSet::new();
    while order.len() < requires.len() {
        let ready: Vec<&String> = requires
            .iter()
            .filter(|(s, deps)| !done.contains(*s) && deps.iter().all(|d| done.contains(d)))
            .map(|(s, _)| s)
            .collect();
        if ready.is_empty() {
            return Err(PipelineError::Cycle {
                pipeline: pipeline.to_string(),
                cycle: find_cycle(requires, &done),
            });
        }
        for s in ready {
            done.insert(s.clone());
            order.push(s.clone());
        }
    }
    Ok(order)
}

/// A cycle among the stages, ignoring references to stages not (yet) declared: what the
/// admission webhook refuses, since Git may apply a pipeline's stages in any order.
pub fn find_cycle_ignoring_missing(
    pipeline: &str,
    requires: &BTreeMap<String, Vec<String>>,
) -> Option<PipelineError> {
    let known: BTreeMap<String, Vec<String>> = requires
        .iter()
        .map(|(stage, deps)| {
            let deps = deps
                .iter()
                .filter(|d| requires.contains_key(*d))
                .cloned()
                .collect();
            (stage.clone(), deps)
        })
        .collect();
    topological_order(pipeline, &known).err()
}

/// All stages upstream of `stage` (what it requires, transitively).
pub fn upstream_of(stage: &str, requires: &BTreeMap<String, Vec<String>>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = vec![stage];
    while let Some(s) = stack.pop() {
        for dep in requires.get(s).into_iter().flatten() {
            if seen.insert(dep.clone()) {
                stack.push(dep);
            }
        }
    }
    seen
}

fn find_cycle(requires: &BTreeMap<String, Vec<String>>, done: &BTreeSet<String>) -> Vec<String> {
    // Every remaining stage has an unfinished dependency, so walking them must revisit one.
    let start = requires
        .keys()
        .find(|s| !done.contains(*s))
        .cloned()
        .unwrap_or_default();
    let mut path = vec![start.clone()];
    let mut current = start;
    loop {
        let next = requires[&current]
            .iter()
            .find(|d| !done.contains(*d))
            .cloned()
            .unwrap_or_default();
        if let Some(pos) = path.iter().position(|p| *p == next) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(next);
            return cycle;
        }
        path.push(next.clone());
        current = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(s, deps)| (s.to_string(), deps.iter().map(|d| d.to_string()).collect()))
            .collect()
    }

    #[test]
    fn stages_come_after_what_they_require() {
        let g = graph(&[
            ("prod", &["preprod"]),
            ("preprod", &["test"]),
            ("test", &["dev"]),
            ("dev", &[]),
        ]);
        assert_eq!(
            topological_order("p", &g).unwrap(),
            ["dev", "test", "preprod", "prod"]
        );
    }

    #[test]
    fn a_diamond_orders_both_branches_before_the_join() {
        let g = graph(&[
            ("dev", &[]),
            ("qa-a", &["dev"]),
            ("qa-b", &["dev"]),
            ("prod", &["qa-a", "qa-b"]),
        ]);
        let order = topological_order("p", &g).unwrap();
        assert_eq!(order, ["dev", "qa-a", "qa-b", "prod"]);
        assert_eq!(
            upstream_of("prod", &g).into_iter().collect::<Vec<_>>(),
            ["dev", "qa-a", "qa-b"]
        );
    }

    #[test]
    fn a_cycle_is_reported_with_its_members() {
        let g = graph(&[
            ("dev", &[]),
            ("a", &["dev", "c"]),
            ("b", &["a"]),
            ("c", &["b"]),
        ]);
        let err = topological_order("p", &g).unwrap_err();
        let PipelineError::Cycle { cycle, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(cycle.first(), cycle.last());
        for s in ["a", "b", "c"] {
            assert!(cycle.contains(&s.to_string()), "{err}");
        }
        assert!(!cycle.contains(&"dev".to_string()));
    }

    #[test]
    fn a_self_requirement_is_a_cycle() {
        let g = graph(&[("dev", &["dev"])]);
        assert!(matches!(
            topological_order("p", &g),
            Err(PipelineError::Cycle { .. })
        ));
    }

    #[test]
    fn requiring_an_unknown_stage_is_named() {
        let g = graph(&[("prod", &["staging"])]);
        let err = topological_order("p", &g).unwrap_err().to_string();
        assert!(
            err.contains("'staging'") && err.contains("spec.requires"),
            "{err}"
        );
    }
}
