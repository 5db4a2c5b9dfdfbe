//! Deletes the StageCommands and Approvals that [`crate::machine::retention`] says have been
//! kept long enough, while this replica leads: when it starts leading and every hour after
//! (every retention, when that is shorter).
//! Each delete is for the object as it was seen (uid and resourceVersion), so one made again
//! under the same name, or changed since, stays.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use tracing::{info, warn};

use super::Context;
use crate::machine::retention::{approval_expired, command_expired};

/// The most objects one sweep deletes, so a first sweep over years of history is no burst.
const PER_SWEEP: usize = 500;
const EVERY: Duration = Duration::from_secs(3600);

/// Sweeps for as long as the controllers run.
pub async fn collect(ctx: Arc<Context>, retention: SignedDuration) {
    loop {
        if ctx.writer.leads() {
            sweep(&ctx, retention, Timestamp::now()).await;
        }
        let every = retention
            .unsigned_abs()
            .clamp(Duration::from_secs(1), EVERY);
        tokio::time::sleep(every).await;
    }
}

async fn sweep(ctx: &Context, retention: SignedDuration, now: Timestamp) {
    let commands = ctx.index.commands.state().into_iter();
    let commands: Vec<_> = commands
        .filter(|c| command_expired(c, now, retention))
        .take(PER_SWEEP)
        .collect();
    let approvals = ctx.index.approvals.state().into_iter().filter(|a| {
        let namespace = a.namespace().unwrap_or_default();
        let release = ctx.index.release(&namespace, &a.spec.release);
        let phase = release.and_then(|r| r.status.as_ref().and_then(|s| s.phase));
        approval_expired(a, phase, now, retention)
    });
    let approvals: Vec<_> = approvals.take(PER_SWEEP - commands.len()).collect();
    let (mut deleted, mut failed) = (0, 0);
    for c in &commands {
        match ctx.writer.delete("stagecommand_delete", &**c).await {
            Ok(()) => deleted += 1,
            Err(_) => failed += 1,
        }
    }
    for a in &approvals {
        match ctx.writer.delete("approval_delete", &**a).await {
            Ok(()) => deleted += 1,
            Err(_) => failed += 1,
        }
    }
    if deleted > 0 {
        info!(deleted, %retention, "deleted handled commands and approvals past their retention");
    }
    if failed > 0 {
        warn!(
            failed,
            "could not delete some commands and approvals past their retention"
        );
    }
}
