//! Draining the canary: once traffic has left it (promotion, rollback), its pods stay for the
//! canary's `scaleDownDelay`, because data planes apply route changes with a delay and would
//! otherwise send the last requests to pods that are gone. The deadline is kept in the
//! Stage's status (`canaryDrainUntil`), so a restart honours it, and it outlives the rollout:
//! a finished rollout does not wait for its canary to drain.

use super::draft::Draft;
use super::types::DesiredPrimary;
use crate::schedule::later;

impl Draft<'_> {
    /// Traffic has left the canary: scale it to zero once the delay has passed.
    pub(super) fn drain_canary(&mut self) {
        let now = self.input.now;
        let delay = self
            .plan
            .canary
            .as_ref()
            .map_or(std::time::Duration::ZERO, |c| c.scale_down_delay);
        let has_pods = self.input.canary.is_some_and(|c| c.replicas > 0);
        if !has_pods || delay.is_zero() {
            self.canary = Some(DesiredPrimary::Empty);
            return;
        }
        let until = *self
            .status
            .canary_drain_until
            .get_or_insert(later(now, delay));
        self.finish_drain(until);
    }

    /// A drain begun earlier, on every pass until the canary is empty; a new canary (another
    /// rollout) ends it.
    pub(super) fn continue_drain(&mut self) {
        let Some(until) = self.status.canary_drain_until else {
            return;
        };
        let replaced = matches!(self.canary, Some(DesiredPrimary::Release { .. }));
        let empty = self.input.canary.is_none_or(|c| c.replicas == 0);
        if replaced || (empty && self.input.now >= until) {
            self.status.canary_drain_until = None;
            return;
        }
        self.finish_drain(until);
    }

    fn finish_drain(&mut self, until: jiff::Timestamp) {
        if self.input.now >= until {
            self.canary = Some(DesiredPrimary::Empty);
        } else {
            // Left as it is until then.
            self.canary = None;
            self.wake_at.push(until);
        }
    }

    /// Whether the canary still has pods because it drains.
    pub(super) fn draining(&self) -> bool {
        self.status.canary_drain_until.is_some()
    }
}

/// What becomes of a deleted Stage's canary once its route sends it nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// Hand it to the Stage now, to go with it.
    Now,
    /// Keep its pods until then, and record that in the status, so a restart keeps to it.
    Record(jiff::Timestamp),
    /// Keep its pods until then, as recorded.
    Wait(jiff::Timestamp),
}

/// A deleted Stage keeps its canary's pods for the `scaleDownDelay` after the route went back
/// to the primary, as a promotion does: a data plane applies the route with a delay, and the
/// garbage collector would take the pods at once. `drain_until` is the deadline recorded, if
/// any; a canary without pods goes at once.
pub fn deleted_stage_handover(
    drain_until: Option<jiff::Timestamp>,
    delay: std::time::Duration,
    has_pods: bool,
    now: jiff::Timestamp,
) -> Handover {
    match drain_until {
        _ if !has_pods || delay.is_zero() => Handover::Now,
        None => Handover::Record(later(now, delay)),
        Some(until) if now >= until => Handover::Now,
        Some(until) => Handover::Wait(until),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_deleted_stages_serving_canary_keeps_its_pods_for_the_delay_then_goes() {
        let now: jiff::Timestamp = "2026-12-06T10:00:00Z".parse().unwrap();
        let delay = Duration::from_secs(30);
        let until = later(now, delay);
        assert_eq!(
            deleted_stage_handover(None, delay, true, now),
            Handover::Record(until)
        );
        assert_eq!(
            deleted_stage_handover(Some(until), delay, true, now),
            Handover::Wait(until)
        );
        assert_eq!(
            deleted_stage_handover(Some(until), delay, true, until),
            Handover::Now
        );
    }

    #[test]
    fn a_deleted_stages_canary_without_pods_or_delay_goes_at_once() {
        let now: jiff::Timestamp = "2026-12-06T10:00:00Z".parse().unwrap();
        let delay = Duration::from_secs(30);
        assert_eq!(
            deleted_stage_handover(None, delay, false, now),
            Handover::Now
        );
        assert_eq!(
            deleted_stage_handover(None, Duration::ZERO, true, now),
            Handover::Now
        );
    }
}
