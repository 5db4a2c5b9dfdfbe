//! The IO layer: watches the cluster, feeds the pure state machine and applies its decisions.
//! Four controllers share one [`Context`]: Stages (promotion and rollout), Releases (their
//! overall phase), Gates (their validity) and Approvals (their verification and audit record).
//! The admission webhook server, when enabled, shares the same caches.

pub mod approval;
pub mod audit;
pub mod canary;
pub mod error;
pub mod gate;
pub mod patch;
pub mod release;
pub mod secrets;
pub mod stage;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::api::{Approval, Gate, Release, Stage};
use crate::identity::IdentityKey;
use crate::metrics::Metrics;
use error::ReconcileError;

/// Everything a reconciliation needs besides the object.
pub struct Context {
    pub client: Client,
    pub namespace: Option<String>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub gate_env: crate::gates::GateEnv,
    /// Gates that did not pass, by stage, release and gate, kept until their recheck time.
    pub held_gates: std::sync::Mutex<
        std::collections::HashMap<String, (jiff::Timestamp, crate::gates::GateOutcome)>,
    >,
    pub stages: Store<Stage>,
    pub releases: Store<Release>,
    pub gates: Store<Gate>,
    pub approvals: Store<Approval>,
    /// Signs and checks the identity stamps of the admission webhook.
    pub identity: Arc<IdentityKey>,
}

/// How the operator is configured.
pub struct Settings {
    /// Watch only this namespace; all namespaces when `None`.
    pub namespace: Option<String>,
    pub webhook_allow: crate::gates::allow::AllowList,
    pub identity: Arc<IdentityKey>,
    /// Serve the admission webhooks; off when `None`.
    pub admission: Option<crate::admission::ServerConfig>,
}

impl Context {
    pub fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        self.metrics.write("event");
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            warn!(error = %e, reason, "could not publish event");
        }
    }
}

pub(crate) fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A cache of all objects of a kind, kept up to date by a watch.
fn cache<K>(api: Api<K>) -> (Store<K>, impl std::future::Future<Output = ()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    )
    .applied_objects()
    .for_each(|_| futures::future::ready(()));
    (reader, stream)
}

/// Stages of the same pipeline in the same namespace as `(namespace, pipeline)`.
pub fn pipeline_stages(store: &Store<Stage>, namespace: &str, pipeline: &str) -> Vec<Arc<Stage>> {
    let mut stages: Vec<Arc<Stage>> = store
        .state()
        .into_iter()
        .filter(|s| s.namespace().as_deref() == Some(namespace) && s.spec.pipeline == pipeline)
        .collect();
    stages.sort_by_key(|s| s.name_any());
    stages
}

/// Releases of one pipeline, oldest first (creation time, then name).
pub fn pipeline_releases(
    store: &Store<Release>,
    namespace: &str,
    pipeline: &str,
) -> Vec<Arc<Release>> {
    let mut releases: Vec<Arc<Release>> = store
        .state()
        .into_iter()
        .filter(|r| r.namespace().as_deref() == Some(namespace) && r.spec.pipeline == pipeline)
        .collect();
    releases.sort_by(|a, b| {
        let created = |r: &Release| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        created(a)
            .cmp(&created(b))
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    releases
}

/// Why a Release must not be rolled out, if it must not: its spec is invalid, or it was edited
/// after creation (possible only with the admission webhooks off; Releases are immutable).
pub(crate) fn release_problem(release: &Release) -> Option<String> {
    if let Err(errors) = crate::api::validation::validate_release(&release.spec) {
        return Some(errors.to_string());
    }
    match release.metadata.generation {
        Some(generation) if generation > 1 => Some(format!(
            "spec: edited after creation (generation {generation}); a Release is immutable, publish a new Release instead"
        )),
        _ => None,
    }
}

pub fn error_policy<K>(
    controller: &'static str,
) -> impl Fn(Arc<K>, &ReconcileError, Arc<Context>) -> Action {
    move |_obj, error, ctx| {
        warn!(controller, error = %error, "reconcile failed");
        ctx.metrics
            .reconcile_errors
            .get_or_create(&crate::metrics::ErrorLabels {
                controller,
                error: error.label(),
            })
            .inc();
        Action::requeue(Duration::from_secs(5))
    }
}

/// The namespace and name of an object a controller was handed.
pub(crate) fn key<K: ResourceExt>(obj: &K) -> Result<(String, String), ReconcileError> {
    let namespace = obj
        .namespace()
        .ok_or(ReconcileError::MissingField("metadata.namespace"))?;
    Ok((namespace, obj.name_any()))
}

/// Runs one reconciliation inside a span that names the object, and records how long it took.
pub(crate) async fn instrumented(
    controller: &'static str,
    kind: &'static str,
    (namespace, name): &(String, String),
    ctx: &Context,
    work: impl std::future::Future<Output = Result<Action, ReconcileError>>,
) -> Result<Action, ReconcileError> {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let result = work
        .instrument(tracing::info_span!("reconcile", kind, namespace = %namespace, name = %name))
        .await;
    ctx.metrics.observe_reconcile(controller, started.elapsed());
    result
}

/// Runs the controllers (and the admission webhook server, if enabled) until a shutdown
/// signal arrives.
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    settings: Settings,
) -> Result<(), crate::admission::AdmissionError> {
    let namespace = settings.namespace;
    let (stages, stages_task) = cache::<Stage>(scoped(&client, &namespace));
    let (releases, releases_task) = cache::<Release>(scoped(&client, &namespace));
    let (gates, gates_task) = cache::<Gate>(scoped(&client, &namespace));
    let (approvals, approvals_task) = cache::<Approval>(scoped(&client, &namespace));
    let reporter = Reporter {
        controller: "greenlight".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        namespace: namespace.clone(),
        metrics,
        recorder: Recorder::new(client.clone(), reporter),
        gate_env: crate::gates::GateEnv {
            http: crate::gates::http_client(),
            webhook_allow: settings.webhook_allow,
        },
        held_gates: Default::default(),
        stages: stages.clone(),
        releases: releases.clone(),
        gates: gates.clone(),
        approvals: approvals.clone(),
        identity: settings.identity,
    });
    tokio::spawn(stages_task);
    tokio::spawn(releases_task);
    tokio::spawn(gates_task);
    tokio::spawn(approvals_task);
    for (name, store) in [
        ("stages", stages.wait_until_ready().await.is_ok()),
        ("releases", releases.wait_until_ready().await.is_ok()),
        ("gates", gates.wait_until_ready().await.is_ok()),
        ("approvals", approvals.wait_until_ready().await.is_ok()),
    ] {
        if !store {
            warn!(cache = name, "cache did not become ready");
        }
    }
    if let Some(config) = settings.admission {
        crate::admission::start(config, ctx.clone()).await?;
    }
    tracing::info!(
        namespace = namespace.as_deref().unwrap_or("<all>"),
        "controllers started"
    );
    tokio::join!(
        stage::controller(ctx.clone(), &client, &namespace),
        release::controller(ctx.clone(), &client, &namespace),
        gate::controller(ctx.clone(), &client, &namespace),
        approval::controller(ctx, &client, &namespace),
    );
    Ok(())
}

pub(crate) fn refs_of<K: Resource<DynamicType = ()>>(
    objs: impl IntoIterator<Item = Arc<K>>,
) -> Vec<ObjectRef<K>> {
    objs.into_iter().map(|o| ObjectRef::from_obj(&*o)).collect()
}

pub(crate) use scoped as scoped_api;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_edited_after_creation_is_not_rolled_out() {
        let mut release: Release = serde_json::from_value(serde_json::json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": "r", "generation": 1},
            "spec": {"pipeline": "web", "version": "1",
                     "artifacts": [{"name": "web", "image": format!("r/w@sha256:{}", "a".repeat(64))}]}
        }))
        .unwrap();
        assert_eq!(release_problem(&release), None);
        release.metadata.generation = Some(2);
        let problem = release_problem(&release).unwrap();
        assert!(
            problem.starts_with("spec: edited after creation"),
            "{problem}"
        );
        release.spec.artifacts[0].image = "r/w:latest".into();
        assert!(
            release_problem(&release)
                .unwrap()
                .contains("spec.artifacts[0].image")
        );
    }
}
