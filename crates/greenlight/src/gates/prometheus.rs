//! Prometheus gate: an instant PromQL query whose single value must meet a threshold. NaN, an
//! empty result, several series, an HTTP error or an unreachable server are inconclusive.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::condition::Threshold;
use super::promql::QueryTemplate;
use super::{GateCheck, GateContext, GateOutcome, excerpt, timeout_field};
use crate::api::gate::{MinSamples, PrometheusGate};
use crate::api::release::GateVerdict;
use crate::validation::FieldError;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a Prometheus answer that is read; one instant value needs a few hundred bytes.
const BODY_LIMIT: usize = 1024 * 1024;

pub struct PrometheusCheck {
    http: reqwest::Client,
    address: String,
    query: QueryTemplate,
    threshold: Threshold,
    timeout: Duration,
    /// The traffic query and the least it must return for the main query to be judged.
    min_samples: Option<(QueryTemplate, f64)>,
    token: Option<String>,
    ca: Option<String>,
    /// For the clients built at evaluation time (a CA bundle from a Secret).
    allow: super::allow::AllowList,
}

impl PrometheusCheck {
    pub fn compile(
        spec: &PrometheusGate,
        env: &super::GateEnv,
    ) -> Result<Box<dyn GateCheck>, Vec<FieldError>> {
        let http = &env.http;
        let mut errors = Vec::new();
        let address = address(spec, env)
            .and_then(|address| check_address(address, env).map(|()| address))
            .map_err(|e| errors.push(FieldError::new("spec.prometheus.address", e)))
            .unwrap_or_default();
        if let Some(why) = token_exposure(spec, address) {
            errors.push(FieldError::new("spec.prometheus.bearerTokenSecretRef", why));
        }
        let query = compile_query("spec.prometheus.query", &spec.query)
            .map_err(|e| errors.push(e))
            .ok();
        let min_samples = min_samples(spec.min_samples.as_ref()).map_err(|e| errors.push(e));
        let threshold = Threshold::parse(&spec.condition)
            .map_err(|e| errors.push(FieldError::new("spec.prometheus.condition", e.to_string())))
            .ok();
        let timeout = timeout_field(
            "spec.prometheus.timeout",
            spec.timeout.as_deref(),
            DEFAULT_TIMEOUT,
        )
        .map_err(|e| errors.push(e))
        .ok();
        match (query, threshold, timeout, min_samples) {
            (Some(query), Some(threshold), Some(timeout), Ok(min_samples)) if errors.is_empty() => {
                Ok(Box::new(Self {
                    http: tls_client(spec, http, &env.webhook_allow),
                    allow: env.webhook_allow.clone(),
                    address: address.trim_end_matches('/').to_string(),
                    query,
                    threshold,
                    timeout,
                    min_samples,
                    token: spec.bearer_token_secret_ref.as_ref().map(super::secret_key),
                    ca: spec
                        .tls
                        .as_ref()
                        .and_then(|t| t.ca_secret_ref.as_ref())
                        .map(super::secret_key),
                }))
            }
            _ => Err(errors),
        }
    }

    /// Runs one instant query and returns its single value, or why there is none.
    async fn instant(&self, query: &str, ctx: &GateContext) -> Result<f64, String> {
        let client = match &self.ca {
            Some(key) => client_trusting(
                ctx.secrets
                    .get(key)
                    .ok_or_else(|| format!("CA bundle {key} not resolved"))?,
                &self.allow,
            )?,
            None => self.http.clone(),
        };
        let mut request = client
            .get(format!("{}/api/v1/query", self.address))
            .query(&[("query", query)])
            .timeout(self.timeout);
        if let Some(key) = &self.token {
            let token = ctx
                .secrets
                .get(key)
                .ok_or_else(|| format!("bearer token {key} not resolved"))?;
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("Prometheus unreachable: {}", error_chain(&e)))?;
        let status = response.status();
        let body = super::read_capped(response, BODY_LIMIT).await?;
        if !status.is_success() {
            return Err(format!(
                "Prometheus answered HTTP {}: {}",
                status.as_u16(),
                excerpt(&body, 200)
            ));
        }
        parse_single_value(&body)
    }

    async fn run(&self, ctx: &GateContext) -> GateOutcome {
        let query = match self.query.render(ctx) {
            Ok(query) => query,
            Err(why) => return GateOutcome::new(GateVerdict::Inconclusive, why),
        };
        if let Some((template, minimum)) = &self.min_samples {
            let sample_query = match template.render(ctx) {
                Ok(query) => query,
                Err(why) => return GateOutcome::new(GateVerdict::Inconclusive, why),
            };
            match self.instant(&sample_query, ctx).await {
                Ok(n) if n >= *minimum => {}
                Ok(n) => {
                    return GateOutcome::new(
                        GateVerdict::Inconclusive,
                        format!(
                            "too little traffic to judge: {} < {} (query: {sample_query})",
                            format_value(n),
                            minimum
                        ),
                    )
                    .with_value(format_value(n));
                }
                Err(why) => {
                    return GateOutcome::new(
                        GateVerdict::Inconclusive,
                        format!("{why} (query: {sample_query})"),
                    );
                }
            }
        }
        let value = match self.instant(&query, ctx).await {
            Ok(v) => v,
            Err(why) => {
                return GateOutcome::new(
                    GateVerdict::Inconclusive,
                    format!("{why} (query: {query})"),
                );
            }
        };
        let shown = format_value(value);
        match self.threshold.holds(value) {
            None => GateOutcome::new(
                GateVerdict::Inconclusive,
                format!("query returned {shown}, which is no measurement (query: {query})"),
            )
            .with_value(shown),
            Some(true) => GateOutcome::new(
                GateVerdict::Passed,
                format!("{shown} {} holds", self.threshold),
            )
            .with_value(shown),
            Some(false) => GateOutcome::new(
                GateVerdict::Failed,
                format!("{shown} does not meet {} (query: {query})", self.threshold),
            )
            .with_value(shown),
        }
    }
}

impl GateCheck for PrometheusCheck {
    fn evaluate<'a>(&'a self, ctx: &'a GateContext) -> BoxFuture<'a, GateOutcome> {
        Box::pin(self.run(ctx))
    }
}

/// A query template checked for where its placeholders stand, or the field's error.
fn compile_query(field: &str, query: &str) -> Result<QueryTemplate, FieldError> {
    if query.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    QueryTemplate::compile(query).map_err(|why| FieldError::new(field, why))
}

fn min_samples(spec: Option<&MinSamples>) -> Result<Option<(QueryTemplate, f64)>, FieldError> {
    spec.map(|m| {
        compile_query("spec.prometheus.minSamples.query", &m.query).map(|q| (q, m.minimum))
    })
    .transpose()
}

/// The gate's own address, else the operator's default.
fn address<'a>(spec: &'a PrometheusGate, env: &'a super::GateEnv) -> Result<&'a str, String> {
    match (spec.address.trim(), &env.prometheus_address) {
        ("", Some(default)) => Ok(default.as_str()),
        ("", None) => {
            Err("required: this operator has no default Prometheus (--prometheus-address)".into())
        }
        (own, _) => Ok(own),
    }
}

/// A Prometheus base URL: http(s), no query or fragment (a path prefix is fine, e.g. behind
/// a proxy). Also the check of `--prometheus-address`.
pub fn base_url(address: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(address)
        .map_err(|e| format!("'{address}' is not an http(s) URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        let scheme = url.scheme();
        return Err(format!(
            "'{address}' is not an http(s) URL: scheme '{scheme}' is not http or https"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "'{address}' has a query or fragment; give the server's base URL"
        ));
    }
    Ok(url)
}

/// A base URL whose host and port are on the allow-list.
fn check_address(address: &str, env: &super::GateEnv) -> Result<(), String> {
    let url = base_url(address)?;
    env.webhook_allow.refusal(&url).map_or(Ok(()), Err)
}

/// A bearer token goes only where it cannot be read on the way: https, certificates verified.
fn token_exposure(spec: &PrometheusGate, address: &str) -> Option<String> {
    spec.bearer_token_secret_ref.as_ref()?;
    let insecure = spec.tls.as_ref().is_some_and(|t| t.insecure_skip_verify);
    let https = address.trim().to_ascii_lowercase().starts_with("https://");
    match (https, insecure) {
        (true, false) => None,
        (false, _) => Some("a token is sent only over https; the address is not".into()),
        (true, true) => Some(
            "a token is not sent with tls.insecureSkipVerify: anyone in the middle could read it"
                .into(),
        ),
    }
}

/// The shared client, or one of its own when the gate skips verification.
fn tls_client(
    spec: &PrometheusGate,
    shared: &reqwest::Client,
    allow: &super::allow::AllowList,
) -> reqwest::Client {
    match &spec.tls {
        Some(tls) if tls.insecure_skip_verify => super::client_builder(allow)
            .tls_danger_accept_invalid_certs(true)
            .build()
            .unwrap_or_else(|_| shared.clone()),
        _ => shared.clone(),
    }
}

/// A client that trusts the CA bundle `pem` (resolved from a Secret for this evaluation).
fn client_trusting(pem: &str, allow: &super::allow::AllowList) -> Result<reqwest::Client, String> {
    let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
        .map_err(|e| format!("CA bundle is not PEM: {e}"))?;
    let mut builder = super::client_builder(allow);
    for cert in certs {
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build a TLS client: {e}"))
}

#[derive(Deserialize)]
struct QueryResponse {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<QueryData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryData {
    result_type: String,
    result: serde_json::Value,
}

/// Extracts the one number an instant query answered, or says why there is none.
pub fn parse_single_value(body: &str) -> Result<f64, String> {
    let parsed: QueryResponse =
        serde_json::from_str(body).map_err(|e| format!("unreadable Prometheus answer: {e}"))?;
    if parsed.status != "success" {
        return Err(format!(
            "Prometheus query failed: {}",
            parsed.error.unwrap_or(parsed.status)
        ));
    }
    let data = parsed.data.ok_or("Prometheus answer has no data")?;
    let sample = match data.result_type.as_str() {
        "scalar" => data.result.clone(),
        "vector" => {
            let series = data.result.as_array().cloned().unwrap_or_default();
            match series.len() {
                0 => return Err("query returned an empty result".into()),
                1 => series[0].get("value").cloned().unwrap_or_default(),
                n => {
                    return Err(format!(
                        "query returned {n} series; aggregate it to one, e.g. with sum()"
                    ));
                }
            }
        }
        other => {
            return Err(format!(
                "query returned a {other}; an instant vector or scalar is needed"
            ));
        }
    };
    let text = sample
        .get(1)
        .and_then(|v| v.as_str())
        .ok_or("Prometheus sample has no value")?;
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        other => other
            .parse()
            .map_err(|_| format!("sample value '{other}' is not a number")),
    }
}

fn format_value(v: f64) -> String {
    match v {
        v if v.is_nan() => "NaN".into(),
        f64::INFINITY => "+Inf".into(),
        f64::NEG_INFINITY => "-Inf".into(),
        v => format!("{v}"),
    }
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The `prometheus` kind, as registered in [`super::KINDS`]: it needs the Secrets it names.
pub struct Kind;

impl super::GateKind for Kind {
    fn gate_type(&self) -> crate::api::GateType {
        crate::api::GateType::Prometheus
    }
    fn destination(&self, spec: &crate::api::GateSpec) -> Option<(&'static str, String)> {
        // The default address is the platform team's; only a gate's own one is checked here.
        let address = spec.prometheus.as_ref()?.address.trim();
        (!address.is_empty()).then(|| ("spec.prometheus.address", address.to_string()))
    }

    fn configured(&self, spec: &crate::api::GateSpec) -> bool {
        spec.prometheus.is_some()
    }
    fn compile(
        &self,
        spec: &crate::api::GateSpec,
        env: &super::GateEnv,
    ) -> Result<(Box<dyn GateCheck>, super::Needs), Vec<FieldError>> {
        let settings = super::settings(spec.prometheus.as_ref(), self.gate_type())?;
        let secrets = settings
            .bearer_token_secret_ref
            .iter()
            .chain(settings.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref()))
            .cloned()
            .collect();
        let check = PrometheusCheck::compile(settings, env)?;
        let needs = super::Needs {
            secrets,
            approvals: false,
        };
        Ok((check, needs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::gate::{SecretKeyRef, TlsConfig};

    fn env(allow: &str) -> super::super::GateEnv {
        super::super::GateEnv {
            http: super::super::http_client(&super::super::allow::AllowList::new([allow])),
            webhook_allow: super::super::allow::AllowList::new([allow]),
            prometheus_address: None,
            jobs: None,
            operator_account: None,
        }
    }

    fn gate(address: &str, token: bool, insecure: bool) -> PrometheusGate {
        PrometheusGate {
            address: address.into(),
            query: "up".into(),
            condition: "> 0".into(),
            timeout: None,
            min_samples: None,
            bearer_token_secret_ref: token.then(|| SecretKeyRef {
                name: "prom".into(),
                key: "token".into(),
            }),
            tls: insecure.then_some(TlsConfig {
                ca_secret_ref: None,
                insecure_skip_verify: true,
            }),
        }
    }

    fn refusals(spec: &PrometheusGate, allow: &str) -> Vec<String> {
        match PrometheusCheck::compile(spec, &env(allow)) {
            Ok(_) => vec![],
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn a_gate_without_an_address_queries_the_operators_default_or_says_there_is_none() {
        let spec = gate("", false, false);
        let refused = refusals(&spec, "prometheus.monitoring:9090");
        assert_eq!(
            refused,
            vec![
                "spec.prometheus.address: required: this operator has no default Prometheus (--prometheus-address)"
            ]
        );
        let mut with_default = env("prometheus.monitoring:9090");
        with_default.prometheus_address = Some("http://prometheus.monitoring:9090/".into());
        assert!(PrometheusCheck::compile(&spec, &with_default).is_ok());
        assert_eq!(
            address(&spec, &with_default),
            Ok("http://prometheus.monitoring:9090/")
        );
        let own = gate("http://other:9090", false, false);
        assert_eq!(address(&own, &with_default), Ok("http://other:9090"));
        let token = gate("", true, false);
        assert!(
            PrometheusCheck::compile(&token, &with_default)
                .err()
                .is_some_and(|e| e[0].to_string().contains("only over https")),
            "a token is judged against the default address it would go to"
        );
    }

    #[test]
    fn an_address_off_the_allow_list_is_refused_naming_host_and_port() {
        let spec = gate("http://10.0.0.7:9090", false, false);
        let refused = refusals(&spec, "prometheus.monitoring:9090");
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0]
                .starts_with("spec.prometheus.address: destination '10.0.0.7:9090' is not in"),
            "{refused:?}"
        );
        let spec = gate("http://prometheus.monitoring:9090", false, false);
        assert!(refusals(&spec, "prometheus.monitoring:9090").is_empty());
        let spec = gate("http://prometheus.monitoring:9090/x?y=", false, false);
        assert!(refusals(&spec, "*")[0].contains("query or fragment"));
    }

    #[test]
    fn a_token_goes_only_over_verified_https() {
        let plain = refusals(&gate("http://prom:9090", true, false), "*");
        assert!(
            plain[0].starts_with(
                "spec.prometheus.bearerTokenSecretRef: a token is sent only over https"
            ),
            "{plain:?}"
        );
        let insecure = refusals(&gate("https://prom:9090", true, true), "*");
        assert!(insecure[0].contains("insecureSkipVerify"), "{insecure:?}");
        assert!(refusals(&gate("https://prom:9090", true, false), "*").is_empty());
    }

    #[test]
    fn a_single_sample_is_read() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.25"]}]}}"#;
        assert_eq!(parse_single_value(body), Ok(0.25));
        let body = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}"#;
        assert_eq!(parse_single_value(body), Ok(3.0));
    }

    #[test]
    fn missing_or_ambiguous_data_is_an_error_not_a_value() {
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(parse_single_value(empty).unwrap_err().contains("empty"));
        let two = r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"1"]},{"value":[1,"2"]}]}}"#;
        assert!(parse_single_value(two).unwrap_err().contains("2 series"));
        let failed = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(
            parse_single_value(failed)
                .unwrap_err()
                .contains("parse error")
        );
        assert!(parse_single_value("<html>").is_err());
    }

    #[test]
    fn nan_is_read_as_nan() {
        let body =
            r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"NaN"]}]}}"#;
        assert!(parse_single_value(body).unwrap().is_nan());
    }
}
