//! Release policies in the machine: a release's type picks the rules it meets at a stage,
//! and what the policy changed is on its entry, its rollout and its events.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::*;
use crate::api::gate::GateList;
use crate::api::release::{
    GateVerdict, ReleaseStageStatus, ReleaseType, StagePhaseForRelease as RP,
};
use crate::api::stage::{ActiveRollout, RolloutDirection, StageStatus};
use crate::validation::{StagePlan, compile_stage};
use crate::verdict::GateOutcome;

const HOTFIX: &str = "hotfix policy: gate soak skipped; gate two-signoffs required; stage staging not required; time to recover 5m";

fn t(s: &str) -> Timestamp {
    format!("2026-12-07T{s}Z").parse().unwrap()
}

/// prod requires test and staging and soaks; hotfixes skip staging and the soak, and need
/// two sign-offs.
fn plan() -> StagePlan {
    let spec = serde_json::json!({
        "pipeline": "shop", "requires": ["test", "staging"], "target": {"name": "web"},
        "gates": ["soak"],
        "policies": [{"name": "hotfix", "types": ["hotfix"], "gates": ["two-signoffs"],
                      "skipRequires": ["staging"], "rollback": {"timeToRecover": "5m"}}],
    });
    let spec = serde_json::from_value(spec).expect("a StageSpec");
    compile_stage("prod", &spec).expect("a valid spec")
}

/// A release of this type that succeeded in `passed`.
fn release(name: &str, release_type: ReleaseType, passed: &[&str]) -> ReleaseView {
    let done = ReleaseStageStatus::new(RP::Succeeded);
    ReleaseView {
        release_type,
        name: name.into(),
        version: format!("{name}.0"),
        artifacts: vec![crate::api::release::Artifact {
            name: "web".into(),
            image: format!("web@sha256:{name}"),
        }],
        valid: true,
        unfit: None,
        review_open: None,
        stages: passed
            .iter()
            .map(|s| (s.to_string(), done.clone()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn input<'a>(
    plan: &'a StagePlan,
    status: &'a StageStatus,
    releases: &'a [ReleaseView],
    gates: Option<&'a GateReport>,
    now: Timestamp,
) -> StageInput<'a> {
    StageInput {
        name: "prod",
        plan,
        status,
        releases,
        primary: None,
        canary: None,
        gates,
        measurements: None,
        command: None,
        invalid: None,
        target: None,
        now,
    }
}

fn passed(release: &str, gate: &str) -> GateReport {
    GateReport {
        release: release.into(),
        list: GateList::Gates,
        template: None,
        results: vec![(gate.into(), GateOutcome::new(GateVerdict::Passed, "ok"))],
        recheck_after: Duration::from_secs(30),
    }
}

#[test]
fn a_hotfix_skips_only_the_stage_and_gate_its_policy_names_while_a_feature_waits_for_them() {
    let plan = plan();
    let status = StageStatus::default();
    let releases = [
        release("h1", ReleaseType::Hotfix, &["test"]),
        release("f2", ReleaseType::Feature, &["test"]),
        release("h3", ReleaseType::Hotfix, &["staging"]),
    ];
    let decision = decide(&input(&plan, &status, &releases, None, t("10:00:00")));
    let Decision::EvaluateGates { release, gates, .. } = decision else {
        panic!("expected the hotfix's gates to be asked for, got {decision:?}");
    };
    assert_eq!(
        release, "h1",
        "h3 has not passed test, which its policy does not skip"
    );
    assert_eq!(gates, ["two-signoffs"], "the policy's gates, not the soak");
}

#[test]
fn a_feature_meets_the_stages_own_gates() {
    let plan = plan();
    let status = StageStatus::default();
    let releases = [release("f1", ReleaseType::Feature, &["test", "staging"])];
    let decision = decide(&input(&plan, &status, &releases, None, t("10:00:00")));
    let Decision::EvaluateGates { gates, .. } = decision else {
        panic!("expected the feature's gates to be asked for, got {decision:?}");
    };
    assert_eq!(gates, ["soak"]);
}

#[test]
fn a_hotfix_rollout_records_its_policy_on_the_rollout_the_entry_and_the_event() {
    let plan = plan();
    let status = StageStatus::default();
    let releases = [
        release("h1", ReleaseType::Hotfix, &["test"]),
        release("f2", ReleaseType::Feature, &["test"]),
    ];
    let report = passed("h1", "two-signoffs");
    let out = act(&input(
        &plan,
        &status,
        &releases,
        Some(&report),
        t("10:00:00"),
    ));
    let rollout = out.status.rollout.expect("the hotfix rolls out");
    assert_eq!(rollout.policy.as_deref(), Some("hotfix"));
    assert_eq!(out.release_updates["h1"].policy.as_deref(), Some(HOTFIX));
    let started = out
        .events
        .iter()
        .find(|e| e.kind == Transition::RolloutStarted);
    let started = started.expect("a RolloutStarted event");
    assert!(
        started.note.ends_with(&format!("under the {HOTFIX}")),
        "{}",
        started.note
    );
    assert_eq!(started.policy.as_deref(), Some(HOTFIX));
    let waiting = &out.release_updates["f2"];
    assert_eq!(
        (waiting.phase, waiting.policy.as_deref()),
        (RP::Waiting, None)
    );
    assert!(waiting.message.as_deref().unwrap().contains("staging"));
}

/// A hotfix rollout that started at 10:00 and is rolling back to r0.
fn rolling_back() -> StageStatus {
    let rollout = ActiveRollout {
        emergency: None,
        policy: Some("hotfix".into()),
        release: "h1".into(),
        version: "h1.0".into(),
        started_at: t("10:00:00"),
        direction: RolloutDirection::Rollback,
        previous_release: Some("r0".into()),
        previous_version: Some("r0.0".into()),
        previous_artifacts: vec![],
        reason: Some("ProgressDeadlineExceeded: not available".into()),
        canary: None,
        replicas: Some(1),
        routing: None,
        template: None,
        previous_template: None,
        configuration: false,
        checks: None,
    };
    StageStatus {
        rollout: Some(rollout),
        ..Default::default()
    }
}

#[test]
fn a_rollback_under_a_policy_says_whether_it_met_the_time_to_recover() {
    let plan = plan();
    let status = rolling_back();
    let releases = [
        release("r0", ReleaseType::Feature, &["test", "staging"]),
        release("h1", ReleaseType::Hotfix, &["test"]),
    ];
    let primary = PrimaryView {
        release: Some("r0".into()),
        template: None,
        replicas: 1,
        available: true,
        serving: true,
        detail: "available".into(),
    };
    for (now, verdict) in [
        (
            "10:04:00",
            "240s after the rollout started: time-to-recover target of 300s met",
        ),
        (
            "10:06:00",
            "360s after the rollout started: time-to-recover target of 300s MISSED",
        ),
    ] {
        let mut inp = input(&plan, &status, &releases, None, t(now));
        inp.primary = Some(&primary);
        let out = act(&inp);
        let done = out
            .events
            .iter()
            .find(|e| e.kind == Transition::RollbackCompleted);
        let done = done.expect("the rollback completes");
        assert!(done.note.contains(verdict), "{}", done.note);
    }
}

fn act(input: &StageInput) -> Outcome {
    match decide(input) {
        Decision::Act(outcome) => *outcome,
        other => panic!("expected an outcome, got {other:?}"),
    }
}

mod props {
    //! No sequence of commands, policies and emergencies lets a release start a rollout past
    //! an approval gate its policy does not remove, or an emergency past its own approvals;
    //! each release a policy let past it says so, and each emergency rollout records every
    //! control it skipped.

    use proptest::prelude::*;

    use super::*;

    const TYPES: [ReleaseType; 3] = [
        ReleaseType::Feature,
        ReleaseType::Patch,
        ReleaseType::Hotfix,
    ];
    const GATES: [&str; 3] = ["soak", "approval", "ticket"];

    fn subset<T: Clone + std::fmt::Debug>(items: &'static [T]) -> impl Strategy<Value = Vec<T>> {
        proptest::sample::subsequence(items.to_vec(), 0..=items.len())
    }

    fn policy() -> impl Strategy<Value = serde_json::Value> {
        let types = proptest::sample::subsequence(TYPES.to_vec(), 1..=3);
        (
            types,
            proptest::option::of(subset(&GATES)),
            subset(&GATES),
            any::<bool>(),
        )
            .prop_map(|(types, gates, add, skip)| {
                let mut p = serde_json::json!({"name": "p", "types": types, "addGates": add});
                if let Some(gates) = gates {
                    p["gates"] = serde_json::json!(gates);
                }
                if skip {
                    p["skipRequires"] = serde_json::json!(["test"]);
                }
                p
            })
    }

    fn command() -> impl Strategy<Value = Option<Command>> {
        prop_oneof![
            Just(None),
            Just(Some(Command::Promote)),
            Just(Some(Command::Abort)),
            (0..3usize).prop_map(|i| Some(Command::Retry(format!("r{i}")))),
            (0..3usize).prop_map(|i| Some(Command::Emergency(
                crate::api::emergency::EmergencyRequest {
                    release: format!("r{i}"),
                    requester: "alice".into(),
                    reason: "outage".into(),
                    reference: "INC-1".into(),
                    since: t("10:00:00"),
                }
            ))),
        ]
    }

    /// Every gate passes but `approval`, which waits, and the emergency's approvals, which
    /// pass only when `emergency_approved`.
    fn answer(release: &str, gates: &[String], emergency_approved: bool) -> GateReport {
        let mut results = Vec::new();
        for gate in gates {
            let verdict = match gate.as_str() {
                "approval" => GateVerdict::Pending,
                "emergency:prod" if !emergency_approved => GateVerdict::Pending,
                _ => GateVerdict::Passed,
            };
            results.push((gate.clone(), GateOutcome::new(verdict, "answered")));
            if verdict != GateVerdict::Passed {
                break;
            }
        }
        GateReport {
            release: release.into(),
            list: GateList::Gates,
            template: None,
            results,
            recheck_after: Duration::from_secs(30),
        }
    }

    fn step(input: &StageInput<'_>, emergency_approved: bool) -> Outcome {
        match decide(input) {
            Decision::Act(outcome) => *outcome,
            Decision::EvaluateGates {
                release,
                gates,
                list,
                ..
            } => {
                let report = GateReport {
                    list,
                    ..answer(&release, &gates, emergency_approved)
                };
                act(&StageInput {
                    gates: Some(&report),
                    command: input.command.clone(),
                    ..*input
                })
            }
            other => panic!("a rolling stage asked for {other:?}"),
        }
    }

    /// The plan, unless validation refuses the policies (two taking one type): a spec the
    /// emergency makes invalid would be a failure, not a skip.
    fn plan_with(policies: Vec<serde_json::Value>, blackout: bool) -> Option<StagePlan> {
        let policies: Vec<serde_json::Value> = policies
            .into_iter()
            .enumerate()
            .map(|(i, mut p)| {
                p["name"] = serde_json::json!(format!("p{i}"));
                p
            })
            .collect();
        let windows = match blackout {
            true => {
                serde_json::json!([{"kind": "deny", "schedule": "0 0 * * *", "duration": "24h"}])
            }
            false => serde_json::json!([]),
        };
        let spec = serde_json::json!({
            "pipeline": "shop", "requires": ["test"], "target": {"name": "web"},
            "gates": ["soak", "approval"], "policies": policies, "windows": windows,
            "emergency": {"approvals": {"groups": ["sre"]}, "bypass": {"windows": true, "gates": ["approval"]}},
        });
        match compile_stage("prod", &serde_json::from_value(spec).ok()?) {
            Ok(plan) => Some(plan),
            Err(e) if e.to_string().contains("already take policy") => None,
            Err(e) => panic!("a valid spec was refused: {e}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn no_command_or_policy_gets_a_release_past_an_approval_its_policy_keeps(
            policies in proptest::collection::vec(policy(), 0..3),
            types in proptest::collection::vec(proptest::sample::select(TYPES.to_vec()), 3),
            tested in proptest::collection::vec(any::<bool>(), 3),
            commands in proptest::collection::vec(command(), 1..10),
            emergency_approved in any::<bool>(),
            blackout in any::<bool>(),
        ) {
            let Some(plan) = plan_with(policies, blackout) else { return Ok(()) };
            let mut releases: Vec<ReleaseView> = (0..3)
                .map(|i| {
                    let passed: &[&str] = if tested[i] { &["test"] } else { &[] };
                    release(&format!("r{i}"), types[i], passed)
                })
                .collect();
            let mut status = StageStatus::default();
            let mut primary: Option<PrimaryView> = None;
            for (i, command) in commands.into_iter().enumerate() {
                let now = t("10:00:00") + jiff::SignedDuration::from_secs(60 * i as i64);
                let mut inp = input(&plan, &status, &releases, None, now);
                inp.primary = primary.as_ref();
                inp.command = command;
                let out = step(&inp, emergency_approved);
                let started = out.status.rollout.as_ref().filter(|_| status.rollout.is_none());
                if let Some(rollout) = started {
                    let r = releases.iter().find(|r| r.name == rollout.release).unwrap();
                    let gates = &plan.for_type(r.release_type).gates;
                    match &rollout.emergency {
                        Some(_) => {
                            prop_assert!(emergency_approved, "{} went out as an unapproved emergency", r.name);
                            let kinds: Vec<Transition> = out.events.iter().map(|e| e.kind).collect();
                            let bypassed = out.events.iter().filter(|e| e.kind == Transition::Bypassed);
                            let skipped: Vec<&str> = bypassed.filter_map(|e| e.item.as_deref()).collect();
                            // Every control of the release's own plan that the emergency
                            // skipped, and only those.
                            let mut expected: Vec<&str> = Vec::new();
                            if blackout {
                                expected.push("windows");
                            }
                            if gates.contains(&"approval".to_string()) {
                                expected.push("gate approval");
                            }
                            prop_assert_eq!(skipped, expected);
                            prop_assert!(kinds.contains(&Transition::BreakGlass));
                        }
                        None => prop_assert!(!gates.contains(&"approval".to_string()), "{} rolled out past its approval", r.name),
                    }
                }
                for (name, entry) in &out.release_updates {
                    let r = releases.iter_mut().find(|r| &r.name == name).unwrap();
                    let skipped = !plan.for_type(r.release_type).gates.contains(&"approval".to_string());
                    let said = entry.policy.as_deref().unwrap_or_default();
                    prop_assert_eq!(skipped, said.contains("gate approval skipped"), "{}: {:?}", name, said);
                    r.stages.insert("prod".into(), entry.clone());
                }
                if let Some(DesiredPrimary::Release { name, .. }) = &out.primary {
                    primary = Some(PrimaryView { release: Some(name.clone()), template: None, replicas: 1, available: true, serving: true, detail: String::new() });
                }
                status = out.status;
            }
        }
    }
}
