//! The first five minutes, as a new user has them: `make run`'s own start-up (the same
//! script), the sample it suggests applied unchanged, the plugin, and alice's approval with the
//! kubeconfig it prints. The sample release reaches prod; nothing is refused and no Stage is
//! `Invalid` on the way; and the controller's text log, written to a file, holds no escape code.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::env::TestEnv;

const SAMPLE_RELEASE: &str = "shop-1-4-2";

/// What `make run` printed: the kubeconfig to use, the PATH with kubectl and the plugin, and
/// alice's kubeconfig from the approve command.
struct Printed {
    kubeconfig: String,
    path: String,
    alice: String,
}

/// `make run` in its own process group: killed whole when dropped, so a failed case leaves
/// no control plane or controller behind.
struct MakeRun(Child);

impl Drop for MakeRun {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &group])
            .status();
        let _ = self.0.wait();
    }
}

/// `make run`, in the background, in a process group of its own (Ctrl-C stops it all).
fn start_make_run(log: &PathBuf) -> Child {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::fs::File::create(log).expect("log file");
    Command::new("bash")
        .arg(format!("{root}/hack/run.sh"))
        .env_remove("GREENLIGHT_CONTEXT")
        .stdout(out.try_clone().expect("log file"))
        .stderr(out)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start make run")
}

async fn what_it_printed(log: &PathBuf, run: &mut Child) -> Printed {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let after = |prefix: &str| {
            let line = text.lines().find(|l| l.trim_start().starts_with(prefix))?;
            Some(line.trim_start()[prefix.len()..].to_string())
        };
        let approve = text
            .lines()
            .find(|l| l.contains("kubectl greenlight approve"))
            .and_then(|l| l.trim_start().strip_prefix("KUBECONFIG="))
            .and_then(|l| l.split_whitespace().next())
            .map(String::from);
        if let (Some(kubeconfig), Some(path), Some(alice)) =
            (after("export KUBECONFIG="), after("export PATH="), approve)
        {
            let path = path.replace("$PATH", &std::env::var("PATH").unwrap_or_default());
            return Printed {
                kubeconfig,
                path,
                alice,
            };
        }
        if let Ok(Some(status)) = run.try_wait() {
            panic!("make run ended ({status}) before printing its commands:\n{text}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(420),
            "make run printed no commands in 7 minutes:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A command as the user types it, with what `make run` printed.
fn typed(printed: &Printed, kubeconfig: &str, program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("PATH", &printed.path)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub async fn the_sample_make_run_suggests_reaches_prod_with_alices_approval(env: TestEnv) {
    let log = env.dir.join("make-run.log");
    let mut run = MakeRun(start_make_run(&log));
    let printed = what_it_printed(&log, &mut run.0).await;
    let root = env!("CARGO_MANIFEST_DIR");
    let sample = format!("{root}/config/samples/pipeline.yaml");
    let me = printed.kubeconfig.clone();
    let (applied, said) = typed(&printed, &me, "kubectl", &["apply", "-f", &sample]);
    assert!(
        applied && !said.contains("denied"),
        "the sample is refused: {said}"
    );
    let (listed, said) = typed(&printed, &me, "kubectl", &["greenlight", "get", "pipeline"]);
    assert!(listed && said.starts_with("shop  dev="), "{said}");
    let approve = ["greenlight", "approve", SAMPLE_RELEASE, "--stage", "prod"];
    let (approved, said) = typed(&printed, &printed.alice, "kubectl", &approve);
    assert!(approved, "alice approves as printed: {said}");
    let seen = it_reaches_prod_and_no_stage_is_ever_invalid(&printed).await;
    let group = format!("-{}", run.0.id());
    let _ = Command::new("kill")
        .args(["-s", "INT", "--", &group])
        .status();
    let stopped = Instant::now();
    while run.0.try_wait().ok().flatten().is_none() && stopped.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stopped_by_ctrl_c = run.0.try_wait().ok().flatten().is_some();
    drop(run);
    assert!(
        stopped_by_ctrl_c,
        "make run stops on Ctrl-C (SIGINT to its process group)"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("reconcile"),
        "the controller's log is in the file"
    );
    assert!(!text.contains('\x1b'), "escape codes in a file: {seen}");
}

/// Waits until the sample release succeeded at prod, checking every stage on the way.
async fn it_reaches_prod_and_no_stage_is_ever_invalid(printed: &Printed) -> String {
    let me = printed.kubeconfig.clone();
    let started = Instant::now();
    let phases = "{range .items[*]}{.metadata.name}={.status.phase} {end}";
    loop {
        let jsonpath = format!("jsonpath={phases}");
        let (_, stages) = typed(printed, &me, "kubectl", &["get", "stages", "-o", &jsonpath]);
        assert!(
            !stages.contains("Invalid"),
            "a Stage went Invalid: {stages}"
        );
        let summary = "jsonpath={.status.summary}";
        let args = ["get", "release", SAMPLE_RELEASE, "-o", summary];
        let (_, release) = typed(printed, &me, "kubectl", &args);
        if release.contains("prod=Succeeded") {
            return format!("{stages} / {release}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(360),
            "not at prod after 6 minutes: {stages} / {release}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
