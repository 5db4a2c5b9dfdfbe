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
    /// Why a kind cannot be watched (forbidden, unreachable), until it can again.
    errors: Arc<Mutex<BTreeMap<&'static str, String>>>,
    _tasks: Arc<Tasks>,
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
        let errors = Arc::new(Mutex::new(BTreeMap::new()));
        let (stages, a) = follow::<Stage>("stages", client, namespace, &bump, &errors);
        let (releases, b) = follow::<Release>("releases", client, namespace, &bump, &errors);
        let (gates, c) = follow::<Gate>("gates", client, namespace, &bump, &errors);
        Store {
            stages,
            releases,
            gates,
            revision,
            errors,
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
        let errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        errors.iter().map(|(k, e)| format!("{k}: {e}")).collect()
    }

    /// Waits until each kind has been listed once, at most `within`: a kind the user may
    /// not list never is, and its error says so.
    pub async fn ready(&self, within: std::time::Duration) {
        let listed = async {
            let _ = self.stages.wait_until_ready().await;
            let _ = self.releases.wait_until_ready().await;
            let _ = self.gates.wait_until_ready().await;
        };
        let _ = tokio::time::timeout(within, listed).await;
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

/// One kind's reflector, and the task that feeds it.
fn follow<K>(
    kind: &'static str,
    client: &Client,
    namespace: &str,
    bump: &Arc<watch::Sender<u64>>,
    errors: &Arc<Mutex<BTreeMap<&'static str, String>>>,
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
    let (bump, errors) = (bump.clone(), errors.clone());
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            let mut errors = errors.lock().unwrap_or_else(|e| e.into_inner());
            match event {
                Ok(_) => errors.remove(kind),
                Err(e) => errors.insert(kind, e.to_string()),
            };
            drop(errors);
            bump.send_modify(|r| *r += 1);
        }
    });
    (reader, task)
}
