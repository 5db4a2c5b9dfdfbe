//! The managed `<target>-primary` Deployment: built from the Git-owned target's pod template
//! with a release's images, and read back to tell whether its rollout is complete.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::release::Artifact;
use crate::api::{
    ORPHANED_ANNOTATION, RELEASE_ANNOTATION, REVISION_LABEL, STAGE_LABEL, TEMPLATE_ANNOTATION,
    WORKLOAD_LABEL,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    #[error("target Deployment '{0}' has no pod template containers")]
    EmptyTemplate(String),
    #[error("the pinned template {0} cannot be read back: {1}")]
    BadPin(String, String),
    #[error(
        "artifact '{artifact}' names no container of target Deployment '{target}' (containers: {containers})"
    )]
    UnknownContainer {
        artifact: String,
        target: String,
        containers: String,
    },
}

pub use crate::api::{canary_name, primary_name};

/// The primary Deployment for `release`, or for nothing (`release: None`, zero replicas). It
/// has no owner: deleting its Stage (by hand, or a GitOps prune, in any propagation) never
/// takes what serves down with it. The Stage's finalizer marks it orphaned instead.
pub fn build_primary(
    target: &Deployment,
    stage: &str,
    release: Option<(&str, &[Artifact])>,
    replicas: i32,
) -> Result<Deployment, WorkloadError> {
    let name = primary_name(target.metadata.name.as_deref().unwrap_or_default());
    build_workload(target, &name, stage, release, replicas)
}

/// `target` with the pod template (and `minReadySeconds`) a rollout pinned in its place: what
/// the managed workloads are built from, whatever the target says now.
pub fn pinned(target: &Deployment, pinned: &PinnedSource) -> Result<Deployment, WorkloadError> {
    let mut d = target.clone();
    let spec = d.spec.get_or_insert_with(Default::default);
    spec.template = serde_json::from_value(pinned.template.clone())
        .map_err(|e| WorkloadError::BadPin(pinned.digest.clone(), e.to_string()))?;
    spec.min_ready_seconds = pinned.min_ready_seconds;
    // On the Deployment, not its pod template: pinning what already runs restarts no pod.
    d.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(TEMPLATE_ANNOTATION.to_string(), pinned.digest.clone());
    Ok(d)
}

/// The digest of the pinned template a Deployment was built from (or, on a pinned source,
/// will be).
fn pinned_digest(d: &Deployment) -> Option<String> {
    d.metadata
        .annotations
        .as_ref()?
        .get(TEMPLATE_ANNOTATION)
        .cloned()
}

/// A pinned template, ready to build from.
#[derive(Debug, Clone, PartialEq)]
pub struct PinnedSource {
    pub digest: String,
    pub template: serde_json::Value,
    pub min_ready_seconds: Option<i32>,
}

/// What of the target a rollout pins: its pod template and `minReadySeconds`, with the digest
/// they are known by (`sha256:` and hex of their JSON as the apiserver returns them).
pub fn pin_of(target: &Deployment) -> PinnedSource {
    let spec = target.spec.clone().unwrap_or_default();
    let template = serde_json::to_value(&spec.template).unwrap_or_default();
    let min_ready_seconds = spec.min_ready_seconds;
    let digest = crate::identity::digest(&(&template, min_ready_seconds));
    PinnedSource {
        digest: format!("sha256:{digest}"),
        template,
        min_ready_seconds,
    }
}

/// A managed Deployment `name` running `release` on the target's pod template. None has an
/// owner while it may serve: a garbage collector (a foreground prune deletes dependents
/// first) must never take away what traffic still reaches. The Stage's finalizer hands the
/// canary to it once the route no longer does.
pub fn build_workload(
    target: &Deployment,
    name: &str,
    stage: &str,
    release: Option<(&str, &[Artifact])>,
    replicas: i32,
) -> Result<Deployment, WorkloadError> {
    let target_name = target.metadata.name.clone().unwrap_or_default();
    let name = name.to_string();
    let mut template = target
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let pod_spec = template
        .spec
        .as_mut()
        .filter(|p| !p.containers.is_empty())
        .ok_or_else(|| WorkloadError::EmptyTemplate(target_name.clone()))?;
    if let Some((_, artifacts)) = release {
        set_images(pod_spec, artifacts, &target_name)?;
    }
    let selector = BTreeMap::from([(WORKLOAD_LABEL.to_string(), name.clone())]);
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.extend(selector.clone());
    labels.insert(STAGE_LABEL.to_string(), stage.to_string());
    let release_name = release.map(|(r, _)| r.to_string()).unwrap_or_default();
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(RELEASE_ANNOTATION.to_string(), release_name.clone());
    let target_spec = target.spec.clone().unwrap_or_default();
    Ok(Deployment {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: target.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([
                (STAGE_LABEL.to_string(), stage.to_string()),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "greenlight".to_string(),
                ),
            ])),
            annotations: Some(
                [(RELEASE_ANNOTATION.to_string(), release_name)]
                    .into_iter()
                    .chain(pinned_digest(target).map(|d| (TEMPLATE_ANNOTATION.to_string(), d)))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(if release.is_some() { replicas } else { 0 }),
            selector: LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            },
            template,
            strategy: Some(serving_strategy()),
            min_ready_seconds: target_spec.min_ready_seconds,
            revision_history_limit: target_spec.revision_history_limit,
            ..Default::default()
        }),
        status: None,
    })
}

/// How every managed workload rolls, whatever its target says: new pods first, no old pod
/// stopped before a new one is available, so a workload that gets traffic always has
/// available pods to serve it (a `Recreate` target would leave none during each rollout).
pub fn serving_strategy() -> DeploymentStrategy {
    DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::String("25%".into())),
            max_unavailable: Some(IntOrString::Int(0)),
        }),
    }
}

/// The strategy the target asks for when the managed workloads cannot use it: `Recreate`,
/// which leaves a workload with no pods during each rollout. (A RollingUpdate's
/// `maxUnavailable` is defaulted by the apiserver, so it is overridden without a word.)
pub fn overridden_strategy(target: &Deployment) -> Option<String> {
    let strategy = target.spec.as_ref()?.strategy.as_ref()?;
    (strategy.type_.as_deref() == Some("Recreate")).then(|| "Recreate".to_string())
}

/// Puts each artifact's image into the container of its name.
fn set_images(
    pod_spec: &mut k8s_openapi::api::core::v1::PodSpec,
    artifacts: &[Artifact],
    target: &str,
) -> Result<(), WorkloadError> {
    for artifact in artifacts {
        let known: Vec<String> = pod_spec
            .containers
            .iter()
            .chain(pod_spec.init_containers.iter().flatten())
            .map(|c| c.name.clone())
            .collect();
        let container = pod_spec
            .containers
            .iter_mut()
            .chain(pod_spec.init_containers.iter_mut().flatten())
            .find(|c| c.name == artifact.name)
            .ok_or_else(|| WorkloadError::UnknownContainer {
                artifact: artifact.name.clone(),
                target: target.to_string(),
                containers: known.join(", "),
            })?;
        container.image = Some(artifact.image.clone());
    }
    Ok(())
}

/// A ClusterIP Service in front of one managed workload, with the target's container ports;
/// unowned, like the workloads.
/// The port the stage's Services serve on: the target's first container port, else 80.
pub fn service_port(target: &Deployment) -> i32 {
    let service = build_service(target, "", "", None);
    let ports = service.spec.and_then(|s| s.ports).unwrap_or_default();
    ports.first().map_or(80, |p| p.port)
}

/// The Service `workload` in front of a managed workload, selecting its pods, and with a
/// `revision` only those of that release.
pub fn build_service(
    target: &Deployment,
    workload: &str,
    stage: &str,
    revision: Option<&str>,
) -> Service {
    build_service_named(target, workload, workload, stage, revision)
}

/// The ports a Service in front of `target`'s pods serves: each container port, or 80.
pub fn service_ports(target: &Deployment) -> Vec<ServicePort> {
    let ports: Vec<ServicePort> = target
        .spec
        .iter()
        .flat_map(|s| s.template.spec.iter())
        .flat_map(|p| p.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| ServicePort {
            name: p.name.clone(),
            port: p.container_port,
            target_port: Some(IntOrString::Int(p.container_port)),
            // Server-side apply on Kubernetes 1.20 needs the key field of the ports list.
            protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
            ..Default::default()
        })
        .collect();
    if ports.is_empty() {
        vec![ServicePort {
            name: Some("http".into()),
            port: 80,
            target_port: Some(IntOrString::Int(80)),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]
    } else {
        ports
    }
}

/// [`build_service`] under a name of its own (blue-green's `-active` Service).
pub fn build_service_named(
    target: &Deployment,
    name: &str,
    workload: &str,
    stage: &str,
    revision: Option<&str>,
) -> Service {
    let ports = service_ports(target);
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: target.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([
                (STAGE_LABEL.to_string(), stage.to_string()),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "greenlight".to_string(),
                ),
            ])),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(
                [(WORKLOAD_LABEL, workload)]
                    .into_iter()
                    .chain(revision.map(|r| (REVISION_LABEL, r)))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    }
}

/// The revision of `release` on the target's pinned template: the first 10 hex digits of a
/// SHA-256 of both and the images, short enough for a label and new for every release,
/// template and set of images.
pub fn revision(release: &str, template: Option<&str>, artifacts: &[Artifact]) -> String {
    // The images too: a Release deleted and made again under its name is another revision.
    let digest = greenlight_core::digest::digest(&(release, template, artifacts));
    digest.chars().take(10).collect()
}

/// The revision label a managed workload's pod template carries, if any.
pub fn revision_of(deployment: &Deployment) -> Option<&str> {
    let template = deployment.spec.as_ref()?.template.metadata.as_ref()?;
    template
        .labels
        .as_ref()?
        .get(REVISION_LABEL)
        .map(String::as_str)
}

/// Puts `revision` on the pod template: the workload's selector stays as it is (it cannot
/// change), so the label only narrows what a Service selecting it reaches.
pub fn label_revision(deployment: &mut Deployment, revision: &str) {
    let Some(spec) = deployment.spec.as_mut() else {
        return;
    };
    let meta = spec
        .template
        .metadata
        .get_or_insert_with(ObjectMeta::default);
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(REVISION_LABEL.to_string(), revision.to_string());
}

/// True when the observed primary already has the spec we would apply.
pub fn matches_desired(observed: &Deployment, desired: &Deployment) -> bool {
    let annotation = |d: &Deployment| {
        d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RELEASE_ANNOTATION))
            .cloned()
    };
    let (Some(o), Some(d)) = (observed.spec.as_ref(), desired.spec.as_ref()) else {
        return false;
    };
    let weight = |d: &Deployment| {
        d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::api::WEIGHT_ANNOTATION))
            .cloned()
    };
    let owners = |d: &Deployment| d.metadata.owner_references.clone().unwrap_or_default();
    let orphaned = |d: &Deployment| {
        d.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ORPHANED_ANNOTATION))
    };
    annotation(observed) == annotation(desired)
        && !orphaned(observed)
        && pinned_digest(observed) == pinned_digest(desired)
        && owners(observed) == owners(desired)
        && weight(observed) == weight(desired)
        && o.replicas == d.replicas
        && o.strategy == d.strategy
        && images(o) == images(d)
        && o.template.metadata.as_ref().and_then(|m| m.labels.clone())
            == d.template.metadata.as_ref().and_then(|m| m.labels.clone())
}

fn images(spec: &DeploymentSpec) -> Vec<Option<String>> {
    spec.template
        .spec
        .iter()
        .flat_map(|p| p.containers.iter().map(|c| c.image.clone()))
        .collect()
}

pub use greenlight_core::observed::PrimaryView;

/// Reads a managed Deployment's rollout the way `kubectl rollout status` does.
pub fn observe(deployment: &Deployment) -> PrimaryView {
    let annotation = |key: &str| {
        deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(key))
            .filter(|r| !r.is_empty())
            .cloned()
    };
    let (release, template) = (annotation(RELEASE_ANNOTATION), pinned_digest(deployment));
    let want = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let observed_current =
        status.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let complete = observed_current
        && updated >= want
        && total == updated
        && available >= want
        && available == total;
    PrimaryView {
        release,
        template,
        replicas: want,
        available: complete,
        serving: want == 0 || (observed_current && new_available(updated, available, total) > 0),
        detail: detail(want, updated, available, total),
    }
}

/// How many pods of the current template are available, at least. Deployment status does not
/// say which pods are available; assume the old ones are, so the count is never overstated.
fn new_available(updated: i32, available: i32, total: i32) -> i32 {
    let old = (total - updated).max(0);
    (available - old).clamp(0, updated)
}

/// A rollout's progress in words, counting only pods of the new template as available: the
/// pods of the previous template still running are named apart, never counted as progress.
fn detail(want: i32, updated: i32, available: i32, total: i32) -> String {
    let old = (total - updated).max(0);
    if old == 0 {
        return format!("{updated}/{want} updated, {available}/{want} available");
    }
    let new_available = new_available(updated, available, total);
    format!(
        "{updated}/{want} updated, {new_available}/{want} of the new template available, {old} pod(s) of the previous template still running"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn progress_counts_only_the_new_templates_pods_as_available() {
        assert_eq!(super::detail(2, 2, 2, 2), "2/2 updated, 2/2 available");
        let mid = super::detail(2, 1, 2, 2);
        assert!(
            mid.starts_with("1/2 updated, 1/2 of the new template available, 1 pod(s)"),
            "{mid}"
        );
        let none_ready = super::detail(2, 1, 1, 2);
        assert!(
            none_ready.contains("0/2 of the new template available"),
            "{none_ready}"
        );
    }

    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    fn target() -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(0),
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "web".into(),
                            image: Some("web:latest".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "greenlight.dev/v1alpha1".into(),
            kind: "Stage".into(),
            name: "dev".into(),
            uid: "u".into(),
            controller: Some(true),
            ..Default::default()
        }
    }

    #[test]
    fn primary_runs_the_release_images_under_its_own_selector() {
        let artifacts = [Artifact {
            name: "web".into(),
            image: "web@sha256:abc".into(),
        }];
        let d = build_primary(&target(), "dev", Some(("r1", &artifacts)), 3).unwrap();
        let spec = d.spec.unwrap();
        assert_eq!(d.metadata.name.as_deref(), Some("web-primary"));
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(
            spec.template.spec.unwrap().containers[0].image.as_deref(),
            Some("web@sha256:abc")
        );
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels["app"], "web");
        assert_eq!(labels[WORKLOAD_LABEL], "web-primary");
        assert_eq!(
            spec.selector.match_labels.unwrap()[WORKLOAD_LABEL],
            "web-primary"
        );
    }

    #[test]
    fn a_revision_is_short_new_for_each_release_and_template_and_narrows_only_a_service() {
        let template = Some("sha256:0a1b");
        let (r2, r3) = (
            revision("web-2", template, &[]),
            revision("web-3", template, &[]),
        );
        assert_eq!(r2.len(), 10);
        assert_ne!(r2, r3);
        let other_template = revision("web-2", Some("sha256:2c3d"), &[]);
        assert_ne!(r2, other_template, "a new template, a new revision");
        let image = Artifact {
            name: "web".into(),
            image: "registry.local/web@sha256:ab".into(),
        };
        let remade = revision("web-2", template, &[image]);
        assert_ne!(
            r2, remade,
            "a release made again with other images, a new revision"
        );
        assert_eq!(
            r2,
            revision("web-2", template, &[]),
            "the same, the same revision"
        );
        let mut canary = build_workload(&target(), "web-canary", "dev", None, 1).unwrap();
        let selector = canary.spec.as_ref().unwrap().selector.clone();
        label_revision(&mut canary, &r2);
        assert_eq!(revision_of(&canary), Some(r2.as_str()));
        assert_eq!(
            canary.spec.as_ref().unwrap().selector,
            selector,
            "a workload's own selector, which cannot change, does not name the revision"
        );
        let narrowed = build_service(&target(), "web-canary", "dev", Some(&r2));
        let selector = narrowed.spec.unwrap().selector.unwrap();
        assert_eq!(selector[REVISION_LABEL], r2);
        assert_eq!(selector[WORKLOAD_LABEL], "web-canary");
        let primary = build_service(&target(), "web-primary", "dev", None);
        assert_eq!(primary.spec.unwrap().selector.unwrap().len(), 1);
    }

    #[test]
    fn no_managed_workload_or_service_has_an_owner_while_it_may_serve() {
        let primary = build_primary(&target(), "dev", None, 1).unwrap();
        assert_eq!(primary.metadata.owner_references, None);
        let canary = build_workload(&target(), "web-canary", "dev", None, 0);
        assert_eq!(canary.unwrap().metadata.owner_references, None);
        let service = build_service(&target(), "web-primary", "dev", None);
        assert_eq!(service.metadata.owner_references, None);
        let mut owned = primary.clone();
        owned.metadata.owner_references = Some(vec![owner()]);
        assert!(
            !matches_desired(&owned, &primary),
            "a primary an older version made owned is applied again, without its owner"
        );
    }

    #[test]
    fn a_primary_is_built_from_the_pinned_template_whatever_the_target_says_now() {
        let pin = pin_of(&target());
        let mut edited = target();
        let template = &mut edited.spec.as_mut().unwrap().template;
        template.spec.as_mut().unwrap().containers.push(Container {
            name: "miner".into(),
            image: Some("registry.example.com/evil/miner:latest".into()),
            ..Default::default()
        });
        assert_ne!(
            pin_of(&edited).digest,
            pin.digest,
            "the edit has a digest of its own"
        );
        let source = pinned(&edited, &pin).unwrap();
        let artifacts = [Artifact {
            name: "web".into(),
            image: "web@sha256:abc".into(),
        }];
        let d = build_primary(&source, "prod", Some(("r1", &artifacts)), 2).unwrap();
        let containers = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let names: Vec<&str> = containers
            .containers
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["web"], "no sidecar the target gained since");
        assert_eq!(observe(&d).template.as_deref(), Some(pin.digest.as_str()));
        let from_edit = build_primary(
            &pinned(&edited, &pin_of(&edited)).unwrap(),
            "prod",
            Some(("r1", &artifacts)),
            2,
        )
        .unwrap();
        assert!(
            !matches_desired(&d, &from_edit),
            "another template is another rollout"
        );
    }

    #[test]
    fn an_artifact_for_an_unknown_container_is_an_error() {
        let artifacts = [Artifact {
            name: "sidecar".into(),
            image: "x@sha256:abc".into(),
        }];
        let err = build_primary(&target(), "dev", Some(("r1", &artifacts)), 1).unwrap_err();
        assert!(err.to_string().contains("sidecar"));
    }

    #[test]
    fn rollout_is_complete_only_when_every_replica_is_updated_and_available() {
        let artifacts = [Artifact {
            name: "web".into(),
            image: "web@sha256:abc".into(),
        }];
        let mut d = build_primary(&target(), "dev", Some(("r1", &artifacts)), 2).unwrap();
        d.metadata.generation = Some(2);
        let status = |observed, updated, total, available| DeploymentStatus {
            observed_generation: Some(observed),
            updated_replicas: Some(updated),
            replicas: Some(total),
            available_replicas: Some(available),
            ..Default::default()
        };
        d.status = Some(status(1, 2, 2, 2));
        assert!(!observe(&d).available, "old generation");
        d.status = Some(status(2, 2, 3, 2));
        assert!(!observe(&d).available, "an old pod remains");
        d.status = Some(status(2, 2, 2, 1));
        assert!(!observe(&d).available, "one pod unavailable");
        d.status = Some(status(2, 2, 2, 2));
        let view = observe(&d);
        assert!(view.available);
        assert_eq!(view.release.as_deref(), Some("r1"));
    }

    /// The canary of the last release still had its pod when the next one came: the
    /// Deployment counts that pod as available, but traffic for the new release must wait
    /// for a pod of its own.
    #[test]
    fn a_workload_serves_a_release_only_with_a_pod_of_its_template_available() {
        let artifacts = [Artifact {
            name: "web".into(),
            image: "web@sha256:abc".into(),
        }];
        let mut d = build_primary(&target(), "dev", Some(("r2", &artifacts)), 1).unwrap();
        d.metadata.generation = Some(5);
        let status = |updated, total, available| DeploymentStatus {
            observed_generation: Some(5),
            updated_replicas: Some(updated),
            replicas: Some(total),
            available_replicas: Some(available),
            ..Default::default()
        };
        d.status = Some(status(1, 2, 1));
        assert!(!observe(&d).serving, "only the old pod is available");
        d.status = Some(status(0, 1, 1));
        assert!(!observe(&d).serving, "no pod of the new template yet");
        d.status = Some(status(1, 2, 2));
        assert!(observe(&d).serving, "the new pod is available too");
        d.status = Some(status(1, 1, 1));
        assert!(observe(&d).serving);
    }
}
