//! Soak gate: the release must have been healthy in an upstream stage for a minimum time.

use std::time::Duration;

use futures::future::BoxFuture;

use super::{GateCheck, GateContext, GateOutcome};
use crate::api::gate::SoakGate;
use crate::api::release::{GateVerdict, StagePhaseForRelease};
use crate::schedule::parse_duration;
use crate::validation::FieldError;

pub struct SoakCheck {
    stage: String,
    duration: Duration,
}

impl SoakCheck {
    pub fn compile(spec: &SoakGate) -> Result<Box<dyn GateCheck>, Vec<FieldError>> {
        let duration = parse_duration(&spec.duration)
            .map_err(|e| vec![FieldError::new("spec.soak.duration", e.to_string())])?;
        Ok(Box::new(Self {
            stage: spec.stage.clone(),
            duration,
        }))
    }

    pub fn judge(&self, ctx: &GateContext) -> GateOutcome {
        let Some(at_stage) = ctx.release_stages.get(&self.stage) else {
            return GateOutcome::new(
                GateVerdict::Pending,
                format!("not yet rolled out in '{}'", self.stage),
            );
        };
        match (at_stage.phase, at_stage.finished_at) {
            (StagePhaseForRelease::Succeeded, Some(healthy_since)) => {
                let soaked = ctx.now.duration_since(healthy_since);
                let due = crate::schedule::later(healthy_since, self.duration);
                let shown = format!("{}s", soaked.as_secs().max(0));
                if ctx.now >= due {
                    GateOutcome::new(
                        GateVerdict::Passed,
                        format!("healthy in '{}' for {shown}", self.stage),
                    )
                    .with_value(shown)
                } else {
                    GateOutcome::new(
                        GateVerdict::Pending,
                        format!(
                            "healthy in '{}' for {shown} of {}s",
                            self.stage,
                            self.duration.as_secs()
                        ),
                    )
                    .with_value(shown)
                    .recheck_at(due)
                }
            }
            (StagePhaseForRelease::Failed, _) => {
                GateOutcome::new(GateVerdict::Failed, format!("failed in '{}'", self.stage))
            }
            (phase, _) => GateOutcome::new(
                GateVerdict::Pending,
                format!("{phase:?} in '{}'", self.stage),
            ),
        }
    }
}

impl GateCheck for SoakCheck {
    fn evaluate<'a>(&'a self, ctx: &'a GateContext) -> BoxFuture<'a, GateOutcome> {
        Box::pin(std::future::ready(self.judge(ctx)))
    }
}

/// The `soak` kind, as registered in [`super::KINDS`].
pub struct Kind;

impl super::GateKind for Kind {
    fn gate_type(&self) -> crate::api::GateType {
        crate::api::GateType::Soak
    }
    fn configured(&self, spec: &crate::api::GateSpec) -> bool {
        spec.soak.is_some()
    }
    fn compile(
        &self,
        spec: &crate::api::GateSpec,
        _env: &super::GateEnv,
    ) -> Result<(Box<dyn GateCheck>, super::Needs), Vec<FieldError>> {
        let check = SoakCheck::compile(super::settings(spec.soak.as_ref(), self.gate_type())?)?;
        Ok((check, super::Needs::default()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use jiff::Timestamp;

    use super::*;
    use crate::api::release::ReleaseStageStatus;

    fn ctx(phase: StagePhaseForRelease, finished: &str, now: &str) -> GateContext {
        let mut stages = BTreeMap::new();
        stages.insert(
            "test".to_string(),
            ReleaseStageStatus {
                policy: None,
                phase,
                reason: None,
                message: None,
                started_at: None,
                finished_at: Some(finished.parse().unwrap()),
                gates: vec![],
                attempt: None,
                checks: vec![],
                comparisons: vec![],
            },
        );
        GateContext {
            namespace: "ns".into(),
            pipeline: "p".into(),
            stage: "prod".into(),
            release: "r".into(),
            version: "1".into(),
            artifacts: vec![],
            release_stages: stages,
            approvals: vec![],
            release_author: Err(crate::identity::Unverified::Missing),
            release_ref: None,
            configuration: None,
            gate: "g".into(),
            list: crate::api::gate::GateList::Gates,
            attempt: 1,
            run: None,
            stage_uid: String::new(),
            measuring: false,
            service_port: 80,
            change_ticket: None,
            ticket_used_by: vec![],
            emergency: None,
            primary_workload: "web-primary".into(),
            canary_workload: "web-canary".into(),
            secrets: Default::default(),
            now: now.parse::<Timestamp>().unwrap(),
        }
    }

    #[test]
    fn soak_passes_only_after_the_duration_and_says_when_to_look_again() {
        let gate = SoakCheck {
            stage: "test".into(),
            duration: Duration::from_secs(600),
        };
        let early = gate.judge(&ctx(
            StagePhaseForRelease::Succeeded,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:05:00Z",
        ));
        assert_eq!(early.verdict, GateVerdict::Pending);
        assert_eq!(
            early.recheck_at,
            Some("2026-01-01T00:10:00Z".parse().unwrap())
        );
        let done = gate.judge(&ctx(
            StagePhaseForRelease::Succeeded,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:10:00Z",
        ));
        assert_eq!(done.verdict, GateVerdict::Passed);
    }

    #[test]
    fn a_release_that_failed_upstream_fails_its_soak() {
        let gate = SoakCheck {
            stage: "test".into(),
            duration: Duration::from_secs(1),
        };
        let out = gate.judge(&ctx(
            StagePhaseForRelease::Failed,
            "2026-01-01T00:00:00Z",
            "2026-01-02T00:00:00Z",
        ));
        assert_eq!(out.verdict, GateVerdict::Failed);
    }
}
