//! `make demo`: Greenlight from nothing to a promotion and a rollback, in one command. It
//! starts a local control plane, three app processes and a real Prometheus scraping them,
//! a real PostgreSQL, traffic through the canary's route, the operator, and a local receiver
//! for notices; applies a three-stage pipeline whose test stage verifies each release with a
//! smoke-test Job and whose prod stage snapshots the database before it changes anything;
//! publishes a healthy release and then a faulty one while `kubectl greenlight get pipeline
//! --watch` shows them; prints a summary and stops everything. It exits 0 when the healthy
//! release reached prod and the faulty one failed its verification in test and never left it.

#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use greenlight::api::GateList;
use greenlight::api::Release;
use greenlight::api::release::{GateVerdict, StagePhaseForRelease};
use kube::{Api, Client};
use support::controlplane::ControlPlane;
use support::kubelet::Kubelet;
use support::postgres::Postgres;
use support::prometheus::Prometheus;
use support::traffic::{Apps, LoadGenerator};

const NS: &str = "demo";
/// Where the demo's dashboard listens.
const DASHBOARD: &str = "127.0.0.1:3100";
const ERROR_RATE: &str = r#"(sum(rate(http_requests_total{workload="{{canary}}",code=~"5.."}[10s])) or vector(0)) / sum(rate(http_requests_total{workload="{{canary}}"}[10s]))"#;
const REQUESTS: &str = r#"sum(increase(http_requests_total{workload="{{canary}}"}[10s]))"#;

/// The binaries built beside this one.
fn sibling(name: &str) -> PathBuf {
    let me = std::env::current_exe().expect("current exe");
    me.parent().expect("bin dir").join(name)
}

fn image(tag: &str, n: u8) -> String {
    format!(
        "registry.local/shop-web:{tag}@sha256:{}",
        format!("{n:02x}").repeat(32)
    )
}

fn step(text: &str) {
    println!("\n▶ {text}");
}

#[tokio::main]
async fn main() -> ExitCode {
    let started = Instant::now();
    println!("Greenlight demo: a healthy release promoted to prod, a faulty one rolled back.");
    let dir = support::temp_dir("greenlight-demo");
    step("Starting a local Kubernetes 1.20 control plane and a fake kubelet");
    let cp = ControlPlane::start();
    cp.install();
    let kubelet = support::kubelet::start_in_background(cp.kubeconfig.clone());
    cp.kubectl(&["create", "namespace", NS]);
    let client = admin_client(&cp).await;
    let ok = run(&cp, client, &kubelet, &dir).await;
    step(&format!(
        "Stopping everything ({}s in all)",
        started.elapsed().as_secs()
    ));
    cp.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn admin_client(cp: &ControlPlane) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(&cp.kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

/// Everything after the control plane; true when the end state is the expected one.
async fn run(cp: &ControlPlane, client: Client, kubelet: &Kubelet, dir: &std::path::Path) -> bool {
    let images = [image("healthy", 0), image("healthy", 1), image("faulty", 2)];
    step(
        "Starting the app processes (0.9 and 1.0 healthy, 2.0 faulty: one request in five fails), Prometheus and PostgreSQL",
    );
    let refs: Vec<&str> = images.iter().map(String::as_str).collect();
    let apps = Apps::start(&refs, dir, &sibling("greenlight-e2e-app").to_string_lossy());
    for (image, port) in &apps.ports {
        kubelet.jobs.serve_image(image, *port);
    }
    let mut prometheus = Prometheus::start(&apps.targets());
    prometheus.wait_for_series("up", images.len()).await;
    let database = shop_database(dir);
    let notices = Notices::start().await;
    step(
        "Applying the pipeline: dev (automatic), test (after a 10s soak in dev, verified by a smoke-test Job), prod (a database snapshot first, then a canary behind an error-rate SLO, verified again), and a notifier",
    );
    apply(cp, dir, &database.service_yaml("shop-db"));
    apply(cp, dir, &world_yaml(&prometheus.url, notices.port));
    let _controller = start_operator(cp, dir);
    step("Rolling out the baseline, 0.9, everywhere");
    publish(cp, dir, "shop-0-9", "0.9", &images[0]);
    wait_at(&client, "shop-0-9", "prod", Duration::from_secs(120)).await;
    let load = LoadGenerator::start(client.clone(), NS, "web", "web", apps.ports.clone(), 50);
    step("Publishing 1.0 (healthy), then 2.0 (faulty); the plugin's live view follows");
    let watch = Watch::start(cp);
    let _dashboard = Watch::dashboard(cp);
    publish(cp, dir, "shop-1-0", "1.0", &images[1]);
    let promoted = wait_at(&client, "shop-1-0", "prod", Duration::from_secs(180)).await;
    publish(cp, dir, "shop-2-0", "2.0", &images[2]);
    let failed = wait_at(&client, "shop-2-0", "test", Duration::from_secs(180)).await;
    wait_at(&client, "shop-2-0", "prod", Duration::from_secs(60)).await;
    wait_for_rollback_to_finish(&client).await;
    drop(watch);
    drop(load);
    let snapshot = snapshot_bytes(kubelet);
    summary(&client, &notices, (promoted, failed), snapshot).await
}

/// The shop's database, with rows enough for its snapshot to have a size.
fn shop_database(dir: &std::path::Path) -> Postgres {
    let database = Postgres::start(dir);
    database.sql("postgres", "CREATE DATABASE shop");
    database.sql(
        "shop",
        "CREATE TABLE orders (id serial PRIMARY KEY, item text, placed timestamptz DEFAULT now()); \
         INSERT INTO orders (item) SELECT 'item-' || n FROM generate_series(1, 10000) n",
    );
    database
}

/// The size of the snapshot prod's pre-rollout Job wrote, from the Job pod's working directory.
fn snapshot_bytes(kubelet: &Kubelet) -> Option<u64> {
    let pods = std::fs::read_dir(kubelet.jobs.workdir(NS, "")).ok()?;
    pods.flatten()
        .filter_map(|pod| std::fs::metadata(pod.path().join("snapshot.sql")).ok())
        .map(|m| m.len())
        .max()
}

fn apply(cp: &ControlPlane, dir: &std::path::Path, yaml: &str) {
    let path = dir.join(format!("apply-{}.yaml", support::unique()));
    std::fs::write(&path, yaml).expect("write");
    cp.kubectl(&["apply", "-n", NS, "-f", &path.to_string_lossy()]);
}

fn publish(cp: &ControlPlane, dir: &std::path::Path, name: &str, version: &str, image: &str) {
    apply(
        cp,
        dir,
        &format!(
            "apiVersion: greenlight.dev/v1alpha1\nkind: Release\nmetadata: {{name: {name}}}\nspec:\n  pipeline: shop\n  version: \"{version}\"\n  source: {{repository: \"https://git.example.com/shop/web\", commit: \"c0ffee{}\"}}\n  artifacts: [{{name: web, image: \"{image}\"}}]\n",
            version.replace('.', "")
        ),
    );
}

/// The operator, under its least-privilege user, for the demo namespace.
fn start_operator(cp: &ControlPlane, dir: &std::path::Path) -> support::process::Proc {
    let key = dir.join("identity.key");
    std::fs::write(&key, "demo-identity-key-0123456789abcdef0123456789abcdef").expect("key");
    let mut cmd = Command::new(sibling("greenlight"));
    cmd.args([
        "controller",
        "--namespace",
        NS,
        "--webhook-allow",
        "127.0.0.1",
    ])
    .arg(format!("--metrics-addr=127.0.0.1:{}", support::free_port()))
    .arg(format!("--identity-key-file={}", key.display()))
    .env("KUBECONFIG", &cp.operator_kubeconfig)
    .env("RUST_LOG", "info,kube=warn");
    support::process::Proc::spawn("operator", cmd, dir)
}

/// Waits until `release` is final at `stage`; returns its phase there.
async fn wait_at(
    client: &Client,
    release: &str,
    stage: &str,
    timeout: Duration,
) -> Option<StagePhaseForRelease> {
    let api: Api<Release> = Api::namespaced(client.clone(), NS);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let phase = api
            .get(release)
            .await
            .ok()
            .and_then(|r| Some(r.status?.stages.get(stage)?.phase));
        if phase.is_some_and(|p| p.is_final()) {
            return phase;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

async fn wait_for_rollback_to_finish(client: &Client) {
    let api: Api<greenlight::api::Stage> = Api::namespaced(client.clone(), NS);
    for _ in 0..120 {
        let rolling = api
            .get("test")
            .await
            .ok()
            .and_then(|s| s.status?.rollout)
            .is_some();
        if !rolling {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `kubectl greenlight get pipeline shop --watch`: in place on a terminal, as snapshots when
/// the output is not one (a CI log).
struct Watch(std::process::Child);

impl Watch {
    fn start(cp: &ControlPlane) -> Watch {
        let child = Command::new(sibling("kubectl-greenlight"))
            .args([
                "get",
                "pipeline",
                "shop",
                "--watch",
                "-n",
                NS,
                "--kubeconfig",
            ])
            .arg(&cp.kubeconfig)
            .stdin(Stdio::null())
            .spawn()
            .expect("start kubectl-greenlight");
        Watch(child)
    }

    /// `kubectl greenlight dashboard`, which prints its address: the same pipeline in a
    /// browser, for as long as the demo runs.
    fn dashboard(cp: &ControlPlane) -> Watch {
        let child = Command::new(sibling("kubectl-greenlight"))
            .args([
                "dashboard",
                "--address",
                DASHBOARD,
                "-n",
                NS,
                "--kubeconfig",
            ])
            .arg(&cp.kubeconfig)
            .stdin(Stdio::null())
            .spawn()
            .expect("start kubectl greenlight dashboard");
        Watch(child)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // SIGINT, as Ctrl-C: it leaves the alternate screen before it exits.
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// A local receiver for the notifier: records each notice's headline.
#[derive(Clone)]
struct Notices {
    port: u16,
    got: Arc<Mutex<Vec<String>>>,
}

impl Notices {
    async fn start() -> Notices {
        let got: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = got.clone();
        let app = axum::Router::new().route(
            "/notices",
            axum::routing::post(move |body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    let notice: serde_json::Value =
                        serde_json::from_slice(&body).unwrap_or_default();
                    let line = format!(
                        "{} — {}",
                        notice["headline"].as_str().unwrap_or("?"),
                        notice["message"].as_str().unwrap_or("")
                    );
                    sink.lock().unwrap().push(line);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Notices { port, got }
    }
}

async fn summary(
    client: &Client,
    notices: &Notices,
    (promoted, failed): (Option<StagePhaseForRelease>, Option<StagePhaseForRelease>),
    snapshot: Option<u64>,
) -> bool {
    let api: Api<Release> = Api::namespaced(client.clone(), NS);
    let entry =
        |r: Option<Release>, stage: &str| r.and_then(|r| r.status?.stages.get(stage).cloned());
    let healthy = api.get("shop-1-0").await.ok();
    let checked = |stage: &str, list: GateList| {
        let at = entry(healthy.clone(), stage);
        let checks = at.map(|e| e.checks).unwrap_or_default();
        checks
            .iter()
            .any(|c| c.list == Some(list) && c.result == GateVerdict::Passed)
    };
    let all_checked = checked("test", GateList::Verify)
        && checked("prod", GateList::PreRollout)
        && checked("prod", GateList::Verify);
    let faulty = api.get("shop-2-0").await.ok();
    let at_test = entry(faulty.clone(), "test");
    let at_prod = entry(faulty, "prod");
    println!("\n════ Summary ════");
    println!("Notices the notifier received:");
    for line in notices.got.lock().unwrap().iter() {
        println!("  • {line}");
    }
    let ok_promoted =
        promoted == Some(StagePhaseForRelease::Succeeded) && snapshot.is_some() && all_checked;
    let why = at_test.as_ref().map(|e| {
        format!(
            "{}: {}",
            e.reason.clone().unwrap_or_default(),
            e.message.clone().unwrap_or_default()
        )
    });
    let verification =
        at_test.as_ref().and_then(|e| e.reason.as_deref()) == Some("VerificationFailed");
    let never_in_prod = at_prod.is_none_or(|e| e.phase != StagePhaseForRelease::Succeeded);
    let ok_failed = failed == Some(StagePhaseForRelease::Failed) && verification && never_in_prod;
    let bytes = snapshot.map_or("no".to_string(), |b| b.to_string());
    println!(
        "{} 1.0 (shop-1-0) is in prod ({}): verified in test, a database snapshot of {bytes} bytes before prod, a canary, verified in prod",
        if ok_promoted { "✔" } else { "✘" },
        phase(promoted)
    );
    println!(
        "{} 2.0 (shop-2-0) failed its verification in test and never reached prod ({}): {}",
        if ok_failed { "✔" } else { "✘" },
        phase(failed),
        why.unwrap_or_default()
    );
    ok_promoted && ok_failed
}

fn phase(p: Option<StagePhaseForRelease>) -> String {
    p.map_or("not final in time".into(), |p| format!("{p:?}"))
}

fn world_yaml(prometheus: &str, notices: u16) -> String {
    let target = |name: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: 0\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers: [{{name: web, image: registry.local/shop-web:template, ports: [{{containerPort: 8080, name: http}}]}}]\n---\n"
        )
    };
    let targets: String = ["web-dev", "web-test", "web"].map(target).concat();
    let notifier = notifier_yaml(notices);
    let checks = checks_yaml();
    format!(
        r#"{targets}apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web}}
spec:
  parentRefs: [{{name: public}}]
  rules: [{{matches: [{{path: {{type: PathPrefix, value: /}}}}], backendRefs: [{{name: web-primary, port: 8080}}]}}]
---
{notifier}apiVersion: greenlight.dev/v1alpha1
kind: Gate
metadata: {{name: soaked-in-dev}}
spec: {{type: soak, soak: {{stage: dev, duration: 10s}}}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Gate
metadata: {{name: error-rate}}
spec:
  type: prometheus
  prometheus:
    address: {prometheus}
    query: '{ERROR_RATE}'
    condition: "< 0.01"
    timeout: 2s
    minSamples: {{query: '{REQUESTS}', minimum: 5}}
---
{checks}apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {{name: dev}}
spec: {{pipeline: shop, target: {{name: web-dev}}, notifiers: [release-channel]}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {{name: test}}
spec: {{pipeline: shop, requires: [dev], target: {{name: web-test}}, gates: [soaked-in-dev], verify: {{gates: [smoke-test], timeout: 2m}}, notifiers: [release-channel]}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {{name: prod}}
spec:
  pipeline: shop
  requires: [test]
  target: {{name: web}}
  replicas: 2
  notifiers: [release-channel]
  preRollout: [db-snapshot]
  verify: {{gates: [smoke-test], timeout: 2m}}
  strategy:
    type: canary
    canary:
      trafficRouting: {{gatewayAPI: {{httpRoute: web}}}}
      bake: 5s
      scaleDownDelay: 2s
      analysis: {{gates: [error-rate], interval: 2s, failureLimit: 2, inconclusiveLimit: 3, initialDelay: 3s}}
      steps:
      - setWeight: 20
      - pause: {{duration: 4s}}
      - setWeight: 50
      - pause: {{duration: 4s}}
"#
    )
}

/// The Job gates: a smoke test of the stage's Service, and a snapshot of the shop's database
/// (here to the Job's working directory; a real one goes to object storage).
fn checks_yaml() -> String {
    let job = |name: &str, image: &str, script: &str, env: &str| {
        format!(
            "apiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {{name: {name}}}\nspec:\n  type: job\n  job:\n    activeDeadlineSeconds: 60\n    template:\n      serviceAccountName: release-checks\n      containers:\n      - name: {name}\n        image: {image}\n        command: [sh, -c, {script:?}]\n{env}---\n"
        )
    };
    let smoke = job(
        "smoke-test",
        "docker.io/curlimages/curl:8.5.0",
        r#"for i in $(seq 20); do curl -fsS -o /dev/null "$GREENLIGHT_SERVICE_URL/" || { echo "smoke test of $GREENLIGHT_VERSION: request $i failed"; exit 1; }; done"#,
        "",
    );
    let snapshot = job(
        "db-snapshot",
        "docker.io/library/postgres:15",
        r#"pg_dump --dbname="$DATABASE_URL" --file=snapshot.sql && wc -c < snapshot.sql"#,
        "        env: [{name: DATABASE_URL, value: \"postgresql://postgres@shop-db.demo.svc:5432/shop\"}]\n",
    );
    format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: release-checks}}\n---\n{smoke}{snapshot}"
    )
}

/// The notifier, its URL's Secret, and the Role that lets the operator read that Secret.
fn notifier_yaml(notices: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: notify}}
stringData: {{url: "http://127.0.0.1:{notices}/notices"}}
---
{reader}---
apiVersion: greenlight.dev/v1alpha1
kind: Notifier
metadata: {{name: release-channel}}
spec: {{type: webhook, urlSecretRef: {{name: notify, key: url}}, events: [Upcoming, Started, Verified, Succeeded, Failed, RolledBack]}}
---
"#,
        reader = support::operator_may_read_secret("notify"),
    )
}
