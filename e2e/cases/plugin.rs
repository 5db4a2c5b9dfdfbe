//! `kubectl greenlight`, used as people and CI jobs use it: as token-file users, against the
//! controller with its admission webhooks, and its live view in a real terminal (tmux).

use std::process::Command;
use std::time::Duration;

use crate::env::{TestEnv, image, release_yaml, target_yaml};

/// dev (rolling), then prod: an approval by a release manager, then a canary that pauses at
/// 50% until someone promotes it.
fn pipeline_yaml() -> String {
    format!(
        r#"{dev}---
{web}---
apiVersion: greenlight.dev/v1alpha1
kind: Gate
metadata: {{name: prod-signoff}}
spec:
  type: approval
  approval: {{groups: [release-managers], required: 1}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {{name: dev}}
spec:
  pipeline: shop
  target: {{name: web-dev}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {{name: prod}}
spec:
  pipeline: shop
  requires: [dev]
  target: {{name: web}}
  replicas: 2
  gates: [prod-signoff]
  strategy:
    type: canary
    canary:
      steps:
      - setWeight: 50
      - pause: {{}}
"#,
        dev = target_yaml("web-dev"),
        web = target_yaml("web"),
    )
}

/// Runs the plugin as `user` (the admin when `None`); returns exit code, stdout and stderr.
pub fn plugin(env: &TestEnv, user: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let kubeconfig = match user {
        Some(user) => env.cp.kubeconfig_for(user),
        None => env.cp.kubeconfig.clone(),
    };
    let out = Command::new(crate::support::workspace_bin("kubectl-greenlight"))
        .args(args)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["-n", &env.ns])
        .output()
        .expect("run kubectl-greenlight");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the plugin and expects exit code `code`; returns stdout.
fn expect(env: &TestEnv, user: Option<&str>, args: &[&str], code: i32) -> String {
    let (got, out, err) = plugin(env, user, args);
    assert_eq!(
        got, code,
        "kubectl greenlight {args:?} as {user:?}:\n{out}\n{err}"
    );
    out
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

pub async fn the_plugin_shows_approves_steers_and_waits_like_a_release_manager(mut env: TestEnv) {
    env.grant_example_roles();
    env.start_admitted_controller().await;
    env.apply(&pipeline_yaml());
    env.apply(&release_yaml("v1", "shop", "1.0.0", &image("plugin-v1")));
    expect(
        &env,
        None,
        &["status", "dev", "--release", "v1", "--timeout", "60s"],
        0,
    );
    waits_for_approval_then_alice_approves(&env, "v1").await;
    expect(
        &env,
        None,
        &["status", "prod", "--release", "v1", "--timeout", "60s"],
        0,
    );

    let watch = Tmux::start(&env);
    env.apply(&release_yaml("v2", "shop", "2.0.0", &image("plugin-v2")));
    waits_for_approval_then_alice_approves(&env, "v2").await;
    let paused = watch.wait_for("the paused canary at 50%", |screen| {
        screen.contains("canary step 2/2") && screen.contains("50%")
    });
    assert!(
        paused.contains("├─ dev") && paused.contains("└─ prod"),
        "a tree:\n{paused}"
    );
    assert!(
        paused.contains(&format!("{}{}", "█".repeat(10), "░".repeat(10))),
        "a weight bar, half full at 50%:\n{paused}"
    );
    let (code, out, _) = plugin(
        &env,
        None,
        &["status", "prod", "--release", "v2", "--timeout", "2s"],
    );
    assert_eq!(code, 2, "a timeout exits 2:\n{out}");
    let promoted = expect(
        &env,
        Some("alice"),
        &["promote", "prod", "-m", "looks good"],
        0,
    );
    assert!(promoted.contains("Applied"), "{promoted}");
    expect(
        &env,
        None,
        &["status", "prod", "--timeout", "60s", "--release", "v2"],
        0,
    );
    let redrawn = watch.wait_for("the view redrawn after promotion", |screen| {
        screen.contains("└─ prod  Idle")
            && screen.contains("2.0.0 (v2)")
            && !screen.contains("canary step")
    });
    assert!(
        !redrawn.contains("50%"),
        "the old frame is gone:\n{redrawn}"
    );
    drop(watch);

    abort_and_retry(&env).await;
    reads_for_scripts_and_people(&env);
    says_what_is_wrong(&env);
}

async fn waits_for_approval_then_alice_approves(env: &TestEnv, release: &str) {
    let view = env
        .wait_for(
            "prod waiting for its approval",
            Duration::from_secs(60),
            || async {
                let (_, out, err) = plugin(env, None, &["get", "pipeline", "shop", "-o", "json"]);
                let view = serde_json::from_str::<serde_json::Value>(&out)
                    .map_err(|e| format!("{e}: {err}"))?;
                let prod = view["stages"]
                    .as_array()
                    .and_then(|s| s.last().cloned())
                    .unwrap_or_default();
                let waiting = prod["phase"] == "Waiting"
                    && prod["candidate"]
                        .as_str()
                        .is_some_and(|c| c.contains(release));
                match waiting && prod["gates"][0]["name"] == "prod-signoff" {
                    true => Ok(prod),
                    false => Err(prod.to_string()),
                }
            },
        )
        .await;
    assert_eq!(view["gates"][0]["verdict"], "Pending", "{view}");
    let out = expect(
        env,
        Some("alice"),
        &["approve", release, "--stage", "prod", "-m", "ship it"],
        0,
    );
    assert!(out.contains("approved by alice"), "says it counted: {out}");
    // carol may record decisions, but is no release manager: hers does not count, and says why.
    let out = expect(
        env,
        Some("carol"),
        &["approve", release, "--stage", "prod"],
        1,
    );
    assert!(
        out.contains("does not count toward gate 'prod-signoff'"),
        "{out}"
    );
}

async fn abort_and_retry(env: &TestEnv) {
    env.apply(&release_yaml("v3", "shop", "3.0.0", &image("plugin-v3")));
    waits_for_approval_then_alice_approves(env, "v3").await;
    env.wait_for("v3's canary paused", Duration::from_secs(60), || async {
        let stage = env.stage("prod").await;
        match stage.status.and_then(|s| s.rollout).and_then(|r| r.canary) {
            Some(c) if format!("{:?}", c.phase) == "Paused" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let aborted = expect(env, Some("alice"), &["abort", "prod", "-m", "bad smell"], 0);
    assert!(aborted.contains("Applied"), "{aborted}");
    let failed = expect(
        env,
        None,
        &["status", "prod", "--release", "v3", "--timeout", "60s"],
        1,
    );
    assert!(
        failed.contains("Failed"),
        "a rolled-back release exits 1: {failed}"
    );
    // A retry is taken once the rollback has finished, as the view shows it.
    env.wait_for("the rollback done", Duration::from_secs(60), || async {
        match env.stage("prod").await.status.and_then(|s| s.phase) {
            Some(p) if format!("{p:?}") == "Failed" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let retried = expect(env, Some("alice"), &["retry", "prod"], 0);
    assert!(
        retried.contains("retry prod: Applied"),
        "retries the rolled-back v3: {retried}"
    );
}

fn reads_for_scripts_and_people(env: &TestEnv) {
    let rows = json(&expect(env, None, &["get", "releases", "-o", "json"], 0));
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["v3", "v2", "v1"], "newest first");
    assert_eq!(
        rows[1]["stages"][1],
        serde_json::json!(["prod", "Succeeded"])
    );
    let text = expect(env, None, &["get", "releases"], 0);
    assert!(
        text.contains("v2") && text.contains("prod=Succeeded") && !text.contains('\x1b'),
        "{text}"
    );
    let history = json(&expect(env, None, &["history", "v2", "-o", "json"], 0));
    let entries: Vec<(String, String)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or("").into(),
                e["action"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    let approved = entries
        .iter()
        .position(|e| *e == ("alice".into(), "Approved".into()));
    let promoted = entries
        .iter()
        .position(|e| *e == ("alice".into(), "PromoteRequested".into()));
    assert!(
        approved.is_some() && promoted.is_some() && approved < promoted,
        "oldest first: {entries:?}"
    );
    let yaml = expect(env, None, &["get", "pipeline", "shop", "-o", "yaml"], 0);
    assert!(yaml.contains("pipeline: shop"), "{yaml}");
}

fn says_what_is_wrong(env: &TestEnv) {
    let (code, _, err) = plugin(env, None, &["get", "pipeline", "nope"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "pipeline 'nope' not found in namespace {}",
            env.ns
        )),
        "{err}"
    );
    let (code, _, err) = plugin(env, None, &["status", "nope"]);
    assert_eq!(code, 3, "status cannot tell: {err}");
    assert!(err.contains("stage 'nope' not found"), "{err}");
    let (code, _, err) = plugin(env, Some("erin"), &["promote", "prod"]);
    assert_eq!(code, 1);
    assert!(err.contains("forbidden"), "{err}");
}

/// The live view in a real terminal: `get pipeline --watch` under tmux.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(env: &TestEnv) -> Tmux {
        let socket = format!("greenlight-{}", env.ns);
        let command = format!(
            "{} get pipeline shop --watch --kubeconfig {} -n {}",
            crate::support::workspace_bin("kubectl-greenlight").display(),
            env.cp.kubeconfig.display(),
            env.ns
        );
        let status = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "new-session",
                "-d",
                "-s",
                "watch",
                "-x",
                "160",
                "-y",
                "40",
                &command,
            ])
            .env("TERM", "xterm-256color")
            .env_remove("NO_COLOR")
            .status()
            .expect("tmux (apt-get install tmux)");
        assert!(status.success(), "tmux new-session");
        Tmux { socket }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "watch"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Captures the pane until `ready` holds for it, for up to a minute.
    fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: the screen shows\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}
