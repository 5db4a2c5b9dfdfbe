//! Every end-to-end case, by name, and how one is run: on its own runtime, in its own
//! namespace, within ten minutes.

mod approvals;
mod bad_input;
mod blue_green;
mod canary;
mod canary_safety;
mod compare;
mod dashboard;
mod demo;
mod emergency;
mod failover;
mod fence;
mod first_minutes;
mod gates;
mod insiders;
mod insight;
mod install;
mod job_insiders;
mod jobs;
mod kubectl;
mod notify;
mod plugin;
mod policies;
mod promotion;
mod restart;
mod rollback;
mod scale;
mod schedule;
mod shell;
mod slo;
mod tickets;
mod trust;
mod windows;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::env::TestEnv;
use crate::support::controlplane::ControlPlane;
use crate::support::kubelet::Kubelet;

/// One case: it is handed its world and panics when what it asserts does not hold.
pub type Case = fn(TestEnv) -> Pin<Box<dyn Future<Output = ()>>>;

/// Runs one case to its end on a runtime of its own; a failure is the case's panic.
pub fn run_case(cp: &'static ControlPlane, kubelet: Kubelet, name: &str, case: Case) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let env = TestEnv::new(cp, kubelet, name).await;
        tokio::time::timeout(Duration::from_secs(600), case(env))
            .await
            .expect("the case took over 10 minutes");
    });
}

macro_rules! cases {
    ($($module:ident :: $case:ident),* $(,)?) => {
        vec![$((stringify!($case), (|env| Box::pin($module::$case(env))) as Case)),*]
    };
}

pub fn all() -> Vec<(&'static str, Case)> {
    [core(), checks(), evidence(), policy()].concat()
}

/// Release management: rules per release type.
fn policy() -> Vec<(&'static str, Case)> {
    cases![
        policies::a_hotfix_skips_the_soak_but_needs_two_signoffs_while_a_feature_takes_the_normal_path,
        tickets::a_change_in_assess_holds_the_release_until_it_is_implemented_in_its_window_and_gets_a_work_note,
        emergency::an_emergency_in_a_blackout_needs_two_approvals_besides_its_requester_and_is_reviewed,
        dashboard::the_dashboard_shows_a_canary_mid_flight_and_acts_only_as_each_user_may,
        dashboard::a_pipeline_of_50_stages_is_drawn_whole_and_its_first_render_and_weight_are_measured,
        dashboard::people_signed_in_at_an_oidc_issuer_see_and_do_only_what_rbac_grants_them,
    ]
}

/// Promotion on evidence: the comparison judge.
fn evidence() -> Vec<(&'static str, Case)> {
    cases![
        compare::a_canary_twice_as_slow_as_the_primary_is_failed_by_compare_though_under_any_threshold,
        compare::two_alike_versions_pass_at_least_19_of_20_compare_judgements,
        slo::an_slo_gate_holds_a_release_while_the_budget_is_spent_and_lets_it_through_once_it_recovers,
        slo::a_canary_burning_its_error_budget_is_rolled_back_by_its_burn_rate_analysis,
        canary_safety::a_release_published_while_the_previous_canary_drains_takes_traffic_only_on_its_own_pods,
        blue_green::a_blue_green_release_is_judged_on_its_preview_then_takes_all_traffic_at_once_without_an_error,
        blue_green::a_blue_green_release_failing_after_the_switch_is_switched_back_at_once_to_the_warm_previous_one,
        blue_green::a_team_editor_who_repoints_the_active_service_is_put_back_on_the_serving_side,
    ]
}

/// Testing a release where it runs: Job gates, pre-rollout and verification.
fn checks() -> Vec<(&'static str, Case)> {
    cases![
        jobs::a_smoke_test_job_that_passes_promotes_and_one_that_exits_1_rolls_back_with_its_message,
        jobs::a_release_failing_verification_in_test_never_reaches_prod,
        jobs::a_failing_pre_rollout_job_leaves_the_workload_untouched,
        jobs::a_controller_killed_mid_verification_finds_its_job_and_uses_its_verdict,
        jobs::a_job_refused_by_a_quota_is_inconclusive_and_backs_off_without_a_loop,
        jobs::host_namespaces_privilege_and_the_operators_account_are_refused_by_field,
        jobs::twenty_verified_releases_leave_a_bounded_number_of_jobs,
        job_insiders::a_pod_a_team_editor_slips_under_a_smoke_test_job_does_not_pass_it,
        job_insiders::a_copy_a_team_editor_makes_of_a_running_check_job_is_not_judged,
    ]
}

/// Every case from before the check lists.
fn core() -> Vec<(&'static str, Case)> {
    cases![
        demo::the_demo_promotes_one_release_and_stops_the_other_in_test_then_stops,
        notify::each_transition_is_told_once_with_who_and_why_even_across_an_outage_and_a_restart,
        notify::dead_receivers_do_not_starve_a_healthy_one_and_a_forged_event_sends_nothing,
        plugin::the_plugin_shows_approves_steers_and_waits_like_a_release_manager,
        install::the_image_runs_its_entrypoint_as_a_non_root_user_with_nothing_else,
        install::the_chart_installs_two_replicas_that_run_with_its_rbac_and_arguments,
        install::the_kustomize_base_is_the_rendered_chart_and_runs_with_cert_manager,
        install::two_installs_watching_their_own_namespaces_share_nothing,
        promotion::release_goes_dev_test_prod_and_soaks_before_prod,
        promotion::newer_release_supersedes_an_older_one_waiting_at_a_stage,
        promotion::a_target_running_pods_of_its_own_is_flagged_and_never_touched,
        windows::blackout_window_holds_prod_until_it_ends,
        schedule::schedule_trigger_promotes_at_its_cron_tick_and_not_before,
        rollback::release_whose_pods_never_become_ready_is_rolled_back,
        rollback::failed_rollout_reverts_primary_and_the_stage_says_so,
        gates::prometheus_gate_passes_fails_and_is_inconclusive_on_nan_empty_or_down,
        gates::webhook_gate_passes_on_2xx_and_fails_with_status_and_body,
        gates::webhook_gates_reach_only_allowed_hosts_and_follow_no_redirects,
        gates::prometheus_gate_authenticates_with_a_token_from_a_secret_and_never_shows_it,
        gates::gates_aimed_at_loopback_by_name_the_metadata_service_or_a_token_over_http_are_refused_by_field,
        gates::gate_endpoints_streaming_100_mib_are_inconclusive_and_memory_stays_bounded,
        bad_input::bad_input_is_reported_on_the_object_and_other_pipelines_keep_flowing,
        restart::controller_killed_mid_promotion_resumes_without_repeating_finished_stages,
        kubectl::readme_example_is_accepted_and_kubectl_get_shows_useful_columns,
        kubectl::make_run_refuses_a_cluster_where_a_controller_already_runs,
        first_minutes::the_sample_make_run_suggests_reaches_prod_with_alices_approval,
        canary::healthy_canary_goes_5_25_50_then_all_traffic_and_is_promoted,
        canary::a_faulty_canary_is_rolled_back_at_its_first_step_as_soon_as_its_analysis_fails,
        canary::prometheus_stopped_mid_rollout_pauses_and_never_promotes,
        canary::controller_restarted_mid_canary_resumes_at_the_same_step_and_weights,
        canary::without_a_traffic_router_canary_replicas_follow_the_weight,
        canary::a_route_deleted_mid_canary_rolls_back_by_the_deadline_and_says_why,
        canary::a_slow_gate_does_not_hold_up_an_abort,
        canary::a_controller_killed_right_after_a_rollback_sets_weight_0_keeps_it_there,
        canary_safety::a_paused_bake_still_watches_the_promoted_release_and_rolls_it_back,
        canary_safety::a_bake_missing_its_last_data_waits_and_completes_when_the_data_returns,
        canary_safety::with_a_recreate_target_traffic_only_ever_reaches_available_pods,
        canary_safety::scale_down_waits_for_the_data_plane_and_drops_no_request,
        canary_safety::a_weight_edited_by_hand_during_a_pause_is_put_back_with_an_event,
        insight::dora_figures_match_a_hand_count_of_the_releases_and_survive_a_restart,
        insight::deleting_a_canary_stage_mid_rollout_leaves_the_route_with_only_the_primary,
        scale::a_burst_of_releases_settles_with_the_newest_shipped_and_then_nothing_is_written,
        failover::a_standby_finishes_a_canary_when_the_leader_is_killed_and_takes_over_on_sigterm,
        failover::a_leader_paused_past_its_lease_writes_nothing_when_it_resumes,
        failover::a_hijacked_lease_is_taken_back_after_the_operators_own_lease_duration,
        failover::a_tenant_who_may_write_leases_cannot_touch_the_leader_lease,
        failover::a_pipeline_gets_through_while_its_leader_is_killed_every_ten_seconds,
        fence::no_write_from_a_deposed_leader_lands_after_the_new_leaders_first_write,
        approvals::approval_by_a_release_manager_is_stamped_with_their_name_and_promotes,
        approvals::an_approval_by_the_release_author_is_refused_and_another_managers_counts,
        approvals::approvals_from_outside_the_allowed_group_do_not_count_and_a_rejection_fails_the_gate,
        approvals::edits_of_releases_and_approvals_and_invalid_stages_and_gates_are_refused_by_field,
        approvals::the_operator_generates_its_certificate_and_keeps_its_webhooks_ca_bundle,
        approvals::a_renewed_certificate_is_served_without_a_restart,
        approvals::a_retry_asked_by_a_release_manager_is_recorded_under_their_name,
        approvals::an_approval_given_before_its_release_was_created_does_not_count,
        approvals::a_protected_stage_refuses_edits_without_the_role_and_records_who_changed_it,
        shell::a_write_refused_by_a_quota_stalls_the_stage_and_backs_off_until_the_quota_goes,
        shell::a_controller_killed_every_few_seconds_records_each_rollout_and_promotion_once,
        shell::two_releases_rolled_out_at_one_stage_give_two_distinct_rollout_started_events,
        shell::a_stage_naming_an_invalid_gate_is_stalled_and_rolls_out_once_the_gate_is_fixed,
        shell::a_duration_past_a_year_stalls_its_stage_naming_the_field_and_the_rest_keeps_flowing,
        shell::a_promote_with_nothing_to_promote_is_refused_saying_why,
        insiders::a_template_edit_reaches_protected_prod_only_through_its_approval_gate,
        insiders::a_team_editor_cannot_delete_or_take_over_a_protected_stage_through_metadata,
        insiders::a_team_editor_cannot_neuter_a_protected_canarys_analysis_gates,
        insiders::ci_cannot_pass_a_prometheus_gate_by_injecting_promql_through_a_version,
        insiders::a_promote_by_someone_with_neither_the_verb_nor_a_place_at_the_gate_is_refused,
        insiders::a_flood_of_approvals_and_a_full_trail_never_block_a_rollback,
        insiders::a_route_fought_over_for_90s_is_reported_with_few_status_writes,
        trust::a_review_from_anyone_but_the_apiserver_is_refused_and_a_made_up_old_object_is_not_signed,
        trust::a_thousand_stalled_connections_do_not_keep_the_apiserver_from_being_answered,
        trust::an_outage_of_the_webhooks_blocks_changes_to_protected_objects_only,
        trust::names_that_would_make_invalid_derived_names_are_refused_saying_which,
        trust::the_identity_key_is_the_operators_own_secret_and_a_rotation_keeps_old_stamps,
        trust::handled_commands_and_approvals_of_done_releases_go_after_their_retention,
    ]
}
