//! The one gate runner: builds what a gate knows about a release, resolves what a compiled
//! gate says it needs (Secrets, approvals), evaluates it, keeps a gate that did not pass from
//! being asked again before its recheck time, and counts verdicts. Evaluations run on tasks
//! of their own, all due gates at once: a pass waits for them at most [`BUDGET`], and one
//! still running is "evaluating" until a later pass collects it, so a slow endpoint never
//! holds up an abort, a deadline or shutdown.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use jiff::Timestamp;
use kube::{Client, ResourceExt};

use super::secrets;
use crate::api::Stage;
use crate::api::release::GateVerdict;
use crate::gates::{self, CompiledGate, GateContext, GateEnv, GateOutcome};
use crate::identity::Unverified;
use crate::index::Index;
use crate::machine::{Due, GateReport, Measured, Measurement, ReleaseView};
use crate::metrics::{GateLabels, Metrics};
use crate::schedule::later;
use crate::validation::FieldError;
use crate::workload::{canary_name, primary_name};

/// The longest a pass waits for its gates; those still running are collected by a later pass.
pub const BUDGET: Duration = Duration::from_millis(250);
/// How soon a pass looks again for evaluations still running.
pub const COLLECT_AFTER: Duration = Duration::from_secs(1);
/// How long a finished evaluation waits to be collected before it is dropped.
const UNCOLLECTED: Duration = Duration::from_secs(30);

type Evaluation = Shared<BoxFuture<'static, (GateOutcome, Duration)>>;
/// An evaluation under way: when it started, the evaluation, and whether a pass gave up
/// waiting for it (then it wakes its stage when it answers).
type Running = (Instant, (Evaluation, Arc<AtomicBool>));

/// A stage whose gate evaluation finished: its namespace and name.
pub type Finished = (String, String);

pub struct GateRunner {
    inner: Arc<Inner>,
    /// Told when an evaluation finishes, so its stage is reconciled at once to collect it.
    finished: tokio::sync::mpsc::UnboundedSender<Finished>,
    finished_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Finished>>>,
    /// Gates that did not pass, by stage, release, gate and inputs, kept until their recheck.
    held: Mutex<HashMap<String, (Timestamp, GateOutcome)>>,
    /// Evaluations started and not collected yet, with when they started.
    running: Mutex<HashMap<String, Running>>,
}

/// What an evaluation needs, shared with the tasks it runs on.
struct Inner {
    env: GateEnv,
    index: Arc<Index>,
    client: Client,
    metrics: Arc<Metrics>,
}

impl GateRunner {
    pub fn new(env: GateEnv, index: Arc<Index>, client: Client, metrics: Arc<Metrics>) -> Self {
        let inner = Inner {
            env,
            index,
            client,
            metrics,
        };
        let (finished, finished_rx) = tokio::sync::mpsc::unbounded_channel();
        Self {
            inner: Arc::new(inner),
            finished,
            finished_rx: Mutex::new(Some(finished_rx)),
            held: Mutex::default(),
            running: Mutex::default(),
        }
    }

    /// The stages whose evaluations finish, as they do; for the stage controller, once.
    pub fn finished(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Finished>> {
        self.finished_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    pub fn env(&self) -> &GateEnv {
        &self.inner.env
    }

    /// Whether evaluations of `stage` are still running, so its pass should look again soon.
    /// One that finished is collected by the pass that asks for it again; if none does (its
    /// rollout ended, an approval changed what it is asked for), it is dropped here.
    pub fn busy(&self, namespace: &str, stage: &str) -> bool {
        let prefix = format!("{namespace}/{stage}/");
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|_, (since, (evaluation, _))| match evaluation.peek() {
            None => since.elapsed() < crate::gates::LONGEST_TIMEOUT * 2,
            Some(_) => since.elapsed() < UNCOLLECTED,
        });
        running
            .iter()
            .any(|(k, (_, (evaluation, _)))| k.starts_with(&prefix) && evaluation.peek().is_none())
    }

    /// Starts `name`'s evaluation under `key` unless it runs already, and waits for it until
    /// `deadline`; `None` when it is still running then.
    async fn started(
        &self,
        key: String,
        name: &str,
        ctx: &GateContext,
        deadline: tokio::time::Instant,
    ) -> Option<(GateOutcome, Duration)> {
        let (evaluation, outlived) = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            let stale = crate::gates::LONGEST_TIMEOUT * 2;
            running.retain(|_, (since, _)| since.elapsed() < stale);
            let (_, evaluation) = running
                .entry(key.clone())
                .or_insert_with(|| (Instant::now(), self.spawn(name, ctx)));
            evaluation.clone()
        };
        match tokio::time::timeout_at(deadline, evaluation.clone()).await {
            Ok(done) => {
                let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
                running.remove(&key);
                Some(done)
            }
            Err(_) => {
                // Nobody waits for it now: its stage is woken when it answers.
                outlived.store(true, std::sync::atomic::Ordering::SeqCst);
                if evaluation.peek().is_some() {
                    // It answered just before the flag was set: wake the stage all the same.
                    let _ = self
                        .finished
                        .send((ctx.namespace.clone(), ctx.stage.clone()));
                }
                None
            }
        }
    }

    /// Starts one evaluation on a task of its own.
    fn spawn(&self, name: &str, ctx: &GateContext) -> (Evaluation, Arc<AtomicBool>) {
        let (inner, name, ctx) = (self.inner.clone(), name.to_string(), ctx.clone());
        let (finished, outlived) = (self.finished.clone(), Arc::new(AtomicBool::new(false)));
        let flag = outlived.clone();
        let evaluation = async move {
            let result = inner.evaluate(&name, &ctx).await;
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = finished.send((ctx.namespace.clone(), ctx.stage.clone()));
            }
            result
        }
        .boxed()
        .shared();
        tokio::spawn(evaluation.clone());
        (evaluation, outlived)
    }

    /// The gate named `name` in `namespace`, compiled, or why it cannot run.
    pub fn compiled(&self, namespace: &str, name: &str) -> Result<CompiledGate, Vec<FieldError>> {
        self.inner.compiled(namespace, name)
    }

    /// What gates know about `release` at this stage.
    pub fn context(
        &self,
        stage: &Stage,
        releases: &[ReleaseView],
        release: &str,
        now: Timestamp,
    ) -> GateContext {
        let view = releases.iter().find(|r| r.name == release);
        let attempt = view
            .and_then(|r| r.stages.get(&stage.name_any()))
            .and_then(|e| e.attempt)
            .unwrap_or(1);
        GateContext {
            approvals: vec![],
            release_author: Err(Unverified::Missing),
            release_ref: None,
            namespace: stage.namespace().unwrap_or_default(),
            pipeline: stage.spec.pipeline.clone(),
            stage: stage.name_any(),
            release: release.to_string(),
            version: view.map(|r| r.version.clone()).unwrap_or_default(),
            artifacts: view.map(|r| r.artifacts.clone()).unwrap_or_default(),
            release_stages: view.map(|r| r.stages.clone()).unwrap_or_default(),
            primary_workload: primary_name(&stage.spec.target.name),
            canary_workload: canary_name(&stage.spec.target.name),
            secrets: Default::default(),
            configuration: None,
            gate: String::new(),
            list: crate::api::gate::GateList::Gates,
            attempt,
            run: None,
            stage_uid: stage.uid().unwrap_or_default(),
            measuring: false,
            service_port: 80,
            change_ticket: None,
            ticket_used_by: vec![],
            emergency: None,
            now,
        }
    }

    /// Evaluates `gates` in order for `release`, stopping at the first that does not pass or
    /// is still evaluating when the pass's [`BUDGET`] is spent.
    pub async fn evaluate_in_order(
        &self,
        gates: &[String],
        ctx: &GateContext,
        now: Timestamp,
    ) -> GateReport {
        let deadline = tokio::time::Instant::now() + BUDGET;
        let mut results = Vec::new();
        let mut recheck_after = gates::DEFAULT_RECHECK;
        for name in gates {
            let ctx = GateContext {
                gate: name.clone(),
                ..ctx.clone()
            };
            let (outcome, recheck) = self.held_or_evaluate(name, &ctx, now, deadline).await;
            recheck_after = recheck_after.min(recheck);
            let passed = outcome.verdict == GateVerdict::Passed;
            results.push((name.clone(), outcome));
            if !passed {
                break;
            }
        }
        GateReport {
            release: ctx.release.clone(),
            list: ctx.list,
            template: ctx.configuration.as_ref().map(|(t, _)| t.clone()),
            results,
            recheck_after,
        }
    }

    /// A gate that did not pass is asked again only at its recheck time, however many watch
    /// events arrive meanwhile; a pass is never reused.
    async fn held_or_evaluate(
        &self,
        name: &str,
        ctx: &GateContext,
        now: Timestamp,
        deadline: tokio::time::Instant,
    ) -> (GateOutcome, Duration) {
        let key = self.held_key(name, ctx);
        if let Some((until, outcome)) = self.held_until(&key, now) {
            let left = until.duration_since(now).unsigned_abs();
            return (outcome, left.max(Duration::from_millis(100)));
        }
        let Some((outcome, recheck)) = self.started(key.clone(), name, ctx, deadline).await else {
            return (evaluating(), COLLECT_AFTER);
        };
        if outcome.verdict != GateVerdict::Passed {
            let until = outcome
                .recheck_at
                .map_or(later(now, recheck), |at| at.min(later(now, recheck)));
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            held.retain(|_, (u, _)| now < *u);
            held.insert(key, (until, outcome.clone()));
        }
        (outcome, recheck)
    }

    fn held_until(&self, key: &str, now: Timestamp) -> Option<(Timestamp, GateOutcome)> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(key).filter(|(until, _)| now < *until).cloned()
    }

    /// What a held result depends on: the gate's generation and, as Approvals are immutable,
    /// their names.
    fn held_key(&self, name: &str, ctx: &GateContext) -> String {
        let index = &self.inner.index;
        let gate = index.gate(&ctx.namespace, name);
        let generation = gate.as_ref().and_then(|g| g.metadata.generation);
        let approvals: Vec<String> = index
            .approvals_of(&ctx.namespace, &ctx.release, &ctx.stage)
            .iter()
            .map(|a| a.name_any())
            .collect();
        let template = ctx.configuration.as_ref().map(|(t, _)| t.as_str());
        // A Job gate's Job moving on (started, finished) is a new input, not a recheck; for
        // any other kind it is not an input at all.
        let job_gate = gate
            .as_ref()
            .is_some_and(|g| g.spec.gate_type == crate::api::gate::GateType::Job);
        let jobs = match job_gate {
            true => index.gate_jobs_version(&ctx.namespace, &ctx.stage),
            false => Default::default(),
        };
        format!(
            "{}/{}/{}/{}/{}/{:?}/{name}/{generation:?}/{}/{}/{jobs}",
            ctx.namespace,
            ctx.stage,
            ctx.release,
            ctx.list.as_str(),
            ctx.attempt,
            ctx.run,
            approvals.join(","),
            template.unwrap_or_default()
        )
    }

    /// Measures the due gates of a canary analysis, all at once, each on the workload the
    /// machine names: `{{canary}}` is the primary once the release under test runs there. A
    /// gate still evaluating when the [`BUDGET`] is spent has no measurement yet; a later
    /// pass collects it.
    pub async fn measure(&self, ctx: &GateContext, due: &[Due]) -> Vec<Measurement> {
        let deadline = tokio::time::Instant::now() + BUDGET;
        let measuring = due.iter().map(|d| async move {
            let mut ctx = ctx.clone();
            if d.workload == Measured::Primary {
                ctx.canary_workload = ctx.primary_workload.clone();
            }
            ctx.run = Some(d.since);
            ctx.measuring = true;
            let key = format!(
                "{}/{}/{}/measure/{}/{}/{}",
                ctx.namespace, ctx.stage, ctx.release, d.scope, d.gate, ctx.canary_workload
            );
            let (outcome, _) = self.started(key, &d.gate, &ctx, deadline).await?;
            Some(Measurement {
                scope: d.scope.clone(),
                gate: d.gate.clone(),
                workload: d.workload,
                outcome,
            })
        });
        futures::future::join_all(measuring)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

/// The outcome shown while a gate's evaluation runs past a pass.
fn evaluating() -> GateOutcome {
    GateOutcome::new(
        GateVerdict::Pending,
        "evaluating: waiting for the gate's answer",
    )
}

impl Inner {
    fn compiled(&self, namespace: &str, name: &str) -> Result<CompiledGate, Vec<FieldError>> {
        if let Some(stage) = name.strip_prefix("emergency:") {
            return self.emergency_gate(namespace, stage);
        }
        let Some(gate) = self.index.gate(namespace, name) else {
            let missing = format!("Gate '{name}' does not exist in namespace '{namespace}'");
            return Err(vec![FieldError::new("metadata.name", missing)]);
        };
        gates::compile(&gate.spec, &self.env)
    }

    /// The approval gate a stage's `spec.emergency.approvals` makes.
    fn emergency_gate(
        &self,
        namespace: &str,
        stage: &str,
    ) -> Result<CompiledGate, Vec<FieldError>> {
        let emergency = self
            .index
            .stage(namespace, stage)
            .and_then(|s| s.spec.emergency.clone());
        let Some(emergency) = emergency else {
            let why = format!("stage '{stage}' takes no emergencies");
            return Err(vec![FieldError::new("spec.emergency", why)]);
        };
        let a = emergency.approvals;
        let spec = serde_json::json!({"type": "approval", "recheckInterval": "2s", "approval": {
            "users": a.users, "groups": a.groups, "required": a.required,
        }});
        let spec = serde_json::from_value(spec)
            .map_err(|e| vec![FieldError::new("spec.emergency.approvals", e.to_string())])?;
        gates::compile(&spec, &self.env)
    }

    /// Evaluates one gate; also returns how soon it should be checked again.
    async fn evaluate(&self, name: &str, ctx: &GateContext) -> (GateOutcome, Duration) {
        let kind = match name.starts_with("emergency:") {
            true => "approval",
            false => self
                .index
                .gate(&ctx.namespace, name)
                .map_or("missing", |g| g.spec.gate_type.as_str()),
        };
        let (outcome, recheck) = match self.compiled(&ctx.namespace, name) {
            Err(errors) => {
                let message = crate::validation::ValidationErrors(errors).to_string();
                let outcome = GateOutcome::new(GateVerdict::Invalid, message);
                (outcome, gates::DEFAULT_RECHECK)
            }
            Ok(compiled) => (self.run(&compiled, ctx).await, compiled.recheck_interval),
        };
        let verdict = verdict_label(outcome.verdict);
        self.metrics
            .gate_evaluations
            .get_or_create(&GateLabels {
                gate_type: kind,
                verdict,
            })
            .inc();
        (outcome, recheck)
    }

    /// Gives the gate what it says it needs, then runs it.
    async fn run(&self, compiled: &CompiledGate, ctx: &GateContext) -> GateOutcome {
        let mut ctx = ctx.clone();
        if ctx.gate.starts_with("emergency:") && ctx.emergency.is_none() {
            // Without the request, nobody is known to be its requester: nothing may count.
            ctx.emergency = Some((String::new(), Timestamp::MAX));
        }
        if compiled.needs.approvals {
            let release = self.index.release(&ctx.namespace, &ctx.release);
            ctx.release_author = release
                .as_ref()
                .map_or(Err(Unverified::Missing), |r| self.index.release_author(r));
            ctx.release_ref = release.as_ref().map(|r| crate::api::ReleaseRef {
                uid: r.uid().unwrap_or_default(),
                digest: crate::identity::release_digest(&r.spec),
            });
            ctx.approvals = self
                .index
                .approval_records(&ctx.namespace, &ctx.release, &ctx.stage);
        }
        if compiled.needs.ticket {
            let release = self.index.release(&ctx.namespace, &ctx.release);
            ctx.change_ticket = release.and_then(|r| r.spec.change_ticket.clone());
            if let Some(ticket) = &ctx.change_ticket {
                ctx.ticket_used_by =
                    self.index
                        .ticket_holders(&ctx.namespace, ticket, &ctx.release);
            }
        }
        if !compiled.needs.secrets.is_empty() {
            match secrets::resolve(&compiled.needs.secrets, &ctx.namespace, &self.client).await {
                Ok(values) => ctx.secrets = values,
                Err(message) => return GateOutcome::new(GateVerdict::Inconclusive, message),
            }
        }
        compiled.check.evaluate(&ctx).await
    }
}

fn verdict_label(v: GateVerdict) -> &'static str {
    match v {
        GateVerdict::Passed => "passed",
        GateVerdict::Failed => "failed",
        GateVerdict::Pending => "pending",
        GateVerdict::Inconclusive => "inconclusive",
        GateVerdict::Invalid => "invalid",
        GateVerdict::Skipped => "skipped",
    }
}
