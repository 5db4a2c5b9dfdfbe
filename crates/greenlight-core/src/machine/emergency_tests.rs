//! The emergency path in the machine: a release asked for as an emergency during a blackout
//! waits for the emergency's approvals only, skips exactly what `bypass` names, and its
//! rollout records each skip and opens a review.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::*;
use crate::api::emergency::EmergencyRequest;
use crate::api::gate::GateList;
use crate::api::release::{GateVerdict, ReleaseStageStatus, StagePhaseForRelease as RP};
use crate::api::stage::StageStatus;
use crate::validation::{StagePlan, compile_stage};
use crate::verdict::GateOutcome;

fn t(s: &str) -> Timestamp {
    format!("2026-12-07T{s}Z").parse().unwrap()
}

/// prod: a blackout all day, a soak and a sign-off; an emergency may skip the blackout and
/// the soak, with two SREs' approval.
pub(super) fn plan() -> StagePlan {
    let spec = serde_json::json!({
        "pipeline": "shop", "requires": ["test"], "target": {"name": "web"},
        "gates": ["soak", "signoff"],
        "windows": [{"kind": "deny", "schedule": "0 0 * * *", "duration": "24h", "reason": "freeze"}],
        "emergency": {"approvals": {"groups": ["sre"]}, "bypass": {"windows": true, "gates": ["soak"]}, "reviewWithin": "30s"},
    });
    compile_stage("prod", &serde_json::from_value(spec).unwrap()).unwrap()
}

pub(super) fn release(name: &str) -> ReleaseView {
    let done = ReleaseStageStatus::new(RP::Succeeded);
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
        stages: BTreeMap::from([("test".to_string(), done)]),
    }
}

pub(super) fn request(release: &str) -> EmergencyRequest {
    EmergencyRequest {
        release: release.into(),
        requester: "alice".into(),
        reason: "checkout is down".into(),
        reference: "INC-42".into(),
        since: t("10:00:00"),
    }
}

fn input<'a>(
    plan: &'a StagePlan,
    status: &'a StageStatus,
    releases: &'a [ReleaseView],
    now: Timestamp,
) -> StageInput<'a> {
    StageInput {
        name: "prod",
        plan,
        status,
        releases,
        primary: None,
        canary: None,
        gates: None,
        measurements: None,
        command: None,
        invalid: None,
        target: None,
        now,
    }
}

fn act(input: &StageInput) -> Outcome {
    match decide(input) {
        Decision::Act(outcome) => *outcome,
        other => panic!("expected an outcome, got {other:?}"),
    }
}

fn report(release: &str, results: &[(&str, GateVerdict)]) -> GateReport {
    GateReport {
        release: release.into(),
        list: GateList::Gates,
        template: None,
        results: results
            .iter()
            .map(|(g, v)| (g.to_string(), GateOutcome::new(*v, "answered")))
            .collect(),
        recheck_after: Duration::from_secs(30),
    }
}

#[test]
fn without_an_emergency_the_blackout_holds_the_release() {
    let (plan, status, releases) = (plan(), StageStatus::default(), [release("r1")]);
    let out = act(&input(&plan, &status, &releases, t("10:00:00")));
    assert_eq!(
        out.release_updates["r1"].reason.as_deref(),
        Some("BlockedByWindow")
    );
}

#[test]
fn an_emergency_is_kept_and_asks_only_for_its_approvals_and_the_gates_it_does_not_skip() {
    let (plan, status, releases) = (plan(), StageStatus::default(), [release("r1")]);
    let mut inp = input(&plan, &status, &releases, t("10:00:00"));
    inp.command = Some(Command::Emergency(request("r1")));
    let Decision::EvaluateGates { gates, .. } = decide(&inp) else {
        panic!("the emergency's gates are asked for");
    };
    assert_eq!(
        gates,
        ["emergency:prod", "signoff"],
        "the soak is skipped, its approvals never"
    );
    let waiting = report("r1", &[("emergency:prod", GateVerdict::Pending)]);
    inp.gates = Some(&waiting);
    let out = act(&inp);
    assert_eq!(
        out.status.emergency,
        Some(request("r1")),
        "kept until it rolls out"
    );
    assert!(
        out.status.rollout.is_none(),
        "one approval short: nothing rolls out"
    );
    let asked = out
        .events
        .iter()
        .find(|e| e.kind == Transition::EmergencyRequested)
        .unwrap();
    assert!(
        asked.by_person && asked.note.contains("INC-42"),
        "{}",
        asked.note
    );
}

#[test]
fn an_approved_emergency_rolls_out_recording_each_skip_and_opening_its_review() {
    let plan = plan();
    let status = StageStatus {
        emergency: Some(request("r1")),
        ..Default::default()
    };
    let releases = [release("r1")];
    let mut inp = input(&plan, &status, &releases, t("10:00:00"));
    let approved = report(
        "r1",
        &[
            ("emergency:prod", GateVerdict::Passed),
            ("signoff", GateVerdict::Passed),
        ],
    );
    inp.gates = Some(&approved);
    let out = act(&inp);
    let rollout = out
        .status
        .rollout
        .expect("the emergency rolls out in the blackout");
    assert_eq!(rollout.emergency, Some(request("r1")));
    assert_eq!(out.status.emergency, None);
    let skipped: Vec<&str> = out
        .events
        .iter()
        .filter(|e| e.kind == Transition::Bypassed)
        .filter_map(|e| e.item.as_deref())
        .collect();
    assert_eq!(skipped, ["windows", "gate soak"]);
    let windows = out
        .events
        .iter()
        .find(|e| e.item.as_deref() == Some("windows"))
        .unwrap();
    assert!(
        windows
            .note
            .contains("closed: deny window 'freeze' is open until"),
        "{}",
        windows.note
    );
    let glass = out
        .events
        .iter()
        .find(|e| e.kind == Transition::BreakGlass)
        .unwrap();
    assert_eq!(glass.actor.as_deref(), Some("alice"));
    assert_eq!(glass.review_due, Some(t("10:00:30")));
}

#[test]
fn an_abort_cancels_a_pending_emergency_and_a_stage_without_one_refuses_it() {
    let plan = plan();
    let status = StageStatus {
        emergency: Some(request("r1")),
        ..Default::default()
    };
    let releases = [release("r1")];
    let mut inp = input(&plan, &status, &releases, t("10:00:00"));
    inp.command = Some(Command::Abort);
    let out = act(&inp);
    assert_eq!(out.status.emergency, None);
    assert!(
        out.events
            .iter()
            .any(|e| e.kind == Transition::EmergencyCancelled)
    );

    let spec = serde_json::json!({"pipeline": "shop", "target": {"name": "web"}});
    let bare = compile_stage("prod", &serde_json::from_value(spec).unwrap()).unwrap();
    let status = StageStatus::default();
    let mut inp = input(&bare, &status, &releases, t("10:00:00"));
    inp.command = Some(Command::Emergency(request("r1")));
    let out = act(&inp);
    let refused = out
        .events
        .iter()
        .find(|e| e.kind == Transition::CommandRefused)
        .unwrap();
    assert!(
        refused.note.contains("takes no emergencies"),
        "{}",
        refused.note
    );
    assert!(
        out.status.rollout.is_some(),
        "the release goes its normal way"
    );
}

#[test]
fn an_emergency_keeps_the_gates_a_policy_adds_that_it_does_not_bypass() {
    let spec = serde_json::json!({
        "pipeline": "shop", "requires": ["test"], "target": {"name": "web"}, "gates": ["soak"],
        "policies": [{"name": "ticketed", "types": ["feature"], "addGates": ["change-ticket"]}],
        "emergency": {"approvals": {"groups": ["sre"]}, "bypass": {"gates": ["soak"]}},
    });
    let plan = compile_stage("prod", &serde_json::from_value(spec).unwrap()).unwrap();
    let status = StageStatus {
        emergency: Some(request("r1")),
        ..Default::default()
    };
    let releases = [release("r1")];
    let Decision::EvaluateGates {
        gates, emergency, ..
    } = decide(&input(&plan, &status, &releases, t("10:00:00")))
    else {
        panic!("the emergency's gates are asked for");
    };
    assert_eq!(
        gates,
        ["emergency:prod", "change-ticket"],
        "the policy's gate stays"
    );
    assert_eq!(
        emergency,
        Some(("alice".to_string(), t("10:00:00"))),
        "judged for alice's request"
    );
}

#[test]
fn a_second_emergency_while_one_is_pending_is_refused_and_a_stale_one_is_dropped() {
    let plan = plan();
    let status = StageStatus {
        emergency: Some(request("r1")),
        ..Default::default()
    };
    let releases = [release("r1"), release("r2")];
    let mut inp = input(&plan, &status, &releases, t("10:00:00"));
    let mut second = request("r2");
    second.requester = "bob".into();
    inp.command = Some(Command::Emergency(second));
    let waiting = report("r1", &[("emergency:prod", GateVerdict::Pending)]);
    inp.gates = Some(&waiting);
    let out = act(&inp);
    assert_eq!(
        out.status.emergency,
        Some(request("r1")),
        "alice's request stands"
    );
    let refused = out
        .events
        .iter()
        .find(|e| e.kind == Transition::CommandRefused)
        .unwrap();
    assert!(refused.note.contains("is pending"), "{}", refused.note);
    assert_eq!(
        out.release_updates["r2"].phase,
        RP::Waiting,
        "a pending emergency supersedes nothing"
    );

    let gone = [release("r2")];
    let out = act(&input(&plan, &status, &gone, t("10:00:00")));
    assert_eq!(out.status.emergency, None, "the release it named is gone");
    assert!(
        out.events
            .iter()
            .any(|e| e.kind == Transition::EmergencyCancelled)
    );
}
