//! End-to-end tests on a real control plane (etcd, kube-apiserver and
//! kube-controller-manager 1.20) with a fake kubelet. One control plane serves every test;
//! each test works in its own namespace with its own controller process.

mod cases;
mod env;
mod scale;
#[path = "support/mod.rs"]
mod support;

use std::sync::OnceLock;

use libtest_mimic::{Arguments, Failed, Trial};

use cases::{Case, run_case};
use support::controlplane::ControlPlane;
use support::kubelet::Kubelet;

static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();
static KUBELET: OnceLock<Kubelet> = OnceLock::new();

fn main() {
    let mut args = Arguments::from_args();
    // The tests mostly wait on the cluster, so run more of them than there are cores.
    args.test_threads.get_or_insert(8);
    let trials: Vec<Trial> = cases::all()
        .into_iter()
        .map(|(name, case)| trial(name, case))
        .collect();
    let selected = trials.iter().any(|t| !args.is_filtered_out(t)) && !args.list;
    if selected {
        start_world();
    }
    let conclusion = libtest_mimic::run(&args, trials);
    // Statics are never dropped: stop the control plane by hand.
    if let Some(cp) = CONTROL_PLANE.get() {
        cp.shutdown();
    }
    conclusion.exit();
}

fn start_world() {
    let cp = ControlPlane::start();
    cp.install();
    let kubelet = support::kubelet::start_in_background(cp.kubeconfig.clone());
    let _ = CONTROL_PLANE.set(cp);
    let _ = KUBELET.set(kubelet);
}

fn trial(name: &'static str, case: Case) -> Trial {
    Trial::test(name, move || {
        let cp = CONTROL_PLANE
            .get()
            .ok_or_else(|| Failed::from("control plane not started"))?;
        let kubelet = KUBELET.get().cloned().unwrap_or_default();
        let result = std::panic::catch_unwind(|| run_case(cp, kubelet, name, case));
        result.map_err(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "test panicked".into());
            Failed::from(msg)
        })
    })
}
