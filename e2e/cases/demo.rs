//! `make demo`, headless as CI runs it: it must end by itself, with the healthy release in
//! prod after a database snapshot and its verifications, the faulty one failed in test by
//! its smoke test and never in prod, the live view shown, and the notices received.

use std::process::Command;

use crate::env::TestEnv;

pub async fn the_demo_promotes_one_release_and_stops_the_other_in_test_then_stops(_env: TestEnv) {
    let _one_at_a_time = crate::support::OWN_CLUSTER.lock().await;
    let out = tokio::task::spawn_blocking(|| {
        Command::new("timeout")
            .args(["600", env!("CARGO_BIN_EXE_greenlight-demo")])
            .env("NO_COLOR", "1")
            .output()
            .expect("run greenlight-demo")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the demo failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "✔ 1.0 (shop-1-0) is in prod (Succeeded): verified in test, a database snapshot of",
        "✔ 2.0 (shop-2-0) failed its verification in test and never reached prod",
        "VerificationFailed: gate 'smoke-test' failed",
        "shop 1.0 (shop-1-0) is scheduled for prod",
        "shop 1.0 (shop-1-0) was verified at prod",
        "shop 1.0 (shop-1-0) rolled out at prod",
        "shop 2.0 (shop-2-0) failed at test",
        "└─ prod  Progressing 0.9 (shop-0-9) → 1.0 (shop-1-0)",
        "canary step 2/4 ████░░░░░░░░░░░░░░░░  20%",
        "Stopping everything",
        "Greenlight dashboard: http://127.0.0.1:3100/",
    ] {
        assert!(
            text.contains(line),
            "the demo's output lacks {line:?}:\n{text}"
        );
    }
}
