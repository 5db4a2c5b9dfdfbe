//! The Prometheus HTTP API as the gates that query it use it: which server (a gate's own
//! address or the operator's default, on the allow-list), with which credentials (a bearer
//! token only over verified https, a CA bundle from a Secret), and instant and range queries
//! that answer numbers, or why there are none.

use std::time::Duration;

use jiff::Timestamp;
use serde::Deserialize;

use super::{GateContext, excerpt, timeout_field};
use crate::api::gate::{PrometheusServer, SecretKeyRef, TlsConfig};
use crate::validation::FieldError;

/// The most of a Prometheus answer that is read: a range query of 1,000 steps is ~40 KiB.
const BODY_LIMIT: usize = 1024 * 1024;

/// The Secrets a server's credentials are read from.
pub fn secrets(server: &PrometheusServer) -> Vec<SecretKeyRef> {
    let ca = server.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref());
    server
        .bearer_token_secret_ref
        .iter()
        .chain(ca)
        .cloned()
        .collect()
}

/// What a gate querying `server` needs from the cluster: the Secrets of its credentials.
pub fn needs(server: &PrometheusServer) -> super::Needs {
    super::Needs {
        secrets: secrets(server),
        ..Default::default()
    }
}

/// The field and URL of a gate's own address, when it names one. The default address is
/// the platform team's; only a gate's own one is checked against the allow-list.
pub fn destination(
    server: Option<&PrometheusServer>,
    field: &'static str,
) -> Option<(&'static str, String)> {
    let address = server?.address.trim();
    (!address.is_empty()).then(|| (field, address.to_string()))
}

/// A Prometheus a gate queries, checked when the gate compiles.
pub struct PromClient {
    http: reqwest::Client,
    address: String,
    timeout: Duration,
    token: Option<String>,
    ca: Option<String>,
    /// For the clients built at evaluation time (a CA bundle from a Secret).
    allow: super::allow::AllowList,
}

impl PromClient {
    /// The client for `server`, set in the spec's block `block` (`spec.prometheus`), or every
    /// field error of its settings.
    pub fn compile(
        block: &str,
        server: &PrometheusServer,
        default_timeout: Duration,
        env: &super::GateEnv,
    ) -> Result<Self, Vec<FieldError>> {
        let field = |name: &str| format!("{block}.{name}");
        let mut errors = Vec::new();
        let address = address(&server.address, env)
            .and_then(|address| check_address(address, env).map(|()| address))
            .map_err(|e| errors.push(FieldError::new(field("address"), e)))
            .unwrap_or_default();
        if let Some(why) = token_exposure(server, address) {
            errors.push(FieldError::new(field("bearerTokenSecretRef"), why));
        }
        let timeout = timeout_field(
            &field("timeout"),
            server.timeout.as_deref(),
            default_timeout,
        )
        .map_err(|e| errors.push(e));
        match timeout {
            Ok(timeout) if errors.is_empty() => Ok(Self {
                http: tls_client(server.tls.as_ref(), &env.http, &env.webhook_allow),
                allow: env.webhook_allow.clone(),
                address: address.trim_end_matches('/').to_string(),
                timeout,
                token: server
                    .bearer_token_secret_ref
                    .as_ref()
                    .map(super::secret_key),
                ca: server
                    .tls
                    .as_ref()
                    .and_then(|t| t.ca_secret_ref.as_ref())
                    .map(super::secret_key),
            }),
            _ => Err(errors),
        }
    }

    /// The one number an instant query answers, or why there is none.
    pub async fn instant(&self, query: &str, ctx: &GateContext) -> Result<f64, String> {
        let body = self
            .get("query", &[("query", query.to_string())], ctx)
            .await?;
        parse_single_value(&body)
    }

    /// [`Self::instant`] evaluated at the operator's `ctx.now`, not at Prometheus' own clock:
    /// for windows that must end where the operator says.
    pub async fn instant_now(&self, query: &str, ctx: &GateContext) -> Result<f64, String> {
        let at = format!("{:.3}", ctx.now.as_millisecond() as f64 / 1000.0);
        let params = [("query", query.to_string()), ("time", at)];
        parse_single_value(&self.get("query", &params, ctx).await?)
    }

    /// The values of the one series a range query answers from `start` to `end`, one per
    /// `step` (NaN where the series has no sample), or why there are none.
    pub async fn range(
        &self,
        query: &str,
        (start, end): (Timestamp, Timestamp),
        step: Duration,
        ctx: &GateContext,
    ) -> Result<Vec<f64>, String> {
        let params = [
            ("query", query.to_string()),
            ("start", start.as_second().to_string()),
            ("end", end.as_second().to_string()),
            ("step", format!("{}s", step.as_secs().max(1))),
        ];
        let body = self.get("query_range", &params, ctx).await?;
        let step = step.as_secs().max(1) as i64;
        parse_range(&body, start.as_second(), end.as_second(), step)
    }

    async fn get(
        &self,
        path: &str,
        params: &[(&str, String)],
        ctx: &GateContext,
    ) -> Result<String, String> {
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
            .get(format!("{}/api/v1/{path}", self.address))
            .query(params)
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
        match status.is_success() {
            true => Ok(body),
            false => Err(format!(
                "Prometheus answered HTTP {}: {}",
                status.as_u16(),
                excerpt(&body, 200)
            )),
        }
    }
}

/// The gate's own address, else the operator's default.
pub(super) fn address<'a>(own: &'a str, env: &'a super::GateEnv) -> Result<&'a str, String> {
    match (own.trim(), &env.prometheus_address) {
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
fn token_exposure(server: &PrometheusServer, address: &str) -> Option<String> {
    server.bearer_token_secret_ref.as_ref()?;
    let insecure = server.tls.as_ref().is_some_and(|t| t.insecure_skip_verify);
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
    tls: Option<&TlsConfig>,
    shared: &reqwest::Client,
    allow: &super::allow::AllowList,
) -> reqwest::Client {
    match tls {
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

/// The answer's data, of the one result type wanted, or why there is none.
fn data_of(body: &str, wanted: &[&str]) -> Result<QueryData, String> {
    let parsed: QueryResponse =
        serde_json::from_str(body).map_err(|e| format!("unreadable Prometheus answer: {e}"))?;
    if parsed.status != "success" {
        return Err(format!(
            "Prometheus query failed: {}",
            parsed.error.unwrap_or(parsed.status)
        ));
    }
    let data = parsed.data.ok_or("Prometheus answer has no data")?;
    match wanted.contains(&data.result_type.as_str()) {
        true => Ok(data),
        false => Err(format!(
            "query returned a {}; {} is needed",
            data.result_type,
            wanted.join(" or ")
        )),
    }
}

/// The only series of a vector or matrix result, or why there is not exactly one.
fn only_series(result: &serde_json::Value) -> Result<&serde_json::Value, String> {
    let series = result.as_array().map(Vec::as_slice).unwrap_or_default();
    match series {
        [] => Err("query returned an empty result".into()),
        [one] => Ok(one),
        more => Err(format!(
            "query returned {} series; aggregate it to one, e.g. with sum()",
            more.len()
        )),
    }
}

/// Extracts the one number an instant query answered, or says why there is none.
pub fn parse_single_value(body: &str) -> Result<f64, String> {
    let data = data_of(body, &["vector", "scalar"])?;
    let sample = match data.result_type.as_str() {
        "scalar" => data.result.clone(),
        _ => only_series(&data.result)?
            .get("value")
            .cloned()
            .unwrap_or_default(),
    };
    sample_value(&sample)
}

/// The values of a range query's one series at start, start + step, ... end: NaN at a step
/// without a sample. An empty result (no series at all) is an empty sample: no data, which
/// no `nanStrategy` turns into zeros.
pub fn parse_range(body: &str, start: i64, end: i64, step: i64) -> Result<Vec<f64>, String> {
    let data = data_of(body, &["matrix"])?;
    if data.result.as_array().is_some_and(Vec::is_empty) {
        return Ok(Vec::new());
    }
    let steps = ((end - start) / step.max(1) + 1).clamp(0, 10_000) as usize;
    let mut values = vec![f64::NAN; steps];
    let series = only_series(&data.result)?;
    let samples = series.get("values").and_then(|v| v.as_array());
    for sample in samples.map(Vec::as_slice).unwrap_or_default() {
        let at = sample.get(0).and_then(serde_json::Value::as_f64);
        let Some(at) = at.map(|t| t.round() as i64) else {
            continue;
        };
        let slot = (at - start) / step.max(1);
        if (at - start) % step.max(1) == 0 && (0..steps as i64).contains(&slot) {
            values[slot as usize] = sample_value(sample)?;
        }
    }
    Ok(values)
}

/// The number in a `[time, "value"]` sample.
fn sample_value(sample: &serde_json::Value) -> Result<f64, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_answer_is_one_value_per_step_with_nan_where_a_sample_is_missing() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[100,"1.5"],[110,"2"],[130,"NaN"]]}]}}"#;
        let values = parse_range(body, 100, 140, 10).unwrap();
        assert_eq!(values.len(), 5);
        assert_eq!(&values[..2], &[1.5, 2.0]);
        assert!(values[2].is_nan() && values[3].is_nan() && values[4].is_nan());
        let empty = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(
            parse_range(empty, 100, 140, 10)
                .unwrap()
                .iter()
                .all(|v| v.is_nan())
        );
        let two = r#"{"status":"success","data":{"resultType":"matrix","result":[{"values":[]},{"values":[]}]}}"#;
        assert!(
            parse_range(two, 100, 140, 10)
                .unwrap_err()
                .contains("2 series")
        );
        let instant = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(
            parse_range(instant, 100, 140, 10)
                .unwrap_err()
                .contains("matrix")
        );
    }
}
