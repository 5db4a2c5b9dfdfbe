//! Blue-green rollouts in the canary tests' simulated world: the preview is judged with no
//! traffic, all traffic moves at once, and a failure after the switch moves it all back to
//! the previous release, which is still up.

use super::*;
use crate::api::blue_green::BlueGreenStrategy;
use crate::api::canary::Analysis;
use crate::validation::blue_green::compile_blue_green;

fn blue_green(auto_promotion: bool) -> StagePlan {
    with_checks(auto_promotion, &[])
}

fn with_checks(auto_promotion: bool, checks: &[&str]) -> StagePlan {
    let analysis = |gate: &str| {
        Some(Analysis {
            gates: vec![gate.into()],
            interval: Some("10s".into()),
            ..Analysis::default()
        })
    };
    let spec = BlueGreenStrategy {
        pre_promotion_analysis: analysis("preview"),
        post_promotion_analysis: analysis("live"),
        auto_promotion,
        pre_promotion: checks.iter().map(|c| c.to_string()).collect(),
        ..BlueGreenStrategy::default()
    };
    let mut plan = StagePlan {
        canary: Some(compile_blue_green(&spec).unwrap()),
        ..plan()
    };
    plan.checks.pre_promotion = spec.pre_promotion.clone();
    plan
}

/// Reconciles with every gate passing until `until` holds.
fn run_until(world: &mut World, plan: &StagePlan, until: &dyn Fn(&World) -> bool) {
    for _ in 0..200 {
        world.reconcile(plan, &mut |_, _| GateVerdict::Passed);
        world.pods_start();
        if until(world) {
            return;
        }
    }
    panic!("did not get there: {:#?}", world.status);
}

fn done(w: &World) -> bool {
    w.status.rollout.is_none() && w.status.current_release.as_deref() == Some("v2")
}

#[test]
fn traffic_moves_all_at_once_and_the_primary_takes_the_release_only_once_it_serves_none() {
    let plan = blue_green(true);
    let mut world = World::running_v1();
    let mut seen = vec![];
    for _ in 0..200 {
        world.reconcile(&plan, &mut |_, _| GateVerdict::Passed);
        seen.push((world.weight, world.primary.clone().unwrap()));
        world.pods_start();
        if done(&world) {
            break;
        }
    }
    assert!(done(&world), "{:#?}", world.status);
    assert!(world.weights.iter().all(|(w, _)| *w == 0 || *w == 100));
    let mut phases: Vec<(i32, String)> = seen.clone();
    phases.dedup();
    assert_eq!(
        phases,
        [
            (0, "v1".to_string()),
            (100, "v1".to_string()),
            (100, "v2".to_string()),
            (0, "v2".to_string())
        ],
        "v1 serves, the preview takes it all, the primary is updated, then serves again"
    );
    assert!(
        world.weights.iter().all(|(w, ready)| *w == 0 || *ready),
        "traffic goes only to a preview that serves"
    );
    let drained = |w: &World| w.canary_replicas == 0;
    run_healthy(&mut world, &plan, drained);
    assert_eq!(
        world.weight, 0,
        "the spare stack is scaled down after traffic left it"
    );
}

#[test]
fn a_failed_post_promotion_analysis_switches_back_at_once_to_the_previous_release() {
    let plan = blue_green(true);
    let mut world = World::running_v1();
    run_until(&mut world, &plan, &|w| w.weight == 100);
    let live_failing = &mut |_: &str, gate: &str| match gate {
        "live" => GateVerdict::Failed,
        _ => GateVerdict::Passed,
    };
    let mut reconciles = 0;
    while world.weight == 100 {
        world.reconcile(&plan, live_failing);
        reconciles += 1;
        assert!(
            reconciles < 5,
            "still on the new release: {:#?}",
            world.status
        );
    }
    assert_eq!(world.weight, 0);
    assert_eq!(
        world.primary.as_deref(),
        Some("v1"),
        "the previous release was kept up"
    );
    assert!(world.primary_available);
    run(&mut world, &plan, 50, live_failing, |w| {
        w.status.rollout.is_none()
    });
    assert_eq!(world.status.history[0].outcome, RolloutOutcome::RolledBack);
    run(&mut world, &plan, 50, live_failing, |w| {
        w.canary_replicas == 0
    });
}

#[test]
fn a_promote_goes_on_to_the_switch_never_past_it() {
    let plan = blue_green(false);
    let mut world = World::running_v1();
    run_until(&mut world, &plan, &|w| {
        w.rollout_phase() == Some(CanaryPhase::Paused)
    });
    assert_eq!((world.weight, world.primary.as_deref()), (0, Some("v1")));
    world.command = Some(Command::Promote);
    world.reconcile(&plan, &mut |_, _| GateVerdict::Passed);
    world.pods_start();
    assert_eq!(
        world.primary.as_deref(),
        Some("v1"),
        "the primary is not touched yet"
    );
    run_until(&mut world, &plan, &|w| w.weight == 100);
    assert_eq!(
        world.primary.as_deref(),
        Some("v1"),
        "the switch comes first"
    );
    // A promote during the post-promotion analysis skips it, after the switch.
    world.command = Some(Command::Promote);
    run_until(&mut world, &plan, &done);
}

#[test]
fn the_preview_checks_run_before_the_switch_and_once() {
    let plan = with_checks(true, &["smoke"]);
    let mut world = World::running_v1();
    run_until(&mut world, &plan, &done);
    assert!(!world.checked_at_weight.is_empty(), "the checks ran");
    assert!(
        world.checked_at_weight.iter().all(|w| *w == 0),
        "every check ran before any traffic moved: {:?}",
        world.checked_at_weight
    );
}

#[test]
fn a_failed_preview_check_rolls_back_with_no_traffic_ever_moved() {
    let plan = with_checks(true, &["smoke"]);
    let mut world = World::running_v1();
    world.checks = GateVerdict::Failed;
    let rolled_back = |w: &World| !w.status.history.is_empty();
    run_healthy(&mut world, &plan, rolled_back);
    assert_eq!(world.status.history[0].outcome, RolloutOutcome::RolledBack);
    assert!(
        world.weights.iter().all(|(w, _)| *w == 0),
        "{:?}",
        world.weights
    );
    assert_eq!(world.primary.as_deref(), Some("v1"));
    let entry = &world.releases[1].stages["prod"];
    assert_eq!(entry.reason.as_deref(), Some("PrePromotionFailed"));
}

#[test]
fn a_promote_during_the_preview_analysis_skips_it_but_never_the_preview_checks() {
    let plan = with_checks(true, &["smoke"]);
    let mut world = World::running_v1();
    world.checks = GateVerdict::Pending;
    run_until(&mut world, &plan, &|w| !w.checked_at_weight.is_empty());
    world.command = Some(Command::Promote);
    for _ in 0..3 {
        world.reconcile(&plan, &mut |_, _| GateVerdict::Passed);
        world.pods_start();
    }
    assert_eq!(
        world.weight, 0,
        "no switch while the smoke test has not passed"
    );
    assert_eq!(world.primary.as_deref(), Some("v1"));
    world.checks = GateVerdict::Passed;
    run_until(&mut world, &plan, &|w| w.weight == 100);
    assert_eq!(
        world.primary.as_deref(),
        Some("v1"),
        "the switch comes before the primary"
    );
    assert!(world.checked_at_weight.iter().all(|w| *w == 0));
    run_until(&mut world, &plan, &done);
}

#[test]
fn the_switch_waits_for_the_preview_in_full_and_a_preview_that_never_gets_there_rolls_back() {
    let plan = blue_green(true);
    let mut world = World::running_v1();
    world.partly = true;
    let rolled_back = |w: &World| !w.status.history.is_empty();
    run(
        &mut world,
        &plan,
        200,
        &mut |_, _| GateVerdict::Passed,
        rolled_back,
    );
    assert!(
        world.weights.iter().all(|(w, _)| *w == 0),
        "{:?}",
        world.weights
    );
    let entry = &world.releases[1].stages["prod"];
    assert!(
        entry.message.as_deref().unwrap_or("").contains("in full"),
        "{entry:?}"
    );
}
