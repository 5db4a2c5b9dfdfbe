//! A stand-in for a release's container image in the closed-loop tests: one process per
//! image, whose behaviour the image tag decides (`healthy`, or `faulty`: every fifth request
//! answers 500). `POST /degrade` turns a healthy one faulty, as a release that degrades after
//! promotion would. It counts requests per workload for Prometheus to scrape.
//!
//! Usage: `greenlight-e2e-app <healthy|faulty> <port-file>`; it listens on a free loopback
//! port and writes the port to `<port-file>`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;

#[derive(Default)]
struct Counters {
    /// (workload, code) -> requests
    requests: BTreeMap<(String, u16), u64>,
    served: u64,
}

#[derive(Clone)]
struct App {
    faulty: Arc<std::sync::atomic::AtomicBool>,
    counters: Arc<Mutex<Counters>>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let behaviour = args.next().expect("behaviour: healthy or faulty");
    let port_file = args.next().expect("port file");
    let app = App {
        faulty: Arc::new((behaviour == "faulty").into()),
        counters: Arc::default(),
    };
    let router = axum::Router::new()
        .route("/", get(serve))
        .route(
            "/degrade",
            axum::routing::post(|State(app): State<App>| async move {
                app.faulty.store(true, std::sync::atomic::Ordering::SeqCst);
                "degraded"
            }),
        )
        .route("/metrics", get(metrics))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::fs::write(&port_file, port.to_string()).expect("write port file");
    axum::serve(listener, router).await.expect("serve");
}

async fn serve(
    State(app): State<App>,
    Query(q): Query<BTreeMap<String, String>>,
) -> (StatusCode, &'static str) {
    let workload = q
        .get("workload")
        .cloned()
        .unwrap_or_else(|| "unknown".into());
    let mut c = app.counters.lock().unwrap();
    c.served += 1;
    let faulty = app.faulty.load(std::sync::atomic::Ordering::SeqCst);
    let code = if faulty && c.served % 5 == 0 {
        500
    } else {
        200
    };
    *c.requests.entry((workload, code)).or_default() += 1;
    (
        StatusCode::from_u16(code).unwrap(),
        if code == 200 { "ok" } else { "boom" },
    )
}

async fn metrics(State(app): State<App>) -> String {
    let c = app.counters.lock().unwrap();
    let mut out = String::from("# TYPE http_requests_total counter\n");
    for ((workload, code), n) in &c.requests {
        out.push_str(&format!(
            "http_requests_total{{workload=\"{workload}\",code=\"{code}\"}} {n}\n"
        ));
    }
    out
}
