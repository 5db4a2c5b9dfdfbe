//! A load generator that reaches a Service as kube-proxy does: through the Service's
//! Endpoints, as the endpoints controller keeps them, to the pod each address names, and on
//! to the app process of that pod's image. It keeps every answer in the order the requests
//! were sent (which image answered, and its status), so a test can say which version served
//! each request, and whether any moment served a mix.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kube::api::ListParams;
use kube::{Api, Client};

/// One request: when it was sent, the image of the pod that answered (`None`: the Service
/// reached no pod) and the HTTP status (0: no answer).
#[derive(Debug, Clone)]
pub struct Answer {
    pub sent: Instant,
    pub image: Option<String>,
    pub status: u16,
}

pub struct ServiceLoad {
    answers: Arc<Mutex<BTreeMap<u64, Answer>>>,
    task: tokio::task::JoinHandle<()>,
}

/// What the generator knows of the Service's pods, refreshed every few requests.
#[derive(Default)]
struct Reach {
    /// The pods the Service's Endpoints list now, in their order.
    pods: Vec<String>,
    /// Pod name -> (image, workload label).
    known: BTreeMap<String, (String, String)>,
}

impl ServiceLoad {
    /// About `rps` requests per second to `service` until dropped.
    pub fn start(
        client: Client,
        namespace: &str,
        service: &str,
        ports: BTreeMap<String, u16>,
        rps: u64,
    ) -> ServiceLoad {
        let answers: Arc<Mutex<BTreeMap<u64, Answer>>> = Arc::default();
        let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), namespace);
        let pods: Api<Pod> = Api::namespaced(client, namespace);
        let (service, kept) = (service.to_string(), answers.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut reach = Reach::default();
            let period = Duration::from_micros(1_000_000 / rps.max(1));
            for n in 0u64.. {
                if n.is_multiple_of(5) {
                    refresh(&endpoints, &pods, &service, &mut reach).await;
                }
                let pod =
                    (!reach.pods.is_empty()).then(|| &reach.pods[n as usize % reach.pods.len()]);
                let known = pod.and_then(|p| reach.known.get(p)).cloned();
                let port = known
                    .as_ref()
                    .and_then(|(image, _)| ports.get(image))
                    .copied();
                let sent = Instant::now();
                let answer = Answer {
                    sent,
                    image: known.as_ref().map(|k| k.0.clone()),
                    status: 0,
                };
                kept.lock().unwrap().insert(n, answer);
                if let (Some(port), Some((_, workload))) = (port, known) {
                    let request = http
                        .get(format!("http://127.0.0.1:{port}/?workload={workload}"))
                        .timeout(Duration::from_secs(2))
                        .send();
                    let kept = kept.clone();
                    // Sent on its own task: an answer's duration must not slow the load.
                    tokio::spawn(async move {
                        let status = request.await.map_or(0, |r| r.status().as_u16());
                        if let Some(a) = kept.lock().unwrap().get_mut(&n) {
                            a.status = status;
                        }
                    });
                }
                tokio::time::sleep(period).await;
            }
        });
        ServiceLoad { answers, task }
    }

    /// Every request so far, in the order sent.
    pub fn answers(&self) -> Vec<Answer> {
        self.answers.lock().unwrap().values().cloned().collect()
    }
}

/// The Service's pods from its Endpoints, and the image and workload of any pod not seen yet.
async fn refresh(endpoints: &Api<Endpoints>, pods: &Api<Pod>, service: &str, reach: &mut Reach) {
    let Ok(found) = endpoints.get_opt(service).await else {
        return;
    };
    let subsets = found.and_then(|e| e.subsets).unwrap_or_default();
    let addresses = subsets
        .into_iter()
        .flat_map(|s| s.addresses.unwrap_or_default());
    reach.pods = addresses
        .filter_map(|a| a.target_ref.and_then(|r| r.name))
        .collect();
    if reach.pods.iter().all(|p| reach.known.contains_key(p)) {
        return;
    }
    let Ok(listed) = pods.list(&ListParams::default()).await else {
        return;
    };
    for pod in listed.items {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let workload = labels
            .get("greenlight.dev/workload")
            .cloned()
            .unwrap_or_default();
        let spec = pod.spec.as_ref();
        let image = spec
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone());
        reach
            .known
            .insert(name, (image.unwrap_or_default(), workload));
    }
}

/// The images that answered, with runs of the same image folded: `[v1, v2]` is one switch.
pub fn versions_in_order(answers: &[Answer]) -> Vec<String> {
    let mut versions: Vec<String> = answers.iter().filter_map(|a| a.image.clone()).collect();
    versions.dedup();
    versions
}

impl Drop for ServiceLoad {
    fn drop(&mut self) {
        self.task.abort();
    }
}
