//! Blue-green in a closed loop: clients reach the stage through `web-active` as kube-proxy
//! would (its Endpoints, kept by the real endpoints controller), testers reach the preview
//! through `web-canary`, a real Prometheus scrapes the app processes, and the analyses query
//! it. Every answer is kept with the image that gave it.

use std::time::{Duration, Instant};

use greenlight::api::stage::RolloutDirection;
use k8s_openapi::api::core::v1::Service;

use super::canary::{APP, image, world_yaml};
use crate::env::{TestEnv, release_yaml};
use crate::support::prometheus::Prometheus;
use crate::support::switch_load::{Answer, ServiceLoad, versions_in_order};
use crate::support::traffic::Apps;

const WAIT: Duration = Duration::from_secs(120);

/// The preview is judged for 2 measurements, then takes all traffic and is judged for
/// `post` more while v1 stays up.
fn blue_green_world(prometheus: &str, post: u32) -> String {
    let world = world_yaml(prometheus, "", false);
    let stage = world.find("  strategy:\n").expect("the world's strategy");
    let analysis = |count: u32| {
        format!(
            "{{gates: [error-rate], interval: 2s, count: {count}, failureLimit: 1, initialDelay: 3s}}"
        )
    };
    format!(
        "{}  strategy:\n    type: blueGreen\n    blueGreen:\n      prePromotionAnalysis: {}\n      postPromotionAnalysis: {}\n      scaleDownDelay: 2s\n",
        &world[..stage],
        analysis(2),
        analysis(post)
    )
}

struct Bed {
    _prometheus: Prometheus,
    apps: Apps,
    /// Clients, through `web-active`.
    clients: ServiceLoad,
    /// Testers of the preview, through `web-canary`.
    testers: ServiceLoad,
}

/// v1 serving through `web-active` with clients on it; v2's image is ready to publish.
async fn start_bed(env: &mut TestEnv, v1: &str, v2: &str, post: u32) -> Bed {
    let apps = Apps::start(&[v1, v2], &env.dir, APP);
    let mut prometheus = Prometheus::start(&apps.targets());
    prometheus.wait_for_series("up", 2).await;
    env.apply(&blue_green_world(&prometheus.url, post));
    env.start_admitted_controller().await;
    env.apply(&release_yaml("v1", "shop", "1", v1));
    env.wait_release_stage("v1", "prod", "Succeeded", WAIT)
        .await;
    let start = |service: &str, rps| {
        ServiceLoad::start(
            env.client.clone(),
            &env.ns,
            service,
            apps.ports.clone(),
            rps,
        )
    };
    let (clients, testers) = (start("web-active", 50), start("web-canary", 20));
    env.wait_for("clients answered by v1", WAIT, || async {
        let answered = clients.answers().iter().filter(|a| a.status == 200).count();
        if answered > 20 {
            Ok(())
        } else {
            Err(format!("{answered} answers"))
        }
    })
    .await;
    Bed {
        _prometheus: prometheus,
        apps,
        clients,
        testers,
    }
}

/// Answers settled: every request sent more than 3 s ago (a later one may be in flight).
async fn settled(load: &ServiceLoad) -> Vec<Answer> {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cut = Instant::now() - Duration::from_secs(3);
    load.answers()
        .into_iter()
        .filter(|a| a.sent < cut)
        .collect()
}

fn failed(answers: &[Answer]) -> usize {
    answers.iter().filter(|a| a.status != 200).count()
}

async fn replicas(env: &TestEnv, name: &str) -> Option<i32> {
    env.deployment(name).await?.spec?.replicas
}

async fn first_answer_by(env: &TestEnv, load: &ServiceLoad, image: &str) -> Instant {
    env.wait_for(&format!("an answer by {image}"), WAIT, || async {
        let answers = load.answers();
        let by = answers
            .iter()
            .find(|a| a.image.as_deref() == Some(image) && a.status != 0);
        by.map(|a| a.sent)
            .ok_or_else(|| format!("{} answers", answers.len()))
    })
    .await
}

/// An HPA on the target sees it declare no pods and stays out: it scales neither side.
fn autoscale_the_target(env: &TestEnv) {
    env.apply("apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  minReplicas: 4\n  maxReplicas: 8\n  targetCPUUtilizationPercentage: 50\n");
}

async fn wait_hpa_disabled(env: &TestEnv) {
    let api: kube::Api<k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler> =
        kube::Api::namespaced(env.client.clone(), &env.ns);
    env.wait_for("the HPA to find scaling disabled", WAIT, || async {
        let hpa = api.get("web").await.map_err(|e| e.to_string())?;
        let annotations = hpa.metadata.annotations.unwrap_or_default();
        let conditions = annotations.get("autoscaling.alpha.kubernetes.io/conditions");
        match conditions {
            Some(c) if c.contains("ScalingDisabled") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// While v2's rollout runs, neither side has more than the 2 pods it started with.
async fn no_side_grows_until_v2_succeeds(env: &TestEnv) {
    let succeeded = Some(greenlight::api::release::StagePhaseForRelease::Succeeded);
    let started = Instant::now();
    loop {
        let release = env.release("v2").await.status;
        if release.and_then(|s| s.stages.get("prod").map(|e| e.phase)) == succeeded {
            return;
        }
        for side in ["web-primary", "web-canary"] {
            let n = replicas(env, side).await;
            assert!(
                n.is_none_or(|n| n <= 2),
                "{side} resized mid-flight to {n:?}"
            );
        }
        assert!(started.elapsed() < WAIT, "v2 never succeeded");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The selector of `web-active` names only this workload.
async fn active_selects(env: &TestEnv, workload: &str) -> Result<(), String> {
    let active: kube::Api<Service> = kube::Api::namespaced(env.client.clone(), &env.ns);
    let service = active.get("web-active").await.map_err(|e| e.to_string())?;
    let selector = service.spec.and_then(|s| s.selector).unwrap_or_default();
    match selector.get("greenlight.dev/workload") {
        Some(w) if w == workload && selector.len() == 1 => Ok(()),
        _ => Err(format!("{selector:?}")),
    }
}

fn short(images: &[String]) -> Vec<&str> {
    images.iter().map(|i| &i[i.len() - 6..]).collect()
}

pub async fn a_blue_green_release_is_judged_on_its_preview_then_takes_all_traffic_at_once_without_an_error(
    mut env: TestEnv,
) {
    let (v1, v2) = (image("healthy", "v1"), image("healthy", "v2"));
    let bed = start_bed(&mut env, &v1, &v2, 4).await;
    autoscale_the_target(&env);
    env.apply(&release_yaml("v2", "shop", "2", &v2));
    first_answer_by(&env, &bed.clients, &v2).await;
    let resize = ["patch", "stage", "prod", "-n", &env.ns, "--type=merge"];
    env.kubectl(
        &[&resize[..], &["-p", r#"{"spec":{"replicas":3}}"#]].concat(),
        "",
    );
    no_side_grows_until_v2_succeeds(&env).await;
    env.wait_for("the primary at its new size", WAIT, || async {
        match replicas(&env, "web-primary").await {
            Some(3) => Ok(()),
            n => Err(format!("{n:?}")),
        }
    })
    .await;
    wait_hpa_disabled(&env).await;
    assert_eq!(
        replicas(&env, "web").await,
        Some(0),
        "the HPA left the target alone"
    );
    let (answers, tested) = (settled(&bed.clients).await, settled(&bed.testers).await);
    let (served, previewed) = (versions_in_order(&answers), versions_in_order(&tested));
    eprintln!(
        "blue-green switch: {} client requests, {} failed, versions in order {:?}; {} preview requests, versions {:?}",
        answers.len(),
        failed(&answers),
        short(&served),
        tested.len(),
        short(&previewed)
    );
    assert_eq!(failed(&answers), 0, "every client request was answered 200");
    assert_eq!(served, [v1.clone(), v2.clone()], "one switch, no mix");
    let only_v2 = std::slice::from_ref(&v2);
    assert_eq!(previewed, only_v2, "the preview reached v2 and only v2");
    active_selects(&env, "web-primary")
        .await
        .expect("back on the promoted primary");
}

/// When the Stage first shows the rollback decided (or the rollout already over).
async fn rollback_decided(env: &TestEnv) -> Instant {
    env.wait_for("the rollback decision", WAIT, || async {
        let stage = env.stage("prod").await.status.unwrap_or_default();
        let rollout = stage.rollout.as_ref().map(|r| r.direction);
        let over = stage.history.first().is_some_and(|h| h.release == "v2");
        match (rollout, over) {
            (Some(RolloutDirection::Rollback), _) | (_, true) => Ok(Instant::now()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// Where traffic left v2: the index of v2's last answer and of v1's first after it.
fn switched_back(answers: &[Answer], v1: &str, v2: &str) -> (usize, usize) {
    let last_v2 = answers.iter().rposition(|a| a.image.as_deref() == Some(v2));
    let last_v2 = last_v2.expect("v2 answered");
    let after = answers[last_v2 + 1..]
        .iter()
        .position(|a| a.image.as_deref() == Some(v1));
    let tail = answers[last_v2.saturating_sub(3)..].iter().take(12);
    let tail: Vec<_> = tail
        .map(|a| (a.image.as_deref().map(|i| &i[i.len() - 6..]), a.status))
        .collect();
    let after =
        after.unwrap_or_else(|| panic!("v1 never answered again after #{last_v2}: {tail:?}"));
    (last_v2, last_v2 + 1 + after)
}

pub async fn a_blue_green_release_failing_after_the_switch_is_switched_back_at_once_to_the_warm_previous_one(
    mut env: TestEnv,
) {
    let (v1, v2) = (image("healthy", "v1"), image("healthy", "v2-degrades"));
    let bed = start_bed(&mut env, &v1, &v2, 20).await;
    env.apply(&release_yaml("v2", "shop", "2", &v2));
    first_answer_by(&env, &bed.clients, &v2).await;
    bed.apps.degrade(&v2).await;
    let degraded = Instant::now();
    rollback_decided(&env).await;
    env.wait_release_stage("v2", "prod", "Failed", WAIT).await;
    // The decision is written before the switch back: wait for the switch, then settle.
    env.wait_for("v1 answering again", WAIT, || async {
        let answers = bed.clients.answers();
        let last_v2 = answers
            .iter()
            .rposition(|a| a.image.as_deref() == Some(&v2));
        let after = &answers[last_v2.map_or(0, |i| i + 1)..];
        match after.iter().any(|a| a.image.as_deref() == Some(&v1)) {
            true => Ok(()),
            false => Err(format!("{} answers after v2's last", after.len())),
        }
    })
    .await;
    let answers = settled(&bed.clients).await;
    let (last_v2, back) = switched_back(&answers, &v1, &v2);
    let took = answers[back].sent - degraded;
    eprintln!(
        "blue-green switch-back: {} client requests, {} failed ({} while v2 served); v1 answered again {:.2} s after v2 was degraded (initialDelay 3 s, interval 2 s), {:.3} s after v2's last answer",
        answers.len(),
        failed(&answers),
        failed(&answers[..=last_v2]),
        took.as_secs_f64(),
        (answers[back].sent - answers[last_v2].sent).as_secs_f64(),
    );
    let switched = switched_index(&answers, &v2);
    assert_eq!(
        versions_in_order(&answers),
        [v1.clone(), v2.clone(), v1.clone()],
        "one switch there and one back, no mix"
    );
    assert_eq!(
        failed(&answers[..switched]),
        0,
        "no error before the switch"
    );
    assert_eq!(
        failed(&answers[last_v2 + 1..]),
        0,
        "no error once switched back"
    );
    // The first measurement comes 3 s after the switch and fails; the decision is written,
    // then the Service is switched and the endpoints controller follows. 10 s of margin for a
    // loaded machine; the figure printed is what it took.
    assert!(
        took < Duration::from_secs(3 + 2 + 10),
        "switched back late: {took:?}"
    );
    assert_eq!(
        env.images("web-primary").await,
        vec![v1.clone()],
        "v1 was never replaced"
    );
}

fn switched_index(answers: &[Answer], image: &str) -> usize {
    answers
        .iter()
        .position(|a| a.image.as_deref() == Some(image))
        .unwrap_or(answers.len())
}

/// erin, a team editor with Kubernetes' `edit` on Services, points the clients' Service at
/// the idle preview, then turns it into an ExternalName of her own: each time the stage puts
/// back a plain Service on the serving side.
pub async fn a_team_editor_who_repoints_the_active_service_is_put_back_on_the_serving_side(
    mut env: TestEnv,
) {
    let (v1, v2) = (image("healthy", "v1"), image("healthy", "v2"));
    let bed = start_bed(&mut env, &v1, &v2, 2).await;
    super::insiders::grant_team_editor(&env, "erin");
    env.apply("apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: edit-services}\nrules:\n- apiGroups: ['']\n  resources: [services]\n  verbs: [get, list, watch, update, patch]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: edit-services}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: edit-services}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: erin}]\n");
    let patch = r#"{"spec":{"selector":{"greenlight.dev/workload":"web-canary"}}}"#;
    let what = ["service", "web-active", "-n", &env.ns];
    super::insiders::patch_as(&env, "erin", &what, patch).expect("edit lets erin patch it");
    env.wait_for("web-active back on the primary", WAIT, || {
        active_selects(&env, "web-primary")
    })
    .await;
    let elsewhere =
        r#"{"spec":{"type":"ExternalName","externalName":"erin.example","clusterIP":""}}"#;
    super::insiders::patch_as(&env, "erin", &what, elsewhere).expect("edit lets erin retype it");
    env.wait_for("web-active a ClusterIP Service again", WAIT, || async {
        let active: kube::Api<Service> = kube::Api::namespaced(env.client.clone(), &env.ns);
        let spec = active
            .get("web-active")
            .await
            .map_err(|e| e.to_string())?
            .spec;
        let kind = spec.as_ref().and_then(|s| s.type_.clone());
        match (kind.as_deref(), active_selects(&env, "web-primary").await) {
            (Some("ClusterIP"), Ok(())) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // The clients were answered by v1 before and after; a moment with no pod behind the
    // Service is the edit's own doing, and ends when it is put back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let answers = settled(&bed.clients).await;
    assert_eq!(versions_in_order(&answers), std::slice::from_ref(&v1));
    let last = answers.last().expect("answers");
    assert_eq!(
        (last.image.as_deref(), last.status),
        (Some(v1.as_str()), 200)
    );
}
