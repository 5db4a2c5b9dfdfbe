//! The scale scenario, shared by `make bench-scale` (large sizes, figures printed) and the
//! smoke case of `make test` (small sizes, correctness asserted): N pipelines of M stages in
//! one namespace (rolling stages, one gated by a soak and one by a webhook, and a
//! replica-ratio canary last), R releases published over time round-robin, then the
//! controller is watched settling and idling. Everything is measured from outside: the
//! controller's `/metrics` and `/proc`, the apiserver's `/metrics`, and the objects.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use greenlight::api::Release;
use greenlight::api::release::ReleasePhase;
use kube::Api;
use kube::api::{ListParams, PostParams};

use crate::env::{TestEnv, image, metric_sum, target_yaml};
use crate::support::http::WebhookServer;

/// How big a run is.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub pipelines: usize,
    pub stages: usize,
    pub releases: usize,
    /// Pause between two published releases.
    pub publish_every: Duration,
    /// How long the settled controller is watched for writes.
    pub idle_for: Duration,
    /// Keep publishing for this long and sample memory (a soak), instead of `releases`.
    pub soak: Option<Duration>,
    /// Keep only the newest this many releases of each pipeline, deleting older ones as a
    /// CI's retention would: the objects held then level off, so RSS that still grows is the
    /// operator's own.
    pub keep: Option<usize>,
}

impl Sizes {
    pub fn smoke() -> Sizes {
        Sizes {
            pipelines: 3,
            stages: 4,
            releases: 12,
            publish_every: Duration::from_millis(300),
            idle_for: Duration::from_secs(10),
            soak: None,
            keep: None,
        }
    }

    /// `GREENLIGHT_SCALE` (read by `make bench-scale`, not by the e2e tests): `full` (the default: 250 × 4 stages, 10,000 releases), `medium`,
    /// `smoke`, or `soak` (the full world, releases published for 30 minutes).
    #[allow(dead_code)]
    pub fn from_env() -> Sizes {
        let preset = std::env::var("GREENLIGHT_SCALE").unwrap_or_else(|_| "full".into());
        let full = Sizes {
            pipelines: 250,
            stages: 4,
            releases: 10_000,
            publish_every: Duration::from_millis(20),
            idle_for: Duration::from_secs(60),
            soak: None,
            keep: None,
        };
        match preset.as_str() {
            "smoke" => Sizes::smoke(),
            "medium" => Sizes {
                pipelines: 50,
                releases: 1_000,
                ..full
            },
            "soak" => Sizes {
                publish_every: Duration::from_millis(500),
                soak: Some(Duration::from_secs(30 * 60)),
                keep: Some(4),
                ..full
            },
            _ => full,
        }
    }
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct Report {
    pub published: usize,
    pub settle: Duration,
    /// Releases by final phase (and `NotFinal` for any that never got there).
    pub phases: BTreeMap<String, usize>,
    /// The newest release of each pipeline that did not succeed at its last stage.
    pub newest_not_shipped: Vec<String>,
    pub cpu_seconds: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    /// The controller's writes, by kind, at the end of the run.
    pub writes: BTreeMap<String, f64>,
    /// Writes, by kind, of the passes still under way when the last release became final
    /// (its stage's own status and the Events announcing it), and how long until they ended.
    pub trailing_writes: BTreeMap<String, f64>,
    pub quiet_after: Duration,
    /// The writes, by kind, the settled controller made while nothing changed.
    pub idle_writes: BTreeMap<String, f64>,
    pub events: f64,
    /// Per controller: reconciles, p50 and p99 duration, p50 and p99 queue wait (seconds).
    pub latency: BTreeMap<String, [f64; 5]>,
    /// Per controller and whether the pass wrote: passes, p50 and p99 duration (seconds).
    pub passes: BTreeMap<String, [f64; 3]>,
    /// The apiserver's requests, by verb and resource.
    pub apiserver: BTreeMap<String, f64>,
    /// The apiserver's mean time to answer, by verb (seconds).
    pub apiserver_latency: BTreeMap<String, f64>,
    /// The stages' Deployment and Service reads, by outcome (`current` or `read`).
    pub workload_reads: BTreeMap<String, f64>,
    /// Objects and JSON bytes per kind, with and without managedFields.
    pub stores: BTreeMap<String, (usize, usize, usize)>,
    /// The controller's Events by reason (each names one transition).
    pub event_reasons: BTreeMap<String, usize>,
    /// (minutes since start, RSS MiB) samples of a soak.
    pub rss_trend: Vec<(f64, f64)>,
}

/// Builds the world, publishes, waits for it to settle, and measures.
pub async fn run(env: &mut TestEnv, sizes: &Sizes) -> Report {
    let hooks = WebhookServer::default();
    let hook = hooks.start().await;
    env.apply(&world(sizes, &hook));
    env.start_controller();
    let started = Instant::now();
    let mut report = Report::default();
    let publisher = publish(env, sizes, &mut report);
    publisher.await;
    settle(env, sizes, started, &mut report).await;
    await_quiet(env, &mut report).await;
    measure_idle(env, sizes, &mut report).await;
    measure(env, &mut report).await;
    report
}

fn stage_yaml(p: usize, s: usize, stages: usize) -> String {
    let name = format!("p{p}-s{s}");
    let requires = match s {
        0 => "[]".to_string(),
        _ => format!("[p{p}-s{}]", s - 1),
    };
    let (gates, strategy) = match (s, s + 1 == stages) {
        (_, true) => (
            "[]".to_string(),
            "  replicas: 2\n  strategy:\n    type: canary\n    canary:\n      steps: [{setWeight: 50}, {pause: {duration: 1s}}]\n".to_string(),
        ),
        (1, _) => (format!("[p{p}-soak]"), String::new()),
        (2, _) => ("[hook]".to_string(), String::new()),
        _ => ("[]".to_string(), String::new()),
    };
    format!(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {{name: {name}}}\nspec:\n  pipeline: p{p}\n  requires: {requires}\n  target: {{name: {name}}}\n  gates: {gates}\n{strategy}"
    )
}

/// Every target, Stage and Gate of the run, as one YAML stream.
fn world(sizes: &Sizes, hook: &str) -> String {
    let mut docs = vec![format!(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {{name: hook}}\nspec:\n  type: webhook\n  webhook: {{url: \"http://{hook}/200/ok\"}}\n"
    )];
    for p in 0..sizes.pipelines {
        docs.push(format!(
            "apiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {{name: p{p}-soak}}\nspec:\n  type: soak\n  soak: {{stage: p{p}-s0, duration: 1s}}\n"
        ));
        for s in 0..sizes.stages {
            docs.push(target_yaml(&format!("p{p}-s{s}")));
            docs.push(stage_yaml(p, s, sizes.stages));
        }
    }
    docs.join("---\n")
}

fn release(i: usize, pipelines: usize) -> Release {
    let (p, version) = (i % pipelines, i / pipelines);
    serde_json::from_value(serde_json::json!({
        "apiVersion": "greenlight.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": format!("p{p}-r{version}")},
        "spec": {"pipeline": format!("p{p}"), "version": format!("{version}"),
                 "artifacts": [{"name": "web", "image": image(&format!("scale-{i}"))}]}
    }))
    .expect("release")
}

/// Publishes the releases one by one (for a soak: for its duration, sampling memory).
async fn publish(env: &TestEnv, sizes: &Sizes, report: &mut Report) {
    let api: Api<Release> = env.api();
    let soak_start = Instant::now();
    let mut i = 0;
    loop {
        let more = match sizes.soak {
            Some(d) => soak_start.elapsed() < d,
            None => i < sizes.releases,
        };
        if !more {
            break;
        }
        if let Err(e) = api
            .create(&PostParams::default(), &release(i, sizes.pipelines))
            .await
        {
            panic!("publishing release {i}: {e}");
        }
        retire(&api, i, sizes).await;
        if sizes.soak.is_some() && i % 120 == 0 {
            let minutes = soak_start.elapsed().as_secs_f64() / 60.0;
            report.rss_trend.push((minutes, env.controller_rss_mib()));
        }
        i += 1;
        tokio::time::sleep(sizes.publish_every).await;
    }
    report.published = i;
}

/// Deletes the release `keep` rounds older than release `i` (of the same pipeline).
async fn retire(api: &Api<Release>, i: usize, sizes: &Sizes) {
    let Some(old) = sizes.keep.and_then(|k| i.checked_sub(k * sizes.pipelines)) else {
        return;
    };
    let name = kube::ResourceExt::name_any(&release(old, sizes.pipelines));
    match api.delete(&name, &Default::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => panic!("retiring release {name}: {e}"),
    }
}

/// Waits until every release is final; records how long that took and how they ended.
async fn settle(env: &TestEnv, sizes: &Sizes, started: Instant, report: &mut Report) {
    let api: Api<Release> = env.api();
    let deadline = Duration::from_secs(1800 + report.published as u64 / 2);
    loop {
        let releases = api
            .list(&ListParams::default())
            .await
            .expect("list releases");
        let phases = phases(&releases.items);
        let waiting = phases.get("NotFinal").copied().unwrap_or(0);
        if waiting == 0 || started.elapsed() > deadline {
            report.settle = started.elapsed();
            report.phases = phases;
            report.newest_not_shipped = newest_not_shipped(&releases.items, sizes);
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn phases(releases: &[Release]) -> BTreeMap<String, usize> {
    let mut phases = BTreeMap::new();
    for r in releases {
        let phase = r.status.as_ref().and_then(|s| s.phase);
        let name = match phase {
            Some(
                p @ (ReleasePhase::Succeeded | ReleasePhase::Failed | ReleasePhase::Superseded),
            ) => {
                format!("{p:?}")
            }
            _ => "NotFinal".to_string(),
        };
        *phases.entry(name).or_default() += 1;
    }
    phases
}

/// The newest release of each pipeline must have reached its last stage.
fn newest_not_shipped(releases: &[Release], sizes: &Sizes) -> Vec<String> {
    let mut newest: BTreeMap<String, &Release> = BTreeMap::new();
    for r in releases {
        let version: usize = r.spec.version.parse().unwrap_or(0);
        let entry = newest.entry(r.spec.pipeline.clone()).or_insert(r);
        if version > entry.spec.version.parse().unwrap_or(0) {
            *entry = r;
        }
    }
    let last = sizes.stages - 1;
    newest
        .into_iter()
        .filter(|(pipeline, r)| {
            let at = r
                .status
                .as_ref()
                .and_then(|s| s.stages.get(&format!("{pipeline}-s{last}")));
            !matches!(
                at.map(|e| format!("{:?}", e.phase)).as_deref(),
                Some("Succeeded")
            )
        })
        .map(|(_, r)| kube::ResourceExt::name_any(r))
        .collect()
}

const WRITES: &str = "greenlight_api_writes_total";

/// A release's phase is written in the middle of a pass, so the pass's last writes (the
/// stage's status, its Events) may follow it: waits until no write has come for `QUIET`,
/// or for at most a minute, which the idle measurement after it would then show.
async fn await_quiet(env: &TestEnv, report: &mut Report) {
    const QUIET: Duration = Duration::from_secs(3);
    let start = Instant::now();
    let first = by_label(&env.metrics().await, WRITES, "kind");
    let mut last = first.clone();
    let mut still = Instant::now();
    while still.elapsed() < QUIET && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = by_label(&env.metrics().await, WRITES, "kind");
        if now != last {
            (last, still) = (now, Instant::now());
        }
    }
    report.trailing_writes = grown(&first, last);
    report.quiet_after = start.elapsed();
}

/// Writes the settled controller makes while nothing changes.
async fn measure_idle(env: &TestEnv, sizes: &Sizes, report: &mut Report) {
    let before = by_label(&env.metrics().await, WRITES, "kind");
    tokio::time::sleep(sizes.idle_for).await;
    let after = by_label(&env.metrics().await, WRITES, "kind");
    report.idle_writes = grown(&before, after);
}

/// What each count gained from `before` to `after`, leaving out those that did not.
fn grown(before: &BTreeMap<String, f64>, after: BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .into_iter()
        .map(|(kind, n)| (kind.clone(), n - before.get(&kind).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n > 0.0)
        .collect()
}

async fn measure(env: &TestEnv, report: &mut Report) {
    let text = env.metrics().await;
    report.writes = by_label(&text, "greenlight_api_writes_total", "kind");
    report.events = report.writes.get("event").copied().unwrap_or(0.0);
    let (d, w) = (
        "greenlight_reconcile_duration_seconds",
        "greenlight_reconcile_queue_wait_seconds",
    );
    for controller in ["stage", "release", "gate", "approval"] {
        let at = [("controller", controller)];
        let count = metric_sum(&text, &format!("{d}_count"), &at) + 0.0;
        let run = |name: &str, q: f64| quantile(&text, name, &at, q);
        let figures = [count, run(d, 0.5), run(d, 0.99), run(w, 0.5), run(w, 0.99)];
        report.latency.insert(controller.to_string(), figures);
        for wrote in ["false", "true"] {
            let at = [("controller", controller), ("wrote", wrote)];
            let count = metric_sum(&text, &format!("{d}_count"), &at) + 0.0;
            let run = |q: f64| quantile(&text, d, &at, q);
            let key = format!("{controller} wrote={wrote}");
            report.passes.insert(key, [count, run(0.5), run(0.99)]);
        }
    }
    report.cpu_seconds = env.controller_cpu_seconds();
    report.rss_mib = env.controller_rss_mib();
    report.peak_rss_mib = env.controller_peak_rss_mib();
    report.workload_reads = by_label(&text, "greenlight_workload_reads_total", "outcome");
    report.apiserver = apiserver_requests(env);
    report.apiserver_latency = apiserver_latency(env);
    store_sizes(env, report).await;
}

/// Sums of `name` by the value of `label`.
fn by_label(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(&format!("{name}{{"))) {
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        let key = line
            .split(&format!("{label}=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next());
        if let (Some(key), Some(value)) = (key, value) {
            *sums.entry(key.to_string()).or_default() += value;
        }
    }
    sums
}

/// The upper bound of the histogram bucket holding quantile `q` (Prometheus's convention).
/// Series with every label in `at` are added together, bucket by bucket.
fn quantile(text: &str, name: &str, at: &[(&str, &str)], q: f64) -> f64 {
    let prefix = format!("{name}_bucket{{");
    let mut sums: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let lines = text.lines().filter(|l| {
        l.starts_with(&prefix) && at.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
    });
    for (le, n) in lines.filter_map(|l| {
        let le = l.split("le=\"").nth(1)?.split('"').next()?;
        Some((le.to_string(), l.rsplit(' ').next()?.parse::<f64>().ok()?))
    }) {
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::NAN)
        };
        sums.entry(le).or_insert((bound, 0.0)).1 += n;
    }
    let mut buckets: Vec<(f64, f64)> = sums.into_values().filter(|b| !b.0.is_nan()).collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    let rank = q * total;
    buckets
        .iter()
        .find(|(_, cumulative)| *cumulative >= rank && total > 0.0)
        .map_or(0.0, |(le, _)| *le)
}

/// The apiserver's request counts by verb and resource (its own `/metrics`).
fn apiserver_requests(env: &TestEnv) -> BTreeMap<String, f64> {
    let text = env.cp.kubectl(&["get", "--raw", "/metrics"]);
    let mut sums = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let field = |key: &str| {
            line.split(&format!("{key}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_default()
                .to_string()
        };
        let (verb, resource, sub) = (field("verb"), field("resource"), field("subresource"));
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let key = match sub.as_str() {
            "" => format!("{verb} {resource}"),
            _ => format!("{verb} {resource}/{sub}"),
        };
        *sums.entry(key).or_default() += value;
    }
    sums
}

/// The apiserver's mean request duration by verb, from its histogram's sums and counts
/// (watches excluded: they last as long as they are open).
fn apiserver_latency(env: &TestEnv) -> BTreeMap<String, f64> {
    let text = env.cp.kubectl(&["get", "--raw", "/metrics"]);
    let sum = by_label(&text, "apiserver_request_duration_seconds_sum", "verb");
    let count = by_label(&text, "apiserver_request_duration_seconds_count", "verb");
    sum.into_iter()
        .filter(|(verb, _)| verb != "WATCH" && verb != "CONNECT")
        .filter_map(|(verb, s)| Some((verb.clone(), s / count.get(&verb).filter(|n| **n > 0.0)?)))
        .collect()
}

/// What each kind weighs, as the apiserver serves it: objects, and their JSON with and without
/// managedFields (kubectl 1.20 shows them; the index drops them).
async fn store_sizes(env: &TestEnv, report: &mut Report) {
    for kind in [
        "releases",
        "stages",
        "gates",
        "deployments",
        "events",
        "pods",
    ] {
        let json = env.cp.kubectl(&["get", kind, "-n", &env.ns, "-o", "json"]);
        let list: serde_json::Value = serde_json::from_str(&json).expect("list json");
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let whole: usize = items.iter().map(|i| i.to_string().len()).sum();
        let lean: usize = items
            .iter()
            .map(|i| {
                let mut i = i.clone();
                if let Some(m) = i["metadata"].as_object_mut() {
                    m.remove("managedFields");
                }
                i.to_string().len()
            })
            .sum();
        if kind == "events" {
            // kubectl lists core/v1 Events, where events.k8s.io's reportingController is
            // reportingComponent.
            let operator = |i: &&serde_json::Value| {
                let ours = greenlight::controller::writer::REPORTING_CONTROLLER;
                i["reportingComponent"] == ours || i["reportingController"] == ours
            };
            for item in items.iter().filter(operator) {
                let reason = item["reason"].as_str().unwrap_or_default().to_string();
                *report.event_reasons.entry(reason).or_default() += 1;
            }
        }
        report
            .stores
            .insert(kind.to_string(), (items.len(), whole, lean));
    }
}

/// The report, as `make bench-scale` prints it.
pub fn print(sizes: &Sizes, r: &Report) {
    println!(
        "scale: {} pipelines x {} stages, {} releases published",
        sizes.pipelines, sizes.stages, r.published
    );
    println!(
        "  settled in {:.0} s: {:?}",
        r.settle.as_secs_f64(),
        r.phases
    );
    println!(
        "  newest release of a pipeline not shipped: {}",
        r.newest_not_shipped.len()
    );
    println!(
        "  operator CPU {:.1} s; RSS {:.0} MiB after settling, peak {:.0} MiB",
        r.cpu_seconds, r.rss_mib, r.peak_rss_mib
    );
    for (c, [n, p50, p99, w50, w99]) in &r.latency {
        println!(
            "  reconcile {c:<8} {n:>8.0} runs, p50 {:>6.1} ms, p99 {:>6.1} ms; queue wait p50 {:>6.1} ms, p99 {:>7.1} ms",
            p50 * 1e3,
            p99 * 1e3,
            w50 * 1e3,
            w99 * 1e3
        );
    }
    for (key, [n, p50, p99]) in r.passes.iter().filter(|(_, [n, ..])| *n > 0.0) {
        println!(
            "    {key:<20} {n:>8.0} passes, p50 {:>6.1} ms, p99 {:>6.1} ms",
            p50 * 1e3,
            p99 * 1e3
        );
    }
    let total: f64 = r.writes.values().sum();
    let per = |n: f64, of: usize| n / of.max(1) as f64;
    let stages = sizes.pipelines * sizes.stages;
    println!(
        "  API writes {total:.0}: {:.1} per release, {:.1} per stage",
        per(total, r.published),
        per(total, stages)
    );
    for (kind, n) in &r.writes {
        println!(
            "    {kind:<20} {n:>9.0}  {:>6.2} per release",
            per(*n, r.published)
        );
    }
    println!(
        "  writes after the last release was final, until quiet ({:.1} s): {:?}",
        r.quiet_after.as_secs_f64(),
        r.trailing_writes
    );
    println!(
        "  writes while idle for {} s: {:?}",
        sizes.idle_for.as_secs(),
        r.idle_writes
    );
    print_reads(r);
    print_events(r);
}

/// What the operator read, and what the apiserver served.
fn print_reads(r: &Report) {
    let (current, read) = (
        r.workload_reads.get("current").copied().unwrap_or(0.0),
        r.workload_reads.get("read").copied().unwrap_or(0.0),
    );
    println!(
        "  workload reads: {current:.0} current without a GET, {read:.0} read ({:.0}% without a GET)",
        100.0 * current / (current + read).max(1.0)
    );
    let latency: Vec<String> = (r.apiserver_latency.iter())
        .map(|(verb, s)| format!("{verb} {:.1}", s * 1e3))
        .collect();
    println!("  apiserver mean ms by verb: {}", latency.join(", "));
    let mut busiest: Vec<_> = r.apiserver.iter().filter(|(_, n)| **n >= 1.0).collect();
    busiest.sort_by(|a, b| b.1.total_cmp(a.1));
    // A 1.20 apiserver counts a GET of one custom resource under LIST.
    println!("  apiserver requests (top 12 of {}):", busiest.len());
    for (key, n) in busiest.iter().take(12) {
        println!("    {key:<40} {n:>9.0}");
    }
    for (kind, (n, whole, lean)) in &r.stores {
        println!(
            "  {kind:<12} {n:>6} objects, {:>7.1} MiB as JSON, {:>7.1} MiB without managedFields",
            *whole as f64 / 1048576.0,
            *lean as f64 / 1048576.0
        );
    }
}

/// The controller's Events by reason, and a soak's RSS trend.
fn print_events(r: &Report) {
    let per = |n: f64, of: usize| n / of.max(1) as f64;
    let mut reasons: Vec<_> = r.event_reasons.iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1));
    println!("  Events by reason:");
    for (reason, n) in reasons {
        println!(
            "    {reason:<24} {n:>9}  {:>6.2} per release",
            per(*n as f64, r.published)
        );
    }
    for (minutes, rss) in &r.rss_trend {
        println!("  soak: {minutes:>5.1} min  RSS {rss:.0} MiB");
    }
}
