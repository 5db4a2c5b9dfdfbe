//! Delivers notices. A transition's Event on its Release, labelled `greenlight.dev/notify:
//! pending`, is the notice's outbox entry: it is written once per transition (its name comes
//! from the transition), so it survives a restart, and it is marked `sent` once every Notifier
//! of the stage has the notice. Each Event is delivered by a task of its own with backoff, so
//! a receiver that is down delays only its notices, never a rollout.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::events::v1::Event;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tracing::{debug, warn};

use super::Context;
use crate::api::{NoticeKind, Notifier, OPERATOR_ACTOR, Release, Stage};
use crate::notify::{
    AUDIT_ID_ANNOTATION, DELIVERED_ANNOTATION, NOTIFY_LABEL, Notice, STAGE_LABEL, channel,
    notice_kind, source_link,
};

/// A notice not delivered within this long is given up (Events expire after an hour).
const GIVE_UP_AFTER: Duration = Duration::from_secs(55 * 60);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Watches pending notices and delivers each; runs while this replica leads.
pub async fn deliver_notices(ctx: Arc<Context>, namespace: Option<String>) {
    let api: Api<Event> = match &namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let config = watcher::Config::default().labels(&format!("{NOTIFY_LABEL}=pending"));
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut events = watcher(api, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(next) = events.next().await {
        let Ok(event) = next else { continue };
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
            let (ctx, busy) = (ctx.clone(), busy.clone());
            tokio::spawn(async move {
                deliver(&ctx, &event).await;
                busy.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
            });
        }
    }
}

/// Sends one Event's notice to every Notifier of its stage, retrying with backoff, then marks
/// the Event; Notifiers that have it already are not sent it again.
async fn deliver(ctx: &Context, event: &Event) {
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
    let mut backoff = Duration::from_secs(1);
    loop {
        if !ctx.writer.leads() {
            return;
        }
        let outcome = attempt(ctx, event, &namespace, &mut delivered).await;
        let state = match outcome {
            Ok(()) => "sent",
            Err(_) if age(born) > GIVE_UP_AFTER => "failed",
            Err(why) => {
                debug!(event = %event.name_any(), %why, ?backoff, "notice not delivered yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let marked = ctx
            .writer
            .notice_outbox(&namespace, &event.name_any(), state, &delivered)
            .await;
        if let Err(e) = marked {
            warn!(event = %event.name_any(), error = %e, "cannot mark the notice {state}");
        }
        return;
    }
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
) -> Result<(), String> {
    let Some(notice) = notice(ctx, event, namespace) else {
        return Ok(());
    };
    let stage = ctx.index.stage(namespace, &notice.stage);
    let notifiers: Vec<String> = stage
        .map(|s| s.spec.notifiers.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|n| !delivered.contains(n))
        .collect();
    let mut left = Vec::new();
    for name in &notifiers {
        match send(ctx, namespace, name, &notice).await {
            Ok(()) => delivered.push(name.clone()),
            Err(why) => left.push(format!("{name}: {why}")),
        }
    }
    match left.is_empty() {
        true => Ok(()),
        false => Err(left.join("; ")),
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
            NoticeKind::WaitingForApproval => approvers(ctx, &stage),
            _ => vec![],
        },
        version: release.as_ref().map(|r| r.spec.version.clone()),
        stage: stage_name,
        release: release_name,
        message,
        source,
        link,
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
fn approvers(ctx: &Context, stage: &Stage) -> Vec<String> {
    let mut who: Vec<String> = Vec::new();
    for (_, policy) in ctx.index.approval_gates(stage) {
        who.extend(policy.users.iter().map(|u| format!("user {u}")));
        who.extend(policy.groups.iter().map(|g| format!("group {g}")));
    }
    who.sort();
    who.dedup();
    who
}

/// Sends the notice to one Notifier, unless it does not want this kind.
async fn send(ctx: &Context, namespace: &str, name: &str, notice: &Notice) -> Result<(), String> {
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
    let kind = match spec.notifier_type {
        crate::api::NotifierType::Slack => "slack",
        crate::api::NotifierType::Teams => "teams",
        crate::api::NotifierType::Webhook => "webhook",
    };
    let sent = post(ctx, namespace, &notifier, notice).await;
    let outcome = if sent.is_ok() { "sent" } else { "failed" };
    ctx.metrics
        .notifications
        .get_or_create(&crate::metrics::NotificationLabels {
            notifier_type: kind,
            outcome,
        })
        .inc();
    super::notifier::record(ctx, &notifier, sent.as_ref().err()).await;
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
    let response = env
        .http
        .post(url.clone())
        .json(&body)
        .timeout(SEND_TIMEOUT)
        .send()
        .await
        .map_err(|e| {
            format!(
                "{} unreachable: {e}",
                url.host_str().unwrap_or("destination")
            )
        })?;
    match response.status() {
        s if s.is_success() => Ok(()),
        s => Err(format!(
            "{} answered {s}",
            url.host_str().unwrap_or("destination")
        )),
    }
}
