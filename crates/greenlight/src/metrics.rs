//! Every metric the operator exports, registered in one place, and the HTTP endpoint that
//! serves them with the health probes.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PassLabels {
    pub controller: &'static str,
    /// `true` when the pass wrote to the Kubernetes API: its time is then mostly the
    /// apiserver's answers, one write after another.
    pub wrote: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GateLabels {
    pub gate_type: &'static str,
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    /// `rolling` or `canary`.
    pub strategy: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `deployment` or `service`.
    pub kind: &'static str,
    /// `current` (the body held was still the apiserver's version) or `read` (it was read).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub kind: &'static str,
    /// The apiserver's reason, e.g. `Forbidden`, `Conflict`, `Invalid`, or `transport`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub webhook: &'static str,
    pub kind: &'static str,
    pub allowed: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// `slack`, `teams` or `webhook`.
    pub notifier_type: &'static str,
    /// `sent`, or `failed` (an attempt that is retried until the notice is an hour old).
    pub outcome: &'static str,
}

pub struct Metrics {
    pub reconciles: Family<ControllerLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<PassLabels, Histogram>,
    pub gate_evaluations: Family<GateLabels, Counter>,
    pub rollouts: Family<RolloutLabels, Counter>,
    pub rollout_duration: Family<DurationLabels, Histogram>,
    /// Objects a watch event queued for reconciliation whose reconcile has not begun.
    pub queue_depth: Family<ControllerLabels, prometheus_client::metrics::gauge::Gauge>,
    /// How long a queued object waited for its reconcile to begin.
    pub queue_wait: Family<ControllerLabels, Histogram>,
    pub api_writes: Family<WriteLabels, Counter>,
    pub api_write_refusals: Family<RefusalLabels, Counter>,
    pub workload_reads: Family<CacheLabels, Counter>,
    pub admission_reviews: Family<AdmissionLabels, Counter>,
    pub webhook_certificate_reloads: Counter,
    pub notifications: Family<NotificationLabels, Counter>,
    /// 1 while this replica leads (reconciles and writes), else 0.
    pub leader: prometheus_client::metrics::gauge::Gauge,
    pub leadership_changes: Counter,
    pub lease_silence: SilenceGauge,
    /// Set while no replica has renewed the leader lease for two lease durations: `/readyz`
    /// answers 503 then, as nothing reconciles.
    pub leaderless: std::sync::atomic::AtomicBool,
    /// Set while the identity key's Secret cannot be read: `/readyz` answers 503, as this
    /// replica may be signing with a key the others have rotated away from.
    pub identity_unreadable: std::sync::atomic::AtomicBool,
    /// Set once the watch caches have synced; `/readyz` answers 503 until then.
    pub ready: std::sync::atomic::AtomicBool,
    /// The series read from the watched state at each scrape, once the index exists.
    state: Arc<OnceLock<Box<dyn Collector>>>,
    registry: Registry,
}

tokio::task_local! {
    /// Whether the reconcile this task runs has written (see [`Metrics::write`]).
    static WROTE: std::cell::Cell<bool>;
}

/// Runs `pass` and tells whether it wrote: every write is counted through
/// [`Metrics::write`], within the pass's task.
pub async fn noting_writes<T>(pass: impl std::future::Future<Output = T>) -> (T, bool) {
    WROTE
        .scope(std::cell::Cell::new(false), async {
            let out = pass.await;
            (out, WROTE.with(|wrote| wrote.get()))
        })
        .await
}

/// Stands in for the state collector until [`Metrics::collect_state`] provides it.
#[derive(Debug)]
struct Deferred(Arc<OnceLock<Box<dyn Collector>>>);

impl Collector for Deferred {
    fn encode(&self, encoder: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        match self.0.get() {
            Some(collector) => collector.encode(encoder),
            None => Ok(()),
        }
    }
}

/// What the operator asks of the Kubernetes API.
type ApiMetrics = (
    Family<WriteLabels, Counter>,
    Family<RefusalLabels, Counter>,
    Family<CacheLabels, Counter>,
);

fn api_metrics(registry: &mut Registry) -> ApiMetrics {
    let api_writes = Family::<WriteLabels, Counter>::default();
    registry.register(
        "api_writes",
        "Writes to the Kubernetes API, by kind of write",
        api_writes.clone(),
    );
    let api_write_refusals = Family::<RefusalLabels, Counter>::default();
    registry.register(
        "api_write_refusals",
        "Writes the Kubernetes API refused or failed, by kind of write and reason",
        api_write_refusals.clone(),
    );
    let workload_reads = Family::<CacheLabels, Counter>::default();
    registry.register(
        "workload_reads",
        "Reads of a stage's Deployments and Services, by kind and by whether the body held was current or had to be read from the API",
        workload_reads.clone(),
    );
    (api_writes, api_write_refusals, workload_reads)
}

/// How long rollouts take, and how many objects wait for a reconcile.
type RolloutMetrics = (
    Family<DurationLabels, Histogram>,
    Family<ControllerLabels, prometheus_client::metrics::gauge::Gauge>,
    Family<ControllerLabels, Histogram>,
);

fn rollout_metrics(registry: &mut Registry) -> RolloutMetrics {
    let duration = Family::<DurationLabels, Histogram>::new_with_constructor(|| {
        Histogram::new(exponential_buckets(15.0, 2.0, 12))
    });
    registry.register(
        "rollout_duration_seconds",
        "Time from a rollout's start to its success or the end of its rollback, by strategy and outcome",
        duration.clone(),
    );
    let depth = Family::<ControllerLabels, prometheus_client::metrics::gauge::Gauge>::default();
    registry.register(
        "reconcile_queue_depth",
        "Objects a watch event queued for reconciliation whose reconcile has not begun, by controller",
        depth.clone(),
    );
    let wait = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
        Histogram::new(exponential_buckets(0.001, 2.0, 14))
    });
    registry.register(
        "reconcile_queue_wait_seconds",
        "Time from a watch event queueing an object to the start of its reconcile, by controller",
        wait.clone(),
    );
    (duration, depth, wait)
}

/// Notice deliveries: per notifier type and outcome, so bounded whatever the Notifiers.
fn notification_metrics(registry: &mut Registry) -> Family<NotificationLabels, Counter> {
    let notifications = Family::<NotificationLabels, Counter>::default();
    registry.register(
        "notifications",
        "Notice deliveries to Notifiers, by notifier type and outcome (sent, or failed and retried)",
        notifications.clone(),
    );
    notifications
}

/// Admission requests answered, and serving-certificate reloads.
fn admission_metrics(registry: &mut Registry) -> (Family<AdmissionLabels, Counter>, Counter) {
    let admission_reviews = Family::<AdmissionLabels, Counter>::default();
    registry.register(
        "admission_reviews",
        "Admission requests answered, by webhook (mutate or validate), kind and whether allowed",
        admission_reviews.clone(),
    );
    let webhook_certificate_reloads = Counter::default();
    registry.register(
        "webhook_certificate_reloads",
        "Times the admission webhook server took a new serving certificate",
        webhook_certificate_reloads.clone(),
    );
    (admission_reviews, webhook_certificate_reloads)
}

/// Whether this replica leads, and how often that changed.
fn leadership_metrics(
    registry: &mut Registry,
) -> (
    prometheus_client::metrics::gauge::Gauge,
    Counter,
    SilenceGauge,
) {
    let leader = prometheus_client::metrics::gauge::Gauge::default();
    registry.register(
        "leader",
        "1 while this replica holds the leader lease and reconciles, else 0",
        leader.clone(),
    );
    let changes = Counter::default();
    registry.register(
        "leadership_changes",
        "Times this replica became leader or stopped being leader",
        changes.clone(),
    );
    let silence = SilenceGauge::default();
    registry.register(
        "leader_lease_silence_seconds",
        "Seconds since this replica last saw any replica renew the leader lease; over two lease durations, no leader reconciles and /readyz says so",
        silence.clone(),
    );
    (leader, changes, silence)
}

/// A gauge of seconds, with fractions.
pub type SilenceGauge = prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>;

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("greenlight");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciliations run, by controller",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, by controller and error kind",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Family::<PassLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation, by controller and whether it wrote",
            reconcile_duration.clone(),
        );
        let gate_evaluations = Family::<GateLabels, Counter>::default();
        registry.register(
            "gate_evaluations",
            "Gate evaluations, by gate type and verdict",
            gate_evaluations.clone(),
        );
        let rollouts = Family::<RolloutLabels, Counter>::default();
        registry.register(
            "rollouts",
            "Finished rollouts, by outcome",
            rollouts.clone(),
        );
        let (api_writes, api_write_refusals, workload_reads) = api_metrics(&mut registry);
        let (admission_reviews, webhook_certificate_reloads) = admission_metrics(&mut registry);
        let notifications = notification_metrics(&mut registry);
        let (leader, leadership_changes, lease_silence) = leadership_metrics(&mut registry);
        let (rollout_duration, queue_depth, queue_wait) = rollout_metrics(&mut registry);
        let state = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(Deferred(state.clone())));
        Arc::new(Self {
            rollout_duration,
            queue_depth,
            queue_wait,
            state,
            leader,
            leadership_changes,
            lease_silence,
            leaderless: Default::default(),
            identity_unreadable: Default::default(),
            reconciles,
            reconcile_errors,
            reconcile_duration,
            gate_evaluations,
            rollouts,
            api_writes,
            api_write_refusals,
            workload_reads,
            admission_reviews,
            webhook_certificate_reloads,
            notifications,
            ready: Default::default(),
            registry,
        })
    }

    pub fn observe_reconcile(&self, controller: &'static str, took: Duration, wrote: bool) {
        self.reconciles
            .get_or_create(&ControllerLabels { controller })
            .inc();
        let wrote = if wrote { "true" } else { "false" };
        self.reconcile_duration
            .get_or_create(&PassLabels { controller, wrote })
            .observe(took.as_secs_f64());
    }

    pub fn write(&self, kind: &'static str) {
        self.api_writes.get_or_create(&WriteLabels { kind }).inc();
        let _ = WROTE.try_with(|wrote| wrote.set(true));
    }

    /// Serves the series `collector` reads from the watched state; the first one given stays.
    pub fn collect_state(&self, collector: Box<dyn Collector>) {
        let _ = self.state.set(collector);
    }

    pub fn cache_read(&self, kind: &'static str, outcome: &'static str) {
        self.workload_reads
            .get_or_create(&CacheLabels { kind, outcome })
            .inc();
    }

    pub fn refused(&self, kind: &'static str, reason: &'static str) {
        self.api_write_refusals
            .get_or_create(&RefusalLabels { kind, reason })
            .inc();
    }

    /// One sample in every family, so that an encoding names them all (an empty family is not
    /// written). Keep it beside the registrations: a new family belongs here too.
    #[cfg(test)]
    pub fn touch_every_family(&self) {
        let controller = "stage";
        self.observe_reconcile(controller, Duration::ZERO, false);
        let error = ErrorLabels {
            controller,
            error: "panic",
        };
        self.reconcile_errors.get_or_create(&error).inc();
        let gate = GateLabels {
            gate_type: "soak",
            verdict: "Passed",
        };
        self.gate_evaluations.get_or_create(&gate).inc();
        let outcome = "succeeded";
        self.rollouts
            .get_or_create(&RolloutLabels { outcome })
            .inc();
        let duration = DurationLabels {
            strategy: "rolling",
            outcome,
        };
        self.rollout_duration.get_or_create(&duration).observe(1.0);
        self.queue_depth
            .get_or_create(&ControllerLabels { controller })
            .set(0);
        self.write("stage_status");
        self.refused("stage_status", "Conflict");
        self.cache_read("deployment", "current");
        let review = AdmissionLabels {
            webhook: "mutate",
            kind: "Stage",
            allowed: "true",
        };
        self.admission_reviews.get_or_create(&review).inc();
        let notice = NotificationLabels {
            notifier_type: "slack",
            outcome: "sent",
        };
        self.notifications.get_or_create(&notice).inc();
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// What `/readyz` answers.
fn readiness(
    synced: bool,
    leaderless: bool,
    keyless: bool,
) -> (axum::http::StatusCode, &'static str) {
    let unavailable = axum::http::StatusCode::SERVICE_UNAVAILABLE;
    match (synced, leaderless, keyless) {
        (false, _, _) => (unavailable, "caches not synced yet"),
        (_, true, _) => (
            unavailable,
            "no replica has renewed the leader lease for two lease durations",
        ),
        (_, _, true) => (unavailable, "the identity key's Secret cannot be read"),
        _ => (axum::http::StatusCode::OK, "ok"),
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the process ends.
pub async fn serve(addr: std::net::SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    use axum::routing::get;
    let ready = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let synced = ready.ready.load(std::sync::atomic::Ordering::SeqCst);
                let flag =
                    |f: &std::sync::atomic::AtomicBool| f.load(std::sync::atomic::Ordering::SeqCst);
                let (leaderless, keyless) =
                    (flag(&ready.leaderless), flag(&ready.identity_unreadable));
                async move { readiness(synced, leaderless, keyless) }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn a_pass_that_writes_is_told_apart_from_one_that_only_reads() {
        let metrics = super::Metrics::new();
        let ((), wrote) = super::noting_writes(async {}).await;
        assert!(!wrote);
        let ((), wrote) = super::noting_writes(async {
            tokio::task::yield_now().await;
            metrics.write("stage_status");
        })
        .await;
        assert!(wrote, "a write within the pass marks it");
        let ((), wrote) = super::noting_writes(async {}).await;
        assert!(!wrote, "each pass starts unmarked");
        metrics.write("event");
    }

    #[tokio::test]
    async fn readyz_answers_ok_only_once_the_caches_have_synced() {
        let metrics = super::Metrics::new();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        tokio::spawn(super::serve(addr, metrics.clone()));
        let url = format!("http://{addr}/readyz");
        let status = || async {
            for _ in 0..50 {
                if let Ok(r) = reqwest::get(&url).await {
                    return r.status().as_u16();
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            panic!("the probe server did not answer");
        };
        crate::gates::ensure_crypto_provider();
        assert_eq!(status().await, 503, "not ready before the caches sync");
        metrics.ready.store(true, Ordering::SeqCst);
        assert_eq!(status().await, 200);
    }
}
