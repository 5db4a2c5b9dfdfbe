//! A release's overall phase, one-line summary and conditions, derived from its progress at
//! each stage of its pipeline.

use crate::api::conditions::{Condition, Health, kstatus};
use crate::api::release::{
    ReleasePhase, ReleaseStageStatus, ReleaseStatus, StagePhaseForRelease as RP,
};

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
    let entries: Vec<(&String, &ReleaseStageStatus)> = stage_order
        .iter()
        .filter_map(|s| status.stages.get(s).map(|e| (s, e)))
        .collect();
    let (phase, health, reason, message) = overall(&entries, stage_order.len());
    ReleaseSummary {
        phase,
        summary,
        conditions: kstatus(health, reason, &message),
        message,
    }
}

type Overall = (ReleasePhase, Health, &'static str, String);

/// The release's phase from its entries at the pipeline's stages, first match wins: failed
/// somewhere, blocked by a refused write, succeeded everywhere, moving, superseded, pending.
fn overall(entries: &[(&String, &ReleaseStageStatus)], stages: usize) -> Overall {
    let find = |phase: RP| entries.iter().find(|(_, e)| e.phase == phase);
    let why = |e: &ReleaseStageStatus| e.message.clone().unwrap_or_default();
    if let Some((stage, e)) = find(RP::Failed) {
        let reason = e.reason.clone().unwrap_or_default();
        let message = format!("failed at stage '{stage}' ({reason}): {}", why(e));
        return (
            ReleasePhase::Failed,
            Health::Stalled,
            "FailedAtStage",
            message,
        );
    }
    if let Some((stage, e)) = find(RP::Blocked) {
        let message = format!("blocked at stage '{stage}': {}", why(e));
        return (
            ReleasePhase::Progressing,
            Health::Stalled,
            "BlockedAtStage",
            message,
        );
    }
    let all_succeeded =
        !entries.is_empty() && entries.iter().all(|(_, e)| e.phase == RP::Succeeded);
    if all_succeeded && entries.len() == stages {
        let message = "rolled out at every stage".to_string();
        return (ReleasePhase::Succeeded, Health::Ready, "Succeeded", message);
    }
    let moving = entries
        .iter()
        .any(|(_, e)| matches!(e.phase, RP::Progressing | RP::Waiting));
    if moving || all_succeeded {
        return progressing(entries);
    }
    if let Some((stage, e)) = find(RP::Superseded) {
        let message = format!("not promoted past '{stage}': {}", why(e));
        return (
            ReleasePhase::Superseded,
            Health::Ready,
            "Superseded",
            message,
        );
    }
    let (reason, message) = match stages {
        0 => ("NoStages", "the pipeline has no stages yet"),
        _ => ("Pending", "waiting for the first stage"),
    };
    (
        ReleasePhase::Pending,
        Health::Progressing,
        reason,
        message.to_string(),
    )
}

fn progressing(entries: &[(&String, &ReleaseStageStatus)]) -> Overall {
    let mut at: Vec<String> = entries
        .iter()
        .filter(|(_, e)| matches!(e.phase, RP::Progressing | RP::Waiting))
        .map(|(s, e)| {
            let what = e
                .message
                .clone()
                .unwrap_or_else(|| format!("{:?}", e.phase));
            format!("{s}: {what}")
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
                    policy: None,
                    phase: *phase,
                    reason: Some("R".into()),
                    message: Some("m".into()),
                    started_at: None,
                    finished_at: None,
                    gates: vec![],
                    attempt: None,
                    checks: vec![],
                    comparisons: vec![],
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
