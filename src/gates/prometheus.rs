//! Prometheus gate: an instant PromQL query whose single value must meet a threshold. NaN, an
//! empty result, several series, an HTTP error or an unreachable server are inconclusive.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::condition::Threshold;
use super::{GateCheck, GateContext, GateOutcome, excerpt, render_template, timeout_field};
use crate::api::gate::PrometheusGate;
use crate::api::release::GateVerdict;
use crate::api::validation::FieldError;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PrometheusCheck {
    http: reqwest::Client,
    address: String,
    query: String,
    threshold: Threshold,
    timeout: Duration,
}

impl PrometheusCheck {
    pub fn compile(
        spec: &PrometheusGate,
        http: &reqwest::Client,
    ) -> Result<Box<dyn GateCheck>, Vec<FieldError>> {
        let mut errors = Vec::new();
        if let Err(e) = reqwest::Url::parse(&spec.address)
            .map_err(|e| e.to_string())
            .and_then(|u| match u.scheme() {
                "http" | "https" => Ok(()),
                other => Err(format!("scheme '{other}' is not http or https")),
            })
        {
            errors.push(FieldError::new(
                "spec.prometheus.address",
                format!("'{}' is not an http(s) URL: {e}", spec.address),
            ));
        }
        if spec.query.trim().is_empty() {
            errors.push(FieldError::new(
                "spec.prometheus.query",
                "must not be empty",
            ));
        }
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
        match (threshold, timeout) {
            (Some(threshold), Some(timeout)) if errors.is_empty() => Ok(Box::new(Self {
                http: http.clone(),
                address: spec.address.trim_end_matches('/').to_string(),
                query: spec.query.clone(),
                threshold,
                timeout,
            })),
            _ => Err(errors),
        }
    }

    async fn run(&self, ctx: &GateContext) -> GateOutcome {
        let query = render_template(&self.query, ctx);
        let inconclusive = |msg: String| {
            GateOutcome::new(GateVerdict::Inconclusive, format!("{msg} (query: {query})"))
        };
        let response = self
            .http
            .get(format!("{}/api/v1/query", self.address))
            .query(&[("query", query.as_str())])
            .timeout(self.timeout)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => return inconclusive(format!("Prometheus unreachable: {}", error_chain(&e))),
        };
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return inconclusive(format!(
                "Prometheus answered HTTP {}: {}",
                status.as_u16(),
                excerpt(&body, 200)
            ));
        }
        let value = match parse_single_value(&body) {
            Ok(v) => v,
            Err(why) => return inconclusive(why),
        };
        let shown = format_value(value);
        match self.threshold.holds(value) {
            None => inconclusive("query returned NaN".into()).with_value(shown),
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
    if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
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
