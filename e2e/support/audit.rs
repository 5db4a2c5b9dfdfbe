//! The apiserver's audit log, kept small: it records the writes (create, update, patch,
//! delete) of the two replica users and nothing else, each with what was sent and what came
//! back, so a test can tell which replica's write landed when.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde_json::Value;

use super::controlplane::REPLICA_USERS;

/// Writes the audit policy into `dir`; returns its path. Reviews (SubjectAccessReviews and
/// the like) are requests, not writes, and are left out.
pub fn write_policy(dir: &Path) -> PathBuf {
    let path = dir.join("audit-policy.yaml");
    let policy = format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived, ResponseStarted]\nrules:\n- level: None\n  resources: [{{group: authorization.k8s.io}}, {{group: authentication.k8s.io}}]\n- level: RequestResponse\n  users: [{}]\n  verbs: [create, update, patch, delete, deletecollection]\n- level: None\n",
        REPLICA_USERS.join(", ")
    );
    std::fs::write(&path, policy).expect("audit policy");
    path
}

/// One write as the apiserver recorded it once it had answered.
#[derive(Debug, Clone)]
pub struct Write {
    pub user: String,
    pub verb: String,
    /// The resource, with its subresource: `releases/status`.
    pub resource: String,
    pub name: String,
    pub code: u16,
    /// When the apiserver had read the request.
    pub received: Timestamp,
    /// When it had answered.
    pub completed: Timestamp,
    /// The resourceVersion of the object the answer carried (an etcd revision, so versions
    /// of different objects compare): a write that stored something carries a new one.
    pub version: Option<u64>,
    /// The request body (the patch, or the object), as sent.
    pub request: Value,
}

impl Write {
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// Whether it stored something: its answer carries a resourceVersion newer than that of
    /// every write of `writes` answered before it arrived. (Versions are etcd revisions, and
    /// one that changed nothing, such as an apply of what is there, answers with the
    /// object's version as it was.)
    pub fn stored(&self, writes: &[Write]) -> bool {
        let before = writes
            .iter()
            .filter(|w| w.completed < self.received)
            .filter_map(|w| w.version)
            .max();
        self.version.is_some_and(|v| before.is_none_or(|b| v > b))
    }

    /// `patch releases/status shop-1 200`.
    pub fn describe(&self) -> String {
        format!(
            "{} {} {} {}",
            self.verb, self.resource, self.name, self.code
        )
    }
}

/// The writes recorded in the audit log at `log` on objects of `namespace`, in the order
/// they were answered.
pub fn writes(log: &Path, namespace: &str) -> Vec<Write> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut writes: Vec<Write> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["stage"] == "ResponseComplete" && e["objectRef"]["namespace"] == namespace)
        .filter_map(|e| parse(&e))
        .collect();
    writes.sort_by_key(|w| w.completed);
    writes
}

fn parse(event: &Value) -> Option<Write> {
    let object = &event["objectRef"];
    let mut resource = object["resource"].as_str()?.to_string();
    if let Some(sub) = object["subresource"].as_str() {
        resource = format!("{resource}/{sub}");
    }
    let time = |field: &str| event[field].as_str()?.parse::<Timestamp>().ok();
    Some(Write {
        user: event["user"]["username"].as_str()?.to_string(),
        verb: event["verb"].as_str()?.to_string(),
        resource,
        // A create names its object in its body only.
        name: object["name"]
            .as_str()
            .or(event["requestObject"]["metadata"]["name"].as_str())
            .unwrap_or_default()
            .to_string(),
        code: u16::try_from(event["responseStatus"]["code"].as_u64()?).ok()?,
        received: time("requestReceivedTimestamp")?,
        completed: time("stageTimestamp")?,
        version: event["responseObject"]["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok()),
        request: event["requestObject"].clone(),
    })
}
