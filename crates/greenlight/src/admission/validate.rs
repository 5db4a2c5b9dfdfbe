//! The validating webhook: refuses Releases, Stages, Gates and Approvals that the controller
//! would reject, before they are stored, with every message naming its field. The controller
//! validates the same rules itself, so nothing depends on the webhook being on.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;
use serde_json::Value;

use crate::api::gate::GateType;
use crate::api::stage::TriggerType;
use crate::api::{ApprovalSpec, CommandAction, ReleaseSpec, Stage, StageCommandSpec};
use crate::pipeline::find_cycle_ignoring_missing;
use crate::validation::{FieldError, MANUAL_NEEDS_APPROVAL_GATE, compile_stage, validate_release};

/// A Release: valid, and its spec unchanged since creation.
pub fn release(old: Option<&Value>, new: &Value) -> Vec<FieldError> {
    if let Some(old) = old {
        return immutable(
            old,
            new,
            "a Release is immutable once created; publish a new Release instead",
        );
    }
    match serde_json::from_value::<ReleaseSpec>(new.clone()) {
        Ok(spec) => validate_release(&spec)
            .err()
            .map(|e| e.0)
            .unwrap_or_default(),
        Err(e) => vec![FieldError::new("spec", e.to_string())],
    }
}

/// An Approval: its spec unchanged since creation.
pub fn approval(old: Option<&Value>, new: &Value) -> Vec<FieldError> {
    match old {
        Some(old) => immutable(
            old,
            new,
            "an Approval is immutable once created; delete it and create a new one",
        ),
        None => match serde_json::from_value::<ApprovalSpec>(new.clone()) {
            Ok(_) => vec![],
            Err(e) => vec![FieldError::new("spec", e.to_string())],
        },
    }
}

/// A StageCommand: immutable; a retry names its release and nothing else does; its Stage
/// exists (`stage_exists`).
pub fn command(old: Option<&Value>, new: &Value, stage_exists: bool) -> Vec<FieldError> {
    if let Some(old) = old {
        return immutable(
            old,
            new,
            "a StageCommand is immutable once created; create a new one",
        );
    }
    let spec = match serde_json::from_value::<StageCommandSpec>(new.clone()) {
        Ok(spec) => spec,
        Err(e) => return vec![FieldError::new("spec", e.to_string())],
    };
    let mut errors = vec![];
    match (spec.action, &spec.release) {
        (CommandAction::Retry, None) => errors.push(FieldError::new(
            "spec.release",
            "a retry names the release to roll out again",
        )),
        (CommandAction::Promote | CommandAction::Abort, Some(_)) => errors.push(FieldError::new(
            "spec.release",
            format!(
                "only a retry names a release; {} acts on the rollout in progress",
                spec.action.as_str()
            ),
        )),
        _ => {}
    }
    if !stage_exists {
        errors.push(FieldError::new(
            "spec.stage",
            format!("Stage '{}' not found in this namespace", spec.stage),
        ));
    }
    errors
}

/// Every top-level spec field whose value changed, each with `why`.
fn immutable(old: &Value, new: &Value, why: &str) -> Vec<FieldError> {
    super::mutate::changed_fields(Some(old), new)
        .into_iter()
        .map(|f| FieldError::new(format!("spec.{f}"), why))
        .collect()
}

/// A Stage: its spec compiles, its `requires` keep the pipeline acyclic, and a manual stage
/// has an approval gate. `siblings` are the other stages of the namespace; `gate_type` looks a
/// Gate up by name (a Gate not created yet is not an error: Git applies in any order).
pub fn stage(
    stage: &Stage,
    siblings: &[Arc<Stage>],
    gate_type: impl Fn(&str) -> Option<GateType>,
) -> Vec<FieldError> {
    let name = stage.name_any();
    let mut errors = compile_stage(&name, &stage.spec)
        .err()
        .map(|e| e.0)
        .unwrap_or_default();
    let graph: BTreeMap<String, Vec<String>> = siblings
        .iter()
        .filter(|s| s.spec.pipeline == stage.spec.pipeline && s.name_any() != name)
        .map(|s| (s.name_any(), s.spec.requires.clone()))
        .chain(std::iter::once((name.clone(), stage.spec.requires.clone())))
        .collect();
    if stage.spec.requires.contains(&name) {
        errors.push(FieldError::new(
            "spec.requires",
            format!("stage '{name}' cannot require itself"),
        ));
    } else if let Some(cycle) = find_cycle_ignoring_missing(&stage.spec.pipeline, &graph) {
        let message = cycle.to_string();
        errors.push(FieldError::new(
            "spec.requires",
            message.trim_start_matches("spec.requires: "),
        ));
    }
    let manual = stage.spec.trigger.trigger_type == TriggerType::Manual;
    for (field, gates) in crate::validation::checks::gate_lists(&stage.spec) {
        let known: Vec<Option<GateType>> = gates.iter().map(|g| gate_type(g)).collect();
        if manual
            && !gates.is_empty()
            && known.iter().all(Option::is_some)
            && !known.contains(&Some(GateType::Approval))
        {
            errors.push(FieldError::new(field, MANUAL_NEEDS_APPROVAL_GATE));
        }
    }
    errors.extend(crate::validation::checks::misplaced_gates(
        &stage.spec,
        &gate_type,
    ));
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stage_named(name: &str, requires: &[&str], extra: Value) -> Stage {
        let mut spec = json!({
            "pipeline": "web", "requires": requires, "target": {"name": format!("{name}-app")}
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        Stage::new(name, serde_json::from_value(spec).unwrap())
    }

    #[test]
    fn an_edit_of_a_release_spec_names_each_changed_field() {
        let old = json!({"pipeline": "web", "version": "1", "artifacts": []});
        let new = json!({"pipeline": "web", "version": "2", "artifacts": [], "notes": "x"});
        let errors = release(Some(&old), &new);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.notes", "spec.version"]);
        assert!(errors[0].message.contains("immutable"));
        assert!(release(Some(&old), &old).is_empty());
    }

    #[test]
    fn a_retry_needs_its_release_and_a_command_needs_its_stage() {
        let retry = json!({"stage": "prod", "action": "retry"});
        let errors = command(None, &retry, true);
        assert_eq!(errors[0].field, "spec.release");
        let promote = json!({"stage": "prod", "action": "promote", "release": "web-1"});
        assert_eq!(command(None, &promote, true)[0].field, "spec.release");
        let abort = json!({"stage": "gone", "action": "abort"});
        let errors = command(None, &abort, false);
        assert_eq!(errors[0].field, "spec.stage");
        assert!(errors[0].message.contains("'gone' not found"));
        let changed = json!({"stage": "prod", "action": "promote"});
        assert_eq!(command(Some(&abort), &changed, true).len(), 2);
    }

    #[test]
    fn an_approval_cannot_change_its_decision() {
        let old = json!({"release": "r", "stage": "prod", "decision": "approve"});
        let new = json!({"release": "r", "stage": "prod", "decision": "reject"});
        let errors = approval(Some(&old), &new);
        assert_eq!(errors[0].field, "spec.decision");
    }

    #[test]
    fn a_stage_closing_a_cycle_is_refused_but_a_missing_upstream_is_not() {
        let test = Arc::new(stage_named("test", &["prod"], json!({})));
        let prod = stage_named("prod", &["test"], json!({}));
        let errors = stage(&prod, &[test], |_| None);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "spec.requires");
        assert!(errors[0].message.contains("cycle"), "{}", errors[0].message);
        let lonely = stage_named("prod", &["not-yet-applied"], json!({}));
        assert!(stage(&lonely, &[], |_| None).is_empty());
        let selfish = stage_named("prod", &["prod"], json!({}));
        assert_eq!(stage(&selfish, &[], |_| None)[0].field, "spec.requires");
    }

    #[test]
    fn a_manual_stage_needs_an_approval_gate() {
        let no_gates = stage_named("prod", &[], json!({"trigger": {"type": "manual"}}));
        let errors = stage(&no_gates, &[], |_| None);
        assert_eq!(errors[0].field, "spec.trigger.type");
        let soak_only = stage_named(
            "prod",
            &[],
            json!({"trigger": {"type": "manual"}, "gates": ["soak"]}),
        );
        let errors = stage(&soak_only, &[], |_| Some(GateType::Soak));
        assert_eq!(errors[0].field, "spec.trigger.type");
        assert!(stage(&soak_only, &[], |_| Some(GateType::Approval)).is_empty());
        assert!(
            stage(&soak_only, &[], |_| None).is_empty(),
            "unknown gates are not judged"
        );
    }

    #[test]
    fn bad_cron_and_time_zone_are_refused_with_their_fields() {
        let bad = stage_named(
            "prod",
            &[],
            json!({"trigger": {"type": "schedule", "schedule": "61 * * * *", "timeZone": "Mars/Olympus"}}),
        );
        let fields: Vec<String> = stage(&bad, &[], |_| None)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert!(
            fields.contains(&"spec.trigger.schedule".to_string()),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"spec.trigger.timeZone".to_string()),
            "{fields:?}"
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Any JSON at all, nested a few levels deep, with keys that sometimes are real fields.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            "[ -~]{0,16}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        "[a-z]{1,8}",
                        Just("release".to_string()),
                        Just("stage".to_string()),
                        Just("decision".to_string()),
                        Just("pipeline".to_string()),
                        Just("version".to_string()),
                        Just("artifacts".to_string()),
                        Just("approver".to_string()),
                        Just("createdBy".to_string()),
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Random and malformed Release and Approval specs, new or edited, never panic the
        /// webhook, and every refusal names a `spec` field and says what is wrong.
        #[test]
        fn admission_of_any_release_or_approval_never_panics_and_names_the_field(
            old in proptest::option::of(any_json()), new in any_json(),
        ) {
            for errors in [release(old.as_ref(), &new), approval(old.as_ref(), &new)] {
                for e in errors {
                    prop_assert!(e.field.starts_with("spec"), "{}", e);
                    prop_assert!(!e.message.is_empty(), "{}", e);
                }
            }
            if let Some(old) = &old {
                let refused = !release(Some(old), &new).is_empty();
                // A spec that is not an object counts as empty.
                let fields = |v: &Value| v.as_object().cloned().unwrap_or_default();
                prop_assert_eq!(refused, fields(old) != fields(&new), "{} -> {}", old, new);
            }
        }

        /// Whatever bytes reach the server, reading them never panics: what is not an
        /// AdmissionReview is answered as malformed, whatever its request holds.
        #[test]
        fn reading_any_body_never_panics(
            body in prop::collection::vec(any::<u8>(), 0..512), request in any_json(),
        ) {
            let _ = super::super::parse(&body);
            let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                "request": request});
            let _ = super::super::parse(review.to_string().as_bytes());
        }

        /// Whatever the client sends, the mutating webhook never panics, and any Approval it
        /// stamps carries the requester's name.
        #[test]
        fn stamping_any_object_never_panics(spec in any_json(), kind in prop_oneof![
            Just("Approval"), Just("Release"), Just("Stage"), Just("Gate"), Just("StageCommand")
        ], annotations in prop::collection::btree_map(
            prop_oneof![
                Just(crate::api::change::CHANGED_BY_ANNOTATION.to_string()),
                "[a-z./]{1,12}",
            ],
            "[ -~]{0,12}",
            0..3,
        )) {
            let review = json!({
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {
                    "uid": "u", "namespace": "n", "operation": "CREATE",
                    "kind": {"group": "greenlight.dev", "version": "v1alpha1", "kind": kind},
                    "resource": {"group": "greenlight.dev", "version": "v1alpha1", "resource": "x"},
                    "userInfo": {"username": "alice"},
                    "object": {"apiVersion": "greenlight.dev/v1alpha1", "kind": kind,
                               "metadata": {"name": "x", "annotations": annotations}, "spec": spec},
                }
            });
            let review: kube::core::admission::AdmissionReview<kube::core::DynamicObject> =
                serde_json::from_value(review).unwrap();
            let request: kube::core::admission::AdmissionRequest<_> = review.try_into().unwrap();
            let key = crate::identity::IdentityKey::from_bytes(&[7; 32]);
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let stamped = runtime.block_on(async {
                let state = super::super::test_state(Default::default(), key);
                super::super::mutate::stamp(&request, &state).await
            });
            if let Some(patch) = stamped {
                let mut object = serde_json::to_value(request.object.as_ref().unwrap()).unwrap();
                prop_assert!(json_patch::patch(&mut object, &patch).is_ok());
                if kind == "Approval" {
                    prop_assert_eq!(&object["spec"]["approver"]["username"], "alice");
                }
            }
        }
    }
}
