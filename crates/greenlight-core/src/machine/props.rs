//! The most extreme specs validation lets through (the longest durations, the largest weights
//! and counts, crons that rarely or never fire, odd time zones), with rollouts in every phase
//! at times near the ends of the calendar, driven through the whole machine. Nothing panics,
//! and every decision asks to look again within the longest requeue. (Specs beyond the bounds
//! are refused by validation, which has its own property tests.)

use std::collections::BTreeMap;

use jiff::Timestamp;
use proptest::prelude::*;
use proptest::strategy::Strategy as _;

use super::*;
use crate::api::canary::{
    Analysis, CanaryPhase, CanaryProgress, CanaryStep, CanaryStrategy, PauseStep,
};
use crate::api::release::{Artifact, GateVerdict};
use crate::api::stage::{
    ActiveRollout, RolloutDirection, StageSpec, StageStatus, Strategy, StrategyType, TargetRef,
    Trigger, TriggerType, Window, WindowKind,
};
use crate::validation::compile_stage;
use crate::verdict::GateOutcome;

/// Valid durations, from a second to the longest allowed (366 days).
fn duration() -> impl proptest::strategy::Strategy<Value = String> {
    prop_oneof![
        "[1-9][0-9]{0,2}(s|m|h)",
        "[1-9][0-9]{0,2}\\.[0-9]{1,3}(s|m|h)",
        "(8784h|527040m|31622400s|8783h59m59s)",
    ]
}

fn instant() -> impl proptest::strategy::Strategy<Value = Timestamp> {
    prop_oneof![
        Just(Timestamp::MIN),
        Just(Timestamp::UNIX_EPOCH),
        Just(Timestamp::MAX),
        (0i64..4_000_000_000).prop_map(|s| Timestamp::from_second(s).unwrap()),
    ]
}

fn phase() -> impl proptest::strategy::Strategy<Value = CanaryPhase> {
    prop_oneof![
        Just(CanaryPhase::Starting),
        Just(CanaryPhase::Stepping),
        Just(CanaryPhase::Paused),
        Just(CanaryPhase::Promoting),
        Just(CanaryPhase::Baking),
    ]
}

fn spec(durations: &[String], weight: i32, count: i32, cron: &str, zone: &str) -> StageSpec {
    let d = |i: usize| durations[i % durations.len()].clone();
    let analysis = Analysis {
        gates: vec!["slo".into()],
        interval: Some(d(0)),
        count: Some(count),
        failure_limit: Some(count),
        initial_delay: Some(d(1)),
        ..Default::default()
    };
    let steps = vec![
        CanaryStep {
            set_weight: Some(weight),
            ..Default::default()
        },
        CanaryStep {
            pause: Some(PauseStep {
                duration: Some(d(2)),
            }),
            ..Default::default()
        },
        CanaryStep {
            analysis: Some(analysis.clone()),
            ..Default::default()
        },
    ];
    StageSpec {
        pipeline: "shop".into(),
        protected: false,
        policies: vec![],
        emergency: None,
        requires: vec![],
        target: TargetRef { name: "web".into() },
        replicas: weight.abs() % 50,
        trigger: Trigger {
            trigger_type: TriggerType::Schedule,
            schedule: Some(cron.to_string()),
            time_zone: Some(zone.to_string()),
        },
        gates: vec![],
        pre_rollout: vec![],
        verify: None,
        notifiers: vec![],
        windows: vec![Window {
            kind: WindowKind::Deny,
            schedule: cron.to_string(),
            duration: d(3),
            time_zone: Some(zone.to_string()),
            reason: None,
        }],
        strategy: Strategy {
            blue_green: None,
            strategy_type: StrategyType::Canary,
            canary: Some(CanaryStrategy {
                steps,
                analysis: Some(analysis),
                bake: Some(d(4)),
                max_weight: Some(weight),
                ..Default::default()
            }),
        },
        progress_deadline: d(5),
        history_limit: count,
    }
}

fn release(name: &str) -> ReleaseView {
    ReleaseView {
        release_type: Default::default(),
        name: name.into(),
        version: name.into(),
        artifacts: vec![Artifact {
            name: "web".into(),
            image: format!("r/web@sha256:{name}"),
        }],
        valid: true,
        unfit: None,
        review_open: None,
        stages: BTreeMap::new(),
    }
}

fn rollout(phase: CanaryPhase, step: i32, at: Timestamp, weight: i32) -> StageStatus {
    let progress = CanaryProgress {
        phase,
        step,
        step_started_at: at,
        weight,
        baking_since: (phase == CanaryPhase::Baking).then_some(at),
        analysis: vec![],
        ..crate::machine::canary::fresh_progress(at)
    };
    StageStatus {
        current_release: Some("r1".into()),
        current_version: Some("r1".into()),
        rollout: Some(ActiveRollout {
            emergency: None,
            policy: None,
            release: "r2".into(),
            version: "r2".into(),
            started_at: at,
            direction: RolloutDirection::Forward,
            previous_release: Some("r1".into()),
            previous_version: Some("r1".into()),
            previous_artifacts: vec![],
            reason: None,
            canary: Some(progress),
            replicas: None,
            routing: None,
            template: None,
            previous_template: None,
            configuration: false,
            checks: None,
        }),
        ..Default::default()
    }
}

/// Decides, answering what the machine asks for: every gate passes, every measurement is
/// inconclusive (NaN).
fn decide_fully(input: &StageInput<'_>, report: &GateReport) -> Outcome {
    let decision = decide(input);
    let measured: Vec<Measurement>;
    let second = match decision {
        Decision::Act(outcome) => return *outcome,
        Decision::EvaluateGates { .. } => StageInput {
            gates: Some(report),
            command: input.command.clone(),
            invalid: None,
            ..*input
        },
        Decision::Measure { due, .. } => {
            measured = due
                .iter()
                .map(|d| Measurement {
                    workload: d.workload,
                    scope: d.scope.clone(),
                    gate: d.gate.clone(),
                    outcome: GateOutcome::new(GateVerdict::Inconclusive, "NaN"),
                })
                .collect();
            StageInput {
                measurements: Some(&measured),
                command: input.command.clone(),
                invalid: None,
                ..*input
            }
        }
    };
    match decide(&second) {
        Decision::Act(outcome) => *outcome,
        other => panic!("asked for results twice: {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn no_spec_or_instant_panics_the_machine(
        durations in proptest::collection::vec(duration(), 6),
        weight in prop_oneof![Just(1), Just(100), 1i32..=100],
        count in prop_oneof![Just(1), Just(1000), 1i32..=1000],
        cron in prop_oneof![Just("0 3 * * *"), Just("*/5 * * * 1-5"), Just("@daily"), Just("0 0 29 2 *")],
        zone in prop_oneof![Just("Europe/Paris"), Just("Pacific/Kiritimati"), Just("UTC"), Just("America/St_Johns")],
        phase in phase(),
        step in -3i32..10,
        at in instant(),
        now in instant(),
        command in prop_oneof![Just(None), Just(Some(Command::Promote)), Just(Some(Command::Abort))],
    ) {
        // The spec is valid, if extreme: what validation lets through must not break the machine.
        let plan = compile_stage("prod", &spec(&durations, weight, count, cron, zone));
        let plan = plan.map_err(|e| TestCaseError::fail(e.to_string()))?;
        let status = rollout(phase, step, at, weight);
        let releases = [release("r1"), release("r2")];
        let primary = PrimaryView { release: Some("r1".into()), template: None, replicas: 3, available: true, serving: true, detail: String::new() };
        let canary = CanaryView { release: Some("r2".into()), template: None, replicas: 3, available: true, complete: true, weight_in_effect: Some(weight), router_problem: None, changed_by: None };
        let report = GateReport { release: "r2".into(), list: crate::api::gate::GateList::Gates, template: None, results: vec![], recheck_after: std::time::Duration::MAX };
        let mut input = StageInput {
            name: "prod",
            plan: &plan,
            status: &status,
            releases: &releases,
            primary: Some(&primary),
            canary: Some(&canary),
            gates: None,
            measurements: None,
            command,
            invalid: None,
            target: None,
            now,
        };
        let outcome = decide_fully(&input, &report);
        prop_assert!(outcome.requeue_after <= MAX_REQUEUE);
        let idle = StageStatus { rollout: None, ..status.clone() };
        input.status = &idle;
        let outcome = decide_fully(&input, &report);
        prop_assert!(outcome.requeue_after <= MAX_REQUEUE);
    }
}
