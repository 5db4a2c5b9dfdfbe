//! Microsoft Teams incoming webhooks (Workflows): an Adaptive Card with the headline, the why
//! and a fact set, and a button to the source when there is a link. Text from objects is
//! escaped for the card's Markdown and its `{{DATE()}}` functions, and cut so the card stays
//! under Teams' 28 KB.

use serde_json::json;

use super::{Channel, Notice, cut};

/// The longest text of one block or fact; the card has a handful, well under 28 KB.
const TEXT: usize = 2000;

/// Text the card shows as written: Markdown's marks escaped with a backslash, and `{{`
/// broken so no date function is evaluated.
fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '*' | '_' | '[' | ']' | '(' | ')' | '~' | '`' | '#' | '>' | '<'
        ) {
            out.push('\\');
        }
        out.push(c);
        if c == '{' {
            out.push('\u{200B}');
        }
    }
    cut(&out, TEXT)
}
use crate::api::NotifierType;

pub struct Teams;

impl Channel for Teams {
    fn notifier_type(&self) -> NotifierType {
        NotifierType::Teams
    }

    fn payload(&self, n: &Notice) -> serde_json::Value {
        let mut facts = vec![
            json!({"title": "Release", "value": literal(&n.release)}),
            json!({"title": "Stage", "value": literal(&format!("{} ({})", n.stage, n.namespace))}),
        ];
        facts.extend(
            n.actor
                .as_ref()
                .map(|a| json!({"title": "By", "value": literal(a)})),
        );
        if !n.approvers.is_empty() {
            facts.push(json!({"title": "May approve", "value": literal(&n.approvers.join(", "))}));
        }
        facts.extend(
            n.source
                .as_ref()
                .map(|s| json!({"title": "Source", "value": literal(s)})),
        );
        let actions: Vec<_> = n
            .link
            .iter()
            .filter(|url| url.len() <= TEXT)
            .map(|url| json!({"type": "Action.OpenUrl", "title": "Source", "url": url}))
            .collect();
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {"type": "TextBlock", "text": literal(&n.headline()), "weight": "Bolder", "size": "Medium", "wrap": true},
                        {"type": "TextBlock", "text": literal(&n.message), "wrap": true},
                        {"type": "FactSet", "facts": facts},
                    ],
                    "actions": actions,
                },
            }],
        })
    }
}
