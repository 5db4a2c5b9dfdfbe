//! What the dashboard shows, kept current by watches made as its user: the Stages, Releases
//! and Gates of one namespace. Each change bumps a revision that the page's event stream
//! carries, so the page reads again only when something changed, and never polls the
//! apiserver.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::runtime::reflector::{self, Store as Reader};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use greenlight_api::{Gate, Release, Stage};

/// The watched objects of one namespace, as one user sees them.
#[derive(Clone)]
pub struct Store {
    pub stages: Reader<Stage>,
    pub releases: Reader<Release>,
    pub gates: Reader<Gate>,
    revision: watch::Receiver<u64>,
    /// Per kind: listed once, or why it cannot be watched (forbidden, unreachable).
    kinds: Arc<Mutex<BTreeMap<&'static str, Listing>>>,
    _tasks: Arc<Tasks>,
}

/// How far one kind's watch got.
#[derive(Clone, Debug, PartialEq)]
enum Listing {
    Listed,
    Failing(String),
}

/// The watch tasks, stopped when the last copy of the store goes (a session that ended).
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        self.0.iter().for_each(JoinHandle::abort);
    }
}

impl Store {
    /// Starts the watches in `namespace` as `client`'s user.
    pub fn watch(client: &Client, namespace: &str) -> Store {
        let (bump, revision) = watch::channel(0u64);
        let bump = Arc::new(bump);
        let kinds = Arc::new(Mutex::new(BTreeMap::new()));
        let (stages, a) = follow::<Stage>("stages", client, namespace, &bump, &kinds);
        let (releases, b) = follow::<Release>("releases", client, namespace, &bump, &kinds);
        let (gates, c) = follow::<Gate>("gates", client, namespace, &bump, &kinds);
        Store {
            stages,
            releases,
            gates,
            revision,
            kinds,
            _tasks: Arc::new(Tasks(vec![a, b, c])),
        }
    }

    /// A receiver that wakes at each change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.revision.clone()
    }

    pub fn revision(&self) -> u64 {
        *self.revision.borrow()
    }

    /// Why some kinds cannot be watched, e.g. `gates: forbidden ...`.
    pub fn errors(&self) -> Vec<String> {
        let kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let failing = kinds.iter().filter_map(|(k, l)| match l {
            Listing::Failing(e) => Some(format!("{k}: {e}")),
            Listing::Listed => None,
        });
        failing.collect()
    }

    /// Waits, at most `within`, until each kind has been listed once or has failed: a kind
    /// the user may not list never will be, and its error says so.
    pub async fn ready(&self, within: std::time::Duration) {
        let mut changes = self.changes();
        let settled = async {
            while self.kinds.lock().unwrap_or_else(|e| e.into_inner()).len() < 3 {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(within, settled).await;
    }

    pub fn stages(&self) -> Vec<Stage> {
        self.stages.state().iter().map(|s| (**s).clone()).collect()
    }

    pub fn releases(&self) -> Vec<Release> {
        self.releases
            .state()
            .iter()
            .map(|r| (**r).clone())
            .collect()
    }

    pub fn gates(&self) -> Vec<Gate> {
        self.gates.state().iter().map(|g| (**g).clone()).collect()
    }
}

/// One kind's reflector, and the task that feeds it. Each event bumps the revision, but a
/// failure already told (a watch retried while forbidden) does not.
fn follow<K>(
    kind: &'static str,
    client: &Client,
    namespace: &str,
    bump: &Arc<watch::Sender<u64>>,
    kinds: &Arc<Mutex<BTreeMap<&'static str, Listing>>>,
) -> (Reader<K>, JoinHandle<()>)
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let (bump, kinds) = (bump.clone(), kinds.clone());
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            let now = match event {
                // Listed once the first list is whole, not at its first object.
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
                Ok(_) => Listing::Listed,
                Err(e) => Listing::Failing(e.to_string()),
            };
            let before = kinds
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(kind, now.clone());
            if !matches!(now, Listing::Failing(_)) || before != Some(now) {
                bump.send_modify(|r| *r += 1);
            }
        }
    });
    (reader, task)
}
