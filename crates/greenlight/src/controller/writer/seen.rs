//! Writes guarded by the version their decision saw. Each carries the resourceVersion of the
//! object as the decision found it, so a write prepared by a leader that has since been
//! replaced (and delayed on its way, past the lease's deadline) is refused when it lands after
//! the new leader's. A conflict with a change the decision does not depend on (the Deployment's
//! status, another stage's entry in a Release) is written again on the fresh version.

use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde::Serialize;
use serde_json::{Value, json};

use super::{Namespaced, WriteError, Writer};
use crate::api::FIELD_MANAGER;
use crate::api::release::Release;

/// Writes again on a fresh version at most this many times.
const ATTEMPTS: usize = 3;

/// Whether an answer is the apiserver's 409.
fn conflict<T>(result: &Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(e)) if e.code == 409)
}

impl Writer {
    /// Server-side apply of `object` over `observed`, as the decision saw it: refused when the
    /// object's spec changed since (its generation moved). One not observed is created, or
    /// applied over whatever made it meanwhile.
    pub async fn apply_seen<K>(
        &self,
        kind: &'static str,
        object: &K,
        observed: Option<&K>,
    ) -> Result<K, WriteError>
    where
        K: Namespaced + Serialize,
    {
        let name = object.name_any();
        let api =
            Api::<K>::namespaced(self.client.clone(), &object.namespace().unwrap_or_default());
        let mut body = serde_json::to_value(object)?;
        body["apiVersion"] = json!(K::api_version(&()));
        body["kind"] = json!(K::kind(&()));
        let generation = observed.and_then(|o| o.meta().generation);
        let mut version = observed.and_then(|o| o.resource_version());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let what = || format!("apply of {} '{name}'", K::kind(&()));
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.may_write()?;
            body["metadata"]["resourceVersion"] = json!(version);
            let result = api.patch(&name, &params, &Patch::Apply(&body)).await;
            if conflict(&result) && attempt < ATTEMPTS {
                let fresh = api.get_opt(&name).await;
                let fresh = fresh.map_err(|e| WriteError::from_kube(kind, what(), e))?;
                if let Some(fresh) = fresh.filter(|f| f.meta().generation == generation) {
                    version = fresh.resource_version();
                    continue;
                }
            }
            return self.counted(kind, what, result);
        }
    }

    /// A merge patch of a Release's status for `stage`'s entry (`entry`), with `summary` (the
    /// Release's phase, message and conditions derived from the index's copy), on the version
    /// the index holds, which is the one the summary was derived from. On a conflict it is
    /// written again on a fresh version while the entry is still `before` (another stage wrote
    /// its own), without the summary, which the Release's own controller derives again from
    /// what is there; else refused, and the stage decides again. `None`: the Release is gone.
    pub(super) async fn entry_patch(
        &self,
        (namespace, release): (&str, &str),
        (stage, before): (&str, &Value),
        entry: Value,
        summary: Option<Value>,
    ) -> Result<Option<Release>, WriteError> {
        let api = Api::<Release>::namespaced(self.client.clone(), namespace);
        let key = ObjectRef::new(release).within(namespace);
        let mut version = self.releases.get(&key).and_then(|r| r.resource_version());
        let mut patch = json!({ "stages": { stage: entry } });
        if let (Some(Value::Object(fields)), Some(into)) = (summary, patch.as_object_mut()) {
            into.extend(fields);
        }
        let what = || format!("status of Release '{release}'");
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.may_write()?;
            let body = json!({ "metadata": { "resourceVersion": version }, "status": patch });
            let result = api
                .patch_status(release, &PatchParams::default(), &Patch::Merge(body))
                .await;
            if let Err(kube::Error::Api(e)) = &result
                && e.code == 404
            {
                return Ok(None);
            }
            if conflict(&result) && attempt < ATTEMPTS {
                let fresh = api.get_opt(release).await;
                let fresh =
                    fresh.map_err(|e| WriteError::from_kube("release_status", what(), e))?;
                if let Some(fresh) = fresh.filter(|f| entry_of(f, stage) == *before) {
                    version = fresh.resource_version();
                    patch = json!({ "stages": { stage: patch["stages"][stage].take() } });
                    continue;
                }
            }
            return self.counted("release_status", what, result).map(Some);
        }
    }
}

/// `stage`'s entry in `release`'s status, as JSON (`null` when it has none).
fn entry_of(release: &Release, stage: &str) -> Value {
    let entry = release.status.as_ref().and_then(|s| s.stages.get(stage));
    serde_json::to_value(entry).unwrap_or(Value::Null)
}
