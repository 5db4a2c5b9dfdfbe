//! `Gate`: a reusable check that a release must pass before a stage rolls it out.
//! `type` names the kind and the member of the same name carries its settings.

// Each `printcolumn(...)` repeats `type_ = ...`, which this lint mistakes for a duplicate.
#![allow(clippy::duplicated_attributes)]

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::Condition;
use super::patterns::DURATION_PATTERN;
use super::patterns::NAME_PATTERN;
pub use super::server::{PrometheusServer, SecretKeyRef, TlsConfig};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "greenlight.dev",
    version = "v1alpha1",
    kind = "Gate",
    namespaced,
    status = "GateStatus",
    shortname = "gt",
    category = "greenlight",
    doc = "A reusable check a release must pass: soak time, time window, Prometheus query, webhook, people's approval, a Job run against the stage, the canary compared with the primary, or an error budget and its burn rates.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Message", type_ = "string", json_path = ".status.message"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct GateSpec {
    #[serde(rename = "type")]
    pub gate_type: GateType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<SoakGate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowGate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusGate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookGate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalGate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobGate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<super::compare::CompareGate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<super::slo::SloGate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_ticket: Option<super::ticket::ChangeTicketGate>,
    /// How often a gate that did not pass is checked again. Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub recheck_interval: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GateType {
    Soak,
    Window,
    Prometheus,
    Webhook,
    Approval,
    Job,
    Compare,
    Slo,
    #[serde(rename = "changeTicket")]
    ChangeTicket,
}

impl GateType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Soak => "soak",
            Self::Window => "window",
            Self::Prometheus => "prometheus",
            Self::Webhook => "webhook",
            Self::Approval => "approval",
            Self::Job => "job",
            Self::Compare => "compare",
            Self::Slo => "slo",
            Self::ChangeTicket => "changeTicket",
        }
    }
}

/// Passes once the release has been healthy in `stage` for at least `duration`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SoakGate {
    #[schemars(length(min = 1, max = 63), regex(pattern = NAME_PATTERN))]
    pub stage: String,
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub duration: String,
}

/// Passes while inside a window that opens at each `schedule` tick for `duration`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WindowGate {
    #[schemars(length(min = 1))]
    pub schedule: String,
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub duration: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// An instant PromQL query whose single value must meet `condition`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusGate {
    #[serde(flatten)]
    pub server: PrometheusServer,
    /// PromQL; `{{release}}`, `{{version}}`, `{{stage}}`, `{{namespace}}` and `{{pipeline}}`
    /// are replaced before the query is sent.
    #[schemars(length(min = 1))]
    pub query: String,
    /// Comparison the value must satisfy, e.g. `< 0.01`, `>= 0.99`. Required: a gate without a
    /// condition cannot pass.
    #[schemars(regex(pattern = r"^\s*(<=|>=|==|!=|<|>)\s*[-+]?[0-9.eE+-]+\s*$"))]
    pub condition: String,
    /// Too little traffic to judge is inconclusive, not a pass nor a failure: when set, this
    /// query (e.g. the canary's request count over the interval) must reach `minimum` first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<MinSamples>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MinSamples {
    #[schemars(length(min = 1))]
    pub query: String,
    pub minimum: f64,
}

/// An HTTP call; a 2xx answer passes, anything else fails.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookGate {
    #[schemars(regex(pattern = r"^https?://"))]
    pub url: String,
    #[serde(default)]
    pub method: HttpMethod,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: Option<String>,
}

/// Passes once enough distinct allowed people have approved the release for the stage, as
/// `Approval` objects stamped by the admission webhook; one rejection by an allowed person
/// fails it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalGate {
    /// Users who may approve, by Kubernetes username.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Groups whose members may approve, as the apiserver authenticates them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// How many distinct people must approve. Default 1.
    #[serde(default = "default_required_approvals")]
    #[schemars(range(min = 1, max = 100))]
    pub required: i32,
    /// Whether the user who created the release may approve it. Default false.
    #[serde(default)]
    pub allow_self_approval: bool,
    /// An approval counts for this long after it was given, e.g. `24h`. Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub expiry: Option<String>,
}

/// Runs a Job in the stage's namespace, once per release, stage, gate and attempt: it passes
/// when the Job completes and fails when it fails, with its container's termination message.
/// The release's facts reach the Job as `GREENLIGHT_*` environment variables, never in its
/// command line.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobGate {
    pub template: JobPodTemplate,
    /// Retries of a failed pod before the Job fails. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 6))]
    pub backoff_limit: Option<i32>,
    /// How long the Job may run, in seconds; past it the verdict is inconclusive. Default 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub active_deadline_seconds: Option<i64>,
    /// How long a finished Job is kept, in seconds (the operator also keeps only the last
    /// few per stage). Default 3600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 300, max = 604800))]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// The Job's pod. Host namespaces, privileged containers and the operator's own
/// ServiceAccount are refused, naming the field; they stay in the schema so that a refusal
/// can name them rather than the apiserver dropping them unseen.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobPodTemplate {
    /// The ServiceAccount the Job runs under; never the operator's own.
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: String,
    #[schemars(length(min = 1, max = 4))]
    pub containers: Vec<JobContainer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
    #[serde(default, rename = "hostPID", skip_serializing_if = "Option::is_none")]
    pub host_pid: Option<bool>,
    #[serde(default, rename = "hostIPC", skip_serializing_if = "Option::is_none")]
    pub host_ipc: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobContainer {
    #[schemars(length(min = 1, max = 63), regex(pattern = NAME_PATTERN))]
    pub name: String,
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<JobEnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<JobResources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<JobSecurityContext>,
}

/// One environment variable: a value, or a key of a Secret in the stage's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobEnvVar {
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// Requests and limits by resource name (`cpu`, `memory`, `ephemeral-storage`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobResources {
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schemars(length(max = 3))]
    pub requests: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schemars(length(max = 3))]
    pub limits: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobSecurityContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_privilege_escalation: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_root_filesystem: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub run_as_user: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub run_as_group: Option<i64>,
}

/// Where in a stage a gate is listed, and so when it runs.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum GateList {
    /// `spec.gates`: before the release enters the stage.
    Gates,
    /// `spec.preRollout`: after the gates pass, before any workload changes.
    PreRollout,
    /// `spec.strategy.canary.prePromotion`: before traffic moves to the new primary.
    PrePromotion,
    /// `spec.verify.gates`: after the rollout (rolling) or the promotion (canary).
    Verify,
}

impl GateList {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gates => "gates",
            Self::PreRollout => "preRollout",
            Self::PrePromotion => "prePromotion",
            Self::Verify => "verify",
        }
    }

    /// The field of a Stage that holds the list.
    pub fn field(self) -> &'static str {
        match self {
            Self::Gates => "spec.gates",
            Self::PreRollout => "spec.preRollout",
            Self::PrePromotion => "spec.strategy.canary.prePromotion",
            Self::Verify => "spec.verify.gates",
        }
    }
}

fn default_required_approvals() -> i32 {
    1
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    #[default]
    Post,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Who changed the spec and what, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<super::change::ChangeRecord>,
}
