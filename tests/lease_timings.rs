//! The chart refuses exactly the lease timings the binary refuses: one table, checked against
//! both the chart (its schema and its template, rendered by the Helm engine) and the
//! operator's own check, which `greenlight controller` runs at start.

use std::process::Command;
use std::time::Duration;

use greenlight::leader::timings;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Lease duration in seconds, retry in milliseconds: the edges of every range.
const TABLE: &[(i64, i64)] = &[
    (2, 200),
    (3, 199),
    (3, 200),
    (3, 750),
    (3, 751),
    (15, 1000),
    (15, 3750),
    (15, 3751),
    (3600, 900_000),
    (3600, 900_001),
    (3601, 1000),
    (0, 0),
    (-1, 1000),
];

#[test]
fn the_chart_and_the_binary_accept_the_same_lease_timings() {
    for &(seconds, millis) in TABLE {
        let binary = match (u64::try_from(seconds), u64::try_from(millis)) {
            (Ok(s), Ok(ms)) => {
                timings::check(Duration::from_secs(s), Duration::from_millis(ms)).is_ok()
            }
            _ => false,
        };
        let chart = render(seconds, millis);
        assert_eq!(
            chart.is_ok(),
            binary,
            "lease {seconds}s, retry {millis}ms: the binary {} it, the chart {}",
            if binary { "accepts" } else { "refuses" },
            chart.as_ref().err().map_or("accepts it", String::as_str)
        );
        if let Ok(rendered) = chart {
            assert!(
                rendered.contains(&format!("--leader-election-lease-duration={seconds}s"))
                    && rendered.contains(&format!("--leader-election-retry={millis}ms")),
                "the chart passes what it accepted"
            );
        }
    }
}

#[test]
fn the_charts_schema_has_the_binarys_ranges() {
    let text = std::fs::read_to_string(format!("{ROOT}/charts/greenlight/values.schema.json"))
        .expect("the schema");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let lease = &schema["properties"]["controller"]["properties"]["leaderElection"]["properties"];
    let duration = &lease["leaseDurationSeconds"];
    let retry = &lease["retryPeriodMilliseconds"];
    assert_eq!(duration["minimum"], timings::DURATION_MIN.as_secs());
    assert_eq!(duration["maximum"], timings::DURATION_MAX.as_secs());
    assert_eq!(retry["minimum"], timings::RETRY_MIN.as_millis() as u64);
    let longest = timings::DURATION_MAX / timings::RENEWALS_PER_DURATION;
    assert_eq!(retry["maximum"], longest.as_millis() as u64);
}

/// The chart rendered with these timings, or why the Helm engine refused it.
fn render(seconds: i64, millis: i64) -> Result<String, String> {
    let set = format!(
        "controller.leaderElection.leaseDurationSeconds={seconds},controller.leaderElection.retryPeriodMilliseconds={millis}"
    );
    let out = Command::new("python3")
        .arg(format!("{ROOT}/hack/helm.py"))
        .args([
            "render",
            &format!("{ROOT}/charts/greenlight"),
            "--set",
            &set,
        ])
        .args(["--name", "greenlight", "--namespace", "greenlight-system"])
        .output()
        .expect("run python3 hack/helm.py");
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}
