//! The emergency path in the machine. An `emergency` command is kept on the stage until its
//! release rolls out (or an abort cancels it); one at a time. Until then that release is the
//! stage's candidate, judged by the emergency plan of its type: the emergency's approvals
//! first, what `bypass` allows removed. Its rollout starts with one `Bypassed` event per
//! control skipped and a `BreakGlass` event that opens its review, which someone other than
//! the requester closes.

use super::draft::Draft;
use super::events::Transition;
use super::types::{Command, ReleaseView};
use crate::api::emergency::EmergencyRequest;
use crate::api::stage::ActiveRollout;
use crate::schedule::{WindowVerdict, evaluate_windows};
use crate::validation::emergency::EmergencyPlan;

impl<'a> Draft<'a> {
    /// Keeps an emergency command when the stage takes emergencies, none is pending, and its
    /// release can still roll out here; cancels a pending emergency on an abort. Anything
    /// else is refused with why, as unused commands are.
    pub(super) fn take_emergency(&mut self, newer: &[&'a ReleaseView]) {
        self.drop_stale_emergency(newer);
        match &self.input.command {
            Some(Command::Emergency(request)) => {
                let fits = self.emergency_plan_for(&request.release).is_some()
                    && self.status.emergency.is_none()
                    && newer.iter().any(|r| r.name == request.release && r.valid);
                if !fits {
                    return;
                }
                self.status.emergency = Some(request.clone());
                let version = self.version_of(&request.release);
                let note = format!(
                    "{version}: emergency asked by {}: {} ({}); it waits for the emergency's approvals",
                    request.requester, request.reason, request.reference
                );
                self.event(Transition::EmergencyRequested, note, Some(&request.release));
                self.name_last_event(request);
            }
            Some(Command::Abort) if self.status.emergency.is_some() => {
                let Some(request) = self.status.emergency.take() else {
                    return;
                };
                let note = format!("the emergency of {} was cancelled", request.release);
                self.event(Transition::EmergencyCancelled, note, Some(&request.release));
                self.name_last_event(&request);
            }
            _ => {}
        }
    }

    /// A pending emergency whose release can no longer roll out here (superseded, failed,
    /// deleted), or that the stage no longer takes, is cancelled, so it neither lingers nor
    /// stands in for a later one.
    fn drop_stale_emergency(&mut self, newer: &[&'a ReleaseView]) {
        let Some(request) = self.status.emergency.clone() else {
            return;
        };
        let open = newer.iter().any(|r| r.name == request.release && r.valid);
        if open && self.emergency_plan_for(&request.release).is_some() {
            return;
        }
        self.status.emergency = None;
        let note = format!(
            "the emergency of {} was cancelled: it can no longer roll out at this stage",
            request.release
        );
        self.event(Transition::EmergencyCancelled, note, Some(&request.release));
        self.name_last_event(&request);
    }

    /// Tells two requests for one release apart in the trail: by when each was asked.
    fn name_last_event(&mut self, request: &EmergencyRequest) {
        if let Some(event) = self.events.last_mut() {
            event.item = Some(format!("asked-{}", request.since.as_second()));
        }
    }

    /// The emergency plan a release of this name would roll out under: its type's.
    pub(super) fn emergency_plan_for(&self, release: &str) -> Option<&'a EmergencyPlan> {
        let release_type = self.release(release)?.release_type;
        self.input.plan.for_type(release_type).emergency.as_deref()
    }

    /// Who asked for the emergency `release` is judged for, and since when, if it is one.
    pub(super) fn emergency_judged(&self, release: &str) -> Option<(String, jiff::Timestamp)> {
        let request = self
            .status
            .emergency
            .as_ref()
            .filter(|e| e.release == release)?;
        Some((request.requester.clone(), request.since))
    }

    /// The emergency release, while one is asked for and is among those that may still come.
    pub(super) fn emergency_candidate(&self, newer: &[&'a ReleaseView]) -> Option<&'a ReleaseView> {
        let request = self.status.emergency.as_ref()?;
        let plan = &self.emergency_plan_for(&request.release)?.plan;
        let release = newer.iter().find(|r| r.name == request.release).copied()?;
        let passed = |s: &String| {
            let entry = release.stages.get(s);
            entry.is_some_and(|e| e.phase == crate::api::release::StagePhaseForRelease::Succeeded)
        };
        let ready = release.unfit.is_none() && plan.requires.iter().all(passed);
        ready.then_some(release)
    }

    /// Closes the open review a `closeReview` command names, unless its own requester asks.
    pub(super) fn close_review(&mut self) {
        let Some(Command::CloseReview {
            release,
            post_mortem,
            by,
        }) = &self.input.command
        else {
            return;
        };
        let view = self.release(release);
        let requester = view.and_then(|r| r.review_open.as_deref());
        let Some(view) = view.filter(|_| requester.is_some_and(|r| r != by)) else {
            return;
        };
        let note = format!(
            "{}: the review of its emergency rollout was closed; post-mortem: {post_mortem}",
            view.version
        );
        self.event(Transition::ReviewClosed, note, Some(release));
    }

    /// Whether `candidate` is the emergency being asked for.
    pub(super) fn is_emergency(&self, candidate: &ReleaseView) -> bool {
        let request = self.status.emergency.as_ref();
        request.is_some_and(|e| e.release == candidate.name)
            && self.emergency_plan_for(&candidate.name).is_some()
    }

    /// Why an emergency command could not be taken.
    pub(super) fn emergency_refusal(&self, request: &EmergencyRequest) -> String {
        let (name, release) = (self.input.name, &request.release);
        if self.input.plan.emergency.is_none() {
            return format!(
                "emergency: stage '{name}' takes no emergencies (it has no spec.emergency)"
            );
        }
        if let Some(pending) = &self.input.status.emergency {
            return format!(
                "emergency: the emergency of {} asked by {} is pending at stage '{name}'; an abort cancels it",
                pending.release, pending.requester
            );
        }
        if let Some(rollout) = &self.input.status.rollout {
            return format!(
                "emergency: the rollout of {} is under way at stage '{name}'; abort it first",
                rollout.version
            );
        }
        match self.release(release) {
            None => format!("emergency: release '{release}' is not a release of this pipeline"),
            Some(_) => format!(
                "emergency: release '{release}' cannot roll out at stage '{name}' (it ran here already, is older than what runs, or is invalid)"
            ),
        }
    }

    /// The rollout about to start answers the pending emergency: one `Bypassed` event per
    /// control it skips, then `BreakGlass`, which opens the review; the rollout keeps it.
    pub(super) fn break_glass(&mut self, rollout: &mut ActiveRollout) {
        let Some(request) = self.status.emergency.take() else {
            return;
        };
        let Some(plan) = self.emergency_plan_for(&request.release) else {
            return;
        };
        let release = request.release.clone();
        for item in &plan.bypassed {
            let note = format!(
                "{}: {} bypassed by the emergency ({})",
                rollout.version,
                self.bypass_detail(item),
                request.reference
            );
            self.event(Transition::Bypassed, note, Some(&release));
            if let Some(event) = self.events.last_mut() {
                event.item = Some(item.clone());
            }
        }
        let due = plan.review_within.due(self.input.now);
        let skipped = match plan.bypassed.is_empty() {
            true => "nothing".to_string(),
            false => plan.bypassed.join(", "),
        };
        let note = format!(
            "emergency rollout of {} asked by {}: {} ({}); bypassed: {skipped}; review due {due}",
            rollout.version, request.requester, request.reason, request.reference
        );
        self.event(Transition::BreakGlass, note, Some(&release));
        if let Some(event) = self.events.last_mut() {
            event.actor = Some(request.requester.clone());
            event.review_due = Some(due);
        }
        rollout.policy = None;
        rollout.emergency = Some(request);
    }

    /// What one bypassed control was doing at the time.
    fn bypass_detail(&self, item: &str) -> String {
        if item != "windows" {
            return item.to_string();
        }
        match evaluate_windows(&self.input.plan.windows, self.input.now) {
            WindowVerdict::Closed { reason, .. } => format!("windows (closed: {reason})"),
            WindowVerdict::Open => "windows (open at the time)".to_string(),
        }
    }
}
