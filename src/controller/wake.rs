//! Which Stages a change of a Release, or of another Stage, concerns. A stage's decision
//! reads, of each Release of its pipeline, the release's spec and validity, its own entry and
//! the entries of the stages it requires; of the other Stages of its pipeline, their specs.
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

/// What the other stages of its pipeline read of a Stage.
#[derive(Debug, Clone, PartialEq)]
pub struct StagePrint {
    base: u64,
    pipeline: String,
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

/// The stages a Stage's change concerns, besides itself: every stage of its pipeline (and of
/// the one it left) when its identity, spec or pipeline changed; none for its status.
pub fn concerned_by_stage(
    before: Option<&StagePrint>,
    after: Option<&StagePrint>,
    named: &str,
    stages_of: impl Fn(&str) -> Vec<Arc<Stage>>,
) -> Vec<Arc<Stage>> {
    match (before, after) {
        (Some(b), Some(a)) if b == a => vec![],
        _ => pipelines_of(
            before.map(|p| &p.pipeline),
            after.map(|p| &p.pipeline),
            named,
            stages_of,
        ),
    }
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

/// The last print of each held object.
struct Prints<K: Resource<DynamicType = ()> + 'static, P> {
    seen: Mutex<(HashMap<ObjectRef<K>, P>, usize)>,
    store: Store<K>,
}

impl<K, P> Prints<K, P>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn new(store: Store<K>) -> Self {
        Self {
            seen: Mutex::default(),
            store,
        }
    }

    /// Records `object`'s print (`None` once the store no longer holds it) and returns the
    /// one it had.
    fn swap(&self, object: &K, print: impl Fn(&K) -> P) -> (Option<P>, Option<P>)
    where
        P: Clone,
    {
        let key = ObjectRef::from_obj(object);
        let held = self.store.get(&key);
        let after = held.map(|o| print(&o));
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let (prints, changes) = &mut *seen;
        let before = match &after {
            Some(p) => prints.insert(key, p.clone()),
            None => prints.remove(&key),
        };
        *changes += 1;
        if *changes >= SWEEP_EVERY {
            *changes = 0;
            prints.retain(|k, _| self.store.get(k).is_some());
        }
        (before, after)
    }
}

/// The Release watch's mapper for the stage controller.
pub fn on_release(index: Arc<Index>) -> impl Fn(&Release) -> Vec<ObjectRef<Stage>> + Send {
    let prints = Prints::new(index.releases.clone());
    move |release| {
        let (before, after) = prints.swap(release, release_print);
        let ns = release.namespace().unwrap_or_default();
        let stages_of = |p: &str| index.pipeline_stages(&ns, p);
        let pipeline = &release.spec.pipeline;
        refs_of(concerned_by_release(
            before.as_ref(),
            after.as_ref(),
            pipeline,
            stages_of,
        ))
    }
}

/// The Stage watch's mapper for the other stages of its pipeline (each stage is woken by its
/// own changes anyway).
pub fn on_stage(index: Arc<Index>) -> impl Fn(&Stage) -> Vec<ObjectRef<Stage>> + Send {
    let prints = Prints::new(index.stages.clone());
    move |stage| {
        let (before, after) = prints.swap(stage, stage_print);
        let ns = stage.namespace().unwrap_or_default();
        let stages_of = |p: &str| index.pipeline_stages(&ns, p);
        let pipeline = &stage.spec.pipeline;
        refs_of(concerned_by_stage(
            before.as_ref(),
            after.as_ref(),
            pipeline,
            stages_of,
        ))
    }
}

#[cfg(test)]
#[path = "wake_tests.rs"]
mod tests;
