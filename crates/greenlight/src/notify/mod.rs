//! Notices: what a stage's Notifiers are told, made from a transition's Event and the objects
//! it concerns (pure), and one `Channel` per destination type, one file each, that turns a
//! notice into the message that destination expects.

mod slack;
mod teams;
mod webhook;

use serde::Serialize;

use crate::api::{NoticeKind, NotifierType};

/// Label on an Event whose notice is still to be sent (`pending`), or was (`sent`, `failed`).
pub const NOTIFY_LABEL: &str = "greenlight.dev/notify";
/// The operator's seal over what an outbox Event says (see [`outbox_facts`]): an Event
/// without it, or with any of those facts changed, is not a notice.
pub const SEAL_ANNOTATION: &str = "greenlight.dev/seal";

/// What an outbox Event's seal covers: where it is, what it is about, what it says, and when
/// it was made (so an old notice cannot be made again later).
pub fn outbox_facts(event: &k8s_openapi::api::events::v1::Event) -> serde_json::Value {
    let regarding = event.regarding.clone().unwrap_or_default();
    let labels = event.metadata.labels.clone().unwrap_or_default();
    let annotations = event.metadata.annotations.clone().unwrap_or_default();
    serde_json::json!([
        event.metadata.namespace,
        event.metadata.name,
        event.reason,
        event.note,
        regarding.kind,
        regarding.name,
        regarding.uid,
        labels.get(STAGE_LABEL),
        annotations.get(AUDIT_ID_ANNOTATION),
        event.event_time.as_ref().map(|t| t.0.to_string()),
    ])
}
/// Label on such an Event: the stage it is about.
pub const STAGE_LABEL: &str = "greenlight.dev/stage";
/// Annotation on such an Event: the audit id of its transition, to find who acted.
pub const AUDIT_ID_ANNOTATION: &str = "greenlight.dev/audit-id";
pub use crate::api::notifier::DELIVERED_ANNOTATION;

/// One notice, as every channel gets it.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// Stable for one transition: a receiver can drop a repeat.
    pub id: String,
    pub kind: NoticeKind,
    pub namespace: String,
    pub pipeline: String,
    pub stage: String,
    pub release: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Who caused it, when a person did (an approver, whoever promoted or aborted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// What happened, in the controller's words (why it waits and until when, why it failed).
    pub message: String,
    /// Who may approve, for `WaitingForApproval`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// The source of the release: repository and commit, and a link when one can be made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The change request the release goes out under, when it names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_ticket: Option<String>,
    pub time: jiff::Timestamp,
}

impl Notice {
    /// A one-line summary, e.g. `web 1.2.0 (web-1-2-0) rolled back at prod`.
    pub fn headline(&self) -> String {
        let what = match self.kind {
            NoticeKind::Upcoming => "is scheduled for",
            NoticeKind::Started => "started rolling out at",
            NoticeKind::StepChanged => "moved to its next canary step at",
            NoticeKind::WaitingForApproval => "waits for approval at",
            NoticeKind::Succeeded => "rolled out at",
            NoticeKind::Failed => "failed at",
            NoticeKind::RolledBack => "was rolled back at",
            NoticeKind::Verified => "was verified at",
            NoticeKind::BreakGlass => "rolls out as an emergency at",
            NoticeKind::ReviewOverdue => "has an overdue emergency review at",
        };
        let version = self
            .version
            .as_deref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default();
        format!(
            "{}{version} ({}) {what} {}",
            self.pipeline, self.release, self.stage
        )
    }

    pub fn kind_name(&self) -> String {
        format!("{:?}", self.kind)
    }
}

/// `text` cut to at most `limit` characters, with an ellipsis when it was cut: each platform
/// refuses a whole message when one field is over its limit.
pub fn cut(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_string();
    }
    let kept: String = text.chars().take(limit.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// The notice a transition's Event reason calls for; `None` for transitions nobody is told.
pub fn notice_kind(reason: &str, note: &str) -> Option<NoticeKind> {
    Some(match reason {
        "WaitingForSchedule" | "BlockedByWindow" | "RolloutUpcoming" => NoticeKind::Upcoming,
        "RolloutStarted" => NoticeKind::Started,
        "WeightChanged" => NoticeKind::StepChanged,
        "WaitingForGate" if note.contains("waiting for approval") => NoticeKind::WaitingForApproval,
        "RolloutSucceeded" => NoticeKind::Succeeded,
        "RolloutFailed" | "PreRolloutFailed" => NoticeKind::Failed,
        "Verified" => NoticeKind::Verified,
        "RollbackCompleted" => NoticeKind::RolledBack,
        "BreakGlass" => NoticeKind::BreakGlass,
        "ReviewOverdue" => NoticeKind::ReviewOverdue,
        _ => return None,
    })
}

/// The stage whose notifiers hear of this transition (the `notify_stage` of its Release
/// Event), if any: when the stage has notifiers and the transition calls for a notice.
pub fn outbox_stage(stage: &crate::api::Stage, reason: &str, note: &str) -> Option<String> {
    let told = !stage.spec.notifiers.is_empty() && notice_kind(reason, note).is_some();
    told.then(|| stage.metadata.name.clone()).flatten()
}

/// A link to the commit, for repositories on the usual forges.
pub fn source_link(repository: &str, commit: &str) -> Option<String> {
    let base = repository.trim_end_matches('/').trim_end_matches(".git");
    let web = base.starts_with("https://") || base.starts_with("http://");
    (web && !commit.is_empty()).then(|| format!("{base}/commit/{commit}"))
}

/// One destination type: the message its webhook expects.
pub trait Channel: Sync {
    fn notifier_type(&self) -> NotifierType;
    fn payload(&self, notice: &Notice) -> serde_json::Value;
}

/// Every channel; adding one is its file and one line here.
pub const CHANNELS: &[&dyn Channel] = &[&slack::Slack, &teams::Teams, &webhook::Webhook];

pub fn channel(notifier_type: NotifierType) -> &'static dyn Channel {
    CHANNELS
        .iter()
        .copied()
        .find(|c| c.notifier_type() == notifier_type)
        .unwrap_or(&webhook::Webhook)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn notice(kind: NoticeKind) -> Notice {
        Notice {
            id: "web.1a2b".into(),
            kind,
            namespace: "shop".into(),
            pipeline: "web".into(),
            stage: "prod".into(),
            release: "web-1-2-0".into(),
            version: Some("1.2.0".into()),
            actor: Some("alice".into()),
            message: "gate 'prod-signoff': waiting for approval: 0 of 1 distinct approvers".into(),
            approvers: vec!["group release-managers".into()],
            source: Some("https://git.example.com/shop/web @ 0a1b2c3".into()),
            link: Some("https://git.example.com/shop/web/commit/0a1b2c3".into()),
            change_ticket: None,
            time: "2026-11-27T10:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn transitions_map_to_the_notices_people_asked_for() {
        assert_eq!(
            notice_kind("BlockedByWindow", "x"),
            Some(NoticeKind::Upcoming)
        );
        assert_eq!(
            notice_kind("WaitingForSchedule", "x"),
            Some(NoticeKind::Upcoming)
        );
        assert_eq!(
            notice_kind("WaitingForGate", "gate 'a': waiting for approval: 0 of 1"),
            Some(NoticeKind::WaitingForApproval)
        );
        assert_eq!(
            notice_kind("WaitingForGate", "gate 'soak': soaked 1m of 10m"),
            None
        );
        assert_eq!(
            notice_kind("RollbackCompleted", ""),
            Some(NoticeKind::RolledBack)
        );
        assert_eq!(notice_kind("AnalysisInconclusive", ""), None);
    }

    #[test]
    fn every_channel_names_the_release_the_stage_the_actor_and_the_source() {
        let n = notice(NoticeKind::WaitingForApproval);
        for channel in CHANNELS {
            let text = channel.payload(&n).to_string();
            for needle in [
                "web-1-2-0",
                "prod",
                "alice",
                "commit/0a1b2c3",
                "release-managers",
                "1.2.0",
            ] {
                assert!(
                    text.contains(needle),
                    "{:?} lacks {needle}: {text}",
                    channel.notifier_type()
                );
            }
        }
        assert_eq!(
            n.headline(),
            "web 1.2.0 (web-1-2-0) waits for approval at prod"
        );
    }

    #[test]
    fn slack_reads_text_from_objects_literally() {
        let mut n = notice(NoticeKind::Failed);
        n.message = "0.2 does not meet < 0.01 <!channel> & more".into();
        let text = slack::Slack.payload(&n).to_string();
        assert!(
            text.contains("0.2 does not meet &lt; 0.01 &lt;!channel&gt; &amp; more"),
            "{text}"
        );
        assert!(!text.contains("<!channel>"), "{text}");
    }

    #[test]
    fn teams_reads_text_from_objects_literally() {
        let mut n = notice(NoticeKind::Failed);
        n.message =
            "**urgent** [click](https://evil.example) {{DATE(2026-01-01T00:00:00Z)}}".into();
        let text = teams::Teams.payload(&n).to_string();
        assert!(
            !text.contains("**urgent**") && !text.contains("[click](https"),
            "{text}"
        );
        assert!(!text.contains("{{DATE"), "{text}");
        assert!(
            text.contains("urgent") && text.contains("evil.example"),
            "{text}"
        );
    }

    #[test]
    fn long_texts_are_cut_to_each_platforms_limits() {
        let mut n = notice(NoticeKind::Failed);
        n.pipeline = "p".repeat(400);
        n.message = "m".repeat(5000);
        let slack = slack::Slack.payload(&n);
        let header = slack["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(
            header.chars().count() <= 150 && header.ends_with('…'),
            "{header}"
        );
        let section = slack["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(section.chars().count() <= 3000, "{}", section.len());
        let teams = teams::Teams.payload(&n).to_string();
        assert!(teams.len() < 28 * 1024, "{}", teams.len());
        assert_eq!(cut("short", 10), "short");
    }

    proptest::proptest! {
        /// Whatever a release, stage or message says, no channel's payload carries it as
        /// markup: Slack gets no `<`, `>` or raw `&` of its own, a Teams card no Markdown mark
        /// unescaped and no `{{`, and each text is within its platform's limits.
        #[test]
        fn no_text_from_an_object_becomes_markup(text in "\\PC{0,300}") {
            let mut n = notice(NoticeKind::Failed);
            n.message = text.clone();
            n.release = text.clone();
            let slack = slack::Slack.payload(&n);
            let section = slack["blocks"][1]["text"]["text"].as_str().unwrap();
            let unescaped = section.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "");
            proptest::prop_assert!(!unescaped.contains(['<', '>', '&']), "{}", section);
            let teams = teams::Teams.payload(&n);
            let body = teams["attachments"][0]["content"]["body"][1]["text"].as_str().unwrap();
            proptest::prop_assert!(!body.contains("{{"), "{}", body);
            let mut escaped = false;
            for c in body.chars() {
                if !escaped && matches!(c, '*' | '_' | '[' | ']' | '`' | '~') {
                    proptest::prop_assert!(false, "an unescaped {} in {}", c, body);
                }
                escaped = !escaped && c == '\\';
            }
        }
    }

    #[test]
    fn a_link_is_made_only_for_a_web_repository() {
        assert_eq!(
            source_link("https://github.com/acme/web.git", "abc").as_deref(),
            Some("https://github.com/acme/web/commit/abc")
        );
        assert_eq!(source_link("git@github.com:acme/web.git", "abc"), None);
        assert_eq!(source_link("https://github.com/acme/web", ""), None);
    }
}
