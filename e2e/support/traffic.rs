//! The closed loop's network: one app process per release image, and a load generator that
//! splits real HTTP requests between the primary and the canary by the weights the operator
//! wrote into the HTTPRoute, sending each to the process of the image that workload runs.
//! Like a real data plane it applies a route change [`DATA_PLANE_LAG`] after the change, and a
//! request it sends to a workload with no available pods is counted as unserved (a 503).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};

use super::process::Proc;

/// App processes by image.
pub struct Apps {
    pub ports: BTreeMap<String, u16>,
    _procs: Vec<Proc>,
}

impl Apps {
    /// Starts one process per image; the image's tag (`healthy` or `faulty`) sets its behaviour.
    pub fn start(images: &[&str], dir: &Path, binary: &str) -> Apps {
        let mut ports = BTreeMap::new();
        let mut procs = Vec::new();
        for (i, image) in images.iter().enumerate() {
            let behaviour = ["faulty", "slow"]
                .into_iter()
                .find(|b| image.contains(&format!(":{b}@")))
                .unwrap_or("healthy");
            let port_file = dir.join(format!("app-{i}.port"));
            let mut cmd = Command::new(binary);
            cmd.arg(behaviour).arg(&port_file);
            procs.push(Proc::spawn(&format!("app-{i}"), cmd, dir));
            let port = (0..100)
                .find_map(|_| {
                    std::thread::sleep(Duration::from_millis(50));
                    std::fs::read_to_string(&port_file)
                        .ok()
                        .and_then(|p| p.trim().parse().ok())
                })
                .expect("app wrote its port");
            ports.insert(image.to_string(), port);
        }
        Apps {
            ports,
            _procs: procs,
        }
    }

    /// Turns the process of `image` faulty from now on.
    pub async fn degrade(&self, image: &str) {
        let port = self.ports[image];
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/degrade"))
            .send()
            .await
            .expect("degrade the app");
    }

    pub fn targets(&self) -> Vec<String> {
        self.ports
            .values()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }
}

/// A weight change the load generator saw, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub at: Timestamp,
    pub canary_weight: i32,
}

/// How long after a route change the load generator sends by it.
pub const DATA_PLANE_LAG: Duration = Duration::from_millis(500);

pub struct LoadGenerator {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub sent: Arc<Mutex<BTreeMap<String, u64>>>,
    /// Requests sent to a workload with no available pods, by workload.
    pub unserved: Arc<Mutex<BTreeMap<String, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

/// What the load generator knows of the cluster, refreshed every few requests.
#[derive(Default)]
struct View {
    /// Route weights seen, with when; each takes effect [`DATA_PLANE_LAG`] later.
    pending: std::collections::VecDeque<(std::time::Instant, i64)>,
    weight: i64,
    images: BTreeMap<String, String>,
    available: BTreeMap<String, i32>,
}

impl LoadGenerator {
    /// About `rps` requests per second until dropped.
    pub fn start(
        client: Client,
        namespace: &str,
        route: &str,
        target: &str,
        ports: BTreeMap<String, u16>,
        rps: u64,
    ) -> LoadGenerator {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let sent: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
        let unserved: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
        let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
        let routes: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &ApiResource::from_gvk(&gvk));
        let deployments: Api<Deployment> = Api::namespaced(client, namespace);
        let names = (
            route.to_string(),
            format!("{target}-primary"),
            format!("{target}-canary"),
        );
        let counters = (seen.clone(), sent.clone(), unserved.clone());
        let task = tokio::spawn(async move {
            let (route, primary, canary) = names;
            let (seen, sent, unserved) = counters;
            let http = reqwest::Client::new();
            let mut view = View::default();
            let mut n: u64 = 0;
            let period = Duration::from_micros(1_000_000 / rps.max(1));
            loop {
                if n.is_multiple_of(10) {
                    if let Ok(r) = routes.get(&route).await {
                        observe_route(&r, (&primary, &canary), n, &mut view, &seen);
                    }
                    for name in [&primary, &canary] {
                        refresh(&deployments, name, &mut view).await;
                    }
                }
                while let Some((at, w)) = view.pending.front().copied() {
                    if n > 0 && at.elapsed() < DATA_PLANE_LAG {
                        break;
                    }
                    view.weight = w;
                    view.pending.pop_front();
                }
                let workload = if ((n % 100) as i64) < view.weight {
                    &canary
                } else {
                    &primary
                };
                if view.available.get(workload).copied().unwrap_or(0) == 0 {
                    *unserved
                        .lock()
                        .unwrap()
                        .entry(workload.clone())
                        .or_default() += 1;
                } else if let Some(port) = view.images.get(workload).and_then(|i| ports.get(i)) {
                    // Sent on its own task: an answer's duration must not slow the load.
                    let request = http
                        .get(format!("http://127.0.0.1:{port}/?workload={workload}"))
                        .timeout(Duration::from_secs(1))
                        .send();
                    tokio::spawn(request);
                    *sent.lock().unwrap().entry(workload.clone()).or_default() += 1;
                }
                n += 1;
                tokio::time::sleep(period).await;
            }
        });
        LoadGenerator {
            seen,
            sent,
            unserved,
            task,
        }
    }

    /// Requests sent to a workload with no available pods, in all.
    pub fn unserved(&self) -> u64 {
        self.unserved.lock().unwrap().values().sum()
    }

    pub fn weights_seen(&self) -> Vec<i32> {
        let mut w: Vec<i32> = self
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.canary_weight)
            .collect();
        w.dedup();
        w
    }
}

/// Notes a new weight on the route, which takes effect [`DATA_PLANE_LAG`] later.
fn observe_route(
    route: &DynamicObject,
    (primary, canary): (&str, &str),
    n: u64,
    view: &mut View,
    seen: &Mutex<Vec<Seen>>,
) {
    let w = canary_weight(route, primary, canary);
    let last = view.pending.back().map_or(view.weight, |(_, w)| *w);
    if w != last || n == 0 {
        view.pending.push_back((std::time::Instant::now(), w));
        seen.lock().unwrap().push(Seen {
            at: Timestamp::now(),
            canary_weight: w as i32,
        });
    }
}

/// The image and available pods of one workload.
async fn refresh(deployments: &Api<Deployment>, name: &str, view: &mut View) {
    let Ok(found) = deployments.get_opt(name).await else {
        return;
    };
    let Some(d) = found else {
        view.available.insert(name.to_string(), 0);
        return;
    };
    let available = d
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    view.available.insert(name.to_string(), available);
    let image = d
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.first().and_then(|c| c.image.clone()));
    if let Some(image) = image {
        view.images.insert(name.to_string(), image);
    }
}

impl Drop for LoadGenerator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn canary_weight(route: &DynamicObject, primary: &str, canary: &str) -> i64 {
    let rules = route.data["spec"]["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for rule in rules {
        let refs = rule["backendRefs"].as_array().cloned().unwrap_or_default();
        let w = |name: &str| {
            refs.iter()
                .find(|r| r["name"] == name)
                .map(|r| r["weight"].as_i64().unwrap_or(1))
        };
        if let Some(p) = w(primary) {
            let c = w(canary).unwrap_or(0);
            return if p + c == 0 {
                0
            } else {
                (c * 100 + (p + c) / 2) / (p + c)
            };
        }
    }
    0
}
