//! The `greenlight.dev/protected` label, which the fail-closed webhook selects: true on a
//! protected Stage and on every Gate a protected Stage names, set by the mutating webhook on
//! each write it sees (and by the controller for what it did not see).

use kube::ResourceExt;
use kube::core::DynamicObject;
use kube::core::admission::AdmissionRequest;
use serde_json::{Value, json};

use super::AdmissionState;
use crate::api::PROTECTED_LABEL;

/// The JSON patch operations that make the protection label true on a Stage or Gate being
/// written: on a Stage when it is protected, on a Gate when a protected Stage names it. When
/// the stages cannot be listed, a Gate keeps the label its stored version had.
pub async fn ops(req: &AdmissionRequest<DynamicObject>, ctx: &AdmissionState) -> Vec<Value> {
    let Some(object) = req.object.as_ref() else {
        return vec![];
    };
    let wanted = match req.kind.kind.as_str() {
        "Stage" => object
            .data
            .get("spec")
            .and_then(|s| s.get("protected")?.as_bool())
            .unwrap_or(false),
        "Gate" => match protected_stages(req.namespace.as_deref().unwrap_or_default(), ctx).await {
            Ok(stages) => stages
                .iter()
                .any(|s| s.spec.named_gates().iter().any(|(_, g)| *g == req.name)),
            // Unknown: what the stored object had stays, so a failed list never lets a
            // label-only edit take it off.
            Err(_) => req.old_object.as_ref().is_some_and(|o| {
                o.labels().get(PROTECTED_LABEL).map(String::as_str) == Some("true")
            }),
        },
        _ => return vec![],
    };
    let has = object.labels().get(PROTECTED_LABEL).map(String::as_str) == Some("true");
    if has == wanted {
        return vec![];
    }
    let path = format!("/metadata/labels/{}", PROTECTED_LABEL.replace('/', "~1"));
    match (wanted, object.metadata.labels.is_some()) {
        (true, false) => vec![
            json!({"op": "add", "path": "/metadata/labels", "value": {PROTECTED_LABEL: "true"}}),
        ],
        (true, true) => vec![json!({"op": "add", "path": path, "value": "true"})],
        (false, _) => vec![json!({"op": "remove", "path": path})],
    }
}

/// The protected stages of the namespace, read from the API rather than the index, which may
/// not have synced yet or may watch one namespace only.
pub async fn protected_stages(
    namespace: &str,
    ctx: &AdmissionState,
) -> Result<Vec<crate::api::Stage>, String> {
    let stages = kube::Api::<crate::api::Stage>::namespaced(ctx.client.clone(), namespace)
        .list(&Default::default())
        .await
        .map_err(|e| format!("cannot tell which stages are protected: {e}"))?;
    Ok(stages
        .items
        .into_iter()
        .filter(|s| s.spec.protected)
        .collect())
}
