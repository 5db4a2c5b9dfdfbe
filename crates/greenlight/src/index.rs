//! The one index of watched state: reflector stores of Stages, Releases, Gates, Approvals and
//! StageCommands, and of the metadata of Deployments and Services, fed by watch events,
//! answering the typed queries the controllers and the admission webhooks ask (a pipeline's
//! stages and releases, a release's approvals, who owns a target, which gates are missing or
//! invalid), and telling the controllers what changed ([`changes`]); they keep no watch of
//! these kinds of their own (the stage controller keeps the bodies of the Deployments and
//! Services it reads, checked against the versions here). Nothing here writes; the
//! operator's own Stage writes and release entries are laid over the store until the watch
//! brings them ([`own`]).

pub mod changes;
pub mod groups;
pub mod own;

use std::sync::Arc;

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::api::{Approval, Gate, GateType, Identity, Release, Stage, StageCommand};
use crate::gates::approval::{ApprovalPolicy, ApprovalRecord};
use crate::identity::{IdentityKey, Subject, Unverified};
use crate::validation::validate_release;

pub struct Index {
    pub stages: Store<Stage>,
    pub releases: Store<Release>,
    pub gates: Store<Gate>,
    pub approvals: Store<Approval>,
    pub commands: Store<StageCommand>,
    /// Every Deployment's and Service's name and version (not its body): which workload
    /// changed, for the stage triggers, and whether a body read before is still current.
    pub deployments: Store<PartialObjectMeta<Deployment>>,
    pub services: Store<PartialObjectMeta<Service>>,
    /// The Jobs Job gates started, and their pods' status (for a failed container's
    /// termination message); nothing else of the namespace's Jobs and pods.
    pub gate_jobs: Store<Job>,
    pub gate_job_pods: Store<Pod>,
    /// Checks the identity stamps of Releases and Approvals.
    pub identity: Arc<IdentityKey>,
    /// Each watch event's object, for the controllers.
    changes: Arc<changes::Changes>,
    /// The operator's own Stage writes the watch has not brought yet.
    pub own_stages: Arc<own::OwnWrites<Stage>>,
    /// The operator's own entries in Releases' status the watch has not brought yet.
    pub own_entries: Arc<own::OwnEntries>,
    /// The names of each pipeline's Releases.
    pipelines: Arc<groups::Pipelines>,
    approvals_by_stage: Arc<groups::ApprovalsByStage>,
    commands_by_stage: Arc<groups::CommandsByStage>,
}

/// What a scenario test's index holds.
#[cfg(test)]
#[derive(Default)]
pub struct Objects {
    pub stages: Vec<Stage>,
    pub releases: Vec<Release>,
    pub gates: Vec<Gate>,
    pub approvals: Vec<Approval>,
    pub commands: Vec<StageCommand>,
    pub deployments: Vec<PartialObjectMeta<Deployment>>,
}

/// The watches that keep an [`Index`] current; run them for as long as the index is used.
pub type IndexTasks = Vec<futures::future::BoxFuture<'static, ()>>;

impl Index {
    /// An index of `namespace` (all namespaces when `None`) and the watches that feed it.
    pub fn watch(
        client: &Client,
        namespace: &Option<String>,
        identity: Arc<IdentityKey>,
    ) -> (Arc<Index>, IndexTasks) {
        let changes = Arc::new(changes::Changes::default());
        let own_stages = Arc::new(own::OwnWrites::default());
        let own_entries = Arc::new(own::OwnEntries::default());
        let held = own::following(own_stages.clone());
        let (stages, s) = cache(watch::<Stage>(client, namespace), &changes, held);
        let pipelines = Arc::new(groups::Pipelines::default());
        let (held, by_pipeline) = (own::following(own_entries.clone()), pipelines.clone());
        let (releases, r) = cache(watch::<Release>(client, namespace), &changes, move |e| {
            held(e);
            by_pipeline.follow(e);
        });
        let (gates, g) = cache(watch::<Gate>(client, namespace), &changes, |_| {});
        let approvals_by_stage = Arc::new(groups::ApprovalsByStage::default());
        let by_stage = approvals_by_stage.clone();
        let (approvals, a) = cache(watch::<Approval>(client, namespace), &changes, move |e| {
            by_stage.follow(e)
        });
        let commands_by_stage = Arc::new(groups::CommandsByStage::default());
        let by_stage = commands_by_stage.clone();
        let (commands, c) = cache(
            watch::<StageCommand>(client, namespace),
            &changes,
            move |e| by_stage.follow(e),
        );
        let all = watcher::Config::default();
        let (deployments, d) = cache(
            names::<Deployment>(client, namespace, all),
            &changes,
            |_| {},
        );
        let managed = watcher::Config::default().labels(MANAGED);
        let (services, v) = cache(
            names::<Service>(client, namespace, managed),
            &changes,
            |_| {},
        );
        let (gate_jobs, gate_job_pods, jobs) = gate_jobs(client, namespace, &changes);
        let index = Index {
            stages,
            releases,
            gates,
            approvals,
            commands,
            deployments,
            services,
            gate_jobs,
            gate_job_pods,
            identity,
            changes,
            own_stages,
            own_entries,
            pipelines,
            approvals_by_stage,
            commands_by_stage,
        };
        let mut tasks = vec![s, r, g, a, c, d, v];
        tasks.extend(jobs);
        (Arc::new(index), tasks)
    }

    /// An index holding just these objects, fed by no watch (for scenario tests).
    #[cfg(test)]
    pub fn of(objects: Objects, identity: Arc<IdentityKey>) -> Arc<Index> {
        fn store<K>(objects: Vec<K>) -> Store<K>
        where
            K: Resource<DynamicType = ()>
                + Clone
                + DeserializeOwned
                + std::fmt::Debug
                + Send
                + Sync
                + 'static,
        {
            let (reader, mut writer) = reflector::store();
            for o in objects {
                writer.apply_watcher_event(&watcher::Event::Apply(o));
            }
            reader
        }
        let pipelines = Arc::new(groups::Pipelines::default());
        for r in &objects.releases {
            pipelines.follow(&watcher::Event::Apply(r.clone()));
        }
        let approvals_by_stage = Arc::new(groups::ApprovalsByStage::default());
        for a in &objects.approvals {
            approvals_by_stage.follow(&watcher::Event::Apply(a.clone()));
        }
        let commands_by_stage = Arc::new(groups::CommandsByStage::default());
        for c in &objects.commands {
            commands_by_stage.follow(&watcher::Event::Apply(c.clone()));
        }
        Arc::new(Index {
            stages: store(objects.stages),
            releases: store(objects.releases),
            gates: store(objects.gates),
            approvals: store(objects.approvals),
            commands: store(objects.commands),
            deployments: store(objects.deployments),
            services: store(Vec::new()),
            gate_jobs: store(Vec::new()),
            gate_job_pods: store(Vec::new()),
            identity,
            changes: Default::default(),
            own_stages: Default::default(),
            own_entries: Default::default(),
            pipelines,
            approvals_by_stage,
            commands_by_stage,
        })
    }

    /// Waits until every store holds a full list; false when a watch ended first.
    pub async fn wait_until_synced(&self) -> bool {
        self.stages.wait_until_ready().await.is_ok()
            && self.releases.wait_until_ready().await.is_ok()
            && self.gates.wait_until_ready().await.is_ok()
            && self.approvals.wait_until_ready().await.is_ok()
            && self.commands.wait_until_ready().await.is_ok()
            && self.deployments.wait_until_ready().await.is_ok()
            && self.services.wait_until_ready().await.is_ok()
            && self.gate_jobs.wait_until_ready().await.is_ok()
            && self.gate_job_pods.wait_until_ready().await.is_ok()
    }

    pub fn stage(&self, namespace: &str, name: &str) -> Option<Arc<Stage>> {
        self.stages.get(&ObjectRef::new(name).within(namespace))
    }

    /// The stage as the operator last wrote it or the watch last brought it, whichever is
    /// later; `Unknown` when only the apiserver can tell (see [`own::OwnWrites::read`]).
    pub fn stage_as_written(&self, namespace: &str, name: &str) -> own::Read<Arc<Stage>> {
        let key = ObjectRef::new(name).within(namespace);
        self.own_stages.read(&key, self.stages.get(&key))
    }

    pub fn release(&self, namespace: &str, name: &str) -> Option<Arc<Release>> {
        self.releases.get(&ObjectRef::new(name).within(namespace))
    }

    pub fn gate(&self, namespace: &str, name: &str) -> Option<Arc<Gate>> {
        self.gates.get(&ObjectRef::new(name).within(namespace))
    }

    /// A Job a Job gate started.
    pub fn gate_job(&self, namespace: &str, name: &str) -> Option<Arc<Job>> {
        self.gate_jobs.get(&ObjectRef::new(name).within(namespace))
    }

    /// The pods of a Job a Job gate started.
    pub fn gate_job_pods(&self, namespace: &str, job: &str) -> Vec<Arc<Pod>> {
        let label = crate::api::GATE_JOB_LABEL;
        self.gate_job_pods
            .state()
            .into_iter()
            .filter(|p| p.namespace().as_deref() == Some(namespace))
            .filter(|p| p.labels().get(label).map(String::as_str) == Some(job))
            .collect()
    }

    /// The Jobs the Job gates of a stage started.
    pub fn gate_jobs_of_stage(&self, namespace: &str, stage: &str) -> Vec<Arc<Job>> {
        let label = crate::api::STAGE_LABEL;
        self.gate_jobs
            .state()
            .into_iter()
            .filter(|j| j.namespace().as_deref() == Some(namespace))
            .filter(|j| j.labels().get(label).map(String::as_str) == Some(stage))
            .collect()
    }

    /// The versions of a stage's gate Jobs and their pods: it changes whenever one of them
    /// does, so a held gate verdict is not reused past it.
    pub fn gate_jobs_version(&self, namespace: &str, stage: &str) -> String {
        let mut versions: Vec<String> = Vec::new();
        for job in self.gate_jobs_of_stage(namespace, stage) {
            let name = job.name_any();
            versions.push(job.resource_version().unwrap_or_default());
            let pods = self.gate_job_pods(namespace, &name);
            versions.extend(
                pods.iter()
                    .map(|p| p.resource_version().unwrap_or_default()),
            );
        }
        versions.sort();
        let digest = greenlight_core::digest::digest(&versions);
        digest[..12].to_string()
    }

    /// Stages of one pipeline, by name.
    pub fn pipeline_stages(&self, namespace: &str, pipeline: &str) -> Vec<Arc<Stage>> {
        let mut stages = self.stages_where(namespace, |s| s.spec.pipeline == pipeline);
        stages.sort_by_key(|s| s.name_any());
        stages
    }

    /// Every Stage of a namespace for which `keep` holds.
    pub fn stages_where(&self, namespace: &str, keep: impl Fn(&Stage) -> bool) -> Vec<Arc<Stage>> {
        self.stages
            .state()
            .into_iter()
            .filter(|s| s.namespace().as_deref() == Some(namespace) && keep(s))
            .collect()
    }

    /// Releases other than `namespace/except`, in any namespace watched, that name `ticket`
    /// as their change ticket and that a `changeTicket` gate (of any name) passed at any
    /// stage: who went out under it.
    pub fn ticket_holders(&self, namespace: &str, ticket: &str, except: &str) -> Vec<String> {
        let passed = |r: &Release| {
            let ns = r.namespace().unwrap_or_default();
            let entries = r.status.iter().flat_map(|s| s.stages.values());
            let mut results = entries.flat_map(|e| e.gates.iter().chain(&e.checks));
            results.any(|g| {
                let ticket_gate = self
                    .gate(&ns, &g.name)
                    .is_some_and(|gate| gate.spec.gate_type == GateType::ChangeTicket);
                ticket_gate && g.result == crate::api::release::GateVerdict::Passed
            })
        };
        let other =
            |r: &Release| r.namespace().as_deref() != Some(namespace) || r.name_any() != except;
        let mut holders: Vec<String> = self
            .releases
            .state()
            .iter()
            .filter(|r| other(r) && r.spec.change_ticket.as_deref() == Some(ticket) && passed(r))
            .map(|r| format!("{}/{}", r.namespace().unwrap_or_default(), r.name_any()))
            .collect();
        holders.sort();
        holders
    }

    /// Releases of one pipeline, oldest first (creation time, then name).
    pub fn pipeline_releases(&self, namespace: &str, pipeline: &str) -> Vec<Arc<Release>> {
        let mut releases: Vec<Arc<Release>> = self
            .pipelines
            .names(namespace, pipeline)
            .iter()
            .filter_map(|name| self.release(namespace, name))
            .filter(|r| r.spec.pipeline == pipeline)
            .collect();
        oldest_first(&mut releases);
        releases
    }

    /// The stage that owns `stage`'s target when another, older stage names the same one: two
    /// stages on one target would fight over one `<target>-primary`.
    pub fn target_owner(&self, stage: &Stage) -> Option<Arc<Stage>> {
        let namespace = stage.namespace().unwrap_or_default();
        let created = |s: &Stage| {
            (
                s.metadata.creation_timestamp.as_ref().map(|t| t.0),
                s.name_any(),
            )
        };
        self.stages_where(&namespace, |s| {
            s.name_any() != stage.name_any()
                && s.spec.target.name == stage.spec.target.name
                && created(s) < created(stage)
        })
        .into_iter()
        .next()
    }

    /// The stage's valid approval gates with their policies, in the stage's order.
    pub fn approval_gates(
        &self,
        stage: &Stage,
        release_type: crate::api::release::ReleaseType,
    ) -> Vec<(String, ApprovalPolicy)> {
        let namespace = stage.namespace().unwrap_or_default();
        stage
            .spec
            .gates_for(release_type)
            .iter()
            .filter_map(|name| {
                let gate = self.gate(&namespace, name)?;
                if gate.spec.gate_type != GateType::Approval {
                    return None;
                }
                let policy = ApprovalPolicy::compile(gate.spec.approval.as_ref()?).ok()?;
                Some((name.clone(), policy))
            })
            .collect()
    }

    /// The release's creator, if its stamp checks out.
    pub fn release_author(&self, release: &Release) -> Result<String, Unverified> {
        let namespace = release.namespace().unwrap_or_default();
        self.identity
            .verify(
                &Subject::Release {
                    namespace: &namespace,
                    spec: &release.spec,
                },
                release.spec.created_by.as_ref(),
            )
            .map(|who| who.username.clone())
    }

    /// Who signed an Approval, if its stamp checks out.
    pub fn approver<'a>(&self, approval: &'a Approval) -> Result<&'a Identity, Unverified> {
        let namespace = approval.namespace().unwrap_or_default();
        self.identity.verify(
            &Subject::Approval {
                namespace: &namespace,
                spec: &approval.spec,
            },
            approval.spec.approver.as_ref(),
        )
    }

    /// The Approvals of `release` at `stage`, by name.
    pub fn approvals_of(&self, namespace: &str, release: &str, stage: &str) -> Vec<Arc<Approval>> {
        let mut approvals: Vec<Arc<Approval>> = self
            .approvals_by_stage
            .names(namespace, stage)
            .iter()
            .filter_map(|name| self.approvals.get(&ObjectRef::new(name).within(namespace)))
            .filter(|a| a.spec.release == release && a.spec.stage == stage)
            .collect();
        approvals.sort_by_key(|a| a.name_any());
        approvals
    }

    /// The StageCommands for `stage` not handled yet, oldest first (creation time, then name).
    pub fn pending_commands(&self, namespace: &str, stage: &str) -> Vec<Arc<StageCommand>> {
        let mut commands: Vec<Arc<StageCommand>> = self
            .commands_by_stage
            .names(namespace, stage)
            .iter()
            .filter_map(|name| self.commands.get(&ObjectRef::new(name).within(namespace)))
            .filter(|c| c.spec.stage == stage && c.status.as_ref().and_then(|s| s.phase).is_none())
            .collect();
        oldest_first(&mut commands);
        commands
    }

    /// Approvals of `release` at `stage`, each with its approver stamp checked, oldest first.
    pub fn approval_records(
        &self,
        namespace: &str,
        release: &str,
        stage: &str,
    ) -> Vec<ApprovalRecord> {
        let mut records: Vec<ApprovalRecord> = self
            .approvals_of(namespace, release, stage)
            .iter()
            .map(|a| ApprovalRecord {
                name: a.name_any(),
                decision: a.spec.decision,
                comment: a.spec.comment.clone(),
                created: a
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(Timestamp::UNIX_EPOCH, |t| t.0),
                approver: self.approver(a).cloned(),
                release_ref: a.spec.release_ref.clone(),
            })
            .collect();
        records.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
        records
    }
}

/// Why a Release must not be rolled out, if it must not: its spec is invalid, or it was edited
/// after creation (possible only with the admission webhooks off; Releases are immutable).
pub fn release_problem(release: &Release) -> Option<String> {
    if let Err(errors) = validate_release(&release.spec) {
        return Some(errors.to_string());
    }
    match release.metadata.generation {
        Some(generation) if generation > 1 => Some(format!(
            "spec: edited after creation (generation {generation}); a Release is immutable, publish a new Release instead"
        )),
        _ => None,
    }
}

/// Sorts objects by creation time (whole seconds), then name in natural order: `v9` before
/// `v10`, as CI publishes them within one second.
fn oldest_first<K: Resource>(objects: &mut [Arc<K>]) {
    objects.sort_by(|a, b| {
        let created = |o: &K| o.meta().creation_timestamp.as_ref().map(|t| t.0);
        let name = |o: &K| o.meta().name.clone().unwrap_or_default();
        created(a)
            .cmp(&created(b))
            .then_with(|| natural(&name(a), &name(b)))
    });
}

/// Compares names with runs of digits taken as numbers.
fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    let chunks = |s: &str| -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match out.last_mut() {
                Some((d, run)) if *d == digit => run.push(c),
                _ => out.push((digit, c.to_string())),
            }
        }
        out
    };
    let key = |(digit, run): &(bool, String)| {
        let trimmed = run.trim_start_matches('0');
        match digit {
            true => (0, trimmed.len(), trimmed.to_string()),
            false => (1, 0, run.clone()),
        }
    };
    let (a, b) = (chunks(a), chunks(b));
    let pairs = a.iter().zip(&b).map(|(x, y)| key(x).cmp(&key(y)));
    pairs
        .into_iter()
        .find(|o| o.is_ne())
        .unwrap_or_else(|| a.len().cmp(&b.len()))
}

/// An API for one namespace, or for all of them.
pub fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The label on the Services the operator makes (Deployments are watched whole-cluster: a
/// stage's target is the user's).
const MANAGED: &str = "app.kubernetes.io/managed-by=greenlight";

type Events<K> = futures::stream::BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// Every `K` in scope, without `managedFields`: nothing reads them, and they are often the
/// largest part of an object.
fn watch<K>(client: &Client, namespace: &Option<String>) -> Events<K>
where
    K: changes::Indexed + Resource<Scope = kube::core::NamespaceResourceScope>,
{
    watcher(scoped::<K>(client, namespace), watcher::Config::default())
        .default_backoff()
        .modify(|o| o.meta_mut().managed_fields = None)
        .boxed()
}

/// The metadata of every `K` in scope that `config` selects, with only what says which
/// object and which version of it: annotations (a `last-applied-configuration` holds a whole
/// object) and labels are dropped too.
fn names<K>(
    client: &Client,
    namespace: &Option<String>,
    config: watcher::Config,
) -> Events<PartialObjectMeta<K>>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watcher(scoped::<PartialObjectMeta<K>>(client, namespace), config)
        .default_backoff()
        .modify(|o| {
            let meta = o.meta_mut();
            meta.managed_fields = None;
            meta.annotations = None;
            meta.labels = None;
        })
        .boxed()
}

/// The Jobs that Job gates started and their pods, selected by the label the gate puts on
/// both. A pod's spec is kept: a Job's verdict counts only from pods that run its template.
fn gate_jobs(
    client: &Client,
    namespace: &Option<String>,
    changes: &Arc<changes::Changes>,
) -> (Store<Job>, Store<Pod>, IndexTasks) {
    let selected = || watcher::Config::default().labels(crate::api::GATE_JOB_LABEL);
    let jobs = watcher(scoped::<Job>(client, namespace), selected())
        .default_backoff()
        .modify(|j| j.metadata.managed_fields = None)
        .boxed();
    let pods = watcher(scoped::<Pod>(client, namespace), selected())
        .default_backoff()
        .modify(|p| p.metadata.managed_fields = None)
        .boxed();
    let (jobs, j) = cache(jobs, changes, |_| {});
    let (pods, p) = cache(pods, changes, |_| {});
    (jobs, pods, vec![j, p])
}

/// A cache of all objects of a kind, kept up to date by a watch, that tells `held` of each
/// event once the store has taken it, then `changes`.
fn cache<K: changes::Indexed>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    changes: &Arc<changes::Changes>,
    held: impl Fn(&watcher::Event<K>) + Send + 'static,
) -> (Store<K>, futures::future::BoxFuture<'static, ()>) {
    let (reader, writer) = reflector::store();
    let mut relist = changes::Relist::default();
    let (store, changes) = (reader.clone(), changes.clone());
    let stream = reflector::reflector(writer, events).for_each(move |event| {
        if let Ok(event) = event {
            held(&event);
            relist.announce(&changes, &store, event);
        }
        futures::future::ready(())
    });
    (reader, Box::pin(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_edited_after_creation_is_not_rolled_out() {
        let mut release: Release = serde_json::from_value(serde_json::json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": "r", "generation": 1},
            "spec": {"pipeline": "web", "version": "1",
                     "artifacts": [{"name": "web", "image": format!("r/w@sha256:{}", "a".repeat(64))}]}
        }))
        .unwrap();
        assert_eq!(release_problem(&release), None);
        release.metadata.generation = Some(2);
        let problem = release_problem(&release).unwrap();
        assert!(
            problem.starts_with("spec: edited after creation"),
            "{problem}"
        );
        release.spec.artifacts[0].image = "r/w:latest".into();
        assert!(
            release_problem(&release)
                .unwrap()
                .contains("spec.artifacts[0].image")
        );
    }
}

#[cfg(test)]
mod order_tests {
    use super::natural;
    use std::cmp::Ordering::*;

    #[test]
    fn names_created_in_the_same_second_sort_with_their_numbers_as_numbers() {
        assert_eq!(natural("v9", "v10"), Less);
        assert_eq!(natural("shop-1-10-0", "shop-1-9-3"), Greater);
        assert_eq!(natural("shop-1-4-2", "shop-1-4-2"), Equal);
        assert_eq!(natural("web-2", "web-2-hotfix"), Less);
    }
}
