//! The controllers' work queues, built on the index: each controller reconciles the objects
//! the index's changes name (its own kind's, and those its mappers derive from other kinds).
//! It also counts how many objects wait for a reconcile: a change that queues an object adds
//! it, the start of its reconcile takes it out and observes how long it waited. (A requeue
//! timer's object joins when its reconcile starts; it never waited behind others.) Feeds
//! `greenlight_reconcile_queue_depth` and `greenlight_reconcile_queue_wait_seconds`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::Resource;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::reflector::ObjectRef;

use crate::index::Index;
use crate::index::changes::Indexed;
use crate::metrics::{ControllerLabels, Metrics};

pub struct Queue {
    /// Per controller, the objects waiting and since when.
    waiting: Mutex<HashMap<&'static str, HashMap<String, Instant>>>,
    metrics: Arc<Metrics>,
    /// How many objects a controller reconciles at once. Unbounded, a burst of Releases
    /// started one reconcile per Stage at once: each holds its observed state while it
    /// waits on a saturated apiserver, which was most of the heap at 200 Stages.
    concurrency: u16,
}

impl Queue {
    pub fn new(metrics: Arc<Metrics>, concurrency: u16) -> Self {
        Self {
            waiting: Mutex::default(),
            metrics,
            concurrency,
        }
    }

    /// Records that a watch event queued these objects, and hands them on.
    pub fn queued<K: Resource>(
        &self,
        controller: &'static str,
        refs: impl IntoIterator<Item = ObjectRef<K>>,
    ) -> Vec<ObjectRef<K>> {
        let refs: Vec<ObjectRef<K>> = refs.into_iter().collect();
        let now = Instant::now();
        self.change(controller, |waiting| {
            for r in &refs {
                waiting
                    .entry(key(r.namespace.as_deref(), &r.name))
                    .or_insert(now);
            }
        });
        refs
    }

    /// `map`, recording the objects it queues.
    pub fn counting<K, T, I>(
        self: &Arc<Self>,
        controller: &'static str,
        map: impl Fn(K) -> I + Send + Sync + 'static,
    ) -> impl Fn(K) -> Vec<ObjectRef<T>> + Send + Sync + 'static
    where
        T: Resource,
        I: IntoIterator<Item = ObjectRef<T>>,
    {
        let queue = self.clone();
        move |obj| queue.queued(controller, map(obj))
    }

    /// The reconcile of this object begins.
    pub fn started(&self, controller: &'static str, namespace: Option<&str>, name: &str) {
        let mut since = None;
        self.change(controller, |waiting| {
            since = waiting.remove(&key(namespace, name));
        });
        if let Some(since) = since {
            let labels = ControllerLabels { controller };
            let waited = since.elapsed().as_secs_f64();
            self.metrics
                .queue_wait
                .get_or_create(&labels)
                .observe(waited);
        }
    }

    /// Hands on what the controller reports for each queued object; one it could not find
    /// (deleted meanwhile) waits no more.
    pub fn settled<T, E1, E2>(
        &self,
        controller: &'static str,
        result: Result<T, kube::runtime::controller::Error<E1, E2>>,
    ) -> futures::future::Ready<()> {
        if let Err(kube::runtime::controller::Error::ObjectNotFound(missing)) = result {
            self.started(controller, missing.namespace.as_deref(), &missing.name);
        }
        futures::future::ready(())
    }

    fn change(&self, controller: &'static str, edit: impl FnOnce(&mut HashMap<String, Instant>)) {
        let mut all = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let waiting = all.entry(controller).or_default();
        edit(waiting);
        self.metrics
            .queue_depth
            .get_or_create(&ControllerLabels { controller })
            .set(waiting.len() as i64);
    }
}

fn key(namespace: Option<&str>, name: &str) -> String {
    format!("{}/{name}", namespace.unwrap_or_default())
}

/// A controller of the index's `K`s: its store is the index's, and each change of a `K` the
/// index sees queues that object (counted).
pub fn controller<K: Indexed>(
    index: &Arc<Index>,
    queue: &Arc<Queue>,
    name: &'static str,
) -> Controller<K> {
    let own = queue.on_changes::<K, K, _>(index, name, |o| Some(ObjectRef::from_obj(o)));
    let nothing = futures::stream::pending::<Result<K, kube::runtime::watcher::Error>>();
    Controller::for_stream(nothing, K::store(index).clone())
        .with_config(Config::default().concurrency(queue.concurrency))
        .reconcile_on(own)
}

impl Queue {
    /// The objects `map` names for each change of a `K` in the index, counted as queued.
    pub fn on_changes<K, T, I>(
        self: &Arc<Self>,
        index: &Arc<Index>,
        controller: &'static str,
        map: impl Fn(&K) -> I + Send + 'static,
    ) -> BoxStream<'static, ObjectRef<T>>
    where
        K: Indexed,
        T: Resource + Send + 'static,
        T::DynamicType: Send,
        I: IntoIterator<Item = ObjectRef<T>>,
    {
        let queue = self.clone();
        index
            .changes::<K>()
            .flat_map(move |changed| futures::stream::iter(queue.queued(controller, map(&changed))))
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Stage;

    #[test]
    fn an_object_queued_twice_waits_once_and_leaves_when_its_reconcile_starts() {
        let metrics = Metrics::new();
        let queue = Queue::new(metrics.clone(), 16);
        let prod = ObjectRef::<Stage>::new("prod").within("shop");
        let dev = ObjectRef::<Stage>::new("dev").within("shop");
        queue.queued("stage", [prod.clone(), dev]);
        queue.queued("stage", [prod]);
        let depth = || {
            let labels = ControllerLabels {
                controller: "stage",
            };
            metrics.queue_depth.get_or_create(&labels).get()
        };
        assert_eq!(depth(), 2);
        queue.started("stage", Some("shop"), "prod");
        assert_eq!(depth(), 1);
        queue.started("stage", Some("shop"), "prod");
        assert_eq!(
            depth(),
            1,
            "a reconcile that was not queued changes nothing"
        );
    }

    #[test]
    fn an_object_deleted_before_its_reconcile_waits_no_more() {
        let metrics = Metrics::new();
        let queue = Queue::new(metrics.clone(), 16);
        let gone = ObjectRef::<Stage>::new("gone").within("shop");
        queue.queued("stage", [gone.clone()]);
        type Failed = kube::runtime::controller::Error<std::io::Error, std::io::Error>;
        let missing: Result<(), Failed> = Err(Failed::ObjectNotFound(Box::new(gone.erase())));
        drop(queue.settled("stage", missing));
        let labels = ControllerLabels {
            controller: "stage",
        };
        assert_eq!(metrics.queue_depth.get_or_create(&labels).get(), 0);
    }
}
