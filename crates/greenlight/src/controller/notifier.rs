//! A Notifier's status: `Ready` while its notices get through, `False` with the reason (the
//! Secret, the allow-list, the receiver's answer) while they do not. Written only when that
//! changes, never once per notice.

use std::time::Duration;

use kube::ResourceExt;
use serde_json::json;
use tracing::warn;

use super::Context;
use crate::api::{Condition, ConditionStatus, Notifier};

const READY: &str = "Ready";

/// Records the outcome of a delivery on the Notifier, if it changes what its status says: a
/// failure with why, and how long the Notifier rests before its next try (its backoff, its
/// own: other Notifiers' notices do not wait for it).
pub async fn record(ctx: &Context, notifier: &Notifier, failure: Option<(&str, Duration)>) {
    let (ok, reason, message) = match failure {
        None => (true, "Delivering", "notices are delivered".to_string()),
        Some((why, rest)) => (
            false,
            "DeliveryFailed",
            format!("next try in {}s: {why}", rest.as_secs()),
        ),
    };
    let current = notifier
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY));
    let wanted = if ok {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    if current.is_some_and(|c| c.status == wanted && c.message == message) {
        return;
    }
    let condition = Condition::new(READY, ok, reason, message.clone());
    let diff = json!({"message": message, "conditions": [condition]});
    let written = ctx.writer.status("notifier_status", notifier, diff).await;
    if let Err(e) = written {
        warn!(notifier = %notifier.name_any(), error = %e, "cannot write the Notifier's status");
    }
}
