//! Pinned templates: what a rollout runs is the target's pod template as it was when the
//! rollout started, kept in the Stage's status (which only the operator writes) by digest. A
//! later edit of the target is seen here (its digest, the fields it changed, the field
//! manager that made it) and reaches the primary only when the machine rolls it out.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use serde_json::Value;

use super::Context;
use super::error::ReconcileError;
use crate::api::stage::{PinnedTemplate, StageStatus};
use crate::machine::TargetTemplate;
use crate::workload::{PinnedSource, pin_of, pinned};

/// Most fields a change lists.
const FIELDS: usize = 20;

/// The target's template as the machine sees it: its digest, and against the template that
/// serves, what differs and who changed it (asked of the apiserver once per change).
pub async fn observe(
    target: &Deployment,
    status: &StageStatus,
    ctx: &Context,
) -> Result<(PinnedSource, TargetTemplate), ReconcileError> {
    let pin = pin_of(target);
    let serving = status.template.as_deref();
    let known = status
        .target_change
        .as_ref()
        .filter(|c| c.digest == pin.digest);
    // Nothing to tell (nothing pinned yet, or the rollout under way pins this very
    // template): no request to the apiserver on every pass.
    let rolling_it = status.rollout.as_ref().and_then(|r| r.template.as_deref());
    let (fields, changed_by) = match (serving, known) {
        (None, _) => (vec![], String::new()),
        (Some(s), _) if s == pin.digest || rolling_it == Some(pin.digest.as_str()) => {
            (vec![], String::new())
        }
        (_, Some(known)) => (known.fields.clone(), known.changed_by.clone()),
        (serving, None) => {
            let before = serving.and_then(|d| template_of(status, d));
            let fields = before.map_or_else(Vec::new, |b| differences(&b, &pin));
            (fields, last_writer(target, ctx).await?)
        }
    };
    let template = TargetTemplate {
        digest: pin.digest.clone(),
        fields,
        changed_by,
    };
    Ok((pin, template))
}

/// The pinned template of `digest`, as the status keeps it.
fn template_of(status: &StageStatus, digest: &str) -> Option<PinnedSource> {
    let kept = status.templates.iter().find(|t| t.digest == digest)?;
    let min_ready_seconds = kept
        .template
        .get("minReadySeconds")
        .and_then(Value::as_i64)
        .and_then(|n| i32::try_from(n).ok());
    Some(PinnedSource {
        digest: kept.digest.clone(),
        template: kept.template.get("template").cloned().unwrap_or_default(),
        min_ready_seconds,
    })
}

/// What a workload of `digest` is built from: the target with the pinned template in place
/// of its own. `None` (a rollout from before templates were pinned) builds from the target.
/// A digest that is neither kept nor the target's is refused: building from whatever the
/// target says now is the side door pinning closes.
pub fn source(
    target: &Deployment,
    status: Option<&StageStatus>,
    current: &PinnedSource,
    digest: Option<&str>,
) -> Result<Deployment, ReconcileError> {
    let Some(digest) = digest else {
        return Ok(target.clone());
    };
    let pin = match status.and_then(|s| template_of(s, digest)) {
        Some(pin) => pin,
        None if current.digest == digest => current.clone(),
        None => {
            let why = format!("the pinned template {digest} is not in the Stage's status");
            return Err(ReconcileError::Workload(
                crate::workload::WorkloadError::BadPin(digest.into(), why),
            ));
        }
    };
    Ok(pinned(target, &pin)?)
}

/// Keeps in `status.templates` exactly the templates it names (serving, rolling out, rolled
/// back to), from what it kept before and the target's template now.
pub fn keep(status: &mut StageStatus, before: &StageStatus, current: &PinnedSource) {
    let rollout = status.rollout.as_ref();
    let named = [
        status.template.as_deref(),
        rollout.and_then(|r| r.template.as_deref()),
        rollout.and_then(|r| r.previous_template.as_deref()),
    ];
    let mut kept: BTreeMap<String, PinnedTemplate> = BTreeMap::new();
    for digest in named.into_iter().flatten() {
        let old = before
            .templates
            .iter()
            .find(|t| t.digest == digest)
            .cloned();
        let now = (current.digest == digest).then(|| PinnedTemplate {
            digest: digest.to_string(),
            template: serde_json::json!({
                "template": current.template,
                "minReadySeconds": current.min_ready_seconds,
            }),
        });
        if let Some(t) = old.or(now) {
            kept.insert(digest.to_string(), t);
        }
    }
    status.templates = kept.into_values().collect();
}

/// The field manager of the target's latest write to its pod template.
async fn last_writer(target: &Deployment, ctx: &Context) -> Result<String, ReconcileError> {
    let namespace = target.namespace().unwrap_or_default();
    let api = ctx.api::<Deployment>(&namespace);
    let Some(fresh) = api.get_opt(&target.name_any()).await? else {
        return Ok("someone (the target is gone)".into());
    };
    let entries = fresh.metadata.managed_fields.unwrap_or_default();
    let writer = entries
        .iter()
        .filter(|e| {
            let fields = e.fields_v1.as_ref().map(|f| f.0.to_string());
            fields.is_some_and(|f| f.contains("\"f:template\""))
        })
        .max_by_key(|e| e.time.as_ref().map(|t| t.0))
        .and_then(|e| e.manager.clone());
    Ok(writer.unwrap_or_else(|| "someone (no field manager recorded)".into()))
}

/// The template fields that differ, as paths: containers by name, at most [`FIELDS`].
pub fn differences(before: &PinnedSource, after: &PinnedSource) -> Vec<String> {
    let mut out = Vec::new();
    if before.min_ready_seconds != after.min_ready_seconds {
        out.push("minReadySeconds".to_string());
    }
    diff("template", &before.template, &after.template, &mut out);
    out.truncate(FIELDS);
    out
}

fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    if a == b || out.len() >= FIELDS {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let null = Value::Null;
                let (va, vb) = (x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null));
                diff(&format!("{path}.{k}"), va, vb, out);
            }
        }
        (Value::Array(x), Value::Array(y)) if named(x) && named(y) => {
            let name = |v: &Value| v.get("name").and_then(Value::as_str).map(String::from);
            let names: std::collections::BTreeSet<String> =
                x.iter().chain(y.iter()).filter_map(name).collect();
            for n in names {
                let find = |list: &[Value]| {
                    list.iter()
                        .find(|v| name(v).as_deref() == Some(n.as_str()))
                        .cloned()
                };
                let (va, vb) = (
                    find(x).unwrap_or(Value::Null),
                    find(y).unwrap_or(Value::Null),
                );
                diff(&format!("{path}[{n}]"), &va, &vb, out);
            }
        }
        _ => out.push(path.to_string()),
    }
}

/// A list of objects each with a name (containers, volumes, env): compared by name.
fn named(list: &[Value]) -> bool {
    !list.is_empty()
        && list
            .iter()
            .all(|v| v.get("name").is_some_and(Value::is_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(template: Value) -> PinnedSource {
        PinnedSource {
            digest: "d".into(),
            template,
            min_ready_seconds: None,
        }
    }

    #[test]
    fn a_sidecar_and_a_label_are_named_as_what_changed() {
        let before = pin(serde_json::json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "web:template"}]}
        }));
        let after = pin(serde_json::json!({
            "metadata": {"labels": {"app": "web", "evil": "yes"}},
            "spec": {"containers": [
                {"name": "web", "image": "web:template"},
                {"name": "miner", "image": "registry.example.com/evil/miner:latest"}
            ]}
        }));
        assert_eq!(
            differences(&before, &after),
            [
                "template.metadata.labels.evil",
                "template.spec.containers[miner]"
            ]
        );
    }

    #[test]
    fn only_the_named_templates_are_kept() {
        let current = pin_of(&Deployment::default());
        let mut status = StageStatus {
            template: Some(current.digest.clone()),
            ..Default::default()
        };
        let before = StageStatus {
            templates: vec![PinnedTemplate {
                digest: "sha256:old".into(),
                template: serde_json::json!({}),
            }],
            ..Default::default()
        };
        keep(&mut status, &before, &current);
        let kept: Vec<&str> = status.templates.iter().map(|t| t.digest.as_str()).collect();
        assert_eq!(kept, [current.digest.as_str()]);
    }
}
