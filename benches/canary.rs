//! The canary benchmark: on the real test bed, with real traffic and a real Prometheus, it
//! measures how fast a breach puts all traffic back on primary, how many Kubernetes API
//! writes a canary step costs, and the controller's CPU and peak memory during canaries.
//! Run with `make bench`; it prints figures and asserts nothing.

#![allow(dead_code)]

#[path = "../e2e/cases/canary.rs"]
mod canary_case;
#[path = "../e2e/env.rs"]
mod env;
#[path = "../e2e/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use canary_case::{STEPS, first_sample_above_zero, image};
use env::{TestEnv, release_yaml};
use support::controlplane::ControlPlane;
use support::traffic::{Apps, LoadGenerator};

const FAULTY_RUNS: usize = 3;

/// What one benchmark run measured.
struct Figures {
    /// Seconds from a breach visible in Prometheus to all traffic on primary, per faulty release.
    reactions: Vec<f64>,
    healthy_secs: f64,
    /// Kubernetes API writes of the healthy canary, by kind.
    by_kind: BTreeMap<String, u64>,
    steps: f64,
    cpu: f64,
    wall: f64,
    peak_kib: u64,
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("the canary benchmark runs with `make bench`");
        return;
    }
    let cp: &'static ControlPlane = Box::leak(Box::new(ControlPlane::start()));
    cp.install();
    let kubelet = support::kubelet::start_in_background(cp.kubeconfig.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(cp, kubelet));
    cp.shutdown();
}

async fn run(cp: &'static ControlPlane, kubelet: support::kubelet::Kubelet) {
    let mut env = TestEnv::new(cp, kubelet, "bench-canary").await;
    let v1 = image("healthy", "bench-v1");
    let faulty: Vec<String> = (0..FAULTY_RUNS)
        .map(|i| image("faulty", &format!("bench-f{i}")))
        .collect();
    let healthy = image("healthy", "bench-v2");
    let mut others: Vec<&str> = vec![&healthy];
    others.extend(faulty.iter().map(String::as_str));
    let canary_case::Bed {
        mut prometheus,
        load,
        apps,
    } = canary_case::start_bed(&mut env, &v1, &others, STEPS).await;

    let pid = env.controller_pid().expect("controller running");
    let cpu_start = cpu_seconds(pid);
    let wall_start = Instant::now();

    let mut reactions = Vec::new();
    for (i, f) in faulty.iter().enumerate() {
        reactions
            .push(seconds_from_breach_to_primary(&env, &load, &apps, &prometheus.url, i, f).await);
    }

    let (healthy_secs, by_kind) = healthy_canary_seconds_and_writes(&env, &healthy).await;
    let steps = STEPS.lines().count() as f64;

    let cpu = cpu_seconds(pid) - cpu_start;
    let wall = wall_start.elapsed().as_secs_f64();
    let peak_kib = peak_memory_kib(pid);
    prometheus.stop();

    print_figures(Figures {
        reactions,
        healthy_secs,
        by_kind,
        steps,
        cpu,
        wall,
        peak_kib,
    });
}

/// Releases faulty image `f` as the `i`th faulty release and waits for it to fail; the seconds
/// from the first 500 in Prometheus to the load generator seeing all traffic on primary.
async fn seconds_from_breach_to_primary(
    env: &TestEnv,
    load: &LoadGenerator,
    apps: &Apps,
    prometheus_url: &str,
    i: usize,
    f: &str,
) -> f64 {
    let name = format!("f{i}");
    let since = Timestamp::now();
    let seen_before = load.seen.lock().unwrap().len();
    env.apply(&release_yaml(&name, "shop", &format!("2.0.{i}"), f));
    env.wait_release_stage(&name, "prod", "Failed", Duration::from_secs(120))
        .await;
    wait_idle(env).await;
    let port = apps.ports[f];
    let query = format!(
        r#"http_requests_total{{workload="web-canary",code="500",instance="127.0.0.1:{port}"}}"#
    );
    let breach = first_sample_above_zero(prometheus_url, &query, since).await;
    let seen = load.seen.lock().unwrap()[seen_before..].to_vec();
    let up = seen
        .iter()
        .position(|s| s.canary_weight > 0)
        .expect("the canary got traffic");
    let back = seen[up..]
        .iter()
        .find(|s| s.canary_weight == 0)
        .expect("traffic back on primary")
        .at;
    back.duration_since(breach).as_secs_f64()
}

/// Releases the healthy image as v2; the seconds to promotion and the API writes it took.
async fn healthy_canary_seconds_and_writes(
    env: &TestEnv,
    healthy: &str,
) -> (f64, BTreeMap<String, u64>) {
    // The gates' 10s rate window must forget the faulty canaries before a healthy one is judged.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let writes_before = api_writes(env.metrics_port).await;
    let started = Instant::now();
    env.apply(&release_yaml("v2", "shop", "2.1.0", healthy));
    env.wait_release_stage("v2", "prod", "Succeeded", Duration::from_secs(180))
        .await;
    let healthy_secs = started.elapsed().as_secs_f64();
    let writes_after = api_writes(env.metrics_port).await;
    let by_kind: BTreeMap<String, u64> = writes_after
        .into_iter()
        .map(|(k, n)| {
            let before = writes_before.get(&k).copied().unwrap_or(0);
            (k, n - before)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    (healthy_secs, by_kind)
}

fn print_figures(figures: Figures) {
    let Figures {
        reactions,
        healthy_secs,
        by_kind,
        steps,
        cpu,
        wall,
        peak_kib,
    } = figures;
    let writes: u64 = by_kind.values().sum();
    let mean = reactions.iter().sum::<f64>() / reactions.len() as f64;
    let max = reactions.iter().cloned().fold(0.0, f64::max);
    println!(
        "greenlight canary benchmark (interval 2s, failureLimit 2, Prometheus scrape 1s, 100 req/s)"
    );
    println!(
        "  breach visible in Prometheus -> 100% on primary: mean {mean:.2}s, max {max:.2}s over {} faulty releases (bound {}s)",
        reactions.len(),
        2 * 2 + 2
    );
    println!("  healthy canary, {steps} steps to promotion and bake: {healthy_secs:.1}s");
    println!(
        "  Kubernetes API writes for that canary: {writes} in all, {:.1} per step",
        writes as f64 / steps
    );
    println!(
        "    by kind: {}",
        by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  controller CPU: {cpu:.2}s over {wall:.0}s ({:.1}% of one core)",
        cpu / wall * 100.0
    );
    println!(
        "  controller peak memory (VmHWM): {:.1} MiB",
        peak_kib as f64 / 1024.0
    );
}

async fn wait_idle(env: &TestEnv) {
    env.wait_for(
        "the stage to finish its rollback",
        Duration::from_secs(60),
        || async {
            let s = env.stage("prod").await.status.unwrap_or_default();
            if s.rollout.is_none() {
                Ok(())
            } else {
                Err("rolling back".to_string())
            }
        },
    )
    .await;
}

/// `greenlight_api_writes_total` by kind of write.
async fn api_writes(port: u16) -> BTreeMap<String, u64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with("greenlight_api_writes_total{"))
        .filter_map(|l| {
            let kind = l.split('"').nth(1)?.to_string();
            let n = l.rsplit(' ').next()?.parse::<f64>().ok()? as u64;
            Some((kind, n))
        })
        .collect()
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of /proc/PID/stat, in clock ticks (100 per second).
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn peak_memory_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
