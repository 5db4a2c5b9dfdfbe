//! Read-your-writes over a watched store. A decision must build on the operator's own last
//! write of an object, and the watch may not have brought that write yet. Each write's result
//! is held here until the store holds that same version; a read in between gets the write.
//! A write the watch has not brought within [`PATIENCE`], or that a relist may have stepped
//! over, is trusted neither way: the reader asks the apiserver.
//!
//! A Release is written by every stage of its pipeline at once, so for Releases what is kept
//! is each stage's own entry ([`OwnEntries`]): only that stage writes it, so its last write
//! is well defined, and the store has caught up once it holds the same entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Resource;
use kube::runtime::reflector::ObjectRef;

use crate::api::release::ReleaseStageStatus;

/// How long a write may wait for the watch before the apiserver is asked instead.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// What a read found.
#[derive(Debug)]
pub enum Read<K> {
    /// The object as it is now, or `None` when it does not exist.
    Known(Option<Arc<K>>),
    /// Only the apiserver can tell.
    Unknown,
}

pub struct OwnWrites<K: Resource<DynamicType = ()>> {
    written: Mutex<HashMap<ObjectRef<K>, Written<K>>>,
}

struct Written<K> {
    object: Arc<K>,
    at: Instant,
    /// A relist came between: the watch may never bring this version.
    doubtful: bool,
}

impl<K: Resource<DynamicType = ()>> Default for OwnWrites<K> {
    fn default() -> Self {
        Self {
            written: Mutex::default(),
        }
    }
}

impl<K: Resource<DynamicType = ()> + Clone> OwnWrites<K> {
    /// The object as a write of the operator's (or a read from the apiserver) left it.
    pub fn wrote(&self, object: K) {
        let written = Written {
            at: Instant::now(),
            object: Arc::new(object),
            doubtful: false,
        };
        let key = ObjectRef::from_obj(&*written.object);
        self.lock().insert(key, written);
    }

    /// The store now holds `object`: a write of that version is no longer needed.
    pub fn seen(&self, object: &K) {
        let key = ObjectRef::from_obj(object);
        let mut written = self.lock();
        if written
            .get(&key)
            .is_some_and(|w| same_version(&*w.object, object))
        {
            written.remove(&key);
        }
    }

    /// The object is gone.
    pub fn forget(&self, key: &ObjectRef<K>) {
        self.lock().remove(key);
    }

    /// The watch listed everything again: it may have stepped over a written version.
    pub fn relisted(&self) {
        self.lock().values_mut().for_each(|w| w.doubtful = true);
    }

    /// The object under `key`, given what the store `held`.
    pub fn read(&self, key: &ObjectRef<K>, held: Option<Arc<K>>) -> Read<K> {
        let mut written = self.lock();
        let Some(mine) = written.get(key) else {
            return Read::Known(held);
        };
        if held
            .as_deref()
            .is_some_and(|h| same_version(h, &*mine.object))
        {
            written.remove(key);
            return Read::Known(held);
        }
        // The watch brings versions in order, so until it brings this one it is the latest.
        if !mine.doubtful && mine.at.elapsed() < PATIENCE {
            return Read::Known(Some(mine.object.clone()));
        }
        Read::Unknown
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<K>, Written<K>>> {
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Namespace, release and stage.
type EntryKey = (String, String, String);
type Entries = HashMap<EntryKey, (ReleaseStageStatus, Instant)>;

/// The entries the operator wrote into Releases' status, by namespace, release and stage.
#[derive(Default)]
pub struct OwnEntries {
    written: Mutex<Entries>,
}

/// Above this many entries waiting for the watch, those past [`PATIENCE`] are dropped.
const ENTRIES_KEPT: usize = 1024;

impl OwnEntries {
    pub fn wrote(&self, namespace: &str, release: &str, stage: &str, entry: ReleaseStageStatus) {
        let mut written = self.lock();
        if written.len() >= ENTRIES_KEPT {
            written.retain(|_, (_, at)| at.elapsed() < PATIENCE);
        }
        let key = (namespace.into(), release.into(), stage.into());
        written.insert(key, (entry, Instant::now()));
    }

    /// `stage`'s entry in `release`: the operator's last write of it while the store (which
    /// `held` this) has not caught up, else what the store holds.
    pub fn entry(
        &self,
        namespace: &str,
        release: &str,
        stage: &str,
        held: Option<&ReleaseStageStatus>,
    ) -> Option<ReleaseStageStatus> {
        let key = (
            namespace.to_string(),
            release.to_string(),
            stage.to_string(),
        );
        let mut written = self.lock();
        match written.get(&key) {
            Some((mine, at)) if Some(mine) != held && at.elapsed() < PATIENCE => Some(mine.clone()),
            Some(_) => {
                written.remove(&key);
                held.cloned()
            }
            None => held.cloned(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn same_version<K: Resource>(a: &K, b: &K) -> bool {
    a.meta().resource_version.is_some() && a.meta().resource_version == b.meta().resource_version
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Stage;

    fn stage(version: &str) -> Stage {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Stage",
            "metadata": {"name": "dev", "namespace": "shop", "resourceVersion": version},
            "spec": {"pipeline": "web", "target": {"name": "web"}}
        }))
        .unwrap()
    }

    fn version(read: Read<Stage>) -> Option<String> {
        match read {
            Read::Known(s) => s.and_then(|s| s.metadata.resource_version.clone()),
            Read::Unknown => Some("unknown".into()),
        }
    }

    #[test]
    fn a_write_is_read_back_until_the_store_holds_it_then_the_store_is() {
        let own = OwnWrites::default();
        let key = ObjectRef::from_obj(&stage("1"));
        assert_eq!(
            version(own.read(&key, Some(Arc::new(stage("1"))))),
            Some("1".into())
        );
        own.wrote(stage("2"));
        assert_eq!(
            version(own.read(&key, Some(Arc::new(stage("1"))))),
            Some("2".into()),
            "the store lags the write"
        );
        own.seen(&stage("2"));
        assert_eq!(
            version(own.read(&key, Some(Arc::new(stage("3"))))),
            Some("3".into()),
            "once the watch brought the write, a later change by someone else is read"
        );
    }

    #[test]
    fn a_write_the_store_already_holds_gives_way_to_the_store() {
        let own = OwnWrites::default();
        own.wrote(stage("2"));
        let key = ObjectRef::from_obj(&stage("2"));
        assert_eq!(
            version(own.read(&key, Some(Arc::new(stage("2"))))),
            Some("2".into())
        );
        assert_eq!(
            version(own.read(&key, Some(Arc::new(stage("3"))))),
            Some("3".into())
        );
    }

    #[test]
    fn a_stage_reads_its_own_entry_until_the_store_holds_it() {
        use crate::api::release::StagePhaseForRelease as Phase;
        let own = OwnEntries::default();
        let waiting = ReleaseStageStatus::new(Phase::Waiting);
        let failed = ReleaseStageStatus::new(Phase::Failed);
        assert_eq!(
            own.entry("shop", "r1", "dev", Some(&waiting)),
            Some(waiting.clone())
        );
        own.wrote("shop", "r1", "dev", failed.clone());
        assert_eq!(
            own.entry("shop", "r1", "dev", Some(&waiting)),
            Some(failed.clone()),
            "the store still holds the entry before the write"
        );
        assert_eq!(
            own.entry("shop", "r1", "prod", None),
            None,
            "other stages' entries are the store's"
        );
        assert_eq!(
            own.entry("shop", "r1", "dev", Some(&failed)),
            Some(failed.clone())
        );
        assert_eq!(
            own.entry("shop", "r1", "dev", Some(&waiting)),
            Some(waiting),
            "once the store caught up, a later change by someone else is read"
        );
    }

    #[test]
    fn after_a_relist_or_deletion_a_pending_write_is_not_trusted() {
        let own = OwnWrites::default();
        own.wrote(stage("2"));
        let key = ObjectRef::from_obj(&stage("2"));
        own.relisted();
        assert_eq!(
            version(own.read(&key, Some(Arc::new(stage("1"))))),
            Some("unknown".into())
        );
        own.wrote(stage("4"));
        own.forget(&key);
        assert_eq!(version(own.read(&key, None)), None);
    }
}
