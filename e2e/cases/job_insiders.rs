//! A team editor against a smoke test: with what Kubernetes' `edit` gives a team (Jobs and
//! pods in its namespace), neither a pod slipped under the check's Job nor a copy of the
//! check's Job made again under its name passes the check. (Taking the name first is not
//! possible: it is keyed with the operator's identity key; a unit test shows it.)

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::ListParams;

use super::insiders::{as_user, grant_team_editor};
use crate::env::{TestEnv, image, release_yaml, target_yaml};

/// What Kubernetes' `edit` role gives a team on Jobs and pods (the test control plane runs
/// no ClusterRole aggregation, so the rules are granted by a Role).
fn grant_jobs_and_pods(env: &TestEnv, user: &str) {
    env.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: edit-jobs-pods}}\nrules:\n- apiGroups: [batch]\n  resources: [jobs]\n  verbs: [get, list, watch, create, update, patch, delete]\n- apiGroups: ['']\n  resources: [pods]\n  verbs: [get, list, watch, create, update, patch, delete]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: edit-jobs-pods}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: edit-jobs-pods}}\nsubjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]\n"
    ));
}

fn job_gate(name: &str, script: &str) -> String {
    format!(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {{name: {name}}}\nspec:\n  type: job\n  job:\n    activeDeadlineSeconds: 120\n    template:\n      serviceAccountName: tester\n      containers:\n      - name: check\n        image: docker.io/curlimages/curl:8.5.0\n        command: [sh, -c, {script:?}]\n"
    )
}

/// A stage `test` that verifies with `gates`, and erin, a team editor who may write Jobs and
/// pods.
fn stage_verified_by(env: &TestEnv, gates: &str) {
    env.apply("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: tester}\n");
    env.apply(&target_yaml("web"));
    env.apply(&format!(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {{name: test}}\nspec: {{pipeline: shop, target: {{name: web}}, verify: {{gates: [{gates}], timeout: 45s}}}}\n"
    ));
    grant_team_editor(env, "erin");
    grant_jobs_and_pods(env, "erin");
}

async fn gate_jobs(env: &TestEnv) -> Vec<Job> {
    let selected = ListParams::default().labels(greenlight::api::GATE_JOB_LABEL);
    env.api::<Job>().list(&selected).await.expect("jobs").items
}

/// The smoke test's Job, once Greenlight has started it.
async fn the_smoke_tests_job(env: &TestEnv) -> Job {
    env.wait_for("the smoke test's Job", Duration::from_secs(90), || async {
        gate_jobs(env).await.pop().ok_or("no Job yet".to_string())
    })
    .await
}

/// The release's test entry once it is final: it must not be `Succeeded`.
async fn final_entry(env: &TestEnv, release: &str) -> serde_json::Value {
    env.wait_for(
        "the release to end at test",
        Duration::from_secs(120),
        || async {
            let r = env.json::<greenlight::api::Release>(release).await;
            let entry = r["status"]["stages"]["test"].clone();
            match entry["phase"].as_str() {
                Some("Succeeded" | "Failed") => Ok(entry),
                _ => Err(entry.to_string()),
            }
        },
    )
    .await
}

pub async fn a_pod_a_team_editor_slips_under_a_smoke_test_job_does_not_pass_it(mut env: TestEnv) {
    stage_verified_by(&env, "smoke");
    env.apply(&job_gate(
        "smoke",
        "sleep 20; echo 'the service is down'; exit 1",
    ));
    env.start_controller();
    env.apply(&release_yaml("v1", "shop", "1.0.0", &image("shop-1")));
    let job = the_smoke_tests_job(&env).await;
    // erin makes a pod that claims to be the Job's and exits 0 at once; the Job controller
    // counts it, and the Job completes.
    let (name, uid) = (job.name_any(), job.uid().unwrap_or_default());
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: erins-pod\n  labels: {{controller-uid: {uid}, job-name: {name}, greenlight.dev/gate-job: {name}}}\n  ownerReferences: [{{apiVersion: batch/v1, kind: Job, name: {name}, uid: {uid}, controller: true}}]\nspec:\n  restartPolicy: Never\n  containers: [{{name: check, image: busybox, command: ['true']}}]\n"
    );
    as_user(&env, "erin", &["create", "-f", "-"], &pod).expect("erin may create pods");
    // The Job controller either counts erin's pod (the Job completes; the gate sees a pod
    // that did not run the template and fails the check, or, once her pod is gone, sees no
    // pod of the template succeed) or deletes it as one pod too many (the real test runs and
    // fails). Never a pass.
    let entry = final_entry(&env, "v1").await;
    assert_eq!(entry["phase"], "Failed", "{entry}");
    let checks = entry["checks"].to_string();
    assert!(
        checks.contains("pod erins-pod (")
            || checks.contains("no pod of it that ran its template is seen to have succeeded")
            || checks.contains("the service is down"),
        "the check says why it did not pass: {checks}"
    );
}

pub async fn a_copy_a_team_editor_makes_of_a_running_check_job_is_not_judged(mut env: TestEnv) {
    stage_verified_by(&env, "smoke");
    env.apply(&job_gate(
        "smoke",
        "sleep 20; echo 'the service is down'; exit 1",
    ));
    env.start_controller();
    env.apply(&release_yaml("v1", "shop", "1.0.0", &image("shop-1")));
    let job = the_smoke_tests_job(&env).await;
    // erin deletes Greenlight's Job and makes it again, seal and all, as a copy she controls
    // (here an exact one: what matters is that it is no longer the Job Greenlight started).
    let name = job.name_any();
    as_user(&env, "erin", &["delete", "job", &name], "").expect("erin may delete Jobs");
    let copy = serde_json::to_string(&copied(job)).expect("json");
    as_user(&env, "erin", &["create", "-f", "-"], &copy).expect("erin may create Jobs");
    let entry = final_entry(&env, "v1").await;
    assert_eq!(entry["phase"], "Failed", "{entry}");
    let checks = entry["checks"].to_string();
    assert!(
        checks.contains("made again under its name"),
        "the copy's own verdict is not used: {checks}"
    );
}

/// A Job as someone would copy it to make it again: without what the apiserver set.
fn copied(mut job: Job) -> Job {
    let meta = &mut job.metadata;
    (meta.uid, meta.resource_version, meta.creation_timestamp) = (None, None, None);
    (meta.managed_fields, meta.owner_references) = (None, None);
    job.status = None;
    if let Some(spec) = job.spec.as_mut() {
        spec.selector = None;
        if let Some(labels) = spec
            .template
            .metadata
            .as_mut()
            .and_then(|m| m.labels.as_mut())
        {
            labels.retain(|k, _| k != "controller-uid" && k != "job-name");
        }
    }
    job
}
