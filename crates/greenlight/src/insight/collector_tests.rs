use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::*;
use crate::identity::IdentityKey;
use crate::index::Objects;

fn canary_stage(name: &str, weight: i32) -> Stage {
    serde_json::from_value(json!({
        "apiVersion": "greenlight.dev/v1alpha1", "kind": "Stage",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"pipeline": "web", "target": {"name": "web"}, "gates": ["error-rate"],
                 "strategy": {"type": "canary", "canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}},
        "status": {"phase": "Progressing", "phaseSince": "2026-11-27T10:00:00Z",
                   "candidateRelease": "r0",
                   "rollout": {"release": "r0", "version": "0", "startedAt": "2026-11-27T10:00:00Z",
                               "direction": "Forward",
                               "canary": {"phase": "Paused", "step": 1, "weight": weight,
                                          "stepStartedAt": "2026-11-27T10:00:00Z"}}}
    }))
    .unwrap()
}

fn release(n: usize) -> Release {
    serde_json::from_value(json!({
        "apiVersion": "greenlight.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": format!("r{n}"), "namespace": "shop",
                     "creationTimestamp": "2026-11-27T09:00:00Z"},
        "spec": {"pipeline": "web", "version": n.to_string(),
                 "artifacts": [{"name": "web", "image": format!("r/web@sha256:{}", "a".repeat(64))}]},
        "status": {"stages": {"prod": {"phase": "Progressing", "gates": [
            {"name": "error-rate", "result": "Passed", "value": "0.004", "message": "ok",
             "since": "2026-11-27T10:00:00Z"}]}},
            "audit": [{"time": "2026-11-27T10:30:00Z", "stage": "prod", "action": "Promoted",
                       "actor": "greenlight", "message": ""}]}
    }))
    .unwrap()
}

fn scrape(releases: usize) -> String {
    let objects = Objects {
        stages: vec![canary_stage("prod", 20)],
        releases: (0..releases).map(release).collect(),
        ..Default::default()
    };
    let index = Index::of(objects, Arc::new(IdentityKey::from_bytes(&[7; 32])));
    let collector = StateCollector::new(index, SignedDuration::from_hours(24 * 90));
    let mut text = String::new();
    let mut registry = prometheus_client::registry::Registry::with_prefix("greenlight");
    registry.register_collector(Box::new(collector));
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

fn series(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

#[test]
fn a_stage_shows_its_phase_weight_step_and_gate_verdicts() {
    let text = scrape(1);
    let labels = r#"namespace="shop",pipeline="web",stage="prod""#;
    for line in [
        format!("greenlight_stage_phase{{{labels},phase=\"Progressing\"}} 1"),
        format!("greenlight_stage_phase{{{labels},phase=\"Idle\"}} 0"),
        format!("greenlight_stage_canary_weight{{{labels}}} 20"),
        format!("greenlight_stage_canary_step{{{labels}}} 2"),
        format!("greenlight_stage_canary_steps{{{labels}}} 2"),
        format!("greenlight_gate_verdict{{{labels},gate=\"error-rate\",verdict=\"Passed\"}} 1"),
        format!("greenlight_gate_value{{{labels},gate=\"error-rate\"}} 0.004"),
        format!("greenlight_dora_rollouts{{{labels},outcome=\"succeeded\"}} 1"),
        r#"greenlight_dora_rollouts{namespace="shop",pipeline="web",stage="",outcome="succeeded"} 1"#.to_string(),
    ] {
        let (name, value) = line.rsplit_once(' ').unwrap();
        let found = series(&text).into_iter().find(|l| l.starts_with(name));
        let found_value = found.and_then(|l| l.rsplit_once(' ')).map(|(_, v)| v.parse::<f64>().unwrap());
        assert_eq!(found_value, Some(value.parse::<f64>().unwrap()), "{line} in\n{text}");
    }
    assert!(text.contains("greenlight_stage_time_in_phase_seconds{"));
}

#[test]
fn the_number_of_series_does_not_grow_with_releases() {
    let few = series(&scrape(1)).len();
    let many = series(&scrape(200)).len();
    assert_eq!(few, many, "series must grow with stages and gates only");
    let text = scrape(200);
    assert!(!text.contains("r199"), "no release name is a label");
}

#[test]
fn the_state_of_a_scrape_is_the_time_it_is_read() {
    let index = Index::of(
        Objects {
            stages: vec![canary_stage("prod", 20)],
            ..Default::default()
        },
        Arc::new(IdentityKey::from_bytes(&[7; 32])),
    );
    let collector = StateCollector::new(index, SignedDuration::from_hours(1));
    let later: Timestamp = "2026-11-27T10:05:00Z".parse().unwrap();
    let time = collector
        .gather(later)
        .into_iter()
        .find(|g| g.name == "stage_time_in_phase_seconds")
        .unwrap();
    assert_eq!(time.rows[0].1, 300.0);
}

/// Every metric family the operator serves: its own counters and the state collector's.
fn served_families() -> std::collections::BTreeSet<String> {
    let metrics = crate::metrics::Metrics::new();
    metrics.touch_every_family();
    let index = Index::of(
        Objects::default(),
        Arc::new(IdentityKey::from_bytes(&[7; 32])),
    );
    let state = StateCollector::new(index, SignedDuration::from_hours(1));
    metrics.collect_state(Box::new(state));
    let text = metrics.encode();
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("greenlight_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn expressions(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v.as_str()) {
                    ("expr", Some(e)) => out.push(e.to_string()),
                    ("query", Some(q)) if q.contains("greenlight_") => out.push(q.to_string()),
                    _ => expressions(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| expressions(v, out)),
        _ => {}
    }
}

#[test]
fn the_dashboard_shows_only_series_the_operator_serves() {
    let dashboard: serde_json::Value = serde_json::from_str(include_str!(
        "../../../../charts/greenlight/dashboards/greenlight.json"
    ))
    .expect("the dashboard is JSON");
    let served = served_families();
    let known = served.contains("greenlight_dora_band") && served.contains("greenlight_reconciles");
    assert!(known, "{served:?}");
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    assert!(exprs.len() > 20, "{exprs:?}");
    let mut unknown = Vec::new();
    for name in exprs.iter().flat_map(|e| metric_names(e)) {
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| served.contains(*f)))
            .unwrap_or(&name);
        if !served.contains(family) {
            unknown.push(name.clone());
        }
    }
    assert!(
        unknown.is_empty(),
        "the dashboard names series nobody serves: {unknown:?}"
    );
}
