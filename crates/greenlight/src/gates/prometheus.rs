//! Prometheus gate: an instant PromQL query whose single value must meet a threshold. NaN, an
//! empty result, several series, an HTTP error or an unreachable server are inconclusive.

use std::time::Duration;

use futures::future::BoxFuture;

use super::condition::Threshold;
use super::prom_client::PromClient;
use super::promql::QueryTemplate;
use super::{GateCheck, GateContext, GateOutcome};
use crate::api::gate::{MinSamples, PrometheusGate};
use crate::api::release::GateVerdict;
use crate::validation::FieldError;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PrometheusCheck {
    client: PromClient,
    query: QueryTemplate,
    threshold: Threshold,
    /// The traffic query and the least it must return for the main query to be judged.
    min_samples: Option<(QueryTemplate, f64)>,
}

impl PrometheusCheck {
    pub fn compile(
        spec: &PrometheusGate,
        env: &super::GateEnv,
    ) -> Result<Box<dyn GateCheck>, Vec<FieldError>> {
        let mut errors = Vec::new();
        let client = PromClient::compile("spec.prometheus", &spec.server, DEFAULT_TIMEOUT, env)
            .map_err(|mut e| errors.append(&mut e))
            .ok();
        let query = compile_query("spec.prometheus.query", &spec.query)
            .map_err(|e| errors.push(e))
            .ok();
        let min_samples = min_samples(spec.min_samples.as_ref()).map_err(|e| errors.push(e));
        let threshold = Threshold::parse(&spec.condition)
            .map_err(|e| errors.push(FieldError::new("spec.prometheus.condition", e.to_string())))
            .ok();
        match (client, query, threshold, min_samples) {
            (Some(client), Some(query), Some(threshold), Ok(min_samples)) if errors.is_empty() => {
                Ok(Box::new(Self {
                    client,
                    query,
                    threshold,
                    min_samples,
                }))
            }
            _ => Err(errors),
        }
    }

    async fn instant(&self, query: &str, ctx: &GateContext) -> Result<f64, String> {
        self.client.instant(query, ctx).await
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

fn format_value(v: f64) -> String {
    match v {
        v if v.is_nan() => "NaN".into(),
        f64::INFINITY => "+Inf".into(),
        f64::NEG_INFINITY => "-Inf".into(),
        v => format!("{v}"),
    }
}

/// The `prometheus` kind, as registered in [`super::KINDS`]: it needs the Secrets it names.
pub struct Kind;

impl super::GateKind for Kind {
    fn gate_type(&self) -> crate::api::GateType {
        crate::api::GateType::Prometheus
    }
    fn destination(&self, spec: &crate::api::GateSpec) -> Option<(&'static str, String)> {
        let server = spec.prometheus.as_ref().map(|p| &p.server);
        super::prom_client::destination(server, "spec.prometheus.address")
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
        let check = PrometheusCheck::compile(settings, env)?;
        Ok((check, super::prom_client::needs(&settings.server)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::prom_client::{address, parse_single_value};
    use super::*;
    use crate::api::gate::{PrometheusServer, SecretKeyRef, TlsConfig};

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
            server: PrometheusServer {
                address: address.into(),
                timeout: None,
                bearer_token_secret_ref: token.then(|| SecretKeyRef {
                    name: "prom".into(),
                    key: "token".into(),
                }),
                tls: insecure.then_some(TlsConfig {
                    ca_secret_ref: None,
                    insecure_skip_verify: true,
                }),
            },
            query: "up".into(),
            condition: "> 0".into(),
            min_samples: None,
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
            address(&spec.server.address, &with_default),
            Ok("http://prometheus.monitoring:9090/")
        );
        let own = gate("http://other:9090", false, false);
        assert_eq!(
            address(&own.server.address, &with_default),
            Ok("http://other:9090")
        );
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
