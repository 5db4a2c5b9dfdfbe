//! Reads of the Deployments and Services a stage works with, as current as a GET without a
//! GET on every pass. The index's metadata watch says which version of each the apiserver
//! holds; the body read last (or returned by the operator's own write) is used while it is
//! that version, and read again only once its object has changed. A body whose version the
//! watch has not shown yet is read again too, so a decision never builds on a version older
//! than one the operator has seen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::core::{NamespaceResourceScope, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::metrics::Metrics;

pub struct Fresh<K: Resource<DynamicType = ()> + 'static> {
    kind: &'static str,
    versions: Store<PartialObjectMeta<K>>,
    bodies: Mutex<HashMap<ObjectRef<K>, Arc<K>>>,
    client: Client,
    metrics: Arc<Metrics>,
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
        let kept = self.lock().get(&key).cloned();
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
            Some(body) => self.lock().insert(key, body.clone()),
            None => self.lock().remove(&key),
        };
        Ok(fresh)
    }

    /// The object as the operator's own write left it.
    pub fn wrote(&self, mut object: K) {
        object.meta_mut().managed_fields = None;
        let key = ObjectRef::from_obj(&object);
        self.lock().insert(key, Arc::new(object));
    }

    /// Drops the bodies of objects that no longer exist.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.lock().remove(&ObjectRef::new(name).within(namespace));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<K>, Arc<K>>> {
        self.bodies.lock().unwrap_or_else(|e| e.into_inner())
    }
}
