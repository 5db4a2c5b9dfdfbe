//! The fence at landing, end to end: a leader whose requests reach the apiserver 10 s late
//! (a proxy between them holds what it sends) loses the lease to the standby, and nothing it
//! sent meanwhile lands on an object after the new leader's first write of it: what it had
//! prepared never overtakes the new leader's decisions. (On an object the new leader has not
//! written yet, a late write is as if it had arrived before the takeover, and the new leader
//! decides on it.) The two replicas write as users of their own, and the apiserver's audit log
//! tells whose write landed when.

use std::time::{Duration, Instant};

use greenlight::api::Release;
use jiff::Timestamp;
use kube::api::PostParams;

use crate::env::{TestEnv, image, target_yaml};
use crate::support::audit::{self, Write};
use crate::support::controlplane::REPLICA_USERS;
use crate::support::delay::Delay;

const WAIT: Duration = Duration::from_secs(120);
/// How late the leader's requests reach the apiserver.
const DELAY: Duration = Duration::from_secs(10);
/// Pipelines `p<i>` of one stage `s<i>` each. The first [`WINDOWED`] run release 1 when a
/// deny window closes them, and release 2 waits for the window to end, just after the delay
/// begins: the leader then starts it from what it knows, with no read first (its first
/// write is the primary's), and release 3 follows for the new leader to roll out. The
/// others get release 1 as the delay begins: the leader writes the new releases' status.
/// Both kinds of write are sent, and held.
const PIPELINES: usize = 6;
const WINDOWED: usize = 4;

/// The stages and their targets; with `window_end` (a whole second), the first
/// [`WINDOWED`] stages are closed until then.
fn pipelines(window_end: Option<Timestamp>) -> String {
    let window = window_end.map_or_else(String::new, |end| {
        // Opened at the top of this minute.
        let opened = Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
        let opened = opened.with().second(0).subsec_nanosecond(0).build().unwrap();
        let seconds = end.duration_since(opened.timestamp()).as_secs();
        format!(
            "  windows:\n  - {{kind: deny, schedule: \"{} {} * * *\", duration: {seconds}s, timeZone: UTC, reason: freeze}}\n",
            opened.minute(),
            opened.hour()
        )
    });
    let stage = |i: usize| {
        format!(
            "apiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {{name: s{i}}}\nspec:\n  pipeline: p{i}\n  target: {{name: web-{i}}}\n{}",
            if i <= WINDOWED { window.as_str() } else { "" }
        )
    };
    (1..=PIPELINES)
        .flat_map(|i| [target_yaml(&format!("web-{i}")), stage(i)])
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Waits until replica `replica` leads.
async fn until_leading(env: &TestEnv, replica: usize) {
    let port = env.replicas[replica].metrics_port;
    env.wait_for("the replica to lead", WAIT, || async {
        match TestEnv::leads(port).await {
            true => Ok(()),
            false => Err("standing by".to_string()),
        }
    })
    .await;
}

/// Replica A reaches the apiserver through `proxy` and leads; replica B reaches it directly
/// and stands by, having seen A renew. Their indices in `env.replicas`.
async fn a_leads_behind_the_proxy_and_b_stands_by(
    env: &mut TestEnv,
    proxy: &Delay,
) -> (usize, usize) {
    let [user_a, user_b] = REPLICA_USERS;
    let (config_a, config_b) = (env.dir.join("kubeconfig-a"), env.dir.join("kubeconfig-b"));
    env.cp
        .write_replica_kubeconfig(user_a, &proxy.url(), &config_a);
    env.cp
        .write_replica_kubeconfig(user_b, &env.cp.server, &config_b);
    let a = env.start_replica_as(&config_a);
    until_leading(env, a).await;
    let b = env.start_replica_as(&config_b);
    let url = format!("http://127.0.0.1:{}/metrics", env.replicas[b].metrics_port);
    env.wait_for("B to stand by", WAIT, || async {
        let text = reqwest::get(&url).await.map_err(|e| e.to_string())?;
        let text = text.text().await.map_err(|e| e.to_string())?;
        match text.lines().any(|l| l.trim() == "greenlight_leader 0") {
            true => Ok(()),
            false => Err(text),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    (a, b)
}

/// Publishes release `p<i>-v<version>` to each pipeline of `pipelines` at once.
async fn publish(env: &TestEnv, pipelines: std::ops::RangeInclusive<usize>, version: u32) {
    let api = env.api::<Release>();
    let creates = pipelines.map(|i| {
        let release: Release = serde_json::from_value(serde_json::json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": format!("p{i}-v{version}")},
            "spec": {"pipeline": format!("p{i}"), "version": version.to_string(),
                     "artifacts": [{"name": "web", "image": image(&format!("fence-p{i}-v{version}"))}]},
        }))
        .expect("a release");
        let api = api.clone();
        async move { api.create(&PostParams::default(), &release).await }
    });
    for created in futures::future::join_all(creates).await {
        created.expect("create a release");
    }
}

/// Waits until release `p<i>-v<version>` is at `phase` at stage `s<i>`, for each of
/// `pipelines`.
async fn until_released(
    env: &TestEnv,
    pipelines: std::ops::RangeInclusive<usize>,
    version: u32,
    phase: &str,
) {
    for i in pipelines {
        let (release, stage) = (format!("p{i}-v{version}"), format!("s{i}"));
        env.wait_release_stage(&release, &stage, phase, WAIT).await;
    }
}

/// Closes the windowed stages until about 25 s from now (room for a loaded machine to see
/// them hold release 2 first); returns when they open again.
fn close_the_windowed_stages(env: &TestEnv) -> Timestamp {
    let in_25s = Timestamp::now() + Duration::from_secs(25);
    let window_end = Timestamp::from_second(in_25s.as_second()).unwrap();
    env.apply(&pipelines(Some(window_end)));
    window_end
}

/// Waits until the windowed stages' release 2 waits for the window to end.
async fn until_the_windows_hold_release_2(env: &TestEnv) {
    env.wait_for("the windows to hold release 2", WAIT, || async {
        for i in 1..=WINDOWED {
            let release = env.release(&format!("p{i}-v2")).await;
            let entry = release
                .status
                .and_then(|s| s.stages.get(&format!("s{i}")).cloned());
            if entry.as_ref().and_then(|e| e.reason.as_deref()) != Some("BlockedByWindow") {
                return Err(format!("p{i}-v2 at s{i}: {entry:?}"));
            }
        }
        Ok(())
    })
    .await;
}

/// Sleeps until `at`, which must still be ahead.
async fn sleep_until(at: Timestamp) {
    let wait = at.duration_since(Timestamp::now());
    assert!(wait.is_positive(), "set up too slowly: {wait:?} late");
    tokio::time::sleep(wait.unsigned_abs()).await;
}

/// Waits until replica `replica` has exited; when it was seen gone.
async fn exit_of(env: &mut TestEnv, replica: usize) -> Instant {
    let started = Instant::now();
    while env.replicas[replica].proc.is_running() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the deposed leader still runs"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Instant::now()
}

pub async fn no_write_from_a_deposed_leader_lands_after_the_new_leaders_first_write(
    mut env: TestEnv,
) {
    env.lease_timing = ("4s", "1s");
    env.apply(&pipelines(None));
    let apiserver = env.cp.server.trim_start_matches("https://").parse();
    let proxy = Delay::start(apiserver.expect("the apiserver's address")).await;
    let (a, b) = a_leads_behind_the_proxy_and_b_stands_by(&mut env, &proxy).await;
    publish(&env, 1..=WINDOWED, 1).await;
    until_released(&env, 1..=WINDOWED, 1, "Succeeded").await;
    let window_end = close_the_windowed_stages(&env);
    publish(&env, 1..=WINDOWED, 2).await;
    until_the_windows_hold_release_2(&env).await;
    sleep_until(window_end - Duration::from_millis(700)).await;
    proxy.hold(DELAY);
    let held = Timestamp::now();
    publish(&env, WINDOWED + 1..=PIPELINES, 1).await;
    // A has sent release 2's primaries (held); the new leader is to roll out release 3.
    sleep_until(window_end + Duration::from_millis(500)).await;
    publish(&env, 1..=WINDOWED, 3).await;
    until_leading(&env, b).await;
    let exited = exit_of(&mut env, a).await;
    until_released(&env, 1..=WINDOWED, 3, "Succeeded").await;
    until_released(&env, WINDOWED + 1..=PIPELINES, 1, "Succeeded").await;
    // All A sent was read before it exited, and so has reached the apiserver by DELAY later.
    tokio::time::sleep_until((exited + DELAY + Duration::from_secs(3)).into()).await;
    let _ = std::fs::copy(env.cp.audit_log(), env.dir.join("audit.log"));
    judge(&audit::writes(&env.cp.audit_log(), &env.ns), held);
}

/// No write of A's lands (2xx) on an object after B's first write of that object: a write
/// prepared by the deposed leader never overtakes the new leader's. Some of A's writes must
/// have reached such an object late (not counting the Lease, which B's takeover always
/// contests, nor Events), or the case could not have failed.
fn judge(writes: &[Write], held: Timestamp) {
    let [user_a, user_b] = REPLICA_USERS;
    let mut firsts = std::collections::BTreeMap::<(&str, &str), Timestamp>::new();
    for w in writes.iter().filter(|w| w.user == user_b && w.succeeded()) {
        let first = firsts.entry((&w.resource, &w.name)).or_insert(w.completed);
        *first = (*first).min(w.completed);
    }
    let first = writes
        .iter()
        .filter(|w| w.user == user_b && w.succeeded())
        .min_by_key(|w| w.completed)
        .expect("the new leader wrote nothing");
    let of_a = writes.iter().filter(|w| w.user == user_a);
    let released: Vec<&Write> = of_a.clone().filter(|w| w.received > held).collect();
    let after_b = |w: &&Write, at: fn(&Write) -> Timestamp| {
        firsts
            .get(&(w.resource.as_str(), w.name.as_str()))
            .is_some_and(|b| at(w) > *b)
    };
    let contested: Vec<&Write> = released
        .iter()
        .filter(|w| !matches!(w.resource.as_str(), "leases" | "events"))
        .filter(|w| after_b(w, |w| w.received))
        .copied()
        .collect();
    let landed: Vec<&Write> = of_a
        .filter(|w| w.succeeded() && after_b(w, |w| w.completed))
        .collect();
    let stored = landed.iter().filter(|w| w.stored(writes)).count();
    let summary = summary(&released, &landed, first, held);
    eprintln!(
        "{summary}; {} reached an object the new leader had written; {stored} of the 2xx stored a new version",
        contested.len()
    );
    assert!(
        !contested.is_empty(),
        "no write of the deposed leader reached an object after the new leader wrote it: {writes:#?}"
    );
    let details: Vec<String> = landed.iter().map(|w| detail(w, first, writes)).collect();
    assert!(
        landed.is_empty(),
        "{} writes of the deposed leader landed on objects after the new leader's first write of them:\n{}",
        landed.len(),
        details.join("\n")
    );
}

/// `+1.2s`: how long after `since`.
fn after(t: Timestamp, since: Timestamp) -> String {
    format!("{:+.1}s", t.duration_since(since).as_secs_f64())
}

/// When B first wrote, and what became of A's writes that were held.
fn summary(released: &[&Write], landed: &[&Write], first: &Write, held: Timestamp) -> String {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for w in released {
        *kinds
            .entry(format!("{} {} {}", w.verb, w.resource, w.code))
            .or_default() += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} x{n}")).collect();
    let completed = |ws: &[&Write]| match (ws.first(), ws.last()) {
        (Some(x), Some(y)) => format!(
            "T{}..T{}",
            after(x.completed, first.completed),
            after(y.completed, first.completed)
        ),
        _ => "-".into(),
    };
    format!(
        "fence at landing: hold of {DELAY:?} at H; B's first write T = H{} ({}); A's writes held and released: {} ({}), answered {}; A's 2xx on an object after B's first write of it: {} ({})",
        after(first.completed, held),
        first.describe(),
        released.len(),
        kinds.join(", "),
        completed(released),
        landed.len(),
        completed(landed),
    )
}

/// A landed write: what, when, whether it stored something, and what it sent.
fn detail(w: &Write, first: &Write, writes: &[Write]) -> String {
    let mut sent = w.request.to_string();
    sent.truncate(400);
    let stored = match w.stored(writes) {
        true => "stored a new version",
        false => "changed nothing",
    };
    format!(
        "  {} received T{} answered T{}, resourceVersion {:?}: {stored}; sent {sent}",
        w.describe(),
        after(w.received, first.completed),
        after(w.completed, first.completed),
        w.version,
    )
}
