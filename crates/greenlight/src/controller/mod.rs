//! The IO shell around the pure machine: observe (the [`Index`] and [`fresh`] reads), decide
//! ([`crate::machine`]), effect (the one [`writer::Writer`]). Four controllers share one
//! [`Context`]: Stages (promotion, rollout and StageCommands), Releases (their overall phase),
//! Gates (their validity and who changed them) and Approvals (their verification and audit
//! record). Their queues are fed by the index's changes ([`queue`]). With leader election
//! they run on the leader only; the writer is fenced by its lease.

pub mod approval;
pub mod backoff;
pub mod canary;
pub mod changes;
pub mod effects;
pub mod error;
pub mod finalize;
pub mod fresh;
pub mod gate;
pub mod jobs;
pub mod notifier;
pub mod notify;
pub mod observe;
pub mod patch;
pub mod pins;
pub mod protection;
pub mod queue;
pub mod release;
pub mod retention;
pub mod runner;
pub mod secrets;
pub mod stage;
pub mod steering;
pub mod wake;
pub mod worknotes;
pub mod writer;

#[cfg(test)]
mod fixtures;

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::identity::IdentityKey;
use crate::index::Index;
use crate::metrics::Metrics;
use error::ReconcileError;

/// Everything a reconciliation needs besides the object.
pub struct Context {
    pub client: Client,
    pub namespace: Option<String>,
    pub metrics: Arc<Metrics>,
    pub index: Arc<Index>,
    pub runner: runner::GateRunner,
    pub writer: Arc<writer::Writer>,
    pub backoff: backoff::Backoff,
    pub queue: Arc<queue::Queue>,
    /// The Deployments and Services stages read, current without a GET each pass.
    pub deployments: fresh::Fresh<Deployment>,
    pub services: fresh::Fresh<Service>,
    /// How long handled StageCommands and Approvals of finished Releases are kept.
    pub retention: jiff::SignedDuration,
}

/// How the operator is configured.
pub struct Settings {
    /// Watch only this namespace; all namespaces when `None`.
    pub namespace: Option<String>,
    pub webhook_allow: crate::gates::allow::AllowList,
    /// The Prometheus of gates that name none; already on `webhook_allow`.
    pub prometheus_address: Option<String>,
    pub identity: Arc<IdentityKey>,
    /// Serve the admission webhooks; off when `None`.
    pub admission: Option<crate::admission::ServerConfig>,
    /// Elect a leader among replicas on this Lease; when `None`, this replica always leads.
    pub leader: Option<crate::leader::LeaseConfig>,
    /// The period the DORA metrics cover.
    pub dora_window: jiff::SignedDuration,
    /// How many objects each controller reconciles at once.
    pub concurrency: u16,
    /// How long handled StageCommands and Approvals of finished Releases are kept.
    pub retention: jiff::SignedDuration,
    /// The operator's own ServiceAccount, which no Job gate may run under.
    pub operator_account: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Admission(#[from] crate::admission::AdmissionError),
    #[error("stopped leading: {0}")]
    LostLeadership(#[from] crate::leader::LeadershipError),
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
}

/// After a failed reconcile, the object backs off (see [`backoff`]); the error is counted.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    controller: &'static str,
) -> impl Fn(Arc<K>, &ReconcileError, Arc<Context>) -> Action {
    move |obj, error, ctx| {
        if let ReconcileError::BackingOff(left) = error {
            return Action::requeue(*left);
        }
        // Someone wrote the object since it was read: decide again soon on what is there, with
        // no growing backoff (a retreat above all must not wait on a label's churn).
        let conflict = match error {
            ReconcileError::Conflict(what) => Some(*what),
            ReconcileError::Write(writer::WriteError::Refused {
                kind,
                reason: "Conflict",
                ..
            }) => Some(*kind),
            _ => None,
        };
        if let Some(what) = conflict {
            tracing::debug!(
                controller,
                what,
                "written since it was read; deciding again"
            );
            return Action::requeue(std::time::Duration::from_secs(1));
        }
        warn!(controller, error = %error, "reconcile failed");
        ctx.metrics
            .reconcile_errors
            .get_or_create(&crate::metrics::ErrorLabels {
                controller,
                error: error.label(),
            })
            .inc();
        let key = backoff_key(controller, &*obj);
        Action::requeue(ctx.backoff.failed(&key, fingerprint(&*obj, &ctx.index)))
    }
}

/// Keyed by uid too, so an object deleted and created again starts afresh.
pub(crate) fn backoff_key<K: ResourceExt>(controller: &str, obj: &K) -> String {
    format!(
        "{controller}/{}/{}/{}",
        obj.namespace().unwrap_or_default(),
        obj.name_any(),
        obj.uid().unwrap_or_default()
    )
}

/// What ends an object's backoff when it changes: its spec, or (for a Stage) a new
/// StageCommand for it.
pub(crate) fn fingerprint<K: Resource<DynamicType = ()>>(
    obj: &K,
    index: &crate::index::Index,
) -> backoff::Fingerprint {
    let commands = match K::kind(&()).as_ref() {
        "Stage" => index
            .pending_commands(&obj.namespace().unwrap_or_default(), &obj.name_any())
            .iter()
            .map(|c| c.name_any())
            .collect(),
        _ => vec![],
    };
    backoff::Fingerprint {
        generation: obj.meta().generation,
        commands,
    }
}

/// The namespace and name of an object a controller was handed.
pub(crate) fn key<K: ResourceExt>(obj: &K) -> Result<(String, String), ReconcileError> {
    let namespace = obj
        .namespace()
        .ok_or(ReconcileError::MissingField("metadata.namespace"))?;
    Ok((namespace, obj.name_any()))
}

/// Runs one reconciliation inside a span that names the object, and records how long it
/// took. A panic in it becomes an error on that object, never the end of the process.
/// A clean pass ends the object's backoff.
pub(crate) async fn instrumented<K: ResourceExt>(
    controller: &'static str,
    obj: &K,
    ctx: &Context,
    work: impl std::future::Future<Output = Result<Action, ReconcileError>>,
) -> Result<Action, ReconcileError> {
    use futures::FutureExt;
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let (namespace, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    ctx.queue
        .started(controller, obj.namespace().as_deref(), &name);
    let span = tracing::info_span!("reconcile", controller, namespace = %namespace, name = %name);
    let pass = std::panic::AssertUnwindSafe(work.instrument(span)).catch_unwind();
    let (result, wrote) = crate::metrics::noting_writes(pass).await;
    let result = result.unwrap_or_else(|panic| Err(ReconcileError::Panicked(panic_message(panic))));
    ctx.metrics
        .observe_reconcile(controller, started.elapsed(), wrote);
    if result.is_ok() {
        ctx.backoff.succeeded(&backoff_key(controller, obj));
    }
    result
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// Runs the admission webhook server (if enabled) on every replica, and the controllers on the
/// leader, until a shutdown signal arrives or leadership is lost.
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    settings: Settings,
) -> Result<(), RunError> {
    let namespace = settings.namespace;
    let (index, tasks) = Index::watch(&client, &namespace, settings.identity);
    for task in tasks {
        tokio::spawn(task);
    }
    let leadership = settings
        .leader
        .map(|config| Arc::new(crate::leader::Leadership::new(client.clone(), config)));
    let writer = Arc::new(writer::Writer::fenced_by(
        client.clone(),
        metrics.clone(),
        leadership.clone(),
        &index,
    ));
    let env = crate::gates::GateEnv {
        http: crate::gates::http_client(&settings.webhook_allow),
        webhook_allow: settings.webhook_allow,
        prometheus_address: settings.prometheus_address,
        jobs: Some(Arc::new(jobs::JobShell::new(
            index.clone(),
            client.clone(),
            writer.clone(),
        ))),
        operator_account: settings.operator_account,
    };
    let (deployments, services) = fresh::for_index(&index, &client, &metrics);
    let runner =
        runner::GateRunner::new(env.clone(), index.clone(), client.clone(), metrics.clone());
    let ctx = Arc::new(Context {
        client: client.clone(),
        namespace: namespace.clone(),
        metrics: metrics.clone(),
        index: index.clone(),
        runner,
        writer,
        deployments,
        services,
        backoff: Default::default(),
        queue: Arc::new(queue::Queue::new(metrics.clone(), settings.concurrency)),
        retention: settings.retention,
    });
    let synced = index.wait_until_synced().await;
    if !synced {
        warn!("a watch cache did not become ready");
    }
    // Served once the caches hold everything, so a restart never shows figures from half a list.
    let state = crate::insight::collector::StateCollector::new(index.clone(), settings.dora_window);
    metrics.collect_state(Box::new(state));
    if let Some(config) = settings.admission {
        let state = crate::admission::AdmissionState {
            index: index.clone(),
            // Admission compiles Gates; it never runs a Job.
            gate_env: crate::gates::GateEnv { jobs: None, ..env },
            metrics: metrics.clone(),
            client: client.clone(),
            lease_writer: config.lease_writer.clone(),
        };
        crate::admission::start(config, Arc::new(state)).await?;
    }
    metrics
        .ready
        .store(synced, std::sync::atomic::Ordering::SeqCst);
    match leadership {
        None => {
            controllers(ctx, &client, &namespace).await;
            Ok(())
        }
        Some(lease) => lead(lease, ctx, &client, &namespace).await,
    }
}

/// Stands by until this replica holds the lease, then runs the controllers while it does;
/// gives the lease up on shutdown, so a standby takes over at once.
async fn lead(
    lease: Arc<crate::leader::Leadership>,
    ctx: Arc<Context>,
    client: &Client,
    namespace: &Option<String>,
) -> Result<(), RunError> {
    tracing::info!("standing by for the leader lease");
    tokio::spawn(watch_silence(lease.clone(), ctx.metrics.clone()));
    tokio::select! {
        _ = lease.acquire() => {}
        _ = terminated() => return Ok(()),
    }
    let metrics = ctx.metrics.clone();
    ctx.writer.events.begin_leading();
    leadership_changed(&metrics, true);
    let outcome = tokio::select! {
        _ = controllers(ctx, client, namespace) => Ok(()),
        lost = lease.hold() => Err(RunError::LostLeadership(lost)),
    };
    leadership_changed(&metrics, false);
    lease.release().await;
    outcome
}

/// Tells, in a metric and in `/readyz`, how long no replica has renewed the lease.
async fn watch_silence(lease: Arc<crate::leader::Leadership>, metrics: Arc<Metrics>) {
    loop {
        let silence = lease.silence();
        metrics.lease_silence.set(silence.as_secs_f64());
        let leaderless = silence > lease.duration() * 2;
        let was = metrics
            .leaderless
            .swap(leaderless, std::sync::atomic::Ordering::SeqCst);
        if leaderless && !was {
            warn!(
                ?silence,
                "no replica has renewed the leader lease for two lease durations"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

fn leadership_changed(metrics: &Metrics, leading: bool) {
    metrics.leader.set(i64::from(leading));
    metrics.leadership_changes.inc();
    match leading {
        true => tracing::info!("became leader: reconciling"),
        false => tracing::info!("stopped leading: no more writes"),
    }
}

/// SIGTERM or Ctrl-C.
async fn terminated() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler can be installed");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The controllers, until a shutdown signal: each finishes the reconciles it has begun.
async fn controllers(ctx: Arc<Context>, client: &Client, namespace: &Option<String>) {
    tracing::info!(
        namespace = namespace.as_deref().unwrap_or("<all>"),
        "controllers started"
    );
    let notices = notify::deliver_notices(ctx.clone(), namespace.clone());
    let sweeps = retention::collect(ctx.clone(), ctx.retention);
    let reconcilers = async {
        tokio::join!(
            stage::controller(ctx.clone(), client, namespace),
            release::controller(ctx.clone()),
            gate::controller(ctx.clone()),
            approval::controller(ctx.clone()),
        )
    };
    // Notices are delivered for as long as the reconcilers run (they end at shutdown).
    tokio::select! {
        _ = reconcilers => {}
        _ = notices => {}
        _ = sweeps => {}
    }
}

pub(crate) fn refs_of<K: Resource<DynamicType = ()>>(
    objs: impl IntoIterator<Item = Arc<K>>,
) -> Vec<ObjectRef<K>> {
    objs.into_iter().map(|o| ObjectRef::from_obj(&*o)).collect()
}
