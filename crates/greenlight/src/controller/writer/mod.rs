//! The one writer: every write the operator makes goes through here (server-side applies,
//! status patches, audit appends, Events, StageCommand outcomes, traffic weights), is
//! counted by kind, and fails as a [`WriteError`] that says what the apiserver refused and why.
//! Callers write only what differs from what they observed (status diffs, `matches_desired`),
//! and every write can be repeated without harm.

mod audit;
mod events;
mod fence;
mod seen;

pub use audit::AUDIT_LIMIT;
pub(crate) use events::event_name;
pub use events::{Announcement, EventSink, REPORTING_CONTROLLER};

use std::sync::Arc;

use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::patch::merge_diff;
use crate::api::conditions;
use crate::api::release::{Release, ReleaseStageStatus};
use crate::api::stage::{Stage, StageStatus};
use crate::api::{
    CommandPhase, FIELD_MANAGER, ORPHANED_ANNOTATION, StageCommand, StageCommandStatus,
};
use crate::index::Index;
use crate::index::own::{OwnEntries, OwnWrites, Read};
use crate::metrics::Metrics;
use crate::routers::{RouterContext, RouterError, TrafficRouter};
use k8s_openapi::api::apps::v1::Deployment;

/// A write that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The apiserver answered and said no: quota, admission policy, RBAC, a terminating
    /// namespace, a conflict, an invalid object, or a server error.
    #[error("{what} was refused ({reason}): {message}")]
    Refused {
        kind: &'static str,
        what: String,
        reason: &'static str,
        message: String,
    },
    /// No answer: the connection failed or timed out.
    #[error("{what} failed: {source}")]
    Unreachable {
        kind: &'static str,
        what: String,
        source: kube::Error,
    },
    #[error("cannot serialize {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("traffic router: {0}")]
    Router(#[from] RouterError),
    /// This replica does not hold the leader lease (any more): it writes nothing.
    #[error("not written: this replica is not the leader")]
    NotLeader,
}

impl WriteError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Refused { .. } => "write_refused",
            Self::Unreachable { .. } => "write_unreachable",
            Self::Serialize(_) => "serialize",
            Self::Router(e) => e.label(),
            Self::NotLeader => "not_leader",
        }
    }

    fn from_kube(kind: &'static str, what: String, error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => WriteError::Refused {
                kind,
                what,
                reason: refusal_reason(status.code, &status.reason),
                message: status.message.clone(),
            },
            source => WriteError::Unreachable { kind, what, source },
        }
    }
}

/// The Stage's version now, when only its metadata changed since the decision (a label, an
/// annotation, a finalizer): its spec and status are as the decision found them, so the
/// decision still stands and may be written on that version. `None` when its spec or status
/// moved (a new leader wrote, or someone edited the spec): then the stage decides again.
async fn unchanged_but_metadata(
    api: &Api<Stage>,
    name: &str,
    generation: Option<i64>,
    decided_on: &Value,
) -> Option<String> {
    let fresh = api.get_opt(name).await.ok().flatten()?;
    let status = serde_json::to_value(fresh.status.clone().unwrap_or_default()).ok()?;
    (fresh.metadata.generation == generation && status == *decided_on)
        .then(|| fresh.resource_version())
        .flatten()
}

/// The apiserver's reason as a fixed label (its own reason strings are not a closed set).
fn refusal_reason(code: u16, reason: &str) -> &'static str {
    match (code, reason) {
        (403, _) => "Forbidden",
        (409, "AlreadyExists") => "AlreadyExists",
        (409, _) => "Conflict",
        (422, _) => "Invalid",
        (400, _) => "BadRequest",
        (404, _) => "NotFound",
        (429, _) => "TooManyRequests",
        (500..=599, _) => "ServerError",
        _ => "Other",
    }
}

pub struct Writer {
    client: Client,
    metrics: Arc<Metrics>,
    pub events: EventSink,
    /// With several replicas, the lease whose holder alone may write.
    fence: Fence,
    /// Where each Stage write, and each release entry, is kept until the index's watch
    /// brings it.
    own_stages: Arc<OwnWrites<Stage>>,
    own_entries: Arc<OwnEntries>,
    /// The watched Stages and Releases, for the version a status write must find.
    stages: kube::runtime::reflector::Store<Stage>,
    releases: kube::runtime::reflector::Store<Release>,
}

/// An object of a namespace, as the writer writes and reads it back.
pub trait Namespaced:
    Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> Namespaced for K where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
{
}

/// The leader lease a write needs, when replicas elect a leader.
pub type Fence = Option<Arc<crate::leader::Leadership>>;

impl Writer {
    /// A writer that writes only while `fence` says this replica leads, and tells the index
    /// what its Stage and release entry writes left.
    pub fn fenced_by(client: Client, metrics: Arc<Metrics>, fence: Fence, index: &Index) -> Self {
        let client = match &fence {
            Some(lease) => fence::fenced(client, lease.clone()),
            None => client,
        };
        let events = EventSink::new(
            client.clone(),
            metrics.clone(),
            fence.clone(),
            index.identity.clone(),
        );
        Self {
            client,
            metrics,
            events,
            fence,
            own_stages: index.own_stages.clone(),
            own_entries: index.own_entries.clone(),
            stages: index.stages.clone(),
            releases: index.releases.clone(),
        }
    }

    /// Refuses the write when this replica does not lead: checked before every write, so a
    /// leader that can no longer renew its lease stops writing before the lease can expire.
    fn may_write(&self) -> Result<(), WriteError> {
        match &self.fence {
            Some(lease) if !lease.is_leader() => Err(WriteError::NotLeader),
            _ => Ok(()),
        }
    }

    /// Counts a write attempt, and its refusal when it fails.
    fn counted<T>(
        &self,
        kind: &'static str,
        what: impl FnOnce() -> String,
        result: Result<T, kube::Error>,
    ) -> Result<T, WriteError> {
        self.metrics.write(kind);
        result.map_err(|e| {
            let error = WriteError::from_kube(kind, what(), e);
            let reason = match &error {
                WriteError::Refused { reason, .. } => reason,
                _ => "transport",
            };
            self.metrics.refused(kind, reason);
            error
        })
    }

    /// Server-side apply of a managed object under the operator's field manager; the object
    /// as the apiserver then holds it.
    pub async fn apply<K>(&self, kind: &'static str, object: &K) -> Result<K, WriteError>
    where
        K: Namespaced + Serialize,
    {
        self.may_write()?;
        let name = object.name_any();
        let namespace = object.namespace().unwrap_or_default();
        let mut body = serde_json::to_value(object)?;
        body["apiVersion"] = json!(K::api_version(&()));
        body["kind"] = json!(K::kind(&()));
        let params = PatchParams::apply(FIELD_MANAGER).force();
        tracing::debug!(kind, name = %name, "server-side apply");
        let result = Api::<K>::namespaced(self.client.clone(), &namespace)
            .patch(&name, &params, &Patch::Apply(body))
            .await;
        let what = || format!("apply of {} '{name}'", K::kind(&()));
        self.counted(kind, what, result)
    }

    /// Sets the canary's share of traffic; counted only when the router wrote.
    pub async fn set_weight(
        &self,
        router: &dyn TrafficRouter,
        ctx: &RouterContext,
        weight: i32,
    ) -> Result<(), WriteError> {
        self.may_write()?;
        match router.set_weight(ctx, weight).await {
            Ok(true) => {
                tracing::debug!(weight, "traffic weight set");
                self.metrics.write("traffic_weight");
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(RouterError::Kube(e)) => {
                let what = || format!("traffic weight {weight}% on the route");
                self.counted("traffic_weight", what, Err::<(), _>(e))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sends all traffic back to the primary and removes the canary from the router's
    /// configuration; counted only when the router wrote.
    pub async fn restore_primary(
        &self,
        router: &dyn TrafficRouter,
        ctx: &RouterContext,
    ) -> Result<(), WriteError> {
        self.may_write()?;
        match router.restore_primary(ctx).await {
            Ok(true) => {
                self.metrics.write("traffic_restore");
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(RouterError::Kube(e)) => {
                let what = || "restoring all traffic to the primary".to_string();
                self.counted("traffic_restore", what, Err::<(), _>(e))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Marks a primary orphaned (its Stage is being deleted; it keeps serving and no longer
    /// has an owner), or takes the mark off again (`None`: a Stage of that name adopts it).
    pub async fn mark_orphaned(
        &self,
        primary: &Deployment,
        note: Option<&str>,
    ) -> Result<Deployment, WriteError> {
        let mut annotations = serde_json::Map::new();
        annotations.insert(ORPHANED_ANNOTATION.into(), json!(note));
        let mut metadata = json!({ "annotations": annotations });
        if note.is_some() {
            metadata["ownerReferences"] = serde_json::Value::Null;
        }
        self.metadata("deployment_orphan", "orphan mark", primary, metadata)
            .await
    }

    /// Creates `object`: the object as created, or `None` when one of its name exists
    /// already (whose it is, the caller checks).
    pub async fn create<K>(&self, kind: &'static str, object: &K) -> Result<Option<K>, WriteError>
    where
        K: Namespaced + Serialize,
    {
        self.may_write()?;
        let name = object.name_any();
        let api =
            Api::<K>::namespaced(self.client.clone(), &object.namespace().unwrap_or_default());
        match api.create(&kube::api::PostParams::default(), object).await {
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
            result => {
                let what = || format!("creation of {} '{name}'", K::kind(&()));
                self.counted(kind, what, result.map(Some))
            }
        }
    }

    /// Deletes `object` as it was seen: not one made again under its name, nor one changed
    /// since. One already gone is fine. What it owns goes with it (a Job's pods too, which
    /// the API would otherwise leave).
    pub async fn delete<K>(&self, kind: &'static str, object: &K) -> Result<(), WriteError>
    where
        K: Namespaced,
    {
        self.may_write()?;
        let name = object.name_any();
        let api =
            Api::<K>::namespaced(self.client.clone(), &object.namespace().unwrap_or_default());
        let params = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: object.uid(),
                resource_version: object.resource_version(),
            }),
            propagation_policy: Some(kube::api::PropagationPolicy::Background),
            ..Default::default()
        };
        match api.delete(&name, &params).await {
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            result => {
                let what = || format!("deletion of {} '{name}'", K::kind(&()));
                self.counted(kind, what, result.map(|_| ())).map(|_| ())
            }
        }
    }

    /// Makes a Service someone pointed elsewhere (an external name, external IPs, unready
    /// addresses, other ports) one that sends only to its selected pods on `built`'s ports
    /// again. A merge patch on the version seen: an apply would leave the fields it does not
    /// set. An external name becomes a ClusterIP Service; a NodePort or LoadBalancer one
    /// stays one (its node ports are allocated again).
    pub async fn plain_service(
        &self,
        existing: &k8s_openapi::api::core::v1::Service,
        built: &k8s_openapi::api::core::v1::Service,
    ) -> Result<k8s_openapi::api::core::v1::Service, WriteError> {
        self.may_write()?;
        let name = existing.name_any();
        let namespace = existing.namespace().unwrap_or_default();
        let api =
            Api::<k8s_openapi::api::core::v1::Service>::namespaced(self.client.clone(), &namespace);
        let ports = built.spec.as_ref().and_then(|s| s.ports.clone());
        let kind = existing.spec.as_ref().and_then(|s| s.type_.clone());
        let kind = kind.filter(|k| k != "ExternalName");
        let body = json!({
            "metadata": {"resourceVersion": existing.resource_version()},
            "spec": {
                "type": kind.unwrap_or_else(|| "ClusterIP".into()), "ports": ports,
                "externalName": null, "externalIPs": null, "publishNotReadyAddresses": null,
            },
        });
        let params = PatchParams {
            field_manager: Some(crate::api::FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        let result = api.patch(&name, &params, &Patch::Merge(body)).await;
        let what = || format!("making Service '{name}' send only to its own pods again");
        self.counted("service_plain", what, result)
    }

    /// Puts the protection label on `object` (`true`), or takes it off; the object as it is
    /// then.
    pub async fn protection_label<K>(&self, object: &K, on: bool) -> Result<K, WriteError>
    where
        K: Namespaced,
    {
        let value = on.then_some("true");
        let metadata = json!({ "labels": { crate::api::PROTECTED_LABEL: value } });
        self.metadata("protection_label", "protection label", object, metadata)
            .await
    }

    /// A merge patch of `object`'s metadata, on the version seen (a conflict is decided
    /// again); the object as the apiserver then holds it.
    async fn metadata<K>(
        &self,
        kind: &'static str,
        what: &str,
        object: &K,
        metadata: Value,
    ) -> Result<K, WriteError>
    where
        K: Namespaced,
    {
        self.may_write()?;
        let name = object.name_any();
        let api =
            Api::<K>::namespaced(self.client.clone(), &object.namespace().unwrap_or_default());
        let mut metadata = metadata;
        // On the version seen, so one prepared by a replaced leader never lands after the new
        // leader's (an owner set on a Stage made again since would have the canary collected).
        metadata["resourceVersion"] = json!(object.resource_version());
        let body = Patch::Merge(json!({ "metadata": metadata }));
        let result = api.patch(&name, &PatchParams::default(), &body).await;
        let what = || format!("{what} of {} '{name}'", K::kind(&()));
        self.counted(kind, what, result)
    }

    /// Makes `object` the Stage's, for the garbage collector to delete once the Stage is
    /// gone (the canary, once the route no longer sends it traffic).
    pub async fn hand_to_stage<K>(
        &self,
        kind: &'static str,
        object: &K,
        stage: &Stage,
    ) -> Result<(), WriteError>
    where
        K: Namespaced,
    {
        let Some(owner) = stage.controller_owner_ref(&()) else {
            return Ok(());
        };
        let metadata = json!({ "ownerReferences": [owner] });
        self.metadata(kind, "owner", object, metadata)
            .await
            .map(|_| ())
    }

    /// Sets a Stage's finalizers, failing on a conflict rather than overwriting another
    /// writer's change (the patch carries the resourceVersion read).
    pub async fn stage_finalizers(
        &self,
        stage: &Stage,
        finalizers: Vec<String>,
    ) -> Result<(), WriteError> {
        self.may_write()?;
        let name = stage.name_any();
        let body = json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": stage.resource_version(),
        }});
        let result =
            Api::<Stage>::namespaced(self.client.clone(), &stage.namespace().unwrap_or_default())
                .patch(&name, &PatchParams::default(), &Patch::Merge(body))
                .await;
        let what = || format!("finalizers of Stage '{name}'");
        let written = self.counted("stage_finalizers", what, result)?;
        self.own_stages.wrote(written);
        Ok(())
    }

    /// Writes a Stage's status as a minimal merge patch, if anything changed.
    pub async fn stage_status(
        &self,
        stage: &Stage,
        old: &StageStatus,
        mut status: StageStatus,
        now: Timestamp,
    ) -> Result<(), WriteError> {
        let generation = stage.meta().generation;
        status.observed_generation = generation;
        status.conditions = conditions::merge(&old.conditions, status.conditions, now, generation);
        let old = serde_json::to_value(old)?;
        let new = serde_json::to_value(&status)?;
        let Some(diff) = merge_diff(&old, &new) else {
            return Ok(());
        };
        let namespace = stage.namespace().unwrap_or_default();
        let name = stage.name_any();
        // The newest version this replica knows (its own last write, or the watch's): a write
        // prepared by a leader that has been replaced since finds a newer one, and the
        // apiserver refuses it (409).
        let key = ObjectRef::new(&name).within(&namespace);
        let mut version = match self.own_stages.read(&key, self.stages.get(&key)) {
            Read::Known(Some(known)) => known.resource_version(),
            _ => stage.resource_version(),
        };
        let api = Api::<Stage>::namespaced(self.client.clone(), &namespace);
        for attempt in 0..2 {
            let body = json!({ "metadata": { "resourceVersion": version }, "status": diff });
            self.may_write()?;
            let result = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(body))
                .await;
            if let Err(kube::Error::Api(e)) = &result {
                if e.code == 404 {
                    return Ok(());
                }
                let retry = e.code == 409 && attempt == 0;
                let fresh = match retry {
                    true => unchanged_but_metadata(&api, &name, generation, &old).await,
                    false => None,
                };
                if fresh.is_some() {
                    version = fresh;
                    continue;
                }
            }
            let what = || format!("status of Stage '{name}'");
            let written = self.counted("stage_status", what, result)?;
            self.own_stages.wrote(written);
            return Ok(());
        }
        Ok(())
    }

    /// Writes one stage's entry in a Release's status, if it changed, with the `summary`
    /// fields (phase, summary, message, conditions) that change with it.
    pub async fn release_entry(
        &self,
        namespace: &str,
        release: &str,
        stage: &str,
        (old, new): (Option<&ReleaseStageStatus>, &ReleaseStageStatus),
        summary: Option<Value>,
    ) -> Result<(), WriteError> {
        let before = serde_json::to_value(old)?;
        let old = old.map(serde_json::to_value).transpose()?;
        let Some(diff) = merge_diff(&old.unwrap_or(json!({})), &serde_json::to_value(new)?) else {
            return Ok(());
        };
        let written = self
            .entry_patch((namespace, release), (stage, &before), diff, summary)
            .await?;
        if let Some(written) = written {
            self.own_entries.wrote(&written, stage, Some(new.clone()));
        }
        Ok(())
    }

    /// Records on a notice's Event which Notifiers have it, and whether it is done (`sent`,
    /// or `failed` once given up); a deleted (expired) Event is fine.
    pub async fn notice_outbox(
        &self,
        namespace: &str,
        event: &str,
        state: &str,
        delivered: &[String],
    ) -> Result<(), WriteError> {
        use crate::notify::{DELIVERED_ANNOTATION, NOTIFY_LABEL};
        self.may_write()?;
        let patch = Patch::Merge(json!({"metadata": {
            "labels": {NOTIFY_LABEL: state},
            "annotations": {DELIVERED_ANNOTATION: delivered.join(",")},
        }}));
        let result =
            Api::<k8s_openapi::api::events::v1::Event>::namespaced(self.client.clone(), namespace)
                .patch(event, &PatchParams::default(), &patch)
                .await;
        match result {
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            result => {
                let what = || format!("notice state of Event '{event}'");
                self.counted("event_notice", what, result).map(|_| ())
            }
        }
    }

    /// Whether this replica may write now (it leads, or no leader is elected).
    pub fn leads(&self) -> bool {
        self.may_write().is_ok()
    }

    /// A merge patch of `object`'s `status` (given as the diff of its fields), on the version
    /// the decision saw: refused (409) when the object changed since, so a write prepared by a
    /// replaced leader never lands after the new one's. A deleted object is fine.
    pub async fn status<K>(
        &self,
        kind: &'static str,
        object: &K,
        diff: Value,
    ) -> Result<(), WriteError>
    where
        K: Namespaced,
    {
        self.may_write()?;
        let name = object.name_any();
        let body = json!({
            "metadata": { "resourceVersion": object.resource_version() },
            "status": diff,
        });
        let result =
            Api::<K>::namespaced(self.client.clone(), &object.namespace().unwrap_or_default())
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(body))
                .await;
        match result {
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            result => {
                let what = || format!("status of {} '{name}'", K::kind(&()));
                self.counted(kind, what, result).map(|_| ())
            }
        }
    }

    /// Marks a StageCommand handled, once: a command handled already is left as it is.
    pub async fn command_status(
        &self,
        command: &StageCommand,
        phase: CommandPhase,
        message: &str,
        now: jiff::Timestamp,
    ) -> Result<(), WriteError> {
        if command.status.as_ref().is_some_and(|s| s.phase.is_some()) {
            return Ok(());
        }
        let status = StageCommandStatus {
            phase: Some(phase),
            message: Some(message.to_string()),
            handled_at: Some(now),
        };
        let api = Api::<StageCommand>::namespaced(
            self.client.clone(),
            &command.namespace().unwrap_or_default(),
        );
        let name = command.name_any();
        let what = || format!("status of StageCommand '{name}'");
        let mut version = command.resource_version();
        // Only as the command was seen, unhandled: the watch can lag this operator's own mark,
        // and a second pass marking it again would overwrite what the first one said.
        for _ in 0..3 {
            self.may_write()?;
            let patch = json!({"metadata": {"resourceVersion": version}, "status": status});
            let result = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await;
            match result {
                Err(kube::Error::Api(e)) if e.code == 409 => self.metrics.write("command_status"),
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
                result => return self.counted("command_status", what, result).map(|_| ()),
            }
            let current = api.get_opt(&name).await;
            let current =
                current.map_err(|e| WriteError::from_kube("command_status", what(), e))?;
            // Marked meanwhile, deleted, or deleted and made again under the same name (a
            // new command, which its own pass will judge): nothing more to mark.
            match current {
                Some(c)
                    if c.uid() == command.uid()
                        && c.status.as_ref().is_none_or(|s| s.phase.is_none()) =>
                {
                    version = c.resource_version();
                }
                _ => return Ok(()),
            }
        }
        Err(WriteError::Refused {
            kind: "command_status",
            what: what(),
            reason: "Conflict",
            message: "kept changing under concurrent writers".into(),
        })
    }

    /// Appends audit entries the trail does not hold yet; returns those it appended.
    pub async fn audit(
        &self,
        namespace: &str,
        release: &str,
        entries: Vec<crate::api::release::AuditEntry>,
    ) -> Result<Vec<crate::api::release::AuditEntry>, WriteError> {
        audit::append(self, namespace, release, entries).await
    }
}
