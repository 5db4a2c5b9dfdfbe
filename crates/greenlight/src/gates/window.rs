//! Window gate: passes while inside a recurring time window.

use futures::future::BoxFuture;

use super::{GateCheck, GateContext, GateOutcome};
use crate::api::gate::WindowGate;
use crate::api::release::GateVerdict;
use crate::schedule::{Schedule, WindowSpec, parse_window_length, time_zone};
use crate::validation::FieldError;

pub struct WindowCheck {
    window: WindowSpec,
}

impl WindowCheck {
    pub fn compile(spec: &WindowGate) -> Result<Box<dyn GateCheck>, Vec<FieldError>> {
        let mut errors = Vec::new();
        let schedule = Schedule::parse(&spec.schedule)
            .map_err(|e| errors.push(FieldError::new("spec.window.schedule", e.to_string())))
            .ok();
        let duration = parse_window_length(&spec.duration)
            .map_err(|e| errors.push(FieldError::new("spec.window.duration", e)))
            .ok();
        let tz = time_zone(spec.time_zone.as_deref())
            .map_err(|e| errors.push(FieldError::new("spec.window.timeZone", e.to_string())))
            .ok();
        match (schedule, duration, tz) {
            (Some(schedule), Some(duration), Some(tz)) => Ok(Box::new(Self {
                window: WindowSpec {
                    allow: true,
                    schedule,
                    duration,
                    tz,
                    reason: spec.schedule.clone(),
                },
            })),
            _ => Err(errors),
        }
    }
}

impl GateCheck for WindowCheck {
    fn evaluate<'a>(&'a self, ctx: &'a GateContext) -> BoxFuture<'a, GateOutcome> {
        let outcome = match self.window.open_until(ctx.now) {
            Some(end) => GateOutcome::new(
                GateVerdict::Passed,
                format!("inside the window until {end}"),
            ),
            None => match self.window.next_opening(ctx.now) {
                Some(next) => GateOutcome::new(
                    GateVerdict::Pending,
                    format!("outside the window; it opens at {next}"),
                )
                .recheck_at(next),
                None => GateOutcome::new(
                    GateVerdict::Pending,
                    "outside the window; it never opens again",
                ),
            },
        };
        Box::pin(std::future::ready(outcome))
    }
}

/// The `window` kind, as registered in [`super::KINDS`].
pub struct Kind;

impl super::GateKind for Kind {
    fn gate_type(&self) -> crate::api::GateType {
        crate::api::GateType::Window
    }
    fn configured(&self, spec: &crate::api::GateSpec) -> bool {
        spec.window.is_some()
    }
    fn compile(
        &self,
        spec: &crate::api::GateSpec,
        _env: &super::GateEnv,
    ) -> Result<(Box<dyn GateCheck>, super::Needs), Vec<FieldError>> {
        let check = WindowCheck::compile(super::settings(spec.window.as_ref(), self.gate_type())?)?;
        Ok((check, super::Needs::default()))
    }
}
