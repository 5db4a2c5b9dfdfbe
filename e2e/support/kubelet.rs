//! A fake kubelet, watch-based: registers a Node, binds unscheduled Pods to it, marks them
//! Running and Ready, and finishes their deletion. It can be told to keep some Pods unready, to play a
//! release that crashes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

pub const NODE: &str = "fake-node";

/// Which Pods stay unready: by image, or by namespace and label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    Image(String),
    /// Pods of this image not ready yet stay so; those ready already stay ready (a rollout
    /// whose new pods never start, beside old ones that keep serving).
    StartingImage(String),
    Label {
        namespace: String,
        key: String,
        value: String,
    },
    /// At most `ready` pods of this image become ready (a rollout stuck part way).
    ReadyAtMost {
        image: String,
        ready: usize,
    },
}

#[derive(Clone, Default)]
pub struct Kubelet {
    holds: Arc<Mutex<Vec<Hold>>>,
    /// The pods let through a [`Hold::ReadyAtMost`], by image.
    let_through: Arc<Mutex<BTreeMap<String, std::collections::BTreeSet<String>>>>,
    /// The pods of Jobs, whose commands it runs.
    pub jobs: super::jobpods::JobPods,
}

impl Kubelet {
    pub fn hold(&self, hold: Hold) {
        self.holds.lock().unwrap().push(hold);
    }

    pub fn release(&self, hold: &Hold) {
        self.holds.lock().unwrap().retain(|h| h != hold);
    }

    fn held(&self, pod: &Pod) -> bool {
        let holds = self.holds.lock().unwrap();
        let runs = |image: &str| {
            pod.spec
                .iter()
                .flat_map(|s| &s.containers)
                .any(|c| c.image.as_deref() == Some(image))
        };
        let ready = pod
            .status
            .iter()
            .flat_map(|s| &s.conditions)
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        holds.iter().any(|h| match h {
            Hold::Image(image) => runs(image),
            Hold::StartingImage(image) => runs(image) && !ready,
            Hold::Label {
                namespace,
                key,
                value,
            } => {
                pod.namespace().as_deref() == Some(namespace.as_str())
                    && pod.labels().get(key) == Some(value)
            }
            Hold::ReadyAtMost { image, ready } => {
                let mut through = self.let_through.lock().unwrap();
                let through = through.entry(image.clone()).or_default();
                let uid = pod.uid().unwrap_or_default();
                match runs(image) && !through.contains(&uid) {
                    true if through.len() < *ready => !through.insert(uid),
                    starting => starting,
                }
            }
        })
    }

    /// Registers the node and keeps pods moving until the runtime stops: each watch event is
    /// acted on at once (several at a time), and a sweep of the watched pods every half second
    /// applies holds that were set or released since.
    pub async fn run(self, client: Client) {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, reflector, watcher};
        register_node(&client).await;
        let pods: Api<Pod> = Api::all(client.clone());
        let (store, writer) = reflector::store();
        let events = watcher(pods, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .applied_objects()
            .for_each_concurrent(16, |pod| async {
                if let Ok(pod) = pod {
                    self.tend_or_say(&client, &pod).await;
                }
            });
        let sweep = async {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                for pod in store.state() {
                    self.tend_or_say(&client, &pod).await;
                }
            }
        };
        tokio::join!(events, sweep);
    }

    async fn tend_or_say(&self, client: &Client, pod: &Pod) {
        if let Err(e) = self.tend(client, pod).await {
            eprintln!(
                "fake kubelet: pod {}/{}: {e}",
                pod.namespace().unwrap_or_default(),
                pod.name_any()
            );
        }
    }

    async fn tend(&self, client: &Client, pod: &Pod) -> Result<(), kube::Error> {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        if pod.metadata.deletion_timestamp.is_some() {
            if super::jobpods::is_job_pod(pod) {
                self.jobs.tend(client, pod).await?;
            }
            api.delete(
                &name,
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await
            .map(|_| ())
            .or_else(ignore_not_found)?;
            return Ok(());
        }
        let spec = pod.spec.clone().unwrap_or_default();
        if spec.node_name.is_none() {
            return bind(client, &ns, &name).await;
        }
        if super::jobpods::is_job_pod(pod) {
            return self.jobs.tend(client, pod).await;
        }
        let ready = !self.held(pod);
        let status = pod.status.clone().unwrap_or_default();
        let is_ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if status.phase.as_deref() == Some("Running") && is_ready == ready {
            return Ok(());
        }
        let now = jiff::Timestamp::now().to_string();
        let ready_str = if ready { "True" } else { "False" };
        let containers: Vec<serde_json::Value> = spec
            .containers
            .iter()
            .map(|c| json!({
                "name": c.name, "image": c.image, "imageID": c.image, "ready": ready, "restartCount": 0,
                "started": true, "state": {"running": {"startedAt": now}}
            }))
            .collect();
        let patch = json!({"status": {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": pod_ip(pod),
            "startTime": status.start_time.as_ref().map(|t| t.0.to_string()).unwrap_or(now.clone()),
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": ready_str, "lastTransitionTime": now},
                {"type": "Ready", "status": ready_str, "lastTransitionTime": now},
            ],
            "containerStatuses": containers,
        }});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(|_| ())
            .or_else(ignore_not_found)
    }
}

/// Binds a pod to the fake node.
async fn bind(client: &Client, ns: &str, name: &str) -> Result<(), kube::Error> {
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": ns},
        "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}
    });
    let body = serde_json::to_vec(&binding).expect("binding json");
    let req = http_post(
        &format!("/api/v1/namespaces/{ns}/pods/{name}/binding"),
        body,
    );
    client
        .request::<serde_json::Value>(req)
        .await
        .map(|_| ())
        .or_else(ignore_conflict)
}

fn http_post(path: &str, body: Vec<u8>) -> http::Request<Vec<u8>> {
    http::Request::post(path)
        .header("content-type", "application/json")
        .body(body)
        .expect("request")
}

fn ignore_not_found(e: kube::Error) -> Result<(), kube::Error> {
    match e {
        kube::Error::Api(ref s) if s.code == 404 => Ok(()),
        e => Err(e),
    }
}

fn ignore_conflict(e: kube::Error) -> Result<(), kube::Error> {
    match e {
        kube::Error::Api(ref s) if s.code == 409 || s.code == 404 => Ok(()),
        e => Err(e),
    }
}

async fn register_node(client: &Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
    }))
    .expect("node json");
    let _ = nodes.create(&PostParams::default(), &node).await;
    let capacity = BTreeMap::from([("cpu", "1000"), ("memory", "1000Gi"), ("pods", "10000")]);
    let now = jiff::Timestamp::now().to_string();
    let status = json!({"status": {
        "capacity": capacity, "allocatable": capacity,
        "conditions": [{"type": "Ready", "status": "True", "reason": "FakeKubelet", "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
    }});
    nodes
        .patch_status(NODE, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("node status");
}

/// Runs a fake kubelet against `kubeconfig` on a thread of its own, for as long as the process.
pub fn start_in_background(kubeconfig: std::path::PathBuf) -> Kubelet {
    let kubelet = Kubelet::default();
    let runner = kubelet.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let config = kube::Config::from_custom_kubeconfig(
                kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig"),
                &Default::default(),
            )
            .await
            .expect("config");
            runner
                .run(kube::Client::try_from(config).expect("client"))
                .await;
        });
    });
    kubelet
}

/// An address of its own for each pod, in 10.244.0.0/16 as a cluster's pod network would
/// give: Endpoints refuse loopback addresses. Nothing connects to it; the load generator
/// reaches the app processes on loopback.
fn pod_ip(pod: &Pod) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    pod.uid().unwrap_or_default().hash(&mut hasher);
    let h = hasher.finish();
    format!("10.244.{}.{}", (h >> 8) % 256, 1 + h % 254)
}
