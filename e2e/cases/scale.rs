//! The scale scenario at smoke size: correctness only (timings are the benchmark's).

use crate::env::TestEnv;
use crate::scale::{Sizes, run};

/// Three pipelines of four stages take twelve releases published in quick succession: each
/// release ends, the newest of each pipeline reaches its last stage, nothing fails, and the
/// settled controller writes nothing.
pub async fn a_burst_of_releases_settles_with_the_newest_shipped_and_then_nothing_is_written(
    mut env: TestEnv,
) {
    let sizes = Sizes::smoke();
    let report = run(&mut env, &sizes).await;
    crate::scale::print(&sizes, &report);
    assert_eq!(report.phases.get("NotFinal"), None, "{:?}", report.phases);
    assert_eq!(report.phases.get("Failed"), None, "{:?}", report.phases);
    assert!(
        report.newest_not_shipped.is_empty(),
        "{:?}",
        report.newest_not_shipped
    );
    assert!(
        report.idle_writes.is_empty(),
        "writes while nothing changed, by kind: {:?}",
        report.idle_writes
    );
}
