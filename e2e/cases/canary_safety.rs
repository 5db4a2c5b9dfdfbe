//! Canary safety in the closed loop: the bake watches what serves, missing data never
//! completes a rollout, traffic only reaches serving pods, scale-down drains, and a weight
//! someone else changes is put back. Each case asserts what a user watching would see, with
//! the load generator acting as a data plane that applies route changes half a second late
//! and counts every request sent to a workload with no available pods.

use std::time::{Duration, Instant};

use greenlight::api::canary::{CanaryPhase, CanaryProgress};
use jiff::{SignedDuration, Timestamp};

use super::canary::{
    Bed, first_sample_above_zero, image, route_canary_weight, start_bed_with,
    wait_traffic_on_primary, without_background_analysis,
};
use crate::env::{TestEnv, release_yaml};
use crate::support::kubelet::Hold;

/// One step to half the traffic, a short analysis, then promotion.
const FAST: &str = "      - setWeight: 50
      - analysis: {gates: [error-rate], interval: 2s, count: 2, failureLimit: 2, initialDelay: 3s}
";

const WAIT: Duration = Duration::from_secs(90);

/// The canary's progress once it is in `phase` (and, for a paused one, whether it was
/// promoted already).
async fn wait_phase(env: &TestEnv, phase: CanaryPhase, baking: bool) -> CanaryProgress {
    env.wait_for(&format!("the canary {phase:?}"), WAIT, || async {
        let s = env.stage("prod").await.status.unwrap_or_default();
        match s.rollout.and_then(|r| r.canary) {
            Some(c) if c.phase == phase && c.baking_since.is_some() == baking => Ok(c),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

fn bake(seconds: u32) -> impl Fn(String) -> String {
    move |world| world.replace("bake: 4s", &format!("bake: {seconds}s"))
}

/// Prometheus goes away during the bake and comes back; then the promoted release degrades.
/// The bake, paused meanwhile, still watches the primary and rolls it back in time.
pub async fn a_paused_bake_still_watches_the_promoted_release_and_rolls_it_back(mut env: TestEnv) {
    let (v1, v2) = (image("healthy", "v1"), image("healthy", "v2-degrades"));
    let mut bed = start_bed_with(&mut env, &v1, &[&v2], FAST, bake(120)).await;
    env.apply(&release_yaml("v2", "shop", "2", &v2));
    wait_phase(&env, CanaryPhase::Baking, true).await;
    bed.prometheus.stop();
    let paused = wait_phase(&env, CanaryPhase::Paused, true).await;
    assert!(paused.inconclusive_since.is_some(), "{paused:?}");
    let said = env.stage("prod").await.status.unwrap().message.unwrap();
    assert!(said.contains("paused while baking"), "{said}");
    bed.prometheus.restart();
    wait_phase(&env, CanaryPhase::Baking, true).await;
    env.wait_event("AnalysisResumed").await;
    let degraded = Timestamp::now();
    bed.apps.degrade(&v2).await;
    env.wait_release_stage("v2", "prod", "Failed", WAIT).await;
    let noticed = Timestamp::now();
    let first_bad = first_sample_above_zero(
        &bed.prometheus.url,
        r#"sum(http_requests_total{workload="web-primary",code="500"})"#,
        degraded,
    )
    .await;
    // Quiet, it is interval × failureLimit + interval (`make bench` prints it). The bound is
    // the behaviour: the bake, 120 s long, does not run to its end with a failing release.
    let took = noticed.duration_since(first_bad);
    let figure = Duration::try_from(took).unwrap_or_default();
    crate::support::figures::record("rollback after the first bad sample while baking", figure);
    assert!(
        took < SignedDuration::from_secs(30),
        "rolled back {took:#} after the first bad sample"
    );
    assert_eq!(env.images("web-primary").await, vec![v1]);
}

/// Prometheus is stopped just before the bake ends: the rollout does not succeed on missing
/// data. When the data returns, it completes without baking again from the start.
pub async fn a_bake_missing_its_last_data_waits_and_completes_when_the_data_returns(
    mut env: TestEnv,
) {
    const BAKE: u32 = 45;
    let (v1, v2) = (image("healthy", "v1"), image("healthy", "v2-blinded"));
    let mut bed = start_bed_with(&mut env, &v1, &[&v2], FAST, bake(BAKE)).await;
    env.apply(&release_yaml("v2", "shop", "2", &v2));
    let baking = wait_phase(&env, CanaryPhase::Baking, true).await;
    let ends = baking.baking_since.unwrap() + SignedDuration::from_secs(BAKE.into());
    // Three measurement intervals before the end: the last measurement is sure to miss.
    sleep_until(ends - SignedDuration::from_secs(6)).await;
    bed.prometheus.stop();
    sleep_until(ends + SignedDuration::from_secs(8)).await;
    let entry = env.release("v2").await.status.unwrap().stages["prod"].clone();
    assert_eq!(
        format!("{:?}", entry.phase),
        "Progressing",
        "no success on missing data: {entry:?}"
    );
    bed.prometheus.restart();
    let restarted = Instant::now();
    env.wait_release_stage("v2", "prod", "Succeeded", WAIT)
        .await;
    let took = restarted.elapsed();
    crate::support::figures::record("a bake completed after its missing data returned", took);
    // A bake started over would take all of its 45 s again; finishing well within it shows it
    // was not, with room for a Prometheus that starts slowly on a busy machine.
    assert!(
        took < Duration::from_secs(30),
        "completed {took:?} after the data returned: the bake was started over"
    );
}

async fn sleep_until(at: Timestamp) {
    let left = at.duration_since(Timestamp::now());
    if left.is_positive() {
        tokio::time::sleep(left.unsigned_abs()).await;
    }
}

/// A target that asks for `Recreate`: promotion, and an abort while the primary takes the
/// new release, never send a request to a workload with no available pods.
pub async fn with_a_recreate_target_traffic_only_ever_reaches_available_pods(mut env: TestEnv) {
    let (v1, v2, v3) = (
        image("healthy", "v1"),
        image("healthy", "v2-recreate"),
        image("healthy", "v3-recreate"),
    );
    let recreate = |world: String| {
        world.replace(
            "  replicas: 0\n  selector: {matchLabels: {app: web}}\n",
            "  replicas: 0\n  strategy: {type: Recreate}\n  selector: {matchLabels: {app: web}}\n",
        )
    };
    let bed = start_bed_with(&mut env, &v1, &[&v2, &v3], FAST, recreate).await;
    env.grant_example_roles();
    env.apply(&release_yaml("v2", "shop", "2", &v2));
    wait_phase(&env, CanaryPhase::Stepping, false).await;
    let held = Hold::StartingImage(v2.clone());
    env.wait_for("half the traffic on the canary", WAIT, || async {
        match bed.load.weights_seen().contains(&50) {
            true => Ok(()),
            false => Err(format!("{:?}", bed.load.weights_seen())),
        }
    })
    .await;
    // The primary's new pods never become ready: it stays mid-update, in Promoting.
    env.kubelet.hold(held.clone());
    wait_phase(&env, CanaryPhase::Promoting, false).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.steer(Some("alice"), "prod", "abort", None);
    env.wait_release_stage("v2", "prod", "Failed", WAIT).await;
    env.kubelet.release(&held);
    env.apply(&release_yaml("v3", "shop", "3", &v3));
    env.wait_release_stage("v3", "prod", "Succeeded", WAIT)
        .await;
    assert_eq!(
        bed.load.unserved(),
        0,
        "requests sent to a workload with no available pods: {:?}",
        bed.load.unserved.lock().unwrap()
    );
    let stage = env.stage("prod").await.status.unwrap();
    let said = stage
        .conditions
        .iter()
        .find(|c| c.type_ == "StrategyOverridden")
        .map(|c| c.message.clone());
    assert!(
        said.is_some_and(|m| m.contains("Recreate")),
        "{:?}",
        stage.conditions
    );
}

/// A rollback and then a promotion: the side traffic leaves keeps its pods for
/// `scaleDownDelay`, so a data plane that applies the change late drops nothing.
pub async fn scale_down_waits_for_the_data_plane_and_drops_no_request(mut env: TestEnv) {
    let (v1, v2, v3) = (
        image("healthy", "v1"),
        image("faulty", "v2-drained"),
        image("healthy", "v3-drained"),
    );
    let drain = |world: String| world.replace("scaleDownDelay: 2s", "scaleDownDelay: 30s");
    let bed = start_bed_with(&mut env, &v1, &[&v2, &v3], FAST, drain).await;
    env.apply(&release_yaml("v2", "shop", "2", &v2));
    env.wait_release_stage("v2", "prod", "Failed", WAIT).await;
    let moved = Instant::now();
    env.wait_for("the canary scaled down", WAIT, || async {
        let replicas = env
            .deployment("web-canary")
            .await
            .and_then(|d| d.spec?.replicas);
        match replicas {
            Some(0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        moved.elapsed() >= Duration::from_secs(25),
        "the canary lost its pods {:?} after its traffic",
        moved.elapsed()
    );
    env.apply(&release_yaml("v3", "shop", "3", &v3));
    env.wait_release_stage("v3", "prod", "Succeeded", WAIT)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        bed.load.unserved(),
        0,
        "requests dropped: {:?}; canary weights seen: {:?}",
        bed.load.unserved.lock().unwrap(),
        bed.load.seen.lock().unwrap()
    );
}

/// During a `pause: {}` someone edits the route's weights by hand: the route's watch wakes the
/// stage and they are put back (about 0.1 s, `make bench`), with an Event that says who changed
/// them.
pub async fn a_weight_edited_by_hand_during_a_pause_is_put_back_with_an_event(mut env: TestEnv) {
    let (v1, v2) = (image("healthy", "v1"), image("healthy", "v2-drift"));
    let steps = "      - setWeight: 25\n      - pause: {}\n";
    // No background analysis: nothing but the route's watch wakes the paused stage.
    let _bed: Bed = start_bed_with(&mut env, &v1, &[&v2], steps, without_background_analysis).await;
    env.apply(&release_yaml("v2", "shop", "2", &v2));
    wait_phase(&env, CanaryPhase::Paused, false).await;
    assert_eq!(route_canary_weight(&env).await, 25);
    let edit = r#"[{"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 50},
                   {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 50}]"#;
    env.cp.kubectl(&[
        "patch",
        "-n",
        &env.ns,
        "httproute",
        "web",
        "--type=json",
        "-p",
        edit,
    ]);
    let edited = Instant::now();
    let mut restored = None;
    // Without the watch, the paused stage would look again only at its next requeue, up to
    // five minutes away; the watch puts the weight back within seconds, even on a busy machine.
    while edited.elapsed() < Duration::from_secs(30) {
        if route_canary_weight(&env).await == 25 {
            restored = Some(edited.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = restored.expect("the weight was put back within 30 s: the watch did not wake it");
    crate::support::figures::record("a hand-edited route weight put back", took);
    // The Event is published after the write that put the weight back, so it may trail it.
    env.wait_for("a TrafficDrift event naming the edit", WAIT, || async {
        let notes: Vec<String> = env
            .events("TrafficDrift")
            .await
            .into_iter()
            .filter_map(|e| e.note)
            .collect();
        match notes
            .iter()
            .any(|n| n.contains("was 50%, not 25%") && n.contains("changed by kubectl"))
        {
            true => Ok(()),
            false => Err(format!("{notes:?}")),
        }
    })
    .await;
}

/// The images of the pods the canary's Service reaches (its Endpoints, as the endpoints
/// controller keeps them), and of the ready pods of the canary workload.
async fn canary_pods(env: &TestEnv) -> (Vec<String>, Vec<String>) {
    use k8s_openapi::api::core::v1::{Endpoints, Pod};
    let pods: kube::Api<Pod> = kube::Api::namespaced(env.client.clone(), &env.ns);
    let listed = pods
        .list(&kube::api::ListParams::default().labels("greenlight.dev/workload=web-canary"))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let image = |p: &Pod| {
        let spec = p.spec.as_ref();
        let first = spec.and_then(|s| s.containers.first());
        first.and_then(|c| c.image.clone()).unwrap_or_default()
    };
    let ready = |p: &Pod| {
        let conditions = p.status.as_ref().and_then(|s| s.conditions.clone());
        conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    };
    let endpoints: kube::Api<Endpoints> = kube::Api::namespaced(env.client.clone(), &env.ns);
    let reached: Vec<String> = endpoints
        .get_opt("web-canary")
        .await
        .ok()
        .flatten()
        .into_iter()
        .flat_map(|e| e.subsets.unwrap_or_default())
        .flat_map(|s| s.addresses.unwrap_or_default())
        .filter_map(|a| a.target_ref.and_then(|r| r.name))
        .filter_map(|name| {
            listed
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(&name))
        })
        .map(image)
        .collect();
    let ready = listed.iter().filter(|p| ready(p)).map(image).collect();
    (reached, ready)
}

/// v2 fails and its canary drains slowly; v3 is published meanwhile, and its canary rolls
/// out only part way (one pod of two ready), so a ready pod of v2 is still in the workload
/// when v3 takes half the traffic. The canary's Service reaches only v3's pod.
pub async fn a_release_published_while_the_previous_canary_drains_takes_traffic_only_on_its_own_pods(
    mut env: TestEnv,
) {
    let (v1, v2, v3) = (
        image("healthy", "v1"),
        image("faulty", "v2-draining"),
        image("healthy", "v3-after"),
    );
    let steps = "      - setWeight: 50\n      - analysis: {gates: [error-rate], interval: 2s, count: 2, failureLimit: 1, initialDelay: 3s}\n      - pause: {}\n";
    // The world's background analysis would read v2's errors under the canary's name in its
    // first 10 s window of v3 (a threshold gate's query is not cut at the analysis' start);
    // this case is about where traffic goes, so v2 fails by its step's own analysis.
    let slow_drain = |world: String| {
        without_background_analysis(world).replace("scaleDownDelay: 2s", "scaleDownDelay: 60s")
    };
    let bed = start_bed_with(&mut env, &v1, &[&v2, &v3], steps, slow_drain).await;
    env.apply(&release_yaml("v2", "shop", "2", &v2));
    env.wait_release_stage("v2", "prod", "Failed", WAIT).await;
    wait_traffic_on_primary(&env, &bed).await;
    let (_, ready) = canary_pods(&env).await;
    assert!(ready.contains(&v2), "v2's canary drains slowly: {ready:?}");
    env.kubelet.hold(Hold::ReadyAtMost {
        image: v3.clone(),
        ready: 1,
    });
    env.apply(&release_yaml("v3", "shop", "3", &v3));
    env.wait_for("v3 on half the traffic", WAIT, || async {
        match bed.load.weights_seen().last() {
            Some(50) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Sampled for a while: the endpoints controller follows the Service a moment later, and
    // at no moment may it reach a pod of v2.
    let mut reached_v3 = false;
    for _ in 0..40 {
        let (reached, ready) = canary_pods(&env).await;
        assert!(
            ready.contains(&v2) && ready.contains(&v3),
            "a pod of each release is ready in the canary workload: {ready:?}"
        );
        assert!(
            !reached.contains(&v2),
            "the canary's Service reaches v2's pod: {reached:?}"
        );
        reached_v3 |= reached == vec![v3.clone()];
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if !reached_v3 {
        let dump = |kind: &str| {
            let out = env.kubectl(&["get", kind, "-n", &env.ns, "-o", "yaml"], "");
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        panic!(
            "the canary's Service never reaches v3's pod:\n{}\n{}\n{}",
            dump("endpoints"),
            dump("services"),
            dump("pods")
        );
    }
    let services: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(env.client.clone(), &env.ns);
    let service = services
        .get("web-canary")
        .await
        .expect("the canary's Service");
    let selector = service.spec.and_then(|s| s.selector).unwrap_or_default();
    assert!(
        selector.contains_key("greenlight.dev/revision"),
        "{selector:?}"
    );
}
