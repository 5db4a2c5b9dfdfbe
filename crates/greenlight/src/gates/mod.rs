//! Gates: the checks a release must pass before a stage rolls it out. One [`GateCheck`]
//! implementation per kind, one file each; the state machine sees only [`GateOutcome`]s.

pub mod allow;
pub mod approval;
pub mod compare;
pub mod condition;
pub mod itsm;
pub mod job;
#[cfg(test)]
mod job_tests;
pub mod prom_client;
pub mod prometheus;
pub mod promql;
pub mod slo;
#[cfg(test)]
mod slo_tests;
pub mod soak;
pub mod ticket;
pub mod webhook;
pub mod window;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use jiff::Timestamp;

use crate::api::gate::{GateSpec, GateType, SecretKeyRef};
use crate::api::release::{Artifact, ReleaseStageStatus};
use crate::schedule::parse_duration;
use crate::validation::FieldError;

/// The longest a gate may wait for an answer.
pub const LONGEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Default time between two evaluations of a gate that did not pass.
pub const DEFAULT_RECHECK: Duration = Duration::from_secs(30);

/// What a gate knows about the release it judges.
#[derive(Debug, Clone)]
pub struct GateContext {
    pub namespace: String,
    pub pipeline: String,
    pub stage: String,
    pub release: String,
    pub version: String,
    pub artifacts: Vec<Artifact>,
    /// The release's progress at every stage, for gates that look upstream.
    pub release_stages: BTreeMap<String, ReleaseStageStatus>,
    /// Names of the stage's managed workloads (and their Services).
    pub primary_workload: String,
    pub canary_workload: String,
    /// Secret values the gate references, by `secret/key`. Never logged or stored.
    pub secrets: BTreeMap<String, String>,
    /// Approvals of this release at this stage, their approver stamps checked (read by, and
    /// filled in only for, approval gates).
    pub approvals: Vec<approval::ApprovalRecord>,
    /// Who created the release, as verified from its stamp (likewise only for approval gates).
    pub release_author: Result<String, crate::identity::Unverified>,
    /// The Release object being judged: an approval counts only if given for it (likewise
    /// only for approval gates).
    pub release_ref: Option<crate::api::ReleaseRef>,
    /// For a configuration change of the running release: its template's digest, and since
    /// when it waits. Approvals given before it do not count for it.
    pub configuration: Option<(String, Timestamp)>,
    /// The gate being evaluated, the list it sits in, and the release's attempt here: what a
    /// Job gate names its Job by.
    pub gate: String,
    pub list: crate::api::gate::GateList,
    pub attempt: u32,
    /// Since when this run of the check list runs (none for the stage's gates), or for a
    /// measurement of an analysis since when it measures: what a job gate names its Job by,
    /// and where a compare gate's window starts at the earliest.
    pub run: Option<Timestamp>,
    /// Whether this is a measurement of an analysis, rather than a check before or after
    /// one: what an `slo` gate judges (burn rates, or the budget left) depends on it.
    pub measuring: bool,
    /// The Stage's uid, for the owner reference of what a gate creates.
    pub stage_uid: String,
    /// The port of the stage's Services.
    pub service_port: i32,
    /// The change request the release names (read only for `changeTicket` gates).
    pub change_ticket: Option<String>,
    /// Other releases that this gate already let out under the same change request.
    pub ticket_used_by: Vec<String>,
    /// Whose approval does not count here, and approvals from before when do not count:
    /// an emergency's requester, and the time it was asked (read by approval gates).
    pub emergency: Option<(String, Timestamp)>,
    pub now: Timestamp,
}

pub use greenlight_core::verdict::GateOutcome;

/// A gate kind. Implementations never panic and never pass on missing data.
pub trait GateCheck: Send + Sync {
    fn evaluate<'a>(&'a self, ctx: &'a GateContext) -> BoxFuture<'a, GateOutcome>;
}

/// What a compiled gate needs from the cluster before it can be evaluated; the gate runner
/// reads exactly this, so no kind is special-cased outside its own file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Needs {
    /// Secret keys whose values go into [`GateContext::secrets`].
    pub secrets: Vec<SecretKeyRef>,
    /// The release's approvals and verified author go into the context.
    pub approvals: bool,
    /// The release's change ticket, and the other releases it let out, go into the context.
    pub ticket: bool,
}

/// A gate ready to evaluate, built from a validated spec.
pub struct CompiledGate {
    pub check: Box<dyn GateCheck>,
    pub recheck_interval: Duration,
    pub needs: Needs,
}

/// One gate kind: its `spec.type`, whether its settings block is set, and how it compiles.
pub trait GateKind: Sync {
    fn gate_type(&self) -> GateType;
    fn configured(&self, spec: &GateSpec) -> bool;
    /// The field and URL of what the gate calls, if it calls anything.
    fn destination(&self, _spec: &GateSpec) -> Option<(&'static str, String)> {
        None
    }
    /// The check and what it needs, or every field error of its settings block.
    fn compile(
        &self,
        spec: &GateSpec,
        env: &GateEnv,
    ) -> Result<(Box<dyn GateCheck>, Needs), Vec<FieldError>>;
}

/// Every gate kind. Adding one is its file, its `GateType` and spec field, and a line here.
static KINDS: &[&dyn GateKind] = &[
    &soak::Kind,
    &window::Kind,
    &prometheus::Kind,
    &webhook::Kind,
    &approval::Kind,
    &job::Kind,
    &compare::Kind,
    &slo::Kind,
    &ticket::Kind,
];

/// What gates get from the operator's configuration.
#[derive(Clone, Debug)]
pub struct GateEnv {
    pub http: reqwest::Client,
    pub webhook_allow: allow::AllowList,
    /// The Prometheus of gates that name none (`--prometheus-address`).
    pub prometheus_address: Option<String>,
    /// Where Job gates find and start their Jobs; none in admission, which only compiles.
    pub jobs: Option<std::sync::Arc<dyn job::JobHost>>,
    /// The operator's own ServiceAccount, which no Job gate may run under.
    pub operator_account: Option<String>,
}

/// The settings block of a kind, or the error that it is missing.
pub(crate) fn settings<T>(block: Option<&T>, kind: GateType) -> Result<&T, Vec<FieldError>> {
    block.ok_or_else(|| {
        let kind = kind.as_str();
        vec![FieldError::new(
            format!("spec.{kind}"),
            format!("required when spec.type is '{kind}'"),
        )]
    })
}

/// Builds the check for a Gate spec, or every field error in it.
pub fn compile(spec: &GateSpec, env: &GateEnv) -> Result<CompiledGate, Vec<FieldError>> {
    let mut errors = Vec::new();
    let recheck_interval = match spec.recheck_interval.as_deref().map(parse_duration) {
        None => DEFAULT_RECHECK,
        Some(Ok(d)) if d >= Duration::from_secs(1) => d,
        Some(Ok(_)) => {
            errors.push(FieldError::new(
                "spec.recheckInterval",
                "must be at least 1s",
            ));
            DEFAULT_RECHECK
        }
        Some(Err(e)) => {
            errors.push(FieldError::new("spec.recheckInterval", e.to_string()));
            DEFAULT_RECHECK
        }
    };
    for kind in KINDS {
        if kind.configured(spec) && kind.gate_type() != spec.gate_type {
            errors.push(FieldError::new(
                format!("spec.{}", kind.gate_type().as_str()),
                format!(
                    "set, but spec.type is '{}'; remove it or change the type",
                    spec.gate_type.as_str()
                ),
            ));
        }
    }
    let kind = KINDS
        .iter()
        .find(|k| k.gate_type() == spec.gate_type)
        .expect("every GateType has a kind in KINDS");
    match kind.compile(spec, env) {
        Ok((check, needs)) if errors.is_empty() => Ok(CompiledGate {
            check,
            recheck_interval,
            needs,
        }),
        Ok(_) => Err(errors),
        Err(mut e) => {
            errors.append(&mut e);
            Err(errors)
        }
    }
}

/// Refusals of the addresses a Gate's destination resolves to now (a name pointing at
/// loopback or the metadata service), each naming the field. The resolver checks again at
/// every call, so a name changed later is caught there.
pub async fn resolution_errors(spec: &GateSpec, env: &GateEnv) -> Vec<FieldError> {
    let Some(kind) = KINDS.iter().find(|k| k.gate_type() == spec.gate_type) else {
        return vec![];
    };
    let Some((field, url)) = kind.destination(spec) else {
        return vec![];
    };
    let Some(host) = reqwest::Url::parse(&url)
        .ok()
        .and_then(|u| u.host_str().map(String::from))
    else {
        return vec![];
    };
    allow::resolution_refusals(&host, &env.webhook_allow)
        .await
        .into_iter()
        .map(|why| FieldError::new(field, why))
        .collect()
}

/// How a Secret value is keyed in [`GateContext::secrets`].
pub fn secret_key(r: &SecretKeyRef) -> String {
    format!("{}/{}", r.name, r.key)
}

/// Installs ring as the process's TLS crypto provider unless one is installed already; every
/// HTTP client is built after this, so none can panic for the want of one.
pub fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The HTTP client shared by gates.
pub fn http_client(allow: &allow::AllowList) -> reqwest::Client {
    client_builder(allow)
        .build()
        .expect("static HTTP client configuration is valid")
}

/// How every gate client is built: no redirects, so a gate reaches only the host it names,
/// and names resolved only to addresses `allow` lets it reach.
pub(crate) fn client_builder(allow: &allow::AllowList) -> reqwest::ClientBuilder {
    ensure_crypto_provider();
    reqwest::Client::builder()
        .dns_resolver(std::sync::Arc::new(allow::FencedResolver(allow.clone())))
        // A proxy would resolve the name itself, past the fence.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("greenlight/", env!("CARGO_PKG_VERSION")))
}

/// An answer's body, read up to `limit` bytes; a longer answer is cut off there, never read
/// whole, so an endpoint that streams gigabytes costs no more than `limit` of memory.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<String, String> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() > limit => {
                return Err(format!("the answer is larger than {} KiB", limit / 1024));
            }
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => return Ok(String::from_utf8_lossy(&body).into_owned()),
            Err(e) => return Err(format!("the answer broke off: {e}")),
        }
    }
}

pub(crate) fn excerpt(text: &str, max: usize) -> String {
    let trimmed = text.trim();
    match trimmed.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_string(),
    }
}

pub(crate) fn timeout_field(
    field: &str,
    value: Option<&str>,
    default: Duration,
) -> Result<Duration, FieldError> {
    match value.map(parse_duration) {
        None => Ok(default),
        Some(Ok(d)) if d > LONGEST_TIMEOUT => Err(FieldError::new(
            field,
            "must be at most 60s: a gate that takes longer holds up its stage",
        )),
        Some(Ok(d)) if d > Duration::ZERO => Ok(d),
        Some(Ok(_)) => Err(FieldError::new(field, "must be more than 0s")),
        Some(Err(e)) => Err(FieldError::new(field, e.to_string())),
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    fn junk() -> impl proptest::strategy::Strategy<Value = String> {
        prop_oneof![
            "[ -~]{0,24}",
            "[0-9.]{0,6}(ms|s|m|h|d|x)?",
            "(<|>|<=|>=|==|!=|=<|~)? ?[-+0-9.eNaIf]{0,6}",
            Just(String::new()),
        ]
    }

    /// A compare gate with these strings in its fields.
    fn compare_gate(
        metric: String,
        window: String,
        address: String,
        group: String,
    ) -> crate::api::compare::CompareGate {
        crate::api::compare::CompareGate {
            server: crate::api::gate::PrometheusServer {
                address,
                timeout: Some(window.clone()),
                bearer_token_secret_ref: None,
                tls: None,
            },
            lookback: Some(window.clone()),
            step: Some(window),
            metrics: vec![crate::api::compare::CompareMetric {
                name: metric.clone(),
                query: metric,
                group: Some(group),
                ..Default::default()
            }],
            groups: vec![],
            thresholds: None,
        }
    }

    /// An slo gate with these strings in its fields.
    fn slo_gate(metric: String, window: String, address: String) -> crate::api::slo::SloGate {
        use crate::api::slo::{BurnRate, EventSelector, RatioIndicator, SloGate, SloIndicator};
        SloGate {
            server: crate::api::gate::PrometheusServer {
                address,
                ..Default::default()
            },
            objective: window.clone(),
            period: Some(window.clone()),
            indicator: SloIndicator {
                ratio: Some(RatioIndicator {
                    errors: Some(EventSelector {
                        metric: metric.clone(),
                    }),
                    good: None,
                    total: EventSelector { metric },
                }),
                error_ratio: None,
            },
            min_budget_remaining: Some(window.clone()),
            burn_rates: vec![BurnRate {
                factor: 2.0,
                long: window.clone(),
                short: Some(window.clone()),
            }],
            compress_hour_to: Some(window.clone()),
            min_window: Some(window),
            min_events: Some(0),
        }
    }

    proptest! {
        /// Random Gate settings never panic, and every error names a field.
        #[test]
        fn gate_validation_never_panics_and_names_the_field(condition in junk(), timeout in junk(), url in junk()) {
            use crate::api::gate::{GateSpec, GateType, PrometheusGate, WebhookGate};
            let (name, image, account) = (condition.clone(), timeout.clone(), url.clone());
            let (metric, window, address, group) = (condition.clone(), timeout.clone(), url.clone(), url.clone());
            let env = crate::gates::GateEnv { http: crate::gates::http_client(&Default::default()), webhook_allow: crate::gates::allow::AllowList::new(["*"]), prometheus_address: None, jobs: None, operator_account: None };
            let prometheus = GateSpec {
                gate_type: GateType::Prometheus,
                soak: None,
                window: None,
                prometheus: Some(PrometheusGate {
                    server: crate::api::gate::PrometheusServer {
                        address: url.clone(),
                        timeout: Some(timeout.clone()),
                        bearer_token_secret_ref: None,
                        tls: None,
                    },
                    query: "up".into(),
                    condition,
                    min_samples: None,
                }),
                webhook: None,
                approval: None,
                job: None,
                compare: None,
                slo: None,
                change_ticket: None,
                recheck_interval: Some(timeout.clone()),
            };
            let webhook = GateSpec {
                gate_type: GateType::Webhook,
                prometheus: None,
                webhook: Some(WebhookGate { url, method: Default::default(), timeout: Some(timeout) }),
                ..prometheus.clone()
            };
            let job = GateSpec {
                gate_type: GateType::Job,
                prometheus: None,
                job: Some(crate::api::gate::JobGate {
                    template: crate::api::gate::JobPodTemplate {
                        service_account_name: account,
                        containers: vec![crate::api::gate::JobContainer {
                            name,
                            command: vec![image.clone()],
                            image,
                            args: vec![],
                            env: vec![],
                            resources: None,
                            working_dir: None,
                            security_context: None,
                        }],
                        host_network: Some(true),
                        host_pid: None,
                        host_ipc: None,
                    },
                    backoff_limit: None,
                    active_deadline_seconds: None,
                    ttl_seconds_after_finished: None,
                }),
                ..prometheus.clone()
            };
            let compare = GateSpec {
                gate_type: GateType::Compare,
                compare: Some(compare_gate(metric.clone(), window.clone(), address.clone(), group)),
                ..prometheus.clone()
            };
            let slo = GateSpec {
                gate_type: GateType::Slo,
                slo: Some(slo_gate(metric, window, address)),
                ..prometheus.clone()
            };
            for spec in [prometheus, webhook, job, compare, slo] {
                if let Err(errors) = crate::gates::compile(&spec, &env) {
                    for e in &errors {
                        prop_assert!(e.field.starts_with("spec."), "{}", e);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A local server that answers with `megabytes` of body, streamed, then closes.
    async fn streaming_server(megabytes: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                megabytes * 1024 * 1024
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..megabytes * 16 {
                if socket.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        format!("http://{addr}/")
    }

    #[tokio::test]
    async fn an_endless_answer_is_cut_off_at_the_limit_not_read_whole() {
        let url = streaming_server(100).await;
        let response = super::http_client(&super::allow::AllowList::new(["127.0.0.1"]))
            .get(url)
            .send()
            .await
            .unwrap();
        let read = super::read_capped(response, 1024 * 1024).await;
        assert_eq!(read, Err("the answer is larger than 1024 KiB".to_string()));
        let small = streaming_server(1).await;
        let response = super::http_client(&super::allow::AllowList::new(["127.0.0.1"]))
            .get(small)
            .send()
            .await
            .unwrap();
        let read = super::read_capped(response, 2 * 1024 * 1024).await.unwrap();
        assert_eq!(read.len(), 1024 * 1024);
    }
}
