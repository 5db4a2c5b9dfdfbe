//! `Notifier`: where a stage tells people what happens to releases (a Slack or Teams channel,
//! or any JSON webhook), and which of those moments they hear about.

// Each `printcolumn(...)` repeats `type_ = ...`, which this lint mistakes for a duplicate.
#![allow(clippy::duplicated_attributes)]

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::Condition;
use super::gate::SecretKeyRef;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "greenlight.dev",
    version = "v1alpha1",
    kind = "Notifier",
    namespaced,
    status = "NotifierStatus",
    shortname = "gn",
    category = "greenlight",
    doc = "A destination for notices about releases: a Slack or Teams incoming webhook, or a JSON webhook. Stages name it in spec.notifiers.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Message", type_ = "string", json_path = ".status.message"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NotifierSpec {
    #[serde(rename = "type")]
    pub notifier_type: NotifierType,
    /// The Secret key that holds the destination URL (an incoming webhook URL is a secret:
    /// anyone who has it can post). The operator needs `get` on that Secret (a Role).
    pub url_secret_ref: SecretKeyRef,
    /// Which notices to send; every kind when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub events: Vec<NoticeKind>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotifierType {
    /// A Slack incoming webhook; the message is Block Kit.
    Slack,
    /// A Microsoft Teams (Workflows) incoming webhook; the message is an Adaptive Card.
    Teams,
    /// Any URL; the notice as JSON.
    Webhook,
}

impl NotifierType {
    /// The name in `spec.type`, also a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Teams => "teams",
            Self::Webhook => "webhook",
        }
    }
}

/// The moments a notice is sent for.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum NoticeKind {
    /// A release will roll out: it waits for its schedule or a window (when, and why not
    /// now), or its gates passed and its pre-rollout checks start.
    Upcoming,
    Started,
    /// The canary's share of traffic changed.
    StepChanged,
    /// A release waits for people's approval: who may give it.
    WaitingForApproval,
    Succeeded,
    Failed,
    RolledBack,
    /// Verification passed: the release counts as succeeded at the stage.
    Verified,
    /// An approved emergency rolls out past what the stage's emergency policy allows.
    BreakGlass,
    /// The review of an emergency rollout is past its due date and still open.
    ReviewOverdue,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotifierStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The controller name the operator reports its Events under (events.k8s.io
/// `reportingController`, core `reportingComponent`).
pub const REPORTING_CONTROLLER: &str = "greenlight.dev/operator";
/// Annotation on a notice's outbox Event: the Notifiers it was delivered to so far.
pub const DELIVERED_ANNOTATION: &str = "greenlight.dev/delivered-to";
