//! The closed loop's network: one app process per release image, and a load generator that
//! splits real HTTP requests between the primary and the canary by the weights the operator
//! wrote into the HTTPRoute, sending each to the process of the image that workload runs.

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
            let behaviour = if image.contains(":faulty@") {
                "faulty"
            } else {
                "healthy"
            };
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

pub struct LoadGenerator {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub sent: Arc<Mutex<BTreeMap<String, u64>>>,
    task: tokio::task::JoinHandle<()>,
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
        let (seen2, sent2) = (seen.clone(), sent.clone());
        let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
        let routes: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &ApiResource::from_gvk(&gvk));
        let deployments: Api<Deployment> = Api::namespaced(client, namespace);
        let (route, primary, canary) = (
            route.to_string(),
            format!("{target}-primary"),
            format!("{target}-canary"),
        );
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut weight = 0i64;
            let mut images: BTreeMap<String, String> = BTreeMap::new();
            let mut n: u64 = 0;
            let period = Duration::from_micros(1_000_000 / rps.max(1));
            loop {
                if n.is_multiple_of(10) {
                    if let Ok(r) = routes.get(&route).await {
                        let w = canary_weight(&r, &primary, &canary);
                        if w != weight || n == 0 {
                            weight = w;
                            seen2.lock().unwrap().push(Seen {
                                at: Timestamp::now(),
                                canary_weight: w as i32,
                            });
                        }
                    }
                    for name in [&primary, &canary] {
                        if let Ok(Some(d)) = deployments.get_opt(name).await {
                            let image = d
                                .spec
                                .and_then(|s| s.template.spec)
                                .and_then(|p| p.containers.first().and_then(|c| c.image.clone()));
                            if let Some(image) = image {
                                images.insert(name.clone(), image);
                            }
                        }
                    }
                }
                let workload = if ((n % 100) as i64) < weight {
                    &canary
                } else {
                    &primary
                };
                if let Some(port) = images.get(workload).and_then(|i| ports.get(i)) {
                    let _ = http
                        .get(format!("http://127.0.0.1:{port}/?workload={workload}"))
                        .timeout(Duration::from_secs(1))
                        .send()
                        .await;
                    *sent2.lock().unwrap().entry(workload.clone()).or_default() += 1;
                }
                n += 1;
                tokio::time::sleep(period).await;
            }
        });
        LoadGenerator { seen, sent, task }
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
