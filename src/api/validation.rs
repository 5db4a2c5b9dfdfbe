//! The controller's own validation, for when no admission webhook runs: each spec is turned
//! into a compiled plan or into errors that name the field and say what is wrong.

use std::fmt;
use std::time::Duration;

use regex::Regex;

use super::release::{DIGEST_PATTERN, NAME_PATTERN, ReleaseSpec};
use super::stage::{StageSpec, TriggerType, WindowKind};
use crate::schedule::{Schedule, WindowSpec, parse_duration, time_zone};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// All field errors of one object, shown as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct ValidationErrors(pub Vec<FieldError>);

pub fn validate_release(spec: &ReleaseSpec) -> Result<(), ValidationErrors> {
    let digest = Regex::new(DIGEST_PATTERN).expect("constant pattern");
    let name = Regex::new(NAME_PATTERN).expect("constant pattern");
    let mut errors = Vec::new();
    if !name.is_match(&spec.pipeline) {
        errors.push(FieldError::new(
            "spec.pipeline",
            format!("'{}' is not a DNS label", spec.pipeline),
        ));
    }
    if spec.version.trim().is_empty() {
        errors.push(FieldError::new("spec.version", "must not be empty"));
    }
    if spec.artifacts.is_empty() {
        errors.push(FieldError::new(
            "spec.artifacts",
            "at least one artifact is required",
        ));
    }
    for (i, a) in spec.artifacts.iter().enumerate() {
        if !digest.is_match(&a.image) {
            errors.push(FieldError::new(
                format!("spec.artifacts[{i}].image"),
                format!(
                    "'{}' is not pinned by digest; use <repository>@sha256:<64 hex digits>",
                    a.image
                ),
            ));
        }
        if spec.artifacts[..i].iter().any(|b| b.name == a.name) {
            errors.push(FieldError::new(
                format!("spec.artifacts[{i}].name"),
                format!("container '{}' is listed twice", a.name),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}

/// A Stage spec with every string parsed.
#[derive(Debug, Clone)]
pub struct StagePlan {
    pub requires: Vec<String>,
    pub trigger: CompiledTrigger,
    pub windows: Vec<WindowSpec>,
    pub gates: Vec<String>,
    pub progress_deadline: Duration,
    pub replicas: i32,
    pub history_limit: usize,
}

#[derive(Debug, Clone)]
pub enum CompiledTrigger {
    Auto,
    Schedule {
        schedule: Schedule,
        tz: jiff::tz::TimeZone,
    },
}

pub fn compile_stage(name: &str, spec: &StageSpec) -> Result<StagePlan, ValidationErrors> {
    let mut errors = Vec::new();
    let trigger = match spec.trigger.trigger_type {
        TriggerType::Auto => Some(CompiledTrigger::Auto),
        TriggerType::Schedule => {
            let tz = time_zone(spec.trigger.time_zone.as_deref())
                .map_err(|e| errors.push(FieldError::new("spec.trigger.timeZone", e.to_string())))
                .ok();
            let schedule = match spec.trigger.schedule.as_deref() {
                None => {
                    errors.push(FieldError::new(
                        "spec.trigger.schedule",
                        "required when spec.trigger.type is 'schedule'",
                    ));
                    None
                }
                Some(expr) => Schedule::parse(expr)
                    .map_err(|e| {
                        errors.push(FieldError::new("spec.trigger.schedule", e.to_string()))
                    })
                    .ok(),
            };
            schedule
                .zip(tz)
                .map(|(schedule, tz)| CompiledTrigger::Schedule { schedule, tz })
        }
    };
    let mut windows = Vec::new();
    for (i, w) in spec.windows.iter().enumerate() {
        let field = |f: &str| format!("spec.windows[{i}].{f}");
        let schedule = Schedule::parse(&w.schedule)
            .map_err(|e| errors.push(FieldError::new(field("schedule"), e.to_string())))
            .ok();
        let duration = parse_duration(&w.duration)
            .map_err(|e| errors.push(FieldError::new(field("duration"), e.to_string())))
            .ok();
        let tz = time_zone(w.time_zone.as_deref())
            .map_err(|e| errors.push(FieldError::new(field("timeZone"), e.to_string())))
            .ok();
        if let (Some(schedule), Some(duration), Some(tz)) = (schedule, duration, tz) {
            windows.push(WindowSpec {
                allow: w.kind == WindowKind::Allow,
                schedule,
                duration,
                tz,
                reason: w.reason.clone().unwrap_or_else(|| w.schedule.clone()),
            });
        }
    }
    let progress_deadline = match parse_duration(&spec.progress_deadline) {
        Ok(d) if d >= Duration::from_secs(1) => Some(d),
        Ok(_) => {
            errors.push(FieldError::new(
                "spec.progressDeadline",
                "must be at least 1s",
            ));
            None
        }
        Err(e) => {
            errors.push(FieldError::new("spec.progressDeadline", e.to_string()));
            None
        }
    };
    if spec.requires.iter().any(|r| r == name) {
        errors.push(FieldError::new(
            "spec.requires",
            format!("stage '{name}' cannot require itself"),
        ));
    }
    if spec.replicas < 0 {
        errors.push(FieldError::new("spec.replicas", "must not be negative"));
    }
    for (i, g) in spec.gates.iter().enumerate() {
        if spec.gates[..i].contains(g) {
            errors.push(FieldError::new(
                format!("spec.gates[{i}]"),
                format!("gate '{g}' is listed twice"),
            ));
        }
    }
    match (trigger, progress_deadline) {
        (Some(trigger), Some(progress_deadline)) if errors.is_empty() => Ok(StagePlan {
            requires: spec.requires.clone(),
            trigger,
            windows,
            gates: spec.gates.clone(),
            progress_deadline,
            replicas: spec.replicas,
            history_limit: spec.history_limit.clamp(1, 100) as usize,
        }),
        _ => Err(ValidationErrors(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::release::{Artifact, ReleaseType};
    use crate::api::stage::{Strategy, TargetRef, Trigger, Window};

    fn release(image: &str) -> ReleaseSpec {
        ReleaseSpec {
            pipeline: "shop".into(),
            version: "1.0.0".into(),
            artifacts: vec![Artifact {
                name: "web".into(),
                image: image.into(),
            }],
            release_type: ReleaseType::Feature,
            source: None,
            notes: None,
        }
    }

    fn stage() -> StageSpec {
        StageSpec {
            pipeline: "shop".into(),
            requires: vec![],
            target: TargetRef { name: "web".into() },
            replicas: 1,
            trigger: Trigger::default(),
            gates: vec![],
            windows: vec![],
            strategy: Strategy::default(),
            progress_deadline: "10m".into(),
            history_limit: 10,
        }
    }

    #[test]
    fn a_release_without_a_digest_is_rejected_naming_the_field() {
        let err = validate_release(&release("registry.example/web:1.0"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.artifacts[0].image") && err.contains("digest"),
            "{err}"
        );
        let digest = format!("registry.example/web@sha256:{}", "a".repeat(64));
        assert!(validate_release(&release(&digest)).is_ok());
    }

    #[test]
    fn an_unparsable_cron_names_the_field() {
        let mut s = stage();
        s.trigger = Trigger {
            trigger_type: TriggerType::Schedule,
            schedule: Some("0 25 * * *".into()),
            time_zone: None,
        };
        s.windows.push(Window {
            kind: WindowKind::Deny,
            schedule: "bad".into(),
            duration: "1h".into(),
            time_zone: Some("Mars/Olympus".into()),
            reason: None,
        });
        let err = compile_stage("prod", &s).unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.trigger.schedule",
                "spec.windows[0].schedule",
                "spec.windows[0].timeZone"
            ]
        );
    }

    #[test]
    fn a_schedule_trigger_needs_a_schedule() {
        let mut s = stage();
        s.trigger.trigger_type = TriggerType::Schedule;
        let err = compile_stage("prod", &s).unwrap_err().to_string();
        assert!(err.contains("spec.trigger.schedule: required"), "{err}");
    }
}
