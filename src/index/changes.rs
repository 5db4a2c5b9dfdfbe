//! What changed in the index, for the controllers' triggers. Each watch event's object is
//! sent on a broadcast channel of its kind once the store holds it, so the controllers read
//! the one index instead of watching and caching the same objects again. A controller that
//! subscribes (the leader's, when it starts) gets every object held first, then each change;
//! one that fell more than [`BUFFER`] changes behind gets every object again. Nothing is
//! missed, and with no subscriber (a standby) nothing is kept. With one, each channel's ring
//! keeps the objects of its last [`BUFFER`] changes alive until they are overwritten: at
//! 10,000 Releases that is memory to measure (the scale notes in the README).

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::Resource;
use kube::runtime::reflector::Store;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast::{self, Sender, error::RecvError};

use super::Index;
use crate::api::{Approval, Gate, Release, Stage, StageCommand};

/// How many changes a subscriber may fall behind before it is handed everything again.
pub const BUFFER: usize = 4096;

pub struct Changes {
    pub stages: Sender<Arc<Stage>>,
    pub releases: Sender<Arc<Release>>,
    pub gates: Sender<Arc<Gate>>,
    pub approvals: Sender<Arc<Approval>>,
    pub commands: Sender<Arc<StageCommand>>,
}

impl Default for Changes {
    fn default() -> Self {
        Self {
            stages: broadcast::channel(BUFFER).0,
            releases: broadcast::channel(BUFFER).0,
            gates: broadcast::channel(BUFFER).0,
            approvals: broadcast::channel(BUFFER).0,
            commands: broadcast::channel(BUFFER).0,
        }
    }
}

/// A kind the index holds.
pub trait Indexed:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
    fn store(index: &Index) -> &Store<Self>;
    fn sender(changes: &Changes) -> &Sender<Arc<Self>>;
}

macro_rules! indexed {
    ($kind:ty, $field:ident) => {
        impl Indexed for $kind {
            fn store(index: &Index) -> &Store<Self> {
                &index.$field
            }
            fn sender(changes: &Changes) -> &Sender<Arc<Self>> {
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

impl Index {
    /// Every `K` the index holds, then each `K` that changes (or is deleted) as it does.
    pub fn changes<K: Indexed>(self: &Arc<Self>) -> BoxStream<'static, Arc<K>> {
        let rx = K::sender(&self.changes).subscribe();
        let held = K::store(self).state();
        let later = futures::stream::unfold((rx, self.clone()), |(mut rx, index)| async move {
            let batch = match rx.recv().await {
                Ok(changed) => vec![changed],
                Err(RecvError::Lagged(_)) => K::store(&index).state(),
                Err(RecvError::Closed) => return None,
            };
            Some((futures::stream::iter(batch), (rx, index)))
        });
        futures::stream::iter(held).chain(later.flatten()).boxed()
    }

    /// Tells subscribers that `changed` changed.
    pub(super) fn announce<K: Indexed>(changes: &Changes, changed: K) {
        // No subscriber (a standby, or before the controllers start) is not an error.
        let _ = K::sender(changes).send(Arc::new(changed));
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

    #[tokio::test]
    async fn a_subscriber_gets_what_is_held_then_each_change_and_everything_after_a_lag() {
        let objects = Objects {
            stages: vec![stage("dev")],
            ..Default::default()
        };
        let index = Index::of(objects, Arc::new(IdentityKey::from_bytes(&[7; 32])));
        let mut changes = index.changes::<Stage>();
        let name = |s: Option<Arc<Stage>>| kube::ResourceExt::name_any(&*s.unwrap());
        assert_eq!(
            name(changes.next().await),
            "dev",
            "what the index holds comes first"
        );
        Index::announce(&index.changes, stage("prod"));
        assert_eq!(name(changes.next().await), "prod");
        for _ in 0..=BUFFER {
            Index::announce(&index.changes, stage("test"));
        }
        assert_eq!(
            name(changes.next().await),
            "dev",
            "a lagging subscriber gets all again"
        );
    }
}
