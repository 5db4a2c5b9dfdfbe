//! Installing Greenlight as a platform team would: with the Helm chart, rendered and
//! installed by a real Helm engine, and with the kustomize base. Each runs on a control plane
//! of its own, since both register cluster-wide webhooks. The operator runs from the image
//! `make image` built, with exactly the installed Deployment's arguments, environment, user,
//! volumes and ServiceAccount token, so the chart's RBAC and arguments are proven enough.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::ListParams;

use crate::env::{TestEnv, image, release_yaml, target_yaml};
use crate::support::controlplane::ControlPlane;
use crate::support::http::WebhookServer;
use crate::support::pod::{self, HostPod};
use crate::support::process::Proc;
use crate::support::prometheus::Prometheus;

const NS: &str = "greenlight-system";
/// The chart is installed under another release name than the one config/ uses, so that every
/// name the chart rewrites (RBAC, webhook configurations, Secrets) is proven.
const RELEASE: &str = "delivery";
const FULL: &str = "delivery-greenlight";
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/greenlight");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub async fn the_chart_installs_two_replicas_that_run_with_its_rbac_and_arguments(env: TestEnv) {
    let _one_at_a_time = crate::support::OWN_CLUSTER.lock().await;
    let cluster = Cluster::start();
    let cp = cluster.cp;
    cp.kubectl(&["create", "namespace", NS]);
    the_plugin_says_when_a_cluster_has_no_crds(cp);
    let prometheus = Prometheus::start(&[]);
    let values = chart_values(&env.dir, &prometheus.url);
    let kubeconfig = cp.kubeconfig.to_string_lossy().to_string();
    let with = ["--kubeconfig", &kubeconfig, "-f", &values];
    let rendered = helm(RELEASE, &[&["render", CHART][..], &with].concat());
    let mut expected: Vec<(String, String)> = CHART_OBJECTS
        .iter()
        .map(|(k, n)| (k.to_string(), n.replace("{full}", FULL)))
        .collect();
    expected.sort();
    let mut rendered_objects = objects(&rendered);
    rendered_objects.sort();
    assert_eq!(rendered_objects, expected, "the chart's objects");
    the_dashboard_ships_as_it_is_in_the_repository(&rendered);
    dry_run_on_the_server(cp, &env.dir, &rendered);
    helm_template_is_the_same_every_time(&values);

    helm(RELEASE, &[&["install", CHART][..], &with].concat());
    let world = TestEnv::new(cp, cluster.kubelet.clone(), "chart-shop").await;
    let mut replicas = run_replicas(&world, FULL, 2).await;
    the_operator_made_the_identity_key_once(&world, FULL).await;
    let made = kept_webhook_ca(&world, FULL).await;
    helm(RELEASE, &[&["upgrade", CHART][..], &with].concat());
    assert_eq!(
        kept_webhook_ca(&world, FULL).await,
        made,
        "an upgrade keeps the webhook certificate"
    );
    route_webhooks(cp, &env.dir, FULL, replicas[0].admission_port);
    let leader = wait_for_one_leader(&world, &replicas).await;
    the_operator_puts_back_a_removed_ca_bundle(&world).await;
    a_deleted_certificate_secret_is_written_again_with_the_same_ca(&world, &made).await;
    // A Prometheus gate that names no Prometheus queries the chart's prometheusAddress.
    world.apply(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {name: slo}\nspec:\n  type: prometheus\n  prometheus: {query: vector(1), condition: == 1}\n",
    );
    releases_roll_out(&world, "shop-1", &["slo"]).await;
    a_canary_stage_gets_its_finalizer_and_gives_it_up_on_deletion(&world).await;

    let pid = replicas[leader].proc.child.id();
    let (took, early) = world.terminate_leader(NS, pid).await;
    crate::support::figures::record("hand-over after SIGTERM, installed by the chart", took);
    assert!(
        early.is_positive(),
        "the chart's standby waited for the lease to run out ({took:?}): it was not given up"
    );
    let survivor = &replicas[1 - leader];
    route_webhooks(cp, &env.dir, FULL, survivor.admission_port);
    releases_roll_out(&world, "shop-2", &["slo"]).await;

    for replica in replicas.iter_mut() {
        replica.proc.kill();
    }
    helm(RELEASE, &["uninstall", "--kubeconfig", &kubeconfig]);
    uninstall_keeps_crds_and_the_operators_secrets(cp, FULL);
}

pub async fn the_kustomize_base_is_the_rendered_chart_and_runs_with_cert_manager(env: TestEnv) {
    let fresh = helm(
        "greenlight",
        &[
            "render",
            CHART,
            "--plain",
            "-f",
            &format!("{ROOT}/config/default/chart-values.yaml"),
        ],
    );
    let shipped = std::fs::read_to_string(format!("{ROOT}/config/default/greenlight.yaml"))
        .expect("config/default/greenlight.yaml");
    assert!(
        fresh == shipped,
        "config/default/greenlight.yaml is stale: run `make manifests`"
    );

    let _one_at_a_time = crate::support::OWN_CLUSTER.lock().await;
    let cluster = Cluster::start();
    let cp = cluster.cp;
    cp.kubectl(&["apply", "-f", &format!("{ROOT}/e2e/fixtures/")]);
    let base = cp.kubectl(&["kustomize", &format!("{ROOT}/config/default")]);
    cp.kubectl(&[
        "apply",
        "-f",
        &format!("{ROOT}/config/default/namespace.yaml"),
    ]);
    dry_run_on_the_server(cp, &env.dir, &base);
    let built = cp.kubectl(&["kustomize", &overlay_allowing_the_test_hosts(&env.dir)]);
    let path = env.dir.join("kustomized.yaml");
    std::fs::write(&path, &built).expect("write");
    cp.kubectl(&["apply", "-f", &path.to_string_lossy()]);

    let world = TestEnv::new(cp, cluster.kubelet.clone(), "kustomize-shop").await;
    create_the_identity_secret_as_the_readme_says(cp);
    issue_the_certificate_as_cert_manager_would(cp, &env.dir);
    let replicas = run_replicas(&world, "greenlight", 2).await;
    route_webhooks(cp, &env.dir, "greenlight", replicas[0].admission_port);
    wait_for_one_leader(&world, &replicas).await;
    releases_roll_out(&world, "shop-1", &[]).await;
}

pub async fn the_image_runs_its_entrypoint_as_a_non_root_user_with_nothing_else(env: TestEnv) {
    let image = pod::unpack(&env.dir);
    assert_eq!(image.entrypoint, ["/greenlight"]);
    assert_eq!(image.user, "65532:65532", "runs as non-root");
    let mut files: Vec<String> = walk(&image.rootfs)
        .iter()
        .map(|p| p.strip_prefix(&image.rootfs).unwrap().display().to_string())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "etc/group",
            "etc/passwd",
            "etc/ssl/certs/ca-certificates.crt",
            "greenlight"
        ],
        "a static binary and CA certificates, no shell, no libc"
    );
    let out = Command::new(crate::support::find_binary("chroot"))
        .arg(format!("--userspec={}", image.user))
        .arg(&image.rootfs)
        .args(&image.entrypoint)
        .arg("--version")
        .env_clear()
        .output()
        .expect("run the entrypoint");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("greenlight {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![];
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        match path.is_dir() {
            true => files.extend(walk(&path)),
            false => files.push(path),
        }
    }
    files
}

/// Before the chart, this cluster serves none of Greenlight's kinds: the plugin says so.
fn the_plugin_says_when_a_cluster_has_no_crds(cp: &ControlPlane) {
    let out = Command::new(crate::support::workspace_bin("kubectl-greenlight"))
        .args(["get", "releases", "-n", NS, "--kubeconfig"])
        .arg(&cp.kubeconfig)
        .output()
        .expect("run kubectl-greenlight");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("does not serve greenlight.dev/v1alpha1: install Greenlight's CRDs first"),
        "{err}"
    );
}

/// What the chart installs with the test's values: kind and name.
const CHART_OBJECTS: &[(&str, &str)] = &[
    ("CustomResourceDefinition", "releases.greenlight.dev"),
    ("CustomResourceDefinition", "stages.greenlight.dev"),
    ("CustomResourceDefinition", "gates.greenlight.dev"),
    ("CustomResourceDefinition", "approvals.greenlight.dev"),
    ("CustomResourceDefinition", "stagecommands.greenlight.dev"),
    ("CustomResourceDefinition", "notifiers.greenlight.dev"),
    ("Deployment", "{full}"),
    ("PodDisruptionBudget", "{full}"),
    ("ClusterRole", "{full}"),
    ("ClusterRoleBinding", "{full}"),
    ("Role", "{full}-leader-election"),
    ("RoleBinding", "{full}-leader-election"),
    ("Role", "{full}-secrets"),
    ("RoleBinding", "{full}-secrets"),
    ("Service", "{full}-webhook"),
    ("Service", "{full}-metrics"),
    ("ServiceAccount", "{full}"),
    ("MutatingWebhookConfiguration", "{full}"),
    ("ValidatingWebhookConfiguration", "{full}"),
    ("ConfigMap", "{full}-dashboard"),
];

/// A control plane for one case, stopped when the case ends, with a fake kubelet.
struct Cluster {
    cp: &'static ControlPlane,
    kubelet: crate::support::kubelet::Kubelet,
}

impl Cluster {
    fn start() -> Cluster {
        // TestEnv wants a control plane that lives for the whole run; this one is stopped on
        // drop instead, after the TestEnv made on it (declared later, dropped first).
        let cp: &'static ControlPlane = Box::leak(Box::new(ControlPlane::start()));
        let kubelet = crate::support::kubelet::start_in_background(cp.kubeconfig.clone());
        Cluster { cp, kubelet }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.cp.shutdown();
    }
}

/// The operator pods on the host: one process each, with the ports it listens on.
struct Replica {
    proc: Proc,
    metrics_port: u16,
    admission_port: u16,
}

/// The values a platform team sets, with ports free on this host.
fn chart_values(dir: &Path, prometheus: &str) -> String {
    let path = dir.join("values.yaml");
    let yaml = format!(
        "dashboard: {{enabled: true}}\ncontroller:\n  logFormat: text\n  logLevel: info,greenlight=debug\n  webhookAllow: [127.0.0.1, localhost]\n  prometheusAddress: {prometheus}\nmetrics:\n  port: {}\nwebhook:\n  port: {}\n",
        crate::support::free_port(),
        crate::support::free_port()
    );
    std::fs::write(&path, yaml).expect("values");
    path.to_string_lossy().into_owned()
}

/// Runs hack/helm.py (the Helm engine of PyPI's helm-python-sdk) for the release `name`;
/// returns its stdout.
fn helm(name: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(format!("{ROOT}/hack/helm.py"))
        .args(args)
        .args(["--name", name, "--namespace", NS])
        .output()
        .expect("run python3 hack/helm.py");
    assert!(
        out.status.success(),
        "helm.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm template` (no cluster to look anything up in), as Argo CD renders on every sync,
/// makes nothing new each time: no key, no certificate, no random name.
fn helm_template_is_the_same_every_time(values: &str) {
    let render = || helm(RELEASE, &["render", CHART, "-f", values]);
    assert_eq!(render(), render(), "two renders differ");
}

/// The chart's RBAC lets the operator keep the route-restoring finalizer on a canary Stage.
async fn a_canary_stage_gets_its_finalizer_and_gives_it_up_on_deletion(world: &TestEnv) {
    world.apply(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {name: edge}\nspec:\n  pipeline: edge\n  target: {name: edge}\n  strategy:\n    type: canary\n    canary:\n      trafficRouting: {gatewayAPI: {httpRoute: edge}}\n      steps: [{setWeight: 50}]\n",
    );
    world
        .wait_for(
            "the finalizer on a canary stage",
            Duration::from_secs(60),
            || async {
                let finalizers = world.stage("edge").await.metadata.finalizers;
                finalizers
                    .filter(|f| !f.is_empty())
                    .ok_or("none yet".to_string())
            },
        )
        .await;
    world
        .cp
        .kubectl(&["delete", "-n", &world.ns, "stage", "edge", "--timeout=60s"]);
}

/// The Grafana sidecar's ConfigMap holds the dashboard file unchanged, labelled for the sidecar.
fn the_dashboard_ships_as_it_is_in_the_repository(rendered: &str) {
    use serde::Deserialize;
    let map = serde_norway::Deserializer::from_str(rendered)
        .filter_map(|doc| serde_norway::Value::deserialize(doc).ok())
        .find(|doc| doc.get("kind").and_then(|k| k.as_str()) == Some("ConfigMap"))
        .expect("the dashboard ConfigMap");
    let shipped = std::fs::read_to_string(format!("{CHART}/dashboards/greenlight.json"))
        .expect("the dashboard file");
    let data = map["data"]["greenlight.json"].as_str().unwrap_or_default();
    // `|-` drops the file's final newline; nothing else may differ.
    assert!(
        data == shipped.trim_end(),
        "the ConfigMap's dashboard differs from the file"
    );
    assert_eq!(
        map["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1")
    );
}

/// Kind and name of each object in a YAML stream.
fn objects(yaml: &str) -> Vec<(String, String)> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(yaml)
        .filter_map(|doc| serde_norway::Value::deserialize(doc).ok())
        .filter(|doc| doc.get("kind").is_some())
        .map(|doc| {
            let text = |v: Option<&serde_norway::Value>| {
                v.and_then(|v| v.as_str()).unwrap_or_default().to_string()
            };
            let name = doc.get("metadata").and_then(|m| m.get("name"));
            (text(doc.get("kind")), text(name))
        })
        .collect()
}

fn dry_run_on_the_server(cp: &ControlPlane, dir: &Path, yaml: &str) {
    let path = dir.join("dry-run.yaml");
    std::fs::write(&path, yaml).expect("write");
    let out = cp.kubectl_raw(&["apply", "--dry-run=server", "-f", &path.to_string_lossy()]);
    assert!(
        out.status.success(),
        "the apiserver refuses the manifests: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The webhook CA in the Secret the operator's replicas made (the chart renders none).
async fn kept_webhook_ca(world: &TestEnv, full: &str) -> Vec<u8> {
    let secrets: Api<Secret> = Api::namespaced(world.client.clone(), NS);
    let name = format!("{full}-webhook-tls");
    world
        .wait_for(
            "the operator's webhook certificate",
            Duration::from_secs(60),
            || async {
                match secrets.get_opt(&name).await {
                    Ok(Some(s)) => {
                        let data = s.data.unwrap_or_default();
                        data.get("ca.crt")
                            .map(|b| b.0.clone())
                            .ok_or("no ca.crt".into())
                    }
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await
}

/// A replica writes the certificate it serves back, so the CA bundle in the webhook
/// configurations stays right.
async fn a_deleted_certificate_secret_is_written_again_with_the_same_ca(
    world: &TestEnv,
    ca: &[u8],
) {
    let name = format!("{FULL}-webhook-tls");
    world.cp.kubectl(&["-n", NS, "delete", "secret", &name]);
    assert_eq!(
        kept_webhook_ca(world, FULL).await,
        ca,
        "the Secret is written again with the CA the webhooks trust"
    );
}

/// The chart makes no identity key (`helm template` could not keep one); the operator's
/// replicas, with only the chart's Role on Secrets, created it once and agree on it.
async fn the_operator_made_the_identity_key_once(world: &TestEnv, full: &str) {
    let secrets: Api<Secret> = Api::namespaced(world.client.clone(), NS);
    let name = format!("{full}-identity");
    let key = world
        .wait_for(
            "the operator's identity key",
            Duration::from_secs(60),
            || async {
                match secrets.get_opt(&name).await {
                    Ok(Some(s)) => Ok(s.data.and_then(|d| d.get("key").map(|b| b.0.clone()))),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await
        .expect("a key");
    assert!(key.len() >= 32, "the identity key has 32 bytes or more");
    let secret = secrets.get(&name).await.expect("identity");
    assert!(
        secret.metadata.labels.is_none() && secret.metadata.annotations.is_none(),
        "Helm does not own it: {:?}",
        secret.metadata
    );
}

/// Starts the installed Deployment's pods on the host from the image; the second one's
/// ports moved.
async fn run_replicas(world: &TestEnv, full: &str, count: usize) -> Vec<Replica> {
    let client = world.client.clone();
    let deployment = Api::<Deployment>::namespaced(client.clone(), NS)
        .get(full)
        .await
        .expect("the Deployment");
    let names = pod_names(world, count).await;
    let image = pod::unpack(&world.dir.join("image"));
    let api_port: u16 = world.cp.server.rsplit(':').next().unwrap().parse().unwrap();
    let ca = world.cp.dir.join("certs/ca.crt");
    let mut replicas = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut pod = HostPod::prepare(
            &client,
            &deployment,
            name,
            &image,
            ("127.0.0.1", api_port, &ca),
        )
        .await;
        if i > 0 {
            pod.move_port("--metrics-addr", crate::support::free_port());
            pod.move_port("--admission-addr", crate::support::free_port());
        }
        let port = |flag: &str| -> u16 {
            let addr = pod
                .arg(flag)
                .unwrap_or_else(|| panic!("{flag} in the pod's args"));
            addr.rsplit(':').next().unwrap().parse().unwrap()
        };
        replicas.push(Replica {
            metrics_port: port("--metrics-addr"),
            admission_port: port("--admission-addr"),
            proc: pod.start(&world.dir),
        });
    }
    replicas
}

/// The names of the Deployment's pods, as its ReplicaSet made them.
async fn pod_names(world: &TestEnv, count: usize) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(world.client.clone(), NS);
    world
        .wait_for("the operator's pods", Duration::from_secs(60), || async {
            let list = pods
                .list(&ListParams::default().labels("app.kubernetes.io/name=greenlight"))
                .await
                .map_err(|e| e.to_string())?;
            let names: Vec<String> = list
                .items
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            match names.len() >= count {
                true => Ok(names[..count].to_vec()),
                false => Err(format!("{names:?}")),
            }
        })
        .await
}

/// Points the webhook Service at one replica: no kube-proxy runs here, so the apiserver
/// reaches a Service at its endpoints, on this host's own address.
fn route_webhooks(cp: &ControlPlane, dir: &Path, full: &str, port: u16) {
    let yaml = format!(
        "apiVersion: v1\nkind: Endpoints\nmetadata: {{name: {full}-webhook, namespace: {NS}}}\nsubsets:\n- addresses: [{{ip: \"{}\"}}]\n  ports: [{{name: https, port: {port}}}]\n",
        pod::host_address()
    );
    let path = dir.join("endpoints.yaml");
    std::fs::write(&path, yaml).expect("write");
    cp.kubectl(&["apply", "-f", &path.to_string_lossy()]);
}

/// Both replicas ready (every replica serves webhooks), exactly one leading; its index.
async fn wait_for_one_leader(world: &TestEnv, replicas: &[Replica]) -> usize {
    world
        .wait_for(
            "ready replicas and one leader",
            Duration::from_secs(90),
            || async {
                let mut leaders = vec![];
                for (i, r) in replicas.iter().enumerate() {
                    let url = format!("http://127.0.0.1:{}/readyz", r.metrics_port);
                    let ready = reqwest::get(&url).await.is_ok_and(|r| r.status() == 200);
                    if !ready {
                        return Err(format!("replica {i} not ready:\n{}", r.proc.tail(5)));
                    }
                    if TestEnv::leads(r.metrics_port).await {
                        leaders.push(i);
                    }
                }
                match leaders[..] {
                    [one] => Ok(one),
                    _ => Err(format!("leaders: {leaders:?}")),
                }
            },
        )
        .await
}

/// A release made through the webhooks (stamped with its creator) rolls out to a stage,
/// past a webhook gate the operator reaches by a host name (resolved by the static binary
/// from the pod's /etc/hosts), and the `more` gates.
async fn releases_roll_out(world: &TestEnv, name: &str, more: &[&str]) {
    let hooks = WebhookServer::default();
    let port = hooks.start().await.rsplit(':').next().unwrap().to_string();
    world.apply(&target_yaml("web-dev"));
    let gates = [&["by-name"][..], more].concat().join(", ");
    world.apply(&format!(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {{name: by-name}}\nspec:\n  type: webhook\n  webhook: {{url: \"http://localhost:{port}/200/approved\"}}\n---\napiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {{name: dev}}\nspec:\n  pipeline: shop\n  target: {{name: web-dev}}\n  gates: [{gates}]\n"
    ));
    world.apply(&release_yaml(name, "shop", "1.0.0", &image(name)));
    let release = world
        .api::<greenlight::api::Release>()
        .get(name)
        .await
        .expect("release");
    let creator = release.spec.created_by.map(|c| c.username);
    assert_eq!(creator.as_deref(), Some("admin"), "stamped by the webhook");
    world
        .wait_release_stage(name, "dev", "Succeeded", Duration::from_secs(120))
        .await;
    assert!(
        hooks.calls("/200/approved") > 0,
        "the gate was called by name"
    );
}

/// The operator keeps the CA bundle of the configurations its flags name, under the chart's
/// ClusterRole, which lets it patch those (renamed) configurations only.
async fn the_operator_puts_back_a_removed_ca_bundle(world: &TestEnv) {
    let kind = "mutatingwebhookconfiguration";
    let path = "jsonpath={.webhooks[0].clientConfig.caBundle}";
    let before = world.cp.kubectl(&["get", kind, FULL, "-o", path]);
    assert!(!before.is_empty(), "installed with a CA bundle");
    world.cp.kubectl(&[
        "patch",
        kind,
        FULL,
        "--type=json",
        "-p=[{\"op\":\"remove\",\"path\":\"/webhooks/0/clientConfig/caBundle\"}]",
    ]);
    world
        .wait_for(
            "the CA bundle put back",
            Duration::from_secs(30),
            || async {
                let now = world.cp.kubectl(&["get", kind, FULL, "-o", path]);
                match now == before {
                    true => Ok(()),
                    false => Err(format!("caBundle {now:?}")),
                }
            },
        )
        .await;
}

fn uninstall_keeps_crds_and_the_operators_secrets(cp: &ControlPlane, full: &str) {
    let left = cp.kubectl(&["get", "crd", "-o", "name"]);
    assert!(
        left.contains("releases.greenlight.dev"),
        "CRDs kept: {left}"
    );
    let secrets = cp.kubectl(&["get", "secret", "-n", NS, "-o", "name"]);
    let key = format!("{full}-identity");
    assert!(secrets.contains(&key), "key kept: {secrets}");
    let tls = format!("{full}-webhook-tls");
    assert!(secrets.contains(&tls), "certificate kept: {secrets}");
    let gone = cp.kubectl_raw(&["get", "deployment", full, "-n", NS]);
    assert!(!gone.status.success(), "the Deployment is gone");
}

/// A platform team's overlay on config/default: the hosts its gates may call.
fn overlay_allowing_the_test_hosts(dir: &Path) -> String {
    let overlay = dir.join("overlay");
    std::fs::create_dir_all(&overlay).expect("overlay dir");
    // kustomize 2.0 (kubectl 1.20) takes only a relative path to a base.
    let up = "../".repeat(overlay.components().count() - 1);
    let base = format!("{up}{}/config/default", ROOT.trim_start_matches('/'));
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!("bases: [{base}]\npatchesStrategicMerge: [allow.yaml]\n"),
    )
    .expect("kustomization");
    std::fs::write(
        overlay.join("allow.yaml"),
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: greenlight, namespace: {NS}}}\nspec:\n  template:\n    spec:\n      containers:\n      - name: greenlight\n        env:\n        - {{name: GREENLIGHT_WEBHOOK_ALLOW, value: \"127.0.0.1,localhost\"}}\n"),
    )
    .expect("patch");
    overlay.to_string_lossy().into_owned()
}

fn create_the_identity_secret_as_the_readme_says(cp: &ControlPlane) {
    let key: String = (0..48)
        .map(|i| (b'a' + (i * 7 % 26) as u8) as char)
        .collect();
    cp.kubectl(&[
        "-n",
        NS,
        "create",
        "secret",
        "generic",
        "greenlight-identity",
        &format!("--from-literal=key={key}"),
    ]);
}

/// The Secret cert-manager's Certificate would produce, and the CA bundle its injector
/// would write into the webhook configurations the base annotates.
fn issue_the_certificate_as_cert_manager_would(cp: &ControlPlane, dir: &Path) {
    let certs: PathBuf = dir.join("issued");
    let san =
        format!("DNS:greenlight-webhook.{NS}.svc,DNS:greenlight-webhook.{NS}.svc.cluster.local");
    let ca = crate::support::certs::webhook_certs_for(&certs, "greenlight", &san);
    let file = |name: &str| format!("--from-file={name}={}", certs.join(name).display());
    cp.kubectl(&[
        "-n",
        NS,
        "create",
        "secret",
        "generic",
        "greenlight-webhook-tls",
        &file("ca.crt"),
        &file("tls.crt"),
        &file("tls.key"),
    ]);
    use base64::Engine as _;
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca);
    for kind in [
        "mutatingwebhookconfiguration",
        "validatingwebhookconfiguration",
    ] {
        let hooks = cp.kubectl(&[
            "get",
            kind,
            "greenlight",
            "-o",
            "jsonpath={.webhooks[*].name}",
        ]);
        let patch: Vec<String> = (0..hooks.split_whitespace().count())
            .map(|i| {
                format!(
                    r#"{{"op":"add","path":"/webhooks/{i}/clientConfig/caBundle","value":"{bundle}"}}"#
                )
            })
            .collect();
        cp.kubectl(&[
            "patch",
            kind,
            "greenlight",
            "--type=json",
            &format!("-p=[{}]", patch.join(",")),
        ]);
    }
}

/// Two installs, each watching a namespace of its own, render with nothing cluster-wide in
/// common and nothing namespaced granted outside their namespace: their Roles are in the
/// watched namespace, their ClusterRoles hold only access reviews and their own webhook
/// configurations, and each webhook selects only its namespace. The apiserver takes both.
pub async fn two_installs_watching_their_own_namespaces_share_nothing(env: TestEnv) {
    let cp = env.cp;
    let mut cluster_wide: Vec<std::collections::BTreeSet<String>> = vec![];
    for team in ["a", "b"] {
        let watched = format!("{}-{team}", env.ns);
        cp.kubectl(&["create", "namespace", &watched]);
        // The CRDs are the control plane's already, as they would be the first install's.
        let values = format!("controller.watchNamespace={watched},crds.install=false");
        let kubeconfig = cp.kubeconfig.to_string_lossy().to_string();
        let rendered = helm(
            &format!("team-{team}"),
            &[
                "render",
                CHART,
                "--set",
                &values,
                "--kubeconfig",
                &kubeconfig,
            ],
        );
        let path = env.dir.join(format!("team-{team}.yaml"));
        std::fs::write(&path, &rendered).expect("write");
        let listed = cp.kubectl(&[
            "apply",
            "--dry-run=client",
            "-o",
            "json",
            "-f",
            &path.to_string_lossy(),
        ]);
        let items: serde_json::Value = serde_json::from_str(&listed).expect("a List");
        let items = items["items"].as_array().cloned().unwrap_or_default();
        let mut names = std::collections::BTreeSet::new();
        for item in &items {
            let (kind, name) = (
                item["kind"].as_str().unwrap_or(""),
                item["metadata"]["name"].as_str().unwrap_or(""),
            );
            let rules = item["rules"].to_string();
            match kind {
                "ClusterRole" => {
                    assert!(
                        !rules.contains("deployments") && !rules.contains("services"),
                        "{name}: {rules}"
                    );
                    names.insert(format!("{kind}/{name}"));
                }
                "Role" if rules.contains("deployments") => {
                    assert_eq!(item["metadata"]["namespace"], watched.as_str(), "{name}");
                }
                "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
                    // The Lease's webhook selects the operator's Lease by its label alone.
                    let selectors = item["webhooks"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|w| w["name"] != "lease.greenlight.dev")
                        .map(|w| w["namespaceSelector"].to_string());
                    for selector in selectors {
                        assert!(
                            selector.contains(&format!("\"{watched}\"")),
                            "{name}: {selector}"
                        );
                    }
                    names.insert(format!("{kind}/{name}"));
                }
                "ClusterRoleBinding" => {
                    names.insert(format!("{kind}/{name}"));
                }
                _ => {}
            }
        }
        dry_run_on_the_server(cp, &env.dir, &rendered);
        cluster_wide.push(names);
    }
    let shared: Vec<_> = cluster_wide[0].intersection(&cluster_wide[1]).collect();
    assert!(shared.is_empty(), "both installs own {shared:?}");
}
