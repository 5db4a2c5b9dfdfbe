//! The test bed: a real control plane on loopback, a fake kubelet, and helpers to run the
//! controller and wait for what it does. Shared by the e2e tests and `make run`.

#![allow(dead_code)]

pub mod audit;
pub mod certs;
pub mod controlplane;
pub mod delay;
pub mod figures;
pub mod http;
pub mod itsm;
pub mod jobpods;
pub mod kstatus;
pub mod kubelet;
pub mod lua;
pub mod oidc;
pub mod pod;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod switch_load;
pub mod traffic;

use std::path::PathBuf;

/// Where the Kubernetes binaries are: `$KUBEBUILDER_ASSETS` (the envtest convention) or the
/// cache that `hack/install-deps.sh` fills.
pub fn k8s_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("KUBEBUILDER_ASSETS") {
        return PathBuf::from(dir);
    }
    cache_dir().join("k8s-1.20.2/bin")
}

pub fn cache_dir() -> PathBuf {
    match std::env::var("GREENLIGHT_CACHE") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
            .join(".cache/greenlight"),
    }
}

/// A binary from the Kubernetes directory, else from `PATH` (etcd comes from Debian).
pub fn find_binary(name: &str) -> PathBuf {
    let candidate = k8s_bin_dir().join(name);
    if candidate.exists() {
        return candidate;
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = PathBuf::from(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{name} not found in {} or PATH; run `bash hack/install-deps.sh` (make test does)",
        k8s_bin_dir().display()
    );
}

/// A binary of another crate of the workspace (`greenlight`, `kubectl-greenlight`), from the
/// directory this program was built in: Cargo names to a test only its own package's binaries.
/// `make test`, `make e2e` and `make bench` build them first; one older than its sources is
/// refused rather than tested.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the running program's path");
    let mut dir = exe.parent().expect("a directory").to_path_buf();
    if dir.file_name().is_some_and(|d| d == "deps") {
        dir.pop();
    }
    let bin = dir.join(name);
    let built = std::fs::metadata(&bin).and_then(|m| m.modified());
    let Ok(built) = built else {
        panic!(
            "{} is not built: run `cargo build --workspace --bins` (with --release for a bench)",
            bin.display()
        );
    };
    // The binary's own crate and the two it is built on; a source newer than the binary means
    // the run would test old code.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crates");
    let sources = [name, "greenlight-core", "greenlight-api"].map(|c| root.join(c).join("src"));
    let newer = sources.iter().find_map(|src| newer_source(src, built));
    if let Some(source) = newer {
        panic!(
            "{} is older than {}: run `cargo build --workspace --bins` (with --release for a bench)",
            bin.display(),
            source.display()
        );
    }
    bin
}

/// A `.rs` file under `dir` changed after `than`, if there is one.
fn newer_source(dir: &std::path::Path, than: std::time::SystemTime) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = newer_source(&path, than) {
                return Some(found);
            }
            continue;
        }
        let changed = entry.metadata().and_then(|m| m.modified());
        if path.extension().is_some_and(|e| e == "rs") && changed.is_ok_and(|c| c > than) {
            return Some(path);
        }
    }
    None
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A fresh directory under the system temp dir (or `/dev/shm` for speed when asked).
pub fn temp_dir(prefix: &str) -> PathBuf {
    temp_dir_in(&std::env::temp_dir(), prefix)
}

pub fn temp_dir_in(base: &std::path::Path, prefix: &str) -> PathBuf {
    let dir = base.join(format!("{prefix}-{}-{}", std::process::id(), unique()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

pub fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{n}", nanos & 0xffff)
}

/// The shipped `config/rbac/secret-reader-example.yaml`, letting the test bed's operator user
/// read exactly the Secret `secret` (a gate's token, a notifier's URL).
pub fn operator_may_read_secret(secret: &str) -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/rbac/secret-reader-example.yaml"
    ))
    .expect("config/rbac/secret-reader-example.yaml")
    .replace("[prometheus-token]", &format!("[{secret}]"))
    .replace(
        "- kind: ServiceAccount\n  name: greenlight\n  namespace: greenlight-system",
        &format!(
            "- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: {}}}",
            controlplane::OPERATOR_USER
        ),
    )
    .trim_end()
    .to_string()
        + "\n"
}

/// Held by the cases that start a whole control plane of their own (the install cases and
/// the demo), so that at most one such extra cluster loads the 2-core machine at a time,
/// beside the cases whose deadlines are measured.
pub static OWN_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
