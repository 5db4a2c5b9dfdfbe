//! A release's overall phase, one-line summary and conditions, derived from its progress at
//! each stage of its pipeline.

use crate::api::conditions::{Condition, Health, kstatus};
use crate::api::release::{ReleasePhase, ReleaseStatus, StagePhaseForRelease as RP};

pub struct ReleaseSummary {
    pub phase: ReleasePhase,
    pub summary: String,
    pub message: String,
    pub conditions: Vec<Condition>,
}

/// `stage_order` lists the pipeline's stages upstream first; `invalid` carries spec errors.
pub fn summarize(
    status: &ReleaseStatus,
    stage_order: &[String],
    invalid: Option<&str>,
) -> ReleaseSummary {
    if let Some(errors) = invalid {
        return ReleaseSummary {
            phase: ReleasePhase::Invalid,
            summary: String::new(),
            message: errors.to_string(),
            conditions: kstatus(Health::Stalled, "InvalidSpec", errors),
        };
    }
    let summary = stage_order
        .iter()
        .map(|s| match status.stages.get(s) {
            Some(e) => format!("{s}={:?}", e.phase),
            None => format!("{s}=-"),
        })
        .collect::<Vec<_>>()
        .join(" ");
    let entries: Vec<(&String, _)> = stage_order
        .iter()
        .filter_map(|s| status.stages.get(s).map(|e| (s, e)))
        .collect();
    let failed = entries.iter().find(|(_, e)| e.phase == RP::Failed);
    let all_succeeded = !stage_order.is_empty()
        && entries.len() == stage_order.len()
        && entries.iter().all(|(_, e)| e.phase == RP::Succeeded);
    let moving = entries
        .iter()
        .any(|(_, e)| matches!(e.phase, RP::Progressing | RP::Waiting))
        || (entries.iter().all(|(_, e)| e.phase == RP::Succeeded) && !entries.is_empty());
    let superseded = entries.iter().find(|(_, e)| e.phase == RP::Superseded);
    let (phase, health, reason, message) = if let Some((stage, e)) = failed {
        let why = e.message.clone().unwrap_or_default();
        let reason = e.reason.clone().unwrap_or_default();
        (
            ReleasePhase::Failed,
            Health::Stalled,
            "FailedAtStage",
            format!("failed at stage '{stage}' ({reason}): {why}"),
        )
    } else if all_succeeded {
        (
            ReleasePhase::Succeeded,
            Health::Ready,
            "Succeeded",
            "rolled out at every stage".to_string(),
        )
    } else if moving {
        let mut at: Vec<String> = entries
            .iter()
            .filter(|(_, e)| matches!(e.phase, RP::Progressing | RP::Waiting))
            .map(|(s, e)| {
                format!(
                    "{s}: {}",
                    e.message
                        .clone()
                        .unwrap_or_else(|| format!("{:?}", e.phase))
                )
            })
            .collect();
        if at.is_empty() {
            let done: Vec<&str> = entries.iter().map(|(s, _)| s.as_str()).collect();
            at.push(format!("succeeded in {}", done.join(", ")));
        }
        let phase = if entries.iter().any(|(_, e)| e.phase != RP::Waiting) {
            ReleasePhase::Progressing
        } else {
            ReleasePhase::Pending
        };
        (phase, Health::Progressing, "Progressing", at.join("; "))
    } else if let Some((stage, e)) = superseded {
        let why = e.message.clone().unwrap_or_default();
        (
            ReleasePhase::Superseded,
            Health::Ready,
            "Superseded",
            format!("not promoted past '{stage}': {why}"),
        )
    } else if stage_order.is_empty() {
        (
            ReleasePhase::Pending,
            Health::Progressing,
            "NoStages",
            "the pipeline has no stages yet".to_string(),
        )
    } else {
        (
            ReleasePhase::Pending,
            Health::Progressing,
            "Pending",
            "waiting for the first stage".to_string(),
        )
    };
    ReleaseSummary {
        phase,
        summary,
        conditions: kstatus(health, reason, &message),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::release::ReleaseStageStatus;

    fn status(entries: &[(&str, RP)]) -> ReleaseStatus {
        let mut s = ReleaseStatus::default();
        for (stage, phase) in entries {
            s.stages.insert(
                stage.to_string(),
                ReleaseStageStatus {
                    phase: *phase,
                    reason: Some("R".into()),
                    message: Some("m".into()),
                    started_at: None,
                    finished_at: None,
                    gates: vec![],
                },
            );
        }
        s
    }

    fn order() -> Vec<String> {
        vec!["dev".into(), "test".into(), "prod".into()]
    }

    #[test]
    fn a_release_succeeds_only_when_every_stage_succeeded() {
        let s = status(&[("dev", RP::Succeeded), ("test", RP::Succeeded)]);
        assert_eq!(
            summarize(&s, &order(), None).phase,
            ReleasePhase::Progressing
        );
        let s = status(&[
            ("dev", RP::Succeeded),
            ("test", RP::Succeeded),
            ("prod", RP::Succeeded),
        ]);
        let sum = summarize(&s, &order(), None);
        assert_eq!(sum.phase, ReleasePhase::Succeeded);
        assert_eq!(sum.summary, "dev=Succeeded test=Succeeded prod=Succeeded");
    }

    #[test]
    fn a_failure_anywhere_names_the_stage() {
        let s = status(&[
            ("dev", RP::Succeeded),
            ("test", RP::Failed),
            ("prod", RP::Superseded),
        ]);
        let sum = summarize(&s, &order(), None);
        assert_eq!(sum.phase, ReleasePhase::Failed);
        assert!(sum.message.contains("'test'"), "{}", sum.message);
    }

    #[test]
    fn invalid_spec_is_stalled() {
        let sum = summarize(
            &ReleaseStatus::default(),
            &order(),
            Some("spec.artifacts[0].image: bad"),
        );
        assert_eq!(sum.phase, ReleasePhase::Invalid);
        assert!(
            sum.conditions
                .iter()
                .any(|c| c.type_ == "Stalled" && c.is_true())
        );
    }
}
