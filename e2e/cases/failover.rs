//! Two controllers elect a leader on a Lease: the standby takes a canary over from a killed
//! leader without repeating a step, a terminated leader gives its lease up, and
//! a leader paused past its lease writes nothing when it resumes.

use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;

use super::canary::{STEPS, image, start_bed_with};
use crate::env::{TestEnv, release_yaml};

const WAIT: Duration = Duration::from_secs(120);
/// The tests' lease duration (`--leader-election-lease-duration 6s`).
const LEASE: Duration = Duration::from_secs(6);

/// Waits until the controller serving `metrics_port` leads; returns how long that took.
async fn until_leading(env: &TestEnv, metrics_port: u16, since: Instant) -> Duration {
    env.wait_for("a new leader", WAIT, || async {
        match TestEnv::leads(metrics_port).await {
            true => Ok(since.elapsed()),
            false => Err("standing by".to_string()),
        }
    })
    .await
}

/// Waits until the controller on `metrics_port` is up: it then runs its election loop.
async fn serving_metrics(env: &TestEnv, metrics_port: u16) {
    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    env.wait_for("the replica to serve its metrics", WAIT, || async {
        match reqwest::get(&url).await {
            Ok(r) if r.status().is_success() => Ok(()),
            other => Err(format!("{:?}", other.map(|r| r.status()))),
        }
    })
    .await;
}

/// How a process ended; waits up to 30 s.
async fn exit_of(child: &mut std::process::Child) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "still running");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Events about Release `release` with `reason`.
async fn release_events(env: &TestEnv, release: &str, reason: &str) -> Vec<Event> {
    env.events(reason)
        .await
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(release))
        .collect()
}

pub async fn a_standby_finishes_a_canary_when_the_leader_is_killed_and_takes_over_on_sigterm(
    mut env: TestEnv,
) {
    env.leader_election = true;
    let (v1, v2) = (image("healthy", "v1"), image("healthy", "v2-failover"));
    let bed = start_bed_with(&mut env, &v1, &[&v2], STEPS, |w| w).await;
    assert!(
        TestEnv::leads(env.metrics_port).await,
        "the first controller leads"
    );
    let standby = env.start_replica();
    env.apply(&release_yaml("v2", "shop", "2", &v2));
    env.wait_for("the canary in its analysis at 25%", WAIT, || async {
        match bed.load.weights_seen().contains(&25) {
            true => Ok(()),
            false => Err(format!("{:?}", bed.load.weights_seen())),
        }
    })
    .await;
    let last = env.leader_lease(&env.ns).await;
    let killed = Instant::now();
    env.kill_controller();
    let port = env.replicas[standby].metrics_port;
    let took_over = until_leading(&env, port, killed).await;
    crate::support::figures::record("take-over after the leader's SIGKILL, 6 s lease", took_over);
    // A killed leader renews no more: the standby takes over once the lease has run out, never
    // while it could still be renewed, and not several lease durations later.
    let acquired = env.leader_lease(&env.ns).await.acquire_time.unwrap().0;
    let expiry = last.renew_time.unwrap().0 + jiff::SignedDuration::try_from(LEASE).unwrap();
    assert!(
        acquired >= expiry,
        "taken at {acquired}, the lease ran to {expiry}"
    );
    assert!(took_over < LEASE * 3, "took over after {took_over:?}");
    env.wait_release_stage("v2", "prod", "Succeeded", WAIT)
        .await;
    let seen = bed.load.weights_seen();
    let (last, rising) = seen.split_last().unwrap();
    assert!(
        rising.windows(2).all(|w| w[0] < w[1]) && *last == 0,
        "weights never went backwards: {seen:?}"
    );
    let started = release_events(&env, "v2", "RolloutStarted").await;
    assert_eq!(started.len(), 1, "one RolloutStarted: {started:?}");

    // A standby again; then the leader is terminated and hands over at once.
    let next = env.start_replica();
    serving_metrics(&env, env.replicas[next].metrics_port).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = env.replicas[standby].proc.child.id();
    let (handed_over, early) = env.terminate_leader(&env.ns, pid).await;
    crate::support::figures::record("hand-over after the leader's SIGTERM", handed_over);
    assert!(
        early.is_positive(),
        "the next leader waited for the lease to run out ({handed_over:?}): it was not given up"
    );
    until_leading(&env, env.replicas[next].metrics_port, Instant::now()).await;
    let status = exit_of(&mut env.replicas[standby].proc.child).await;
    assert!(
        status.success(),
        "a terminated leader exits cleanly: {status:?}"
    );
}

/// A leader stopped (SIGSTOP) for longer than its lease loses it to the standby; resumed, it
/// finds its lease expired on its own clock, writes nothing, and exits.
pub async fn a_leader_paused_past_its_lease_writes_nothing_when_it_resumes(mut env: TestEnv) {
    env.leader_election = true;
    let (v1, v2) = (image("healthy", "v1"), image("healthy", "v2-paused"));
    let _bed = start_bed_with(&mut env, &v1, &[&v2], STEPS, |w| w).await;
    let standby = env.start_replica();
    // The webhooks are served by the leader about to be paused: take them away.
    let webhooks = format!("greenlight-{}", env.ns);
    for kind in [
        "mutatingwebhookconfiguration",
        "validatingwebhookconfiguration",
    ] {
        env.cp.kubectl(&["delete", kind, &webhooks]);
    }
    let leader = env.controller_pid().expect("the leader runs");
    TestEnv::signal(leader, "STOP");
    let stopped = Instant::now();
    until_leading(&env, env.replicas[standby].metrics_port, stopped).await;
    env.apply(&release_yaml("v2", "shop", "2", &v2));
    env.wait_release_stage("v2", "prod", "Succeeded", WAIT)
        .await;
    let resumed = jiff::Timestamp::now();
    let before = env.controller_log().len();
    TestEnv::signal(leader, "CONT");
    let started = Instant::now();
    while env.controller_running() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the resumed leader still runs"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = env.controller_log();
    let after = &log[before.min(log.len())..];
    assert!(after.contains("stopped leading"), "{after}");
    for write in ["server-side apply", "traffic weight set"] {
        assert!(!after.contains(write), "the resumed leader wrote: {after}");
    }
    let events = kube::Api::<Event>::namespaced(env.client.clone(), &env.ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let late: Vec<&Event> = events
        .iter()
        .filter(|e| e.reporting_instance.as_deref() == Some("controller-1"))
        .filter(|e| e.event_time.as_ref().is_some_and(|t| t.0 > resumed))
        .collect();
    assert!(late.is_empty(), "the resumed leader wrote: {late:?}");
}

/// dev and test (rolling) in front of the canary `prod` of the bed's world.
fn three_stages(world: String) -> String {
    let gated = world.replace(
        "  pipeline: shop\n  target: {name: web}\n",
        "  pipeline: shop\n  requires: [test]\n  target: {name: web}\n",
    );
    let stage = |name: &str, requires: &str| {
        format!(
            "---\n{}---\napiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {{name: {name}}}\nspec:\n  pipeline: shop\n  requires: [{requires}]\n  target: {{name: web-{name}}}\n",
            crate::env::target_yaml(&format!("web-{name}"))
        )
    };
    format!("{gated}\n{}{}", stage("dev", ""), stage("test", "dev"))
}

/// Kills whichever controller leads (SIGKILL) and starts a new standby; false when none led.
async fn kill_the_leader(env: &mut TestEnv) -> bool {
    if env.controller_running() && TestEnv::leads(env.metrics_port).await {
        env.kill_controller();
        env.start_replica();
        return true;
    }
    for i in 0..env.replicas.len() {
        if env.replicas[i].proc.is_running() && TestEnv::leads(env.replicas[i].metrics_port).await {
            env.replicas[i].proc.kill();
            env.start_replica();
            return true;
        }
    }
    false
}

/// Like Knative's chaosduck: while a release goes through dev, test and a canary prod, the
/// leader is killed every 10 s. The release gets through, each stage's rollout is started and
/// finished once in its audit trail, and its weights never go backwards.
pub async fn a_pipeline_gets_through_while_its_leader_is_killed_every_ten_seconds(
    mut env: TestEnv,
) {
    use greenlight::api::release::AuditAction;
    env.leader_election = true;
    let (v1, v2) = (image("healthy", "v1"), image("healthy", "v2-chaos"));
    let bed = start_bed_with(&mut env, &v1, &[&v2], STEPS, three_stages).await;
    env.start_replica();
    env.apply(&release_yaml("v2", "shop", "2", &v2));
    let started = Instant::now();
    let mut kills = 0;
    loop {
        let r = env.release("v2").await;
        let prod = r
            .status
            .as_ref()
            .and_then(|s| s.stages.get("prod").cloned());
        if prod.is_some_and(|e| format!("{:?}", e.phase) == "Succeeded") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "{:?}",
            r.status
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        kills += usize::from(kill_the_leader(&mut env).await);
    }
    eprintln!("the leader was killed {kills} times on the way");
    assert!(kills >= 2, "the leader was killed {kills} times");
    let audit = env.release("v2").await.status.unwrap().audit;
    for stage in ["dev", "test", "prod"] {
        for action in [AuditAction::RolloutStarted, AuditAction::Promoted] {
            let n = audit
                .iter()
                .filter(|e| e.stage == stage && e.action == action)
                .count();
            assert_eq!(n, 1, "{action:?} at {stage} recorded {n} times: {audit:?}");
        }
    }
    let seen = bed.load.weights_seen();
    let (last, rising) = seen.split_last().unwrap();
    assert!(
        rising.windows(2).all(|w| w[0] < w[1]) && *last == 0,
        "{seen:?}"
    );
}

/// Anyone who may write the Lease can name a holder that never renews, for 68 years. The
/// leader steps down and exits; the standby honours only its own lease duration, so it takes
/// over after one, and meanwhile its metric tells how long no one has renewed the lease.
pub async fn a_hijacked_lease_is_taken_back_after_the_operators_own_lease_duration(
    mut env: TestEnv,
) {
    env.leader_election = true;
    env.start_controller();
    let leader_port = env.metrics_port;
    until_leading(&env, leader_port, Instant::now()).await;
    let standby = env.start_replica();
    let standby_port = env.replicas[standby].metrics_port;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let renew = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.000000Z");
    let hijack = format!(
        r#"{{"spec":{{"holderIdentity":"ghost","leaseDurationSeconds":2147483647,"renewTime":"{renew}"}}}}"#
    );
    env.cp.kubectl(&[
        "patch",
        "lease",
        "greenlight-controller",
        "-n",
        &env.ns,
        "--type=merge",
        "-p",
        &hijack,
    ]);
    let hijacked = Instant::now();
    let silence = "greenlight_leader_lease_silence_seconds";
    let loudest = std::sync::Arc::new(std::sync::Mutex::new(0f64));
    let took = env
        .wait_for("the standby to take the lease back", WAIT, || {
            let url = format!("http://127.0.0.1:{standby_port}/metrics");
            let loudest = loudest.clone();
            async move {
                let text = reqwest::get(&url)
                    .await
                    .map_err(|e| e.to_string())?
                    .text()
                    .await;
                let text = text.map_err(|e| e.to_string())?;
                let heard = crate::env::metric_sum(&text, silence, &[]);
                let mut loudest = loudest.lock().unwrap();
                *loudest = loudest.max(heard);
                match text.lines().any(|l| l.trim() == "greenlight_leader 1") {
                    true => Ok(hijacked.elapsed()),
                    false => Err("standing by".to_string()),
                }
            }
        })
        .await;
    let loudest = *loudest.lock().unwrap();
    println!(
        "hijacked lease: taken back after {took:?}; the standby's {silence} reached {loudest:.1}"
    );
    assert!(
        took >= LEASE - Duration::from_secs(1),
        "the ghost was not waited for: {took:?}"
    );
    assert!(
        took < LEASE * 5,
        "the ghost's 68 years were honoured: {took:?}"
    );
    assert!(loudest >= 3.0, "the silence was not told: {loudest}");
    assert!(!env.controller_running() || !TestEnv::leads(leader_port).await);
}

/// A tenant granted Leases in the operator's namespace cannot name another holder of the
/// leader Lease, nor delete it: only the operator's own user may (`--lease-writer`).
pub async fn a_tenant_who_may_write_leases_cannot_touch_the_leader_lease(mut env: TestEnv) {
    env.leader_election = true;
    env.extra_args = vec![
        "--lease-writer".into(),
        crate::support::controlplane::OPERATOR_USER.into(),
    ];
    env.start_admitted_controller().await;
    until_leading(&env, env.metrics_port, Instant::now()).await;
    env.apply("apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: lease-writer}\nrules:\n- {apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, list, update, patch, delete]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: lease-writer}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: lease-writer}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: erin}]\n");
    let hijack = r#"{"spec":{"holderIdentity":"ghost","leaseDurationSeconds":2147483647}}"#;
    let patched = env.kubectl_as(
        "erin",
        &[
            "patch",
            "lease",
            "greenlight-controller",
            "--type=merge",
            "-p",
            hijack,
        ],
        "",
    );
    let said = String::from_utf8_lossy(&patched.stderr).into_owned();
    assert!(!patched.status.success(), "erin moved the lease");
    assert!(
        said.contains("only greenlight-operator may change or delete it"),
        "{said}"
    );
    let deleted = env.kubectl_as("erin", &["delete", "lease", "greenlight-controller"], "");
    assert!(!deleted.status.success(), "erin deleted the lease");
    tokio::time::sleep(LEASE).await;
    assert!(
        TestEnv::leads(env.metrics_port).await,
        "the operator still leads"
    );
}
