//! Canary rollouts driven through a simulated world: the router and the workloads do what
//! the machine asks, gates answer as each test says, and time moves to each requeue.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use proptest::prelude::*;

use super::*;
use crate::api::canary::{CanaryPhase, FailureCounting, FailurePolicy};
use crate::api::release::{Artifact, GateVerdict, ReleaseStageStatus, StagePhaseForRelease as RP};
use crate::api::stage::StagePhase;
use crate::api::stage::{RolloutDirection, RolloutOutcome, StageStatus};
use crate::machine::Measured;
use crate::schedule::later;
use crate::validation::{AnalysisPlan, CanaryPlan, CanaryStepPlan, CompiledTrigger, StagePlan};
use crate::verdict::GateOutcome;

fn analysis(gate: &str, count: i32, failure_limit: i32) -> AnalysisPlan {
    AnalysisPlan {
        gates: vec![gate.into()],
        interval: Duration::from_secs(10),
        count,
        failure_limit,
        failure_counting: FailureCounting::Consecutive,
        inconclusive_limit: 3,
        on_inconclusive: FailurePolicy::Pause,
        initial_delay: Duration::ZERO,
        inconclusive_timeout: Duration::from_secs(600),
        on_inconclusive_timeout: crate::api::canary::InconclusiveTimeoutPolicy::Rollback,
    }
}

fn plan() -> StagePlan {
    StagePlan {
        requires: vec![],
        trigger: CompiledTrigger::Auto,
        windows: vec![],
        gates: vec![],
        progress_deadline: Duration::from_secs(120),
        replicas: 2,
        history_limit: 10,
        canary: Some(CanaryPlan {
            steps: vec![
                CanaryStepPlan::SetWeight(5),
                CanaryStepPlan::Analysis(analysis("error-rate", 2, 2)),
                CanaryStepPlan::SetWeight(25),
                CanaryStepPlan::Analysis(analysis("error-rate", 2, 2)),
                CanaryStepPlan::SetWeight(50),
                CanaryStepPlan::Pause(Some(Duration::from_secs(30))),
            ],
            background: Some(analysis("latency", i32::MAX, 2)),
            max_weight: 100,
            bake: Duration::from_secs(60),
            routing: Some(crate::api::canary::TrafficRouting {
                gateway_api: Some(crate::api::canary::GatewayApiRouting {
                    http_route: "web".into(),
                }),
                service_switch: None,
            }),
            on_failure: FailurePolicy::Rollback,
            scale_down_delay: Duration::ZERO,
            switch_step: None,
        }),
        checks: Default::default(),
        policies: vec![],
        time_to_recover: None,
        emergency: None,
    }
}

/// 10%, then a pause for a person, then 40%.
fn manual_pause_plan() -> StagePlan {
    let mut plan = plan();
    plan.canary.as_mut().unwrap().steps = vec![
        CanaryStepPlan::SetWeight(10),
        CanaryStepPlan::Pause(None),
        CanaryStepPlan::SetWeight(40),
    ];
    plan
}

fn release(name: &str) -> ReleaseView {
    ReleaseView {
        release_type: Default::default(),
        name: name.into(),
        version: name.into(),
        artifacts: vec![Artifact {
            name: "web".into(),
            image: format!("web@sha256:{name}"),
        }],
        valid: true,
        unfit: None,
        review_open: None,
        stages: BTreeMap::new(),
    }
}

/// The cluster as the machine would find it, updated from each outcome.
struct World {
    now: Timestamp,
    status: StageStatus,
    releases: Vec<ReleaseView>,
    primary: Option<String>,
    primary_available: bool,
    canary: Option<String>,
    canary_replicas: i32,
    canary_available: bool,
    weight: i32,
    command: Option<Command>,
    /// Why the spec stopped compiling, when it did.
    invalid: Option<&'static str>,
    /// Every weight the router was asked for, with whether the canary was available then.
    weights: Vec<(i32, bool)>,
    /// The route is gone: the router cannot tell or set the weight.
    route_gone: bool,
    /// Every measurement asked for: scope, the workload it reads, and whether the rollout
    /// was promoted (baking) when it was asked.
    dues: Vec<(String, Measured, bool)>,
    /// Who changed the route's weight behind the machine's back, when someone did.
    changed_by: Option<String>,
    /// No router: the weight in effect is the one the canary workload was last sized for.
    by_replicas: bool,
    sized_for: i32,
    /// What a compare gate's measurements carry, when the gates are compare gates.
    judgement: Option<crate::api::compare::Comparison>,
    /// How each check list's gates answer, and the weight in effect when each was asked.
    checks: GateVerdict,
    checked_at_weight: Vec<i32>,
    /// Some of the canary's pods are not available (it serves, but not in full).
    partly: bool,
}

impl World {
    fn running_v1() -> World {
        let mut v1 = release("v1");
        v1.stages.insert(
            "prod".into(),
            ReleaseStageStatus {
                policy: None,
                phase: RP::Succeeded,
                reason: None,
                message: None,
                started_at: None,
                finished_at: None,
                gates: vec![],
                attempt: None,
                checks: vec![],
                comparisons: vec![],
            },
        );
        World {
            now: "2026-11-23T10:00:00Z".parse().unwrap(),
            status: StageStatus {
                current_release: Some("v1".into()),
                current_version: Some("v1".into()),
                phase: Some(StagePhase::Idle),
                ..Default::default()
            },
            releases: vec![v1, release("v2")],
            primary: Some("v1".into()),
            primary_available: true,
            canary: None,
            canary_replicas: 0,
            canary_available: false,
            weight: 0,
            command: None,
            invalid: None,
            weights: vec![],
            route_gone: false,
            dues: vec![],
            changed_by: None,
            by_replicas: false,
            sized_for: 0,
            judgement: None,
            checks: GateVerdict::Passed,
            checked_at_weight: vec![],
            partly: false,
        }
    }

    /// The weight the router reports: the route's, or the canary's pods' share.
    fn weight_in_effect(&self) -> Option<i32> {
        match (self.by_replicas, self.route_gone) {
            (true, _) => {
                Some(self.sized_for).filter(|_| self.canary_available && self.canary_replicas > 0)
            }
            (false, true) => None,
            (false, false) => Some(self.weight),
        }
    }

    /// The workloads as the machine observes them.
    fn views(&self) -> (Option<PrimaryView>, CanaryView) {
        let primary = self.primary.clone().map(|r| PrimaryView {
            release: Some(r),
            template: None,
            replicas: 2,
            available: self.primary_available,
            serving: self.primary_available,
            detail: "d".into(),
        });
        let canary = CanaryView {
            release: self.canary.clone(),
            template: None,
            replicas: self.canary_replicas,
            available: self.canary_available,
            complete: self.canary_available && !self.partly,
            weight_in_effect: self.weight_in_effect(),
            router_problem: self
                .route_gone
                .then(|| "HTTPRoute 'web' not found".to_string()),
            changed_by: self.changed_by.clone(),
        };
        (primary, canary)
    }

    /// One reconcile; `gates` answers each due measurement.
    fn reconcile(
        &mut self,
        plan: &StagePlan,
        gates: &mut dyn FnMut(&str, &str) -> GateVerdict,
    ) -> Outcome {
        let (primary, canary) = self.views();
        let mut input = StageInput {
            name: "prod",
            plan,
            status: &self.status,
            releases: &self.releases,
            primary: primary.as_ref(),
            canary: Some(&canary),
            gates: None,
            measurements: None,
            command: self.command.take(),
            invalid: self.invalid,
            target: None,
            now: self.now,
        };
        let measured;
        let out = match decide(&input) {
            Decision::Act(out) => *out,
            Decision::Measure { due, .. } => {
                let baking = self.status.rollout.as_ref().and_then(|r| r.canary.as_ref());
                let baking = baking.is_some_and(|c| c.baking_since.is_some());
                for d in &due {
                    self.dues.push((d.scope.clone(), d.workload, baking));
                }
                measured = due
                    .iter()
                    .map(|d| Measurement {
                        workload: d.workload,
                        scope: d.scope.clone(),
                        gate: d.gate.clone(),
                        outcome: GateOutcome {
                            comparison: self.judgement.clone(),
                            ..GateOutcome::new(gates(&d.scope, &d.gate), "measured")
                                .with_value("0.1")
                        },
                    })
                    .collect::<Vec<_>>();
                input.measurements = Some(&measured);
                match decide(&input) {
                    Decision::Act(out) => *out,
                    other => panic!("second decision must act: {other:?}"),
                }
            }
            Decision::EvaluateGates {
                release,
                list,
                gates,
                ..
            } => {
                self.checked_at_weight.push(self.weight);
                let report = answer_checks(self.checks, release, list, &gates);
                input.gates = Some(&report);
                match decide(&input) {
                    Decision::Act(out) => *out,
                    other => panic!("second decision must act: {other:?}"),
                }
            }
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
        if let Some(w) = out.weight {
            assert!((0..=100).contains(&w), "weight {w} out of range");
            self.weights.push((w, self.canary_available));
            self.weight = w;
        }
        match &out.canary {
            Some(DesiredPrimary::Release { name, .. }) => {
                if self.canary.as_deref() != Some(name) {
                    self.canary_available = false;
                }
                self.canary = Some(name.clone());
                self.canary_replicas = 2;
                self.sized_for = out.canary_scale_weight.unwrap_or(0);
            }
            Some(DesiredPrimary::Empty) => {
                self.canary_replicas = 0;
                self.sized_for = 0;
            }
            None => {}
        }
        match &out.primary {
            Some(DesiredPrimary::Release { name, .. }) if self.primary.as_deref() != Some(name) => {
                self.primary = Some(name.clone());
                self.primary_available = false;
            }
            _ => {}
        }
        self.now += out.requeue_after.max(Duration::from_secs(1));
    }

    /// Pods start between reconciles.
    fn pods_start(&mut self) {
        self.canary_available = self.canary.is_some();
        self.primary_available = true;
    }

    fn rollout_phase(&self) -> Option<CanaryPhase> {
        self.status
            .rollout
            .as_ref()
            .and_then(|r| r.canary.as_ref())
            .map(|c| c.phase)
    }
}

fn run(
    world: &mut World,
    plan: &StagePlan,
    max: usize,
    gates: &mut dyn FnMut(&str, &str) -> GateVerdict,
    mut until: impl FnMut(&World) -> bool,
) {
    for _ in 0..max {
        world.reconcile(plan, gates);
        world.pods_start();
        if until(world) {
            return;
        }
    }
    panic!("did not get there in {max} reconciles: {:#?}", world.status);
}

/// Runs with every gate passing until `until` holds.
fn run_healthy(world: &mut World, plan: &StagePlan, until: impl FnMut(&World) -> bool) {
    run(world, plan, 50, &mut |_, _| GateVerdict::Passed, until);
}

#[test]
fn a_healthy_canary_walks_every_step_then_promotes_and_bakes() {
    let plan = plan();
    let mut world = World::running_v1();
    run(
        &mut world,
        &plan,
        200,
        &mut |_, _| GateVerdict::Passed,
        |w| w.status.rollout.is_none() && w.status.current_release.as_deref() == Some("v2"),
    );
    let canary_weights: Vec<i32> = world
        .weights
        .iter()
        .map(|(w, _)| *w)
        .filter(|w| *w > 0)
        .collect::<Vec<_>>();
    let mut distinct = canary_weights.clone();
    distinct.dedup();
    assert_eq!(distinct, [5, 25, 50], "weights rise step by step");
    assert_eq!(world.weight, 0, "after promotion all traffic is on primary");
    assert_eq!(world.primary.as_deref(), Some("v2"));
    assert_eq!(world.canary_replicas, 0, "the canary is scaled to zero");
    assert_eq!(world.status.history[0].outcome, RolloutOutcome::Succeeded);
}

#[test]
fn a_failing_gate_rolls_back_after_failure_limit_measurements() {
    let plan = plan();
    let mut world = World::running_v1();
    let mut measured = 0;
    run(
        &mut world,
        &plan,
        200,
        &mut |_, gate| {
            if gate == "error-rate" {
                measured += 1;
                GateVerdict::Failed
            } else {
                GateVerdict::Passed
            }
        },
        |w| {
            w.status
                .history
                .first()
                .is_some_and(|h| h.outcome == RolloutOutcome::RolledBack)
        },
    );
    assert_eq!(measured, 2, "failureLimit 2 consecutive failures");
    assert_eq!(world.weight, 0);
    assert_eq!(world.primary.as_deref(), Some("v1"));
    assert_eq!(world.canary_replicas, 0);
    let entry = &world.releases[1].stages["prod"];
    assert_eq!(
        (entry.phase, entry.reason.as_deref()),
        (RP::Failed, Some("AnalysisFailed"))
    );
    assert!(entry.message.as_deref().unwrap().contains("error-rate"));
}

#[test]
fn a_compare_gates_judgement_stays_on_the_release_after_the_rollback_it_caused() {
    use crate::api::compare::{Comparison, ComparisonVerdict};
    let plan = plan();
    let mut world = World::running_v1();
    world.judgement = Some(Comparison {
        score: 0.0,
        verdict: ComparisonVerdict::Fail,
        metrics: vec![],
    });
    let failing = &mut |scope: &str, _: &str| match scope.starts_with("step-") {
        true => GateVerdict::Failed,
        false => GateVerdict::Passed,
    };
    let rolled_back = |w: &World| {
        let last = w.status.history.first();
        last.is_some_and(|h| h.outcome == RolloutOutcome::RolledBack)
    };
    run(&mut world, &plan, 200, failing, rolled_back);
    assert!(world.status.rollout.is_none(), "the rollout is over");
    let kept: Vec<(String, String)> = world.releases[1].stages["prod"]
        .comparisons
        .iter()
        .map(|c| (c.gate.clone(), c.scope.clone()))
        .collect();
    // The background analysis' judgements are recorded too, once per gate and scope.
    assert_eq!(
        kept,
        [
            ("latency".to_string(), "background".to_string()),
            ("error-rate".to_string(), "step-1".to_string())
        ]
    );
}

#[test]
fn missing_data_pauses_and_never_promotes_then_rolls_back_at_the_inconclusive_timeout() {
    let plan = plan();
    let mut world = World::running_v1();
    run(
        &mut world,
        &plan,
        100,
        &mut |_, _| GateVerdict::Inconclusive,
        |w| w.rollout_phase() == Some(CanaryPhase::Paused),
    );
    assert_eq!(world.primary.as_deref(), Some("v1"));
    assert!(
        world
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.is_true() && c.message.contains("inconclusive"))
    );
    let paused_at = world.now;
    run(
        &mut world,
        &plan,
        300,
        &mut |_, _| GateVerdict::Inconclusive,
        |w| w.status.rollout.is_none(),
    );
    let waited = world.now.duration_since(paused_at).unsigned_abs();
    assert!(
        waited >= Duration::from_secs(590),
        "paused {waited:?}, not the 10m timeout"
    );
    let record = &world.status.history[0];
    assert_eq!(record.outcome, RolloutOutcome::RolledBack);
    assert!(
        record
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("InconclusiveTimeout")
    );
    assert_eq!(world.primary.as_deref(), Some("v1"));
    assert!(
        world.weights.iter().all(|(w, _)| *w <= 5),
        "never beyond the first step"
    );
}

#[test]
fn onfailure_pause_keeps_the_canary_but_moves_traffic_back() {
    let mut plan = plan();
    plan.canary.as_mut().unwrap().on_failure = FailurePolicy::Pause;
    let mut world = World::running_v1();
    run(
        &mut world,
        &plan,
        200,
        &mut |_, g| {
            if g == "error-rate" {
                GateVerdict::Failed
            } else {
                GateVerdict::Passed
            }
        },
        |w| w.rollout_phase() == Some(CanaryPhase::Paused),
    );
    world.reconcile(&plan, &mut |_, _| GateVerdict::Passed);
    assert_eq!(world.weight, 0);
    assert_eq!(world.canary.as_deref(), Some("v2"));
    assert_eq!(world.canary_replicas, 2, "kept for inspection");
    // A person aborts: the rollout is rolled back.
    world.command = Some(Command::Abort);
    run_healthy(&mut world, &plan, |w| w.status.rollout.is_none());
    assert_eq!(world.status.history[0].outcome, RolloutOutcome::RolledBack);
    assert!(
        world.status.history[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("Aborted")
    );
}

#[test]
fn an_abort_without_a_router_scales_the_canary_down_and_finishes_the_rollback() {
    let mut plan = manual_pause_plan();
    plan.canary.as_mut().unwrap().routing = None;
    let mut world = World::running_v1();
    world.by_replicas = true;
    run_healthy(&mut world, &plan, |w| {
        w.rollout_phase() == Some(CanaryPhase::Paused)
    });
    assert_eq!(
        world.weight_in_effect(),
        Some(10),
        "the canary's pods carry 10%"
    );
    world.command = Some(Command::Abort);
    run_healthy(&mut world, &plan, |w| w.status.rollout.is_none());
    assert_eq!(world.status.history[0].outcome, RolloutOutcome::RolledBack);
    assert_eq!(world.canary_replicas, 0, "its pods were its traffic");
    assert_eq!(world.primary.as_deref(), Some("v1"));
}

#[test]
fn promote_skips_the_remaining_steps() {
    let plan = plan();
    let mut world = World::running_v1();
    run_healthy(&mut world, &plan, |w| w.weight == 5);
    world.command = Some(Command::Promote);
    world.reconcile(&plan, &mut |_, _| GateVerdict::Passed);
    assert_eq!(world.rollout_phase(), Some(CanaryPhase::Promoting));
    run(
        &mut world,
        &plan,
        100,
        &mut |_, _| GateVerdict::Passed,
        |w| w.status.rollout.is_none() && w.status.current_release.as_deref() == Some("v2"),
    );
    assert!(world.weights.iter().all(|(w, _)| *w <= 5));
}

#[test]
fn a_pause_without_duration_waits_for_promote_then_continues() {
    let plan = manual_pause_plan();
    let mut world = World::running_v1();
    for _ in 0..40 {
        world.reconcile(&plan, &mut |_, _| GateVerdict::Passed);
        world.pods_start();
    }
    assert_eq!(world.rollout_phase(), Some(CanaryPhase::Paused));
    assert_eq!(world.weight, 10);
    world.command = Some(Command::Promote);
    run(
        &mut world,
        &plan,
        20,
        &mut |_, _| GateVerdict::Passed,
        |w| w.weight == 40,
    );
}

#[test]
fn a_breach_during_bake_reverts_primary_to_the_previous_release() {
    let plan = plan();
    let mut world = World::running_v1();
    run(
        &mut world,
        &plan,
        200,
        &mut |_, _| GateVerdict::Passed,
        |w| w.rollout_phase() == Some(CanaryPhase::Baking),
    );
    assert_eq!(world.primary.as_deref(), Some("v2"));
    run(
        &mut world,
        &plan,
        50,
        &mut |scope, _| {
            if scope == "background" {
                GateVerdict::Failed
            } else {
                GateVerdict::Passed
            }
        },
        |w| w.status.rollout.is_none(),
    );
    assert_eq!(world.primary.as_deref(), Some("v1"));
    assert_eq!(world.status.current_release.as_deref(), Some("v1"));
    assert_eq!(world.status.history[0].outcome, RolloutOutcome::RolledBack);
}

#[test]
fn missing_data_during_the_bake_pauses_without_undoing_the_promotion() {
    let plan = plan();
    let mut world = World::running_v1();
    run(
        &mut world,
        &plan,
        200,
        &mut |_, _| GateVerdict::Passed,
        |w| w.rollout_phase() == Some(CanaryPhase::Baking),
    );
    for _ in 0..10 {
        world.reconcile(&plan, &mut |_, _| GateVerdict::Inconclusive);
        world.pods_start();
    }
    assert_eq!(world.rollout_phase(), Some(CanaryPhase::Paused));
    assert_eq!(
        world.primary.as_deref(),
        Some("v2"),
        "the promoted primary stays"
    );
    assert_eq!(world.canary_replicas, 0, "no canary pods come back");
    assert_eq!(world.weight, 0);
}

#[test]
fn the_first_release_rolls_out_without_a_canary() {
    let plan = plan();
    let mut world = World::running_v1();
    world.status = StageStatus::default();
    world.primary = None;
    world.releases.remove(0);
    run(
        &mut world,
        &plan,
        20,
        &mut |_, _| GateVerdict::Passed,
        |w| w.status.rollout.is_none() && w.status.current_release.as_deref() == Some("v2"),
    );
    assert!(world.canary.is_none());
}

#[test]
fn a_newer_release_waits_for_the_canary_in_progress() {
    let plan = plan();
    let mut world = World::running_v1();
    run_healthy(&mut world, &plan, |w| w.weight == 25);
    world.releases.push(release("v3"));
    run(
        &mut world,
        &plan,
        200,
        &mut |_, _| GateVerdict::Passed,
        |w| w.status.rollout.is_none() && w.status.current_release.as_deref() == Some("v2"),
    );
    assert_eq!(
        world.status.history.len(),
        1,
        "v2 finished its own analysis first"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Through any run of pauses and resumes in the bake, with the primary's pods coming and
    /// going: every measurement reads the primary, and a bake whose data is never a pass never
    /// completes.
    #[test]
    fn the_bake_watches_the_primary_and_needs_a_pass(
        answers in proptest::collection::vec(0u8..6, 1..40),
        flaps in proptest::collection::vec(any::<bool>(), 1..40),
        passing in any::<bool>(),
    ) {
        let plan = plan();
        let mut world = baking_world(&plan);
        let mut i = 0usize;
        for round in 0..200 {
            world.primary_available = !flaps[round % flaps.len()];
            world.reconcile(&plan, &mut |_, _| {
                i += 1;
                match answers[i % answers.len()] {
                    0 if passing => GateVerdict::Passed,
                    0..=4 => GateVerdict::Inconclusive,
                    _ => GateVerdict::Failed,
                }
            });
            if world.status.rollout.is_none() {
                break;
            }
        }
        let baked: Vec<&(String, Measured, bool)> = world.dues.iter().filter(|d| d.2).collect();
        prop_assert!(baked.iter().all(|(_, w, _)| *w == Measured::Primary), "{:?}", baked);
        let succeeded = world.status.history.first().is_some_and(|h| h.outcome == RolloutOutcome::Succeeded);
        prop_assert!(passing || !succeeded, "completed on missing data: {:?}", world.status.history);
    }

    /// Whatever the gates answer and whenever the canary's pods come and go: weights stay in
    /// 0..100, traffic never moves to an unavailable canary, and a rollout that fails ends
    /// with all traffic on a primary that runs the previous release.
    #[test]
    fn traffic_is_always_safe(verdicts in proptest::collection::vec(0u8..4, 1..60), flaps in proptest::collection::vec(any::<bool>(), 1..60)) {
        let plan = plan();
        let mut world = World::running_v1();
        let mut i = 0usize;
        for round in 0..250 {
            let v = verdicts[round % verdicts.len()];
            world.reconcile(&plan, &mut |_, _| {
                i += 1;
                match verdicts[i % verdicts.len()].max(v) % 4 {
                    0 | 1 => GateVerdict::Passed,
                    2 => GateVerdict::Failed,
                    _ => GateVerdict::Inconclusive,
                }
            });
            world.pods_start();
            if flaps[round % flaps.len()] && world.weight == 0 {
                // The canary's pods crash while it has no traffic.
                world.canary_available = false;
            }
            if world.status.rollout.is_none() {
                break;
            }
        }
        for (w, available) in &world.weights {
            prop_assert!(*w == 0 || *available, "weight {} sent to an unavailable canary", w);
        }
        if let Some(last) = world.status.history.first().filter(|h| h.outcome == RolloutOutcome::RolledBack) {
            prop_assert_eq!(world.weight, 0, "{:?}", last);
            prop_assert_eq!(world.primary.as_deref(), Some("v1"));
        }
        if world.status.rollout.as_ref().is_some_and(|r| r.direction == RolloutDirection::Rollback) {
            prop_assert!(world.weights.last().is_some_and(|(w, _)| *w == 0) || world.primary_available);
        }
    }
}

#[test]
fn a_route_deleted_mid_canary_rolls_back_by_the_progress_deadline_saying_why() {
    let plan = plan();
    let mut world = World::running_v1();
    run_healthy(&mut world, &plan, |w| w.weight > 0);
    world.route_gone = true;
    let gone_at = world.now;
    let healthy = &mut |_: &str, _: &str| GateVerdict::Passed;
    run(&mut world, &plan, 200, healthy, |w| {
        !w.status.history.is_empty()
    });
    let record = &world.status.history[0];
    assert_eq!(record.outcome, RolloutOutcome::RolledBack);
    let why = record.reason.clone().unwrap_or_default();
    assert!(
        why.starts_with("TrafficUnknown: the traffic router cannot tell"),
        "{why}"
    );
    assert!(why.contains("HTTPRoute 'web' not found"), "{why}");
    let took = world.now.duration_since(gone_at);
    assert!(
        took <= jiff::SignedDuration::try_from(plan.progress_deadline * 2).unwrap(),
        "rolled back by its deadline: {took:?}"
    );
    assert_eq!(world.primary.as_deref(), Some("v1"));
}

#[test]
fn a_spec_that_stops_compiling_mid_canary_takes_traffic_off_and_rolls_back() {
    let plan = plan();
    let mut world = World::running_v1();
    run_healthy(&mut world, &plan, |w| w.weight == 25);
    // The spec no longer compiles: the rollback uses what the rollout recorded at its start.
    let rollout = world.status.rollout.clone().expect("a rollout in progress");
    assert!(
        rollout.routing.is_some(),
        "the routing was recorded: {rollout:?}"
    );
    let fallback = crate::validation::rollback_plan(&rollout, 0);
    assert_eq!(
        fallback.replicas, plan.replicas,
        "the recorded replicas, not the fallback"
    );
    world.invalid = Some("spec.progressDeadline: longer than 366d");
    world.reconcile(&fallback, &mut |_, _| GateVerdict::Passed);
    assert_eq!(world.weight, 0, "traffic leaves the canary at once");
    run_healthy(&mut world, &fallback, |w| w.status.rollout.is_none());
    let record = &world.status.history[0];
    assert_eq!(record.outcome, RolloutOutcome::RolledBack);
    let why = record.reason.as_deref().unwrap_or_default();
    assert!(
        why.contains("InvalidSpec") && why.contains("spec.progressDeadline"),
        "{why}"
    );
    assert_eq!(world.primary.as_deref(), Some("v1"));
}

/// Healthy up to the bake: promoted, all traffic on the primary.
fn baking_world(plan: &StagePlan) -> World {
    let mut world = World::running_v1();
    run_healthy(&mut world, plan, |w| {
        w.rollout_phase() == Some(CanaryPhase::Baking)
    });
    world
}

fn baking_since(world: &World) -> Timestamp {
    let canary = world
        .status
        .rollout
        .as_ref()
        .and_then(|r| r.canary.as_ref());
    canary.and_then(|c| c.baking_since).expect("baking")
}

#[test]
fn a_bake_paused_for_want_of_data_watches_the_primary_and_resumes_where_it_stopped() {
    let plan = plan();
    let mut world = baking_world(&plan);
    let began = baking_since(&world);
    assert_eq!(
        world.status.current_release.as_deref(),
        Some("v2"),
        "CURRENT is what serves"
    );
    run(
        &mut world,
        &plan,
        50,
        &mut |_, _| GateVerdict::Inconclusive,
        |w| w.rollout_phase() == Some(CanaryPhase::Paused),
    );
    let paused_at = world.now;
    // Prometheus is back: the bake goes on by itself, with the time it had left.
    run_healthy(&mut world, &plan, |w| {
        w.rollout_phase() == Some(CanaryPhase::Baking)
    });
    let resumed_at = world.now;
    let shifted = baking_since(&world).duration_since(began).unsigned_abs();
    assert!(shifted >= resumed_at.duration_since(paused_at).unsigned_abs());
    assert!(
        world.status.history.is_empty(),
        "the bake was not restarted nor cut short"
    );
    assert!(
        world
            .status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("left")
    );
    // The promoted release degrades: the bake rolls the primary back.
    run(
        &mut world,
        &plan,
        50,
        &mut |_, _| GateVerdict::Failed,
        |w| w.status.rollout.is_none(),
    );
    assert_eq!(world.status.history[0].outcome, RolloutOutcome::RolledBack);
    assert_eq!(world.primary.as_deref(), Some("v1"));
    let baked: Vec<&(String, Measured, bool)> = world.dues.iter().filter(|d| d.2).collect();
    assert!(!baked.is_empty());
    assert!(
        baked.iter().all(|(_, w, _)| *w == Measured::Primary),
        "during the bake, pauses included, {{canary}} is the primary: {baked:?}"
    );
}

#[test]
fn a_bake_whose_last_measurement_is_missing_does_not_complete() {
    let plan = plan();
    let mut world = baking_world(&plan);
    let done_at = later(baking_since(&world), Duration::from_secs(60));
    run_healthy(&mut world, &plan, |w| {
        later(w.now, Duration::from_secs(10)) >= done_at
    });
    // The last measurements before the bake's end are inconclusive (fewer than the limit).
    for _ in 0..2 {
        world.reconcile(&plan, &mut |_, _| GateVerdict::Inconclusive);
    }
    assert!(world.now >= done_at);
    assert!(
        world.status.rollout.is_some(),
        "missing data never completes the bake"
    );
    let said = world.status.message.clone().unwrap_or_default();
    assert!(
        said.contains("waiting for a passing measurement of gate 'latency'"),
        "{said}"
    );
    run_healthy(&mut world, &plan, |w| w.status.rollout.is_none());
    assert_eq!(world.status.history[0].outcome, RolloutOutcome::Succeeded);
}

#[test]
fn a_pass_read_from_a_primary_without_available_pods_is_inconclusive() {
    let plan = plan();
    let mut world = baking_world(&plan);
    for _ in 0..40 {
        world.primary_available = false;
        world.reconcile(&plan, &mut |_, _| GateVerdict::Passed);
    }
    let latency = world
        .status
        .rollout
        .as_ref()
        .and_then(|r| r.canary.as_ref())
        .map(|c| {
            c.analysis
                .iter()
                .find(|a| a.scope == "background")
                .cloned()
                .unwrap()
        });
    let latency = latency.expect("still baking");
    assert_eq!(latency.last_verdict, Some(GateVerdict::Inconclusive));
    assert!(
        latency
            .last_message
            .unwrap_or_default()
            .contains("no available pods")
    );
    assert!(
        world.status.history.is_empty(),
        "no success from stale series"
    );
}

#[test]
fn traffic_leaves_the_canary_before_its_pods_do() {
    let mut plan = plan();
    plan.canary.as_mut().unwrap().scale_down_delay = Duration::from_secs(30);
    let mut world = World::running_v1();
    run_healthy(&mut world, &plan, |w| {
        w.rollout_phase() == Some(CanaryPhase::Baking)
    });
    let moved = world.now;
    assert_eq!(world.weight, 0);
    run_healthy(&mut world, &plan, |w| w.canary_replicas == 0);
    let drained = world.now.duration_since(moved).unsigned_abs();
    assert!(
        drained >= Duration::from_secs(29),
        "scaled down after {drained:?}"
    );
    assert!(
        drained < Duration::from_secs(45),
        "scaled down after {drained:?}"
    );
}

#[test]
fn a_weight_changed_by_someone_else_is_put_back_and_a_fight_is_reported() {
    let mut plan = plan();
    plan.canary.as_mut().unwrap().steps[5] = CanaryStepPlan::Pause(None);
    let mut world = World::running_v1();
    run_healthy(&mut world, &plan, |w| {
        w.rollout_phase() == Some(CanaryPhase::Paused)
    });
    assert_eq!(world.weight, 50);
    world.changed_by = Some("kubectl-edit".into());
    world.weight = 10;
    let out = world.reconcile(&plan, &mut |_, _| GateVerdict::Passed);
    assert_eq!(out.weight, Some(50), "put back");
    let drift = out
        .events
        .iter()
        .find(|e| e.kind == crate::machine::Transition::TrafficDrift);
    let note = drift.map(|e| e.note.clone()).unwrap_or_default();
    assert!(
        note.contains("was 10%, not 50%, changed by kubectl-edit"),
        "{note}"
    );
    for _ in 0..3 {
        world.weight = 10;
        world.reconcile(&plan, &mut |_, _| GateVerdict::Passed);
    }
    let contested = world
        .status
        .conditions
        .iter()
        .find(|c| c.reason == "TrafficContested")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        contested.contains("keeps being changed by kubectl-edit"),
        "{contested}"
    );
    assert_eq!(world.weight, 10, "no longer fought over");
    let corrections = |w: &World| {
        let rollout = w.status.rollout.as_ref().unwrap();
        rollout.canary.as_ref().unwrap().drift_corrections
    };
    assert_eq!(corrections(&world), 3, "three weights were put back");
    // Passes woken by events (the route's watch, a gate's answer), not by the clock; the
    // first takes the measurement due now.
    let at = world.now;
    world.reconcile(&plan, &mut |_, _| GateVerdict::Passed);
    let before = world.status.clone();
    for _ in 0..50 {
        world.now = at;
        world.reconcile(&plan, &mut |_, _| GateVerdict::Passed);
    }
    assert_eq!(
        corrections(&world),
        3,
        "passes that leave it alone count nothing"
    );
    assert_eq!(
        world.status.rollout, before.rollout,
        "a contested route writes the status once, not every pass"
    );
}

#[test]
fn a_pause_for_missing_data_takes_traffic_off_a_canary_that_stopped_serving() {
    let plan = plan();
    let mut world = World::running_v1();
    run_healthy(&mut world, &plan, |w| w.weight == 25);
    for _ in 0..100 {
        world.canary_available = false;
        world.reconcile(&plan, &mut |_, _| GateVerdict::Inconclusive);
        if world.rollout_phase() == Some(CanaryPhase::Paused) {
            break;
        }
    }
    assert_eq!(world.rollout_phase(), Some(CanaryPhase::Paused));
    assert_eq!(
        world.weight, 0,
        "no traffic to a canary without available pods"
    );
    assert!(
        world
            .weights
            .iter()
            .all(|(w, available)| *w == 0 || *available)
    );
}

#[test]
fn a_promote_on_a_bake_paused_for_missing_data_goes_on_baking_without_starting_again() {
    let plan = plan();
    let mut world = baking_world(&plan);
    let began = baking_since(&world);
    run(
        &mut world,
        &plan,
        50,
        &mut |_, _| GateVerdict::Inconclusive,
        |w| w.rollout_phase() == Some(CanaryPhase::Paused),
    );
    let paused_at = paused_since(&world);
    let left = later(began, Duration::from_secs(60)).duration_since(paused_at);
    // The person looks into it for longer than the bake had left, then promotes.
    world.now = later(world.now, Duration::from_secs(120));
    let promoted_at = world.now;
    world.command = Some(Command::Promote);
    let out = world.reconcile(&plan, &mut |_, _| GateVerdict::Inconclusive);
    let notes: Vec<&str> = out.events.iter().map(|e| e.note.as_str()).collect();
    assert_eq!(
        world.rollout_phase(),
        Some(CanaryPhase::Baking),
        "{notes:?}"
    );
    let done_at = later(baking_since(&world), Duration::from_secs(60));
    assert_eq!(
        done_at.duration_since(promoted_at),
        left,
        "the bake goes on with the time it had left, neither from the start nor cut short"
    );
    assert!(world.status.history.is_empty(), "still baking");
    let message = world.status.message.clone().unwrap_or_default();
    assert!(message.contains("left"), "{message}");
}

fn paused_since(world: &World) -> Timestamp {
    let canary = world
        .status
        .rollout
        .as_ref()
        .and_then(|r| r.canary.as_ref());
    canary
        .and_then(|c| c.inconclusive_since)
        .expect("paused for missing data")
}

#[test]
fn missing_data_during_a_pause_for_a_person_leaves_that_pause_alone() {
    let plan = manual_pause_plan();
    let mut world = World::running_v1();
    run_healthy(&mut world, &plan, |w| {
        w.rollout_phase() == Some(CanaryPhase::Paused)
    });
    for _ in 0..30 {
        world.reconcile(&plan, &mut |_, _| GateVerdict::Inconclusive);
    }
    // The data returns: the pause for a person is not lifted by it.
    for _ in 0..30 {
        world.reconcile(&plan, &mut |_, _| GateVerdict::Passed);
    }
    assert_eq!(world.rollout_phase(), Some(CanaryPhase::Paused));
    assert_eq!(world.weight, 10);
    world.command = Some(Command::Promote);
    run_healthy(&mut world, &plan, |w| w.weight == 40);
}

#[test]
fn a_step_paused_for_missing_data_resumes_when_its_gates_pass_again() {
    let mut plan = plan();
    let mut two = analysis("error-rate", 2, 2);
    two.gates.push("latency".into());
    plan.canary.as_mut().unwrap().steps[1] = CanaryStepPlan::Analysis(two);
    let mut world = World::running_v1();
    run_healthy(&mut world, &plan, |w| w.weight == 5);
    // error-rate finishes its count; then latency's data goes missing.
    let mut n = 0;
    run(
        &mut world,
        &plan,
        50,
        &mut |scope, gate| {
            n += 1;
            match (scope, gate, n > 4) {
                ("step-1", "latency", true) => GateVerdict::Inconclusive,
                _ => GateVerdict::Passed,
            }
        },
        |w| w.rollout_phase() == Some(CanaryPhase::Paused),
    );
    run_healthy(&mut world, &plan, |w| w.weight == 25);
    assert_eq!(world.rollout_phase(), Some(CanaryPhase::Stepping));
}

#[path = "blue_green_tests.rs"]
mod blue_green;

/// A check list's gates, each answering `verdict`.
fn answer_checks(
    verdict: GateVerdict,
    release: String,
    list: crate::api::gate::GateList,
    gates: &[String],
) -> crate::machine::GateReport {
    let results = gates
        .iter()
        .map(|g| (g.clone(), GateOutcome::new(verdict, "checked")))
        .collect();
    crate::machine::GateReport {
        release,
        list,
        template: None,
        results,
        recheck_after: Duration::from_secs(10),
    }
}
