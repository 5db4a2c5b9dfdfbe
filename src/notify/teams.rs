//! Microsoft Teams incoming webhooks (Workflows): an Adaptive Card with the headline, the why
//! and a fact set, and a button to the source when there is a link.

use serde_json::json;

use super::{Channel, Notice};
use crate::api::NotifierType;

pub struct Teams;

impl Channel for Teams {
    fn notifier_type(&self) -> NotifierType {
        NotifierType::Teams
    }

    fn payload(&self, n: &Notice) -> serde_json::Value {
        let mut facts = vec![
            json!({"title": "Release", "value": n.release}),
            json!({"title": "Stage", "value": format!("{} ({})", n.stage, n.namespace)}),
        ];
        facts.extend(n.actor.as_ref().map(|a| json!({"title": "By", "value": a})));
        if !n.approvers.is_empty() {
            facts.push(json!({"title": "May approve", "value": n.approvers.join(", ")}));
        }
        facts.extend(
            n.source
                .as_ref()
                .map(|s| json!({"title": "Source", "value": s})),
        );
        let actions: Vec<_> = n
            .link
            .iter()
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
                        {"type": "TextBlock", "text": n.headline(), "weight": "Bolder", "size": "Medium", "wrap": true},
                        {"type": "TextBlock", "text": n.message, "wrap": true},
                        {"type": "FactSet", "facts": facts},
                    ],
                    "actions": actions,
                },
            }],
        })
    }
}
