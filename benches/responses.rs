//! The response benchmark. The e2e cases that measure how fast Greenlight responds assert only
//! the bound that is their behaviour (an abort does not wait for a 30 s gate), with room for a
//! loaded machine. Here the same cases run one at a time on a quiet test bed and the figures
//! they record are printed. Run with `make bench`; it asserts only what the cases assert.

#![allow(dead_code)]

#[path = "../e2e/cases/mod.rs"]
mod cases;
#[path = "../e2e/env.rs"]
mod env;
#[path = "../e2e/scale.rs"]
mod scale;
#[path = "../e2e/support/mod.rs"]
mod support;

use std::process::ExitCode;
use std::time::Duration;

use cases::{Case, run_case};
use support::controlplane::ControlPlane;

/// The cases that record a figure with `support::figures::record`.
const MEASURED: &[&str] = &[
    "a_faulty_canary_is_rolled_back_at_its_first_step_as_soon_as_its_analysis_fails",
    "a_canary_burning_its_error_budget_is_rolled_back_by_its_burn_rate_analysis",
    "a_canary_twice_as_slow_as_the_primary_is_failed_by_compare_though_under_any_threshold",
    "a_slow_gate_does_not_hold_up_an_abort",
    "a_paused_bake_still_watches_the_promoted_release_and_rolls_it_back",
    "a_bake_missing_its_last_data_waits_and_completes_when_the_data_returns",
    "a_weight_edited_by_hand_during_a_pause_is_put_back_with_an_event",
    "blackout_window_holds_prod_until_it_ends",
    "schedule_trigger_promotes_at_its_cron_tick_and_not_before",
    "a_standby_finishes_a_canary_when_the_leader_is_killed_and_takes_over_on_sigterm",
    "a_smoke_test_job_that_passes_promotes_and_one_that_exits_1_rolls_back_with_its_message",
    "a_pipeline_of_50_stages_is_drawn_whole_and_its_first_render_and_weight_are_measured",
];

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!("the response benchmark runs with `make bench`");
        return ExitCode::SUCCESS;
    }
    let chosen: Vec<(&'static str, Case)> = cases::all()
        .into_iter()
        .filter(|(name, _)| MEASURED.contains(name))
        .collect();
    assert_eq!(chosen.len(), MEASURED.len(), "a measured case was renamed");
    let cp: &'static ControlPlane = Box::leak(Box::new(ControlPlane::start()));
    cp.install();
    let kubelet = support::kubelet::start_in_background(cp.kubeconfig.clone());
    let mut failed = Vec::new();
    let mut figures = Vec::new();
    let mut sizes = Vec::new();
    for (name, case) in chosen {
        eprintln!("running {name}");
        let kubelet = kubelet.clone();
        let ran = std::panic::catch_unwind(|| run_case(cp, kubelet, name, case));
        figures.extend(support::figures::take());
        sizes.extend(support::figures::take_bytes());
        if ran.is_err() {
            failed.push(name);
        }
    }
    cp.shutdown();
    print_figures(&figures);
    for (what, bytes) in &sizes {
        println!("  {what:<58} {:>7.1} KiB", *bytes as f64 / 1024.0);
    }
    match failed.is_empty() {
        true => ExitCode::SUCCESS,
        false => {
            eprintln!("failed, so their figures are missing or partial: {failed:?}");
            ExitCode::FAILURE
        }
    }
}

fn print_figures(figures: &[(String, Duration)]) {
    println!();
    println!("Greenlight responses (one run of each case, alone on the test bed):");
    for (what, took) in figures {
        println!("  {what:<58} {:>7.2} s", took.as_secs_f64());
    }
}
