//! Kubernetes Events, built here rather than through kube's `Recorder`, which folds events of
//! one object and reason into one series and so loses every message but the first. Each Event
//! is named after what it announces, so one transition is one Event: announcing it again (a
//! replay after a restart) finds it already there, and two transitions never share one.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::warn;

use crate::metrics::Metrics;

pub use crate::api::notifier::REPORTING_CONTROLLER;
/// Longest Event note the apiserver accepts, in bytes.
const NOTE_LIMIT: usize = 1024;
/// Most announced keys remembered before the memory is cleared (the apiserver still dedups).
const REMEMBERED: usize = 20_000;

pub struct EventSink {
    /// When this replica started to lead (or the process started): transitions from before
    /// are announced again if missing, since the previous leader may have died before it
    /// announced them.
    started: Mutex<Timestamp>,
    client: Client,
    metrics: Arc<Metrics>,
    instance: String,
    announced: Mutex<HashSet<String>>,
    /// No Event from a replica that does not lead.
    fence: super::Fence,
    /// Seals outbox Events, so no one else's Event is taken for a notice.
    key: Arc<crate::identity::IdentityKey>,
}

/// One Event to publish.
pub struct Announcement<'a> {
    pub warning: bool,
    pub reason: &'a str,
    pub note: String,
    /// What makes this Event distinct, e.g. an audit entry's id.
    pub key: String,
    /// The stage whose Notifiers are to hear of it: the Event is then the notice's outbox
    /// entry, labelled pending until they have.
    pub notify_stage: Option<String>,
}

impl EventSink {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        fence: super::Fence,
        key: Arc<crate::identity::IdentityKey>,
    ) -> Self {
        let instance = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "greenlight".into());
        Self {
            started: Mutex::new(Timestamp::now()),
            client,
            metrics,
            instance,
            announced: Mutex::new(HashSet::new()),
            fence,
            key,
        }
    }

    /// Since when this replica announces what it decides itself.
    pub fn started(&self) -> Timestamp {
        *self.started.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This replica begins to lead: what earlier leaders decided is replayed from now back.
    pub fn begin_leading(&self) {
        *self.started.lock().unwrap_or_else(|e| e.into_inner()) = Timestamp::now();
    }

    /// Publishes the Event unless it was published already; failures are logged, never fatal.
    pub async fn publish<K: Resource<DynamicType = ()>>(&self, obj: &K, a: Announcement<'_>) {
        if self.fence.as_ref().is_some_and(|lease| !lease.is_leader()) {
            return;
        }
        let regarding = obj.object_ref(&());
        let name = event_name(&regarding, &a.key);
        if !self.remember(&name) {
            return;
        }
        let namespace = obj.namespace().unwrap_or_else(|| "default".into());
        let mut event = build(&regarding, &name, &namespace, &self.instance, &a);
        let seal = self.key.seal(&crate::notify::outbox_facts(&event));
        if let Some(annotations) = event.metadata.annotations.as_mut() {
            annotations.insert(crate::notify::SEAL_ANNOTATION.into(), seal);
        }
        self.metrics.write("event");
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                self.metrics.refused("event", "other");
                self.forget(&name);
                warn!(error = %e, reason = a.reason, "could not publish event");
            }
        }
    }

    /// True the first time a name is seen.
    fn remember(&self, name: &str) -> bool {
        let mut seen = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
        seen.insert(name.to_string())
    }

    fn forget(&self, name: &str) {
        let mut seen = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        seen.remove(name);
    }
}

/// `<object>.<digest of uid and key>`: stable across restarts, distinct per transition.
pub(crate) fn event_name(regarding: &ObjectReference, key: &str) -> String {
    let uid = regarding.uid.as_deref().unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{uid}/{key}").as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let object: String = regarding
        .name
        .as_deref()
        .unwrap_or("object")
        .chars()
        .take(200)
        .collect();
    // A cut name may end in '-' or '.', which no segment of an Event's name may.
    let object = object.trim_end_matches(['-', '.']);
    format!("{object}.{hex}")
}

fn build(
    regarding: &ObjectReference,
    name: &str,
    namespace: &str,
    instance: &str,
    a: &Announcement<'_>,
) -> Event {
    use crate::notify::{AUDIT_ID_ANNOTATION, NOTIFY_LABEL, STAGE_LABEL};
    let outbox = a.notify_stage.as_ref().map(|stage| {
        let labels = [(NOTIFY_LABEL, "pending"), (STAGE_LABEL, stage.as_str())];
        let annotations = [(AUDIT_ID_ANNOTATION, a.key.as_str())];
        let owned = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        (owned(&labels), owned(&annotations))
    });
    Event {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: outbox.as_ref().map(|o| o.0.clone()),
            annotations: outbox.map(|o| o.1),
            ..Default::default()
        },
        // Microseconds, as the apiserver keeps it: the seal covers the time as stored.
        event_time: Some(MicroTime(
            Timestamp::from_microsecond(Timestamp::now().as_microsecond())
                .unwrap_or_else(|_| Timestamp::now()),
        )),
        type_: Some(if a.warning { "Warning" } else { "Normal" }.into()),
        reason: Some(a.reason.to_string()),
        action: Some(a.reason.to_string()),
        note: Some(truncate(&a.note, NOTE_LIMIT)),
        regarding: Some(regarding.clone()),
        reporting_controller: Some(REPORTING_CONTROLLER.into()),
        reporting_instance: Some(instance.chars().take(128).collect()),
        ..Default::default()
    }
}

fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut cut = limit - 3;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &text[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage() -> ObjectReference {
        ObjectReference {
            name: Some("prod".into()),
            uid: Some("u-1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_long_name_cut_at_a_dash_still_makes_a_valid_event_name() {
        let name = format!("{}-{}", "r".repeat(199), "x".repeat(53));
        let regarding = ObjectReference {
            name: Some(name),
            ..stage()
        };
        let event = event_name(&regarding, "k");
        let segments: Vec<&str> = event.split('.').collect();
        assert_eq!(segments.len(), 2, "{event}");
        assert!(segments[0].ends_with('r') && event.len() <= 253, "{event}");
    }

    #[test]
    fn two_transitions_get_two_names_and_a_replay_gets_the_same_one() {
        let first = event_name(&stage(), "prod/r1/RolloutStarted/1");
        let second = event_name(&stage(), "prod/r2/RolloutStarted/1");
        assert_ne!(first, second);
        assert_eq!(first, event_name(&stage(), "prod/r1/RolloutStarted/1"));
        assert!(first.starts_with("prod."), "{first}");
    }

    #[test]
    fn a_long_note_is_cut_on_a_character_boundary() {
        let note = "é".repeat(1000);
        let cut = truncate(&note, NOTE_LIMIT);
        assert!(cut.len() <= NOTE_LIMIT && cut.ends_with("..."));
    }
}
