//! One test's world: its own namespace, a controller process that watches only that
//! namespace, and helpers to apply YAML and wait for the cluster to reach a state.

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use greenlight::api::{Release, Stage, StageCommand, StageCommandStatus};
use jiff::SignedDuration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ApiResource, DynamicObject, ListParams};
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
    /// The controller's gate allow-list (`--webhook-allow`).
    pub allow: String,
    admission: Admission,
    /// Port of the controller's admission webhooks, when enabled.
    pub admission_port: u16,
    /// Webhook configurations this test registered, removed when it ends.
    webhook_configurations: Vec<String>,
    /// Run controllers with leader election.
    pub leader_election: bool,
    /// Their lease duration and retry: a 6s lease, renewed every second, unless set.
    pub lease_timing: (&'static str, &'static str),
    /// Keep the identity key in the Secret `greenlight-identity` of this namespace, which the
    /// operator creates (`--identity-secret`), rather than in a file.
    pub identity_secret: bool,
    /// More arguments for the controllers this starts.
    pub extra_args: Vec<String>,
    /// Controllers started beside the first, with leader election.
    pub replicas: Vec<Replica>,
    /// `RUST_LOG` of the controllers this starts.
    pub log_filter: String,
}

/// One more controller process, standing by for the leader lease.
pub struct Replica {
    pub proc: Proc,
    pub metrics_port: u16,
}

/// Whether and how the controller serves its admission webhooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Off,
    /// With a certificate from files (as a mounted cert-manager Secret), re-read every second.
    CertFiles,
    /// With a generated certificate whose CA bundle the operator patches into the webhook
    /// configurations named `greenlight`, the only ones its ClusterRole lets it patch.
    SelfSigned,
}

/// The name the shipped ClusterRole lets the operator patch.
pub const SHIPPED_WEBHOOK_CONFIGURATION: &str = "greenlight";

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
            allow: "127.0.0.1".into(),
            admission: Admission::Off,
            admission_port: 0,
            webhook_configurations: vec![],
            leader_election: false,
            lease_timing: ("6s", "1s"),
            identity_secret: false,
            extra_args: vec![],
            replicas: vec![],
            log_filter: "info,kube=warn,greenlight=debug".into(),
        }
    }

    /// Directory of the webhook server's certificate files (with `Admission::CertFiles`).
    pub fn webhook_cert_dir(&self) -> PathBuf {
        self.dir.join("webhook-certs")
    }

    /// Makes the next controller serve the admission webhooks; returns the CA clients must
    /// trust when the certificate comes from files.
    pub fn enable_admission(&mut self, mode: Admission) -> Option<String> {
        self.admission = mode;
        self.admission_port = crate::support::free_port();
        match mode {
            Admission::CertFiles => Some(crate::support::certs::webhook_certs(
                &self.webhook_cert_dir(),
                &self.ns,
            )),
            _ => None,
        }
    }

    /// Registers this test's controller as the mutating and validating webhook for this
    /// namespace only, failing closed, and waits until the apiserver calls it.
    pub async fn register_webhooks(&mut self, name: &str, ca_bundle: Option<&str>) {
        use base64::Engine as _;
        self.cp.kubectl(&[
            "label",
            "namespace",
            &self.ns,
            &format!("greenlight.dev/e2e={}", self.ns),
            "--overwrite",
        ]);
        let ca = ca_bundle
            .map(|pem| {
                format!(
                    ", caBundle: {}",
                    base64::engine::general_purpose::STANDARD.encode(pem)
                )
            })
            .unwrap_or_default();
        let yaml = webhook_configurations_yaml(name, self.admission_port, &self.ns, &ca);
        self.webhook_configurations.push(name.to_string());
        let path = self.dir.join(format!("webhooks-{name}.yaml"));
        std::fs::write(&path, yaml).expect("webhook yaml");
        self.cp.kubectl(&["apply", "-f", &path.to_string_lossy()]);
        self.wait_until_the_webhooks_stamp_a_dry_run_approval()
            .await;
    }

    async fn wait_until_the_webhooks_stamp_a_dry_run_approval(&self) {
        // Ready when a dry-run Approval comes back stamped with the requester's name.
        let approvals = self.api::<greenlight::api::Approval>();
        self.wait_for(
            "the admission webhooks to answer",
            Duration::from_secs(60),
            || {
                let approvals = approvals.clone();
                async move {
                    let probe: greenlight::api::Approval =
                        serde_json::from_value(serde_json::json!({
                            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Approval",
                            "metadata": {"name": "webhook-probe"},
                            "spec": {"release": "probe", "stage": "probe", "decision": "approve"}
                        }))
                        .expect("probe");
                    let params = kube::api::PostParams {
                        dry_run: true,
                        ..Default::default()
                    };
                    match approvals.create(&params, &probe).await {
                        Ok(a)
                            if a.spec
                                .approver
                                .as_ref()
                                .is_some_and(|w| w.username == "admin") =>
                        {
                            Ok(())
                        }
                        Ok(a) => Err(format!("not stamped yet: {:?}", a.spec.approver)),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await;
    }

    /// `kubectl` in this namespace as the cluster's admin, with `stdin`.
    pub fn kubectl(&self, args: &[&str], stdin: &str) -> std::process::Output {
        self.kubectl_with(&self.cp.kubeconfig, args, stdin)
    }

    /// `kubectl` in this namespace as one of the control plane's people, with `stdin`.
    pub fn kubectl_as(&self, user: &str, args: &[&str], stdin: &str) -> std::process::Output {
        self.kubectl_with(&self.cp.kubeconfig_for(user), args, stdin)
    }

    fn kubectl_with(
        &self,
        kubeconfig: &std::path::Path,
        args: &[&str],
        stdin: &str,
    ) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new(crate::support::find_binary("kubectl"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["-n", &self.ns])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("kubectl output")
    }

    /// Gives the people the shipped example Roles in this namespace: ci-bot publishes
    /// Releases; alice, bob and carol may record Approvals and steer Stages.
    pub fn grant_example_roles(&self) {
        let root = env!("CARGO_MANIFEST_DIR");
        for role in [
            "ci-publisher-example",
            "release-manager-example",
            "protected-stage-admin-example",
        ] {
            self.cp.kubectl(&[
                "apply",
                "-n",
                &self.ns,
                "-f",
                &format!("{root}/config/rbac/{role}.yaml"),
            ]);
        }
        let binding = |role: &str, users: &[&str]| {
            let subjects: Vec<String> = users
                .iter()
                .map(|u| format!("{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {u}}}"))
                .collect();
            format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {role}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {role}}}\nsubjects: [{}]\n",
                subjects.join(", ")
            )
        };
        self.apply(&binding("greenlight-ci-publisher", &["ci-bot"]));
        self.apply(&binding(
            "greenlight-release-manager",
            &["alice", "bob", "carol"],
        ));
        self.apply(&binding("greenlight-protected-stage-admin", &["dana"]));
    }

    /// Starts the controller with its admission webhooks registered for this namespace, so
    /// Approvals and StageCommands are stamped with who made them.
    pub async fn start_admitted_controller(&mut self) {
        let ca = self.enable_admission(Admission::CertFiles);
        self.start_controller();
        let name = format!("greenlight-{}", self.ns);
        self.register_webhooks(&name, ca.as_deref()).await;
    }

    /// Creates a StageCommand as `user` (`None`: the admin); returns its name.
    pub fn steer(
        &self,
        user: Option<&str>,
        stage: &str,
        action: &str,
        release: Option<&str>,
    ) -> String {
        let name = format!("{action}-{stage}-{}", crate::support::unique());
        let release = release
            .map(|r| format!("\n  release: {r}"))
            .unwrap_or_default();
        let yaml = format!(
            "apiVersion: greenlight.dev/v1alpha1\nkind: StageCommand\nmetadata: {{name: {name}}}\nspec:\n  stage: {stage}\n  action: {action}{release}\n"
        );
        match user {
            None => self.apply(&yaml),
            Some(user) => {
                let out = self.kubectl_as(user, &["create", "-f", "-"], &yaml);
                assert!(
                    out.status.success(),
                    "{user} creates a {action} command: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        name
    }

    /// Creates an Approval of `release` at `stage` as `user`.
    pub fn approve_as(&self, user: &str, release: &str, stage: &str) {
        let yaml = format!(
            "apiVersion: greenlight.dev/v1alpha1\nkind: Approval\nmetadata: {{name: {release}-{stage}-{user}}}\nspec: {{release: {release}, stage: {stage}, decision: approve}}\n"
        );
        let out = self.kubectl_as(user, &["create", "-f", "-"], &yaml);
        assert!(
            out.status.success(),
            "{user} approves {release}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits until the controller has handled the StageCommand; returns its status.
    pub async fn wait_command(&self, name: &str) -> StageCommandStatus {
        self.wait_for(
            &format!("command {name} handled"),
            Duration::from_secs(60),
            || async {
                let c = self
                    .api::<StageCommand>()
                    .get(name)
                    .await
                    .map_err(|e| e.to_string())?;
                match c.status {
                    Some(s) if s.phase.is_some() => Ok(s),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await
    }

    /// Starts `greenlight controller` for this namespace.
    pub fn start_controller(&mut self) {
        self.metrics_port = crate::support::free_port();
        self.restarts += 1;
        let name = format!("controller-{}", self.restarts);
        let cmd = self.controller_command(&name, self.metrics_port, self.admission);
        self.controller = Some(Proc::spawn(&name, cmd, &self.dir));
    }

    /// Starts one more controller beside the running ones (leader election on, no admission
    /// webhooks); returns its index in `replicas`.
    pub fn start_replica(&mut self) -> usize {
        let kubeconfig = self.cp.operator_kubeconfig.clone();
        self.start_replica_as(&kubeconfig)
    }

    /// [`TestEnv::start_replica`], reaching the apiserver as `kubeconfig` says (a user of
    /// its own, through a proxy).
    pub fn start_replica_as(&mut self, kubeconfig: &std::path::Path) -> usize {
        self.leader_election = true;
        let metrics_port = crate::support::free_port();
        let name = format!("replica-{}", self.replicas.len() + 1);
        let mut cmd = self.controller_command(&name, metrics_port, Admission::Off);
        cmd.env("KUBECONFIG", kubeconfig);
        let proc = Proc::spawn(&name, cmd, &self.dir);
        self.replicas.push(Replica { proc, metrics_port });
        self.replicas.len() - 1
    }

    fn controller_command(&self, name: &str, metrics_port: u16, admission: Admission) -> Command {
        let metrics_addr = format!("127.0.0.1:{metrics_port}");
        let mut cmd = heap_profiled(name);
        cmd.args([
            "controller",
            "--namespace",
            &self.ns,
            "--metrics-addr",
            &metrics_addr,
            "--webhook-allow",
            &self.allow,
        ]);
        cmd.args(&self.extra_args);
        match self.identity_secret {
            true => cmd.args([
                "--identity-secret",
                "greenlight-identity",
                "--identity-secret-namespace",
                &self.ns,
            ]),
            false => cmd.arg("--identity-key-file").arg(self.identity_key_file()),
        };
        if self.leader_election {
            cmd.args([
                "--leader-election",
                "--leader-election-lease-duration",
                self.lease_timing.0,
                "--leader-election-retry",
                self.lease_timing.1,
            ]);
        }
        self.admission_args(&mut cmd, admission);
        cmd
            // The operator runs with only the rights of the shipped ClusterRole.
            .env("KUBECONFIG", &self.cp.operator_kubeconfig)
            .env("POD_NAME", name)
            .env("RUST_LOG", &self.log_filter);
        cmd
    }

    /// A client of the webhook server that trusts `ca` and presents the apiserver's admission
    /// client certificate and token, as only the apiserver can.
    pub fn webhook_client(&self, ca: &str) -> reqwest::Client {
        greenlight::gates::ensure_crypto_provider();
        let certs = self
            .cp
            .admission_client_ca()
            .with_file_name("admission-client.crt");
        let pem = [
            std::fs::read(&certs).expect("admission client certificate"),
            std::fs::read(certs.with_extension("key")).expect("admission client key"),
        ]
        .concat();
        let mut headers = reqwest::header::HeaderMap::new();
        let bearer = format!("Bearer {}", crate::support::controlplane::ADMISSION_TOKEN);
        headers.insert(reqwest::header::AUTHORIZATION, bearer.parse().unwrap());
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
            .identity(reqwest::Identity::from_pem(&pem).expect("admission identity"))
            .default_headers(headers)
            // A fresh handshake per request, so each one sees the certificate served now.
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    }

    /// The flags that make the webhook server accept only the apiserver: its client
    /// certificate's CA and its token (the control plane's AdmissionConfiguration).
    fn admission_client_args(&self, cmd: &mut Command) {
        let token = self.dir.join("admission-token");
        std::fs::write(&token, crate::support::controlplane::ADMISSION_TOKEN).expect("token");
        cmd.arg("--admission-client-ca")
            .arg(self.cp.admission_client_ca())
            .arg("--admission-token-file")
            .arg(token);
    }

    fn admission_args(&self, cmd: &mut Command, admission: Admission) {
        if admission != Admission::Off {
            self.admission_client_args(cmd);
        }
        let admission_addr = format!("127.0.0.1:{}", self.admission_port);
        match admission {
            Admission::Off => {}
            Admission::CertFiles => {
                cmd.args([
                    "--admission-addr",
                    &admission_addr,
                    "--admission-refresh",
                    "1s",
                ])
                .arg("--admission-cert-dir")
                .arg(self.webhook_cert_dir());
            }
            Admission::SelfSigned => {
                cmd.args([
                    "--admission-addr",
                    &admission_addr,
                    "--admission-refresh",
                    "1s",
                    "--admission-host",
                    "127.0.0.1",
                    "--admission-configuration",
                    SHIPPED_WEBHOOK_CONFIGURATION,
                ]);
            }
        }
    }

    /// Whether the controller serving `metrics_port` leads now.
    pub async fn leads(metrics_port: u16) -> bool {
        let url = format!("http://127.0.0.1:{metrics_port}/metrics");
        let text = match reqwest::get(&url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => return false,
        };
        text.lines().any(|l| l.trim() == "greenlight_leader 1")
    }

    /// Sends `signal` (`KILL`, `TERM`, `STOP`, `CONT`) to a process.
    pub fn signal(pid: u32, signal: &str) {
        let sent = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// The identity key of this test's operator: kept across controller restarts, as a
    /// mounted Secret would be.
    fn identity_key_file(&self) -> PathBuf {
        let path = self.dir.join("identity.key");
        if !path.exists() {
            let key: String = (0..4)
                .map(|i| format!("{:016x}", unique_seed(&self.ns, i)))
                .collect();
            std::fs::write(&path, key).expect("identity key");
        }
        path
    }

    #[allow(dead_code)] // used by the benchmark, which shares this module
    pub fn controller_pid(&self) -> Option<u32> {
        self.controller.as_ref().map(|p| p.child.id())
    }

    /// Whether the controller process is still alive.
    pub fn controller_running(&mut self) -> bool {
        self.controller.as_mut().is_some_and(|p| p.is_running())
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
        self.kubectl_with(&self.cp.kubeconfig, &["apply", "-f", "-"], yaml)
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

    /// An object of this namespace as JSON, read without the typed structs so that fields and
    /// enum values they do not know (yet) are kept as the apiserver returned them.
    pub async fn json<K>(&self, name: &str) -> serde_json::Value
    where
        K: kube::Resource<DynamicType = ()>,
    {
        let resource = ApiResource::erase::<K>(&());
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.ns, &resource);
        let object = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("get {} {name}: {e}", resource.kind));
        serde_json::to_value(object).expect("object as JSON")
    }

    /// The running controller's `/metrics`, in the Prometheus text format.
    pub async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        reqwest::get(&url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// CPU time (user plus system) the running controller has used so far, in seconds.
    /// The controller's peak resident memory so far (VmHWM), in MiB.
    pub fn controller_peak_rss_mib(&self) -> f64 {
        self.controller_memory_mib("VmHWM:")
    }

    /// The controller's resident memory now (VmRSS), in MiB.
    pub fn controller_rss_mib(&self) -> f64 {
        self.controller_memory_mib("VmRSS:")
    }

    fn controller_memory_mib(&self, field: &str) -> f64 {
        let pid = self.controller_pid().expect("controller running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {status}"));
        kib / 1024.0
    }

    pub fn controller_cpu_seconds(&self) -> f64 {
        let pid = self.controller_pid().expect("controller running");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
        // utime and stime are fields 14 and 15, the 12th and 13th after the command name in
        // parentheses, in clock ticks of 1/100 s.
        let after_name = stat.rsplit(')').next().unwrap_or_default();
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks: u64 = fields
            .get(11..13)
            .unwrap_or_else(|| panic!("short /proc/{pid}/stat: {stat}"))
            .iter()
            .map(|f| f.parse::<u64>().unwrap_or_else(|e| panic!("{f}: {e}")))
            .sum();
        ticks as f64 / 100.0
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

    /// Waits for an Event with this reason: Events follow the status write that made them,
    /// so one that is due may still be on its way when the status shows the transition.
    pub async fn wait_event(&self, reason: &str) {
        self.wait_for(
            &format!("a {reason} Event"),
            Duration::from_secs(30),
            || async {
                match self.events(reason).await.is_empty() {
                    true => Err("none yet".to_string()),
                    false => Ok(()),
                }
            },
        )
        .await
    }

    /// The leader Lease in `namespace`, as it is now.
    pub async fn leader_lease(&self, namespace: &str) -> LeaseSpec {
        Api::<Lease>::namespaced(self.client.clone(), namespace)
            .get("greenlight-controller")
            .await
            .expect("the leader Lease")
            .spec
            .unwrap_or_default()
    }

    /// Terminates the leader `pid` (SIGTERM) and waits for another replica to hold the Lease
    /// in `namespace`. Returns how long that took, and by how much the next holder acquired
    /// the lease before the terminated leader's last renewal could have expired. A standby
    /// takes a lease that was not given up only once it has seen the same renewal for its own
    /// lease duration, so a positive margin proves the lease was given up. This holds while
    /// the replicas run with one lease duration on one clock, as the test bed's do; the leader
    /// must still give the lease up within that duration, which a loaded machine does.
    pub async fn terminate_leader(&self, namespace: &str, pid: u32) -> (Duration, SignedDuration) {
        let before = self.leader_lease(namespace).await;
        let lasts = i64::from(before.lease_duration_seconds.expect("a lease duration"));
        let mut renewed = before.renew_time.clone().expect("a renewed lease").0;
        let started = Instant::now();
        TestEnv::signal(pid, "TERM");
        let next = loop {
            let now = self.leader_lease(namespace).await;
            let holder = now.holder_identity.clone().filter(|h| !h.is_empty());
            if holder == before.holder_identity {
                // Renewed once more before it stopped: the expiry it could reach moves on.
                renewed = renewed.max(now.renew_time.clone().expect("a renewed lease").0);
            } else if holder.is_some() {
                break now;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no next holder"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let acquired = next.acquire_time.expect("an acquired lease").0;
        let expiry = renewed + SignedDuration::from_secs(lasts);
        (started.elapsed(), expiry.duration_since(acquired))
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

/// The shipped mutating and validating webhook configurations (config/webhook), named `name`
/// and calling the controller on `port` for objects of namespace `ns` only; `ca` is empty or
/// `, caBundle: ...`.
fn webhook_configurations_yaml(name: &str, port: u16, ns: &str, ca: &str) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let shipped = std::fs::read_to_string(format!("{root}/config/webhook/webhooks.yaml"))
        .expect("config/webhook/webhooks.yaml");
    let configurations: Vec<&str> = shipped
        .split("\n---\n")
        .filter(|doc| !doc.contains("kind: Service\n"))
        .collect();
    let mut yaml = configurations
        .join("\n---\n")
        .replace("metadata:\n  name: greenlight\n", &format!("metadata:\n  name: {name}\n"))
        .replace(
            "  clientConfig:\n",
            &format!("  namespaceSelector: {{matchLabels: {{greenlight.dev/e2e: {ns}}}}}\n  clientConfig:\n"),
        );
    for path in ["mutate", "validate"] {
        yaml = yaml.replace(
            &format!(
                "service: {{name: greenlight-webhook, namespace: greenlight-system, path: /{path}}}"
            ),
            &format!("{{url: \"https://127.0.0.1:{port}/{path}\"{ca}}}"),
        );
    }
    yaml
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
        for name in &self.webhook_configurations {
            for kind in [
                "mutatingwebhookconfiguration",
                "validatingwebhookconfiguration",
            ] {
                let _ = self.cp.kubectl_raw(&[
                    "delete",
                    kind,
                    name,
                    "--ignore-not-found",
                    "--wait=false",
                ]);
            }
        }
        let _ = self
            .cp
            .kubectl_raw(&["delete", "namespace", &self.ns, "--wait=false"]);
        // Kept for a post-mortem (controller logs) when GREENLIGHT_KEEP_TEST_DIRS is set.
        if std::env::var_os("GREENLIGHT_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn unique_seed(ns: &str, i: u8) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (ns, i, std::process::id(), now).hash(&mut h);
    h.finish()
}

/// The sum of the samples of metric `name` (e.g. `greenlight_api_writes_total`) in Prometheus
/// text whose labels include every `key="value"` of `labels`; 0 when there is none.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (label_text, value) = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            let label_text = format!(",{label_text}");
            if !labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!(",{k}=\"{v}\"")))
            {
                return None;
            }
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
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

/// The controller's command; under `GREENLIGHT_HEAPTRACK=DIR` (for `make bench-scale`), run
/// with heaptrack's allocation recorder preloaded, writing `DIR/NAME.zst` for
/// `heaptrack_print`. The shell `exec`s the controller, so its pid is still the controller's.
fn heap_profiled(name: &str) -> Command {
    let bin = crate::support::workspace_bin("greenlight");
    let Ok(dir) = std::env::var("GREENLIGHT_HEAPTRACK") else {
        return Command::new(bin);
    };
    let lib = "/usr/lib/heaptrack";
    let script = format!(
        "set -e; test -x {lib}/libexec/heaptrack_interpret; f='{dir}/{name}.pipe'; \
         rm -f \"$f\"; mkfifo \"$f\"; \
         {lib}/libexec/heaptrack_interpret < \"$f\" | zstd -q > '{dir}/{name}.zst' & \
         LD_PRELOAD={lib}/libheaptrack_preload.so DUMP_HEAPTRACK_OUTPUT=\"$f\" exec \"$0\" \"$@\""
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(&script).arg(bin);
    cmd
}
