//! Job gate: runs the team's own test (a smoke test, a migration, a snapshot) as a Kubernetes
//! Job in the stage's namespace. One Job per release, stage, list, gate, attempt and spec,
//! named from their digest, so a restarted controller finds the Job it started and never
//! starts a second. The release's facts reach it as `GREENLIGHT_*` environment variables,
//! never in its command line. `Complete` passes; `Failed` fails with the failed container's
//! termination message; a Job that cannot start or runs past its deadline is inconclusive.

use std::sync::Arc;

use futures::future::BoxFuture;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, Pod, PodSpec, PodTemplateSpec, ResourceRequirements,
    SecretKeySelector, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use kube::ResourceExt;

use super::{GateCheck, GateContext, GateEnv, GateOutcome, Needs, excerpt};
use crate::api::gate::{GateList, GateSpec, GateType, JobContainer, JobGate};
use crate::api::release::{GateResultStatus, GateVerdict};
use crate::validation::FieldError;

/// Defaults of a Job gate's bounded settings.
const BACKOFF_LIMIT: i32 = 0;
const ACTIVE_DEADLINE: i64 = 600;
const TTL_AFTER_FINISHED: i32 = 3600;
/// The most of a termination message kept (the kubelet keeps 4 KiB at most).
const MESSAGE_LIMIT: usize = 4096;
/// A Job with no pod after this long is taken to be refused (quota, admission).
const NO_POD_AFTER: std::time::Duration = std::time::Duration::from_secs(60);
/// How soon a running Job is looked at again (its watch wakes the stage sooner).
const RECHECK: std::time::Duration = std::time::Duration::from_secs(5);
/// How soon a Job under the check's name that is someone else's is looked at again.
const NOT_OURS_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);
/// Names of environment variables the release's facts take.
const RESERVED_PREFIX: &str = "GREENLIGHT_";

/// What the gate needs of the cluster: the Jobs and pods the index holds, the apiserver to
/// read a Job the index has not seen, the one writer to create one, and the operator's key
/// to seal what it creates. The operator's shell implements it; admission has none.
pub trait JobHost: Send + Sync + std::fmt::Debug {
    fn job(&self, namespace: &str, name: &str) -> Option<Arc<Job>>;
    /// The Job as the apiserver has it now (`None` when there is none).
    fn fetch(&self, namespace: &str, name: &str) -> BoxFuture<'_, Result<Option<Job>, String>>;
    /// The pods labelled for the Job (the gate checks whose they are).
    fn pods(&self, namespace: &str, job: &str) -> Vec<Arc<Pod>>;
    /// Creates the Job: `Ok(Some(uid))` when created, `Ok(None)` when one of its name exists.
    fn create(&self, job: Job) -> BoxFuture<'_, Result<Option<String>, String>>;
    /// How many times creating this Job was refused so far, for the backoff.
    fn refusals(&self, namespace: &str, job: &str) -> u32;
    fn seal(&self, facts: &serde_json::Value) -> String;
    fn sealed(&self, facts: &serde_json::Value, seal: &str) -> bool;
}

pub struct JobCheck {
    settings: JobGate,
    digest: String,
    host: Option<Arc<dyn JobHost>>,
}

impl JobCheck {
    pub fn compile(spec: &JobGate, env: &GateEnv) -> Result<Box<dyn GateCheck>, Vec<FieldError>> {
        let errors = field_errors(spec, env.operator_account.as_deref());
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Box::new(Self {
            settings: spec.clone(),
            digest: spec_digest(spec),
            host: env.jobs.clone(),
        }))
    }

    async fn run(&self, ctx: &GateContext) -> GateOutcome {
        let Some(host) = &self.host else {
            return GateOutcome::new(GateVerdict::Inconclusive, "job gates run in the controller");
        };
        let name = job_name(ctx, &self.digest, |what| host.seal(&what.into()));
        let recorded = recorded(ctx).filter(|r| r.job.as_deref() == Some(name.as_str()));
        let job = match host.job(&ctx.namespace, &name) {
            Some(job) => Some(job),
            // Started on an earlier pass: the index may not have seen it yet.
            None if recorded.is_some() => match host.fetch(&ctx.namespace, &name).await {
                Ok(job) => job.map(Arc::new),
                Err(why) => return unreadable(&name, &why, ctx.now).with_job(&name),
            },
            None => None,
        };
        let started = recorded.and_then(|r| r.job_uid.as_deref());
        match (job, recorded) {
            (Some(job), _) => judge_ours(host.as_ref(), &name, &job, started, ctx.now),
            (None, Some(recorded)) => gone(&name, recorded),
            (None, None) => self.start(host.as_ref(), ctx, &name).await,
        }
    }

    async fn start(&self, host: &dyn JobHost, ctx: &GateContext, name: &str) -> GateOutcome {
        let mut job = build_job(&self.settings, ctx, name);
        let seal = host.seal(&sealed_facts(&job));
        job.annotations_mut()
            .insert(crate::api::JOB_SEAL_ANNOTATION.into(), seal);
        match host.create(job).await {
            Ok(Some(uid)) => GateOutcome::new(GateVerdict::Pending, format!("started Job {name}"))
                .recheck_at(crate::schedule::later(ctx.now, RECHECK))
                .with_job(name)
                .with_job_uid(Some(uid)),
            // Ours from before a restart, or someone else's: the seal tells.
            Ok(None) => match host.fetch(&ctx.namespace, name).await {
                Ok(Some(job)) => judge_ours(host, name, &Arc::new(job), None, ctx.now),
                Ok(None) => unreadable(name, "it was deleted as it was created", ctx.now),
                Err(why) => unreadable(name, &why, ctx.now),
            },
            Err(why) => {
                let refusals = host.refusals(&ctx.namespace, name).min(6);
                let wait = (RECHECK * 2u32.pow(refusals)).min(std::time::Duration::from_secs(300));
                let why = format!("Job {name} could not be created: {}", excerpt(&why, 400));
                GateOutcome::new(GateVerdict::Inconclusive, why)
                    .recheck_at(crate::schedule::later(ctx.now, wait))
            }
        }
    }
}

impl GateCheck for JobCheck {
    fn evaluate<'a>(&'a self, ctx: &'a GateContext) -> BoxFuture<'a, GateOutcome> {
        Box::pin(self.run(ctx))
    }
}

/// This gate's result as recorded on the release's entry at this stage, for this list.
fn recorded(ctx: &GateContext) -> Option<&GateResultStatus> {
    let entry = ctx.release_stages.get(&ctx.stage)?;
    match ctx.list {
        GateList::Gates => entry.gates.iter().find(|g| g.name == ctx.gate),
        list => entry
            .checks
            .iter()
            .find(|g| g.name == ctx.gate && g.list == Some(list)),
    }
}

fn unreadable(name: &str, why: &str, now: Timestamp) -> GateOutcome {
    let why = format!("Job {name} could not be read: {}", excerpt(why, 400));
    GateOutcome::new(GateVerdict::Inconclusive, why)
        .recheck_at(crate::schedule::later(now, RECHECK))
}

/// A Job under the check's name that is not the one Greenlight started, or whose spec or
/// pods someone changed: the check fails (a tamperer must not hold a release either), and
/// is looked at again only slowly.
fn not_ours(name: &str, why: &str, now: Timestamp) -> GateOutcome {
    let why = format!("Job {name} was tampered with ({why}); the check counts as failed");
    GateOutcome::new(GateVerdict::Failed, why)
        .recheck_at(crate::schedule::later(now, NOT_OURS_RECHECK))
}

/// A Job this run started that is no longer there (deleted, or cleaned up after it
/// finished): a verdict it gave stands; without one the check fails (a rollback must not
/// wait on whoever deleted it), and the Job is never started a second time.
fn gone(name: &str, recorded: &GateResultStatus) -> GateOutcome {
    if matches!(recorded.result, GateVerdict::Passed | GateVerdict::Failed) {
        let mut outcome = GateOutcome::new(recorded.result, recorded.message.clone());
        outcome.value = recorded.value.clone();
        return outcome.with_job(name);
    }
    let why = format!(
        "Job {name} was started for this run and is gone (deleted or cleaned up) before it gave a verdict; it is not started again, and the check counts as failed"
    );
    GateOutcome::new(GateVerdict::Failed, why).with_job(name)
}

/// The verdict of a Job of our name, if it is the one the operator sealed, judged only by
/// the pods that Job controls and that run what it specifies.
fn judge_ours(
    host: &dyn JobHost,
    name: &str,
    job: &Arc<Job>,
    started: Option<&str>,
    now: Timestamp,
) -> GateOutcome {
    if started.is_some_and(|uid| job.uid().as_deref() != Some(uid)) {
        let why = "made again under its name after Greenlight started its own";
        return not_ours(name, why, now).with_job(name);
    }
    let seal = job.annotations().get(crate::api::JOB_SEAL_ANNOTATION);
    if !seal.is_some_and(|seal| host.sealed(&sealed_facts(job), seal)) {
        let why = "not made by Greenlight, or changed since: its seal does not check out";
        return not_ours(name, why, now);
    }
    let namespace = job.namespace().unwrap_or_default();
    let pods = host.pods(&namespace, name);
    let (ours, foreign) = controlled_pods(job, &pods);
    if let Some(pod) = foreign {
        let why = format!("pod {pod} under it does not run what it specifies");
        return not_ours(name, &why, now).with_job(name);
    }
    judge(name, job, &ours, now)
        .with_job(name)
        .with_job_uid(job.uid())
}

/// What the seal covers: the Job's name and everything that decides its result, as the
/// apiserver keeps them (it defaults none of these, and a Job's template cannot change).
pub fn sealed_facts(job: &Job) -> serde_json::Value {
    let spec = job.spec.as_ref();
    let pod = spec.and_then(|s| s.template.spec.as_ref());
    serde_json::json!({
        "name": job.metadata.name,
        "namespace": job.metadata.namespace,
        "owners": job.metadata.owner_references,
        "backoffLimit": spec.and_then(|s| s.backoff_limit),
        "completions": spec.and_then(|s| s.completions),
        "parallelism": spec.and_then(|s| s.parallelism),
        "activeDeadlineSeconds": spec.and_then(|s| s.active_deadline_seconds),
        "ttlSecondsAfterFinished": spec.and_then(|s| s.ttl_seconds_after_finished),
        // Defaulted to false from Kubernetes 1.21, absent before.
        "suspend": spec.and_then(|s| s.suspend).unwrap_or(false),
        "pod": pod.map(run_facts),
    })
}

/// What a pod (or a Job's pod template) runs: its account, containers and volumes.
fn run_facts(pod: &PodSpec) -> serde_json::Value {
    let containers: Vec<serde_json::Value> = pod
        .containers
        .iter()
        .map(|c| serde_json::json!([c.name, c.image, c.command, c.args, c.env, c.working_dir]))
        .collect();
    serde_json::json!({
        "serviceAccountName": pod.service_account_name,
        "containers": containers,
        "initContainers": pod.init_containers.as_ref().map_or(0, Vec::len),
        "hostNetwork": pod.host_network.unwrap_or(false),
        "hostPID": pod.host_pid.unwrap_or(false),
        "hostIPC": pod.host_ipc.unwrap_or(false),
        "volumes": pod.volumes.iter().flatten().filter(|v| !token_volume(v, pod)).count(),
    })
}

/// A pod spec as it must be to have run a Job's template: all of it, but for what the
/// scheduler, pod defaulting and the admission plugins of a plain cluster add to a pod (its
/// node, service links, the API token's volume and mounts, default tolerations, priority, and
/// LimitRanger's resources).
fn comparable(spec: &PodSpec) -> serde_json::Value {
    let mut spec = spec.clone();
    spec.node_name = None;
    spec.service_account = None;
    // Defaulted on a pod, not on a template.
    spec.enable_service_links = None;
    spec.tolerations = None;
    (
        spec.priority,
        spec.priority_class_name,
        spec.preemption_policy,
    ) = (None, None, None);
    let volumes = spec.volumes.take().unwrap_or_default();
    let (token, volumes): (Vec<_>, Vec<_>) =
        volumes.into_iter().partition(|v| token_volume(v, &spec));
    let token: Vec<String> = token.into_iter().map(|v| v.name).collect();
    spec.volumes = (!volumes.is_empty()).then_some(volumes);
    // Only the token's own mount, exactly where admission puts it: a mount elsewhere (or at
    // a path that climbs out of it) is part of what the pod runs.
    let admitted = |m: &k8s_openapi::api::core::v1::VolumeMount| {
        m.mount_path == TOKEN_PATH
            && m.read_only == Some(true)
            && m.sub_path.is_none()
            && token.contains(&m.name)
    };
    for c in &mut spec.containers {
        c.resources = None;
        let mounts = c.volume_mounts.take().unwrap_or_default();
        let mounts: Vec<_> = mounts.into_iter().filter(|m| !admitted(m)).collect();
        c.volume_mounts = (!mounts.is_empty()).then_some(mounts);
    }
    serde_json::to_value(spec).unwrap_or_default()
}

/// The paths where two JSON values differ, down to the fields of each container (at most 5).
fn differences(at: &str, a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    use serde_json::Value::{Array, Object};
    let mut found = Vec::new();
    match (a, b) {
        _ if a == b => {}
        (Object(x), Object(y)) => {
            let keys: std::collections::BTreeSet<_> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let null = serde_json::Value::Null;
                let (l, r) = (x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null));
                found.extend(differences(&format!("{at}.{k}"), l, r));
            }
        }
        (Array(x), Array(y)) if x.len() == y.len() => {
            for (i, (l, r)) in x.iter().zip(y).enumerate() {
                found.extend(differences(&format!("{at}[{i}]"), l, r));
            }
        }
        _ => found.push(at.to_string()),
    }
    found.truncate(5);
    found
}

/// Where the ServiceAccount admission mounts a pod's API token.
const TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Exactly the volume the ServiceAccount admission adds to a pod for its API token: the
/// account's token Secret (`<account>-token-…`, before 1.21), or the projected
/// `kube-api-access-…` of the token, the cluster's CA and the namespace.
fn token_volume(volume: &k8s_openapi::api::core::v1::Volume, pod: &PodSpec) -> bool {
    let account = pod.service_account_name.as_deref().unwrap_or("default");
    if let Some(secret) = &volume.secret {
        let name = secret.secret_name.as_deref().unwrap_or_default();
        let prefix = format!("{account}-token-");
        return name.starts_with(&prefix) && volume.name == name && secret.items.is_none();
    }
    let Some(projected) = &volume.projected else {
        return false;
    };
    let sources = projected.sources.as_deref().unwrap_or_default();
    let token = sources.iter().any(|s| {
        let t = s.service_account_token.as_ref();
        t.is_some_and(|t| t.path == "token" && t.audience.is_none())
    });
    let ca = sources.iter().any(|s| {
        let c = s.config_map.as_ref();
        c.is_some_and(|c| c.name == "kube-root-ca.crt")
    });
    let namespace = sources.iter().any(|s| s.downward_api.is_some());
    volume.name.starts_with("kube-api-access-") && sources.len() == 3 && token && ca && namespace
}

/// The Job's pods, split into those it controls that run its template, and the first one
/// under it that runs anything else (made by hand and adopted by the Job controller).
fn controlled_pods(job: &Job, pods: &[Arc<Pod>]) -> (Vec<Arc<Pod>>, Option<String>) {
    let uid = job.uid();
    let template = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(comparable);
    let mut ours = Vec::new();
    for pod in pods {
        let controlled = pod
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref());
        if !controlled {
            continue;
        }
        let runs = pod.spec.as_ref().map(comparable);
        if runs != template {
            let null = serde_json::Value::Null;
            let (a, b) = (
                runs.as_ref().unwrap_or(&null),
                template.as_ref().unwrap_or(&null),
            );
            let differs = differences("spec", a, b).join(", ");
            return (ours, Some(format!("{} ({differs} differ)", pod.name_any())));
        }
        ours.push(pod.clone());
    }
    (ours, None)
}

/// What a refused template asks for, each naming its field. The webhook and the controller
/// both compile Gates through here, so they refuse alike.
pub fn field_errors(spec: &JobGate, operator_account: Option<&str>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let t = &spec.template;
    let at = "spec.job.template";
    for (field, set) in [
        ("hostNetwork", t.host_network),
        ("hostPID", t.host_pid),
        ("hostIPC", t.host_ipc),
    ] {
        if set == Some(true) {
            errors.push(FieldError::new(
                format!("{at}.{field}"),
                "a Job gate's pod may not share the host's namespaces",
            ));
        }
    }
    let operator = operator_account.unwrap_or("greenlight");
    if t.service_account_name == operator {
        errors.push(FieldError::new(
            format!("{at}.serviceAccountName"),
            format!("'{operator}' is the operator's own ServiceAccount; a Job gate runs under one of its own"),
        ));
    }
    for (i, c) in t.containers.iter().enumerate() {
        if t.containers[..i].iter().any(|o| o.name == c.name) {
            errors.push(FieldError::new(
                format!("{at}.containers[{i}].name"),
                format!("container '{}' is named twice", c.name),
            ));
        }
        container_errors(&format!("{at}.containers[{i}]"), c, &mut errors);
    }
    errors
}

fn container_errors(at: &str, c: &JobContainer, errors: &mut Vec<FieldError>) {
    let security = c.security_context.as_ref();
    if security.and_then(|s| s.privileged) == Some(true) {
        errors.push(FieldError::new(
            format!("{at}.securityContext.privileged"),
            "a Job gate's container may not be privileged",
        ));
    }
    if security.and_then(|s| s.allow_privilege_escalation) == Some(true) {
        errors.push(FieldError::new(
            format!("{at}.securityContext.allowPrivilegeEscalation"),
            "a Job gate's container may not gain privileges",
        ));
    }
    if c.command.is_empty() {
        errors.push(FieldError::new(
            format!("{at}.command"),
            "required: the test to run",
        ));
    }
    for (j, e) in c.env.iter().enumerate() {
        if e.name.starts_with(RESERVED_PREFIX) {
            errors.push(FieldError::new(
                format!("{at}.env[{j}].name"),
                "names starting with GREENLIGHT_ are the release's facts",
            ));
        }
        if e.value.is_some() == e.secret_key_ref.is_some() {
            errors.push(FieldError::new(
                format!("{at}.env[{j}]"),
                "set exactly one of value and secretKeyRef",
            ));
        }
    }
}

/// The digest of a Job gate's spec, which its Jobs are named by.
pub fn spec_digest(spec: &JobGate) -> String {
    greenlight_core::digest::digest(spec)
}

/// `<stage>-<gate>` cut to fit, then a keyed digest of everything the Job is for: a new attempt,
/// run of its list, configuration change or spec gets a new Job; a restart finds the same one.
pub fn job_name(ctx: &GateContext, spec_digest: &str, key: impl Fn(&str) -> String) -> String {
    let run = ctx.run.map(|t| t.to_string()).unwrap_or_default();
    let change = ctx.configuration.as_ref();
    let change = change
        .map(|(t, since)| format!("{t}@{since}"))
        .unwrap_or_default();
    let what = format!(
        "{}/{}/{}/{}/{}/{}/{run}/{change}/{spec_digest}",
        ctx.namespace,
        ctx.stage,
        ctx.list.as_str(),
        ctx.gate,
        ctx.release,
        ctx.attempt
    );
    // Keyed by the operator's identity key: nobody else can tell the name before the Job
    // exists, so nobody can take it first.
    let hash = key(&what);
    let mut head: String = format!("{}-{}", ctx.stage, ctx.gate)
        .chars()
        .take(52)
        .collect();
    while head.ends_with(['-', '.']) {
        head.pop();
    }
    format!("{head}-{}", &hash[..10])
}

/// The Job for one check: owned by the Stage, labelled for the index, each container
/// reporting its last output as its termination message.
pub fn build_job(settings: &JobGate, ctx: &GateContext, name: &str) -> Job {
    let labels = [
        (crate::api::GATE_JOB_LABEL.to_string(), name.to_string()),
        (crate::api::STAGE_LABEL.to_string(), ctx.stage.clone()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "greenlight".to_string(),
        ),
    ];
    let annotations = [
        (
            crate::api::RELEASE_ANNOTATION.to_string(),
            ctx.release.clone(),
        ),
        (crate::api::GATE_ANNOTATION.to_string(), ctx.gate.clone()),
        (
            crate::api::GATE_LIST_ANNOTATION.to_string(),
            ctx.list.as_str().to_string(),
        ),
        (
            crate::api::ATTEMPT_ANNOTATION.to_string(),
            ctx.attempt.to_string(),
        ),
    ];
    let owner = OwnerReference {
        api_version: "greenlight.dev/v1alpha1".into(),
        kind: "Stage".into(),
        name: ctx.stage.clone(),
        uid: ctx.stage_uid.clone(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ctx.namespace.clone()),
            labels: Some(labels.iter().cloned().collect()),
            annotations: Some(annotations.into_iter().collect()),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(settings.backoff_limit.unwrap_or(BACKOFF_LIMIT)),
            completions: Some(1),
            parallelism: Some(1),
            active_deadline_seconds: Some(
                settings.active_deadline_seconds.unwrap_or(ACTIVE_DEADLINE),
            ),
            ttl_seconds_after_finished: Some(
                settings
                    .ttl_seconds_after_finished
                    .unwrap_or(TTL_AFTER_FINISHED),
            ),
            template: pod_template(settings, ctx, &labels[..2]),
            ..JobSpec::default()
        }),
        status: None,
    }
}

fn pod_template(
    settings: &JobGate,
    ctx: &GateContext,
    labels: &[(String, String)],
) -> PodTemplateSpec {
    let t = &settings.template;
    let facts = facts(ctx);
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels.iter().cloned().collect()),
            // A mesh's sidecar would keep the Job from ever completing, and change its pods.
            annotations: Some(
                [
                    ("sidecar.istio.io/inject", "false"),
                    ("linkerd.io/inject", "disabled"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            service_account_name: Some(t.service_account_name.clone()),
            host_network: Some(false),
            host_pid: Some(false),
            host_ipc: Some(false),
            containers: t.containers.iter().map(|c| container(c, &facts)).collect(),
            ..PodSpec::default()
        }),
    }
}

fn container(c: &JobContainer, facts: &[EnvVar]) -> Container {
    // The apiserver drops an empty value or working directory: so does the Job as built, so
    // that its seal checks out against what is stored.
    let env = c.env.iter().map(|e| EnvVar {
        name: e.name.clone(),
        value: e.value.clone().filter(|v| !v.is_empty()),
        value_from: e.secret_key_ref.as_ref().map(|s| EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: s.name.clone(),
                key: s.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    });
    let quantities = |m: &std::collections::BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect()
    };
    let asked = c.security_context.clone().unwrap_or_default();
    let security = Some(SecurityContext {
        privileged: Some(false),
        allow_privilege_escalation: Some(false),
        run_as_non_root: asked.run_as_non_root,
        read_only_root_filesystem: asked.read_only_root_filesystem,
        run_as_user: asked.run_as_user,
        run_as_group: asked.run_as_group,
        ..SecurityContext::default()
    });
    Container {
        name: c.name.clone(),
        image: Some(c.image.clone()),
        command: Some(c.command.clone()),
        args: (!c.args.is_empty()).then(|| c.args.clone()),
        env: Some(env.chain(facts.iter().cloned()).collect()),
        working_dir: c.working_dir.clone().filter(|d| !d.is_empty()),
        resources: c.resources.as_ref().map(|r| ResourceRequirements {
            requests: Some(quantities(&r.requests)),
            limits: Some(quantities(&r.limits)),
            ..ResourceRequirements::default()
        }),
        security_context: security,
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
}

/// The release's facts, as environment variables: the Job reads them, nothing is spliced
/// into its command line.
pub fn facts(ctx: &GateContext) -> Vec<EnvVar> {
    let service = match ctx.list {
        GateList::PrePromotion => &ctx.canary_workload,
        _ => &ctx.primary_workload,
    };
    let address = format!("{service}.{}.svc:{}", ctx.namespace, ctx.service_port);
    let mut facts = vec![
        ("GREENLIGHT_RELEASE", ctx.release.clone()),
        ("GREENLIGHT_VERSION", ctx.version.clone()),
        ("GREENLIGHT_STAGE", ctx.stage.clone()),
        ("GREENLIGHT_NAMESPACE", ctx.namespace.clone()),
        ("GREENLIGHT_PIPELINE", ctx.pipeline.clone()),
        ("GREENLIGHT_ATTEMPT", ctx.attempt.to_string()),
        ("GREENLIGHT_CHECK", ctx.list.as_str().to_string()),
        ("GREENLIGHT_SERVICE_URL", format!("http://{address}")),
        ("GREENLIGHT_SERVICE", address),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect::<Vec<_>>();
    for a in &ctx.artifacts {
        let name = a.name.to_uppercase().replace('-', "_");
        facts.push((format!("GREENLIGHT_IMAGE_{name}"), a.image.clone()));
    }
    facts
        .into_iter()
        .map(|(name, value)| EnvVar {
            name,
            value: (!value.is_empty()).then_some(value),
            value_from: None,
        })
        .collect()
}

/// The verdict a Job and its pods give now.
pub fn judge(name: &str, job: &Job, pods: &[Arc<Pod>], now: Timestamp) -> GateOutcome {
    let status = job.status.clone().unwrap_or_default();
    let condition = |kind: &str| {
        let conditions = status.conditions.as_deref().unwrap_or_default();
        conditions
            .iter()
            .find(|c| c.type_ == kind && c.status == "True")
            .cloned()
    };
    if condition("Complete").is_some() {
        let succeeded = pods.iter().any(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            phase == Some("Succeeded")
        });
        if !succeeded {
            let why = format!(
                "Job {name} is complete, but no pod of it that ran its template is seen to have succeeded"
            );
            let recheck = crate::schedule::later(now, RECHECK);
            return GateOutcome::new(GateVerdict::Inconclusive, why).recheck_at(recheck);
        }
        let took = match (&status.start_time, &status.completion_time) {
            (Some(s), Some(c)) => c.0.duration_since(s.0).as_secs().to_string(),
            _ => "?".into(),
        };
        return GateOutcome::new(
            GateVerdict::Passed,
            format!("Job {name} completed in {took}s"),
        )
        .with_value(took);
    }
    if let Some(failed) = condition("Failed") {
        let reason = failed.reason.unwrap_or_default();
        if reason == "DeadlineExceeded" {
            let why = format!(
                "Job {name} ran past its deadline: {}",
                failed.message.unwrap_or_default()
            );
            return GateOutcome::new(GateVerdict::Inconclusive, why);
        }
        let (code, message) =
            last_failure(pods).unwrap_or((None, failed.message.unwrap_or_default()));
        let code_text = code.map_or("?".to_string(), |c| c.to_string());
        let why = format!(
            "Job {name} failed, exit code {code_text}: {}",
            excerpt(&message, MESSAGE_LIMIT)
        );
        let outcome = GateOutcome::new(GateVerdict::Failed, why);
        return outcome.with_value(code_text);
    }
    waiting(name, job, pods, now)
}

/// A Job still under way: inconclusive when its pods cannot start, else pending.
fn waiting(name: &str, job: &Job, pods: &[Arc<Pod>], now: Timestamp) -> GateOutcome {
    let recheck = crate::schedule::later(now, RECHECK);
    if let Some(why) = pods.iter().find_map(|p| stuck(p)) {
        let why = format!("Job {name} cannot start: {why}");
        return GateOutcome::new(GateVerdict::Inconclusive, why).recheck_at(recheck);
    }
    let created = job.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let age = created.map(|c| now.as_second() - c.as_second());
    if pods.is_empty() && age.is_some_and(|a| a >= NO_POD_AFTER.as_secs() as i64) {
        let why = format!(
            "Job {name} has no pod after {}s (a quota or an admission policy may refuse it)",
            NO_POD_AFTER.as_secs()
        );
        return GateOutcome::new(GateVerdict::Inconclusive, why).recheck_at(recheck);
    }
    let active = job.status.as_ref().and_then(|s| s.active).unwrap_or(0);
    GateOutcome::new(
        GateVerdict::Pending,
        format!("Job {name} runs ({active} active)"),
    )
    .recheck_at(recheck)
}

/// Why a pod of the Job cannot start, if it cannot: an image it cannot pull, a container it
/// cannot create, or a scheduler that will not place it.
fn stuck(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let waiting = status.container_statuses.iter().flatten().find_map(|c| {
        let w = c.state.as_ref()?.waiting.as_ref()?;
        let reason = w.reason.clone().unwrap_or_default();
        let stuck = matches!(
            reason.as_str(),
            "ErrImagePull"
                | "ImagePullBackOff"
                | "InvalidImageName"
                | "CreateContainerConfigError"
                | "CreateContainerError"
        );
        stuck.then(|| format!("{reason}: {}", w.message.clone().unwrap_or_default()))
    });
    let unscheduled = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    });
    waiting.or_else(|| {
        unscheduled.map(|c| format!("unschedulable: {}", c.message.clone().unwrap_or_default()))
    })
}

/// The exit code and termination message of the newest failed container.
fn last_failure(pods: &[Arc<Pod>]) -> Option<(Option<i32>, String)> {
    let mut failed: Vec<(Timestamp, i32, String)> = pods
        .iter()
        .flat_map(|p| {
            p.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
        })
        .filter_map(|c| {
            let t = c.state.as_ref()?.terminated.as_ref()?;
            let at = t
                .finished_at
                .as_ref()
                .map_or(Timestamp::UNIX_EPOCH, |f| f.0);
            (t.exit_code != 0).then(|| (at, t.exit_code, t.message.clone().unwrap_or_default()))
        })
        .collect();
    failed.sort_by_key(|(at, ..)| *at);
    failed.pop().map(|(_, code, message)| (Some(code), message))
}

/// The `job` kind, as registered in [`super::KINDS`].
pub struct Kind;

impl super::GateKind for Kind {
    fn gate_type(&self) -> GateType {
        GateType::Job
    }
    fn configured(&self, spec: &GateSpec) -> bool {
        spec.job.is_some()
    }
    fn compile(
        &self,
        spec: &GateSpec,
        env: &GateEnv,
    ) -> Result<(Box<dyn GateCheck>, Needs), Vec<FieldError>> {
        let settings = super::settings(spec.job.as_ref(), self.gate_type())?;
        Ok((JobCheck::compile(settings, env)?, Needs::default()))
    }
}
