//! `make run` without a cluster: starts the test bed's control plane and fake kubelet,
//! installs the CRDs, prints how to point kubectl at it, and runs the controller until
//! interrupted.

#[path = "support/mod.rs"]
mod support;

use std::process::Command;

use support::controlplane::ControlPlane;

fn main() {
    let dir = support::cache_dir().join("dev-cluster");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the dev cluster directory");
    eprintln!(
        "starting a local Kubernetes 1.20 control plane in {} ...",
        dir.display()
    );
    let cp = ControlPlane::start_in(dir.clone(), true);
    cp.install();
    let kubectl = support::find_binary("kubectl");
    println!();
    println!(
        "Local control plane ready at {}. Point kubectl at it with:",
        cp.server
    );
    println!();
    println!("    export KUBECONFIG={}", cp.kubeconfig.display());
    println!("    alias kubectl={}", kubectl.display());
    println!(
        "    kubectl apply -f {}/config/samples/pipeline.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    println!("    kubectl get releases,stages,gates");
    println!();
    println!("Pods are run by a fake kubelet. Press Ctrl-C to stop everything.");
    println!();

    let _kubelet = support::kubelet::start_in_background(cp.kubeconfig.clone());
    let kubeconfig = cp.kubeconfig.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let controller = std::env::current_exe()
            .expect("own path")
            .with_file_name("greenlight");
        let mut child = tokio::process::Command::from({
            let mut c = Command::new(controller);
            c.arg("controller")
                .env("KUBECONFIG", &kubeconfig)
                .env("GREENLIGHT_WEBHOOK_ALLOW", "127.0.0.1,localhost");
            c
        })
        .kill_on_drop(true)
        .spawn()
        .expect("start greenlight controller (build it with `cargo build`)");
        tokio::select! {
            status = child.wait() => eprintln!("controller exited: {status:?}"),
            _ = tokio::signal::ctrl_c() => eprintln!("stopping"),
        }
    });
    cp.shutdown();
}
