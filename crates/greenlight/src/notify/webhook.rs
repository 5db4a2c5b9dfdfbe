//! A JSON webhook: the notice itself, with its headline.

use super::{Channel, Notice};
use crate::api::NotifierType;

pub struct Webhook;

impl Channel for Webhook {
    fn notifier_type(&self) -> NotifierType {
        NotifierType::Webhook
    }

    fn payload(&self, notice: &Notice) -> serde_json::Value {
        let mut value = serde_json::to_value(notice).unwrap_or_default();
        value["headline"] = notice.headline().into();
        value
    }
}
