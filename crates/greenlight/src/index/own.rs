//! Read-your-writes over the watched stores. A decision must build on the operator's own last
//! write, and the watch may not have brought that write yet. Each write's result is held
//! here, by its resourceVersion, until the watch applies that version to the store; a read in
//! between gets the write. A write whose version the watch already applied (its answer can
//! come back after the watch event) is not held. A write the watch has not brought within
//! [`PATIENCE`], or that a relist may have stepped over, is trusted neither way: the reader
//! asks the apiserver.
//!
//! A Release is written by every stage of its pipeline at once, so for Releases what is held
//! is each stage's own entry ([`OwnEntries`]): only that stage writes it, so its last write
//! is well defined.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::api::release::{Release, ReleaseStageStatus};

/// How long a write may wait for the watch before the apiserver is asked instead.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// How many applied versions are remembered, to tell a late answer from a new write: far
/// more than a watch applies between a write and its answer.
const REMEMBERED: usize = 4096;

/// What a read found.
#[derive(Debug, PartialEq)]
pub enum Read<T> {
    /// What it is now, or `None` when there is none.
    Known(Option<T>),
    /// Only the apiserver can tell.
    Unknown,
}

/// One write held until the watch brings it.
struct Held<T> {
    value: T,
    version: String,
    uid: Option<String>,
    at: Instant,
    /// A relist came between: the watch may never bring this version.
    doubtful: bool,
}

impl<T> Held<T> {
    fn trusted(&self) -> bool {
        !self.doubtful && self.at.elapsed() < PATIENCE
    }
}

/// The versions the watch applied lately, oldest first.
#[derive(Default)]
struct Applied {
    order: VecDeque<(String, String)>,
    set: HashSet<(String, String)>,
}

impl Applied {
    fn insert(&mut self, key: String, version: String) {
        if self.set.insert((key.clone(), version.clone())) {
            self.order.push_back((key, version));
        }
        while self.order.len() > REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    fn contains(&self, key: &str, version: &str) -> bool {
        self.set.contains(&(key.to_string(), version.to_string()))
    }
}

fn key_of<K: Resource<DynamicType = ()>>(key: &ObjectRef<K>) -> String {
    format!(
        "{}/{}",
        key.namespace.as_deref().unwrap_or_default(),
        key.name
    )
}

fn version_of<K: Resource>(object: &K) -> Option<String> {
    object.meta().resource_version.clone()
}

/// What the watch of `K` tells a holder of the operator's writes.
pub trait Follows<K: Resource<DynamicType = ()>>: Send + Sync + 'static {
    fn seen(&self, object: &K);
    fn forget(&self, key: &ObjectRef<K>);
    fn relisted(&self);
}

/// The hook that keeps `own` in step with the watch: called once the store has taken each
/// event, so a held write is dropped only when the store can answer for it.
pub fn following<K, O>(own: Arc<O>) -> impl Fn(&watcher::Event<K>) + Send + 'static
where
    K: Resource<DynamicType = ()>,
    O: Follows<K>,
{
    move |event| match event {
        watcher::Event::Apply(object) => own.seen(object),
        watcher::Event::Delete(object) => own.forget(&ObjectRef::from_obj(object)),
        watcher::Event::InitDone => own.relisted(),
        watcher::Event::Init | watcher::Event::InitApply(_) => {}
    }
}

/// Objects held, by key.
type Objects<K> = HashMap<ObjectRef<K>, Held<Arc<K>>>;

/// The operator's own writes of whole objects (Stages).
pub struct OwnWrites<K: Resource<DynamicType = ()>> {
    state: Mutex<(Objects<K>, Applied)>,
}

impl<K: Resource<DynamicType = ()>> Default for OwnWrites<K> {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
        }
    }
}

impl<K: Resource<DynamicType = ()> + Clone> OwnWrites<K> {
    /// The object as a write of the operator's (or a read from the apiserver) left it.
    pub fn wrote(&self, object: K) {
        let (Some(version), key) = (version_of(&object), ObjectRef::from_obj(&object)) else {
            return;
        };
        let mut state = self.lock();
        if state.1.contains(&key_of(&key), &version) {
            // The store holds this version already, or a later one.
            state.0.remove(&key);
            return;
        }
        let held = Held {
            uid: object.meta().uid.clone(),
            value: Arc::new(object),
            version,
            at: Instant::now(),
            doubtful: false,
        };
        state.0.insert(key, held);
    }

    /// The object under `key`, given what the store `held`.
    pub fn read(&self, key: &ObjectRef<K>, held: Option<Arc<K>>) -> Read<Arc<K>> {
        let mut state = self.lock();
        let Some(mine) = state.0.get(key) else {
            return Read::Known(held);
        };
        let Some(current) = held.as_deref() else {
            // Nothing the operator writes is created by that write: it was deleted.
            state.0.remove(key);
            return Read::Known(None);
        };
        let same = version_of(current).as_ref() == Some(&mine.version);
        if same || current.meta().uid != mine.uid {
            state.0.remove(key);
            return Read::Known(held);
        }
        // The watch brings versions in order, so until it brings this one it is the latest.
        match mine.trusted() {
            true => Read::Known(Some(mine.value.clone())),
            false => Read::Unknown,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Objects<K>, Applied)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static> Follows<K> for OwnWrites<K> {
    /// The store now holds `object`.
    fn seen(&self, object: &K) {
        let (key, version) = (ObjectRef::from_obj(object), version_of(object));
        let mut state = self.lock();
        if let Some(version) = version {
            state.1.insert(key_of(&key), version.clone());
            if state.0.get(&key).is_some_and(|h| h.version == version) {
                state.0.remove(&key);
            }
        }
    }

    /// The object is gone.
    fn forget(&self, key: &ObjectRef<K>) {
        self.lock().0.remove(key);
    }

    /// The watch listed everything again: it may have stepped over a written version.
    fn relisted(&self) {
        self.lock().0.values_mut().for_each(|w| w.doubtful = true);
    }
}

/// Each Release's entries the operator wrote, by stage.
/// Each stage's last entry by release; `None` where the apiserver showed none.
type Entries = HashMap<ObjectRef<Release>, HashMap<String, Held<Option<ReleaseStageStatus>>>>;

/// The entries the operator wrote into Releases' status.
#[derive(Default)]
pub struct OwnEntries {
    state: Mutex<(Entries, Applied)>,
}

impl OwnEntries {
    /// `stage` wrote `entry` (or read it from the apiserver: `None` when there was none), and
    /// the write left `release`.
    pub fn wrote(&self, release: &Release, stage: &str, entry: Option<ReleaseStageStatus>) {
        let (Some(version), key) = (version_of(release), ObjectRef::from_obj(release)) else {
            return;
        };
        let mut state = self.lock();
        if state.1.contains(&key_of(&key), &version) {
            if let Some(stages) = state.0.get_mut(&key) {
                stages.remove(stage);
            }
            return;
        }
        let held = Held {
            value: entry,
            version,
            uid: release.metadata.uid.clone(),
            at: Instant::now(),
            doubtful: false,
        };
        state.0.entry(key).or_default().insert(stage.into(), held);
    }

    /// `stage`'s entry in the store's `release`: the operator's last write of it while the
    /// store has not caught up.
    pub fn entry(&self, release: &Release, stage: &str) -> Read<ReleaseStageStatus> {
        let held = release.status.as_ref().and_then(|s| s.stages.get(stage));
        let key = ObjectRef::from_obj(release);
        let mut state = self.lock();
        let Some(mine) = state.0.get(&key).and_then(|stages| stages.get(stage)) else {
            return Read::Known(held.cloned());
        };
        let same = version_of(release).as_ref() == Some(&mine.version);
        if same || release.metadata.uid != mine.uid {
            if let Some(stages) = state.0.get_mut(&key) {
                stages.remove(stage);
            }
            return Read::Known(held.cloned());
        }
        match mine.trusted() {
            true => Read::Known(mine.value.clone()),
            false => Read::Unknown,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Entries, Applied)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Follows<Release> for OwnEntries {
    fn seen(&self, release: &Release) {
        let (key, Some(version)) = (ObjectRef::from_obj(release), version_of(release)) else {
            return;
        };
        let mut state = self.lock();
        state.1.insert(key_of(&key), version.clone());
        if let Some(stages) = state.0.get_mut(&key) {
            stages.retain(|_, held| held.version != version);
            if stages.is_empty() {
                state.0.remove(&key);
            }
        }
    }

    fn forget(&self, key: &ObjectRef<Release>) {
        self.lock().0.remove(key);
    }

    fn relisted(&self) {
        let mut state = self.lock();
        let all = state.0.values_mut().flat_map(|stages| stages.values_mut());
        all.for_each(|held| held.doubtful = true);
    }
}

#[cfg(test)]
#[path = "own_tests.rs"]
mod tests;
