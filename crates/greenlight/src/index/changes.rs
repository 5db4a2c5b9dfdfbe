//! What changed in the index, for the controllers' triggers. Each watch event is sent on a
//! broadcast channel of its kind once the store holds it, so the controllers read the one
//! index instead of watching and caching the same objects again. A controller that
//! subscribes (the leader's, when it starts) gets every object held first, then each change;
//! one that fell more than [`BUFFER`] changes behind gets every object again (a deletion
//! among the changes it missed is not seen, but the lag is counted, [`Index::lagged`], so a
//! holder of what it saw can look for what went). With no subscriber (a standby) nothing is
//! kept.
//!
//! The channel carries an object's key, and the subscriber reads the object from the store:
//! a ring of whole objects kept the last [`BUFFER`] versions of each kind alive, which at
//! 10,000 Releases was most of the operator's memory. Only a deletion carries its object,
//! since the store no longer has it and the triggers still need to know what it named.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::Event;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast::{self, Sender, error::RecvError};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::core::PartialObjectMeta;

use super::Index;
use crate::api::{Approval, Gate, Release, Stage, StageCommand};

/// How many changes a subscriber may fall behind before it is handed everything again.
pub const BUFFER: usize = 4096;

/// One change of a `K`.
#[derive(Clone)]
pub enum Change<K: Resource<DynamicType = ()>> {
    /// Created or changed: the store holds it under this key.
    Held(ObjectRef<K>),
    /// Deleted: the store no longer holds it.
    Gone(Arc<K>),
}

pub struct Changes {
    /// How many times a subscriber fell behind and was handed everything again: a deletion
    /// among the changes it missed is not seen, and a holder of what it saw can sweep.
    pub lagged: std::sync::atomic::AtomicU64,
    pub stages: Sender<Change<Stage>>,
    pub releases: Sender<Change<Release>>,
    pub gates: Sender<Change<Gate>>,
    pub approvals: Sender<Change<Approval>>,
    pub commands: Sender<Change<StageCommand>>,
    pub deployments: Sender<Change<PartialObjectMeta<Deployment>>>,
    pub services: Sender<Change<PartialObjectMeta<Service>>>,
    pub gate_jobs: Sender<Change<Job>>,
    pub gate_job_pods: Sender<Change<Pod>>,
}

impl Default for Changes {
    fn default() -> Self {
        Self {
            lagged: Default::default(),
            stages: broadcast::channel(BUFFER).0,
            releases: broadcast::channel(BUFFER).0,
            gates: broadcast::channel(BUFFER).0,
            approvals: broadcast::channel(BUFFER).0,
            commands: broadcast::channel(BUFFER).0,
            deployments: broadcast::channel(BUFFER).0,
            services: broadcast::channel(BUFFER).0,
            gate_jobs: broadcast::channel(BUFFER).0,
            gate_job_pods: broadcast::channel(BUFFER).0,
        }
    }
}

/// A kind the index holds.
pub trait Indexed:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
    fn store(index: &Index) -> &Store<Self>;
    fn sender(changes: &Changes) -> &Sender<Change<Self>>;
}

macro_rules! indexed {
    ($kind:ty, $field:ident) => {
        impl Indexed for $kind {
            fn store(index: &Index) -> &Store<Self> {
                &index.$field
            }
            fn sender(changes: &Changes) -> &Sender<Change<Self>> {
                &changes.$field
            }
        }
    };
}

indexed!(Stage, stages);
indexed!(Release, releases);
indexed!(Gate, gates);
indexed!(Approval, approvals);
indexed!(StageCommand, commands);
indexed!(PartialObjectMeta<Deployment>, deployments);
indexed!(PartialObjectMeta<Service>, services);
indexed!(Job, gate_jobs);
indexed!(Pod, gate_job_pods);

impl Index {
    /// Every `K` the index holds, then each `K` that changes (or is deleted) as it does.
    pub fn changes<K: Indexed>(self: &Arc<Self>) -> BoxStream<'static, Arc<K>> {
        let rx = K::sender(&self.changes).subscribe();
        let held = K::store(self).state();
        let later = futures::stream::unfold((rx, self.clone()), |(mut rx, index)| async move {
            let batch = match rx.recv().await {
                // Changed again or deleted since: that change follows.
                Ok(Change::Held(key)) => K::store(&index).get(&key).into_iter().collect(),
                Ok(Change::Gone(object)) => vec![object],
                Err(RecvError::Lagged(_)) => {
                    index.changes.lagged.fetch_add(1, Ordering::Relaxed);
                    K::store(&index).state()
                }
                Err(RecvError::Closed) => return None,
            };
            Some((futures::stream::iter(batch), (rx, index)))
        });
        futures::stream::iter(held).chain(later.flatten()).boxed()
    }

    /// How many times a subscriber of any kind fell behind (see [`Changes::lagged`]).
    pub fn lagged(&self) -> u64 {
        self.changes.lagged.load(Ordering::Relaxed)
    }

    /// Tells subscribers that `changed` changed. The store has already taken the change, so
    /// an object it does not hold was deleted.
    pub(super) fn announce<K: Indexed>(changes: &Changes, store: &Store<K>, changed: K) {
        let key = ObjectRef::from_obj(&changed);
        let change = match store.get(&key) {
            Some(_) => Change::Held(key),
            None => Change::Gone(Arc::new(changed)),
        };
        // No subscriber (a standby, or before the controllers start) is not an error.
        let _ = K::sender(changes).send(change);
    }
}

/// A watch that restarts lists everything again, and the store takes the new list only when
/// it is complete. Until then, what the list brings is remembered, and then announced with
/// the objects that were held before and are missing from it (deleted meanwhile).
pub(super) struct Relist<K: Indexed> {
    before: Vec<Arc<K>>,
    listed: Vec<ObjectRef<K>>,
}

impl<K: Indexed> Default for Relist<K> {
    fn default() -> Self {
        Self {
            before: Vec::new(),
            listed: Vec::new(),
        }
    }
}

impl<K: Indexed> Relist<K> {
    /// Announces a watch event the reflector has applied to `store`.
    pub(super) fn announce(&mut self, changes: &Changes, store: &Store<K>, event: Event<K>) {
        let send = |change| {
            let _ = K::sender(changes).send(change);
        };
        match event {
            Event::Apply(changed) => Index::announce(changes, store, changed),
            Event::Delete(gone) => send(Change::Gone(Arc::new(gone))),
            // The store still holds what it held before the list.
            Event::Init => self.before = store.state(),
            Event::InitApply(listed) => self.listed.push(ObjectRef::from_obj(&listed)),
            Event::InitDone => {
                for old in std::mem::take(&mut self.before) {
                    if store.get(&ObjectRef::from_obj(&*old)).is_none() {
                        send(Change::Gone(old));
                    }
                }
                self.listed.drain(..).map(Change::Held).for_each(send);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityKey;
    use crate::index::Objects;

    fn stage(name: &str) -> Stage {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Stage",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"pipeline": "web", "target": {"name": "web"}}
        }))
        .unwrap()
    }

    fn holding_dev() -> Arc<Index> {
        let objects = Objects {
            stages: vec![stage("dev")],
            ..Default::default()
        };
        Index::of(objects, Arc::new(IdentityKey::from_bytes(&[7; 32])))
    }

    #[tokio::test]
    async fn a_subscriber_gets_what_is_held_then_each_change_and_everything_after_a_lag() {
        let index = holding_dev();
        let mut changes = index.changes::<Stage>();
        let name = |s: Option<Arc<Stage>>| kube::ResourceExt::name_any(&*s.unwrap());
        assert_eq!(
            name(changes.next().await),
            "dev",
            "what the index holds comes first"
        );
        Index::announce(&index.changes, &index.stages, stage("prod"));
        assert_eq!(name(changes.next().await), "prod");
        for _ in 0..=BUFFER {
            Index::announce(&index.changes, &index.stages, stage("test"));
        }
        assert_eq!(
            name(changes.next().await),
            "dev",
            "a lagging subscriber gets all again"
        );
    }

    #[tokio::test]
    async fn a_change_carries_a_key_and_is_read_from_the_store_and_a_deletion_its_object() {
        let index = holding_dev();
        let mut changes = index.changes::<Stage>();
        let held = changes.next().await.unwrap();
        Index::announce(&index.changes, &index.stages, stage("dev"));
        let again = changes.next().await.unwrap();
        assert!(
            Arc::ptr_eq(&held, &again),
            "a change hands out the store's object, not a copy kept in the channel"
        );
        Index::announce(&index.changes, &index.stages, stage("gone"));
        let gone = changes.next().await.unwrap();
        assert_eq!(kube::ResourceExt::name_any(&*gone), "gone");
    }

    #[tokio::test]
    async fn a_relisted_watch_announces_what_it_listed_once_held_and_what_went_missing() {
        let (store, mut writer) = kube::runtime::reflector::store::<Stage>();
        let changes = Changes::default();
        let mut rx = changes.stages.subscribe();
        let mut relist = Relist::default();
        let mut apply = |event: Event<Stage>| {
            writer.apply_watcher_event(&event);
            relist.announce(&changes, &store, event);
        };
        apply(Event::Apply(stage("dev")));
        apply(Event::Apply(stage("old")));
        apply(Event::Init);
        apply(Event::InitApply(stage("dev")));
        apply(Event::InitApply(stage("new")));
        apply(Event::InitDone);
        let mut seen = Vec::new();
        while let Ok(change) = rx.try_recv() {
            seen.push(match change {
                Change::Held(key) => format!("held {}", key.name),
                Change::Gone(object) => format!("gone {}", kube::ResourceExt::name_any(&*object)),
            });
        }
        assert_eq!(
            seen,
            ["held dev", "held old", "gone old", "held dev", "held new"],
            "nothing is announced while the list is incomplete, then the list and what it lost"
        );
    }
}
