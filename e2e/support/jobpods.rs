//! The fake kubelet's Job pods. Each runs its first container's command as a host process,
//! with the pod's environment and a working directory of its own, killed at the Job's
//! deadline. Its exit code becomes the container's `terminated` state and the last lines of
//! its output the termination message, as `FallbackToLogsOnError` has a real kubelet do, so
//! the real Job controller marks the Job `Complete` or `Failed`.
//!
//! A host process has no cluster DNS: an address `<service>.<namespace>.svc[:port]` in its
//! environment is rewritten to what serves that Service, as DNS and kube-proxy would send it
//! there: the app process of the image its ready pods run, or its Endpoints' first address.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Endpoints, Pod, Secret, Service};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// The kubelet's limits on a termination message read from the logs.
const MESSAGE_LINES: usize = 80;
pub const MESSAGE_BYTES: usize = 2048;
/// How long a Job pod may run when its Job sets no deadline.
const LONGEST_RUN: Duration = Duration::from_secs(300);

#[derive(Clone, Default)]
pub struct JobPods {
    /// The processes started, by pod uid (running or done).
    running: Arc<Mutex<HashMap<String, tokio::task::AbortHandle>>>,
    /// Where the app process of an image listens, for Services that select its pods.
    images: Arc<Mutex<BTreeMap<String, u16>>>,
    /// Where any other image's app listens, if one does.
    default_port: Arc<Mutex<Option<u16>>>,
    dir: Arc<Mutex<Option<PathBuf>>>,
}

/// Whether the pod belongs to a Job.
pub fn is_job_pod(pod: &Pod) -> bool {
    pod.owner_references().iter().any(|o| o.kind == "Job")
}

impl JobPods {
    /// Pods of this image answer on this port of the host.
    pub fn serve_image(&self, image: &str, port: u16) {
        self.images.lock().unwrap().insert(image.to_string(), port);
    }

    /// Pods of any other image answer on this port.
    pub fn serve_default(&self, port: u16) {
        *self.default_port.lock().unwrap() = Some(port);
    }

    /// Where a Job pod's working directory is (its files stay after it ends).
    pub fn workdir(&self, namespace: &str, pod: &str) -> PathBuf {
        let mut dir = self.dir.lock().unwrap();
        let base = dir.get_or_insert_with(|| {
            let name = format!("greenlight-jobpods-{}", std::process::id());
            std::env::temp_dir().join(name)
        });
        base.join(namespace).join(pod)
    }

    /// Starts a bound Job pod's process once; kills it when the pod is deleted.
    pub async fn tend(&self, client: &Client, pod: &Pod) -> Result<(), kube::Error> {
        let uid = pod.uid().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            if let Some(process) = self.running.lock().unwrap().remove(&uid) {
                process.abort();
            }
            return Ok(());
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed"))
            || self.running.lock().unwrap().contains_key(&uid)
        {
            return Ok(());
        }
        let task = tokio::spawn(self.clone().run(client.clone(), pod.clone()));
        self.running
            .lock()
            .unwrap()
            .insert(uid, task.abort_handle());
        Ok(())
    }

    async fn run(self, client: Client, pod: Pod) {
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        let started = jiff::Timestamp::now();
        if let Err(e) = mark_running(&client, &pod, started).await {
            eprintln!("fake kubelet: job pod {ns}/{name}: {e}");
        }
        let (code, output) = match self.execute(&client, &pod).await {
            Ok(done) => done,
            Err(why) => (128, why),
        };
        if let Err(e) = mark_finished(&client, &pod, started, code, &output).await {
            eprintln!("fake kubelet: job pod {ns}/{name}: {e}");
        }
        // Its uid stays in `running`: a watch that has not brought the end yet must not
        // start it again.
    }

    /// Runs the first container's command; its exit code and its output.
    async fn execute(&self, client: &Client, pod: &Pod) -> Result<(i32, String), String> {
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        let spec = pod.spec.clone().unwrap_or_default();
        let container = spec.containers.first().ok_or("no container")?;
        let argv: Vec<String> = container
            .command
            .iter()
            .flatten()
            .chain(container.args.iter().flatten())
            .cloned()
            .collect();
        let (program, args) = argv.split_first().ok_or("no command")?;
        let dir = self.workdir(&ns, &name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let env = self.environment(client, &ns, &name, container).await?;
        let log = dir.join("output.log");
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .envs(env)
            .current_dir(&dir)
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        let deadline = spec
            .active_deadline_seconds
            .map_or(LONGEST_RUN, |s| Duration::from_secs(s.max(1) as u64));
        let code = match tokio::time::timeout(deadline, child.wait()).await {
            Ok(Ok(status)) => status.code().unwrap_or(137),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => 137,
        };
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        Ok((code, output))
    }

    /// The container's environment, as the kubelet gives it: values, Secret keys and the
    /// pod's own name and namespace; Service addresses rewritten to what serves them.
    async fn environment(
        &self,
        client: &Client,
        ns: &str,
        pod: &str,
        container: &Container,
    ) -> Result<Vec<(String, String)>, String> {
        let mut env = vec![
            (
                "PATH".to_string(),
                std::env::var("PATH").unwrap_or_default(),
            ),
            (
                "HOME".to_string(),
                self.workdir(ns, pod).display().to_string(),
            ),
            ("HOSTNAME".to_string(), pod.to_string()),
        ];
        for var in container.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => match &from.secret_key_ref {
                    Some(s) => secret_value(client, ns, &s.name, &s.key).await?,
                    None => {
                        return Err(format!(
                            "env {}: only values and secretKeyRef are run here",
                            var.name
                        ));
                    }
                },
                (None, None) => String::new(),
            };
            let value = self.rewrite_services(client, ns, &value).await;
            env.push((var.name.clone(), value));
        }
        Ok(env)
    }

    /// `<service>.<namespace>.svc[.cluster.local][:port]` in `value`, each replaced with the
    /// host address that serves it; one nothing serves is left as it is.
    async fn rewrite_services(&self, client: &Client, ns: &str, value: &str) -> String {
        let mut out = value.to_string();
        for found in service_addresses(value) {
            if let Some(to) = self.serving(client, ns, &found).await {
                out = out.replace(&found.text, &to);
            }
        }
        out
    }

    async fn serving(&self, client: &Client, ns: &str, found: &ServiceAddress) -> Option<String> {
        let namespace = if found.namespace.is_empty() {
            ns
        } else {
            &found.namespace
        };
        let services: Api<Service> = Api::namespaced(client.clone(), namespace);
        let service = services.get_opt(&found.service).await.ok()??;
        let selector = service.spec.as_ref()?.selector.clone().unwrap_or_default();
        if selector.is_empty() {
            let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), namespace);
            let e = endpoints.get_opt(&found.service).await.ok()??;
            let subset = e.subsets?.into_iter().next()?;
            let ip = subset.addresses?.first()?.ip.clone();
            let port = subset.ports?.first()?.port;
            return Some(format!("{ip}:{port}"));
        }
        let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let list = pods
            .list(&ListParams::default().labels(&labels.join(",")))
            .await
            .ok()?;
        let ready = list.items.iter().find(|p| {
            let conditions = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })?;
        let image = ready.spec.as_ref()?.containers.first()?.image.clone()?;
        let port = self.images.lock().unwrap().get(&image).copied();
        let port = port.or(*self.default_port.lock().unwrap())?;
        Some(format!("127.0.0.1:{port}"))
    }
}

/// One Service address found in a value.
#[derive(Debug, PartialEq)]
pub struct ServiceAddress {
    /// The text to replace: the name, `.svc`, any `.cluster.local` and any `:port`.
    pub text: String,
    pub service: String,
    pub namespace: String,
}

/// Every `<service>.<namespace>.svc…` in `value`, and every URL whose host is a bare
/// Service name (`postgresql://user@db:5432/…`), which cluster DNS resolves in the pod's own
/// namespace.
pub fn service_addresses(value: &str) -> Vec<ServiceAddress> {
    let mut found = qualified_addresses(value);
    found.extend(short_url_hosts(value));
    found
}

/// The `<service>[:port]` of each URL in `value` whose host is one DNS label (not
/// `localhost`, not an address).
fn short_url_hosts(value: &str) -> Vec<ServiceAddress> {
    let mut found = Vec::new();
    for (at, _) in value.match_indices("://") {
        let rest = &value[at + 3..];
        let end = rest
            .find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'') || c.is_whitespace())
            .unwrap_or(rest.len());
        let authority = &rest[..end];
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = host_port.split(':').next().unwrap_or_default();
        let label = host.starts_with(|c: char| c.is_ascii_lowercase())
            && host
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if label && host != "localhost" {
            found.push(ServiceAddress {
                text: host_port.to_string(),
                service: host.to_string(),
                namespace: String::new(),
            });
        }
    }
    found
}

fn qualified_addresses(value: &str) -> Vec<ServiceAddress> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    let mut found = Vec::new();
    for (at, _) in value.match_indices(".svc") {
        let head = &value[..at];
        let start = head.rfind(|c: char| !is_name(c)).map_or(0, |i| i + 1);
        let Some((service, namespace)) = value[start..at].split_once('.') else {
            continue;
        };
        let mut end = at + ".svc".len();
        if value[end..].starts_with(".cluster.local") {
            end += ".cluster.local".len();
        }
        if let Some(rest) = value[end..].strip_prefix(':') {
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            end += 1 + digits;
        }
        let boundary = value[end..].chars().next().is_none_or(|c| !is_name(c));
        if boundary && !service.is_empty() && !namespace.contains('.') {
            found.push(ServiceAddress {
                text: value[start..end].to_string(),
                service: service.to_string(),
                namespace: namespace.to_string(),
            });
        }
    }
    found
}

async fn secret_value(client: &Client, ns: &str, name: &str, key: &str) -> Result<String, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = secrets
        .get(name)
        .await
        .map_err(|e| format!("Secret {name}: {e}"))?;
    let data = secret.data.unwrap_or_default();
    let value = data
        .get(key)
        .ok_or_else(|| format!("Secret {name} has no key {key}"))?;
    Ok(String::from_utf8_lossy(&value.0).into_owned())
}

async fn mark_running(
    client: &Client,
    pod: &Pod,
    started: jiff::Timestamp,
) -> Result<(), kube::Error> {
    let now = started.to_string();
    let containers = container_states(pod, json!({"running": {"startedAt": now}}), false);
    let patch = json!({"status": {
        "phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "startTime": now,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
        ],
        "containerStatuses": containers,
    }});
    patch_status(client, pod, patch).await
}

/// The pod's end, as a kubelet reports it: `Succeeded` or `Failed`, the container
/// terminated with its exit code and, on failure, the last lines of its output.
async fn mark_finished(
    client: &Client,
    pod: &Pod,
    started: jiff::Timestamp,
    code: i32,
    output: &str,
) -> Result<(), kube::Error> {
    let now = jiff::Timestamp::now().to_string();
    let (phase, reason, ready_reason) = match code {
        0 => ("Succeeded", "Completed", "PodCompleted"),
        _ => ("Failed", "Error", "ContainersNotReady"),
    };
    let mut terminated = json!({
        "exitCode": code, "reason": reason,
        "startedAt": started.to_string(), "finishedAt": now,
    });
    if code != 0 {
        terminated["message"] = json!(log_tail(output));
    }
    let containers = container_states(pod, json!({ "terminated": terminated }), false);
    let patch = json!({"status": {
        "phase": phase,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "False", "reason": ready_reason, "lastTransitionTime": now},
            {"type": "Ready", "status": "False", "reason": ready_reason, "lastTransitionTime": now},
        ],
        "containerStatuses": containers,
    }});
    patch_status(client, pod, patch).await
}

fn container_states(pod: &Pod, state: serde_json::Value, ready: bool) -> Vec<serde_json::Value> {
    let spec = pod.spec.clone().unwrap_or_default();
    spec.containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "image": c.image, "imageID": c.image, "ready": ready,
                "restartCount": 0, "state": state,
            })
        })
        .collect()
}

async fn patch_status(
    client: &Client,
    pod: &Pod,
    patch: serde_json::Value,
) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    match api
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        result => result.map(|_| ()),
    }
}

/// The last [`MESSAGE_LINES`] lines of the output, cut to its last [`MESSAGE_BYTES`] bytes.
pub fn log_tail(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let tail = lines[lines.len().saturating_sub(MESSAGE_LINES)..].join("\n");
    let cut = tail.len().saturating_sub(MESSAGE_BYTES);
    let cut = (cut..=tail.len())
        .find(|i| tail.is_char_boundary(*i))
        .unwrap_or(tail.len());
    tail[cut..].to_string()
}
