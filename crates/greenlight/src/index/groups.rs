//! Names of objects grouped by what a stage's pass looks them up by (each pipeline's
//! Releases, each stage's Approvals and StageCommands), kept from the watch's events, so a
//! pass finds its own without going through every object held: at 10,000 Releases that was a
//! copy of the whole store on each of hundreds of thousands of passes, and Approvals and
//! commands only grow. A relist builds the names afresh and takes their place when it is done,
//! as the store does.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use kube::ResourceExt;
use kube::runtime::watcher;

use crate::api::{Approval, Release, StageCommand};

type Names = HashMap<(String, String), BTreeSet<String>>;

/// The names of objects of kind `K`, by namespace and group.
pub struct Groups<K> {
    state: Mutex<State>,
    group: fn(&K) -> String,
}

/// Releases by pipeline.
pub type Pipelines = Groups<Release>;
/// Approvals by stage.
pub type ApprovalsByStage = Groups<Approval>;
/// StageCommands by stage.
pub type CommandsByStage = Groups<StageCommand>;

impl Default for Pipelines {
    fn default() -> Self {
        Self::by(|r| r.spec.pipeline.clone())
    }
}

impl Default for ApprovalsByStage {
    fn default() -> Self {
        Self::by(|a| a.spec.stage.clone())
    }
}

impl Default for CommandsByStage {
    fn default() -> Self {
        Self::by(|c| c.spec.stage.clone())
    }
}

#[derive(Default)]
struct State {
    names: Names,
    /// Built during a relist; it replaces `names` once the relist is done.
    relisting: Option<Names>,
}

impl<K: ResourceExt> Groups<K> {
    fn by(group: fn(&K) -> String) -> Self {
        Self {
            state: Mutex::default(),
            group,
        }
    }

    fn key(&self, object: &K) -> (String, String) {
        (object.namespace().unwrap_or_default(), (self.group)(object))
    }

    /// Takes one event of the watch.
    pub fn follow(&self, event: &watcher::Event<K>) {
        let key = |o: &K| self.key(o);
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

    /// The names of one group. A name can outlive an object whose group was edited (possible
    /// only with the admission webhooks off): the reader checks each against the store.
    pub fn names(&self, namespace: &str, group: &str) -> Vec<String> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let key = (namespace.to_string(), group.to_string());
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
