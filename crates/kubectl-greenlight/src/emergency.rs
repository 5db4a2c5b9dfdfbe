//! `kubectl greenlight emergency`, `review close` and `reviews`: ask for an emergency
//! rollout, close its review with the post-mortem, and list the reviews of the namespace's
//! emergency rollouts, open ones first, overdue ones marked.

use greenlight_api::Release;
use greenlight_api::command::{CommandAction, StageCommandSpec};
use greenlight_core::review::{Review, reviews};
use jiff::Timestamp;

use super::act::{Ctx, send_command};
use super::view::{Palette, clean};
use super::{Output, PluginError, encode};

/// Asks for an emergency rollout of `release` at `stage`; waits until the stage took it.
pub async fn ask(
    ctx: &Ctx,
    release: String,
    stage: String,
    reason: String,
    reference: String,
) -> Result<u8, PluginError> {
    let spec = StageCommandSpec {
        stage,
        action: CommandAction::Emergency,
        release: Some(release),
        comment: None,
        reason: Some(reason),
        reference: Some(reference),
        post_mortem: None,
        requested_by: None,
        stage_ref: None,
    };
    send_command(ctx, spec).await
}

/// Closes the review of `release`'s emergency rollout at `stage`, linking the post-mortem.
pub async fn close(
    ctx: &Ctx,
    release: String,
    stage: String,
    post_mortem: String,
) -> Result<u8, PluginError> {
    let spec = StageCommandSpec {
        stage,
        action: CommandAction::CloseReview,
        release: Some(release),
        comment: None,
        reason: None,
        reference: None,
        post_mortem: Some(post_mortem),
        requested_by: None,
        stage_ref: None,
    };
    send_command(ctx, spec).await
}

/// The namespace's reviews: open ones first (overdue marked), then closed ones.
pub async fn list(
    ctx: &Ctx,
    all: bool,
    output: Option<Output>,
    palette: Palette,
) -> Result<u8, PluginError> {
    let releases: Vec<Release> = ctx.list("Release").await?;
    let mut found: Vec<Review> = releases
        .iter()
        .flat_map(reviews)
        .filter(|r| all || r.open())
        .collect();
    found.sort_by_key(|r| (!r.open(), r.due));
    match output {
        Some(o) => print!("{}", encode(&found, o)),
        None => print!("{}", text(&found, Timestamp::now(), palette)),
    }
    Ok(0)
}

pub fn text(found: &[Review], now: Timestamp, palette: Palette) -> String {
    if found.is_empty() {
        return "no open emergency reviews\n".into();
    }
    let mut out = String::from("RELEASE  STAGE  STATE  DUE  REQUESTER  EMERGENCY\n");
    for r in found {
        let state = match (r.open(), r.overdue(now)) {
            (true, true) => palette.red("OVERDUE"),
            (true, false) => palette.yellow("open"),
            (false, _) => format!("closed by {}", clean(r.closed_by.as_deref().unwrap_or(""))),
        };
        let due = r.due.map_or("-".to_string(), |d| d.to_string());
        out.push_str(&format!(
            "{}  {}  {state}  {due}  {}  {}\n",
            clean(&r.release),
            clean(&r.stage),
            clean(&r.requester),
            clean(&r.emergency)
        ));
    }
    out
}
