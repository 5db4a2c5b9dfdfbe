//! Gates against real services: Prometheus scraping a test endpoint, and HTTP webhooks.

use std::time::Duration;

use greenlight::api::release::GateVerdict;

use crate::env::{TestEnv, image, release_yaml, target_yaml};
use crate::support::free_port;
use crate::support::http::{MetricsServer, WebhookServer};
use crate::support::prometheus::Prometheus;

/// A one-stage pipeline `name` guarded by the gates listed.
fn gated_pipeline(name: &str, gates: &[&str]) -> String {
    let gates = gates.join(", ");
    format!(
        r#"{target}---
apiVersion: greenlight.dev/v1alpha1
kind: Stage
metadata: {{name: {name}}}
spec:
  pipeline: {name}
  target: {{name: web-{name}}}
  gates: [{gates}]
"#,
        target = target_yaml(&format!("web-{name}"))
    )
}

fn prometheus_gate(name: &str, address: &str, query: &str, condition: &str) -> String {
    format!(
        r#"apiVersion: greenlight.dev/v1alpha1
kind: Gate
metadata: {{name: {name}}}
spec:
  type: prometheus
  recheckInterval: 2s
  prometheus:
    address: {address}
    query: '{query}'
    condition: "{condition}"
    timeout: 3s
"#
    )
}

async fn gate_result(
    env: &TestEnv,
    release: &str,
    stage: &str,
    reason: &str,
) -> greenlight::api::release::GateResultStatus {
    env.wait_for(
        &format!("{release} held at {stage} with {reason}"),
        Duration::from_secs(60),
        || async {
            let r = env.release(release).await;
            let entry = r.status.as_ref().and_then(|s| s.stages.get(stage)).cloned();
            match entry {
                Some(e) if e.reason.as_deref() == Some(reason) && !e.gates.is_empty() => {
                    Ok(e.gates[0].clone())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// SLO gates on the good, bad and NaN series, on a series that does not exist, and on a
/// Prometheus that is down.
fn slo_gates(prom: &str, down: &str) -> String {
    let q = |service: &str| format!(r#"http_error_ratio{{service="{service}"}}"#);
    [
        prometheus_gate("slo-good", prom, &q("good"), "< 0.01"),
        prometheus_gate("slo-bad", prom, &q("bad"), "< 0.01"),
        prometheus_gate("slo-nan", prom, &q("nan"), "< 0.01"),
        prometheus_gate("slo-empty", prom, &q("{{pipeline}}-missing"), "< 0.01"),
        prometheus_gate("slo-down", down, &q("good"), "< 0.01"),
    ]
    .join("---\n")
}

pub async fn prometheus_gate_passes_fails_and_is_inconclusive_on_nan_empty_or_down(
    mut env: TestEnv,
) {
    let metrics = MetricsServer::default();
    metrics.set(r#"http_error_ratio{service="good"}"#, "0.001");
    metrics.set(r#"http_error_ratio{service="bad"}"#, "0.25");
    metrics.set(r#"http_error_ratio{service="nan"}"#, "NaN");
    let target = metrics.start().await;
    let mut prometheus = Prometheus::start(&[target]);
    prometheus.wait_for_series("http_error_ratio", 3).await;
    let prom = prometheus.url.clone();
    let down = format!("http://127.0.0.1:{}", free_port());
    env.apply(&slo_gates(&prom, &down));
    for name in ["good", "bad", "nan", "empty", "down"] {
        env.apply(&gated_pipeline(name, &[&format!("slo-{name}")]));
    }
    env.start_controller();
    for name in ["good", "bad", "nan", "empty", "down"] {
        env.apply(&release_yaml(&format!("{name}-1"), name, "1", &image(name)));
    }
    assert_each_gate_gives_its_verdict_and_holds_its_release(&env).await;

    // A failing gate holds rather than kills: once the SLO recovers, the release proceeds.
    metrics.set(r#"http_error_ratio{service="bad"}"#, "0.002");
    env.wait_release_stage("bad-1", "bad", "Succeeded", Duration::from_secs(60))
        .await;

    // Prometheus going away mid-evaluation is inconclusive too, never a pass.
    prometheus.stop();
    env.apply(&release_yaml("good-2", "good", "2", &image("good-2")));
    let gone = gate_result(&env, "good-2", "good", "GateInconclusive").await;
    assert!(gone.message.contains("unreachable"), "{gone:?}");
    assert_eq!(
        env.images("web-good-primary").await,
        vec![image("good")],
        "good-2 is not deployed without data"
    );
}

async fn assert_each_gate_gives_its_verdict_and_holds_its_release(env: &TestEnv) {
    let passed = env
        .wait_release_stage("good-1", "good", "Succeeded", Duration::from_secs(60))
        .await;
    let gate = &passed.status.unwrap().stages["good"].gates[0];
    assert_eq!(
        (gate.result, gate.value.as_deref()),
        (GateVerdict::Passed, Some("0.001"))
    );

    let failed = gate_result(env, "bad-1", "bad", "GateFailed").await;
    assert_eq!(
        (failed.result, failed.value.as_deref()),
        (GateVerdict::Failed, Some("0.25"))
    );
    assert!(failed.message.contains("< 0.01"), "{failed:?}");

    let nan = gate_result(env, "nan-1", "nan", "GateInconclusive").await;
    assert_eq!(
        (nan.result, nan.value.as_deref()),
        (GateVerdict::Inconclusive, Some("NaN"))
    );

    let empty = gate_result(env, "empty-1", "empty", "GateInconclusive").await;
    assert!(
        empty.message.contains("empty result") && empty.message.contains("empty-missing"),
        "template rendered: {empty:?}"
    );

    let unreachable = gate_result(env, "down-1", "down", "GateInconclusive").await;
    assert!(
        unreachable.message.contains("unreachable"),
        "{unreachable:?}"
    );

    // None of the held releases was deployed.
    for name in ["bad", "nan", "empty", "down"] {
        assert!(
            env.deployment(&format!("web-{name}-primary"))
                .await
                .is_none(),
            "{name} must not be promoted"
        );
    }
}

/// A webhook gate that approves, and one that answers 403 for a change freeze.
fn approved_and_freeze_gates(addr: &str) -> String {
    format!(
        r#"apiVersion: greenlight.dev/v1alpha1
kind: Gate
metadata: {{name: change-approved}}
spec:
  type: webhook
  webhook: {{url: "http://{addr}/200/approved"}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Gate
metadata: {{name: change-freeze}}
spec:
  type: webhook
  recheckInterval: 2s
  webhook: {{url: "http://{addr}/403/change freeze until Monday", timeout: 2s}}
"#
    )
}

pub async fn webhook_gate_passes_on_2xx_and_fails_with_status_and_body(mut env: TestEnv) {
    let hooks = WebhookServer::default();
    let addr = hooks.start().await;
    env.apply(&approved_and_freeze_gates(&addr));
    env.apply(&gated_pipeline("open", &["change-approved"]));
    // Gates run in order and stop at the first that does not pass.
    env.apply(&gated_pipeline(
        "frozen",
        &["change-freeze", "change-approved"],
    ));
    env.start_controller();
    env.apply(&release_yaml("open-1", "open", "1", &image("open")));
    env.apply(&release_yaml("frozen-1", "frozen", "1", &image("frozen")));

    let passed = env
        .wait_release_stage("open-1", "open", "Succeeded", Duration::from_secs(60))
        .await;
    let gate = &passed.status.unwrap().stages["open"].gates[0];
    assert_eq!(
        (gate.result, gate.value.as_deref()),
        (GateVerdict::Passed, Some("200"))
    );
    assert_the_freeze_fails_and_skips_the_gates_after_it(&env, &hooks).await;
}

async fn assert_the_freeze_fails_and_skips_the_gates_after_it(
    env: &TestEnv,
    hooks: &WebhookServer,
) {
    let held = env
        .wait_for(
            "frozen-1 held by the freeze",
            Duration::from_secs(60),
            || async {
                let r = env.release("frozen-1").await;
                match r
                    .status
                    .as_ref()
                    .and_then(|s| s.stages.get("frozen"))
                    .cloned()
                {
                    Some(e) if e.reason.as_deref() == Some("GateFailed") && e.gates.len() == 2 => {
                        Ok(e)
                    }
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    assert_eq!(held.gates[0].result, GateVerdict::Failed);
    assert_eq!(held.gates[0].value.as_deref(), Some("403"));
    assert!(
        held.gates[0]
            .message
            .contains("HTTP 403: change freeze until Monday"),
        "{:?}",
        held.gates[0]
    );
    assert_eq!(held.gates[1].result, GateVerdict::Skipped);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let approved_calls = hooks.calls("/200/approved");
    assert_eq!(
        approved_calls, 1,
        "only the open pipeline called the second gate"
    );
    let freeze_calls = hooks.calls("/403/change freeze until Monday");
    assert!(freeze_calls >= 2, "a failed gate is checked again");
    assert!(
        freeze_calls <= 3,
        "but only every recheckInterval (2s), not on every event: {freeze_calls} calls"
    );
    assert!(env.deployment("web-frozen-primary").await.is_none());
}

pub async fn webhook_gates_reach_only_allowed_hosts_and_follow_no_redirects(mut env: TestEnv) {
    let hooks = WebhookServer::default();
    let addr = hooks.start().await;
    let port = addr.rsplit(':').next().unwrap().to_string();
    env.apply(&format!(
        r#"apiVersion: greenlight.dev/v1alpha1
kind: Gate
metadata: {{name: elsewhere}}
spec:
  type: webhook
  webhook: {{url: "http://localhost:{port}/200/ok"}}
---
apiVersion: greenlight.dev/v1alpha1
kind: Gate
metadata: {{name: redirecting}}
spec:
  type: webhook
  webhook: {{url: "http://{addr}/307/moved"}}
"#
    ));
    env.apply(&gated_pipeline("redirected", &["redirecting"]));
    env.start_controller();
    // The controller runs with --webhook-allow 127.0.0.1: localhost is another destination.
    let refused = env
        .wait_for("the gate refused", Duration::from_secs(30), || async {
            let g = env
                .api::<greenlight::api::Gate>()
                .get("elsewhere")
                .await
                .unwrap();
            let stalled = g
                .status
                .unwrap_or_default()
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Stalled" && c.is_true());
            stalled
                .map(|c| c.message)
                .ok_or_else(|| "not yet".to_string())
        })
        .await;
    assert!(
        refused.contains("spec.webhook.url")
            && refused.contains("allow-list")
            && refused.contains("localhost"),
        "{refused}"
    );

    env.apply(&release_yaml(
        "redirected-1",
        "redirected",
        "1",
        &image("redirected"),
    ));
    let held = gate_result(&env, "redirected-1", "redirected", "GateFailed").await;
    assert_eq!(
        held.value.as_deref(),
        Some("307"),
        "the redirect is reported, not followed: {held:?}"
    );
    let said = &held.message;
    assert!(
        said.contains("a redirect") && said.contains("do not follow"),
        "{said}"
    );
    assert_eq!(hooks.calls("/307/moved"), 1);
}

/// The bearer token the Prometheus stand-in accepts, kept in a Secret.
const TOKEN: &str = "s3cr3t-t0ken-9f1c";

/// A Prometheus API stand-in that answers only with the right bearer token; its address.
/// A Prometheus API that answers only the right bearer token, over https (a token is never
/// sent over plain http), with a certificate for 127.0.0.1 from its own CA; returns its
/// address and the CA's PEM.
async fn start_prometheus_api_requiring_the_token(
    dir: &std::path::Path,
) -> (std::net::SocketAddr, String) {
    let ca = crate::support::certs::webhook_certs(dir, "prometheus");
    let app = axum::Router::new().route(
        "/api/v1/query",
        axum::routing::get(|headers: axum::http::HeaderMap| async move {
            let authorized = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"));
            if authorized {
                (axum::http::StatusCode::OK, r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.001"]}]}}"#.to_string())
            } else {
                (axum::http::StatusCode::UNAUTHORIZED, "missing or wrong token".to_string())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls_acceptor(dir);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, ca)
}

fn tls_acceptor(dir: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("tls.crt"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("tls.key")).unwrap();
    greenlight::gates::ensure_crypto_provider();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
}

fn prometheus_gate_with_token_from(addr: std::net::SocketAddr, name: &str, secret: &str) -> String {
    format!(
        "apiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {{name: {name}}}\nspec:\n  type: prometheus\n  recheckInterval: 2s\n  prometheus:\n    address: https://{addr}\n    query: up\n    condition: \"< 0.01\"\n    bearerTokenSecretRef: {{name: {secret}, key: token}}\n    tls: {{caSecretRef: {{name: prom-token, key: ca.crt}}}}\n"
    )
}

/// The token's Secret, and a Role letting the operator read exactly that Secret.
fn store_the_token_readable_by_the_operator(env: &TestEnv, ca: &str) {
    let ca = serde_json::to_string(ca).unwrap();
    env.apply(&format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: prom-token}}\nstringData: {{token: {TOKEN}, ca.crt: {ca}}}\n"));
    // The operator may read exactly this Secret here, as config/rbac/secret-reader-example.yaml shows.
    env.apply(&crate::support::operator_may_read_secret("prom-token"));
}

pub async fn prometheus_gate_authenticates_with_a_token_from_a_secret_and_never_shows_it(
    mut env: TestEnv,
) {
    let (addr, ca) =
        start_prometheus_api_requiring_the_token(&env.dir.join("prometheus-tls")).await;
    store_the_token_readable_by_the_operator(&env, &ca);
    env.apply(
        &[
            prometheus_gate_with_token_from(addr, "authed", "prom-token"),
            prometheus_gate_with_token_from(addr, "no-secret", "missing-secret"),
        ]
        .join("---\n"),
    );
    env.apply(&gated_pipeline("authed", &["authed"]));
    env.apply(&gated_pipeline("nosecret", &["no-secret"]));
    env.start_controller();
    env.apply(&release_yaml("authed-1", "authed", "1", &image("authed")));
    env.apply(&release_yaml(
        "nosecret-1",
        "nosecret",
        "1",
        &image("nosecret"),
    ));

    env.wait_release_stage("authed-1", "authed", "Succeeded", Duration::from_secs(60))
        .await;
    let missing = gate_result(&env, "nosecret-1", "nosecret", "GateInconclusive").await;
    // Not granted to the operator, so it says what to grant, naming the Secret.
    assert!(
        missing
            .message
            .contains("may not read Secret 'missing-secret'")
            && missing.message.contains("Role"),
        "{missing:?}"
    );
    assert_the_token_appears_in_no_status_event_or_log(&env).await;
}

async fn assert_the_token_appears_in_no_status_event_or_log(env: &TestEnv) {
    // The token appears in no status, event or log line.
    let statuses = format!(
        "{:?}{:?}",
        env.release("authed-1").await.status,
        env.stage("authed").await.status
    );
    let events = format!(
        "{:?}",
        env.api::<k8s_openapi::api::events::v1::Event>()
            .list(&Default::default())
            .await
            .unwrap()
            .items
    );
    for (what, text) in [
        ("status", statuses),
        ("events", events),
        ("controller log", env.controller_log()),
    ] {
        assert!(!text.contains(TOKEN), "the token leaked into the {what}");
    }
}

/// Creates `yaml` as dana (a platform admin) through the webhooks; returns the refusal.
fn refused(env: &TestEnv, yaml: &str) -> String {
    let out = env.kubectl_as("dana", &["create", "-f", "-"], yaml);
    assert!(!out.status.success(), "refused: {yaml}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Names on the allow-list are checked again after DNS: `localhost` is allowed by name, but
/// it resolves to loopback, which the list does not name. The metadata address is refused
/// whatever `*` says, and a token never goes over plain http.
pub async fn gates_aimed_at_loopback_by_name_the_metadata_service_or_a_token_over_http_are_refused_by_field(
    mut env: TestEnv,
) {
    env.allow = "localhost,prometheus.example:9090,*".into();
    env.grant_example_roles();
    env.start_admitted_controller().await;
    let by_name = refused(
        &env,
        &prometheus_gate("by-name", "http://localhost:9090", "up", "> 0"),
    );
    assert!(
        by_name.contains("spec.prometheus.address")
            && by_name.contains("'localhost' resolves to")
            && by_name.contains("loopback"),
        "{by_name}"
    );
    let metadata = refused(
        &env,
        "apiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {name: metadata}\nspec:\n  type: webhook\n  webhook: {url: \"http://169.254.169.254/latest/meta-data\"}\n",
    );
    assert!(
        metadata.contains("spec.webhook.url") && metadata.contains("link-local"),
        "{metadata}"
    );
    let token = refused(
        &env,
        &prometheus_gate("token", "http://prometheus.example:9090", "up", "> 0").replace(
            "  prometheus:\n",
            "  prometheus:\n    bearerTokenSecretRef: {name: prom, key: token}\n",
        ),
    );
    assert!(
        token.contains("spec.prometheus.bearerTokenSecretRef") && token.contains("http"),
        "{token}"
    );
}

/// Endpoints that answer with 100 MiB: each gate reads only up to its cap, is inconclusive,
/// and the controller's memory stays far below what reading the answer would take.
pub async fn gate_endpoints_streaming_100_mib_are_inconclusive_and_memory_stays_bounded(
    mut env: TestEnv,
) {
    let hooks = WebhookServer::default();
    let addr = hooks.start().await;
    env.apply(&format!(
        "{}---\n{}---\napiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {{name: flood-hook}}\nspec:\n  type: webhook\n  recheckInterval: 5s\n  webhook: {{url: \"http://{addr}/stream/100\"}}\n",
        prometheus_gate("flood-prom", &format!("http://{addr}/stream/100"), "up", "> 0"),
        gated_pipeline("hook", &["flood-hook"]),
    ));
    env.apply(&gated_pipeline("prom", &["flood-prom"]));
    env.start_controller();
    env.apply(&release_yaml("hook-1", "hook", "1", &image("hook-1")));
    env.apply(&release_yaml("prom-1", "prom", "1", &image("prom-1")));
    let hook = gate_result(&env, "hook-1", "hook", "GateInconclusive").await;
    assert!(hook.message.contains("larger than 8 KiB"), "{hook:?}");
    let prom = gate_result(&env, "prom-1", "prom", "GateInconclusive").await;
    assert!(prom.message.contains("larger than 1024 KiB"), "{prom:?}");
    assert!(hooks.calls("/stream/100") >= 1);
    let peak = env.controller_peak_rss_mib();
    assert!(
        peak < 100.0,
        "a 100 MiB answer is never held whole: peak RSS {peak:.1} MiB"
    );
}
