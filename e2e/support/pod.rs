//! Runs a Deployment's container on the host as its pod would, without a container runtime:
//! the image's root filesystem (from `make image`) in a chroot, as the pod's user, with its
//! Secret volumes at their mount paths, the ServiceAccount token where in-cluster config reads
//! it, and the environment a kubelet gives. Only the network is the host's, so a second
//! replica has its ports moved (two pods would each have an address of their own).

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, Secret, ServiceAccount, Volume};
use kube::api::PostParams;
use kube::{Api, Client};

use super::process::Proc;

/// The operator image, unpacked.
pub struct Image {
    pub rootfs: PathBuf,
    pub entrypoint: Vec<String>,
    pub user: String,
}

/// Where `make image` leaves the OCI layout, and the tag it gives.
pub fn layout() -> (PathBuf, String) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/image/oci");
    (dir, format!("greenlight:{}", env!("CARGO_PKG_VERSION")))
}

/// Unpacks the image into `dir` with umoci and reads its entrypoint and user from the
/// image's own config blob, as a runtime does.
pub fn unpack(dir: &Path) -> Image {
    let (layout, tag) = layout();
    assert!(
        layout.join("index.json").exists(),
        "no image at {}: run `make image` (make test does)",
        layout.display()
    );
    let bundle = dir.join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle)
        .output()
        .expect("run umoci");
    assert!(
        out.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = image_config(&layout, &tag);
    let strings = |key: &str| -> Vec<String> {
        config[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    Image {
        rootfs: bundle.join("rootfs"),
        entrypoint: strings("Entrypoint"),
        user: config["User"].as_str().unwrap_or_default().to_string(),
    }
}

/// The `config` object of the image's config blob: index → manifest → config.
pub fn image_config(layout: &Path, tag: &str) -> serde_json::Value {
    let blob = |digest: &str| -> serde_json::Value {
        let hex = digest.trim_start_matches("sha256:");
        let text = std::fs::read_to_string(layout.join("blobs/sha256").join(hex)).expect("blob");
        serde_json::from_str(&text).expect("blob json")
    };
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(layout.join("index.json")).expect("index.json"),
    )
    .expect("index json");
    let manifest = index["manifests"]
        .as_array()
        .and_then(|m| {
            m.iter().find(|m| {
                m["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(tag)
            })
        })
        .unwrap_or_else(|| panic!("no manifest tagged {tag} in {index}"));
    let manifest = blob(manifest["digest"].as_str().expect("manifest digest"));
    blob(
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest"),
    )["config"]
        .clone()
}

/// A pod of `deployment`, ready to start on the host.
pub struct HostPod {
    pub name: String,
    rootfs: PathBuf,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    user: String,
}

impl HostPod {
    /// Puts the pod's Secret volumes and ServiceAccount token into the image's root
    /// filesystem, and works out its command line and environment.
    pub async fn prepare(
        client: &Client,
        deployment: &Deployment,
        pod_name: &str,
        image: &Image,
        api: (&str, u16, &Path),
    ) -> HostPod {
        let ns = deployment.metadata.namespace.clone().expect("namespace");
        let spec = pod_spec(deployment);
        let container = &spec.containers[0];
        for mount in container.volume_mounts.iter().flatten() {
            let volume = spec
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == mount.name)
                .unwrap_or_else(|| panic!("volume {} not declared", mount.name));
            let target = image.rootfs.join(mount.mount_path.trim_start_matches('/'));
            write_secret_volume(client, &ns, volume, &target).await;
        }
        write_name_resolution(&image.rootfs, pod_name);
        let account = spec
            .service_account_name
            .clone()
            .expect("serviceAccountName");
        write_service_account(client, &ns, &account, &image.rootfs, api.2).await;
        let mut argv = image.entrypoint.clone();
        argv.extend(container.args.clone().unwrap_or_default());
        HostPod {
            name: pod_name.to_string(),
            rootfs: image.rootfs.clone(),
            argv,
            env: environment(container, pod_name, &ns, api),
            user: run_as(spec, container, image),
        }
    }

    /// The pod's arguments with one port moved: `--flag=host:from` becomes `host:to`.
    pub fn move_port(&mut self, flag: &str, to: u16) {
        for arg in self.argv.iter_mut() {
            if let Some(addr) = arg.strip_prefix(&format!("{flag}=")) {
                let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
                *arg = format!("{flag}={host}:{to}");
            }
        }
    }

    /// The value of `--flag=value` in the pod's arguments.
    pub fn arg(&self, flag: &str) -> Option<String> {
        let prefix = format!("{flag}=");
        self.argv
            .iter()
            .find_map(|a| a.strip_prefix(&prefix).map(String::from))
    }

    pub fn start(&self, log_dir: &Path) -> Proc {
        let mut cmd = Command::new(super::find_binary("chroot"));
        cmd.arg(format!("--userspec={}", self.user))
            .arg(&self.rootfs)
            .args(&self.argv)
            .env_clear()
            .envs(self.env.iter().cloned());
        Proc::spawn(&self.name, cmd, log_dir)
    }
}

fn pod_spec(deployment: &Deployment) -> &PodSpec {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod template spec")
}

/// `uid:gid` from the container's, else the pod's, security context, else the image's user.
fn run_as(spec: &PodSpec, container: &Container, image: &Image) -> String {
    let pod = spec.security_context.as_ref();
    let own = container.security_context.as_ref();
    let uid = own
        .and_then(|c| c.run_as_user)
        .or_else(|| pod.and_then(|p| p.run_as_user));
    let gid = own
        .and_then(|c| c.run_as_group)
        .or_else(|| pod.and_then(|p| p.run_as_group));
    match (uid, gid) {
        (Some(uid), Some(gid)) => format!("{uid}:{gid}"),
        (Some(uid), None) => format!("{uid}:{uid}"),
        _ => image.user.clone(),
    }
}

/// The container's env, with the downward API resolved, and the variables a kubelet adds.
fn environment(
    container: &Container,
    pod: &str,
    ns: &str,
    (host, port, _): (&str, u16, &Path),
) -> Vec<(String, String)> {
    let mut env = vec![
        ("HOSTNAME".to_string(), pod.to_string()),
        ("KUBERNETES_SERVICE_HOST".to_string(), host.to_string()),
        ("KUBERNETES_SERVICE_PORT".to_string(), port.to_string()),
    ];
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("metadata.name") => pod.to_string(),
                Some("metadata.namespace") => ns.to_string(),
                other => panic!("env {}: unsupported source {other:?}", var.name),
            },
            (None, None) => String::new(),
        };
        env.push((var.name.clone(), value));
    }
    env
}

/// A Secret volume's keys as files (all keys, or the listed items), readable by the pod's
/// user as the kubelet's default mode 0644 makes them.
async fn write_secret_volume(client: &Client, ns: &str, volume: &Volume, target: &Path) {
    let source = volume
        .secret
        .as_ref()
        .unwrap_or_else(|| panic!("volume {} is not a Secret", volume.name));
    let name = source.secret_name.clone().expect("secretName");
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&name)
        .await
        .unwrap_or_else(|e| panic!("Secret {ns}/{name} of volume {}: {e}", volume.name));
    let data = secret.data.unwrap_or_default();
    let files: Vec<(String, String)> = match &source.items {
        Some(items) => items
            .iter()
            .map(|i| (i.key.clone(), i.path.clone()))
            .collect(),
        None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
    };
    std::fs::create_dir_all(target).expect("mount dir");
    for (key, path) in files {
        let bytes = data
            .get(&key)
            .unwrap_or_else(|| panic!("Secret {name} has no key {key}"));
        let file = target.join(path);
        std::fs::write(&file, &bytes.0).expect("secret file");
        set_mode(&file, 0o644);
    }
}

/// The /etc/hosts and /etc/resolv.conf a kubelet mounts into every container.
fn write_name_resolution(rootfs: &Path, pod: &str) {
    let etc = rootfs.join("etc");
    std::fs::create_dir_all(&etc).expect("etc");
    let hosts = format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\t{pod}\n");
    std::fs::write(etc.join("hosts"), hosts).expect("hosts");
    let resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    std::fs::write(etc.join("resolv.conf"), resolv).expect("resolv.conf");
}

/// A bound token for the ServiceAccount, where in-cluster config reads it.
async fn write_service_account(client: &Client, ns: &str, account: &str, rootfs: &Path, ca: &Path) {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec!["https://kubernetes.default.svc".into()],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("token for ServiceAccount {ns}/{account}: {e}"))
        .status
        .expect("token status")
        .token;
    let dir = rootfs.join("var/run/secrets/kubernetes.io/serviceaccount");
    std::fs::create_dir_all(&dir).expect("serviceaccount dir");
    for (file, bytes) in [
        ("token", token.into_bytes()),
        ("ca.crt", std::fs::read(ca).expect("apiserver CA")),
        ("namespace", ns.as_bytes().to_vec()),
    ] {
        std::fs::write(dir.join(file), bytes).expect("serviceaccount file");
        set_mode(&dir.join(file), 0o644);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The first IPv4 address of this host that is not loopback: the apiserver reaches a
/// webhook Service's endpoints there (endpoints may not be loopback addresses).
pub fn host_address() -> String {
    let out = Command::new("hostname")
        .arg("-I")
        .output()
        .expect("hostname -I");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .map(String::from)
        .expect("a non-loopback IPv4 address on this host, for webhook endpoints")
}
