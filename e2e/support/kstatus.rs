//! kstatus's verdict on an object, as Flux's health checks compute it, for custom resources
//! without type-specific rules: a port of `checkGenericProperties` in
//! sigs.k8s.io/cli-utils `pkg/kstatus/status/generic.go` (v0.37). Being deleted is
//! `Terminating`; an `observedGeneration` behind `generation` is `InProgress`; then the first
//! condition that is True decides, `Reconciling` as `InProgress` and `Stalled` as `Failed`;
//! anything else is `Current`.

use serde_json::Value;

pub fn of(obj: &Value) -> &'static str {
    if !obj["metadata"]["deletionTimestamp"].is_null() {
        return "Terminating";
    }
    let observed = &obj["status"]["observedGeneration"];
    if !observed.is_null() && observed != &obj["metadata"]["generation"] {
        return "InProgress";
    }
    // The first condition that decides, in the object's order, as kstatus reads them.
    let conditions = obj["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for c in &conditions {
        match (c["type"].as_str(), c["status"].as_str()) {
            (Some("Reconciling"), Some("True")) => return "InProgress",
            (Some("Stalled"), Some("True")) => return "Failed",
            _ => {}
        }
    }
    "Current"
}
