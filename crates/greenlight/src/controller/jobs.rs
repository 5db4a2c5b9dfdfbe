//! What Job gates need of the operator's shell: the index's Jobs and pods to judge by, the
//! one writer to start a Job, and the sweep that keeps only the last few finished Jobs of
//! each stage (besides `ttlSecondsAfterFinished`, which clusters before 1.23 may ignore).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::writer::Writer;
use crate::index::Index;
use crate::machine::retention::{JOBS_KEPT_PER_STAGE, JobFacts, jobs_past_keep};

/// The index, the apiserver and the writer, as Job gates see them.
pub struct JobShell {
    index: Arc<Index>,
    client: kube::Client,
    writer: Arc<Writer>,
    /// Refused creations so far, by namespace and Job, for the gate's backoff.
    refused: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for JobShell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobShell")
    }
}

impl JobShell {
    pub fn new(index: Arc<Index>, client: kube::Client, writer: Arc<Writer>) -> Self {
        Self {
            index,
            client,
            writer,
            refused: Mutex::default(),
        }
    }

    fn refused(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.refused.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl crate::gates::job::JobHost for JobShell {
    fn job(&self, namespace: &str, name: &str) -> Option<Arc<Job>> {
        self.index.gate_job(namespace, name)
    }

    fn pods(&self, namespace: &str, job: &str) -> Vec<Arc<Pod>> {
        self.index.gate_job_pods(namespace, job)
    }

    fn fetch(&self, namespace: &str, name: &str) -> BoxFuture<'_, Result<Option<Job>, String>> {
        let api = kube::Api::<Job>::namespaced(self.client.clone(), namespace);
        let name = name.to_string();
        Box::pin(async move { api.get_opt(&name).await.map_err(|e| e.to_string()) })
    }

    fn create(&self, job: Job) -> BoxFuture<'_, Result<Option<String>, String>> {
        Box::pin(async move {
            let key = format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any());
            match self.writer.create("gate_job", &job).await {
                Ok(created) => {
                    self.refused().remove(&key);
                    Ok(created.map(|j| j.uid().unwrap_or_default()))
                }
                Err(e) => {
                    let mut refused = self.refused();
                    // Bounded: a namespace full of refused Jobs forgets the oldest counts.
                    if refused.len() > 10_000 {
                        refused.clear();
                    }
                    *refused.entry(key).or_default() += 1;
                    Err(e.to_string())
                }
            }
        })
    }

    fn refusals(&self, namespace: &str, job: &str) -> u32 {
        let key = format!("{namespace}/{job}");
        self.refused().get(&key).copied().unwrap_or(0)
    }

    fn seal(&self, facts: &serde_json::Value) -> String {
        self.index.identity.seal(facts)
    }

    fn sealed(&self, facts: &serde_json::Value, seal: &str) -> bool {
        self.index.identity.sealed(facts, seal)
    }
}

/// A stage with checks has the primary Service its Jobs reach the release through
/// (`GREENLIGHT_SERVICE`): a rolling stage has none otherwise, and a canary stage's first
/// release (which rolls out directly) comes before its canary makes one.
pub async fn ensure_primary_service(
    world: &super::observe::World,
    ctx: &super::Context,
) -> Result<(), super::error::ReconcileError> {
    if !world.plan.checks.any() {
        return Ok(());
    }
    let namespace = world.stage.namespace().unwrap_or_default();
    let name = crate::workload::primary_name(&world.stage.spec.target.name);
    super::canary::ensure_service(&namespace, &name, &world.stage, &world.target, ctx).await
}

/// Deletes a stage's finished gate Jobs past the newest [`JOBS_KEPT_PER_STAGE`], never one
/// of the release rolling out. A refusal is logged: the next sweep tries again.
pub async fn sweep(
    namespace: &str,
    stage: &str,
    rolling_out: Option<&str>,
    index: &Index,
    writer: &Writer,
) {
    let jobs = index.gate_jobs_of_stage(namespace, stage);
    let facts: Vec<JobFacts> = jobs.iter().map(|j| facts(j, rolling_out)).collect();
    for name in jobs_past_keep(&facts, JOBS_KEPT_PER_STAGE) {
        let Some(job) = jobs.iter().find(|j| j.name_any() == name) else {
            continue;
        };
        if let Err(e) = writer.delete("gate_job_delete", job.as_ref()).await {
            tracing::warn!(job = %name, error = %e, "could not delete a finished gate Job");
        }
    }
}

fn facts(job: &Job, rolling_out: Option<&str>) -> JobFacts {
    let status = job.status.as_ref();
    let conditions = status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let finished = conditions
        .iter()
        .filter(|c| matches!(c.type_.as_str(), "Complete" | "Failed") && c.status == "True")
        .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
        .max();
    let release = job.annotations().get(crate::api::RELEASE_ANNOTATION);
    JobFacts {
        name: job.name_any(),
        finished_at: finished,
        current: rolling_out.is_some_and(|r| release.map(String::as_str) == Some(r)),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn job(release: &str, conditions: &[(&str, &str, &str)]) -> Job {
        let mut job = Job::default();
        job.metadata.name = Some(format!("smoke-{release}"));
        job.annotations_mut()
            .insert(crate::api::RELEASE_ANNOTATION.into(), release.into());
        let conditions = conditions
            .iter()
            .map(|(kind, status, at)| JobCondition {
                type_: kind.to_string(),
                status: status.to_string(),
                last_transition_time: Some(Time(at.parse().unwrap())),
                ..JobCondition::default()
            })
            .collect();
        job.status = Some(JobStatus {
            conditions: Some(conditions),
            ..JobStatus::default()
        });
        job
    }

    #[test]
    fn a_job_is_finished_once_it_completed_or_failed_and_current_while_its_release_rolls_out() {
        let done = job("web-1", &[("Complete", "True", "2026-12-07T01:00:00Z")]);
        let f = facts(&done, Some("web-2"));
        assert_eq!(f.finished_at, Some("2026-12-07T01:00:00Z".parse().unwrap()));
        assert!(!f.current);
        let running = job("web-2", &[("Failed", "False", "2026-12-07T01:00:00Z")]);
        let f = facts(&running, Some("web-2"));
        assert_eq!(
            f.finished_at, None,
            "a condition that is not True is not an end"
        );
        assert!(f.current, "the rolling-out release's Job is never swept");
    }
}
