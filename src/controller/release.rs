//! Release reconciliation: validate the spec and derive the overall phase, summary and
//! conditions from the per-stage entries that the stage controller writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::error::ReconcileError;
use super::patch::merge_diff;
use super::{
    Context, error_policy, instrumented, key, pipeline_releases, pipeline_stages, refs_of,
    scoped_api,
};
use crate::api::conditions;
use crate::api::release::{Release, ReleaseStatus};
use crate::api::stage::Stage;
use crate::machine::release::summarize;
use crate::pipeline::topological_order;

const CONTROLLER: &str = "release";

pub async fn controller(ctx: Arc<Context>, client: &Client, namespace: &Option<String>) {
    let releases = ctx.releases.clone();
    Controller::new(
        scoped_api::<Release>(client, namespace),
        watcher::Config::default(),
    )
    .watches(
        scoped_api::<Stage>(client, namespace),
        watcher::Config::default(),
        move |s: Stage| {
            refs_of(pipeline_releases(
                &releases,
                &s.namespace().unwrap_or_default(),
                &s.spec.pipeline,
            ))
        },
    )
    .shutdown_on_signal()
    .run(reconcile, error_policy(CONTROLLER), ctx)
    .for_each(|_| futures::future::ready(()))
    .await;
}

async fn reconcile(release: Arc<Release>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let key = key(&*release)?;
    instrumented(
        CONTROLLER,
        "Release",
        &key,
        &ctx,
        reconcile_release(&release, &key.0, &ctx),
    )
    .await
}

async fn reconcile_release(
    release: &Release,
    namespace: &str,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let stages = pipeline_stages(&ctx.stages, namespace, &release.spec.pipeline);
    let graph: BTreeMap<String, Vec<String>> = stages
        .iter()
        .map(|s| (s.name_any(), s.spec.requires.clone()))
        .collect();
    let order = topological_order(&release.spec.pipeline, &graph)
        .unwrap_or_else(|_| graph.keys().cloned().collect());
    let invalid = super::release_problem(release);
    let old = release.status.clone().unwrap_or_default();
    let summary = summarize(&old, &order, invalid.as_deref());
    let generation = release.meta().generation;
    let new = ReleaseStatus {
        observed_generation: generation,
        phase: Some(summary.phase),
        summary: Some(summary.summary).filter(|s| !s.is_empty()),
        message: Some(summary.message).filter(|s| !s.is_empty()),
        conditions: conditions::merge(
            &old.conditions,
            summary.conditions,
            Timestamp::now(),
            generation,
        ),
        stages: old.stages.clone(),
        // The trail is only ever appended to, by `audit::append`; never written from here.
        audit: old.audit.clone(),
    };
    if let Some(diff) = merge_diff(&serde_json::to_value(&old)?, &serde_json::to_value(&new)?) {
        ctx.metrics.write("release_status");
        ctx.api::<Release>(namespace)
            .patch_status(
                &release.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": diff })),
            )
            .await?;
    }
    Ok(Action::await_change())
}
