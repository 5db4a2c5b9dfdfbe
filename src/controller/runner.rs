//! The one gate runner: builds what a gate knows about a release, resolves what a compiled
//! gate says it needs (Secrets, approvals), evaluates it, keeps a gate that did not pass from
//! being asked again before its recheck time, and counts verdicts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use kube::{Client, ResourceExt};

use super::secrets;
use crate::api::Stage;
use crate::api::release::GateVerdict;
use crate::gates::{self, CompiledGate, GateContext, GateEnv, GateOutcome};
use crate::identity::Unverified;
use crate::index::Index;
use crate::machine::{Due, GateReport, Measurement, ReleaseView};
use crate::metrics::{GateLabels, Metrics};
use crate::schedule::later;
use crate::validation::FieldError;
use crate::workload::{canary_name, primary_name};

pub struct GateRunner {
    pub env: GateEnv,
    index: Arc<Index>,
    client: Client,
    metrics: Arc<Metrics>,
    /// Gates that did not pass, by stage, release, gate and inputs, kept until their recheck.
    held: Mutex<HashMap<String, (Timestamp, GateOutcome)>>,
}

impl GateRunner {
    pub fn new(env: GateEnv, index: Arc<Index>, client: Client, metrics: Arc<Metrics>) -> Self {
        Self {
            env,
            index,
            client,
            metrics,
            held: Mutex::default(),
        }
    }

    /// The gate named `name` in `namespace`, compiled, or why it cannot run.
    pub fn compiled(&self, namespace: &str, name: &str) -> Result<CompiledGate, Vec<FieldError>> {
        let Some(gate) = self.index.gate(namespace, name) else {
            let missing = format!("Gate '{name}' does not exist in namespace '{namespace}'");
            return Err(vec![FieldError::new("metadata.name", missing)]);
        };
        gates::compile(&gate.spec, &self.env)
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
        GateContext {
            approvals: vec![],
            release_author: Err(Unverified::Missing),
            release_created: None,
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
            now,
        }
    }

    /// Evaluates one gate; also returns how soon it should be checked again.
    pub async fn evaluate(&self, name: &str, ctx: &GateContext) -> (GateOutcome, Duration) {
        let kind = self
            .index
            .gate(&ctx.namespace, name)
            .map_or("missing", |g| g.spec.gate_type.as_str());
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
        if compiled.needs.approvals {
            let release = self.index.release(&ctx.namespace, &ctx.release);
            ctx.release_author = release
                .as_ref()
                .map_or(Err(Unverified::Missing), |r| self.index.release_author(r));
            ctx.release_created = release
                .as_ref()
                .and_then(|r| r.metadata.creation_timestamp.as_ref())
                .map(|t| t.0);
            ctx.approvals = self
                .index
                .approval_records(&ctx.namespace, &ctx.release, &ctx.stage);
        }
        if !compiled.needs.secrets.is_empty() {
            match secrets::resolve(&compiled.needs.secrets, &ctx.namespace, &self.client).await {
                Ok(values) => ctx.secrets = values,
                Err(message) => return GateOutcome::new(GateVerdict::Inconclusive, message),
            }
        }
        compiled.check.evaluate(&ctx).await
    }

    /// Evaluates `gates` in order for `release`, stopping at the first that does not pass.
    pub async fn evaluate_in_order(
        &self,
        gates: &[String],
        ctx: &GateContext,
        now: Timestamp,
    ) -> GateReport {
        let mut results = Vec::new();
        let mut recheck_after = gates::DEFAULT_RECHECK;
        for name in gates {
            let (outcome, recheck) = self.held_or_evaluate(name, ctx, now).await;
            recheck_after = recheck_after.min(recheck);
            let passed = outcome.verdict == GateVerdict::Passed;
            results.push((name.clone(), outcome));
            if !passed {
                break;
            }
        }
        GateReport {
            release: ctx.release.clone(),
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
    ) -> (GateOutcome, Duration) {
        let key = self.held_key(name, ctx);
        if let Some((until, outcome)) = self.held_until(&key, now) {
            let left = until.duration_since(now).unsigned_abs();
            return (outcome, left.max(Duration::from_millis(100)));
        }
        let (outcome, recheck) = self.evaluate(name, ctx).await;
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
        let gate = self.index.gate(&ctx.namespace, name);
        let generation = gate.as_ref().and_then(|g| g.metadata.generation);
        let approvals: Vec<String> = self
            .index
            .approvals_of(&ctx.namespace, &ctx.release, &ctx.stage)
            .iter()
            .map(|a| a.name_any())
            .collect();
        format!(
            "{}/{}/{}/{name}/{generation:?}/{}",
            ctx.namespace,
            ctx.stage,
            ctx.release,
            approvals.join(",")
        )
    }

    /// Measures the due gates of a canary analysis. `baking`: the release under test runs on
    /// the primary, so `{{canary}}` names the primary.
    pub async fn measure(&self, ctx: &GateContext, due: &[Due], baking: bool) -> Vec<Measurement> {
        let mut ctx = ctx.clone();
        if baking {
            ctx.canary_workload = ctx.primary_workload.clone();
        }
        let mut out = Vec::with_capacity(due.len());
        for d in due {
            let (outcome, _) = self.evaluate(&d.gate, &ctx).await;
            out.push(Measurement {
                scope: d.scope.clone(),
                gate: d.gate.clone(),
                outcome,
            });
        }
        out
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
