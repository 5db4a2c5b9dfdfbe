//! Keeps the protection label true: on a Stage exactly when it is protected, and on every
//! Gate a protected Stage names. The admission webhook sets it on every change it sees; this
//! catches what it did not see (a Stage created while the webhook was down, a Gate a
//! protected Stage has just started to name). A Gate no protected Stage names any more keeps
//! the label until its next change: a label too many only makes the webhook fail closed for it.

use kube::ResourceExt;

use super::Context;
use super::error::ReconcileError;
use crate::api::{PROTECTED_LABEL, Stage};

fn labelled<K: ResourceExt>(object: &K) -> bool {
    object.labels().get(PROTECTED_LABEL).map(String::as_str) == Some("true")
}

/// Labels the Stage and its Gates as its protection says.
pub async fn label(stage: &Stage, ctx: &Context) -> Result<(), ReconcileError> {
    let protected = stage.spec.protected;
    if labelled(stage) != protected {
        // Kept as the operator's own write, so its status write finds the version it made.
        let written = ctx.writer.protection_label(stage, protected).await?;
        ctx.index.own_stages.wrote(written);
    }
    if !protected {
        return Ok(());
    }
    let namespace = stage.namespace().unwrap_or_default();
    for (_, name) in stage.spec.named_gates() {
        let Some(gate) = ctx.index.gate(&namespace, &name) else {
            continue;
        };
        if !labelled(&*gate) {
            ctx.writer.protection_label(&*gate, true).await?;
        }
    }
    Ok(())
}
