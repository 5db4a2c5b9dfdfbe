//! The scale benchmark (`make bench-scale`): on the real control plane, with the watch-based
//! fake kubelet and a release build, N pipelines × M stages and R releases published over
//! time (`GREENLIGHT_SCALE`: `full`, the default, 250 × 4 and 10,000; `medium`; `smoke`;
//! `soak`, 30 minutes of publishing with memory sampled). It prints figures and asserts
//! nothing.

#![allow(dead_code)]

#[path = "../e2e/env.rs"]
mod env;
#[path = "../e2e/scale.rs"]
mod scale;
#[path = "../e2e/support/mod.rs"]
mod support;

use support::controlplane::ControlPlane;

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("the scale benchmark runs with `make bench-scale`");
        return;
    }
    let sizes = scale::Sizes::from_env();
    let cp: &'static ControlPlane = Box::leak(Box::new(ControlPlane::start()));
    cp.install();
    let kubelet = support::kubelet::start_in_background(cp.kubeconfig.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let report = rt.block_on(async {
        let mut env = env::TestEnv::new(cp, kubelet, "bench-scale").await;
        env.log_filter = "warn".into();
        scale::run(&mut env, &sizes).await
    });
    scale::print(&sizes, &report);
    cp.shutdown();
}
