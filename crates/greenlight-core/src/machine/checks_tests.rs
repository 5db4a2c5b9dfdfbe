//! The check lists of a rolling stage, pass by pass: pre-rollout checks touch no workload,
//! a release succeeds only once verified, and a failed verification ends on the release
//! that ran before.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use proptest::prelude::*;

use super::*;
use crate::api::gate::GateList;
use crate::api::release::{Artifact, GateVerdict, ReleaseStageStatus, StagePhaseForRelease as RP};
use crate::api::stage::{OnTimeout, StagePhase, StageStatus};
use crate::schedule::later;
use crate::validation::{ChecksPlan, CompiledTrigger, StagePlan};
use crate::verdict::GateOutcome;

fn plan(pre_rollout: &[&str], verify: &[&str], on_timeout: OnTimeout) -> StagePlan {
    let names = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
    StagePlan {
        requires: vec![],
        trigger: CompiledTrigger::Auto,
        windows: vec![],
        gates: vec![],
        progress_deadline: Duration::from_secs(600),
        replicas: 2,
        history_limit: 10,
        canary: None,
        checks: ChecksPlan {
            pre_rollout: names(pre_rollout),
            pre_promotion: vec![],
            verify: names(verify),
            verify_timeout: Duration::from_secs(300),
            on_timeout,
        },
        policies: vec![],
        time_to_recover: None,
        emergency: None,
    }
}

fn release(name: &str, here: Option<RP>) -> ReleaseView {
    let mut stages = BTreeMap::new();
    if let Some(phase) = here {
        stages.insert("prod".to_string(), ReleaseStageStatus::new(phase));
    }
    ReleaseView {
        release_type: Default::default(),
        name: name.into(),
        version: format!("{name}.0"),
        artifacts: vec![Artifact {
            name: "web".into(),
            image: format!("web@sha256:{name}"),
        }],
        valid: true,
        unfit: None,
        review_open: None,
        stages,
    }
}

/// A stage that runs r1 while r2 waits, and a primary that runs what it is told at once.
struct World {
    plan: StagePlan,
    status: StageStatus,
    releases: Vec<ReleaseView>,
    primary: PrimaryView,
    now: Timestamp,
    /// How often the primary was told to run something other than what it ran.
    primary_changes: usize,
    events: Vec<Transition>,
    /// The gates each evaluation was asked for.
    asked: Vec<Vec<String>>,
}

/// The verdict of each gate asked for, by list and name.
type Answer<'a> = dyn FnMut(GateList, &str) -> GateVerdict + 'a;

impl World {
    fn new(plan: StagePlan) -> World {
        World {
            plan,
            status: StageStatus {
                current_release: Some("r1".into()),
                current_version: Some("r1.0".into()),
                phase: Some(StagePhase::Idle),
                ..Default::default()
            },
            releases: vec![release("r1", Some(RP::Succeeded)), release("r2", None)],
            primary: PrimaryView {
                release: Some("r1".into()),
                template: None,
                replicas: 2,
                available: true,
                serving: true,
                detail: "available".into(),
            },
            now: "2026-11-23T10:00:00Z".parse().expect("time"),
            primary_changes: 0,
            events: vec![],
            asked: vec![],
        }
    }

    /// One pass, answering the gates the machine asks for with `answer`.
    fn pass(&mut self, answer: &mut Answer<'_>, command: Option<Command>) -> Outcome {
        let releases = self.releases.clone();
        let mut input = StageInput {
            name: "prod",
            plan: &self.plan,
            status: &self.status,
            releases: &releases,
            primary: Some(&self.primary),
            canary: None,
            gates: None,
            measurements: None,
            command,
            invalid: None,
            target: None,
            now: self.now,
        };
        let report;
        let out = match decide(&input) {
            Decision::Act(out) => *out,
            Decision::EvaluateGates {
                release,
                list,
                gates,
                ..
            } => {
                self.asked.push(gates.clone());
                report = judge(&gates, release, list, answer);
                input.gates = Some(&report);
                match decide(&input) {
                    Decision::Act(out) => *out,
                    other => panic!("asked again after the gates: {other:?}"),
                }
            }
            other => panic!("a rolling stage measures nothing: {other:?}"),
        };
        self.apply(&out);
        out
    }

    fn apply(&mut self, out: &Outcome) {
        self.status = out.status.clone();
        for (name, entry) in &out.release_updates {
            let r = self.releases.iter_mut().find(|r| &r.name == name);
            r.expect("a known release")
                .stages
                .insert("prod".into(), entry.clone());
        }
        if let Some(DesiredPrimary::Release { name, .. }) = &out.primary
            && self.primary.release.as_deref() != Some(name)
        {
            self.primary.release = Some(name.clone());
            self.primary_changes += 1;
        }
        self.events.extend(out.events.iter().map(|e| e.kind));
        let step = out
            .requeue_after
            .clamp(Duration::from_secs(1), Duration::from_secs(30));
        self.now = later(self.now, step);
    }

    fn entry(&self, release: &str) -> Option<&ReleaseStageStatus> {
        let r = self.releases.iter().find(|r| r.name == release)?;
        r.stages.get("prod")
    }

    fn phase_of(&self, release: &str) -> Option<RP> {
        self.entry(release).map(|e| e.phase)
    }
}

/// The list's gates in order, up to the first that does not pass.
fn judge(gates: &[String], release: String, list: GateList, answer: &mut Answer<'_>) -> GateReport {
    let mut results = vec![];
    for name in gates {
        let verdict = answer(list, name);
        results.push((name.clone(), GateOutcome::new(verdict, "judged")));
        if verdict != GateVerdict::Passed {
            break;
        }
    }
    GateReport {
        release,
        list,
        template: None,
        results,
        recheck_after: Duration::from_secs(10),
    }
}

fn always(verdict: GateVerdict) -> impl FnMut(GateList, &str) -> GateVerdict {
    move |_, _| verdict
}

#[test]
fn a_pre_rollout_check_runs_before_any_workload_changes_and_the_rollout_follows_its_pass() {
    let mut world = World::new(plan(&["snapshot"], &[], OnTimeout::Rollback));
    let first = world.pass(&mut always(GateVerdict::Pending), None);
    assert_eq!(first.events[0].kind, Transition::RolloutUpcoming);
    for _ in 0..3 {
        world.pass(&mut always(GateVerdict::Pending), None);
    }
    assert_eq!(world.primary_changes, 0, "no workload changed while it ran");
    assert_eq!(world.primary.release.as_deref(), Some("r1"));
    assert_eq!(
        world.entry("r2").and_then(|e| e.reason.as_deref()),
        Some("PreRollout")
    );
    world.pass(&mut always(GateVerdict::Passed), None);
    assert_eq!(world.primary.release.as_deref(), Some("r2"));
    assert!(world.events.contains(&Transition::RolloutStarted));
    world.pass(&mut always(GateVerdict::Passed), None);
    assert_eq!(world.phase_of("r2"), Some(RP::Succeeded));
}

#[test]
fn a_failed_pre_rollout_check_fails_the_release_and_leaves_the_workload_untouched() {
    let mut world = World::new(plan(&["snapshot"], &[], OnTimeout::Rollback));
    for _ in 0..4 {
        world.pass(&mut always(GateVerdict::Failed), None);
    }
    let entry = world.entry("r2").expect("entry");
    assert_eq!(entry.phase, RP::Failed);
    assert_eq!(entry.reason.as_deref(), Some("PreRolloutFailed"));
    assert_eq!(entry.checks[0].list, Some(GateList::PreRollout));
    assert_eq!(world.primary_changes, 0);
    assert_eq!(world.status.current_release.as_deref(), Some("r1"));
    assert_eq!(world.status.phase, Some(StagePhase::Failed));
    assert!(world.status.rollout.is_none());
    assert!(world.events.contains(&Transition::PreRolloutFailed));
}

#[test]
fn a_rolled_out_release_is_verifying_and_succeeds_only_once_verified() {
    let mut world = World::new(plan(&[], &["smoke"], OnTimeout::Rollback));
    world.pass(&mut always(GateVerdict::Pending), None);
    world.pass(&mut always(GateVerdict::Pending), None);
    assert_eq!(world.status.phase, Some(StagePhase::Verifying));
    assert_eq!(world.phase_of("r2"), Some(RP::Progressing));
    assert_eq!(world.primary.release.as_deref(), Some("r2"));
    world.pass(&mut always(GateVerdict::Passed), None);
    assert_eq!(world.phase_of("r2"), Some(RP::Succeeded));
    assert_eq!(world.status.current_release.as_deref(), Some("r2"));
    assert!(world.events.contains(&Transition::Verified));
    assert!(world.events.contains(&Transition::CheckPassed));
}

#[test]
fn a_failed_verification_rolls_back_to_the_previous_release_saying_which_gate() {
    let mut world = World::new(plan(&[], &["smoke"], OnTimeout::Rollback));
    for _ in 0..6 {
        world.pass(&mut always(GateVerdict::Failed), None);
    }
    let entry = world.entry("r2").expect("entry");
    assert_eq!(entry.phase, RP::Failed);
    assert_eq!(entry.reason.as_deref(), Some("VerificationFailed"));
    assert!(
        entry
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("gate 'smoke' failed")
    );
    assert_eq!(world.status.current_release.as_deref(), Some("r1"));
    assert_eq!(world.primary.release.as_deref(), Some("r1"));
    assert!(world.events.contains(&Transition::CheckFailed));
}

#[test]
fn a_held_verification_waits_past_its_timeout_until_a_person_promotes_it() {
    let mut world = World::new(plan(&[], &["smoke"], OnTimeout::Hold));
    // Rechecked every 10s: 40 passes run well past the 300s timeout.
    for _ in 0..40 {
        world.pass(&mut always(GateVerdict::Inconclusive), None);
    }
    let held = world.status.rollout.as_ref().and_then(|r| r.checks.clone());
    assert!(held.is_some_and(|c| c.held), "held past the 300s timeout");
    assert_eq!(world.phase_of("r2"), Some(RP::Progressing));
    assert!(world.events.contains(&Transition::VerificationHeld));
    world.pass(
        &mut always(GateVerdict::Inconclusive),
        Some(Command::Promote),
    );
    assert_eq!(world.phase_of("r2"), Some(RP::Succeeded));
}

#[test]
fn a_verification_that_times_out_rolls_back_by_default() {
    let mut world = World::new(plan(&[], &["smoke"], OnTimeout::Rollback));
    for _ in 0..40 {
        world.pass(&mut always(GateVerdict::Pending), None);
    }
    let entry = world.entry("r2").expect("entry");
    assert_eq!(
        (entry.phase, entry.reason.as_deref()),
        (RP::Failed, Some("VerificationTimedOut"))
    );
    assert_eq!(world.status.current_release.as_deref(), Some("r1"));
}

#[test]
fn a_verification_under_way_keeps_the_gates_it_started_with_when_the_spec_drops_them() {
    let mut world = World::new(plan(&[], &["smoke"], OnTimeout::Rollback));
    for _ in 0..3 {
        world.pass(&mut always(GateVerdict::Pending), None);
    }
    assert_eq!(world.status.phase, Some(StagePhase::Verifying));
    world.plan.checks.verify.clear();
    for _ in 0..3 {
        world.pass(&mut always(GateVerdict::Pending), None);
    }
    assert_eq!(world.status.phase, Some(StagePhase::Verifying));
    assert_eq!(world.phase_of("r2"), Some(RP::Progressing));
    assert_eq!(world.asked.last(), Some(&vec!["smoke".to_string()]));
    world.pass(&mut always(GateVerdict::Passed), None);
    assert_eq!(world.phase_of("r2"), Some(RP::Succeeded));
}

#[test]
fn each_run_of_a_list_is_asked_with_the_time_it_started_which_a_restart_keeps() {
    let mut world = World::new(plan(&[], &["smoke"], OnTimeout::Rollback));
    let mut runs = vec![];
    for _ in 0..4 {
        let releases = world.releases.clone();
        let input = StageInput {
            name: "prod",
            plan: &world.plan,
            status: &world.status,
            releases: &releases,
            primary: Some(&world.primary),
            canary: None,
            gates: None,
            measurements: None,
            command: None,
            invalid: None,
            target: None,
            now: world.now,
        };
        if let Decision::EvaluateGates {
            run: Some(run),
            list: GateList::Verify,
            ..
        } = decide(&input)
        {
            runs.push(run);
        }
        world.pass(&mut always(GateVerdict::Pending), None);
    }
    assert!(runs.len() >= 2, "verification was asked for: {runs:?}");
    assert!(runs.windows(2).all(|w| w[0] == w[1]), "{runs:?}");
    let since = world
        .status
        .rollout
        .as_ref()
        .and_then(|r| r.checks.as_ref()?.since);
    assert_eq!(since, Some(runs[0]), "recorded before the first evaluation");
}

#[test]
fn an_abort_during_the_pre_rollout_checks_is_a_persons_and_touches_no_workload() {
    let mut world = World::new(plan(&["snapshot"], &[], OnTimeout::Rollback));
    world.pass(&mut always(GateVerdict::Pending), None);
    world.pass(&mut always(GateVerdict::Pending), None);
    let out = world.pass(&mut always(GateVerdict::Pending), Some(Command::Abort));
    let failed = out
        .events
        .iter()
        .find(|e| e.kind == Transition::PreRolloutFailed);
    assert!(failed.is_some_and(|e| e.by_person), "{:?}", out.events);
    assert_eq!(
        Transition::PreRolloutFailed.audit_action(true),
        Some(crate::api::release::AuditAction::AbortRequested)
    );
    assert_eq!(world.primary_changes, 0);
    assert_eq!(
        world.entry("r2").and_then(|e| e.reason.as_deref()),
        Some("Aborted")
    );
}

#[test]
fn a_verification_whose_primary_stays_down_ends_at_its_timeout() {
    let mut world = World::new(plan(&[], &["smoke"], OnTimeout::Rollback));
    for _ in 0..3 {
        world.pass(&mut always(GateVerdict::Pending), None);
    }
    world.primary.available = false;
    for _ in 0..40 {
        world.pass(&mut always(GateVerdict::Passed), None);
    }
    let entry = world.entry("r2").expect("entry");
    assert_eq!(
        (entry.phase, entry.reason.as_deref()),
        (RP::Failed, Some("VerificationTimedOut"))
    );
}

#[test]
fn a_readiness_blip_while_verifying_is_for_the_checks_to_judge_not_the_progress_deadline() {
    let mut world = World::new(plan(&[], &["smoke"], OnTimeout::Rollback));
    world.plan.checks.verify_timeout = Duration::from_secs(3600);
    for _ in 0..3 {
        world.pass(&mut always(GateVerdict::Pending), None);
    }
    assert_eq!(world.status.phase, Some(StagePhase::Verifying));
    world.primary.available = false;
    world.now = later(world.now, Duration::from_secs(900));
    world.pass(&mut always(GateVerdict::Pending), None);
    assert_eq!(world.status.phase, Some(StagePhase::Verifying));
    assert_eq!(world.phase_of("r2"), Some(RP::Progressing));
    world.pass(&mut always(GateVerdict::Passed), None);
    assert_eq!(
        world.phase_of("r2"),
        Some(RP::Progressing),
        "not verified while its primary is down"
    );
    world.primary.available = true;
    world.pass(&mut always(GateVerdict::Passed), None);
    assert_eq!(world.phase_of("r2"), Some(RP::Succeeded));
}

fn verdict() -> impl Strategy<Value = GateVerdict> {
    prop_oneof![
        3 => Just(GateVerdict::Passed),
        1 => Just(GateVerdict::Failed),
        1 => Just(GateVerdict::Pending),
        1 => Just(GateVerdict::Inconclusive),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the verify gates answer, the release is `Succeeded` here only after a pass
    /// where both passed, and once one failed the stage ends on the release before it.
    #[test]
    fn a_release_never_succeeds_unverified_and_a_failed_verification_ends_on_the_previous(
        answers in proptest::collection::vec((verdict(), verdict()), 1..30),
    ) {
        let mut world = World::new(plan(&[], &["a", "b"], OnTimeout::Rollback));
        let (mut verified, mut failed) = (false, false);
        for (va, vb) in answers.iter().copied().chain(std::iter::repeat_n((GateVerdict::Pending, GateVerdict::Pending), 20)) {
            let before = world.phase_of("r2");
            let mut asked = false;
            let mut answer = |_: GateList, name: &str| {
                asked = true;
                if name == "a" { va } else { vb }
            };
            world.pass(&mut answer, None);
            let judged = asked && before == Some(RP::Progressing);
            verified |= judged && va == GateVerdict::Passed && vb == GateVerdict::Passed && !failed;
            failed |= judged && !verified && (va == GateVerdict::Failed || (va == GateVerdict::Passed && vb == GateVerdict::Failed));
            if world.phase_of("r2") == Some(RP::Succeeded) {
                prop_assert!(verified, "succeeded unverified: {:?}", world.entry("r2"));
            }
        }
        if verified && !failed {
            prop_assert_eq!(world.phase_of("r2"), Some(RP::Succeeded));
            prop_assert_eq!(world.status.current_release.as_deref(), Some("r2"));
        }
        if failed {
            prop_assert_eq!(world.status.current_release.as_deref(), Some("r1"));
            prop_assert_eq!(world.primary.release.as_deref(), Some("r1"));
            prop_assert_eq!(world.phase_of("r2"), Some(RP::Failed));
        }
    }
}
