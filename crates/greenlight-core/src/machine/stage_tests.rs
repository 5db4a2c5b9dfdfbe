//! The stage state machine, decision by decision, without a cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::*;
use crate::api::release::{GateVerdict, ReleaseStageStatus, StagePhaseForRelease as RP};
use crate::api::stage::{ActiveRollout, RolloutDirection, RolloutOutcome, StagePhase, StageStatus};
use crate::schedule::{Schedule, WindowSpec};
use crate::validation::{CompiledTrigger, StagePlan};
use crate::verdict::GateOutcome;

const STAGE: &str = "prod";

fn t(s: &str) -> Timestamp {
    format!("2026-11-23T{s}Z").parse().unwrap()
}

fn plan() -> StagePlan {
    StagePlan {
        requires: vec!["test".into()],
        trigger: CompiledTrigger::Auto,
        windows: vec![],
        gates: vec![],
        progress_deadline: Duration::from_secs(600),
        replicas: 3,
        history_limit: 10,
        canary: None,
        checks: Default::default(),
        policies: vec![],
        emergency: None,
        time_to_recover: None,
    }
}

fn entry(phase: RP) -> ReleaseStageStatus {
    ReleaseStageStatus {
        policy: None,
        phase,
        reason: None,
        message: None,
        started_at: None,
        finished_at: Some(t("09:00:00")),
        gates: vec![],
        attempt: None,
        checks: vec![],
        comparisons: vec![],
    }
}

/// A release that succeeded upstream in `test`.
fn ready(name: &str) -> ReleaseView {
    release(name, &[("test", RP::Succeeded)])
}

fn release(name: &str, stages: &[(&str, RP)]) -> ReleaseView {
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
        stages: stages
            .iter()
            .map(|(s, p)| (s.to_string(), entry(*p)))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn primary(release: &str, available: bool) -> PrimaryView {
    PrimaryView {
        release: Some(release.into()),
        template: None,
        replicas: 3,
        available,
        serving: available,
        detail: "d".into(),
    }
}

fn act(input: &StageInput) -> Outcome {
    match decide(input) {
        Decision::Act(outcome) => *outcome,
        other => panic!("expected an outcome, got {other:?}"),
    }
}

fn input<'a>(
    plan: &'a StagePlan,
    status: &'a StageStatus,
    releases: &'a [ReleaseView],
    primary: Option<&'a PrimaryView>,
    now: Timestamp,
) -> StageInput<'a> {
    StageInput {
        canary: None,
        measurements: None,
        command: None,
        invalid: None,
        name: STAGE,
        plan,
        status,
        releases,
        primary,
        gates: None,
        target: None,
        now,
    }
}

fn running(release: &str) -> StageStatus {
    StageStatus {
        current_release: Some(release.into()),
        current_version: Some(format!("{release}.0")),
        phase: Some(StagePhase::Idle),
        ..Default::default()
    }
}

#[test]
fn an_eligible_release_starts_rolling_out_with_an_event() {
    let plan = plan();
    let status = running("r1");
    let releases = [ready("r1"), ready("r2")];
    let p = primary("r1", true);
    let out = act(&input(&plan, &status, &releases, Some(&p), t("10:00:00")));
    let rollout = out.status.rollout.expect("rollout started");
    assert_eq!(
        (rollout.release.as_str(), rollout.direction),
        ("r2", RolloutDirection::Forward)
    );
    assert_eq!(rollout.previous_release.as_deref(), Some("r1"));
    assert_eq!(out.status.phase, Some(StagePhase::Progressing));
    assert_eq!(out.release_updates["r2"].phase, RP::Progressing);
    assert_eq!(out.release_updates["r2"].started_at, Some(t("10:00:00")));
    assert!(matches!(&out.primary, Some(DesiredPrimary::Release { name, .. }) if name == "r2"));
    assert_eq!(out.events[0].kind.reason(), "RolloutStarted");
    assert_eq!(out.requeue_after, MAX_REQUEUE.min(Duration::from_secs(600)));
}

#[test]
fn a_release_waits_until_every_required_stage_succeeded() {
    let mut plan = plan();
    plan.requires = vec!["qa-a".into(), "qa-b".into()];
    let status = StageStatus::default();
    let releases = [release(
        "r1",
        &[("qa-a", RP::Succeeded), ("qa-b", RP::Progressing)],
    )];
    let out = act(&input(&plan, &status, &releases, None, t("10:00:00")));
    assert!(out.status.rollout.is_none());
    let e = &out.release_updates["r1"];
    assert_eq!(
        (e.phase, e.reason.as_deref()),
        (RP::Waiting, Some("WaitingForRequires"))
    );
    assert!(
        e.message.as_deref().unwrap().contains("qa-b")
            && !e.message.as_deref().unwrap().contains("qa-a")
    );
}

#[test]
fn the_newest_eligible_release_supersedes_older_waiting_ones() {
    let plan = plan();
    let status = running("r1");
    let releases = [
        ready("r1"),
        ready("r2"),
        ready("r3"),
        release("r4", &[("test", RP::Progressing)]),
    ];
    let p = primary("r1", true);
    let out = act(&input(&plan, &status, &releases, Some(&p), t("10:00:00")));
    assert_eq!(out.status.rollout.unwrap().release, "r3");
    assert_eq!(out.release_updates["r2"].phase, RP::Superseded);
    assert_eq!(
        out.release_updates["r4"].reason.as_deref(),
        Some("WaitingForRequires")
    );
    assert!(
        !out.release_updates.contains_key("r1"),
        "the running release is left alone"
    );
}

#[test]
fn a_release_that_failed_upstream_is_never_promoted() {
    let plan = plan();
    let status = running("r1");
    let releases = [ready("r1"), release("r2", &[("test", RP::Failed)])];
    let p = primary("r1", true);
    let out = act(&input(&plan, &status, &releases, Some(&p), t("10:00:00")));
    assert!(out.status.rollout.is_none());
    let e = &out.release_updates["r2"];
    assert_eq!(
        (e.phase, e.reason.as_deref()),
        (RP::Superseded, Some("NotPromoted"))
    );
    assert!(e.message.as_deref().unwrap().contains("'test'"));
}

#[test]
fn a_release_that_failed_here_is_not_retried() {
    let plan = plan();
    let status = running("r1");
    let releases = [
        ready("r1"),
        release("r2", &[("test", RP::Succeeded), (STAGE, RP::Failed)]),
    ];
    let p = primary("r1", true);
    let out = act(&input(&plan, &status, &releases, Some(&p), t("10:00:00")));
    assert!(out.status.rollout.is_none());
    assert!(out.release_updates.is_empty());
}

#[test]
fn a_rollout_in_progress_is_not_interrupted_by_a_newer_release() {
    let plan = plan();
    let status = StageStatus {
        rollout: Some(ActiveRollout {
            emergency: None,
            policy: None,
            release: "r2".into(),
            version: "r2.0".into(),
            started_at: t("10:00:00"),
            direction: RolloutDirection::Forward,
            previous_release: Some("r1".into()),
            previous_version: Some("r1.0".into()),
            previous_artifacts: vec![],
            reason: None,
            canary: None,
            replicas: None,
            routing: None,
            template: None,
            previous_template: None,
            configuration: false,
            checks: None,
        }),
        ..running("r1")
    };
    let releases = [ready("r1"), ready("r2"), ready("r3")];
    let p = primary("r2", false);
    let out = act(&input(&plan, &status, &releases, Some(&p), t("10:01:00")));
    assert_eq!(out.status.rollout.as_ref().unwrap().release, "r2");
    assert!(matches!(&out.primary, Some(DesiredPrimary::Release { name, .. }) if name == "r2"));
    assert!(
        !out.release_updates.contains_key("r3"),
        "r3 waits its turn untouched"
    );
    // Looks again at the deadline at the latest.
    assert_eq!(out.requeue_after, Duration::from_secs(300));
}

fn rolling(started: &str, previous: Option<&str>) -> StageStatus {
    StageStatus {
        rollout: Some(ActiveRollout {
            emergency: None,
            policy: None,
            release: "r2".into(),
            version: "r2.0".into(),
            started_at: t(started),
            direction: RolloutDirection::Forward,
            previous_release: previous.map(Into::into),
            previous_version: previous.map(|p| format!("{p}.0")),
            previous_artifacts: previous
                .map(|p| {
                    vec![crate::api::release::Artifact {
                        name: "web".into(),
                        image: format!("web@sha256:{p}"),
                    }]
                })
                .unwrap_or_default(),
            reason: None,
            canary: None,
            replicas: None,
            routing: None,
            template: None,
            previous_template: None,
            configuration: false,
            checks: None,
        }),
        ..previous.map(running).unwrap_or_default()
    }
}

#[test]
fn an_available_primary_finishes_the_rollout_and_records_its_duration() {
    let plan = plan();
    let status = rolling("10:00:00", Some("r1"));
    let releases = [ready("r1"), ready("r2")];
    let p = primary("r2", true);
    let out = act(&input(&plan, &status, &releases, Some(&p), t("10:02:30")));
    assert!(out.status.rollout.is_none());
    assert_eq!(out.status.current_release.as_deref(), Some("r2"));
    let h = &out.status.history[0];
    assert_eq!(
        (h.release.as_str(), h.outcome, h.duration_seconds),
        ("r2", RolloutOutcome::Succeeded, 150)
    );
    assert_eq!(out.release_updates["r2"].phase, RP::Succeeded);
    assert_eq!(out.events[0].kind.reason(), "RolloutSucceeded");
}

#[test]
fn a_primary_that_still_shows_the_old_release_does_not_count_as_done() {
    let plan = plan();
    let status = rolling("10:00:00", Some("r1"));
    let releases = [ready("r1"), ready("r2")];
    let p = primary("r1", true);
    let out = act(&input(&plan, &status, &releases, Some(&p), t("10:01:00")));
    assert_eq!(out.status.phase, Some(StagePhase::Progressing));
}

#[test]
fn a_rollout_past_its_deadline_is_rolled_back_to_the_previous_release() {
    let plan = plan();
    let status = rolling("10:00:00", Some("r1"));
    let releases = [ready("r1"), ready("r2")];
    let p = primary("r2", false);
    let out = act(&input(&plan, &status, &releases, Some(&p), t("10:10:00")));
    let rollout = out.status.rollout.clone().unwrap();
    assert_eq!(rollout.direction, RolloutDirection::Rollback);
    assert!(
        matches!(&out.primary, Some(DesiredPrimary::Release { name, artifacts, .. }) if name == "r1" && artifacts[0].image == "web@sha256:r1")
    );
    let e = &out.release_updates["r2"];
    assert_eq!(
        (e.phase, e.reason.as_deref()),
        (RP::Failed, Some("ProgressDeadlineExceeded"))
    );
    assert_eq!(out.status.phase, Some(StagePhase::RollingBack));
    assert!(out.events[0].kind.warning());

    // Once the previous release is available again, the rollback is recorded and the stage
    // stays Failed and Stalled until a newer release succeeds.
    let status = out.status;
    let p = primary("r1", true);
    let out = act(&input(&plan, &status, &releases, Some(&p), t("10:10:30")));
    assert!(out.status.rollout.is_none());
    assert_eq!(out.status.current_release.as_deref(), Some("r1"));
    assert_eq!(out.status.phase, Some(StagePhase::Failed));
    assert_eq!(out.status.history[0].outcome, RolloutOutcome::RolledBack);
    assert!(
        out.status
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.is_true())
    );
    assert_eq!(out.events[0].kind.reason(), "RollbackCompleted");

    let mut after = out.status;
    after.phase = Some(StagePhase::Failed);
    let releases = [
        ready("r1"),
        release("r2", &[("test", RP::Succeeded), (STAGE, RP::Failed)]),
    ];
    let out = act(&input(&plan, &after, &releases, Some(&p), t("10:11:00")));
    assert_eq!(
        out.status.phase,
        Some(StagePhase::Failed),
        "the failure stays visible"
    );
}

#[test]
fn a_failed_first_rollout_scales_the_primary_to_zero() {
    let plan = plan();
    let status = rolling("10:00:00", None);
    let releases = [ready("r2")];
    let p = primary("r2", false);
    let out = act(&input(&plan, &status, &releases, Some(&p), t("10:10:00")));
    assert_eq!(out.primary, Some(DesiredPrimary::Empty));
    let status = out.status;
    let emptied = PrimaryView {
        release: None,
        template: None,
        replicas: 0,
        available: true,
        serving: true,
        detail: String::new(),
    };
    let out = act(&input(
        &plan,
        &status,
        &releases,
        Some(&emptied),
        t("10:10:05"),
    ));
    assert!(out.status.rollout.is_none());
    assert_eq!(out.status.current_release, None);
}

#[test]
fn the_same_observation_twice_gives_the_same_decision() {
    // What a restarted controller relies on: the decision is a function of status and time.
    let plan = plan();
    let status = rolling("10:00:00", Some("r1"));
    let releases = [ready("r1"), ready("r2")];
    let p = primary("r2", false);
    let a = act(&input(&plan, &status, &releases, Some(&p), t("10:05:00")));
    let b = act(&input(&plan, &status, &releases, Some(&p), t("10:05:00")));
    assert_eq!(a, b);
    assert!(
        a.events.is_empty(),
        "continuing a rollout emits nothing new"
    );
}

#[test]
fn a_schedule_trigger_waits_for_the_first_tick_after_the_candidate_appeared() {
    let mut plan = plan();
    plan.trigger = CompiledTrigger::Schedule {
        schedule: Schedule::parse("0 3 * * *").unwrap(),
        tz: TimeZone::get("Europe/Paris").unwrap(),
    };
    let status = running("r1");
    let releases = [ready("r1"), ready("r2")];
    let p = primary("r1", true);
    // 2026-11-23 10:00 UTC: the next 03:00 Paris (UTC+1) is 02:00 UTC tomorrow.
    let out = act(&input(&plan, &status, &releases, Some(&p), t("10:00:00")));
    assert!(out.status.rollout.is_none());
    assert_eq!(out.status.candidate_since, Some(t("10:00:00")));
    assert_eq!(
        out.release_updates["r2"].reason.as_deref(),
        Some("WaitingForSchedule")
    );
    assert_eq!(out.requeue_after, MAX_REQUEUE);
    let status = out.status;
    let tomorrow: Timestamp = "2026-11-24T02:00:00Z".parse().unwrap();
    let out = act(&input(&plan, &status, &releases, Some(&p), tomorrow));
    assert_eq!(out.status.rollout.unwrap().release, "r2");
}

#[test]
fn a_blackout_holds_and_asks_to_be_woken_when_it_ends() {
    let mut plan = plan();
    plan.windows = vec![WindowSpec {
        allow: false,
        schedule: Schedule::parse("0 10 * * *").unwrap(),
        duration: Duration::from_secs(120),
        tz: TimeZone::UTC,
        reason: "freeze".into(),
    }];
    let status = running("r1");
    let releases = [ready("r1"), ready("r2")];
    let p = primary("r1", true);
    let out = act(&input(&plan, &status, &releases, Some(&p), t("10:01:00")));
    assert!(out.status.rollout.is_none());
    assert_eq!(
        out.release_updates["r2"].reason.as_deref(),
        Some("BlockedByWindow")
    );
    assert_eq!(out.requeue_after, Duration::from_secs(60));
    let status = out.status;
    let out = act(&input(&plan, &status, &releases, Some(&p), t("10:02:00")));
    assert_eq!(out.status.rollout.unwrap().release, "r2");
}

#[test]
fn gates_are_asked_for_then_the_first_that_does_not_pass_holds_the_release() {
    let mut plan = plan();
    plan.gates = vec!["soak".into(), "slo".into(), "hook".into()];
    let status = running("r1");
    let releases = [ready("r1"), ready("r2")];
    let p = primary("r1", true);
    let mut inp = input(&plan, &status, &releases, Some(&p), t("10:00:00"));
    assert_eq!(
        decide(&inp),
        Decision::EvaluateGates {
            release: "r2".into(),
            configuration: None,
            list: crate::api::gate::GateList::Gates,
            run: None,
            gates: plan.gates.clone(),
            emergency: None,
        }
    );
    let report = GateReport {
        release: "r2".into(),
        list: crate::api::gate::GateList::Gates,
        template: None,
        results: vec![
            ("soak".into(), GateOutcome::new(GateVerdict::Passed, "ok")),
            (
                "slo".into(),
                GateOutcome::new(GateVerdict::Inconclusive, "query returned NaN").with_value("NaN"),
            ),
        ],
        recheck_after: Duration::from_secs(30),
    };
    inp.gates = Some(&report);
    let out = act(&inp);
    assert!(out.status.rollout.is_none(), "inconclusive never passes");
    let e = &out.release_updates["r2"];
    assert_eq!(e.reason.as_deref(), Some("GateInconclusive"));
    let verdicts: Vec<GateVerdict> = e.gates.iter().map(|g| g.result).collect();
    assert_eq!(
        verdicts,
        [
            GateVerdict::Passed,
            GateVerdict::Inconclusive,
            GateVerdict::Skipped
        ]
    );
    assert_eq!(e.gates[1].value.as_deref(), Some("NaN"));
    assert_eq!(out.requeue_after, Duration::from_secs(30));
}

#[test]
fn all_gates_passing_start_the_rollout_and_keep_their_results() {
    let mut plan = plan();
    plan.gates = vec!["soak".into()];
    let status = running("r1");
    let releases = [ready("r1"), ready("r2")];
    let p = primary("r1", true);
    let report = GateReport {
        release: "r2".into(),
        list: crate::api::gate::GateList::Gates,
        template: None,
        results: vec![(
            "soak".into(),
            GateOutcome::new(GateVerdict::Passed, "healthy for 600s").with_value("600s"),
        )],
        recheck_after: Duration::from_secs(30),
    };
    let mut inp = input(&plan, &status, &releases, Some(&p), t("10:00:00"));
    inp.gates = Some(&report);
    let out = act(&inp);
    assert_eq!(out.status.rollout.unwrap().release, "r2");
    assert_eq!(
        out.release_updates["r2"].gates[0].result,
        GateVerdict::Passed
    );
}

#[test]
fn gate_results_for_another_release_are_not_used() {
    let mut plan = plan();
    plan.gates = vec!["soak".into()];
    let status = running("r1");
    let releases = [ready("r1"), ready("r2"), ready("r3")];
    let p = primary("r1", true);
    let report = GateReport {
        release: "r2".into(),
        list: crate::api::gate::GateList::Gates,
        template: None,
        results: vec![("soak".into(), GateOutcome::new(GateVerdict::Passed, "ok"))],
        recheck_after: Duration::from_secs(30),
    };
    let mut inp = input(&plan, &status, &releases, Some(&p), t("10:00:00"));
    inp.gates = Some(&report);
    assert_eq!(
        decide(&inp),
        Decision::EvaluateGates {
            release: "r3".into(),
            configuration: None,
            list: crate::api::gate::GateList::Gates,
            run: None,
            gates: plan.gates.clone(),
            emergency: None,
        }
    );
}

#[test]
fn a_release_that_cannot_run_on_the_target_fails_here_with_the_reason() {
    let plan = plan();
    let status = running("r1");
    let mut r2 = ready("r2");
    r2.unfit = Some("artifact 'sidecar' names no container".into());
    let releases = [ready("r1"), r2];
    let p = primary("r1", true);
    let out = act(&input(&plan, &status, &releases, Some(&p), t("10:00:00")));
    assert!(out.status.rollout.is_none());
    let e = &out.release_updates["r2"];
    assert_eq!(
        (e.phase, e.reason.as_deref()),
        (RP::Failed, Some("IncompatibleWithTarget"))
    );
}

#[test]
fn an_idle_stage_keeps_its_primary_on_the_current_release_and_writes_nothing_new() {
    let plan = plan();
    let status = running("r1");
    let releases = [ready("r1")];
    let p = primary("r1", true);
    let out = act(&input(&plan, &status, &releases, Some(&p), t("10:00:00")));
    assert!(matches!(&out.primary, Some(DesiredPrimary::Release { name, .. }) if name == "r1"));
    assert!(out.release_updates.is_empty());
    assert!(out.events.is_empty());
    assert_eq!(out.status.phase, Some(StagePhase::Idle));
}

#[test]
fn history_keeps_only_the_newest_entries() {
    let mut plan = plan();
    plan.history_limit = 2;
    let mut status = rolling("10:00:00", Some("r1"));
    for i in 0..3 {
        status.history.push(crate::api::stage::RolloutRecord {
            release: format!("old{i}"),
            version: "x".into(),
            outcome: RolloutOutcome::Succeeded,
            started_at: t("09:00:00"),
            finished_at: t("09:01:00"),
            duration_seconds: 60,
            reason: None,
            template: None,
            configuration: false,
        });
    }
    let releases = [ready("r1"), ready("r2")];
    let p = primary("r2", true);
    let out = act(&input(&plan, &status, &releases, Some(&p), t("10:01:00")));
    let names: Vec<&str> = out
        .status
        .history
        .iter()
        .map(|h| h.release.as_str())
        .collect();
    assert_eq!(names, ["r2", "old0"]);
}

#[test]
fn retry_runs_a_release_that_failed_here_again() {
    let plan = plan();
    let status = running("r1");
    let releases = [
        ready("r1"),
        release("r2", &[("test", RP::Succeeded), (STAGE, RP::Failed)]),
    ];
    let p = primary("r1", true);
    let mut inp = input(&plan, &status, &releases, Some(&p), t("10:00:00"));
    assert!(
        act(&inp).status.rollout.is_none(),
        "a failed release stays failed"
    );
    inp.command = Some(Command::Retry("r2".into()));
    let out = act(&inp);
    assert_eq!(out.status.rollout.expect("retried").release, "r2");
    assert!(
        out.events
            .iter()
            .any(|e| e.kind.reason() == "RetryRequested")
    );
    // Retrying a release that did not fail here does nothing.
    inp.command = Some(Command::Retry("r1".into()));
    let releases = [ready("r1")];
    inp.releases = &releases;
    assert!(act(&inp).status.rollout.is_none());
}

#[test]
fn a_retry_asked_while_its_failure_is_still_rolled_back_waits_instead_of_being_refused() {
    let plan = plan();
    let mut status = rolling("10:00:00", Some("r1"));
    status.rollout.as_mut().unwrap().direction = RolloutDirection::Rollback;
    let failed = release("r2", &[("test", RP::Succeeded), (STAGE, RP::Failed)]);
    let releases = [ready("r1"), failed];
    let p = primary("r2", true);
    let mut asked = input(&plan, &status, &releases, Some(&p), t("10:01:00"));
    asked.command = Some(Command::Retry("r2".into()));
    let out = act(&asked);
    assert!(out.command_deferred, "it waits for the rollback to finish");
    assert!(
        out.events
            .iter()
            .all(|e| e.kind != Transition::CommandRefused),
        "{:?}",
        out.events
    );
}
