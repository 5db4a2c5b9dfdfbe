//! Change tickets: a release goes out only under an approved change request in its implement
//! state and inside its planned window, asked of a local ITSM that speaks ServiceNow's Table
//! API; the outcome goes back to the ticket as a work note, and one change lets out one
//! release.

use std::time::Duration;

use greenlight::api::release::{AuditAction, ReleaseStageStatus};
use jiff::{SignedDuration, Timestamp};

use crate::env::{TestEnv, image, release_yaml, target_yaml};
use crate::support::itsm::{ItsmServer, PASSWORD, USER};

const WAIT: Duration = Duration::from_secs(90);

fn gate(addr: &str, credentials: &str) -> String {
    format!(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {{name: change-approved}}\nspec:\n  type: changeTicket\n  recheckInterval: 1s\n  changeTicket:\n    url: http://{addr}\n    workNotes: true\n    credentials: {credentials}\n"
    )
}

const BASIC: &str =
    "{basic: {username: {name: itsm, key: user}, password: {name: itsm, key: password}}}";
const OAUTH: &str = "{oauth: {clientId: {name: itsm, key: user}, clientSecret: {name: itsm, key: password}}}\n    fields: {release: u_release}";

fn setup(env: &TestEnv, addr: &str) {
    env.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: itsm}}\nstringData: {{user: {USER}, password: {PASSWORD}}}\n"
    ));
    env.apply(&crate::support::operator_may_read_secret("itsm"));
    env.apply(&gate(addr, BASIC));
    env.apply(&target_yaml("web-prod"));
    env.apply(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {name: prod}\nspec: {pipeline: shop, target: {name: web-prod}, gates: [change-approved]}\n",
    );
}

fn publish(env: &TestEnv, name: &str, version: &str, ticket: &str) {
    let yaml = release_yaml(name, "shop", version, &image(name));
    env.apply(&yaml.replace("spec:\n", &format!("spec:\n  changeTicket: {ticket}\n")));
}

/// A planned window from `from` to `to` minutes from now.
fn window(from: i64, to: i64) -> (Timestamp, Timestamp) {
    let now = Timestamp::now();
    let at = |m: i64| now + SignedDuration::from_mins(m);
    (at(from), at(to))
}

async fn prod_says(env: &TestEnv, release: &str, text: &str) -> ReleaseStageStatus {
    env.wait_for(
        &format!("{release} at prod to say '{text}'"),
        WAIT,
        || async {
            let r = env.release(release).await;
            let entry = r.status.and_then(|s| s.stages.get("prod").cloned());
            let entry = entry.ok_or_else(|| "no prod entry yet".to_string())?;
            let gates: Vec<&str> = entry.gates.iter().map(|g| g.message.as_str()).collect();
            let said = format!("{:?}: {}", entry.phase, gates.join(" | "));
            match said.contains(text) {
                true => Ok(entry),
                false => Err(said),
            }
        },
    )
    .await
}

pub async fn a_change_in_assess_holds_the_release_until_it_is_implemented_in_its_window_and_gets_a_work_note(
    mut env: TestEnv,
) {
    let itsm = ItsmServer::default();
    let addr = itsm.start().await;
    setup(&env, &addr);
    env.start_controller();
    itsm.set("CHG0001", "-4", "requested", window(-1, 30));
    publish(&env, "shop-1", "1.0.0", "CHG0001");
    let held = prod_says(&env, "shop-1", "change CHG0001 is in Assess (-4)").await;
    assert_eq!(format!("{:?}", held.phase), "Waiting");
    assert!(
        env.deployment("web-prod-primary").await.is_none(),
        "nothing rolled out"
    );

    itsm.set("CHG0001", "-1", "approved", window(-1, 30));
    let done = env
        .wait_release_stage("shop-1", "prod", "Succeeded", WAIT)
        .await;
    let trail = done.status.unwrap_or_default().audit;
    let started = trail
        .iter()
        .find(|e| e.action == AuditAction::RolloutStarted)
        .unwrap();
    assert_eq!(started.change_ticket.as_deref(), Some("CHG0001"));
    assert_the_work_note_says(&itsm, "CHG0001", "shop 1.0.0 (shop-1) rolled out at prod").await;
    assert_the_release_event_names_the_ticket(&env).await;

    assert_a_change_that_let_one_release_out_opens_nothing_for_another(&env).await;
    assert_a_change_past_its_window_holds_and_oauth_signs_in(&env, &itsm, &addr).await;
    assert_eq!(
        itsm.notes("CHG0001").len(),
        1,
        "one note per finished rollout, never two"
    );
    assert_eq!(*itsm.refused.lock().unwrap(), 0, "every request signed in");
    assert_dora_lists_each_production_change_with_its_ticket(&env);
}

fn assert_dora_lists_each_production_change_with_its_ticket(env: &TestEnv) {
    let (code, out, err) = super::plugin::plugin(env, None, &["dora", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let reports: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let changes = reports[0]["changes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let traced: Vec<(&str, &str)> = changes
        .iter()
        .map(|c| {
            (
                c["release"].as_str().unwrap_or(""),
                c["changeTicket"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        traced,
        [("shop-3", "CHG0002"), ("shop-1", "CHG0001")],
        "{out}"
    );
}

async fn assert_the_work_note_says(itsm: &ItsmServer, number: &str, text: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let notes = itsm.notes(number);
        if notes.iter().any(|n| n.contains(text)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no work note saying '{text}': {notes:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn assert_the_release_event_names_the_ticket(env: &TestEnv) {
    env.wait_event("RolloutSucceeded").await;
    let events = env.events("RolloutSucceeded").await;
    let notes: Vec<&str> = events.iter().filter_map(|e| e.note.as_deref()).collect();
    assert!(
        notes.iter().any(|n| n.ends_with("[change CHG0001]")),
        "{notes:?}"
    );
}

async fn assert_a_change_that_let_one_release_out_opens_nothing_for_another(env: &TestEnv) {
    publish(env, "shop-2", "1.0.1", "CHG0001");
    let entry = prod_says(
        env,
        "shop-2",
        &format!("change CHG0001 already let release {}/shop-1 out", env.ns),
    )
    .await;
    assert_ne!(format!("{:?}", entry.phase), "Succeeded");
    let prod = env.stage("prod").await.status.unwrap_or_default();
    assert_eq!(
        prod.current_release.as_deref(),
        Some("shop-1"),
        "shop-2 did not go out"
    );
}

async fn assert_a_change_past_its_window_holds_and_oauth_signs_in(
    env: &TestEnv,
    itsm: &ItsmServer,
    addr: &str,
) {
    env.apply(&gate(addr, OAUTH));
    itsm.set("CHG0002", "-1", "approved", window(-120, -60));
    itsm.set_field("CHG0002", "u_release", "1.0.2");
    publish(env, "shop-3", "1.0.2", "CHG0002");
    let held = prod_says(env, "shop-3", "change CHG0002's planned window ended at").await;
    assert_eq!(format!("{:?}", held.phase), "Waiting");
    itsm.set("CHG0002", "-1", "approved", window(-1, 30));
    itsm.set_field("CHG0002", "u_release", "1.0.9");
    let held = prod_says(
        env,
        "shop-3",
        "change CHG0002 is for release '1.0.9' (u_release)",
    )
    .await;
    assert_eq!(format!("{:?}", held.phase), "Waiting");
    itsm.set_field("CHG0002", "u_release", "1.0.2");
    env.wait_release_stage("shop-3", "prod", "Succeeded", WAIT)
        .await;
    assert_the_work_note_says(itsm, "CHG0002", "shop 1.0.2 (shop-3) rolled out at prod").await;
}
