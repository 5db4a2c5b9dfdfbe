//! A protected Stage, as a stage pass sees it. Its spec and every Gate it names must have been
//! changed through the admission webhook, or the stage does not act ([`unverified`]): the
//! webhook was off or bypassed, and the change must be applied again through it.
//!
//! It also keeps the protection label true: on a Stage exactly when it is protected, and on
//! every Gate a protected Stage names. The admission webhook sets it on every change it sees; this
//! catches what it did not see (a Stage created while the webhook was down, a Gate a
//! protected Stage has just started to name). A Gate no protected Stage names any more keeps
//! the label until its next change: a label too many only makes the webhook fail closed for it.

use kube::ResourceExt;

use super::Context;
use super::error::ReconcileError;
use crate::admission::mutate::changed_by;
use crate::api::{Gate, PROTECTED_LABEL, Stage};

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

/// Why a protected stage must not act: its spec, or a Gate it names, changed without a stamp
/// that checks out.
pub fn unverified(stage: &Stage, ctx: &Context) -> Option<String> {
    if !stage.spec.protected {
        return None;
    }
    if let Err(why) = changed_by("Stage", &stage.metadata, &stage.spec, &ctx.index.identity) {
        return Some(format!(
            "spec: this protected stage's spec (generation {}) was not changed through the admission webhook: {why}; apply it again with the webhook on",
            stage.metadata.generation.unwrap_or_default()
        ));
    }
    let namespace = stage.namespace().unwrap_or_default();
    // Every Gate it names, its canary analyses' included, as the webhook guards them.
    stage.spec.named_gates().into_iter().find_map(|(field, name)| {
        let gate: std::sync::Arc<Gate> = ctx.index.gate(&namespace, &name)?;
        let why = changed_by("Gate", &gate.metadata, &gate.spec, &ctx.index.identity).err()?;
        Some(format!(
            "{field}: Gate '{name}' guards this protected stage but was not changed through the admission webhook: {why}; apply it again with the webhook on"
        ))
    })
}
