//! Reads of the Deployments and Services a stage works with, as current as a GET without a
//! GET on every pass. The index's metadata watch says which version of each the apiserver
//! holds; the body read last (or returned by the operator's own write) is used while it is
//! that version, and read again only once its object has changed. A body whose version the
//! watch has not shown yet is read again too, so a decision never builds on a version older
//! than one the operator has seen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::core::{NamespaceResourceScope, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::metrics::Metrics;

pub struct Fresh<K: Resource<DynamicType = ()> + 'static> {
    kind: &'static str,
    versions: Store<PartialObjectMeta<K>>,
    bodies: Mutex<Bodies<K>>,
    client: Client,
    metrics: Arc<Metrics>,
}

struct Bodies<K: Resource<DynamicType = ()>> {
    by_key: HashMap<ObjectRef<K>, Arc<K>>,
    /// At this many bodies, those of objects that no longer exist are dropped.
    sweep_at: usize,
}

impl<K: Resource<DynamicType = ()>> Default for Bodies<K> {
    fn default() -> Self {
        Self {
            by_key: HashMap::new(),
            sweep_at: SWEEP_AT,
        }
    }
}

const SWEEP_AT: usize = 256;

/// The Deployment and Service bodies a stage reads, checked against `index`'s versions.
pub fn for_index(
    index: &crate::index::Index,
    client: &Client,
    metrics: &Arc<Metrics>,
) -> (Fresh<Deployment>, Fresh<Service>) {
    let (client, metrics) = (client.clone(), metrics.clone());
    let deployments = index.deployments.clone();
    (
        Fresh::new("deployment", deployments, client.clone(), metrics.clone()),
        Fresh::new("service", index.services.clone(), client, metrics),
    )
}

impl<K> Fresh<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + 'static,
{
    /// Bodies of `K` checked against the versions in `versions`; `kind` labels the reads.
    pub fn new(
        kind: &'static str,
        versions: Store<PartialObjectMeta<K>>,
        client: Client,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            kind,
            versions,
            bodies: Mutex::default(),
            client,
            metrics,
        }
    }

    /// The object as the apiserver holds it now (as far as the watch has told).
    pub async fn get(&self, namespace: &str, name: &str) -> Result<Option<Arc<K>>, kube::Error> {
        let key = ObjectRef::<K>::new(name).within(namespace);
        let current = self
            .versions
            .get(&ObjectRef::new(name).within(namespace))
            .and_then(|m| m.metadata.resource_version.clone());
        let kept = self.lock().by_key.get(&key).cloned();
        if let Some(body) =
            kept.filter(|b| current.is_some() && b.meta().resource_version == current)
        {
            self.metrics.cache_read(self.kind, "current");
            return Ok(Some(body));
        }
        self.metrics.cache_read(self.kind, "read");
        let api = Api::<K>::namespaced(self.client.clone(), namespace);
        let fresh = api.get_opt(name).await?.map(|mut o| {
            o.meta_mut().managed_fields = None;
            Arc::new(o)
        });
        match &fresh {
            Some(body) => self.keep(key, body.clone()),
            None => drop(self.lock().by_key.remove(&key)),
        };
        Ok(fresh)
    }

    /// The object as the operator's own write left it.
    pub fn wrote(&self, mut object: K) {
        object.meta_mut().managed_fields = None;
        self.keep(ObjectRef::from_obj(&object), Arc::new(object));
    }

    /// Keeps a body; every so often, drops those of objects the watch no longer holds.
    fn keep(&self, key: ObjectRef<K>, body: Arc<K>) {
        let mut bodies = self.lock();
        bodies.by_key.insert(key, body);
        if bodies.by_key.len() >= bodies.sweep_at {
            let exists = |k: &ObjectRef<K>| {
                let name = ObjectRef::new(&k.name);
                let key = name.within(k.namespace.as_deref().unwrap_or_default());
                self.versions.get(&key).is_some()
            };
            bodies.by_key.retain(|k, _| exists(k));
            bodies.sweep_at = (bodies.by_key.len() * 2).max(SWEEP_AT);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bodies<K>> {
        self.bodies.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::{Request, Response};
    use kube::client::Body;
    use kube::runtime::{reflector, watcher};

    use super::*;

    fn deployment(version: &str) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web-primary", "namespace": "shop", "resourceVersion": version},
        }))
        .unwrap()
    }

    /// An apiserver that answers every GET with the Deployment at `version`, counting them.
    fn apiserver(version: &'static str, gets: Arc<AtomicUsize>) -> Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        tokio::spawn(async move {
            while let Some((_, respond)) = handle.next_request().await {
                gets.fetch_add(1, Ordering::SeqCst);
                let body = serde_json::to_vec(&deployment(version)).unwrap();
                respond.send_response(Response::new(Body::from(body)));
            }
        });
        Client::new(service, "shop")
    }

    #[tokio::test]
    async fn a_body_is_read_again_only_once_the_watch_shows_a_newer_version() {
        let gets = Arc::new(AtomicUsize::new(0));
        let (versions, mut watch) = reflector::store::<PartialObjectMeta<Deployment>>();
        let fresh = Fresh::new(
            "deployment",
            versions,
            apiserver("6", gets.clone()),
            Metrics::new(),
        );
        let seen = |v: &str| {
            let meta = PartialObjectMeta::<Deployment> {
                metadata: deployment(v).metadata,
                ..Default::default()
            };
            watcher::Event::Apply(meta)
        };
        watch.apply_watcher_event(&seen("5"));
        fresh.wrote(deployment("5"));
        let read = fresh.get("shop", "web-primary").await.unwrap().unwrap();
        assert_eq!(read.metadata.resource_version.as_deref(), Some("5"));
        assert_eq!(
            gets.load(Ordering::SeqCst),
            0,
            "the body written is current"
        );
        watch.apply_watcher_event(&seen("6"));
        let read = fresh.get("shop", "web-primary").await.unwrap().unwrap();
        assert_eq!(read.metadata.resource_version.as_deref(), Some("6"));
        assert_eq!(gets.load(Ordering::SeqCst), 1, "changed since: read once");
        fresh.get("shop", "web-primary").await.unwrap();
        assert_eq!(gets.load(Ordering::SeqCst), 1, "and then current again");
        fresh.wrote(deployment("7"));
        fresh.get("shop", "web-primary").await.unwrap();
        assert_eq!(
            gets.load(Ordering::SeqCst),
            2,
            "a version the watch has not shown yet is not trusted"
        );
    }
}
