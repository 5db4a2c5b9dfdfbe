//! etcd, kube-apiserver and kube-controller-manager on loopback with random ports and a
//! temporary directory, stopped (and the directory removed) on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::Proc;
use super::{find_binary, free_port, temp_dir};

pub const ADMIN_TOKEN: &str = "greenlight-e2e-admin-token";
/// The operator's identity in the tests: bound only to the shipped least-privilege ClusterRole.
pub const OPERATOR_TOKEN: &str = "greenlight-e2e-operator-token";
pub const OPERATOR_USER: &str = "greenlight-operator";
/// People in the tests, each a token-file user with one group: two release managers, two
/// developers, a platform admin and the CI robot.
pub const PEOPLE: [(&str, &str); 6] = [
    ("alice", "release-managers"),
    ("bob", "release-managers"),
    ("carol", "developers"),
    ("erin", "developers"),
    ("dana", "platform-admins"),
    ("ci-bot", "ci"),
];
/// Two more users for the operator, each bound to its shipped ClusterRole like
/// [`OPERATOR_USER`], so that the audit log tells two replicas' writes apart.
pub const REPLICA_USERS: [&str; 2] = ["greenlight-replica-a", "greenlight-replica-b"];
/// The signed-in dashboard's own account: bound to nothing but the chart's impersonation
/// ClusterRole, by the case that runs it.
pub const DASHBOARD_USER: &str = "greenlight-dashboard";

pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// A kubeconfig for the operator's user, which has only the rights RBAC gives it.
    pub operator_kubeconfig: PathBuf,
    pub server: String,
    procs: std::sync::Mutex<Vec<Proc>>,
    keep_dir: bool,
    etcd_dir: PathBuf,
}

impl ControlPlane {
    /// Starts the control plane and waits until the apiserver answers.
    pub fn start() -> ControlPlane {
        let dir = temp_dir("greenlight-cp");
        Self::start_in(dir, false)
    }

    pub fn start_in(dir: PathBuf, keep_dir: bool) -> ControlPlane {
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs).expect("certs dir");
        make_certs(&certs);
        write_token_file(&dir);

        let etcd_port = free_port();
        let peer_port = free_port();
        let etcd_dir = shm_or(&dir).join("etcd");
        let etcd = etcd_command(&etcd_dir, etcd_port, peer_port);
        let mut procs = vec![Proc::spawn("etcd", etcd, &dir)];

        let api_port = free_port();
        let server = format!("https://127.0.0.1:{api_port}");
        let api = apiserver_command(&dir, &certs, etcd_port, api_port);
        procs.push(Proc::spawn("kube-apiserver", api, &dir));

        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            kubeconfig_yaml(&server, &certs.join("ca.crt"), ADMIN_TOKEN),
        )
        .expect("kubeconfig");
        let operator_kubeconfig = dir.join("kubeconfig-operator");
        std::fs::write(
            &operator_kubeconfig,
            kubeconfig_yaml(&server, &certs.join("ca.crt"), OPERATOR_TOKEN),
        )
        .expect("operator kubeconfig");
        let accounts = PEOPLE.iter().map(|(user, _)| *user);
        for user in accounts.chain([DASHBOARD_USER]) {
            std::fs::write(
                dir.join(format!("kubeconfig-{user}")),
                kubeconfig_yaml(&server, &certs.join("ca.crt"), &person_token(user)),
            )
            .expect("person kubeconfig");
        }
        let cp = ControlPlane {
            operator_kubeconfig,
            dir,
            kubeconfig,
            server,
            procs: std::sync::Mutex::new(procs),
            keep_dir,
            etcd_dir,
        };
        cp.wait_healthy(Duration::from_secs(90));

        let kcm = kube_controller_manager_command(&cp.kubeconfig);
        let kcm = Proc::spawn("kube-controller-manager", kcm, &cp.dir);
        cp.procs.lock().unwrap().push(kcm);
        cp
    }

    fn wait_healthy(&self, timeout: Duration) {
        let started = Instant::now();
        loop {
            let ok = Command::new(find_binary("kubectl"))
                .args([
                    "--kubeconfig",
                    &self.kubeconfig.to_string_lossy(),
                    "get",
                    "--raw",
                    "/readyz",
                ])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            for p in self.procs.lock().unwrap().iter_mut() {
                if !p.is_running() {
                    panic!("{} exited during start-up:\n{}", p.name, p.tail(40));
                }
            }
            if started.elapsed() > timeout {
                let logs: Vec<String> = self
                    .procs
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|p| format!("--- {}\n{}", p.name, p.tail(30)))
                    .collect();
                panic!(
                    "control plane not healthy after {timeout:?}\n{}",
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Installs the CRDs (Greenlight's and the Gateway API fixture) and the shipped operator
    /// ClusterRole, bound to the operator's test user.
    pub fn install(&self) {
        let root = env!("CARGO_MANIFEST_DIR");
        self.kubectl(&[
            "apply",
            "-f",
            &format!("{root}/crds/"),
            "-f",
            &format!("{root}/e2e/crds/"),
        ]);
        self.kubectl(&["apply", "-f", &format!("{root}/config/rbac/operator.yaml")]);
        let subjects: Vec<String> = [OPERATOR_USER]
            .iter()
            .chain(REPLICA_USERS.iter())
            .map(|user| {
                format!("{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}")
            })
            .collect();
        let binding = format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: greenlight-operator-e2e}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: greenlight-operator}}\nsubjects: [{}]\n",
            subjects.join(", ")
        );
        let path = self.dir.join("operator-binding.yaml");
        std::fs::write(&path, binding).expect("binding file");
        self.kubectl(&["apply", "-f", &path.to_string_lossy()]);
        for crd in [
            "releases.greenlight.dev",
            "stages.greenlight.dev",
            "gates.greenlight.dev",
            "approvals.greenlight.dev",
            "notifiers.greenlight.dev",
            "httproutes.gateway.networking.k8s.io",
        ] {
            self.kubectl(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                &format!("crd/{crd}"),
            ]);
        }
    }

    /// A kubeconfig for one of [`PEOPLE`].
    /// The CA of the apiserver's client certificate for admission webhooks.
    pub fn admission_client_ca(&self) -> PathBuf {
        self.dir.join("certs").join("admission-ca.crt")
    }

    pub fn kubeconfig_for(&self, user: &str) -> PathBuf {
        self.dir.join(format!("kubeconfig-{user}"))
    }

    /// Writes to `path` a kubeconfig for one of [`REPLICA_USERS`] that reaches the apiserver
    /// at `server` (this control plane's own [`ControlPlane::server`], or a proxy in front of
    /// it on 127.0.0.1, which the serving certificate names too).
    pub fn write_replica_kubeconfig(&self, user: &str, server: &str, path: &Path) {
        let ca = self.dir.join("certs").join("ca.crt");
        std::fs::write(path, kubeconfig_yaml(server, &ca, &person_token(user)))
            .expect("replica kubeconfig");
    }

    /// The apiserver's audit log: the writes of [`REPLICA_USERS`] only (see
    /// [`super::audit`]).
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// Runs kubectl against this control plane and returns stdout, panicking on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_raw(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn kubectl_raw(&self, args: &[&str]) -> std::process::Output {
        Command::new(find_binary("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    pub fn logs(&self) -> String {
        self.procs
            .lock()
            .unwrap()
            .iter()
            .map(|p| format!("--- {}\n{}", p.name, p.tail(20)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl ControlPlane {
    /// Stops every process (controller-manager and apiserver before etcd) and removes the
    /// temporary directories. Safe to call more than once.
    pub fn shutdown(&self) {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut p) = procs.pop() {
            p.kill();
        }
        let _ = std::fs::remove_dir_all(self.etcd_dir.parent().unwrap_or(&self.etcd_dir));
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn person_token(user: &str) -> String {
    format!("greenlight-e2e-{user}-token")
}

fn shm_or(dir: &Path) -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        super::temp_dir_in(shm, "greenlight-etcd")
    } else {
        super::temp_dir_in(dir, "etcd")
    }
}

fn kubeconfig_yaml(server: &str, ca: &Path, token: &str) -> String {
    use std::io::Read;
    let mut pem = Vec::new();
    std::fs::File::open(ca)
        .and_then(|mut f| f.read_to_end(&mut pem))
        .expect("read CA");
    let ca_b64 = base64_encode(&pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca_b64}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: admin\ncurrent-context: e2e\n"
    )
}

/// A CA, a serving certificate for 127.0.0.1/localhost, and the service-account key pair.
fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3650",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=greenlight-e2e-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").expect("san file");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "3650",
        "-extfile",
        "san.ext",
    ]);
    run(&["genrsa", "-out", "sa.key", "2048"]);
    run(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
    make_admission_client_certs(dir, &run);
}

/// The apiserver's own client certificate for admission webhooks, from a CA of its own, so a
/// webhook trusting that CA trusts no other client of the cluster.
fn make_admission_client_certs(dir: &Path, run: &dyn Fn(&[&str])) {
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3650",
        "-keyout",
        "admission-ca.key",
        "-out",
        "admission-ca.crt",
        "-subj",
        "/CN=greenlight-e2e-admission-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "admission-client.key",
        "-out",
        "admission-client.csr",
        "-subj",
        "/CN=kube-apiserver-admission",
    ]);
    std::fs::write(dir.join("client.ext"), "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n").expect("client ext file");
    run(&[
        "x509",
        "-req",
        "-in",
        "admission-client.csr",
        "-CA",
        "admission-ca.crt",
        "-CAkey",
        "admission-ca.key",
        "-CAcreateserial",
        "-out",
        "admission-client.crt",
        "-days",
        "3650",
        "-extfile",
        "client.ext",
    ]);
}

/// The token the apiserver presents to admission webhooks, besides its client certificate.
pub const ADMISSION_TOKEN: &str = "greenlight-e2e-apiserver-admission-token";

/// The apiserver's AdmissionConfiguration: every webhook is called with the client
/// certificate and token of `certs/admission-client.*` (kubeconfig user `*`).
fn write_admission_config(dir: &Path, certs: &Path) -> PathBuf {
    let kubeconfig = dir.join("admission-kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nusers:\n- name: '*'\n  user:\n    client-certificate: {}\n    client-key: {}\n    token: {ADMISSION_TOKEN}\n",
            certs.join("admission-client.crt").display(),
            certs.join("admission-client.key").display(),
        ),
    )
    .expect("admission kubeconfig");
    let webhook = |plugin: &str| {
        format!(
            "- name: {plugin}\n  configuration:\n    apiVersion: apiserver.config.k8s.io/v1\n    kind: WebhookAdmissionConfiguration\n    kubeConfigFile: {}\n",
            kubeconfig.display()
        )
    };
    let config = dir.join("admission-config.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n{}{}",
            webhook("ValidatingAdmissionWebhook"),
            webhook("MutatingAdmissionWebhook")
        ),
    )
    .expect("admission config");
    config
}

fn base64_encode(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The token-file users: the admin, the operator and the people.
fn write_token_file(dir: &Path) {
    std::fs::write(
        dir.join("tokens.csv"),
        format!(
            "{ADMIN_TOKEN},admin,admin-uid,system:masters\n{OPERATOR_TOKEN},{OPERATOR_USER},operator-uid\n{}{}",
            PEOPLE
                .iter()
                .map(|(user, group)| format!("{},{user},{user}-uid,{group}\n", person_token(user)))
                .collect::<String>(),
            REPLICA_USERS
                .iter()
                .chain([&DASHBOARD_USER])
                .map(|user| format!("{},{user},{user}-uid\n", person_token(user)))
                .collect::<String>()
        ),
    )
    .expect("token file");
}

fn etcd_command(etcd_dir: &Path, etcd_port: u16, peer_port: u16) -> Command {
    let mut etcd = Command::new(find_binary("etcd"));
    etcd.args([
        "--name=e2e",
        &format!("--data-dir={}", etcd_dir.display()),
        &format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
        &format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
        &format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
        &format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
        &format!("--initial-cluster=e2e=http://127.0.0.1:{peer_port}"),
        "--log-level=warn",
    ]);
    etcd
}

fn apiserver_command(dir: &Path, certs: &Path, etcd_port: u16, api_port: u16) -> Command {
    let mut api = Command::new(find_binary("kube-apiserver"));
    api.args([
        &format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
        &format!("--secure-port={api_port}"),
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        &format!("--tls-cert-file={}", certs.join("server.crt").display()),
        &format!(
            "--tls-private-key-file={}",
            certs.join("server.key").display()
        ),
        &format!("--client-ca-file={}", certs.join("ca.crt").display()),
        &format!("--token-auth-file={}", dir.join("tokens.csv").display()),
        &format!(
            "--admission-control-config-file={}",
            write_admission_config(dir, certs).display()
        ),
        &format!(
            "--service-account-key-file={}",
            certs.join("sa.pub").display()
        ),
        &format!(
            "--service-account-signing-key-file={}",
            certs.join("sa.key").display()
        ),
        "--service-account-issuer=https://kubernetes.default.svc",
        &format!(
            "--audit-policy-file={}",
            super::audit::write_policy(dir).display()
        ),
        &format!("--audit-log-path={}", dir.join("audit.log").display()),
        "--service-cluster-ip-range=10.96.0.0/16",
        "--authorization-mode=RBAC",
        "--disable-admission-plugins=ServiceAccount",
        "--allow-privileged=true",
        // Webhook Services are reached at their endpoints: no kube-proxy runs here.
        "--enable-aggregator-routing=true",
        // A Job gate's `ttlSecondsAfterFinished` (alpha in 1.20; the apiserver drops the
        // field without the gate).
        "--feature-gates=TTLAfterFinished=true",
        "--v=0",
    ]);
    api
}

fn kube_controller_manager_command(kubeconfig: &Path) -> Command {
    let mut kcm = Command::new(find_binary("kube-controller-manager"));
    kcm.args([
        &format!("--kubeconfig={}", kubeconfig.display()),
        // The Job controller runs Job gates' Jobs; the TTL controller removes finished ones.
        // The HPA controller shows how an autoscaler on a stage's target behaves.
        "--controllers=deployment,replicaset,garbagecollector,namespace,job,ttl-after-finished,endpoint,horizontalpodautoscaling",
        "--feature-gates=TTLAfterFinished=true",
        "--leader-elect=false",
        "--port=0",
        "--secure-port=0",
        "--concurrent-deployment-syncs=10",
        "--concurrent-replicaset-syncs=10",
        "--v=0",
    ]);
    kcm
}
