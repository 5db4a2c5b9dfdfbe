//! Pinned templates, decision by decision: an edit of the target reaches the primary only as a
//! rollout of its own, through the stage's gates, and a property over any sequence of edits,
//! gate verdicts and workload states.

use std::time::Duration;

use jiff::Timestamp;
use proptest::prelude::*;

use super::*;
use crate::api::release::{GateVerdict, ReleaseStageStatus, StagePhaseForRelease as RP};
use crate::api::stage::{RolloutDirection, StagePhase, StageStatus};
use crate::validation::{CompiledTrigger, StagePlan};
use crate::verdict::GateOutcome;

fn plan() -> StagePlan {
    StagePlan {
        requires: vec![],
        trigger: CompiledTrigger::Auto,
        windows: vec![],
        gates: vec!["signoff".into()],
        progress_deadline: Duration::from_secs(60),
        replicas: 2,
        history_limit: 10,
        canary: None,
        checks: Default::default(),
        policies: vec![],
        time_to_recover: None,
        emergency: None,
    }
}

fn release(name: &str, here: Option<RP>) -> ReleaseView {
    let mut stages = std::collections::BTreeMap::new();
    if let Some(phase) = here {
        stages.insert("prod".to_string(), ReleaseStageStatus::new(phase));
    }
    ReleaseView {
        release_type: Default::default(),
        name: name.into(),
        version: format!("{name}.0"),
        artifacts: vec![crate::api::release::Artifact {
            name: "web".into(),
            image: format!("web@sha256:{name}"),
        }],
        valid: true,
        unfit: None,
        review_open: None,
        stages,
    }
}

/// One stage, its primary, and a target whose template the test edits.
struct World {
    status: StageStatus,
    releases: Vec<ReleaseView>,
    /// What the primary runs: release and template, and whether it is available.
    primary: (String, Option<String>, bool),
    target: TargetTemplate,
    now: Timestamp,
    events: Vec<StageEvent>,
    /// Every template the primary was asked to run, in order.
    asked: Vec<Option<String>>,
}

fn digest(t: &str) -> String {
    format!("sha256:{t}")
}

impl World {
    /// r1 runs on template `a`, pinned.
    fn running_r1_on(template: &str) -> World {
        World {
            status: StageStatus {
                current_release: Some("r1".into()),
                current_version: Some("r1.0".into()),
                phase: Some(StagePhase::Idle),
                template: Some(digest(template)),
                ..Default::default()
            },
            releases: vec![release("r1", Some(RP::Succeeded))],
            primary: ("r1".into(), Some(digest(template)), true),
            target: TargetTemplate {
                digest: digest(template),
                fields: vec![],
                changed_by: String::new(),
            },
            now: "2026-12-06T10:00:00Z".parse().unwrap(),
            events: vec![],
            asked: vec![],
        }
    }

    fn edit_target(&mut self, template: &str) {
        self.target = TargetTemplate {
            digest: digest(template),
            fields: vec!["template.spec.containers[miner]".into()],
            changed_by: "kubectl-patch".into(),
        };
    }

    fn primary_view(&self) -> PrimaryView {
        PrimaryView {
            release: Some(self.primary.0.clone()),
            template: self.primary.1.clone(),
            replicas: 2,
            available: self.primary.2,
            serving: self.primary.2,
            detail: "d".into(),
        }
    }

    /// What the stage decides from now, before any gate answers.
    fn input<'a>(&'a self, plan: &'a StagePlan, primary: &'a PrimaryView) -> StageInput<'a> {
        StageInput {
            name: "prod",
            plan,
            status: &self.status,
            releases: &self.releases,
            primary: Some(primary),
            canary: None,
            gates: None,
            measurements: None,
            command: None,
            invalid: None,
            target: Some(&self.target),
            now: self.now,
        }
    }

    /// One pass; the gates answer `verdict`.
    fn pass(&mut self, verdict: GateVerdict) -> Outcome {
        self.pass_with(plan(), verdict)
    }

    /// One pass under `plan`; every gate asked for answers `verdict`.
    fn pass_with(&mut self, plan: StagePlan, verdict: GateVerdict) -> Outcome {
        let primary = self.primary_view();
        let mut input = self.input(&plan, &primary);
        let report;
        let out = match decide(&input) {
            Decision::Act(out) => *out,
            Decision::EvaluateGates {
                release,
                configuration,
                list,
                gates,
                ..
            } => {
                let results = gates
                    .iter()
                    .map(|g| (g.clone(), GateOutcome::new(verdict, "judged")))
                    .collect();
                report = GateReport {
                    release,
                    list,
                    template: configuration.map(|(t, _)| t),
                    results,
                    recheck_after: Duration::from_secs(30),
                };
                input.gates = Some(&report);
                match decide(&input) {
                    Decision::Act(out) => *out,
                    other => panic!("acts after the gates: {other:?}"),
                }
            }
            other => panic!("{other:?}"),
        };
        self.apply(&out);
        out
    }

    fn apply(&mut self, out: &Outcome) {
        self.status = out.status.clone();
        for (name, entry) in &out.release_updates {
            if let Some(r) = self.releases.iter_mut().find(|r| &r.name == name) {
                r.stages.insert("prod".into(), entry.clone());
            }
        }
        if let Some(DesiredPrimary::Release { name, template, .. }) = &out.primary {
            self.asked.push(template.clone());
            if (name, template) != (&self.primary.0, &self.primary.1) {
                // A new template's pods start unavailable.
                self.primary = (name.clone(), template.clone(), false);
            }
        }
        self.events.extend(out.events.iter().cloned());
        self.now += Duration::from_secs(5);
    }

    fn pods_become_available(&mut self) {
        self.primary.2 = true;
    }

    fn r1_entry(&self) -> ReleaseStageStatus {
        self.releases[0].stages["prod"].clone()
    }
}

#[test]
fn an_edit_of_the_target_waits_for_the_gates_and_then_rolls_out_as_a_configuration_change() {
    let mut world = World::running_r1_on("a");
    let before = world.r1_entry();
    world.edit_target("b");
    for _ in 0..3 {
        world.pass(GateVerdict::Pending);
    }
    assert_eq!(
        world.primary.1,
        Some(digest("a")),
        "the edit waits for the gate"
    );
    let change = world
        .status
        .target_change
        .clone()
        .expect("the change is reported");
    assert_eq!(change.changed_by, "kubectl-patch");
    let told: Vec<_> = world
        .events
        .iter()
        .filter(|e| e.kind == Transition::TargetChanged)
        .collect();
    assert_eq!(told.len(), 1, "told once: {told:?}");
    assert_eq!(world.status.phase, Some(StagePhase::Waiting));

    let out = world.pass(GateVerdict::Passed);
    let rollout = out.status.rollout.expect("a configuration rollout");
    assert!(rollout.configuration);
    assert_eq!(rollout.template, Some(digest("b")));
    assert_eq!(rollout.previous_template, Some(digest("a")));
    let started = out
        .events
        .iter()
        .find(|e| e.kind == Transition::RolloutStarted)
        .unwrap();
    let pinned = started.pinned.clone().unwrap();
    assert_eq!(pinned.previous, Some(digest("a")));
    assert!(pinned.configuration.unwrap().contains("kubectl-patch"));
    assert_eq!(world.primary.1, Some(digest("b")));

    world.pods_become_available();
    world.pass(GateVerdict::Passed);
    assert_eq!(world.status.template, Some(digest("b")));
    assert_eq!(world.status.target_change, None);
    assert!(world.status.history[0].configuration);
    assert_eq!(
        world.r1_entry(),
        before,
        "r1's entry here is final and left alone"
    );
}

#[test]
fn a_failed_configuration_change_goes_back_to_the_pinned_template_and_is_not_tried_again() {
    let mut world = World::running_r1_on("a");
    world.edit_target("b");
    world.pass(GateVerdict::Passed);
    world.pass(GateVerdict::Passed);
    assert_eq!(world.primary.1, Some(digest("b")));
    // Its pods never become available: the deadline rolls it back.
    world.now += Duration::from_secs(120);
    let out = world.pass(GateVerdict::Passed);
    let rollback = out.status.rollout.expect("rolling back");
    assert_eq!(rollback.direction, RolloutDirection::Rollback);
    assert_eq!(world.primary.1, Some(digest("a")));
    world.pods_become_available();
    world.pass(GateVerdict::Passed);
    assert_eq!(world.status.template, Some(digest("a")));
    assert!(world.status.target_change.as_ref().unwrap().failed);
    assert_eq!(
        world.r1_entry().phase,
        RP::Succeeded,
        "r1 did not fail here"
    );
    for _ in 0..5 {
        world.pass(GateVerdict::Passed);
    }
    assert!(world.status.rollout.is_none(), "not tried again");
    world.edit_target("c");
    world.pass(GateVerdict::Passed);
    assert_eq!(
        world.primary.1,
        Some(digest("c")),
        "a new edit is a new change"
    );
}

#[test]
fn a_configuration_change_whose_pre_rollout_check_fails_is_not_tried_again_and_leaves_the_release_alone()
 {
    let mut snapshot = plan();
    snapshot.checks.pre_rollout = vec!["snapshot".into()];
    let mut world = World::running_r1_on("a");
    world.edit_target("b");
    world.pass_with(snapshot.clone(), GateVerdict::Passed);
    let upcoming = world
        .status
        .rollout
        .clone()
        .expect("its pre-rollout checks run");
    assert!(upcoming.configuration);
    assert_eq!(
        world.r1_entry().phase,
        RP::Succeeded,
        "the entry is r1's, untouched"
    );
    for _ in 0..3 {
        world.pass_with(snapshot.clone(), GateVerdict::Failed);
    }
    assert!(world.status.target_change.as_ref().unwrap().failed);
    assert_eq!(world.r1_entry().phase, RP::Succeeded);
    let started = world.events.len();
    for _ in 0..5 {
        world.pass_with(snapshot.clone(), GateVerdict::Failed);
    }
    assert!(world.status.rollout.is_none(), "not tried again");
    assert_eq!(world.events.len(), started, "no more transitions: no loop");
    assert_eq!(
        world.primary.1,
        Some(digest("a")),
        "the workload never changed"
    );
}

#[test]
fn a_new_release_pins_the_targets_template_as_it_is_when_its_rollout_starts() {
    let mut world = World::running_r1_on("a");
    world.edit_target("b");
    world.releases.push(release("r2", None));
    let out = world.pass(GateVerdict::Passed);
    let rollout = out.status.rollout.expect("r2 rolls out");
    assert_eq!(
        (rollout.release.as_str(), rollout.configuration),
        ("r2", false)
    );
    assert_eq!(rollout.template, Some(digest("b")));
    world.edit_target("c");
    world.pass(GateVerdict::Passed);
    assert_eq!(
        world.primary.1,
        Some(digest("b")),
        "an edit during the rollout does not change what it runs"
    );
}

#[test]
fn a_stage_from_before_templates_were_pinned_pins_the_target_without_a_rollout() {
    let mut world = World::running_r1_on("a");
    world.status.template = None;
    world.primary.1 = None;
    world.pass(GateVerdict::Pending);
    assert_eq!(world.status.template, Some(digest("a")));
    assert!(world.status.rollout.is_none());
}

proptest! {
    /// Whatever the edits, gate verdicts and pod states, the template the primary is asked to
    /// run changes only when a rollout starts in a pass whose gates passed, or goes back to
    /// the template a rollout replaced.
    #[test]
    fn the_serving_template_changes_only_through_a_rollout_that_passed_the_gates(
        steps in proptest::collection::vec((0..3usize, 0..3usize, any::<bool>()), 1..40)
    ) {
        let mut world = World::running_r1_on("a");
        let mut last = Some(digest("a"));
        for (edit, verdict, available) in steps {
            world.edit_target(["a", "b", "c"][edit]);
            if available {
                world.pods_become_available();
            }
            let verdict = [GateVerdict::Passed, GateVerdict::Pending, GateVerdict::Failed][verdict];
            let before = world.status.rollout.clone();
            let out = world.pass(verdict);
            let Some(DesiredPrimary::Release { template, .. }) = &out.primary else { continue };
            if *template == last {
                continue;
            }
            let rollout = out.status.rollout.as_ref().or(before.as_ref());
            let started_now = before.is_none() && out.status.rollout.is_some();
            let forward = rollout.is_some_and(|r| r.direction == RolloutDirection::Forward && &r.template == template);
            let back = rollout.is_some_and(|r| r.direction == RolloutDirection::Rollback && &r.previous_template == template);
            prop_assert!(forward || back, "{template:?} without a rollout to it");
            if started_now && forward {
                prop_assert_eq!(verdict, GateVerdict::Passed);
            }
            last = template.clone();
        }
    }
}

#[test]
fn a_release_that_would_carry_a_pending_edit_is_judged_with_approvals_given_after_the_edit() {
    let mut world = World::running_r1_on("a");
    world.edit_target("b");
    world.pass(GateVerdict::Pending);
    let noted = world.status.target_change.as_ref().unwrap().since.unwrap();
    world.releases.push(release("r2", None));
    world.now += Duration::from_secs(60);
    let plan = plan();
    let primary = world.primary_view();
    assert_eq!(
        decide(&world.input(&plan, &primary)),
        Decision::EvaluateGates {
            release: "r2".into(),
            configuration: Some((digest("b"), noted)),
            list: crate::api::gate::GateList::Gates,
            run: None,
            gates: plan.gates.clone(),
            emergency: None,
        },
        "the edit's own time, not when r2 came"
    );
}

#[test]
fn a_release_that_carried_an_edit_and_failed_does_not_retry_the_edit_alone() {
    let mut world = World::running_r1_on("a");
    world.edit_target("b");
    world.releases.push(release("r2", None));
    world.pass(GateVerdict::Passed);
    assert_eq!(world.primary, ("r2".to_string(), Some(digest("b")), false));
    world.now += Duration::from_secs(120);
    world.pass(GateVerdict::Passed);
    world.pods_become_available();
    world.pass(GateVerdict::Passed);
    assert_eq!(
        world.primary.1,
        Some(digest("a")),
        "back on r1 and its template"
    );
    assert!(world.status.target_change.as_ref().unwrap().failed);
    for _ in 0..3 {
        world.pass(GateVerdict::Passed);
    }
    assert!(
        world.status.rollout.is_none(),
        "the edit is not tried again on its own"
    );
}

#[test]
fn a_stage_made_again_goes_back_to_the_primary_it_adopted_never_to_nothing() {
    let mut world = World::running_r1_on("a");
    world.status = StageStatus::default();
    world.releases.push(release("r2", None));
    let out = world.pass(GateVerdict::Passed);
    let rollout = out.status.rollout.expect("r2 rolls out");
    assert_eq!(rollout.previous_release.as_deref(), Some("r1"));
    assert_eq!(rollout.previous_template, Some(digest("a")));
}
