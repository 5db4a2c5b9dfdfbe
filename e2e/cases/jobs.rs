//! Testing a release where it runs: Job gates in `verify` and `preRollout`, run by the real
//! Job controller, their pods' commands run by the fake kubelet.

use std::time::Duration;

use greenlight::api::stage::StagePhase;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

use crate::env::{TestEnv, image, release_yaml, target_yaml};
use crate::support::http::WebhookServer;

/// A Job gate named `name` running `script` with `sh -c`, under the `tester` account.
fn job_gate(name: &str, script: &str) -> String {
    format!(
        r#"apiVersion: greenlight.dev/v1alpha1
kind: Gate
metadata: {{name: {name}}}
spec:
  type: job
  job:
    activeDeadlineSeconds: 60
    template:
      serviceAccountName: tester
      containers:
      - name: check
        image: docker.io/curlimages/curl:8.5.0
        command: [sh, -c, {script:?}]
"#
    )
}

/// dev, then test with `verify: [smoke]`, then prod.
const DEV_TEST_PROD: &str = r#"apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {name: dev}
spec: {pipeline: shop, target: {name: web-dev}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {name: test}
spec:
  pipeline: shop
  requires: [dev]
  target: {name: web-test}
  verify: {gates: [smoke], timeout: 2m}
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {name: prod}
spec: {pipeline: shop, requires: [test], target: {name: web-prod}}
"#;

const SMOKE: &str = r#"curl -fsS "$GREENLIGHT_SERVICE_URL/200/ok" >/dev/null || { echo "smoke: $GREENLIGHT_VERSION did not answer GET /"; exit 1; }"#;

async fn pipeline_with_a_smoke_test(env: &mut TestEnv) -> (String, String) {
    env.apply("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: tester}\n");
    let targets = ["web-dev", "web-test", "web-prod"].map(target_yaml);
    env.apply(&targets.join("---\n"));
    env.apply(&job_gate("smoke", SMOKE));
    env.apply(DEV_TEST_PROD);
    let healthy = WebhookServer::default().start().await;
    let port: u16 = healthy
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let (good, broken) = (image("shop-good"), image("shop-broken"));
    // The broken release's pods answer nowhere: nothing listens on port 9.
    env.kubelet.jobs.serve_image(&good, port);
    env.kubelet.jobs.serve_image(&broken, 9);
    env.start_controller();
    (good, broken)
}

/// A smoke test that passes lets the release succeed at test; one that exits 1 rolls test
/// back to the release before, and the Release shows the test's own last words.
pub async fn a_smoke_test_job_that_passes_promotes_and_one_that_exits_1_rolls_back_with_its_message(
    mut env: TestEnv,
) {
    let (good, broken) = pipeline_with_a_smoke_test(&mut env).await;
    let verification_start = when_test_starts_verifying(&env);
    env.apply(&release_yaml("v1", "shop", "1.0.0", &good));
    let v1 = env
        .wait_release_stage("v1", "test", "Succeeded", Duration::from_secs(90))
        .await;
    record_time_to_verdict(verification_start, &v1).await;
    let checks = &v1.status.as_ref().unwrap().stages["test"].checks;
    assert_eq!(format!("{:?}", checks[0].result), "Passed", "{checks:?}");
    env.apply(&release_yaml("v2", "shop", "2.0.0", &broken));
    let v2 = env
        .wait_release_stage("v2", "test", "Failed", Duration::from_secs(120))
        .await;
    let entry = &v2.status.as_ref().unwrap().stages["test"];
    assert_eq!(entry.reason.as_deref(), Some("VerificationFailed"));
    let message = entry.message.clone().unwrap_or_default();
    assert!(
        message.contains("smoke: 2.0.0 did not answer GET /"),
        "{message}"
    );
    env.wait_for("test to run v1 again", Duration::from_secs(60), || async {
        match env.images("web-test-primary").await {
            images if images == vec![good.clone()] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let trail = &v2.status.as_ref().unwrap().audit;
    assert!(
        trail.iter().any(
            |e| format!("{:?}", e.action) == "GateFailed" && e.gate.as_deref() == Some("smoke")
        ),
        "{trail:?}"
    );
}

/// From the rollout's end (the decision that starts verifying) to the verdict (the release's
/// entry final), for a Job that exits at once: the Job controller's and the kubelet's latency
/// is most of it.
async fn record_time_to_verdict(
    started: tokio::task::JoinHandle<Option<jiff::Timestamp>>,
    release: &greenlight::api::Release,
) {
    let started = tokio::time::timeout(Duration::from_secs(10), started).await;
    let started = started.ok().and_then(Result::ok).flatten();
    let entry = release.status.as_ref().and_then(|s| s.stages.get("test"));
    let done = entry.and_then(|e| e.finished_at);
    let (Some(started), Some(done)) = (started, done) else {
        panic!("the watch saw no Verifying test ({started:?}) or v1 has no end there ({done:?})");
    };
    let took = done.duration_since(started).unsigned_abs();
    let what = "rollout complete to verification verdict (a Job that exits at once)";
    crate::support::figures::record(what, took);
}

/// When stage `test` first shows `Verifying` (its `phaseSince`: the decision's own time), as
/// its watch brings every version of it, however short the phase.
fn when_test_starts_verifying(env: &TestEnv) -> tokio::task::JoinHandle<Option<jiff::Timestamp>> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let api = env.api::<greenlight::api::Stage>();
    let config = watcher::Config::default().fields("metadata.name=test");
    tokio::spawn(async move {
        let mut stages = std::pin::pin!(watcher(api, config).applied_objects());
        while let Some(Ok(stage)) = stages.next().await {
            let status = stage.status.unwrap_or_default();
            if status.phase == Some(StagePhase::Verifying) {
                return status.phase_since;
            }
        }
        None
    })
}

/// A release whose verification fails in test never reaches prod, which keeps what it ran.
pub async fn a_release_failing_verification_in_test_never_reaches_prod(mut env: TestEnv) {
    let (good, broken) = pipeline_with_a_smoke_test(&mut env).await;
    env.apply(&release_yaml("v1", "shop", "1.0.0", &good));
    env.wait_release_stage("v1", "prod", "Succeeded", Duration::from_secs(120))
        .await;
    env.apply(&release_yaml("v2", "shop", "2.0.0", &broken));
    env.wait_release_stage("v2", "test", "Failed", Duration::from_secs(120))
        .await;
    let v2 = env
        .wait_release_stage("v2", "prod", "Superseded", Duration::from_secs(60))
        .await;
    let at_prod = &v2.status.as_ref().unwrap().stages["prod"];
    assert!(
        at_prod
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("'test'"),
        "{at_prod:?}"
    );
    assert_eq!(env.images("web-prod-primary").await, vec![good]);
    let test = env
        .wait_for(
            "test to have rolled back",
            Duration::from_secs(60),
            || async {
                let status = env.stage("test").await.status.unwrap_or_default();
                match status.phase {
                    Some(StagePhase::Failed) => Ok(status),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    assert!(
        test.message
            .unwrap_or_default()
            .contains("VerificationFailed")
    );
}

/// A pre-rollout Job that fails fails the release before anything changes: the primary keeps
/// its ReplicaSet, its template and its generation.
pub async fn a_failing_pre_rollout_job_leaves_the_workload_untouched(mut env: TestEnv) {
    env.apply("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: tester}\n");
    env.apply(&target_yaml("web"));
    env.apply(&job_gate("snapshot", "test \"$GREENLIGHT_VERSION\" = 1.0.0 || { echo 'snapshot: the database refused'; exit 1; }"));
    env.apply(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {name: prod}\nspec: {pipeline: shop, target: {name: web}, preRollout: [snapshot]}\n",
    );
    env.start_controller();
    env.apply(&release_yaml("v1", "shop", "1.0.0", &image("shop-1")));
    env.wait_release_stage("v1", "prod", "Succeeded", Duration::from_secs(90))
        .await;
    let before = primary_facts(&env).await;
    env.apply(&release_yaml("v2", "shop", "2.0.0", &image("shop-2")));
    let v2 = env
        .wait_release_stage("v2", "prod", "Failed", Duration::from_secs(90))
        .await;
    let entry = &v2.status.as_ref().unwrap().stages["prod"];
    assert_eq!(entry.reason.as_deref(), Some("PreRolloutFailed"));
    assert!(
        entry
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("the database refused")
    );
    assert_eq!(
        primary_facts(&env).await,
        before,
        "the workload was not touched"
    );
    env.wait_event("PreRolloutFailed").await;
    env.wait_event("RolloutUpcoming").await;
}

/// The primary's generation, template hash and ReplicaSets.
async fn primary_facts(env: &TestEnv) -> (Option<i64>, Option<String>, Vec<String>) {
    let primary: Deployment = env
        .api::<Deployment>()
        .get("web-primary")
        .await
        .expect("primary");
    let template = primary
        .spec
        .as_ref()
        .map(|s| serde_json::to_string(&s.template).unwrap_or_default());
    let sets = env
        .api::<k8s_openapi::api::apps::v1::ReplicaSet>()
        .list(&ListParams::default())
        .await
        .expect("replica sets");
    let mut names: Vec<String> = sets
        .items
        .iter()
        .filter_map(|r| r.metadata.name.clone())
        .collect();
    names.sort();
    (primary.metadata.generation, template, names)
}

/// A controller killed while its verification Job runs finds that Job after the restart,
/// starts no second one, and uses its verdict.
pub async fn a_controller_killed_mid_verification_finds_its_job_and_uses_its_verdict(
    mut env: TestEnv,
) {
    env.apply("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: tester}\n");
    env.apply(&target_yaml("web"));
    env.apply(&job_gate("slow-check", "sleep 8; echo checked"));
    env.apply(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {name: test}\nspec: {pipeline: shop, target: {name: web}, verify: {gates: [slow-check]}}\n",
    );
    env.start_controller();
    env.apply(&release_yaml("v1", "shop", "1.0.0", &image("shop-1")));
    env.wait_for(
        "the check's Job to start",
        Duration::from_secs(90),
        || async {
            match gate_jobs(&env).await.len() {
                0 => Err("no Job yet".to_string()),
                _ => Ok(()),
            }
        },
    )
    .await;
    // The check runs 8s: long enough to see the stage verifying.
    let verifying = env
        .wait_for("test to be Verifying", Duration::from_secs(30), || async {
            let stage = env.json::<greenlight::api::Stage>("test").await;
            match stage["status"]["phase"].as_str() {
                Some("Verifying") => Ok(stage),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    let (health, _) = crate::support::lua::health("Stage", &verifying);
    assert_eq!(
        health, "Progressing",
        "Argo CD reads Verifying as Progressing"
    );
    let before = gate_jobs(&env).await;
    env.kill_controller();
    env.start_controller();
    env.wait_release_stage("v1", "test", "Succeeded", Duration::from_secs(90))
        .await;
    let after = gate_jobs(&env).await;
    assert_eq!(after.len(), 1, "exactly one Job for the attempt");
    assert_eq!(
        after[0].metadata.uid, before[0].metadata.uid,
        "the very Job started before the kill"
    );
    let release = env.json::<greenlight::api::Release>("v1").await;
    let check = &release["status"]["stages"]["test"]["checks"][0];
    assert_eq!(check["job"].as_str(), after[0].metadata.name.as_deref());
    assert_eq!(check["result"].as_str(), Some("Passed"), "{check}");
    let metrics = env.metrics().await;
    let created = crate::env::metric_sum(
        &metrics,
        "greenlight_api_writes_total",
        &[("kind", "gate_job")],
    );
    assert_eq!(created, 0.0, "the restarted controller started no Job");
}

async fn gate_jobs(env: &TestEnv) -> Vec<Job> {
    let selected = ListParams::default().labels(greenlight::api::GATE_JOB_LABEL);
    env.api::<Job>().list(&selected).await.expect("jobs").items
}

/// A Job the quota refuses is inconclusive, with the apiserver's words, and is tried again
/// with backoff, not in a loop; once the quota goes, it runs and the release succeeds.
pub async fn a_job_refused_by_a_quota_is_inconclusive_and_backs_off_without_a_loop(
    mut env: TestEnv,
) {
    env.apply("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: tester}\n");
    env.apply(&target_yaml("web"));
    env.apply(&job_gate("check", "echo fine"));
    refuse_new_jobs(&env).await;
    env.apply(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {name: test}\nspec: {pipeline: shop, target: {name: web}, verify: {gates: [check]}}\n",
    );
    env.start_controller();
    env.apply(&release_yaml("v1", "shop", "1.0.0", &image("shop-1")));
    let inconclusive = env
        .wait_for(
            "the check to be inconclusive",
            Duration::from_secs(90),
            || async {
                let r = env.release("v1").await;
                let checks = r
                    .status
                    .and_then(|s| s.stages.get("test").map(|e| e.checks.clone()));
                match checks.unwrap_or_default().first() {
                    Some(c) if format!("{:?}", c.result) == "Inconclusive" => Ok(c.message.clone()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    assert!(inconclusive.contains("exceeded quota"), "{inconclusive}");
    tokio::time::sleep(Duration::from_secs(60)).await;
    let metrics = env.metrics().await;
    let refused = crate::env::metric_sum(
        &metrics,
        "greenlight_api_write_refusals_total",
        &[("kind", "gate_job")],
    );
    assert!(
        (1.0..=6.0).contains(&refused),
        "{refused} refused creations in a minute and more"
    );
    env.api::<ResourceQuota>()
        .delete("no-jobs", &Default::default())
        .await
        .expect("delete quota");
    env.wait_release_stage("v1", "test", "Succeeded", Duration::from_secs(400))
        .await;
}

/// No quota controller runs here: the quota's status is written as one would.
async fn refuse_new_jobs(env: &TestEnv) {
    env.apply("apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: no-jobs}\nspec:\n  hard: {count/jobs.batch: \"0\"}\n");
    let counts = json!({"count/jobs.batch": "0"});
    env.api::<ResourceQuota>()
        .patch_status(
            "no-jobs",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"hard": counts, "used": counts}})),
        )
        .await
        .expect("the quota's status");
}

const REFUSED: [(&str, &str); 3] = [
    ("hostNetwork: true", "spec.job.template.hostNetwork"),
    (
        "serviceAccountName: greenlight",
        "spec.job.template.serviceAccountName",
    ),
    (
        "privileged: true",
        "spec.job.template.containers[0].securityContext.privileged",
    ),
];

fn refused_gate(name: &str, what: &str) -> String {
    let (account, extra, security) = match what {
        "serviceAccountName: greenlight" => ("greenlight", "", ""),
        "hostNetwork: true" => ("tester", "      hostNetwork: true\n", ""),
        _ => (
            "tester",
            "",
            "        securityContext: {privileged: true}\n",
        ),
    };
    format!(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {{name: {name}}}\nspec:\n  type: job\n  job:\n    template:\n      serviceAccountName: {account}\n{extra}      containers:\n      - name: check\n        image: busybox\n        command: [sh, -c, 'true']\n{security}"
    )
}

/// A Job template that asks for the host's network, a privileged container or the
/// operator's own account is refused by the webhook, naming the field; with the webhook
/// off the controller refuses it too, and no Job runs.
pub async fn host_namespaces_privilege_and_the_operators_account_are_refused_by_field(
    mut env: TestEnv,
) {
    let operator = "--lease-writer=system:serviceaccount:greenlight-system:greenlight";
    env.extra_args.push(operator.to_string());
    env.start_admitted_controller().await;
    for (i, (what, field)) in REFUSED.iter().enumerate() {
        let out = env.apply_raw(&refused_gate(&format!("bad-{i}"), what));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(field),
            "{what}: {stderr}"
        );
    }
    // The webhook goes; the controller alone must refuse the same.
    env.kill_controller();
    let name = format!("greenlight-{}", env.ns);
    for kind in [
        "validatingwebhookconfiguration",
        "mutatingwebhookconfiguration",
    ] {
        let out = env.kubectl(&["delete", kind, &name], "");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    env.enable_admission(crate::env::Admission::Off);
    env.start_controller();
    env.apply(&target_yaml("web"));
    for (i, (what, _)) in REFUSED.iter().enumerate() {
        env.apply(&refused_gate(&format!("bad-{i}"), what));
    }
    for (i, (_, field)) in REFUSED.iter().enumerate() {
        let name = format!("bad-{i}");
        env.wait_for(
            &format!("Gate {name} to name {field}"),
            Duration::from_secs(60),
            || async {
                let gate = env.json::<greenlight::api::Gate>(&name).await;
                let message = gate["status"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if message.contains(field) {
                    Ok(())
                } else {
                    Err(message)
                }
            },
        )
        .await;
    }
    a_gate_made_privileged_mid_verification_runs_no_job(&env).await;
}

/// With no webhook, a verify gate edited to ask for a privileged container while its release
/// verifies is judged invalid, naming the field, and starts no Job.
async fn a_gate_made_privileged_mid_verification_runs_no_job(env: &TestEnv) {
    env.apply("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: tester}\n");
    env.apply(&job_gate("check", "sleep 30"));
    env.apply("apiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {name: test}\nspec: {pipeline: shop, target: {name: web}, verify: {gates: [check], timeout: 2m}}\n");
    env.apply(&release_yaml("v1", "shop", "1.0.0", &image("shop-1")));
    env.wait_for("the check's Job", Duration::from_secs(90), || async {
        match gate_jobs(env).await.len() {
            1 => Ok(()),
            n => Err(format!("{n} Jobs")),
        }
    })
    .await;
    env.apply(&refused_gate("check", "privileged: true"));
    let field = "spec.job.template.containers[0].securityContext.privileged";
    env.wait_for(
        "the verification to judge the edited gate invalid",
        Duration::from_secs(90),
        || async {
            let release = env.json::<greenlight::api::Release>("v1").await;
            let check = &release["status"]["stages"]["test"]["checks"][0];
            let invalid = check["result"] == "Invalid";
            match invalid
                && check["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(field)
            {
                true => Ok(()),
                false => Err(check.to_string()),
            }
        },
    )
    .await;
    assert_eq!(
        gate_jobs(env).await.len(),
        1,
        "no Job for the privileged spec"
    );
}

/// Twenty releases verified one after another leave a bounded number of Jobs behind.
pub async fn twenty_verified_releases_leave_a_bounded_number_of_jobs(mut env: TestEnv) {
    env.apply("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: tester}\n");
    env.apply(&target_yaml("web"));
    env.apply(&job_gate("check", "echo fine"));
    env.apply(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {name: test}\nspec: {pipeline: shop, target: {name: web}, verify: {gates: [check]}}\n",
    );
    env.start_controller();
    for i in 1..=20 {
        let name = format!("v{i}");
        env.apply(&release_yaml(
            &name,
            "shop",
            &format!("{i}.0.0"),
            &image(&format!("shop-{i}")),
        ));
        env.wait_release_stage(&name, "test", "Succeeded", Duration::from_secs(90))
            .await;
    }
    let left = gate_jobs(&env).await.len();
    println!("gate Jobs left after 20 verified releases: {left}");
    let kept = greenlight::machine::retention::JOBS_KEPT_PER_STAGE;
    assert!(
        left <= kept + 1,
        "{left} Jobs left, more than the {kept} kept and the last"
    );
}
