//! Work notes: a finished rollout's outcome written back to the change request it went out
//! under, for each `changeTicket` gate of the stage that asks for it (`workNotes: true`).
//! Each is one more destination of the notice's outbox Event: retried with the notices, and
//! recorded as delivered at once, so a restart does not write it again (a crash between the
//! write and that record can repeat it once).

use kube::ResourceExt;

use super::Context;
use crate::api::ticket::ChangeTicketGate;
use crate::api::{NoticeKind, Release, Stage};
use crate::notify::Notice;

/// How a work note's destination is named among an outbox Event's deliveries.
pub const PREFIX: &str = "ticket/";

/// The notices whose outcome goes back to the ticket: a rollout that finished.
pub fn wanted(kind: NoticeKind) -> bool {
    matches!(kind, NoticeKind::Succeeded | NoticeKind::RolledBack)
}

/// The stage's change-ticket gates, for this release, that write work notes and that passed
/// for it here (none when the release names no ticket, or an emergency bypassed them: a
/// ticket nobody checked gets no note).
pub fn gates(ctx: &Context, stage: &Stage, release: &Release) -> Vec<(String, ChangeTicketGate)> {
    if release.spec.change_ticket.is_none() {
        return vec![];
    }
    let namespace = stage.namespace().unwrap_or_default();
    let here = release
        .status
        .as_ref()
        .and_then(|s| s.stages.get(&stage.name_any()));
    let passed = |name: &String| {
        let results = here.into_iter().flat_map(|e| &e.gates);
        results
            .into_iter()
            .any(|g| &g.name == name && g.result == crate::api::release::GateVerdict::Passed)
    };
    let names = stage.spec.gates_for(release.spec.release_type);
    let names = names.into_iter().filter(passed);
    let noting = names.into_iter().filter_map(|name| {
        let gate = ctx.index.gate(&namespace, &name)?;
        let ticket = gate.spec.change_ticket.clone().filter(|t| t.work_notes)?;
        Some((name, ticket))
    });
    noting.collect()
}

/// Whether the transition's Release Event must stay in the outbox for a work note.
pub fn due(ctx: &Context, stage: &Stage, release: &Release, reason: &str, note: &str) -> bool {
    let kind = crate::notify::notice_kind(reason, note);
    kind.is_some_and(wanted) && !gates(ctx, stage, release).is_empty()
}

/// Writes the notice to the release's change request through the gate's ITSM settings.
pub async fn write(
    ctx: &Context,
    namespace: &str,
    spec: &ChangeTicketGate,
    notice: &Notice,
) -> Result<(), String> {
    let Some(ticket) = notice.change_ticket.as_deref() else {
        return Ok(());
    };
    let env = ctx.runner.env();
    let itsm = crate::gates::ticket::TicketCheck::compile(spec, env).map_err(|e| {
        let errors: Vec<String> = e.iter().map(ToString::to_string).collect();
        errors.join("; ")
    })?;
    let keys = crate::gates::ticket::secrets_of(spec);
    let secrets = super::secrets::resolve(&keys, namespace, &ctx.client).await?;
    let text = format!("Greenlight: {}. {}", notice.headline(), notice.message);
    itsm.work_note(ticket, &text, &secrets).await
}
