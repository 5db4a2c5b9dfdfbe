//! The names of each pipeline's Releases, kept from the Release watch's events, so that a
//! stage's pass finds its pipeline's releases without going through every Release held: at
//! 10,000 Releases that was a copy of the whole store on each of hundreds of thousands of
//! passes. A relist builds the names afresh and takes their place when it is done, as the
//! store does.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use kube::ResourceExt;
use kube::runtime::watcher;

use crate::api::Release;

type Names = HashMap<(String, String), BTreeSet<String>>;

#[derive(Default)]
pub struct Pipelines {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    names: Names,
    /// Built during a relist; it replaces `names` once the relist is done.
    relisting: Option<Names>,
}

fn key(release: &Release) -> (String, String) {
    (
        release.namespace().unwrap_or_default(),
        release.spec.pipeline.clone(),
    )
}

impl Pipelines {
    /// Takes one event of the Release watch.
    pub fn follow(&self, event: &watcher::Event<Release>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            watcher::Event::Apply(r) => {
                let names = state.names.entry(key(r)).or_default();
                names.insert(r.name_any());
            }
            watcher::Event::Delete(r) => {
                let key = key(r);
                if let Some(names) = state.names.get_mut(&key) {
                    names.remove(&r.name_any());
                    if names.is_empty() {
                        state.names.remove(&key);
                    }
                }
            }
            watcher::Event::Init => state.relisting = Some(Names::new()),
            watcher::Event::InitApply(r) => {
                let relisting = state.relisting.get_or_insert_with(Names::new);
                relisting.entry(key(r)).or_default().insert(r.name_any());
            }
            watcher::Event::InitDone => {
                if let Some(names) = state.relisting.take() {
                    state.names = names;
                }
            }
        }
    }

    /// The names of the Releases of one pipeline. A name can outlive a Release whose
    /// pipeline was edited (possible only with the admission webhooks off): the reader checks
    /// each against the store.
    pub fn names(&self, namespace: &str, pipeline: &str) -> Vec<String> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let key = (namespace.to_string(), pipeline.to_string());
        state
            .names
            .get(&key)
            .map(|n| n.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(name: &str, pipeline: &str) -> Release {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"pipeline": pipeline, "version": "1", "artifacts": []},
        }))
        .unwrap()
    }

    #[test]
    fn releases_are_found_by_pipeline_and_a_deleted_one_is_not() {
        let pipelines = Pipelines::default();
        for (name, pipeline) in [("a", "web"), ("b", "web"), ("c", "api")] {
            pipelines.follow(&watcher::Event::Apply(release(name, pipeline)));
        }
        assert_eq!(pipelines.names("shop", "web"), ["a", "b"]);
        pipelines.follow(&watcher::Event::Delete(release("a", "web")));
        assert_eq!(pipelines.names("shop", "web"), ["b"]);
        assert_eq!(pipelines.names("shop", "api"), ["c"]);
        assert!(pipelines.names("other", "web").is_empty());
    }

    #[test]
    fn a_relist_replaces_the_names_once_it_is_done() {
        let pipelines = Pipelines::default();
        pipelines.follow(&watcher::Event::Apply(release("gone", "web")));
        pipelines.follow(&watcher::Event::Init);
        pipelines.follow(&watcher::Event::InitApply(release("kept", "web")));
        assert_eq!(
            pipelines.names("shop", "web"),
            ["gone"],
            "until the relist is done, the names are those the store still holds"
        );
        pipelines.follow(&watcher::Event::InitDone);
        assert_eq!(pipelines.names("shop", "web"), ["kept"]);
    }
}
