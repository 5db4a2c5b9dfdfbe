use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::identity::IdentityKey;
use crate::index::Objects;

fn stage(name: &str, pipeline: &str, requires: &[&str], generation: i64) -> Stage {
    serde_json::from_value(json!({
        "apiVersion": "greenlight.dev/v1alpha1", "kind": "Stage",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("{name}-uid"),
                     "generation": generation},
        "spec": {"pipeline": pipeline, "target": {"name": name}, "requires": requires},
    }))
    .unwrap()
}

fn release(generation: i64, status: Value) -> Release {
    serde_json::from_value(json!({
        "apiVersion": "greenlight.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": "r1", "namespace": "shop", "uid": "r1-uid",
                     "generation": generation},
        "spec": {"pipeline": "web", "version": "1.0.0",
                 "artifacts": [{"name": "web", "image": format!("r/web@sha256:{}", "a".repeat(64))}]},
        "status": status,
    }))
    .unwrap()
}

/// dev → test → prod, and a `preview` stage beside dev that nothing requires.
fn pipeline(_: &str) -> Vec<Arc<Stage>> {
    vec![
        Arc::new(stage("dev", "web", &[], 1)),
        Arc::new(stage("test", "web", &["dev"], 1)),
        Arc::new(stage("prod", "web", &["test"], 1)),
        Arc::new(stage("preview", "web", &[], 1)),
    ]
}

fn names(stages: Vec<Arc<Stage>>) -> Vec<String> {
    let mut names: Vec<String> = stages.iter().map(|s| s.name_any()).collect();
    names.sort();
    names
}

fn succeeded_at_dev() -> Value {
    json!({"stages": {"dev": {"phase": "Succeeded"}, "test": {"phase": "Progressing"}}})
}

fn by_release(before: &Release, after: &Release) -> Vec<String> {
    let (b, a) = (release_print(before), release_print(after));
    names(concerned_by_release(Some(&b), Some(&a), "web", pipeline))
}

#[test]
fn an_audit_append_or_a_summary_write_wakes_no_stage() {
    let before = release(1, succeeded_at_dev());
    let mut after = release(1, succeeded_at_dev());
    let status = after.status.as_mut().unwrap();
    status.summary = Some("dev ✓ test …".into());
    status.audit.push(serde_json::from_value(json!({"time": "2026-11-28T10:00:00Z",
        "stage": "test", "action": "RolloutStarted", "actor": "greenlight", "message": "rolling out"}))
        .unwrap());
    assert_eq!(by_release(&before, &after), Vec::<String>::new());
}

#[test]
fn an_entry_change_wakes_its_stage_and_those_that_require_it_only() {
    let before = release(
        1,
        json!({"stages": {"dev": {"phase": "Progressing"},
                                             "test": {"phase": "Progressing"}}}),
    );
    let after = release(1, succeeded_at_dev());
    assert_eq!(by_release(&before, &after), ["dev", "test"]);
}

#[test]
fn an_entry_removed_wakes_its_stage_and_those_that_require_it() {
    let before = release(1, succeeded_at_dev());
    let after = release(1, json!({"stages": {"dev": {"phase": "Succeeded"}}}));
    assert_eq!(by_release(&before, &after), ["prod", "test"]);
}

#[test]
fn a_release_seen_first_gone_or_edited_wakes_every_stage_of_its_pipeline() {
    let every = ["dev", "preview", "prod", "test"];
    let print = release_print(&release(1, succeeded_at_dev()));
    let first = concerned_by_release(None, Some(&print), "web", pipeline);
    assert_eq!(names(first), every);
    let gone = concerned_by_release(Some(&print), None, "web", pipeline);
    assert_eq!(names(gone), every);
    let never_seen = concerned_by_release(None, None, "web", pipeline);
    assert_eq!(names(never_seen), every);
    let edited = release(2, succeeded_at_dev());
    assert_eq!(by_release(&release(1, succeeded_at_dev()), &edited), every);
}

/// The neighbours of a changed stage, noting what was asked of them.
#[derive(Default)]
struct Asked(std::cell::RefCell<Vec<String>>);

impl Neighbours for Asked {
    fn of_pipeline(&self, pipeline: &str) -> Vec<Arc<Stage>> {
        self.0.borrow_mut().push(format!("pipeline {pipeline}"));
        pipeline_of(pipeline)
    }

    fn on_target(&self, target: &str) -> Vec<Arc<Stage>> {
        self.0.borrow_mut().push(format!("target {target}"));
        vec![]
    }
}

fn pipeline_of(name: &str) -> Vec<Arc<Stage>> {
    pipeline(name)
}

#[test]
fn a_stage_status_write_wakes_no_other_stage_and_a_spec_change_wakes_its_pipeline() {
    let mut written = stage("test", "web", &["dev"], 1);
    written.status = Some(Default::default());
    let before = stage_print(&stage("test", "web", &["dev"], 1));
    let after = stage_print(&written);
    let asked = Asked::default();
    assert!(concerned_by_stage(Some(&before), Some(&after), &after, &asked).is_empty());
    assert!(asked.0.borrow().is_empty());
    let edited = stage_print(&stage("test", "web", &[], 2));
    let spec = concerned_by_stage(Some(&before), Some(&edited), &edited, &asked);
    assert_eq!(names(spec).len(), 4);
}

#[test]
fn a_stage_moved_to_another_pipeline_and_target_wakes_the_stages_of_each() {
    let before = stage_print(&stage("test", "web", &["dev"], 1));
    let mut moved = stage("test", "shop", &[], 2);
    moved.spec.target.name = "shop-web".into();
    let after = stage_print(&moved);
    let asked = Asked::default();
    concerned_by_stage(Some(&before), Some(&after), &after, &asked);
    let expected = [
        "pipeline shop",
        "pipeline web",
        "target shop-web",
        "target test",
    ];
    assert_eq!(*asked.0.borrow(), expected);
}

#[test]
fn a_stage_found_gone_wakes_its_pipeline_and_its_target() {
    let print = stage_print(&stage("test", "web", &["dev"], 1));
    let asked = Asked::default();
    concerned_by_stage(Some(&print), None, &print, &asked);
    assert_eq!(*asked.0.borrow(), ["pipeline web", "target test"]);
}

#[test]
fn the_release_mapper_wakes_the_pipeline_once_then_only_on_what_the_stages_read() {
    let stages: Vec<Stage> = pipeline("web").iter().map(|s| (**s).clone()).collect();
    let held = release(1, succeeded_at_dev());
    let objects = Objects {
        stages,
        releases: vec![held.clone()],
        ..Default::default()
    };
    let index = Index::of(objects, Arc::new(IdentityKey::from_bytes(&[7; 32])));
    let map = on_release(index);
    assert_eq!(map(&held).len(), 4, "first seen");
    assert!(map(&held).is_empty(), "seen again unchanged");
    let mut gone = held.clone();
    gone.metadata.name = Some("r0".into());
    assert_eq!(map(&gone).len(), 4, "one the store does not hold");
}

#[test]
fn a_release_deleted_while_a_subscriber_lagged_is_found_gone_at_the_next_change() {
    use kube::runtime::{reflector, watcher::Event};
    use std::sync::atomic::{AtomicU64, Ordering};
    let (store, mut watch) = reflector::store::<Release>();
    let mut other = release(1, succeeded_at_dev());
    other.metadata.name = Some("r2".into());
    let deleted = release(1, succeeded_at_dev());
    watch.apply_watcher_event(&Event::Apply(deleted.clone()));
    watch.apply_watcher_event(&Event::Apply(other.clone()));
    let lags = Arc::new(AtomicU64::new(0));
    let counted = lags.clone();
    let prints = Prints::new(store, move || counted.load(Ordering::Relaxed));
    prints.swap(&deleted, release_print);
    prints.swap(&other, release_print);
    watch.apply_watcher_event(&Event::Delete(deleted));
    assert!(prints.swap(&other, release_print).gone.is_empty());
    lags.fetch_add(1, Ordering::Relaxed);
    let swapped = prints.swap(&other, release_print);
    let gone: Vec<&str> = swapped.gone.iter().map(|(k, _)| k.name.as_str()).collect();
    assert_eq!(gone, ["r1"], "its pipeline's stages are woken");
    assert!(prints.swap(&other, release_print).gone.is_empty(), "once");
}
