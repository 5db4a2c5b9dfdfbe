//! Notifications, received by a local HTTP receiver that records every message: each
//! transition exactly once, with the release, the stage, the actor and the source, also when
//! the receiver was down for a while and the controller restarted meanwhile.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;

use crate::env::{TestEnv, image, target_yaml};
use crate::support::http::Receiver;

fn world_yaml(port: u16) -> String {
    let release_managers = "{groups: [release-managers], required: 1}";
    format!(
        r#"{dev}---
{web}---
apiVersion: v1
kind: Secret
metadata: {{name: hooks}}
stringData: {{team: "http://127.0.0.1:{port}/team", chat: "http://127.0.0.1:{port}/chat"}}
---
{reader}---
apiVersion: greenlight.dev/v1alpha1
kind: Notifier
metadata: {{name: team}}
spec: {{type: webhook, urlSecretRef: {{name: hooks, key: team}}}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Notifier
metadata: {{name: chat}}
spec: {{type: slack, urlSecretRef: {{name: hooks, key: chat}}, events: [Succeeded, RolledBack]}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Gate
metadata: {{name: signoff}}
spec: {{type: approval, approval: {release_managers}}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {{name: dev}}
spec: {{pipeline: shop, target: {{name: web-dev}}, notifiers: [team, chat]}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {{name: nightly}}
spec:
  pipeline: shop
  requires: [dev]
  target: {{name: web-nightly}}
  trigger: {{type: schedule, schedule: "0 3 * * *", timeZone: Europe/Paris}}
  notifiers: [team]
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {{name: prod}}
spec:
  pipeline: shop
  requires: [dev]
  target: {{name: web}}
  replicas: 2
  gates: [signoff]
  notifiers: [team, chat]
  strategy:
    type: canary
    canary: {{steps: [{{setWeight: 50}}, {{pause: {{}}}}]}}
"#,
        dev = target_yaml("web-dev"),
        reader = crate::support::operator_may_read_secret("hooks"),
        web = [target_yaml("web"), target_yaml("web-nightly")].join("---\n"),
    )
}

/// A Release with its source, as CI publishes it.
fn release_with_source(name: &str, version: &str) -> String {
    format!(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Release\nmetadata: {{name: {name}}}\nspec:\n  pipeline: shop\n  version: \"{version}\"\n  source: {{repository: \"https://git.example.com/shop/web\", commit: c0ffee{version}}}\n  artifacts: [{{name: web, image: \"{}\"}}]\n",
        image(name)
    )
}

/// (kind, stage, release) of every generic notice received, in order.
fn kinds(receiver: &Receiver) -> Vec<(String, String, String)> {
    receiver
        .got("team")
        .iter()
        .map(|n| {
            let s = |k: &str| n[k].as_str().unwrap_or_default().to_string();
            (s("kind"), s("stage"), s("release"))
        })
        .collect()
}

async fn wait_received(env: &TestEnv, receiver: &Receiver, want: &[(&str, &str, &str)]) {
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(k, s, r)| (k.to_string(), s.to_string(), r.to_string()))
        .collect();
    env.wait_for("the notices", Duration::from_secs(90), || async {
        let got = kinds(receiver);
        match want.iter().all(|w| got.contains(w)) {
            true => Ok(()),
            false => Err(format!("{got:?}")),
        }
    })
    .await;
}

pub async fn each_transition_is_told_once_with_who_and_why_even_across_an_outage_and_a_restart(
    mut env: TestEnv,
) {
    let receiver = Receiver::default();
    let port = receiver.start().await;
    env.grant_example_roles();
    env.start_admitted_controller().await;
    env.apply(&world_yaml(port));
    v1_is_told_with_approvers_the_source_and_when(&env, &receiver).await;

    // The receiver goes down; the controller restarts meanwhile; then the receiver comes back.
    receiver.down.store(true, Ordering::SeqCst);
    env.apply(&release_with_source("v2", "2"));
    env.approve_as("alice", "v2", "prod");
    wait_for_weight_50(&env).await;
    env.steer(Some("alice"), "prod", "abort", None);
    notifier_says_it_fails(&env).await;
    env.kill_controller();
    env.start_controller();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The team's channel comes back first; the chat's stays down across another restart, so
    // the team must not hear anything twice when the chat gets its notices at last.
    receiver.down_paths.lock().unwrap().insert("chat".into());
    receiver.down.store(false, Ordering::SeqCst);
    wait_received(
        &env,
        &receiver,
        &[
            ("Started", "prod", "v2"),
            ("StepChanged", "prod", "v2"),
            ("Failed", "prod", "v2"),
            ("RolledBack", "prod", "v2"),
        ],
    )
    .await;
    the_chat_gets_its_notices_after_another_restart(&mut env, &receiver).await;
    // Late repeats would arrive within a few retries.
    tokio::time::sleep(Duration::from_secs(5)).await;
    each_exactly_once(&receiver);
    let failed = notice(&receiver, "Failed", "prod", "v2");
    assert_eq!(failed["actor"], "alice", "the abort was hers: {failed}");
    assert_eq!(failed["version"], "2");
    slack_got_only_what_it_asked_for(&receiver);
}

/// Every notice still pending (for the chat) records that the team has it: a kill now must
/// not send the team anything again. (A kill between a send and this record would: that is
/// the one repeat the book owns up to.)
async fn team_recorded_on_every_pending_notice(env: &TestEnv) {
    use k8s_openapi::api::events::v1::Event;
    let api: kube::Api<Event> = kube::Api::namespaced(env.client.clone(), &env.ns);
    let pending = kube::api::ListParams::default().labels("greenlight.dev/notify=pending");
    env.wait_for(
        "the team's deliveries recorded",
        Duration::from_secs(30),
        || async {
            let events = api.list(&pending).await.map_err(|e| e.to_string())?;
            let missing: Vec<String> = events
                .items
                .iter()
                .filter(|e| {
                    let to = e
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("greenlight.dev/delivered-to"));
                    !to.is_some_and(|t| t.split(',').any(|n| n == "team"))
                })
                .map(|e| format!("{:?}", e.reason))
                .collect();
            match (events.items.is_empty(), missing.is_empty()) {
                (false, true) => Ok(()),
                _ => Err(format!(
                    "{} pending, without the team: {missing:?}",
                    events.items.len()
                )),
            }
        },
    )
    .await;
}

/// v1 through dev, the scheduled stage and the approval at prod, told with who may approve,
/// the source link and when the schedule fires.
async fn v1_is_told_with_approvers_the_source_and_when(env: &TestEnv, receiver: &Receiver) {
    env.apply(&release_with_source("v1", "1"));
    wait_received(
        env,
        receiver,
        &[
            ("Started", "dev", "v1"),
            ("Succeeded", "dev", "v1"),
            ("Upcoming", "nightly", "v1"),
            ("WaitingForApproval", "prod", "v1"),
        ],
    )
    .await;
    let approval = notice(receiver, "WaitingForApproval", "prod", "v1");
    assert_eq!(
        approval["approvers"],
        serde_json::json!(["group release-managers"])
    );
    assert_eq!(
        approval["link"],
        "https://git.example.com/shop/web/commit/c0ffee1"
    );
    let upcoming = notice(receiver, "Upcoming", "nightly", "v1");
    assert!(
        upcoming["message"]
            .as_str()
            .unwrap()
            .contains("the schedule fires next at"),
        "{upcoming}"
    );
    env.approve_as("alice", "v1", "prod");
    wait_received(env, receiver, &[("Succeeded", "prod", "v1")]).await;
}

/// The team has every pending notice recorded; a restart, then the chat comes back.
async fn the_chat_gets_its_notices_after_another_restart(env: &mut TestEnv, receiver: &Receiver) {
    team_recorded_on_every_pending_notice(env).await;
    env.kill_controller();
    env.start_controller();
    receiver.down_paths.lock().unwrap().clear();
    env.wait_for("the chat's notices", Duration::from_secs(90), || async {
        match receiver.got("chat").len() {
            4 => Ok(()),
            n => Err(format!("{n} so far")),
        }
    })
    .await;
}

fn notice(receiver: &Receiver, kind: &str, stage: &str, release: &str) -> Value {
    receiver
        .got("team")
        .into_iter()
        .find(|n| n["kind"] == kind && n["stage"] == stage && n["release"] == release)
        .unwrap_or_else(|| panic!("no {kind} notice for {release} at {stage}"))
}

fn each_exactly_once(receiver: &Receiver) {
    let got = kinds(receiver);
    let mut seen = std::collections::BTreeSet::new();
    let ids: Vec<String> = receiver
        .got("team")
        .iter()
        .map(|n| n["id"].as_str().unwrap_or_default().to_string())
        .collect();
    for (i, id) in ids.iter().enumerate() {
        assert!(
            seen.insert(id),
            "notice {:?} arrived twice: {got:?}",
            got[i]
        );
    }
}

fn slack_got_only_what_it_asked_for(receiver: &Receiver) {
    let slack = receiver.got("chat");
    let texts: Vec<String> = slack
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        slack.len(),
        4,
        "dev v1, prod v1 and dev v2 succeeded, prod v2 rolled back: {texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("shop 2 (v2) was rolled back at prod")),
        "{texts:?}"
    );
    assert!(
        slack.iter().all(|m| m["blocks"][0]["type"] == "header"),
        "Block Kit"
    );
}

async fn wait_for_weight_50(env: &TestEnv) {
    env.wait_for("v2's canary at 50%", Duration::from_secs(60), || async {
        let stage = env.stage("prod").await;
        match stage.status.and_then(|s| s.rollout).and_then(|r| r.canary) {
            Some(c) if c.weight == 50 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// While the receiver answers 503, the Notifier says so.
async fn notifier_says_it_fails(env: &TestEnv) {
    env.wait_for("the Notifier to say delivery fails", Duration::from_secs(60), || async {
        let out = env.cp.kubectl(&[
            "get", "notifier", "team", "-n", &env.ns, "-o",
            "jsonpath={.status.conditions[0].status}/{.status.conditions[0].reason}/{.status.message}",
        ]);
        match out.starts_with("False/DeliveryFailed/") && out.contains("503") {
            true => Ok(()),
            false => Err(out),
        }
    })
    .await;
}

/// A receiver that accepts connections and never answers: the worst a dead one can do.
async fn hanging_receiver() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    port
}

/// Sixteen stages of pipeline `dead`, each telling its own Notifier whose receiver hangs,
/// and stage `live` of pipeline `live` telling a healthy one; all wait for an approval.
async fn dead_and_live_world(port: u16) -> String {
    let mut secrets = format!("live: \"http://127.0.0.1:{port}/live\"");
    let mut docs = vec![];
    for i in 0..16 {
        let dead = hanging_receiver().await;
        secrets.push_str(&format!(", dead-{i}: \"http://127.0.0.1:{dead}/dead\""));
        docs.push(target_yaml(&format!("web-dead-{i}")));
        docs.push(format!(
            "apiVersion: greenlight.dev/v1alpha1\nkind: Notifier\nmetadata: {{name: dead-{i}}}\nspec: {{type: webhook, urlSecretRef: {{name: hooks, key: dead-{i}}}}}\n---\napiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {{name: dead-{i}}}\nspec: {{pipeline: dead, target: {{name: web-dead-{i}}}, trigger: {{type: manual}}, gates: [signoff], notifiers: [dead-{i}]}}\n"
        ));
    }
    docs.push(target_yaml("web-live"));
    docs.push(format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: hooks}}\nstringData: {{{secrets}}}\n---\n{}---\napiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {{name: signoff}}\nspec: {{type: approval, approval: {{groups: [release-managers]}}}}\n---\napiVersion: greenlight.dev/v1alpha1\nkind: Notifier\nmetadata: {{name: live}}\nspec: {{type: webhook, urlSecretRef: {{name: hooks, key: live}}}}\n---\napiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {{name: live}}\nspec: {{pipeline: live, target: {{name: web-live}}, trigger: {{type: manual}}, gates: [signoff], notifiers: [live]}}\n",
        crate::support::operator_may_read_secret("hooks"),
    ));
    docs.join("---\n")
}

/// Sixteen Notifiers whose receivers hang do not hold up a healthy Notifier's notice, and each
/// says on its status when it is tried next; an Event someone else made, copying the seal of
/// a real notice onto other words, sends nothing.
pub async fn dead_receivers_do_not_starve_a_healthy_one_and_a_forged_event_sends_nothing(
    mut env: TestEnv,
) {
    let receiver = Receiver::default();
    let port = receiver.start().await;
    env.grant_example_roles();
    env.start_admitted_controller().await;
    env.apply(&dead_and_live_world(port).await);
    env.apply(&release_with_pipeline("d1", "dead"));
    env.wait_for(
        "a dead Notifier to say when it tries next",
        Duration::from_secs(90),
        || async {
            let out = env.cp.kubectl(&[
                "get",
                "notifier",
                "dead-0",
                "-n",
                &env.ns,
                "-o",
                "jsonpath={.status.message}",
            ]);
            if out.starts_with("next try in") {
                Ok(())
            } else {
                Err(out)
            }
        },
    )
    .await;
    let published = std::time::Instant::now();
    env.apply(&release_with_pipeline("l1", "live"));
    env.wait_for(
        "the healthy Notifier's notice",
        Duration::from_secs(60),
        || async {
            match receiver.got("live").iter().any(|n| n["release"] == "l1") {
                true => Ok(()),
                false => Err(format!("{:?}", receiver.got("live"))),
            }
        },
    )
    .await;
    println!(
        "notices: with 16 hanging receivers, the healthy one heard of l1 {:?} after it was published",
        published.elapsed()
    );
    forge_a_notice_from_the_real_one(&env, "l1").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let heard = receiver.got("live");
    assert!(
        heard.iter().all(|n| !n.to_string().contains("FORGED")),
        "a forged Event was sent: {heard:?}"
    );
}

fn release_with_pipeline(name: &str, pipeline: &str) -> String {
    format!(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Release\nmetadata: {{name: {name}}}\nspec:\n  pipeline: {pipeline}\n  version: \"1\"\n  artifacts: [{{name: web, image: \"{}\"}}]\n",
        image(name)
    )
}

/// Creates, as a cluster admin could, an outbox Event for `release` that copies a real one's
/// labels, reporting controller and seal, under the name the operator would give its own
/// Event for another audit id, saying something else.
async fn forge_a_notice_from_the_real_one(env: &TestEnv, release: &str) {
    use k8s_openapi::api::events::v1::Event;
    let events = env.api::<Event>();
    let list = events
        .list(&kube::api::ListParams::default().labels("greenlight.dev/notify"))
        .await
        .unwrap();
    let real = list
        .items
        .into_iter()
        .find(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(release))
        .expect("the real outbox Event");
    let mut forged = real.clone();
    let uid = real
        .regarding
        .as_ref()
        .and_then(|r| r.uid.clone())
        .unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{uid}/forged").as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    forged.metadata = kube::api::ObjectMeta {
        name: Some(format!("{release}.{hex}")),
        labels: real.metadata.labels.clone(),
        annotations: real.metadata.annotations.clone().map(|mut a| {
            a.insert("greenlight.dev/audit-id".into(), "forged".into());
            a.remove("greenlight.dev/delivered-to");
            a
        }),
        ..Default::default()
    };
    if let Some(labels) = forged.metadata.labels.as_mut() {
        labels.insert("greenlight.dev/notify".into(), "pending".into());
    }
    forged.note = Some(
        "stage live: gate 'signoff': waiting for approval: FORGED, approve the attacker's build"
            .into(),
    );
    events
        .create(&Default::default(), &forged)
        .await
        .expect("the forged Event");
}
