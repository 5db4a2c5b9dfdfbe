//! The Grafana dashboard the chart ships: every query is PromQL that Prometheus's own
//! `promtool` accepts once Grafana's variables are filled in. (Which series it names is
//! checked against the operator's registry in `insight::collector`'s tests.)

use std::process::Command;

const DASHBOARD: &str = include_str!("../charts/greenlight/dashboards/greenlight.json");

fn queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v.as_str()) {
                    ("expr", Some(e)) if !e.is_empty() => out.push(e.to_string()),
                    _ => queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// The query as Grafana sends it, with its variables replaced by typical values.
fn filled(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range", "6h")
        .replace("$namespace", "(shop|payments)")
        .replace("$pipeline", ".*")
}

#[test]
fn every_dashboard_query_is_promql_that_promtool_accepts() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON");
    let mut exprs = Vec::new();
    queries(&dashboard, &mut exprs);
    assert!(exprs.len() > 20, "too few queries found: {exprs:?}");
    let rules: Vec<serde_json::Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": filled(e)}))
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("rules.yaml");
    // JSON is YAML, which promtool reads.
    std::fs::write(&path, file.to_string()).expect("write the rules");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .expect("promtool runs (make test installs Debian's prometheus, which has it)");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "promtool refused a dashboard query:\n{said}"
    );
    assert!(
        said.contains(&format!("{} rules found", exprs.len())),
        "{said}"
    );
}

#[test]
fn the_dashboard_loads_in_grafana_by_a_stable_uid_and_any_prometheus() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON");
    assert_eq!(dashboard["uid"], "greenlight");
    assert!(
        dashboard.get("id").is_none_or(|id| id.is_null()),
        "no instance-specific id"
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let datasource = variables.iter().find(|v| v["type"] == "datasource");
    assert_eq!(
        datasource.expect("a datasource variable")["query"],
        "prometheus"
    );
    let text = DASHBOARD.replace(' ', "");
    assert!(
        !text.contains("\"datasource\":\"Prometheus\""),
        "no hard-coded datasource name"
    );
}
