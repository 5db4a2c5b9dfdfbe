//! Who changed a Stage's or Gate's spec: the controllers copy each new generation's
//! `changed-by` stamp, verified, into the object's `status.changes` and announce it. What a
//! protected stage does with a change that has no valid stamp is [`super::protection`]'s.

use kube::Resource;
use serde::Serialize;

use super::Context;
use super::writer::Announcement;
use crate::admission::mutate::changed_by;
use crate::api::Stage;
use crate::api::change::{CHANGES_KEPT, ChangeRecord};
use crate::api::stage::StageStatus;

/// `changes` with the object's current generation recorded first, and whether that is new.
pub fn updated<K, S>(
    obj: &K,
    spec: &S,
    changes: &[ChangeRecord],
    ctx: &Context,
) -> Vec<ChangeRecord>
where
    K: Resource<DynamicType = ()>,
    S: Serialize,
{
    let Some(generation) = obj.meta().generation else {
        return changes.to_vec();
    };
    if changes.iter().any(|c| c.generation == generation) {
        return changes.to_vec();
    }
    let kind = K::kind(&());
    let record = match changed_by(&kind, obj.meta(), spec, &ctx.index.identity) {
        Ok(change) => ChangeRecord {
            generation,
            by: change.by.username,
            verified: true,
            fields: change.fields,
            time: jiff::Timestamp::now(),
        },
        Err(why) => ChangeRecord {
            generation,
            by: format!("unverified ({why})"),
            verified: false,
            fields: vec![],
            time: jiff::Timestamp::now(),
        },
    };
    std::iter::once(record)
        .chain(changes.iter().cloned())
        .take(CHANGES_KEPT)
        .collect()
}

/// Writes a Stage's status with its spec changes brought up to date, then announces a new one.
pub async fn write_stage_status(
    stage: &Stage,
    old: &StageStatus,
    mut status: StageStatus,
    ctx: &Context,
    now: jiff::Timestamp,
) -> Result<(), super::writer::WriteError> {
    status.changes = updated(stage, &stage.spec, &old.changes, ctx);
    let changes = status.changes.clone();
    ctx.writer.stage_status(stage, old, status, now).await?;
    announce(stage, &old.changes, &changes, ctx).await;
    Ok(())
}

/// Announces the newest change when `new` holds one `old` did not.
pub async fn announce<K>(obj: &K, old: &[ChangeRecord], new: &[ChangeRecord], ctx: &Context)
where
    K: Resource<DynamicType = ()> + Serialize + Send + Sync,
{
    let Some(change) = new.first().filter(|c| !old.contains(c)) else {
        return;
    };
    let fields = match change.fields.is_empty() {
        true => "the spec".to_string(),
        false => change
            .fields
            .iter()
            .map(|f| format!("spec.{f}"))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let a = Announcement {
        warning: !change.verified,
        reason: "SpecChanged",
        key: format!("spec/{}", change.generation),
        notify_stage: None,
        note: format!(
            "{} changed {fields} (generation {})",
            change.by, change.generation
        ),
    };
    ctx.writer.events.publish(obj, a).await;
}
