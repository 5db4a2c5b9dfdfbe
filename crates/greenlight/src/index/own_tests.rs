use std::sync::Arc;

use kube::runtime::reflector::ObjectRef;

use super::*;
use crate::api::Stage;
use crate::api::release::StagePhaseForRelease as Phase;

fn stage(version: &str) -> Stage {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "greenlight.dev/v1alpha1", "kind": "Stage",
        "metadata": {"name": "dev", "namespace": "shop", "uid": "one", "resourceVersion": version},
        "spec": {"pipeline": "web", "target": {"name": "web"}}
    }))
    .unwrap()
}

fn version(read: Read<Arc<Stage>>) -> String {
    match read {
        Read::Known(Some(s)) => s.metadata.resource_version.clone().unwrap_or_default(),
        Read::Known(None) => "none".into(),
        Read::Unknown => "unknown".into(),
    }
}

fn held(version: &str) -> Option<Arc<Stage>> {
    Some(Arc::new(stage(version)))
}

fn dev() -> ObjectRef<Stage> {
    ObjectRef::from_obj(&stage("1"))
}

#[test]
fn a_write_is_read_back_until_the_store_holds_it_then_the_store_is() {
    let own = OwnWrites::default();
    assert_eq!(version(own.read(&dev(), held("1"))), "1");
    own.wrote(stage("2"));
    assert_eq!(
        version(own.read(&dev(), held("1"))),
        "2",
        "the store lags the write"
    );
    own.seen(&stage("2"));
    assert_eq!(
        version(own.read(&dev(), held("3"))),
        "3",
        "once the watch brought the write, a later change by someone else is read"
    );
}

#[test]
fn a_write_answered_after_the_watch_brought_it_does_not_hide_a_later_change() {
    let own = OwnWrites::default();
    own.seen(&stage("2"));
    own.wrote(stage("2"));
    assert_eq!(version(own.read(&dev(), held("3"))), "3");
}

#[test]
fn a_deleted_or_recreated_object_is_never_read_from_a_write() {
    let own = OwnWrites::default();
    own.wrote(stage("2"));
    assert_eq!(version(own.read(&dev(), None)), "none", "deleted");
    own.wrote(stage("4"));
    let mut again = stage("1");
    again.metadata.uid = Some("two".into());
    assert_eq!(
        version(own.read(&dev(), Some(Arc::new(again)))),
        "1",
        "a new object under the old name is not the one written"
    );
}

#[test]
fn after_a_relist_a_pending_write_is_trusted_neither_way() {
    let own = OwnWrites::default();
    own.wrote(stage("2"));
    own.relisted();
    assert_eq!(version(own.read(&dev(), held("1"))), "unknown");
    own.forget(&dev());
    assert_eq!(version(own.read(&dev(), held("1"))), "1");
}

fn release(version: &str, entries: serde_json::Value) -> Release {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "greenlight.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": "r1", "namespace": "shop", "uid": "r1", "resourceVersion": version},
        "spec": {"pipeline": "web", "version": "1",
                 "artifacts": [{"name": "web", "image": format!("r/w@sha256:{}", "a".repeat(64))}]},
        "status": {"stages": entries}
    }))
    .unwrap()
}

fn phase(read: Read<ReleaseStageStatus>) -> String {
    match read {
        Read::Known(Some(e)) => format!("{:?}", e.phase),
        Read::Known(None) => "none".into(),
        Read::Unknown => "unknown".into(),
    }
}

#[test]
fn a_stage_reads_its_own_entry_until_the_store_holds_it_while_others_write_the_release() {
    let own = OwnEntries::default();
    let waiting = serde_json::json!({"dev": {"phase": "Waiting"}});
    let store = release("1", waiting.clone());
    assert_eq!(phase(own.entry(&store, "dev")), "Waiting");
    own.wrote(
        &release("3", waiting.clone()),
        "dev",
        Some(ReleaseStageStatus::new(Phase::Failed)),
    );
    own.wrote(
        &release("2", waiting.clone()),
        "prod",
        Some(ReleaseStageStatus::new(Phase::Waiting)),
    );
    assert_eq!(
        phase(own.entry(&store, "dev")),
        "Failed",
        "the store still holds version 1"
    );
    own.seen(&release("2", waiting.clone()));
    assert_eq!(
        phase(own.entry(&release("2", waiting.clone()), "dev")),
        "Failed",
        "another stage's write came first; this one's is still on its way"
    );
    own.seen(&release(
        "3",
        serde_json::json!({"dev": {"phase": "Failed"}}),
    ));
    let later = release("4", serde_json::json!({"dev": {"phase": "Progressing"}}));
    assert_eq!(phase(own.entry(&later, "dev")), "Progressing");
}

#[test]
fn an_entry_not_brought_after_a_relist_sends_the_stage_to_the_apiserver() {
    let own = OwnEntries::default();
    let store = release("1", serde_json::json!({}));
    own.wrote(
        &release("2", serde_json::json!({})),
        "dev",
        Some(ReleaseStageStatus::new(Phase::Failed)),
    );
    own.relisted();
    assert_eq!(phase(own.entry(&store, "dev")), "unknown");
    own.forget(&ObjectRef::from_obj(&store));
    assert_eq!(phase(own.entry(&store, "dev")), "none");
}

#[test]
fn a_read_from_the_apiserver_of_a_version_the_store_holds_ends_the_doubt() {
    let own = OwnWrites::default();
    own.wrote(stage("2"));
    own.relisted();
    own.seen(&stage("3"));
    assert_eq!(
        version(own.read(&dev(), held("3"))),
        "unknown",
        "the relist stepped over 2"
    );
    own.wrote(stage("3"));
    assert_eq!(
        version(own.read(&dev(), held("3"))),
        "3",
        "the store holds what the apiserver answered"
    );
    let entries = OwnEntries::default();
    let store = release("5", serde_json::json!({"dev": {"phase": "Succeeded"}}));
    entries.wrote(
        &release("4", serde_json::json!({})),
        "dev",
        Some(ReleaseStageStatus::new(Phase::Failed)),
    );
    entries.relisted();
    assert_eq!(phase(entries.entry(&store, "dev")), "unknown");
    entries.seen(&store);
    entries.wrote(
        &store,
        "dev",
        Some(ReleaseStageStatus::new(Phase::Succeeded)),
    );
    assert_eq!(phase(entries.entry(&store, "dev")), "Succeeded");
}

#[test]
fn a_release_read_from_the_apiserver_without_the_stages_entry_is_held_as_none() {
    let entries = OwnEntries::default();
    let store = release("1", serde_json::json!({"dev": {"phase": "Failed"}}));
    let wrote = release("2", serde_json::json!({"dev": {"phase": "Failed"}}));
    entries.wrote(&wrote, "dev", Some(ReleaseStageStatus::new(Phase::Failed)));
    entries.relisted();
    assert_eq!(phase(entries.entry(&store, "dev")), "unknown");
    let cleared = release("3", serde_json::json!({}));
    entries.wrote(&cleared, "dev", None);
    assert_eq!(
        phase(entries.entry(&store, "dev")),
        "none",
        "the apiserver's answer, not another read, until the watch brings it"
    );
}
