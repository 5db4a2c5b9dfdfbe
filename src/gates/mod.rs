//! Gates: the checks a release must pass before a stage rolls it out. One [`GateCheck`]
//! implementation per kind, one file each; the state machine sees only [`GateOutcome`]s.

pub mod allow;
pub mod approval;
pub mod condition;
pub mod prometheus;
pub mod soak;
pub mod webhook;
pub mod window;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use jiff::Timestamp;

use crate::api::gate::{GateSpec, GateType};
use crate::api::release::{Artifact, GateVerdict, ReleaseStageStatus};
use crate::api::validation::FieldError;
use crate::schedule::parse_duration;

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
    pub now: Timestamp,
}

/// One evaluation of one gate.
#[derive(Debug, Clone, PartialEq)]
pub struct GateOutcome {
    pub verdict: GateVerdict,
    pub value: Option<String>,
    pub message: String,
    /// When the verdict can change at the earliest (soak end, window opening).
    pub recheck_at: Option<Timestamp>,
}

impl GateOutcome {
    pub fn new(verdict: GateVerdict, message: impl Into<String>) -> Self {
        Self {
            verdict,
            value: None,
            message: message.into(),
            recheck_at: None,
        }
    }

    pub fn with_value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }

    pub fn recheck_at(mut self, at: Timestamp) -> Self {
        self.recheck_at = Some(at);
        self
    }
}

/// A gate kind. Implementations never panic and never pass on missing data.
pub trait GateCheck: Send + Sync {
    fn evaluate<'a>(&'a self, ctx: &'a GateContext) -> BoxFuture<'a, GateOutcome>;
}

/// A gate ready to evaluate, built from a validated spec.
pub struct CompiledGate {
    pub check: Box<dyn GateCheck>,
    pub recheck_interval: Duration,
}

/// What gates get from the operator's configuration.
#[derive(Clone, Debug)]
pub struct GateEnv {
    pub http: reqwest::Client,
    pub webhook_allow: allow::AllowList,
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
    let members = [
        (GateType::Soak, spec.soak.is_some()),
        (GateType::Window, spec.window.is_some()),
        (GateType::Prometheus, spec.prometheus.is_some()),
        (GateType::Webhook, spec.webhook.is_some()),
        (GateType::Approval, spec.approval.is_some()),
    ];
    for (kind, present) in members {
        if present && kind != spec.gate_type {
            errors.push(FieldError::new(
                format!("spec.{}", kind.as_str()),
                format!(
                    "set, but spec.type is '{}'; remove it or change the type",
                    spec.gate_type.as_str()
                ),
            ));
        }
    }
    let missing = || {
        let kind = spec.gate_type.as_str();
        vec![FieldError::new(
            format!("spec.{kind}"),
            format!("required when spec.type is '{kind}'"),
        )]
    };
    let check: Result<Box<dyn GateCheck>, Vec<FieldError>> = match spec.gate_type {
        GateType::Soak => spec
            .soak
            .as_ref()
            .ok_or_else(missing)
            .and_then(soak::SoakCheck::compile),
        GateType::Window => spec
            .window
            .as_ref()
            .ok_or_else(missing)
            .and_then(window::WindowCheck::compile),
        GateType::Prometheus => spec
            .prometheus
            .as_ref()
            .ok_or_else(missing)
            .and_then(|p| prometheus::PrometheusCheck::compile(p, &env.http)),
        GateType::Webhook => spec
            .webhook
            .as_ref()
            .ok_or_else(missing)
            .and_then(|w| webhook::WebhookCheck::compile(w, env)),
        GateType::Approval => spec
            .approval
            .as_ref()
            .ok_or_else(missing)
            .and_then(approval::ApprovalCheck::compile),
    };
    match check {
        Ok(check) if errors.is_empty() => Ok(CompiledGate {
            check,
            recheck_interval,
        }),
        Ok(_) => Err(errors),
        Err(mut e) => {
            errors.append(&mut e);
            Err(errors)
        }
    }
}

/// Replaces `{{name}}` placeholders with the release's facts.
pub fn render_template(template: &str, ctx: &GateContext) -> String {
    template
        .replace("{{release}}", &ctx.release)
        .replace("{{version}}", &ctx.version)
        .replace("{{stage}}", &ctx.stage)
        .replace("{{namespace}}", &ctx.namespace)
        .replace("{{pipeline}}", &ctx.pipeline)
        .replace("{{primary}}", &ctx.primary_workload)
        .replace("{{canary}}", &ctx.canary_workload)
}

/// Installs ring as the process's TLS crypto provider unless one is installed already; every
/// HTTP client is built after this, so none can panic for the want of one.
pub fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The HTTP client shared by gates: no redirects, so a gate reaches only the host it names.
pub fn http_client() -> reqwest::Client {
    ensure_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("greenlight/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("static HTTP client configuration is valid")
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
        Some(Ok(d)) if d > Duration::ZERO => Ok(d),
        Some(Ok(_)) => Err(FieldError::new(field, "must be more than 0s")),
        Some(Err(e)) => Err(FieldError::new(field, e.to_string())),
    }
}
