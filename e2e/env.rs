//! One test's world: its own namespace, a controller process that watches only that
//! namespace, and helpers to apply YAML and wait for the cluster to reach a state.

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use greenlight::api::{Release, Stage};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, Client};

use crate::support::controlplane::ControlPlane;
use crate::support::kubelet::Kubelet;
use crate::support::process::Proc;
use crate::support::{temp_dir, unique};

pub struct TestEnv {
    pub ns: String,
    pub client: Client,
    pub cp: &'static ControlPlane,
    pub kubelet: Kubelet,
    pub dir: PathBuf,
    controller: Option<Proc>,
    restarts: usize,
    /// Port of the running controller's `/metrics`.
    pub metrics_port: u16,
}

impl TestEnv {
    pub async fn new(cp: &'static ControlPlane, kubelet: Kubelet, name: &str) -> TestEnv {
        let short: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(40)
            .collect::<String>()
            .replace('_', "-");
        let ns = format!("{}-{}", short.trim_end_matches('-'), unique());
        cp.kubectl(&["create", "namespace", &ns]);
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&cp.kubeconfig).expect("read kubeconfig"),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("kubeconfig");
        let client = Client::try_from(config).expect("client");
        TestEnv {
            ns,
            client,
            cp,
            kubelet,
            dir: temp_dir("greenlight-test"),
            controller: None,
            restarts: 0,
            metrics_port: 0,
        }
    }

    /// Starts `greenlight controller` for this namespace.
    pub fn start_controller(&mut self) {
        self.metrics_port = crate::support::free_port();
        let metrics_addr = format!("127.0.0.1:{}", self.metrics_port);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_greenlight"));
        cmd.args([
            "controller",
            "--namespace",
            &self.ns,
            "--metrics-addr",
            &metrics_addr,
            "--webhook-allow",
            "127.0.0.1",
        ])
        // The operator runs with only the rights of the shipped ClusterRole.
        .env("KUBECONFIG", &self.cp.operator_kubeconfig)
        .env("RUST_LOG", "info,kube=warn,greenlight=debug");
        self.restarts += 1;
        self.controller = Some(Proc::spawn(
            &format!("controller-{}", self.restarts),
            cmd,
            &self.dir,
        ));
    }

    #[allow(dead_code)] // used by the benchmark, which shares this module
    pub fn controller_pid(&self) -> Option<u32> {
        self.controller.as_ref().map(|p| p.child.id())
    }

    /// Kills the controller at once (SIGKILL), as a crash would.
    pub fn kill_controller(&mut self) {
        if let Some(mut p) = self.controller.take() {
            p.kill();
        }
    }

    pub fn controller_log(&self) -> String {
        (1..=self.restarts)
            .map(|i| {
                std::fs::read_to_string(self.dir.join(format!("controller-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// `kubectl apply` of a YAML document in this namespace.
    pub fn apply(&self, yaml: &str) {
        let out = self.apply_raw(yaml);
        assert!(
            out.status.success(),
            "kubectl apply failed:\n{}\n---\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn apply_raw(&self, yaml: &str) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new(crate::support::find_binary("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.cp.kubeconfig)
            .args(["apply", "-n", &self.ns, "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(yaml.as_bytes())
            .expect("write yaml");
        child.wait_with_output().expect("kubectl output")
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn release(&self, name: &str) -> Release {
        self.api::<Release>()
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("get release {name}: {e}"))
    }

    pub async fn stage(&self, name: &str) -> Stage {
        self.api::<Stage>()
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("get stage {name}: {e}"))
    }

    pub async fn deployment(&self, name: &str) -> Option<Deployment> {
        self.api::<Deployment>()
            .get_opt(name)
            .await
            .expect("get deployment")
    }

    /// Images of the containers of a Deployment's pod template.
    pub async fn images(&self, deployment: &str) -> Vec<String> {
        self.deployment(deployment)
            .await
            .and_then(|d| d.spec)
            .and_then(|s| s.template.spec)
            .map(|p| p.containers.into_iter().filter_map(|c| c.image).collect())
            .unwrap_or_default()
    }

    /// Events with this reason about objects in the namespace.
    pub async fn events(&self, reason: &str) -> Vec<Event> {
        self.api::<Event>()
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    }

    /// Polls `check` until it returns `Some`, or fails with `what` and the last state it saw.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let started = Instant::now();
        loop {
            match check().await {
                Ok(v) => return v,
                Err(last) if started.elapsed() > timeout => {
                    panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// Waits until a release's entry at a stage has the given phase.
    pub async fn wait_release_stage(
        &self,
        release: &str,
        stage: &str,
        phase: &str,
        timeout: Duration,
    ) -> Release {
        self.wait_for(
            &format!("release {release} to be {phase} at {stage}"),
            timeout,
            || async {
                let r = self.release(release).await;
                let entry = r.status.as_ref().and_then(|s| s.stages.get(stage)).cloned();
                match &entry {
                    Some(e) if format!("{:?}", e.phase) == phase => Ok(r),
                    _ => Err(serde_json::to_string(&r.status).unwrap_or_default()),
                }
            },
        )
        .await
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.controller_log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- controller log (last 60 lines) for {}:\n{}",
                self.ns,
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
        self.kill_controller();
        let _ = self
            .cp
            .kubectl_raw(&["delete", "namespace", &self.ns, "--wait=false"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A syntactically valid image digest that differs per `seed`.
pub fn image(seed: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hex = String::new();
    for i in 0..4u8 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (seed, i).hash(&mut h);
        hex.push_str(&format!("{:016x}", h.finish()));
    }
    format!("registry.local/web@sha256:{hex}")
}

/// A Git-owned target Deployment declared with zero replicas, as the docs ask.
pub fn target_yaml(name: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 0
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: web
        image: registry.local/web:template
"#
    )
}

pub fn release_yaml(name: &str, pipeline: &str, version: &str, image: &str) -> String {
    format!(
        r#"apiVersion: greenlight.dev/v1alpha1
kind: Release
metadata:
  name: {name}
spec:
  pipeline: {pipeline}
  version: "{version}"
  artifacts:
  - name: web
    image: {image}
"#
    )
}
