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
            .input
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
