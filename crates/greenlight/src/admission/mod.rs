//! The admission webhook server: `/mutate` stamps verified identities into objects and
//! `/validate` refuses bad objects before they are stored. It serves HTTPS only, with a
//! certificate that is replaced without a restart (see [`tls`]).

pub mod access;
pub mod certsecret;
pub mod issue;
pub mod label;
pub mod lease;
pub mod mutate;
pub mod protect;
pub mod server;
pub mod steer;
pub mod stored;
pub mod tls;
pub mod validate;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::IntoResponse;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use tracing::info;

use crate::api::{Approval, Decision, GateSpec, Release, Stage};
use crate::gates::GateEnv;
use crate::index::Index;
use crate::metrics::{AdmissionLabels, Metrics};
use crate::validation::{FieldError, ValidationErrors};

/// What the webhooks read: the watched state, the gate settings, and where to count.
pub struct AdmissionState {
    pub index: Arc<Index>,
    pub gate_env: GateEnv,
    pub metrics: Arc<Metrics>,
    /// For keeping the webhook configurations' CA bundle current.
    pub client: kube::Client,
    /// The only user who may change or delete the leader Lease (the operator's own); `None`
    /// leaves the Lease to RBAC alone.
    pub lease_writer: Option<String>,
}

type Context = AdmissionState;

impl AdmissionState {
    /// A Stage from the index, or read when the index has not seen it yet.
    pub async fn stage(&self, namespace: &str, name: &str) -> Option<Arc<Stage>> {
        if let Some(stage) = self.index.stage(namespace, name) {
            return Some(stage);
        }
        let api = kube::Api::<Stage>::namespaced(self.client.clone(), namespace);
        api.get_opt(name).await.ok().flatten().map(Arc::new)
    }

    /// A Release from the index, or read when the index has not seen it yet (an approval
    /// right after CI published it).
    pub async fn release(&self, namespace: &str, name: &str) -> Option<Arc<Release>> {
        if let Some(release) = self.index.release(namespace, name) {
            return Some(release);
        }
        let api = kube::Api::<Release>::namespaced(self.client.clone(), namespace);
        api.get_opt(name).await.ok().flatten().map(Arc::new)
    }
}

pub use server::{Clients, Limits, ServerConfig, start};

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("webhook certificate: {0}")]
    Certificate(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up TLS: {0}")]
    TlsConfig(#[from] rustls::Error),
    #[error("client authentication: {0}")]
    Clients(String),
}

async fn mutate_handler(State(ctx): State<Arc<Context>>, body: Bytes) -> axum::response::Response {
    let mut req = match parse(&body) {
        Ok(req) => req,
        Err(response) => return answer(&ctx, "mutate", None, *response),
    };
    if let Err(why) = stored::trust_old(&mut req, &ctx.client).await {
        let response = AdmissionResponse::from(&req).deny(why);
        return answer(&ctx, "mutate", Some(&req), response);
    }
    let refused = protect::check(&req, &ctx).await;
    if !refused.is_empty() {
        let response = AdmissionResponse::from(&req).deny(ValidationErrors(refused).to_string());
        return answer(&ctx, "mutate", Some(&req), response);
    }
    let response = AdmissionResponse::from(&req);
    let response = match mutate::stamp(&req, &ctx).await {
        None => response,
        Some(patch) => response
            .with_patch(patch)
            .unwrap_or_else(|e| AdmissionResponse::from(&req).deny(e.to_string())),
    };
    answer(&ctx, "mutate", Some(&req), response)
}

async fn validate_handler(
    State(ctx): State<Arc<Context>>,
    body: Bytes,
) -> axum::response::Response {
    let req = match parse(&body) {
        Ok(req) => req,
        Err(response) => return answer(&ctx, "validate", None, *response),
    };
    if let Some(refused) = lease::guard(&req, ctx.lease_writer.as_deref()) {
        let response = AdmissionResponse::from(&req).deny(refused);
        return answer(&ctx, "validate", Some(&req), response);
    }
    let (mut errors, warnings) = validate(&req, &ctx);
    if errors.is_empty() && req.kind.kind == "Gate" && spec_changed(&req) {
        errors.extend(resolved_destination(&req, &ctx).await);
    }
    let mut response = AdmissionResponse::from(&req);
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    if !errors.is_empty() {
        response = response.deny(ValidationErrors(errors).to_string());
    }
    answer(&ctx, "validate", Some(&req), response)
}

fn spec_changed(req: &AdmissionRequest<DynamicObject>) -> bool {
    let spec = |o: Option<&DynamicObject>| o.and_then(|o| o.data.get("spec")).cloned();
    spec(req.object.as_ref()) != spec(req.old_object.as_ref())
}

/// A Gate whose destination's name resolves to an address gates may not reach.
async fn resolved_destination(
    req: &AdmissionRequest<DynamicObject>,
    ctx: &Context,
) -> Vec<FieldError> {
    let spec = req
        .object
        .as_ref()
        .and_then(|o| o.data.get("spec"))
        .cloned();
    match spec.map(serde_json::from_value::<GateSpec>) {
        Some(Ok(spec)) => crate::gates::resolution_errors(&spec, &ctx.gate_env).await,
        _ => vec![],
    }
}

fn parse(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, Box<AdmissionResponse>> {
    serde_json::from_slice::<AdmissionReview<DynamicObject>>(body)
        .map_err(|e| e.to_string())
        .and_then(|review| {
            review
                .try_into()
                .map_err(|e: kube::core::admission::ConvertAdmissionReviewError| e.to_string())
        })
        .map_err(|e| {
            Box::new(AdmissionResponse::invalid(format!(
                "malformed AdmissionReview: {e}"
            )))
        })
}

/// Logs a denial, counts the answer and serializes it.
fn answer(
    ctx: &Context,
    webhook: &'static str,
    req: Option<&AdmissionRequest<DynamicObject>>,
    response: AdmissionResponse,
) -> axum::response::Response {
    if let (Some(req), false) = (req, response.allowed) {
        info!(
            webhook,
            kind = %req.kind.kind,
            namespace = req.namespace.as_deref().unwrap_or_default(),
            name = %req.name,
            user = req.user_info.username.as_deref().unwrap_or_default(),
            reason = %response.result.message,
            "admission denied"
        );
    }
    let kind = req.map_or("unknown", |r| kind_label(&r.kind.kind));
    ctx.metrics
        .admission_reviews
        .get_or_create(&AdmissionLabels {
            webhook,
            kind,
            allowed: if response.allowed { "true" } else { "false" },
        })
        .inc();
    let body = serde_json::to_vec(&response.into_review()).unwrap_or_default();
    ([(http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "Release" => "Release",
        "Stage" => "Stage",
        "Gate" => "Gate",
        "Approval" => "Approval",
        "StageCommand" => "StageCommand",
        _ => "other",
    }
}

/// Field errors that refuse the request, and warnings for the requester.
fn validate(
    req: &AdmissionRequest<DynamicObject>,
    ctx: &Context,
) -> (Vec<FieldError>, Vec<String>) {
    let Some(object) = req.object.as_ref() else {
        return (vec![], vec![]);
    };
    let namespace = req.namespace.clone().unwrap_or_default();
    let spec = object.data.get("spec").cloned().unwrap_or_default();
    let old_spec = match req.operation {
        Operation::Update => req.old_object.as_ref().and_then(|o| o.data.get("spec")),
        _ => None,
    };
    let as_typed = |kind: &str| -> Result<serde_json::Value, FieldError> {
        let mut value =
            serde_json::to_value(object).map_err(|e| FieldError::new("spec", e.to_string()))?;
        value["kind"] = kind.into();
        Ok(value)
    };
    let unchanged = old_spec == Some(&spec);
    match req.kind.kind.as_str() {
        "Release" => (validate::release(old_spec, &spec), vec![]),
        "StageCommand" => {
            let stage = spec
                .get("stage")
                .and_then(|s| s.as_str())
                .unwrap_or_default();
            // Bound by the mutating webhook, which read the Stage (from the index or the API).
            let bound = spec.get("stageRef").is_some_and(|r| !r.is_null());
            let exists = bound || ctx.index.stage(&namespace, stage).is_some();
            (validate::command(old_spec, &spec, exists), vec![])
        }
        // An edit that leaves the spec alone (annotations, labels) is not judged again, so a
        // spec stored while the webhook was off never blocks e.g. clearing an annotation.
        "Gate" | "Stage" if unchanged => (vec![], vec![]),
        "Gate" => match serde_json::from_value::<GateSpec>(spec) {
            Ok(spec) => (
                crate::gates::compile(&spec, &ctx.gate_env)
                    .err()
                    .unwrap_or_default(),
                vec![],
            ),
            Err(e) => (vec![FieldError::new("spec", e.to_string())], vec![]),
        },
        "Stage" => match as_typed("Stage").and_then(|v| {
            serde_json::from_value::<Stage>(v).map_err(|e| FieldError::new("spec", e.to_string()))
        }) {
            Ok(stage) => {
                let siblings: Vec<Arc<Stage>> = ctx.index.stages_where(&namespace, |_| true);
                let gate_type =
                    |name: &str| ctx.index.gate(&namespace, name).map(|g| g.spec.gate_type);
                (validate::stage(&stage, &siblings, gate_type), vec![])
            }
            Err(e) => (vec![e], vec![]),
        },
        "Approval" => {
            let mut errors = validate::approval(old_spec, &spec);
            let mut warnings = vec![];
            if old_spec.is_none() && errors.is_empty() {
                match as_typed("Approval").and_then(|v| {
                    serde_json::from_value::<Approval>(v)
                        .map_err(|e| FieldError::new("spec", e.to_string()))
                }) {
                    Ok(approval) => {
                        approval_policy(&approval, &namespace, ctx, &mut errors, &mut warnings)
                    }
                    Err(e) => errors.push(e),
                }
            }
            (errors, warnings)
        }
        _ => (vec![], vec![]),
    }
}

/// Refuses an approval that is certain not to count because the approver created the release
/// and no approval gate of the stage allows that; warns when the approver is not allowed.
fn approval_policy(
    approval: &Approval,
    namespace: &str,
    ctx: &Context,
    errors: &mut Vec<FieldError>,
    warnings: &mut Vec<String>,
) {
    let spec = &approval.spec;
    let subject = crate::identity::Subject::Approval { namespace, spec };
    let who = match ctx.index.identity.verify(&subject, spec.approver.as_ref()) {
        Ok(who) => who,
        Err(why) => {
            errors.push(FieldError::new("spec.approver", format!("{why}")));
            return;
        }
    };
    let release = ctx.index.release(namespace, &spec.release);
    let stage = ctx.index.stage(namespace, &spec.stage);
    let (Some(release), Some(stage)) = (release, stage) else {
        return;
    };
    let author = ctx.index.release_author(&release);
    let gates = ctx.index.approval_gates(&stage, release.spec.release_type);
    if gates.is_empty() {
        warnings.push(format!(
            "stage '{}' has no approval gate; this decision counts nowhere",
            spec.stage
        ));
        return;
    }
    let refusals: Vec<(String, Option<String>)> = gates
        .iter()
        .map(|(name, policy)| (name.clone(), policy.refusal(who, &author)))
        .collect();
    let is_author = author.as_deref() == Ok(who.username.as_str());
    if spec.decision == Decision::Approve && is_author && refusals.iter().all(|(_, r)| r.is_some())
    {
        errors.push(FieldError::new(
            "spec.release",
            format!(
                "{} created release '{}' and may not approve it at stage '{}' (allowSelfApproval is false on {})",
                who.username,
                spec.release,
                spec.stage,
                gates.iter().map(|(n, _)| format!("gate '{n}'")).collect::<Vec<_>>().join(", ")
            ),
        ));
        return;
    }
    for (gate, refusal) in refusals {
        if let Some(why) = refusal {
            warnings.push(format!("does not count toward gate '{gate}': {why}"));
        }
    }
}

/// Webhook state over an index of `objects`, signing with `key`; the API answers 404 to
/// anything else. Needs a Tokio runtime.
#[cfg(test)]
pub(crate) fn test_state(
    objects: crate::index::Objects,
    key: crate::identity::IdentityKey,
) -> AdmissionState {
    let (service, mut handle) = tower_test::mock::pair::<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >();
    tokio::spawn(async move {
        while let Some((_, send)) = handle.next_request().await {
            let body = serde_json::json!({"kind": "Status", "apiVersion": "v1",
                "status": "Failure", "reason": "NotFound", "code": 404});
            let response = http::Response::builder()
                .status(404)
                .body(kube::client::Body::from(
                    serde_json::to_vec(&body).unwrap_or_default(),
                ))
                .unwrap();
            send.send_response(response);
        }
    });
    AdmissionState {
        index: Index::of(objects, Arc::new(key)),
        gate_env: GateEnv {
            http: crate::gates::http_client(&Default::default()),
            webhook_allow: crate::gates::allow::AllowList::default(),
            prometheus_address: None,
            jobs: None,
            operator_account: None,
        },
        metrics: Metrics::new(),
        client: kube::Client::new(service, "default"),
        lease_writer: None,
    }
}
