//! The book's worked examples that no e2e case applies are specs the operator accepts.

use greenlight::api::Stage;
use greenlight::validation::{CanaryStepPlan, compile_stage};

/// The book's how-to guides that hold these examples.
const BLUE_GREEN: &str = include_str!("../docs/src/how-to/blue-green.md");
const RELEASE_POLICIES: &str = include_str!("../docs/src/how-to/release-policies.md");
const EMERGENCIES: &str = include_str!("../docs/src/how-to/emergencies.md");
const CHANGE_TICKETS: &str = include_str!("../docs/src/how-to/change-tickets.md");

/// The first YAML block after `heading` in a page of the book.
fn example_after(page: &str, heading: &str) -> String {
    let section = &page[page.find(heading).expect("the heading")..];
    let start = section.find("```yaml\n").expect("a YAML block") + "```yaml\n".len();
    let end = section[start..].find("```").expect("the block's end");
    section[start..start + end].to_string()
}

#[test]
fn the_blue_green_example_compiles_to_checks_then_one_switch_then_a_watched_warm_fallback() {
    let stage: Stage =
        serde_norway::from_str(&example_after(BLUE_GREEN, "# Blue-green")).expect("a Stage");
    let plan = compile_stage("prod", &stage.spec).expect("the example is valid");
    let canary = plan.canary.expect("a blue-green plan");
    let kinds: Vec<&str> = canary
        .steps
        .iter()
        .map(|s| match s {
            CanaryStepPlan::Checks => "checks",
            CanaryStepPlan::Analysis(_) => "analysis",
            CanaryStepPlan::Pause(_) => "pause",
            CanaryStepPlan::SetWeight(100) => "switch",
            CanaryStepPlan::SetWeight(_) => "weight",
        })
        .collect();
    assert_eq!(kinds, ["checks", "analysis", "switch", "analysis", "pause"]);
    assert_eq!(plan.checks.pre_promotion, ["smoke-test"]);
    let routing = canary.routing.expect("routing");
    assert!(
        routing.service_switch.is_some(),
        "the -active Service by default"
    );
}

#[test]
fn the_release_policy_example_says_what_a_hotfix_skips_as_the_book_shows() {
    use greenlight::api::release::ReleaseType;
    let example = example_after(
        RELEASE_POLICIES,
        "# Release management: rules per release type",
    );
    let stage: Stage = serde_norway::from_str(&example).expect("a Stage");
    let plan = compile_stage("prod", &stage.spec).expect("the example is valid");
    let hotfix = plan
        .policy_for(ReleaseType::Hotfix)
        .expect("a hotfix policy");
    assert!(
        RELEASE_POLICIES.contains(&format!("\n{}\n", hotfix.summary)),
        "{}",
        hotfix.summary
    );
    assert_eq!(hotfix.plan.requires, ["test"]);
    let patch = plan.for_type(ReleaseType::Patch);
    assert_eq!(patch.gates, ["soaked-in-test", "change-window"]);
    assert_eq!(
        plan.for_type(ReleaseType::Feature).gates,
        ["soaked-in-test"]
    );
}

#[test]
fn the_emergency_example_skips_the_freeze_and_the_soak_and_asks_two_others_first() {
    let example = example_after(EMERGENCIES, "# Emergencies: a hotfix during a freeze");
    let stage: Stage = serde_norway::from_str(&example).expect("a Stage");
    let plan = compile_stage("prod", &stage.spec).expect("the example is valid");
    let emergency = plan.emergency.expect("the stage takes emergencies");
    assert_eq!(emergency.plan.gates, ["emergency:prod"]);
    assert!(emergency.plan.windows.is_empty() && !plan.windows.is_empty());
    assert_eq!(emergency.bypassed, ["windows", "gate soaked-in-test"]);
    let approvals = &stage.spec.emergency.as_ref().unwrap().approvals;
    assert_eq!(approvals.required, 2);
}

#[test]
fn the_change_ticket_example_is_a_gate_and_a_release_the_operator_accepts() {
    let example = example_after(CHANGE_TICKETS, "# Change tickets");
    let docs: Vec<&str> = example.split("\n---\n").collect();
    let gate: greenlight::api::Gate = serde_norway::from_str(docs[1]).expect("a Gate");
    let ticket = gate.spec.change_ticket.expect("a changeTicket gate");
    assert!(ticket.work_notes && ticket.fields.release.as_deref() == Some("u_release_version"));
    assert_eq!(
        ticket.states.implement,
        ["-1"],
        "ServiceNow's Implement by default"
    );
    let release: greenlight::api::Release = serde_norway::from_str(docs[2]).expect("a Release");
    assert_eq!(release.spec.change_ticket.as_deref(), Some("CHG0030001"));
}
