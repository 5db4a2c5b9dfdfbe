//! How many objects wait for a reconcile, per controller: a watch event that queues an object
//! adds it, the start of its reconcile takes it out. (A requeue timer's object joins when its
//! reconcile starts; it never waited behind others.) Feeds `greenlight_reconcile_queue_depth`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use crate::metrics::{ControllerLabels, Metrics};

pub struct Queue {
    waiting: Mutex<HashMap<&'static str, HashSet<String>>>,
    metrics: Arc<Metrics>,
}

impl Queue {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            waiting: Mutex::default(),
            metrics,
        }
    }

    /// Records that a watch event queued these objects, and hands them on.
    pub fn queued<K: Resource>(
        &self,
        controller: &'static str,
        refs: impl IntoIterator<Item = ObjectRef<K>>,
    ) -> Vec<ObjectRef<K>> {
        let refs: Vec<ObjectRef<K>> = refs.into_iter().collect();
        self.change(controller, |waiting| {
            for r in &refs {
                waiting.insert(key(r.namespace.as_deref(), &r.name));
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
        self.change(controller, |waiting| {
            waiting.remove(&key(namespace, name));
        });
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

    fn change(&self, controller: &'static str, edit: impl FnOnce(&mut HashSet<String>)) {
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

/// A controller of `api`'s objects whose own watch events are counted as queued.
pub fn controller<K>(api: Api<K>, queue: Arc<Queue>, name: &'static str) -> Controller<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .reflect(writer)
        .applied_objects()
        .inspect_ok(move |o: &K| {
            queue.queued(name, [ObjectRef::from_obj(o)]);
        });
    Controller::for_stream(stream, reader)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Stage;

    #[test]
    fn an_object_queued_twice_waits_once_and_leaves_when_its_reconcile_starts() {
        let metrics = Metrics::new();
        let queue = Queue::new(metrics.clone());
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
        let queue = Queue::new(metrics.clone());
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
