//! Drift of the canary's weight: someone else changed it on the route while the rollout held
//! it (a person, or a GitOps tool reverting the route to what Git says). It is put back at
//! once with a `TrafficDrift` Event naming who changed it. A route that keeps being changed
//! (again after [`CORRECTIONS`] corrections within [`WINDOW`]) is reported instead of fought
//! over: the stage stops writing the weight and says who else writes it, until the window
//! passes. `driftCorrections` counts the weights put back, never the passes that saw drift.

use std::time::Duration;

use super::draft::Draft;
use super::events::Transition;
use crate::api::canary::{CanaryPhase, CanaryProgress};
use crate::api::conditions::Health;
use crate::api::stage::ActiveRollout;
use crate::schedule::later;

/// Corrections within [`WINDOW`] before the stage stops putting the weight back.
pub const CORRECTIONS: i32 = 3;
pub const WINDOW: Duration = Duration::from_secs(300);

impl Draft<'_> {
    /// Puts back a weight someone else changed while the rollout held it, or reports a route
    /// that keeps being changed.
    pub(super) fn correct_drift(&mut self, rollout: &ActiveRollout, progress: &mut CanaryProgress) {
        let held = matches!(progress.phase, CanaryPhase::Stepping | CanaryPhase::Paused);
        let before = self
            .input
            .status
            .rollout
            .as_ref()
            .and_then(|r| r.canary.as_ref())
            .map(|c| c.weight);
        let Some(view) = self.input.canary.filter(|c| c.router_problem.is_none()) else {
            return;
        };
        let (Some(found), w) = (view.weight_in_effect, progress.weight) else {
            return;
        };
        // Greenlight's own last write (0 while the canary was down, say) is no drift.
        let Some(who) = view.changed_by.clone() else {
            return;
        };
        if !held || found == w || before != Some(w) || self.weight != Some(w) {
            return;
        }
        let now = self.input.now;
        if progress.drift_since.is_none_or(|t| now >= later(t, WINDOW)) {
            progress.drift_since = Some(now);
            progress.drift_corrections = 0;
        }
        // Counted only when the weight is put back: a contested route is left alone, so the
        // count (and the status that holds it) stays still until the window passes. Blue-green's
        // `-active` Service is Greenlight's own, in no one's Git: it is never left to another.
        let owned = rollout
            .routing
            .as_ref()
            .is_some_and(|r| r.service_switch.is_some());
        if progress.drift_corrections >= CORRECTIONS && !owned {
            self.weight = None;
            let since = progress.drift_since.unwrap_or(now);
            self.wake_at.push(later(since, WINDOW));
            let message = format!(
                "the route's canary weight keeps being changed by {who} ({} times since {since}); Greenlight stopped putting {w}% back until {}. Make {who} leave the backendRefs weights alone (e.g. Argo CD ignoreDifferences)",
                progress.drift_corrections,
                later(since, WINDOW)
            );
            self.health = (Health::Stalled, "TrafficContested", message);
            return;
        }
        progress.drift_corrections += 1;
        let what = match owned {
            true => "the active Service's selector sent",
            false => "the route's canary weight was",
        };
        let note = format!(
            "{}: {what} {found}%, not {w}%, changed by {who}; put back",
            rollout.version
        );
        self.event(
            Transition::TrafficDrift,
            note,
            Some(&rollout.release.clone()),
        );
    }
}
