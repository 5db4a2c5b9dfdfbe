//! What a platform engineer sees: the README's example applies cleanly with kubectl 1.20 and
//! `kubectl get` shows useful columns.

use std::time::Duration;

use crate::env::TestEnv;

pub async fn readme_example_is_accepted_and_kubectl_get_shows_useful_columns(mut env: TestEnv) {
    let root = env!("CARGO_MANIFEST_DIR");
    let sample =
        std::fs::read_to_string(format!("{root}/config/samples/pipeline.yaml")).expect("sample");
    let readme = ["getting-started/worked-example.md", "how-to/approvals.md"]
        .map(|page| std::fs::read_to_string(format!("{root}/docs/src/{page}")).expect(page))
        .concat();
    assert!(
        readme.contains(sample.trim()),
        "docs/src/getting-started/worked-example.md must show config/samples/pipeline.yaml verbatim"
    );

    // What the shop's pods answer its smoke test with.
    let app = crate::support::http::WebhookServer::default().start().await;
    let port = app.rsplit(':').next().and_then(|p| p.parse().ok());
    env.kubelet.jobs.serve_default(port.expect("port"));
    env.start_controller();
    env.cp.kubectl(&[
        "apply",
        "-n",
        &env.ns,
        "-f",
        &format!("{root}/config/samples/pipeline.yaml"),
    ]);
    env.wait_release_stage("shop-1-4-2", "dev", "Succeeded", Duration::from_secs(60))
        .await;
    env.wait_release_stage("shop-1-4-2", "test", "Succeeded", Duration::from_secs(60))
        .await;
    assert_kubectl_get_shows_useful_columns(&env).await;
    assert_the_approvals_sample_is_accepted_and_its_approval_does_not_count(&env, root, &readme)
        .await;
}

async fn assert_kubectl_get_shows_useful_columns(env: &TestEnv) {
    let out = env
        .wait_for("columns filled in", Duration::from_secs(20), || async {
            let out = env
                .cp
                .kubectl(&["get", "releases,stages,gates", "-n", &env.ns]);
            if out.contains("dev=Succeeded test=Succeeded prod=Waiting") && out.contains("1.4.2") {
                Ok(out)
            } else {
                Err(out)
            }
        })
        .await;
    for header in [
        "PIPELINE",
        "VERSION",
        "PHASE",
        "STAGES",
        "CURRENT",
        "CANDIDATE",
        "READY",
        "TYPE",
        "MESSAGE",
    ] {
        assert!(out.contains(header), "missing column {header}:\n{out}");
    }
    assert!(out.contains("soak") && out.contains("approval"), "{out}");
    let short = env
        .cp
        .kubectl(&["get", "rel,stg,gt", "-n", &env.ns, "-o", "name"]);
    assert_eq!(short.lines().count(), 8, "short names work:\n{short}");
    env.wait_for(
        "-o wide to say why prod waits",
        Duration::from_secs(20),
        || async {
            let wide = env
                .cp
                .kubectl(&["get", "stage", "prod", "-n", &env.ns, "-o", "wide"]);
            if wide.contains("waits: gate 'soaked-in-test'") {
                Ok(())
            } else {
                Err(wide)
            }
        },
    )
    .await;
    let by_category = env
        .cp
        .kubectl(&["get", "greenlight", "-n", &env.ns, "-o", "name"]);
    assert_eq!(by_category.lines().count(), 8, "{by_category}");
}

async fn assert_the_approvals_sample_is_accepted_and_its_approval_does_not_count(
    env: &TestEnv,
    root: &str,
    readme: &str,
) {
    // The approvals sample, applied without the admission webhooks: accepted, and its
    // unverifiable approval is said not to count.
    let approvals =
        std::fs::read_to_string(format!("{root}/config/samples/approvals.yaml")).expect("sample");
    assert!(
        readme.contains(approvals.trim()),
        "docs/src/how-to/approvals.md must show config/samples/approvals.yaml verbatim"
    );
    env.cp.kubectl(&[
        "apply",
        "-n",
        &env.ns,
        "-f",
        &format!("{root}/config/samples/approvals.yaml"),
    ]);
    let out = env
        .wait_for(
            "the approval to be judged",
            Duration::from_secs(20),
            || async {
                let out = env
                    .cp
                    .kubectl(&["get", "appr", "-n", &env.ns, "-o", "wide"]);
                if out.contains("False") {
                    Ok(out)
                } else {
                    Err(out)
                }
            },
        )
        .await;
    for header in [
        "RELEASE", "STAGE", "DECISION", "APPROVER", "VERIFIED", "COMMENT",
    ] {
        assert!(out.contains(header), "missing column {header}:\n{out}");
    }
    let message = env.cp.kubectl(&[
        "get",
        "approval",
        "shop-1-4-2-by-alice",
        "-n",
        &env.ns,
        "-o",
        "jsonpath={.status.message}",
    ]);
    assert!(
        message.contains("not stamped by Greenlight's admission webhook"),
        "{message}"
    );
}

/// `make run` against a named context refuses a cluster where an installed Greenlight
/// controller already runs: two controllers would both act.
pub async fn make_run_refuses_a_cluster_where_a_controller_already_runs(env: TestEnv) {
    env.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: greenlight\n  labels: {app.kubernetes.io/name: greenlight}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: installed-greenlight}}\n  template:\n    metadata: {labels: {app: installed-greenlight}}\n    spec: {containers: [{name: greenlight, image: registry.local/greenlight:1}]}\n",
    );
    env.wait_for(
        "the installed controller ready",
        Duration::from_secs(60),
        || async {
            let d = env.deployment("greenlight").await;
            match d.and_then(|d| d.status).and_then(|s| s.ready_replicas) {
                Some(n) if n > 0 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let root = env!("CARGO_MANIFEST_DIR");
    let kubectl_dir = crate::support::find_binary("kubectl");
    let path = format!(
        "{}:{}",
        kubectl_dir.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("bash")
        .arg(format!("{root}/hack/run.sh"))
        .env("KUBECONFIG", &env.cp.kubeconfig)
        .env("GREENLIGHT_CONTEXT", "e2e")
        .env("PATH", path)
        .output()
        .expect("run hack/run.sh");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "make run started anyway: {said}");
    assert!(
        said.contains("already runs on context 'e2e'")
            && said.contains(&format!("{}/greenlight", env.ns)),
        "{said}"
    );
}
