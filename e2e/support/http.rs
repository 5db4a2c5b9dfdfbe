//! Small HTTP servers the tests control: a metrics endpoint and a webhook endpoint.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{any, get};
use serde_json::Value;

/// Serves `/metrics` with gauges whose values the test sets.
#[derive(Clone, Default)]
pub struct MetricsServer {
    values: Arc<Mutex<BTreeMap<String, String>>>,
}

impl MetricsServer {
    /// Sets `name{labels}` to `value` (any Prometheus text value, e.g. `0.5` or `NaN`).
    pub fn set(&self, series: &str, value: &str) {
        self.values
            .lock()
            .unwrap()
            .insert(series.to_string(), value.to_string());
    }

    /// Starts serving on a free loopback port and returns `host:port`.
    pub async fn start(&self) -> String {
        let state = self.clone();
        let app = axum::Router::new().route(
            "/metrics",
            get(move || {
                let state = state.clone();
                async move {
                    let values = state.values.lock().unwrap().clone();
                    values
                        .iter()
                        .map(|(k, v)| format!("{k} {v}\n"))
                        .collect::<String>()
                }
            }),
        );
        serve(app).await
    }
}

/// Answers `/{status}/{message}` with that status and body, `/slow/{secs}` with 200 after
/// that many seconds, and `/stream/{mib}` with that many MiB of body; counts the calls per
/// path.
#[derive(Clone, Default)]
pub struct WebhookServer {
    pub calls: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl WebhookServer {
    pub async fn start(&self) -> String {
        let app = axum::Router::new()
            .route("/slow/{secs}", any(slow))
            .route("/stream/{mib}", any(stream))
            .route("/stream/{mib}/{*rest}", any(stream_under))
            .route("/healthz", any(|| async { "ok" }))
            .route("/{status}/{message}", any(answer))
            .with_state(self.clone());
        serve(app).await
    }

    pub fn calls(&self, path: &str) -> usize {
        self.calls.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn count(server: &WebhookServer, path: String) {
    *server.calls.lock().unwrap().entry(path).or_default() += 1;
}

async fn slow(State(server): State<WebhookServer>, Path(secs): Path<u64>) -> &'static str {
    count(&server, format!("/slow/{secs}"));
    tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
    "ok"
}

/// `mib` MiB of `a`, in 64 KiB chunks, made as they are sent.
async fn stream(State(server): State<WebhookServer>, Path(mib): Path<usize>) -> axum::body::Body {
    count(&server, format!("/stream/{mib}"));
    let chunk = axum::body::Bytes::from(vec![b'a'; 64 * 1024]);
    let chunks = futures::stream::iter(
        std::iter::repeat_n(chunk, mib * 16).map(Ok::<_, std::convert::Infallible>),
    );
    axum::body::Body::from_stream(chunks)
}

/// [`stream`] under any path, e.g. a Prometheus query under a base URL.
async fn stream_under(
    state: State<WebhookServer>,
    Path((mib, _)): Path<(usize, String)>,
) -> axum::body::Body {
    stream(state, Path(mib)).await
}

async fn answer(
    State(server): State<WebhookServer>,
    Path((status, message)): Path<(u16, String)>,
) -> (StatusCode, String) {
    count(&server, format!("/{status}/{message}"));
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        message,
    )
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Records the JSON body of every POST by path; answers 503 while `down`, and on the paths
/// in `down_paths`.
#[derive(Clone, Default)]
pub struct Receiver {
    pub got: Arc<Mutex<BTreeMap<String, Vec<Value>>>>,
    pub down: Arc<AtomicBool>,
    pub down_paths: Arc<Mutex<std::collections::BTreeSet<String>>>,
}

impl Receiver {
    pub async fn start(&self) -> u16 {
        let app = axum::Router::new()
            .route("/{path}", axum::routing::post(receive))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        port
    }

    pub fn got(&self, path: &str) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }
}

async fn receive(
    State(r): State<Receiver>,
    Path(path): Path<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    if r.down.load(Ordering::SeqCst) || r.down_paths.lock().unwrap().contains(&path) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    r.got.lock().unwrap().entry(path).or_default().push(value);
    StatusCode::OK
}
