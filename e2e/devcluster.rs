//! `make run` without a cluster: starts the test bed's control plane and fake kubelet,
//! installs the CRDs, prints how to point kubectl at it, and runs the controller until
//! interrupted.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::controlplane::ControlPlane;
use support::kubelet::Kubelet;
use support::postgres::Postgres;

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
    print_how_to_use_kubectl(&cp);

    let admission_port = support::free_port();
    register_webhooks(&cp, &dir, admission_port);
    let identity_key = write_identity_key(&dir);
    print_how_to_act_as_each_person(&cp);

    let kubelet = support::kubelet::start_in_background(cp.kubeconfig.clone());
    let _database = shop_database(&cp, &dir);
    run_the_controller_until_interrupted(&cp, &kubelet, admission_port, &identity_key);
    cp.shutdown();
}

/// The shop's database, as the sample's pre-rollout snapshot expects it: a real PostgreSQL
/// behind the Service `shop-db` in `default`. Without one (PostgreSQL not installed, or no
/// right to run it as its own user) prod's snapshot fails, and prod says so.
fn shop_database(cp: &ControlPlane, dir: &Path) -> Option<Postgres> {
    // Not under the cache in $HOME: PostgreSQL runs as its own user, who may not enter it.
    let data = support::temp_dir("greenlight-dev-postgres");
    let database = match std::panic::catch_unwind(|| Postgres::start(&data)) {
        Ok(database) => database,
        Err(_) => {
            eprintln!("no PostgreSQL for shop-db: prod's pre-rollout snapshot will fail");
            return None;
        }
    };
    database.sql("postgres", "CREATE DATABASE shop");
    database.sql(
        "shop",
        "CREATE TABLE orders (id serial PRIMARY KEY, item text); \
         INSERT INTO orders (item) SELECT 'item-' || n FROM generate_series(1, 1000) n",
    );
    let yaml = dir.join("shop-db.yaml");
    std::fs::write(&yaml, database.service_yaml("shop-db")).expect("shop-db.yaml");
    cp.kubectl(&["apply", "-n", "default", "-f", &yaml.to_string_lossy()]);
    Some(database)
}

fn print_how_to_use_kubectl(cp: &ControlPlane) {
    let kubectl = support::find_binary("kubectl");
    let tools = kubectl.parent().map(Path::display);
    let plugin = std::env::current_exe().ok();
    let plugin = plugin.as_deref().and_then(Path::parent).map(Path::display);
    println!();
    println!(
        "Local control plane ready at {}. In another terminal, point kubectl at it",
        cp.server
    );
    println!("(kubectl 1.20 and the kubectl-greenlight plugin first on the PATH):");
    println!();
    println!("    export KUBECONFIG={}", cp.kubeconfig.display());
    if let (Some(tools), Some(plugin)) = (tools, plugin) {
        println!("    export PATH={plugin}:{tools}:$PATH");
    }
    println!();
}

/// The three commands that tell the story: the sample, watching it, and an approval.
fn print_the_next_three_commands(cp: &ControlPlane) {
    println!(
        "Then, in three commands: apply the sample, watch it, and approve it for prod as alice:"
    );
    println!();
    println!(
        "    kubectl apply -f {}/config/samples/pipeline.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    println!("    kubectl greenlight get pipeline shop --watch");
    println!(
        "    KUBECONFIG={} kubectl greenlight approve shop-1-4-2 --stage prod",
        cp.kubeconfig_for("alice").display()
    );
    println!();
    println!("dev takes 1.4.2 at once, and test once its smoke-test Job passes there; prod waits");
    println!("for a minute's soak in test and a release manager's approval, snapshots the shop's");
    println!("PostgreSQL, runs 1.4.2 as a canary for 30 seconds, and verifies it again.");
    println!("Pods are run by a fake kubelet. Press Ctrl-C to stop everything.");
    println!();
}

fn write_identity_key(dir: &Path) -> PathBuf {
    let identity_key = dir.join("identity.key");
    std::fs::write(
        &identity_key,
        format!(
            "{}{}",
            support::unique(),
            "-dev-cluster-identity-key-0123456789"
        ),
    )
    .expect("identity key");
    identity_key
}

fn print_how_to_act_as_each_person(cp: &ControlPlane) {
    println!(
        "The admission webhooks are registered; in namespace default, act as each person with:"
    );
    for (user, group) in support::controlplane::PEOPLE {
        println!(
            "    KUBECONFIG={} kubectl ...   # {user}, in group {group}",
            cp.kubeconfig_for(user).display()
        );
    }
    println!();
}

/// Runs the `greenlight` binary next to this one, serving the admission webhooks on
/// `admission_port`, until it exits or Ctrl-C; once it is ready and its webhooks answer,
/// prints the commands that tell the story (so the first of them is never refused).
fn run_the_controller_until_interrupted(
    cp: &ControlPlane,
    kubelet: &Kubelet,
    admission_port: u16,
    identity_key: &Path,
) {
    let kubeconfig = cp.kubeconfig.as_path();
    // A port of its own, so that whatever else listens on 8080 does not stop `make run`.
    let metrics_port = support::free_port();
    println!("Metrics and health: http://127.0.0.1:{metrics_port}/metrics");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        // What the sample's pods answer with, for its smoke tests: 200 on /healthz.
        let app = support::http::WebhookServer::default().start().await;
        let port = app.rsplit(':').next().and_then(|p| p.parse().ok());
        kubelet.jobs.serve_default(port.expect("the app's port"));
        let controller = std::env::current_exe()
            .expect("own path")
            .with_file_name("greenlight");
        let mut child = tokio::process::Command::from({
            let mut c = Command::new(controller);
            c.arg("controller")
                .args([
                    "--admission-addr",
                    &format!("127.0.0.1:{admission_port}"),
                    "--admission-host",
                    "127.0.0.1",
                    "--admission-configuration",
                    "greenlight",
                ])
                .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
                .arg("--identity-key-file")
                .arg(identity_key)
                .env("KUBECONFIG", kubeconfig)
                .env("GREENLIGHT_WEBHOOK_ALLOW", "127.0.0.1,localhost");
            c
        })
        .kill_on_drop(true)
        .spawn()
        .expect("start greenlight controller (build it with `cargo build`)");
        tokio::select! {
            status = child.wait() => return eprintln!("controller exited: {status:?}"),
            _ = tokio::signal::ctrl_c() => return eprintln!("stopping"),
            () = ready(cp, metrics_port) => print_the_next_three_commands(cp),
        }
        tokio::select! {
            status = child.wait() => eprintln!("controller exited: {status:?}"),
            _ = tokio::signal::ctrl_c() => eprintln!("stopping"),
        }
    });
}

/// Waits until the controller is ready and its admission webhooks stamp what they should: a
/// dry-run Approval comes back with its approver filled in.
async fn ready(cp: &ControlPlane, metrics_port: u16) {
    greenlight::gates::ensure_crypto_provider();
    let probe = "apiVersion: greenlight.dev/v1alpha1\nkind: Approval\nmetadata: {name: ready-probe}\nspec: {release: probe, stage: probe, decision: approve}\n";
    let path = cp.dir.join("ready-probe.yaml");
    std::fs::write(&path, probe).expect("probe file");
    let path = path.to_string_lossy().into_owned();
    let url = format!("http://127.0.0.1:{metrics_port}/readyz");
    loop {
        let synced = reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status().is_success());
        let args = [
            "create",
            "--dry-run=server",
            "-n",
            "default",
            "-f",
            &path,
            "-o",
            "yaml",
        ];
        let stamped = synced && {
            let out = cp.kubectl_raw(&args);
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("approver:")
        };
        if stamped {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Registers the controller's webhooks at a loopback URL (the shipped configuration points at
/// an in-cluster Service instead), and binds the people to the example Roles in `default`.
fn register_webhooks(cp: &ControlPlane, dir: &std::path::Path, port: u16) {
    let root = env!("CARGO_MANIFEST_DIR");
    let shipped = std::fs::read_to_string(format!("{root}/config/webhook/webhooks.yaml"))
        .expect("config/webhook/webhooks.yaml");
    let local: Vec<&str> = shipped
        .split("\n---\n")
        .filter(|doc| !doc.contains("kind: Service\n"))
        .collect();
    let local = local
        .join("\n---\n")
        .replace(
            "service: {name: greenlight-webhook, namespace: greenlight-system, path: /mutate}",
            &format!("url: \"https://127.0.0.1:{port}/mutate\""),
        )
        .replace(
            "service: {name: greenlight-webhook, namespace: greenlight-system, path: /validate}",
            &format!("url: \"https://127.0.0.1:{port}/validate\""),
        );
    let path = dir.join("webhooks.yaml");
    std::fs::write(&path, local).expect("webhooks file");
    cp.kubectl(&["apply", "-f", &path.to_string_lossy()]);
    for role in ["ci-publisher-example", "release-manager-example"] {
        cp.kubectl(&[
            "apply",
            "-n",
            "default",
            "-f",
            &format!("{root}/config/rbac/{role}.yaml"),
        ]);
    }
    for (role, users) in [
        ("greenlight-ci-publisher", "--user=ci-bot"),
        ("greenlight-release-manager", "--user=alice"),
    ] {
        let mut args = vec![
            "create",
            "rolebinding",
            role,
            "-n",
            "default",
            "--role",
            role,
            users,
        ];
        if role == "greenlight-release-manager" {
            args.extend(["--user=bob", "--user=carol"]);
        }
        cp.kubectl(&args);
    }
}
