//! Slack incoming webhooks: a Block Kit message (header, the why, then facts), with `text` as
//! the fallback notifications show.

use serde_json::json;

use super::{Channel, Notice, cut};
use crate::api::{NoticeKind, NotifierType};

pub struct Slack;

/// Text as Slack's mrkdwn reads it literally: `&`, `<` and `>` escaped, so neither a
/// `<!channel>` in a release's notes nor a `< 0.01` in a gate's message is markup.
fn plain(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Slack's limits: a header's text, a section's text, and a field's text.
const HEADER: usize = 150;
const SECTION: usize = 3000;
const FIELD: usize = 2000;

impl Channel for Slack {
    fn notifier_type(&self) -> NotifierType {
        NotifierType::Slack
    }

    fn payload(&self, n: &Notice) -> serde_json::Value {
        let icon = match n.kind {
            NoticeKind::Succeeded | NoticeKind::Verified => ":white_check_mark:",
            NoticeKind::Failed | NoticeKind::RolledBack => ":rotating_light:",
            NoticeKind::WaitingForApproval => ":raised_hand:",
            NoticeKind::Upcoming => ":calendar:",
            _ => ":arrows_counterclockwise:",
        };
        let mut facts = vec![
            format!("*Release*\n{}", plain(&n.release)),
            format!("*Stage*\n{} ({})", plain(&n.stage), plain(&n.namespace)),
        ];
        facts.extend(n.actor.as_ref().map(|a| format!("*By*\n{}", plain(a))));
        if !n.approvers.is_empty() {
            facts.push(format!("*May approve*\n{}", plain(&n.approvers.join(", "))));
        }
        let source = match (&n.source, &n.link) {
            (Some(s), Some(link)) if link.len() <= FIELD / 2 => Some(format!(
                "*Source*\n<{}|{}>",
                plain(link).replace('|', "%7C"),
                plain(s)
            )),
            (Some(s), _) => Some(format!("*Source*\n{}", plain(s))),
            _ => None,
        };
        facts.extend(source);
        let fields: Vec<_> = facts
            .iter()
            .map(|f| json!({"type": "mrkdwn", "text": cut(f, FIELD)}))
            .collect();
        json!({
            "text": cut(&format!("{icon} {}", plain(&n.headline())), SECTION),
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": cut(&n.headline(), HEADER), "emoji": true}},
                {"type": "section", "text": {"type": "mrkdwn", "text": cut(&format!("{icon} {}", plain(&n.message)), SECTION)}},
                {"type": "section", "fields": fields},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": format!("Greenlight · {} · {}", n.kind_name(), n.time)}]},
            ],
        })
    }
}
