//! Webhook gate: an HTTP call about the release. A 2xx answer passes; any other status fails
//! with the status and an excerpt of the body; no answer at all is inconclusive.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::json;

use super::prom_client::error_chain as describe_error;
use super::{GateCheck, GateContext, GateEnv, GateOutcome, excerpt, timeout_field};
use crate::api::gate::{HttpMethod, WebhookGate};
use crate::api::release::GateVerdict;
use crate::validation::FieldError;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct WebhookCheck {
    http: reqwest::Client,
    url: reqwest::Url,
    method: HttpMethod,
    timeout: Duration,
}

/// The most of a webhook's answer that is read.
const WEBHOOK_BODY_LIMIT: usize = 8 * 1024;

impl WebhookCheck {
    pub fn compile(
        spec: &WebhookGate,
        env: &GateEnv,
    ) -> Result<Box<dyn GateCheck>, Vec<FieldError>> {
        let http = &env.http;
        let mut errors = Vec::new();
        let url = match reqwest::Url::parse(&spec.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && !env.webhook_allow.permits(&u) => {
                let why = env.webhook_allow.refusal(&u).unwrap_or_default();
                errors.push(FieldError::new("spec.webhook.url", why));
                None
            }
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            Ok(u) => {
                errors.push(FieldError::new(
                    "spec.webhook.url",
                    format!("scheme '{}' is not http or https", u.scheme()),
                ));
                None
            }
            Err(e) => {
                errors.push(FieldError::new(
                    "spec.webhook.url",
                    format!("'{}' is not a URL: {e}", spec.url),
                ));
                None
            }
        };
        let timeout = timeout_field(
            "spec.webhook.timeout",
            spec.timeout.as_deref(),
            DEFAULT_TIMEOUT,
        )
        .map_err(|e| errors.push(e))
        .ok();
        match (url, timeout) {
            (Some(url), Some(timeout)) => Ok(Box::new(Self {
                http: http.clone(),
                url,
                method: spec.method,
                timeout,
            })),
            _ => Err(errors),
        }
    }

    async fn run(&self, ctx: &GateContext) -> GateOutcome {
        let payload = json!({
            "namespace": ctx.namespace,
            "pipeline": ctx.pipeline,
            "stage": ctx.stage,
            "release": ctx.release,
            "version": ctx.version,
            "artifacts": ctx.artifacts,
        });
        let request = match self.method {
            HttpMethod::Get => self.http.get(self.url.clone()).query(&[
                ("release", ctx.release.as_str()),
                ("stage", ctx.stage.as_str()),
                ("version", ctx.version.as_str()),
            ]),
            HttpMethod::Post => self.http.post(self.url.clone()).json(&payload),
        };
        match request.timeout(self.timeout).send().await {
            Err(e) => GateOutcome::new(
                GateVerdict::Inconclusive,
                format!("no answer from {}: {}", self.url, describe_error(&e)),
            ),
            Ok(response) => {
                let status = response.status();
                let location = response
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .map(|l| excerpt(l, 200));
                // Only an excerpt is shown: a few KiB is all that is ever read. An answer that
                // does not fit (or breaks off) was not heard whole, so it is no verdict.
                let body = match super::read_capped(response, WEBHOOK_BODY_LIMIT).await {
                    Ok(body) => body,
                    Err(why) => {
                        let why = format!("HTTP {} from {}: {why}", status.as_u16(), self.url);
                        return GateOutcome::new(GateVerdict::Inconclusive, why);
                    }
                };
                let value = status.as_u16().to_string();
                if status.is_success() {
                    GateOutcome::new(GateVerdict::Passed, format!("HTTP {value}")).with_value(value)
                } else if status.is_redirection() {
                    let to = location.map_or("nowhere named".into(), |l| format!("to {l}"));
                    let why = format!(
                        "HTTP {value}: a redirect {to}, which gates do not follow (the allow-list holds for the URL as written); point the gate at the final URL"
                    );
                    GateOutcome::new(GateVerdict::Failed, why).with_value(value)
                } else {
                    GateOutcome::new(
                        GateVerdict::Failed,
                        format!("HTTP {value}: {}", excerpt(&body, 200)),
                    )
                    .with_value(value)
                }
            }
        }
    }
}

impl GateCheck for WebhookCheck {
    fn evaluate<'a>(&'a self, ctx: &'a GateContext) -> BoxFuture<'a, GateOutcome> {
        Box::pin(self.run(ctx))
    }
}

/// The `webhook` kind, as registered in [`super::KINDS`].
pub struct Kind;

impl super::GateKind for Kind {
    fn gate_type(&self) -> crate::api::GateType {
        crate::api::GateType::Webhook
    }
    fn destination(&self, spec: &crate::api::GateSpec) -> Option<(&'static str, String)> {
        Some(("spec.webhook.url", spec.webhook.as_ref()?.url.clone()))
    }

    fn configured(&self, spec: &crate::api::GateSpec) -> bool {
        spec.webhook.is_some()
    }
    fn compile(
        &self,
        spec: &crate::api::GateSpec,
        env: &GateEnv,
    ) -> Result<(Box<dyn GateCheck>, super::Needs), Vec<FieldError>> {
        let settings = super::settings(spec.webhook.as_ref(), self.gate_type())?;
        Ok((
            WebhookCheck::compile(settings, env)?,
            super::Needs::default(),
        ))
    }
}
