//! Each plugin command against the cluster: read and show, wait for an outcome, or create an
//! Approval or a StageCommand as the current user and wait until the controller has taken it.

use std::time::{Duration, Instant};

use kube::api::{ListParams, PostParams};
use kube::{Api, Client, Resource};
use serde::Serialize;

use super::client::{PluginError, explain};
use super::{Decide, Output, Steer, encode, palette, view};
use greenlight_api::approval::{COUNTS, VERIFIED};
use greenlight_api::command::{CommandAction, CommandPhase, StageCommand, StageCommandSpec};
use greenlight_api::release::StagePhaseForRelease;
use greenlight_api::{Approval, ApprovalSpec, ConditionStatus, Decision, Release, Stage};

/// The cluster and namespace a command works in.
pub struct Ctx {
    pub client: Client,
    pub ns: String,
}

impl Ctx {
    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn get<K>(&self, kind: &'static str, name: &str) -> Result<K, PluginError>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        self.api::<K>()
            .get(name)
            .await
            .map_err(|e| explain(e, kind, name, &self.ns))
    }

    pub async fn list<K>(&self, kind: &'static str) -> Result<Vec<K>, PluginError>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        self.api::<K>()
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .map_err(|e| explain(e, kind, "", &self.ns))
    }

    /// Creates `object` as the current user, named by the apiserver from `prefix`; its name.
    async fn create<K>(
        &self,
        kind: &'static str,
        mut object: K,
        prefix: String,
    ) -> Result<String, PluginError>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + Serialize
            + std::fmt::Debug,
    {
        object.meta_mut().name = None;
        object.meta_mut().generate_name = Some(prefix);
        let made = self
            .api::<K>()
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| explain(e, kind, "", &self.ns))?;
        Ok(made.meta().name.clone().unwrap_or_default())
    }

    /// The pipeline as a view; an error when it has no stage here.
    pub async fn pipeline(&self, name: &str) -> Result<view::PipelineView, PluginError> {
        let stages: Vec<Stage> = self.list("Stage").await?;
        let releases: Vec<Release> = self.list("Release").await?;
        if !stages.iter().any(|s| s.spec.pipeline == name) {
            return Err(PluginError::NotFound {
                kind: "pipeline",
                name: name.to_string(),
                namespace: self.ns.clone(),
            });
        }
        Ok(view::pipeline(name, &self.ns, &stages, &releases))
    }
}

fn print_data<T: Serialize>(value: &T, output: Output) {
    print!("{}", encode(value, output));
}

pub async fn get_pipeline(
    ctx: &Ctx,
    name: &str,
    output: Option<Output>,
) -> Result<u8, PluginError> {
    let view = ctx.pipeline(name).await?;
    match output {
        Some(o) => print_data(&view, o),
        None => print!("{}", view::pipeline_text(&view, palette())),
    }
    Ok(0)
}

/// The namespace's pipelines, one line each with its stages' phases, and how to pick one.
pub async fn get_pipelines(ctx: &Ctx, output: Option<Output>) -> Result<u8, PluginError> {
    let stages: Vec<Stage> = ctx.list("Stage").await?;
    let rows = view::pipelines(&stages);
    match output {
        Some(o) => print_data(&rows, o),
        None if rows.is_empty() => println!("no pipelines (no Stages) in namespace {}", ctx.ns),
        None => print!("{}", view::pipelines_text(&rows, palette())),
    }
    Ok(0)
}

pub async fn get_releases(
    ctx: &Ctx,
    pipeline: Option<&str>,
    output: Option<Output>,
) -> Result<u8, PluginError> {
    let stages: Vec<Stage> = ctx.list("Stage").await?;
    let releases: Vec<Release> = ctx.list("Release").await?;
    let releases: Vec<Release> = releases
        .into_iter()
        .filter(|r| pipeline.is_none_or(|p| r.spec.pipeline == p))
        .collect();
    let rows = view::releases(&releases, &stages);
    match output {
        Some(o) => print_data(&rows, o),
        None if rows.is_empty() => println!("no releases in namespace {}", ctx.ns),
        None => print!(
            "{}",
            view::releases_text(&rows, jiff::Timestamp::now(), palette())
        ),
    }
    Ok(0)
}

pub async fn history(ctx: &Ctx, name: &str, output: Option<Output>) -> Result<u8, PluginError> {
    let release: Release = ctx.get("release", name).await?;
    match output {
        Some(o) => {
            let mut audit = release.status.map(|s| s.audit).unwrap_or_default();
            audit.sort_by_key(|e| e.time);
            print_data(&audit, o);
        }
        None => print!("{}", view::history_text(&release)),
    }
    Ok(0)
}

/// Which policy applies to a release at each stage of its pipeline (or one), and why.
pub async fn policy(
    ctx: &Ctx,
    name: &str,
    stage: Option<&str>,
    output: Option<Output>,
) -> Result<u8, PluginError> {
    let release: Release = ctx.get("release", name).await?;
    let stages: Vec<Stage> = ctx.list("Stage").await?;
    let rows = super::policy::rows(&release, &stages, stage);
    match output {
        Some(o) => print_data(&rows, o),
        None => print!("{}", super::policy::text(&release, &rows)),
    }
    Ok(if rows.is_empty() { 1 } else { 0 })
}

/// The DORA report of the namespace's pipelines over `since` up to now.
pub async fn dora(
    ctx: &Ctx,
    pipeline: Option<&str>,
    since: jiff::SignedDuration,
    output: Option<Output>,
) -> Result<u8, PluginError> {
    use greenlight_core::dora;
    let keep = |p: &str| pipeline.is_none_or(|want| want == p);
    let stages: Vec<Stage> = ctx.list("Stage").await?;
    let releases: Vec<Release> = ctx.list("Release").await?;
    let stages = stages.iter().filter(|s| keep(&s.spec.pipeline));
    let releases = releases.iter().filter(|r| keep(&r.spec.pipeline));
    let window = dora::Window::last(since, jiff::Timestamp::now());
    let reports = dora::report(stages, releases, window);
    match output {
        Some(o) => print_data(&reports, o),
        None if reports.is_empty() => {
            match pipeline {
                Some(p) => eprintln!("no pipeline '{p}' in namespace {}", ctx.ns),
                None => eprintln!("no pipelines in namespace {}", ctx.ns),
            }
            return Ok(1);
        }
        None => print!("{}", super::dora::text(&reports, &since_text(since))),
    }
    Ok(0)
}

/// `90d`, `36h` or `90m`: the period as given, in its largest whole unit.
fn since_text(since: jiff::SignedDuration) -> String {
    let secs = since.as_secs();
    match (secs % 86_400, secs % 3600) {
        (0, _) => format!("{}d", secs / 86_400),
        (_, 0) => format!("{}h", secs / 3600),
        _ => format!("{}m", secs / 60),
    }
}

/// How a release ended at a stage, for `status`.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub release: String,
    pub stage: String,
    /// `Succeeded`, `Failed`, `Superseded` or `Timeout`.
    pub result: String,
    pub message: String,
    #[serde(skip)]
    pub code: u8,
}

/// The outcome once the release's phase at the stage is final; `None` while it is not.
pub fn outcome(release: &Release, stage: &str) -> Option<Outcome> {
    let at = release.status.as_ref()?.stages.get(stage)?;
    let code = match at.phase {
        StagePhaseForRelease::Succeeded => 0,
        StagePhaseForRelease::Failed | StagePhaseForRelease::Superseded => 1,
        _ => return None,
    };
    let reason = at.reason.clone().unwrap_or_default();
    let message = at.message.clone().unwrap_or_default();
    Some(Outcome {
        release: release.metadata.name.clone().unwrap_or_default(),
        stage: stage.to_string(),
        result: format!("{:?}", at.phase),
        message: [reason, message]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(": "),
        code,
    })
}

/// The release `status` waits for when none is named: the one rolling out, else the
/// candidate, else what the stage runs.
fn release_of(stage: &Stage) -> Option<String> {
    let status = stage.status.as_ref()?;
    status
        .rollout
        .as_ref()
        .map(|r| r.release.clone())
        .or_else(|| status.candidate_release.clone())
        .or_else(|| status.current_release.clone())
}

pub async fn status(
    ctx: &Ctx,
    stage_name: &str,
    release: Option<String>,
    timeout: Duration,
    output: Option<Output>,
) -> Result<u8, PluginError> {
    let stage: Stage = ctx.get("stage", stage_name).await?;
    let release = match release.or_else(|| release_of(&stage)) {
        Some(r) => r,
        None => {
            return Err(PluginError::Api(format!(
                "stage {stage_name} has no release yet; name one with --release"
            )));
        }
    };
    let deadline = Instant::now() + timeout;
    if output.is_none() {
        eprintln!(
            "waiting for {release} at {stage_name} (up to {})",
            humantime(timeout)
        );
    }
    let mut last = String::new();
    let result = loop {
        // A passing network error is waited out; a missing or forbidden release is not.
        let current: Release = match ctx.get("release", &release).await {
            Ok(r) => r,
            Err(PluginError::Unreachable(_) | PluginError::Api(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(done) = outcome(&current, stage_name) {
            break done;
        }
        let now = progress_line(&current, stage_name);
        if now != last && output.is_none() {
            eprintln!("{now}");
            last = now;
        }
        if Instant::now() >= deadline {
            break Outcome {
                release: release.clone(),
                stage: stage_name.to_string(),
                result: "Timeout".into(),
                message: format!("not final after {}", humantime(timeout)),
                code: 2,
            };
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    match output {
        Some(o) => print_data(&result, o),
        None => println!(
            "{} at {}: {} {}",
            result.release, result.stage, result.result, result.message
        ),
    }
    Ok(result.code)
}

fn progress_line(release: &Release, stage: &str) -> String {
    let at = release.status.as_ref().and_then(|s| s.stages.get(stage));
    match at {
        None => format!(
            "{}: not at {stage} yet",
            release.metadata.name.clone().unwrap_or_default()
        ),
        Some(at) => format!(
            "{}: {:?} at {stage}{}",
            release.metadata.name.clone().unwrap_or_default(),
            at.phase,
            at.message
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        ),
    }
}

fn humantime(d: Duration) -> String {
    match d.as_secs() {
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Creates an Approval as the current user, then says whether it counted and why.
pub async fn decide(ctx: &Ctx, d: Decide, decision: Decision) -> Result<u8, PluginError> {
    let judged = approve(ctx, &d.release, &d.stage, decision, d.message).await?;
    println!("approval {}: {}", judged.name, judged.message);
    Ok(if judged.counts { 0 } else { 1 })
}

/// An Approval the controller has judged: whether it is signed and counts, and its message.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Judged {
    pub name: String,
    pub verified: bool,
    pub counts: bool,
    pub message: String,
}

/// Creates an Approval (or a rejection) as the current user and waits until the controller
/// has judged it.
pub async fn approve(
    ctx: &Ctx,
    release: &str,
    stage: &str,
    decision: Decision,
    comment: Option<String>,
) -> Result<Judged, PluginError> {
    let _: Release = ctx.get("release", release).await?;
    let _: Stage = ctx.get("stage", stage).await?;
    let approval = Approval::new(
        "",
        ApprovalSpec {
            release: release.to_string(),
            stage: stage.to_string(),
            decision,
            comment,
            approver: None,
            release_ref: None,
        },
    );
    let prefix = format!("{}-{}-", truncate(release, 30), truncate(stage, 30));
    let name = ctx.create("approval", approval, prefix).await?;
    let api = ctx.api::<Approval>();
    let judged = wait(Duration::from_secs(30), || async {
        let status = match read_back(api.get(&name).await, "approval", &name, &ctx.ns)? {
            Ok(approval) => approval.status?,
            Err(e) => return Some(Err(e)),
        };
        let condition = status.conditions.iter().find(|c| c.type_ == VERIFIED)?;
        let verified = condition.status == ConditionStatus::True;
        // Judged once recorded (verified, with its Release and Stage found) or unverified; a
        // Release or Stage the controller has not seen yet is waited for.
        let judged = !verified || condition.reason == VERIFIED;
        judged.then_some(Ok((verified, status.message?)))
    })
    .await;
    let (verified, message) = judged.ok_or_else(|| {
        PluginError::Timeout(format!(
            "30s waiting for the controller to judge approval {name}; is it running?"
        ))
    })??;
    // It counts when it is signed and one of the stage's approval gates takes it.
    let counts = verified
        && message
            .split([':', ';'])
            .any(|part| part.trim_start().starts_with(COUNTS));
    Ok(Judged {
        name,
        verified,
        counts,
        message,
    })
}

/// Creates a StageCommand as the current user and waits until the stage has taken it.
pub async fn steer(
    ctx: &Ctx,
    s: Steer,
    action: CommandAction,
    release: Option<String>,
) -> Result<u8, PluginError> {
    let stage: Stage = ctx.get("stage", &s.stage).await?;
    let release = match (action, release) {
        (CommandAction::Retry, None) => {
            let releases: Vec<Release> = ctx.list("Release").await?;
            Some(last_failed(&stage, &releases).ok_or_else(|| {
                PluginError::Api(format!(
                    "no release failed at {}; name the one to retry with --release",
                    s.stage
                ))
            })?)
        }
        (_, release) => release,
    };
    let spec = StageCommandSpec {
        stage: s.stage.clone(),
        action,
        release,
        comment: s.message,
        reason: None,
        reference: None,
        post_mortem: None,
        requested_by: None,
        stage_ref: None,
    };
    send_command(ctx, spec).await
}

/// Creates the StageCommand as the current user and waits until its stage has taken it:
/// exit 0 when applied, 1 when refused.
pub async fn send_command(ctx: &Ctx, spec: StageCommandSpec) -> Result<u8, PluginError> {
    let verb = spec.action.as_str().to_lowercase();
    let handled = command(ctx, spec).await?;
    println!(
        "{verb} {}: {:?}{}",
        handled.stage,
        handled.phase,
        if handled.message.is_empty() {
            String::new()
        } else {
            format!(": {}", handled.message)
        }
    );
    Ok(if handled.phase == CommandPhase::Applied {
        0
    } else {
        1
    })
}

/// A StageCommand its stage has taken: applied or refused, and why.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Handled {
    pub name: String,
    pub stage: String,
    pub phase: CommandPhase,
    pub message: String,
}

/// Creates the StageCommand as the current user and waits until its stage has taken it.
pub async fn command(ctx: &Ctx, spec: StageCommandSpec) -> Result<Handled, PluginError> {
    let verb = spec.action.as_str().to_lowercase();
    let stage = spec.stage.clone();
    let prefix = format!("{verb}-{}-", truncate(&stage, 40));
    let name = ctx
        .create("stagecommand", StageCommand::new("", spec), prefix)
        .await?;
    let api = ctx.api::<StageCommand>();
    let handled = wait(Duration::from_secs(60), || async {
        let status = match read_back(api.get(&name).await, "stagecommand", &name, &ctx.ns)? {
            Ok(command) => command.status?,
            Err(e) => return Some(Err(e)),
        };
        Some(Ok((status.phase?, status.message.unwrap_or_default())))
    })
    .await;
    let (phase, message) = handled.ok_or_else(|| {
        PluginError::Timeout(format!(
            "60s waiting for stage {stage} to take {name}; is the controller running?"
        ))
    })??;
    Ok(Handled {
        name,
        stage,
        phase,
        message,
    })
}

/// An object just made, read back: `None` to wait and read again (the apiserver did not
/// answer), an error to stop waiting (it cannot be read as this user, or is gone).
fn read_back<K>(
    got: Result<K, kube::Error>,
    kind: &'static str,
    name: &str,
    namespace: &str,
) -> Option<Result<K, PluginError>> {
    match got {
        Ok(object) => Some(Ok(object)),
        // Made, and acting: say so, or the person tries again and it acts twice.
        Err(kube::Error::Api(s)) if s.code == 403 => Some(Err(PluginError::Forbidden(format!(
            "{kind} {name} was created in {namespace} and will be acted on, but you may not read it back to see how: {}",
            s.message
        )))),
        Err(kube::Error::Api(s)) if s.code == 404 => Some(Err(PluginError::Api(format!(
            "{kind} {name} was created in {namespace}, then deleted before it was handled"
        )))),
        Err(_) => None,
    }
}

/// The release that failed at the stage most recently.
pub(crate) fn last_failed(stage: &Stage, releases: &[Release]) -> Option<String> {
    let name = stage.metadata.name.as_deref()?;
    releases
        .iter()
        .filter(|r| r.spec.pipeline == stage.spec.pipeline)
        .filter_map(|r| {
            let at = r.status.as_ref()?.stages.get(name)?;
            (at.phase == StagePhaseForRelease::Failed)
                .then(|| (at.finished_at, r.metadata.name.clone()))
        })
        .max()
        .and_then(|(_, name)| name)
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => text[..i].trim_end_matches('-'),
        None => text,
    }
}

/// Polls `check` every half second until it answers or `timeout` passes.
async fn wait<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check().await {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
