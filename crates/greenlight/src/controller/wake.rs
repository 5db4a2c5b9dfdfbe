//! Which Stages a change of a Release, or of another Stage, concerns. A stage's decision
//! reads, of each Release of its pipeline, the release's spec and validity, its own entry and
//! the entries of the stages it requires; of the other Stages, the specs of those in its
//! pipeline (the DAG) or on its target (which stage owns it).
//! A transition writes a Release three times (the audit trail, the entry, the summary) and
//! its Stage once, and each write used to wake every stage of the pipeline, so most stage
//! passes decided nothing. Here the print of each watched object (what the stages read of
//! it) is kept, and a change wakes only the stages whose reading of it changed.

use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use super::refs_of;
use crate::api::{Release, Stage};
use crate::index::Index;
use crate::index::changes::Indexed;

/// How many changes pass between sweeps of the prints of objects no longer held (a deletion
/// a lagging subscriber never saw).
const SWEEP_EVERY: usize = 4096;

/// What the stages read of a Release.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleasePrint {
    /// Identity, spec generation and deletion: a change here concerns every stage.
    base: u64,
    pipeline: String,
    /// Each stage's entry, hashed, by stage name (sorted).
    entries: Vec<(String, u64)>,
}

/// What the other stages of its pipeline, and those on its target, read of a Stage.
#[derive(Debug, Clone, PartialEq)]
pub struct StagePrint {
    base: u64,
    pipeline: String,
    target: String,
}

pub fn release_print(release: &Release) -> ReleasePrint {
    let entries = release.status.as_ref().map(|s| &s.stages);
    let entries = entries.into_iter().flatten().map(|(stage, entry)| {
        let shown = serde_json::to_vec(entry).unwrap_or_default();
        (stage.clone(), hash(&shown))
    });
    ReleasePrint {
        base: identity(release.meta()),
        pipeline: release.spec.pipeline.clone(),
        entries: entries.collect(),
    }
}

pub fn stage_print(stage: &Stage) -> StagePrint {
    StagePrint {
        base: identity(stage.meta()),
        pipeline: stage.spec.pipeline.clone(),
        target: stage.spec.target.name.clone(),
    }
}

fn identity(meta: &kube::core::ObjectMeta) -> u64 {
    let deleting = meta.deletion_timestamp.is_some();
    hash(&(&meta.uid, meta.generation, deleting))
}

fn hash(value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The stages a Release's change from `before` to `after` (`None`: unseen, or gone)
/// concerns, given the pipeline the changed object names and the stages of a pipeline.
pub fn concerned_by_release(
    before: Option<&ReleasePrint>,
    after: Option<&ReleasePrint>,
    named: &str,
    stages_of: impl Fn(&str) -> Vec<Arc<Stage>>,
) -> Vec<Arc<Stage>> {
    match (before, after) {
        (Some(b), Some(a)) if b.base == a.base && b.pipeline == a.pipeline => {
            let changed = changed_entries(&b.entries, &a.entries);
            if changed.is_empty() {
                return vec![];
            }
            let reads = |s: &Stage| {
                changed.contains(s.name_any().as_str())
                    || s.spec.requires.iter().any(|r| changed.contains(r.as_str()))
            };
            stages_of(&a.pipeline)
                .into_iter()
                .filter(|s| reads(s))
                .collect()
        }
        _ => pipelines_of(
            before.map(|p| &p.pipeline),
            after.map(|p| &p.pipeline),
            named,
            stages_of,
        ),
    }
}

/// The stages a Stage's change concerns, besides itself, when its identity, spec or
/// pipeline changed (none for its status): every stage of its pipeline and of the one it left
/// (their DAG), and every stage on its target, then or now (which of them owns it).
/// `named` is the print of the object as the change carried it.
pub fn concerned_by_stage(
    before: Option<&StagePrint>,
    after: Option<&StagePrint>,
    named: &StagePrint,
    around: &impl Neighbours,
) -> Vec<Arc<Stage>> {
    if let (Some(b), Some(a)) = (before, after)
        && b == a
    {
        return vec![];
    }
    let prints = [before, after, Some(named)];
    let pipeline = |p: &StagePrint| p.pipeline.clone();
    let target = |p: &StagePrint| p.target.clone();
    let pipelines: BTreeSet<String> = prints.iter().flatten().map(|p| pipeline(p)).collect();
    let targets: BTreeSet<String> = prints.iter().flatten().map(|p| target(p)).collect();
    let mut woken: Vec<Arc<Stage>> = pipelines
        .iter()
        .flat_map(|p| around.of_pipeline(p))
        .collect();
    woken.extend(targets.iter().flat_map(|t| around.on_target(t)));
    woken
}

/// The stages around a changed Stage.
pub trait Neighbours {
    fn of_pipeline(&self, pipeline: &str) -> Vec<Arc<Stage>>;
    fn on_target(&self, target: &str) -> Vec<Arc<Stage>>;
}

/// Every stage of the pipelines named before, after and by the object itself.
fn pipelines_of(
    before: Option<&String>,
    after: Option<&String>,
    named: &str,
    stages_of: impl Fn(&str) -> Vec<Arc<Stage>>,
) -> Vec<Arc<Stage>> {
    let mut pipelines: BTreeSet<&str> = [before, after]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    pipelines.insert(named);
    pipelines.into_iter().flat_map(stages_of).collect()
}

/// The stages whose entry was added, changed or removed.
fn changed_entries<'a>(
    before: &'a [(String, u64)],
    after: &'a [(String, u64)],
) -> BTreeSet<&'a str> {
    let old: HashMap<&str, u64> = before.iter().map(|(s, h)| (s.as_str(), *h)).collect();
    let new: HashMap<&str, u64> = after.iter().map(|(s, h)| (s.as_str(), *h)).collect();
    let added_or_changed = new.iter().filter(|(s, h)| old.get(*s) != Some(*h));
    let removed = old.keys().filter(|s| !new.contains_key(*s));
    added_or_changed
        .map(|(s, _)| *s)
        .chain(removed.copied())
        .collect()
}

/// The last print of each object seen, by key.
struct Prints<K: Resource<DynamicType = ()> + 'static, P> {
    seen: Mutex<Seen<K, P>>,
    store: Store<K>,
    /// How many times a subscriber fell behind ([`Index::lagged`]).
    lagged: Box<dyn Fn() -> u64 + Send + Sync>,
}

struct Seen<K: Resource<DynamicType = ()>, P> {
    by_key: HashMap<ObjectRef<K>, P>,
    /// Changes since the last sweep.
    changes: usize,
    /// The index's count of lagging subscribers at the last sweep.
    lagged: u64,
}

/// What one change did: the print before and after (`None`: unseen, or gone), and the
/// prints of objects a sweep found gone.
struct Swapped<K: Resource<DynamicType = ()>, P> {
    before: Option<P>,
    after: Option<P>,
    gone: Vec<(ObjectRef<K>, P)>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static, P: Clone> Prints<K, P> {
    fn new(store: Store<K>, lagged: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        let seen = Seen {
            by_key: HashMap::new(),
            changes: 0,
            lagged: lagged(),
        };
        Self {
            seen: Mutex::new(seen),
            store,
            lagged: Box::new(lagged),
        }
    }

    /// The prints of the index's `K`s.
    fn of(index: &Arc<Index>) -> Self
    where
        K: Indexed,
    {
        let lags = index.clone();
        Self::new(K::store(index).clone(), move || lags.lagged())
    }

    /// Records `object`'s print (none once the store no longer holds it). Every so often,
    /// and whenever a subscriber fell behind (its deletions unseen), drops the prints of
    /// objects the store no longer holds and hands them back, so their stages are woken.
    fn swap(&self, object: &K, print: impl Fn(&K) -> P) -> Swapped<K, P> {
        let key = ObjectRef::from_obj(object);
        let store = &self.store;
        let after = store.get(&key).map(|o| print(&o));
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let before = match &after {
            Some(p) => seen.by_key.insert(key, p.clone()),
            None => seen.by_key.remove(&key),
        };
        seen.changes += 1;
        let lagged = (self.lagged)();
        let mut gone = Vec::new();
        if seen.changes >= SWEEP_EVERY || lagged != seen.lagged {
            (seen.changes, seen.lagged) = (0, lagged);
            seen.by_key.retain(|k, p| {
                let held = store.get(k).is_some();
                if !held {
                    gone.push((k.clone(), p.clone()));
                }
                held
            });
        }
        Swapped {
            before,
            after,
            gone,
        }
    }
}

/// The Release watch's mapper for the stage controller.
pub fn on_release(index: Arc<Index>) -> impl Fn(&Release) -> Vec<ObjectRef<Stage>> + Send {
    let prints = Prints::of(&index);
    move |release| {
        let swapped = prints.swap(release, release_print);
        let index = &index;
        let stages_in = |ns: Option<&str>| {
            let ns = ns.unwrap_or_default().to_string();
            move |p: &str| index.pipeline_stages(&ns, p)
        };
        let (before, after) = (swapped.before.as_ref(), swapped.after.as_ref());
        let named = &release.spec.pipeline;
        let namespace = release.namespace();
        let mut woken = concerned_by_release(before, after, named, stages_in(namespace.as_deref()));
        for (key, p) in &swapped.gone {
            let stages_of = stages_in(key.namespace.as_deref());
            woken.extend(concerned_by_release(Some(p), None, &p.pipeline, stages_of));
        }
        refs_of(woken)
    }
}

/// The Stage watch's mapper for the other stages of its pipeline and of its target (each
/// stage is woken by its own changes anyway).
pub fn on_stage(index: Arc<Index>) -> impl Fn(&Stage) -> Vec<ObjectRef<Stage>> + Send {
    let prints = Prints::of(&index);
    move |stage| {
        let swapped = prints.swap(stage, stage_print);
        let around = |ns: Option<&str>| Around {
            namespace: ns.unwrap_or_default().to_string(),
            index: &index,
        };
        let (before, after) = (swapped.before.as_ref(), swapped.after.as_ref());
        let named = stage_print(stage);
        let namespace = stage.namespace();
        let mut woken = concerned_by_stage(before, after, &named, &around(namespace.as_deref()));
        for (key, p) in &swapped.gone {
            woken.extend(concerned_by_stage(
                Some(p),
                None,
                p,
                &around(key.namespace.as_deref()),
            ));
        }
        refs_of(woken)
    }
}

/// The stages of one namespace, by pipeline and by target.
pub struct Around<'a> {
    namespace: String,
    index: &'a Index,
}

impl Neighbours for Around<'_> {
    fn of_pipeline(&self, pipeline: &str) -> Vec<Arc<Stage>> {
        self.index.pipeline_stages(&self.namespace, pipeline)
    }

    fn on_target(&self, target: &str) -> Vec<Arc<Stage>> {
        self.index
            .stages_where(&self.namespace, |s| s.spec.target.name == target)
    }
}

#[cfg(test)]
#[path = "wake_tests.rs"]
mod tests;
