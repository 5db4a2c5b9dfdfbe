//! The Argo CD health check of a live object, run under the real `lua5.1` with the runner
//! the fixtures use: what Argo CD would show for it now.

#[path = "../../tests/argocd_lua/runner.rs"]
mod runner;

/// The `(status, message)` the kind's `health.lua` gives `object`.
pub fn health(kind: &str, object: &serde_json::Value) -> (String, String) {
    let root = env!("CARGO_MANIFEST_DIR");
    let path = format!("{root}/resource_customizations/greenlight.dev/{kind}/health.lua");
    let script = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    match runner::Lua::installed().run(&script, object) {
        Ok(runner::Outcome::Returned(value)) => (
            value["status"].as_str().unwrap_or_default().to_string(),
            value["message"].as_str().unwrap_or_default().to_string(),
        ),
        Ok(other) => panic!("{kind}/health.lua: {other}"),
        Err(e) => panic!("{kind}/health.lua: {e}"),
    }
}
