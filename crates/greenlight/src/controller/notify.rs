//! Delivers notices. A transition's Event on its Release, labelled `greenlight.dev/notify:
//! pending`, is the notice's outbox entry: it is written once per transition (its name comes
//! from the transition), so it survives a restart, and it is marked `sent` once every Notifier
//! of the stage has the notice. Each Event is delivered by a task of its own with backoff, so
//! a receiver that is down delays only its notices, never a rollout.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::events::v1::Event;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tracing::{debug, warn};

use super::Context;
use crate::api::{NoticeKind, Notifier, OPERATOR_ACTOR, Release, Stage};
use crate::notify::{
    AUDIT_ID_ANNOTATION, DELIVERED_ANNOTATION, NOTIFY_LABEL, Notice, SEAL_ANNOTATION, STAGE_LABEL,
    channel, notice_kind, outbox_facts, source_link,
};

/// A notice not delivered within this long is given up (Events expire after an hour).
const GIVE_UP_AFTER: Duration = Duration::from_secs(55 * 60);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Notices delivered at once; the others wait their turn.
const AT_ONCE: usize = 16;
/// The longest a failing Notifier rests between tries.
const RECEIVER_MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Watches pending notices and delivers each; runs while this replica leads.
pub async fn deliver_notices(ctx: Arc<Context>, namespace: Option<String>) {
    let api: Api<Event> = match &namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let config = watcher::Config::default().labels(&format!("{NOTIFY_LABEL}=pending"));
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let queue = Arc::new(Queue {
        turns: tokio::sync::Semaphore::new(AT_ONCE),
        receivers: Mutex::default(),
    });
    let mut events = watcher(api, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(next) = events.next().await {
        let Ok(event) = next else { continue };
        if !ours(&ctx, &event) {
            continue;
        }
        let key = format!(
            "{}/{}",
            event.namespace().unwrap_or_default(),
            event.name_any()
        );
        if busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone())
        {
            let (ctx, busy, queue) = (ctx.clone(), busy.clone(), queue.clone());
            tokio::spawn(async move {
                deliver(&ctx, &event, &queue).await;
                busy.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
            });
        }
    }
}

/// Only the operator's own Events carry notices: sealed with its identity key over what
/// they say, about a Release it knows, and named as it names the Event of that transition.
/// Anyone else who may create Events cannot make it post to a channel: the name, labels and
/// reporting controller can be copied, the seal cannot.
fn ours(ctx: &Context, event: &Event) -> bool {
    use super::writer::{REPORTING_CONTROLLER, event_name};
    let Some(regarding) = event.regarding.as_ref() else {
        return false;
    };
    let sealed = annotation(event, SEAL_ANNOTATION)
        .is_some_and(|seal| ctx.index.identity.sealed(&outbox_facts(event), seal));
    if !sealed {
        debug!(event = %event.name_any(), "an outbox Event without the operator's seal is ignored");
        return false;
    }
    // A sealed Event older than a notice is kept trying (one made again after it expired, or
    // set back to pending) tells nothing new.
    let born = event.event_time.as_ref().map(|t| t.0);
    if born.is_none_or(|b| age(b) > GIVE_UP_AFTER) {
        return false;
    }
    let namespace = event.namespace().unwrap_or_default();
    let release = regarding
        .name
        .as_deref()
        .and_then(|r| ctx.index.release(&namespace, r));
    let known = regarding.kind.as_deref() == Some("Release")
        && release.is_some_and(|r| r.metadata.uid.is_some() && r.metadata.uid == regarding.uid);
    let named = annotation(event, AUDIT_ID_ANNOTATION)
        .is_some_and(|key| event_name(regarding, key) == event.name_any());
    event.reporting_controller.as_deref() == Some(REPORTING_CONTROLLER) && known && named
}

/// Who sends when: a few deliveries at once, each holding its turn only while it sends, and
/// each Notifier's own backoff, shared by all its notices. So a receiver that is down costs
/// one timed-out send per backoff period, and delays no other Notifier's notices.
struct Queue {
    turns: tokio::sync::Semaphore,
    receivers: Mutex<HashMap<String, Receiver>>,
}

/// A Notifier that failed: how often in a row, and when to try it again.
struct Receiver {
    failures: u32,
    next_try: Instant,
}

impl Queue {
    /// How long `notifier` still rests after its failures, if it does.
    fn resting(&self, notifier: &str) -> Option<Duration> {
        let receivers = self.receivers.lock().unwrap_or_else(|e| e.into_inner());
        let left = receivers
            .get(notifier)?
            .next_try
            .checked_duration_since(Instant::now())?;
        Some(left)
    }

    /// Records a failure; returns how long the Notifier now rests.
    fn failed(&self, notifier: &str) -> Duration {
        let mut receivers = self.receivers.lock().unwrap_or_else(|e| e.into_inner());
        let entry = receivers.entry(notifier.to_string()).or_insert(Receiver {
            failures: 0,
            next_try: Instant::now(),
        });
        entry.failures = entry.failures.saturating_add(1);
        let rest = Duration::from_secs(1 << entry.failures.min(9)).min(RECEIVER_MAX_BACKOFF);
        entry.next_try = Instant::now() + rest;
        rest
    }

    fn delivered(&self, notifier: &str) {
        let mut receivers = self.receivers.lock().unwrap_or_else(|e| e.into_inner());
        receivers.remove(notifier);
    }
}

/// Sends one Event's notice to every Notifier of its stage, retrying with backoff, then marks
/// the Event; Notifiers that have it already (also before a restart) are not sent it again.
async fn deliver(ctx: &Context, event: &Event, queue: &Queue) {
    let namespace = event.namespace().unwrap_or_default();
    let mut delivered: Vec<String> = annotation(event, DELIVERED_ANNOTATION)
        .map(|d| {
            d.split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let born = event
        .event_time
        .as_ref()
        .map_or_else(jiff::Timestamp::now, |t| t.0);
    let name = event.name_any();
    let mut backoff = Duration::from_secs(1);
    loop {
        if !ctx.writer.leads() || !still_pending(ctx, &namespace, &name).await {
            return;
        }
        let before = delivered.len();
        let Ok(turn) = queue.turns.acquire().await else {
            return;
        };
        let attempted = attempt(ctx, event, &namespace, &mut delivered, queue).await;
        drop(turn);
        let state = match attempted {
            Ok(Delivery::Done) => Some("sent"),
            Ok(Delivery::Nobody) => Some("dropped"),
            Err(_) if age(born) > GIVE_UP_AFTER => Some("failed"),
            Err(why) => {
                debug!(event = %name, %why, ?backoff, "notice not delivered yet");
                None
            }
        };
        // Who has it is recorded at once, so a restart or a new leader does not send it again.
        if state.is_some() || delivered.len() > before {
            let label = state.unwrap_or("pending");
            let marked = ctx
                .writer
                .notice_outbox(&namespace, &name, label, &delivered)
                .await;
            match (marked, state) {
                (Ok(()), Some(_)) => return,
                (Ok(()), None) => {}
                (Err(e), _) => warn!(event = %name, error = %e, "cannot record the delivery"),
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Whether the Event is still there and still pending (not expired, not marked by hand).
async fn still_pending(ctx: &Context, namespace: &str, name: &str) -> bool {
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(e)) => {
            let labels = e.metadata.labels.unwrap_or_default();
            labels.get(NOTIFY_LABEL).map(String::as_str) == Some("pending")
        }
        Ok(None) => false,
        // Unknown: try, and let the mark be refused if it must.
        Err(_) => true,
    }
}

/// What an attempt came to, when nothing is left to retry.
enum Delivery {
    /// Every notifier of the stage has the notice (or does not want its kind).
    Done,
    /// There is nobody to tell: the stage is gone, or the Event names no notice.
    Nobody,
}

fn age(born: jiff::Timestamp) -> Duration {
    let secs = jiff::Timestamp::now().as_second() - born.as_second();
    Duration::from_secs(secs.max(0) as u64)
}

fn annotation<'a>(event: &'a Event, key: &str) -> Option<&'a str> {
    event
        .metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// One round: every Notifier not yet reached gets the notice; an error if any is left.
async fn attempt(
    ctx: &Context,
    event: &Event,
    namespace: &str,
    delivered: &mut Vec<String>,
    queue: &Queue,
) -> Result<Delivery, String> {
    let Some(notice) = notice(ctx, event, namespace) else {
        return Ok(Delivery::Nobody);
    };
    let stage = ctx.index.stage(namespace, &notice.stage);
    let notifiers: Vec<String> = stage
        .map(|s| s.spec.notifiers.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|n| !delivered.contains(n))
        .collect();
    // Each Notifier is sent to at once, so a slow one delays no other.
    let sends = notifiers.iter().map(|name| {
        let notice = &notice;
        async move {
            let key = format!("{namespace}/{name}");
            if let Some(rest) = queue.resting(&key) {
                return Err(format!(
                    "{name}: resting {}s after failures",
                    rest.as_secs()
                ));
            }
            let sent = send(ctx, namespace, name, notice, queue).await;
            sent.map_err(|why| format!("{name}: {why}"))
        }
    });
    let mut left = Vec::new();
    for (name, sent) in notifiers.iter().zip(futures::future::join_all(sends).await) {
        match sent {
            Ok(()) => delivered.push(name.clone()),
            Err(why) => left.push(why),
        }
    }
    write_work_notes(ctx, &notice, namespace, delivered, &mut left).await;
    match left.is_empty() {
        true => Ok(Delivery::Done),
        false => Err(left.join("; ")),
    }
}

/// Writes the notice to the change request of each gate that wants a work note and does not
/// have it yet.
async fn write_work_notes(
    ctx: &Context,
    notice: &Notice,
    namespace: &str,
    delivered: &mut Vec<String>,
    left: &mut Vec<String>,
) {
    use super::worknotes;
    let stage = ctx.index.stage(namespace, &notice.stage);
    let release = ctx.index.release(namespace, &notice.release);
    let (Some(stage), Some(release), true) = (stage, release, worknotes::wanted(notice.kind))
    else {
        return;
    };
    for (gate, spec) in worknotes::gates(ctx, &stage, &release) {
        let key = format!("{}{gate}", worknotes::PREFIX);
        if delivered.contains(&key) {
            continue;
        }
        match worknotes::write(ctx, namespace, &spec, notice).await {
            Ok(()) => delivered.push(key),
            Err(why) => left.push(format!("work note of gate '{gate}': {why}")),
        }
    }
}

/// The notice an Event stands for, from the Release, the Stage and the audit trail.
fn notice(ctx: &Context, event: &Event, namespace: &str) -> Option<Notice> {
    let stage_name = event.metadata.labels.as_ref()?.get(STAGE_LABEL)?.clone();
    let note = event.note.clone().unwrap_or_default();
    let message = note
        .strip_prefix(&format!("stage {stage_name}: "))
        .unwrap_or(&note)
        .to_string();
    let kind = notice_kind(event.reason.as_deref()?, &message)?;
    let release_name = event.regarding.as_ref()?.name.clone()?;
    let release = ctx.index.release(namespace, &release_name);
    let stage = ctx.index.stage(namespace, &stage_name)?;
    let (source, link) = release
        .as_ref()
        .and_then(|r| r.spec.source.clone())
        .map(|s| {
            let (repo, commit) = (
                s.repository.unwrap_or_default(),
                s.commit.unwrap_or_default(),
            );
            (
                Some(format!("{repo} @ {commit}")),
                source_link(&repo, &commit),
            )
        })
        .unwrap_or_default();
    Some(Notice {
        id: format!("{namespace}/{}", event.name_any()),
        kind,
        namespace: namespace.to_string(),
        pipeline: stage.spec.pipeline.clone(),
        actor: actor(release.as_deref(), annotation(event, AUDIT_ID_ANNOTATION)),
        approvers: match kind {
            NoticeKind::WaitingForApproval => {
                let release_type = release.as_ref().map(|r| r.spec.release_type);
                approvers(ctx, &stage, release_type.unwrap_or_default())
            }
            _ => vec![],
        },
        version: release.as_ref().map(|r| r.spec.version.clone()),
        stage: stage_name,
        release: release_name,
        message,
        source,
        link,
        change_ticket: release.as_ref().and_then(|r| r.spec.change_ticket.clone()),
        time: event
            .event_time
            .as_ref()
            .map_or_else(jiff::Timestamp::now, |t| t.0),
    })
}

/// The person behind the transition, from its audit entry; none for the operator's own.
fn actor(release: Option<&Release>, audit_id: Option<&str>) -> Option<String> {
    let id = audit_id?;
    let audit = &release?.status.as_ref()?.audit;
    let entry = audit.iter().find(|e| e.id == id)?;
    (entry.actor != OPERATOR_ACTOR).then(|| entry.actor.clone())
}

/// Who may approve at the stage, from its approval gates.
fn approvers(
    ctx: &Context,
    stage: &Stage,
    release_type: crate::api::release::ReleaseType,
) -> Vec<String> {
    let mut who: Vec<String> = Vec::new();
    for (_, policy) in ctx.index.approval_gates(stage, release_type) {
        who.extend(policy.users.iter().map(|u| format!("user {u}")));
        who.extend(policy.groups.iter().map(|g| format!("group {g}")));
    }
    who.sort();
    who.dedup();
    who
}

/// Sends the notice to one Notifier, unless it does not want this kind.
async fn send(
    ctx: &Context,
    namespace: &str,
    name: &str,
    notice: &Notice,
    queue: &Queue,
) -> Result<(), String> {
    let api: Api<Notifier> = Api::namespaced(ctx.client.clone(), namespace);
    let notifier = match api.get_opt(name).await {
        Ok(Some(n)) => n,
        Ok(None) => return Err(format!("Notifier '{name}' not found")),
        Err(e) => return Err(format!("cannot read Notifier '{name}': {e}")),
    };
    let spec = &notifier.spec;
    if !spec.events.is_empty() && !spec.events.contains(&notice.kind) {
        return Ok(());
    }
    let kind = spec.notifier_type.as_str();
    let sent = post(ctx, namespace, &notifier, notice).await;
    let outcome = if sent.is_ok() { "sent" } else { "failed" };
    ctx.metrics
        .notifications
        .get_or_create(&crate::metrics::NotificationLabels {
            notifier_type: kind,
            outcome,
        })
        .inc();
    let key = format!("{namespace}/{name}");
    let rest = match &sent {
        Ok(()) => {
            queue.delivered(&key);
            None
        }
        Err(_) => Some(queue.failed(&key)),
    };
    let failure = sent
        .as_ref()
        .err()
        .map(|why| (why.as_str(), rest.unwrap_or_default()));
    super::notifier::record(ctx, &notifier, failure).await;
    sent
}

/// POSTs the channel's message to the URL in the Notifier's Secret, through the allow-list.
async fn post(
    ctx: &Context,
    namespace: &str,
    notifier: &Notifier,
    notice: &Notice,
) -> Result<(), String> {
    let key_ref = &notifier.spec.url_secret_ref;
    let secrets =
        super::secrets::resolve(std::slice::from_ref(key_ref), namespace, &ctx.client).await?;
    let url = secrets
        .get(&crate::gates::secret_key(key_ref))
        .ok_or_else(|| "URL Secret not resolved".to_string())?;
    let url = reqwest::Url::parse(url.trim())
        .map_err(|e| format!("the URL in Secret '{}' is not a URL: {e}", key_ref.name))?;
    let env = ctx.runner.env();
    if let Some(why) = env.webhook_allow.refusal(&url) {
        return Err(why);
    }
    let body = channel(notifier.spec.notifier_type).payload(notice);
    send_json(&env.http, &url, &body).await
}

/// POSTs `body`; an error names the host only, never the URL, whose path is often the secret.
async fn send_json(
    http: &reqwest::Client,
    url: &reqwest::Url,
    body: &serde_json::Value,
) -> Result<(), String> {
    let host = url.host_str().unwrap_or("destination").to_string();
    let response = http
        .post(url.clone())
        .json(body)
        .timeout(SEND_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("{host} unreachable: {}", without_url(e)))?;
    match response.status() {
        s if s.is_success() => Ok(()),
        s => Err(format!("{host} answered {s}")),
    }
}

/// The error and its causes, without the request's URL.
fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_delivery_never_says_the_url_it_went_to() {
        crate::gates::ensure_crypto_provider();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let url: reqwest::Url = format!("http://127.0.0.1:{port}/services/T0/B0/s3cr3t-token")
            .parse()
            .unwrap();
        let body = serde_json::json!({});
        let why = send_json(&reqwest::Client::new(), &url, &body)
            .await
            .unwrap_err();
        assert!(why.starts_with("127.0.0.1 unreachable"), "{why}");
        assert!(
            !why.contains("s3cr3t") && !why.contains("/services/"),
            "{why}"
        );
    }
}
