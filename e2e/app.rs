//! A stand-in for a release's container image in the closed-loop tests: one process per
//! image, whose behaviour the image tag decides (`healthy`; `faulty`: every fifth request
//! answers 500; `slow`: answers take twice as long). Every answer takes a random 5..15 ms
//! (10..30 ms when slow), so two healthy versions are alike but never identical, as real
//! ones are. `POST /degrade` turns a healthy one faulty, as a release that degrades after
//! promotion would. It counts requests and their durations per workload for Prometheus, and
//! exports `slo:sli_error:ratio_rate30d`, as a recording rule of the service's 30-day error
//! ratio would: 0 until `POST /record?ratio=R` sets it.
//!
//! Usage: `greenlight-e2e-app <healthy|faulty|slow> <port-file>`; it listens on a free
//! loopback port and writes the port to `<port-file>`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;

/// Upper bounds of the duration histogram's buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.005, 0.0075, 0.01, 0.0125, 0.015, 0.0175, 0.02, 0.025, 0.03, 0.035, 0.04, 0.05, 0.075, 0.1,
];

#[derive(Default)]
struct Counters {
    /// (workload, code) -> requests
    requests: BTreeMap<(String, u16), u64>,
    /// workload -> (count per bucket, then the sum and the count of durations)
    durations: BTreeMap<String, ([u64; BUCKETS.len()], f64, u64)>,
    served: u64,
    /// xorshift state for the answers' durations.
    random: u64,
}

#[derive(Clone)]
struct App {
    faulty: Arc<std::sync::atomic::AtomicBool>,
    slow: bool,
    counters: Arc<Mutex<Counters>>,
    /// The recorded 30-day error ratio it exports.
    recorded: Arc<Mutex<f64>>,
}

impl Counters {
    /// Uniform on [0, 1).
    fn uniform(&mut self) -> f64 {
        let mut x = self.random;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    fn observe(&mut self, workload: &str, seconds: f64) {
        let (buckets, sum, count) = self.durations.entry(workload.to_string()).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            buckets[i] += u64::from(seconds <= *le);
        }
        *sum += seconds;
        *count += 1;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let behaviour = args.next().expect("behaviour: healthy or faulty");
    let port_file = args.next().expect("port file");
    let app = App {
        faulty: Arc::new((behaviour == "faulty").into()),
        slow: behaviour == "slow",
        counters: Arc::new(Mutex::new(Counters {
            random: u64::from(std::process::id()) * 0x9E37_79B9 + 1,
            ..Counters::default()
        })),
        recorded: Arc::default(),
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
        .route(
            "/record",
            axum::routing::post(
                |State(app): State<App>, Query(q): Query<BTreeMap<String, String>>| async move {
                    let ratio = q.get("ratio").and_then(|r| r.parse().ok()).unwrap_or(0.0);
                    *app.recorded.lock().unwrap() = ratio;
                    "recorded"
                },
            ),
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
    let factor = if app.slow { 2.0 } else { 1.0 };
    let seconds = factor * (0.005 + 0.010 * app.counters.lock().unwrap().uniform());
    tokio::time::sleep(std::time::Duration::from_secs_f64(seconds)).await;
    let mut c = app.counters.lock().unwrap();
    c.served += 1;
    let faulty = app.faulty.load(std::sync::atomic::Ordering::SeqCst);
    let code = if faulty && c.served % 5 == 0 {
        500
    } else {
        200
    };
    c.observe(&workload, seconds);
    *c.requests.entry((workload, code)).or_default() += 1;
    (
        StatusCode::from_u16(code).unwrap(),
        if code == 200 { "ok" } else { "boom" },
    )
}

async fn metrics(State(app): State<App>) -> String {
    let recorded = *app.recorded.lock().unwrap();
    let c = app.counters.lock().unwrap();
    let mut out = format!(
        "# TYPE slo:sli_error:ratio_rate30d gauge\nslo:sli_error:ratio_rate30d{{service=\"web\"}} {recorded}\n"
    );
    out.push_str("# TYPE http_requests_total counter\n");
    for ((workload, code), n) in &c.requests {
        out.push_str(&format!(
            "http_requests_total{{workload=\"{workload}\",code=\"{code}\"}} {n}\n"
        ));
    }
    out.push_str("# TYPE http_request_duration_seconds histogram\n");
    for (workload, (buckets, sum, count)) in &c.durations {
        let series = "http_request_duration_seconds";
        for (le, n) in BUCKETS.iter().zip(buckets) {
            out.push_str(&format!(
                "{series}_bucket{{workload=\"{workload}\",le=\"{le}\"}} {n}\n"
            ));
        }
        out.push_str(&format!(
            "{series}_bucket{{workload=\"{workload}\",le=\"+Inf\"}} {count}\n"
        ));
        out.push_str(&format!("{series}_sum{{workload=\"{workload}\"}} {sum}\n"));
        out.push_str(&format!(
            "{series}_count{{workload=\"{workload}\"}} {count}\n"
        ));
    }
    out
}
