//! What each crate may link, read from `cargo tree`. `greenlight-core` decides and does nothing
//! else: no Kubernetes client, no async runtime, no HTTP (and its `clippy.toml` forbids reading
//! a clock). The kubectl plugin carries none of the operator (its dashboard serves a page of
//! its own, with axum and kube's watches).

use std::process::Command;

/// Crates that do IO or run tasks. kube-core (kube-rs's types and traits, no client) is allowed.
const FORBIDDEN: &[&str] = &[
    "kube",
    "kube-client",
    "kube-runtime",
    "tokio",
    "reqwest",
    "hyper",
    "axum",
    "tower",
    "rustls",
    "mio",
];

/// The names of every crate in a package's normal (not dev, not build) dependency tree.
fn dependency_names(package: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--locked",
            "--offline",
            "-e",
            "normal",
            "-p",
            package,
        ])
        .args(["--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn forbidden_in(names: &[String]) -> Vec<&'static str> {
    FORBIDDEN
        .iter()
        .copied()
        .filter(|bad| names.iter().any(|n| n == bad))
        .collect()
}

#[test]
fn the_core_depends_on_no_client_runtime_or_network_crate() {
    let names = dependency_names("greenlight-core");
    assert!(
        names.iter().any(|n| n == "greenlight-api"),
        "the tree was read: {names:?}"
    );
    let found = forbidden_in(&names);
    assert!(
        found.is_empty(),
        "greenlight-core must stay pure, but its dependencies include {found:?}; \
         move the code that needs them to the operator crate (crates/greenlight)"
    );
}

#[test]
fn the_check_sees_the_operators_client_and_runtime() {
    let found = forbidden_in(&dependency_names("greenlight"));
    for expected in ["kube", "tokio", "reqwest"] {
        assert!(
            found.contains(&expected),
            "{expected} not seen in {found:?}"
        );
    }
}

#[test]
fn the_plugin_carries_no_part_of_the_operator() {
    let names = dependency_names("kubectl-greenlight");
    assert!(
        names.iter().any(|n| n == "kube-client"),
        "the tree was read: {names:?}"
    );
    // axum and kube's watches (kube-runtime) are the dashboard's own now: it serves a page and
    // keeps what it shows from watches. The operator itself, its certificates, metrics and
    // gate queries stay out.
    let operator_parts = ["greenlight", "rcgen", "prometheus-client", "promql-parser"];
    let carried: Vec<&str> = operator_parts
        .into_iter()
        .filter(|part| names.iter().any(|n| n == part))
        .collect();
    assert!(
        carried.is_empty(),
        "the kubectl plugin links parts of the operator: {carried:?}"
    );
}
