//! The `changeTicket` gate: a release goes out only under an approved change request of the
//! organisation's ITSM tool, in its implement state and inside its planned window. The
//! defaults speak ServiceNow's Table API; the field names and states are settings, so any
//! ITSM that answers a Table-API-shaped query fits.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::patterns::DURATION_PATTERN;
use super::server::SecretKeyRef;

/// Asks the ITSM tool about the change request the Release names in `spec.changeTicket`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeTicketGate {
    /// Base URL of the ITSM instance, e.g. `https://acme.service-now.com`. It must pass the
    /// operator's outbound allow-list, like every gate's destination.
    #[schemars(regex(pattern = r"^https?://"), length(max = 2048))]
    pub url: String,
    /// Path of the change table. Default `/api/now/table/change_request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/[A-Za-z0-9/_.-]*$"), length(max = 256))]
    pub path: Option<String>,
    /// How the gate signs in; none for an ITSM that needs no credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<ItsmCredentials>,
    #[serde(default)]
    pub fields: TicketFields,
    #[serde(default)]
    pub states: TicketStates,
    /// Write the outcome of each rollout it let through back to the ticket as a work note.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub work_notes: bool,
    /// Let a change request that already opened this gate for one release open it for
    /// another. Off by default: a change is approved for one release.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_reuse: bool,
    /// How long to wait for an answer. Default 10s, at most 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: Option<String>,
}

/// Credentials from Secrets in the Gate's namespace: basic (a user and password) or OAuth
/// (a client id and secret, exchanged at `<url>/oauth_token.do` for a token).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItsmCredentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicCredentials>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthCredentials>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicCredentials {
    pub username: SecretKeyRef,
    pub password: SecretKeyRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuthCredentials {
    pub client_id: SecretKeyRef,
    pub client_secret: SecretKeyRef,
}

/// The names of the change record's fields. Defaults are ServiceNow's.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct TicketFields {
    #[schemars(length(min = 1, max = 64))]
    pub number: String,
    #[schemars(length(min = 1, max = 64))]
    pub state: String,
    #[schemars(length(min = 1, max = 64))]
    pub approval: String,
    #[schemars(length(min = 1, max = 64))]
    pub planned_start: String,
    #[schemars(length(min = 1, max = 64))]
    pub planned_end: String,
    /// The record's id, for writing a work note to it.
    #[schemars(length(min = 1, max = 64))]
    pub id: String,
    #[schemars(length(min = 1, max = 64))]
    pub work_notes: String,
    /// A field that names the release the change is for: when set, it must hold the
    /// Release's name or version, so a change approved for one release opens nothing for
    /// another, whatever ticket number CI writes on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub release: Option<String>,
}

impl Default for TicketFields {
    fn default() -> Self {
        Self {
            number: "number".into(),
            state: "state".into(),
            approval: "approval".into(),
            planned_start: "start_date".into(),
            planned_end: "end_date".into(),
            id: "sys_id".into(),
            work_notes: "work_notes".into(),
            release: None,
        }
    }
}

/// What the state and approval fields hold. Defaults are ServiceNow's change states (raw
/// values: New -5, Assess -4, Authorize -3, Scheduled -2, Implement -1, Review 0, Closed 3,
/// Canceled 4).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct TicketStates {
    /// The states a release may go out in.
    #[schemars(length(min = 1, max = 10), inner(length(min = 1, max = 64)))]
    pub implement: Vec<String>,
    /// The states in which the change is still on its way: the release waits. Any other
    /// state (reviewed, closed, cancelled) fails the gate.
    #[schemars(length(max = 20), inner(length(min = 1, max = 64)))]
    pub waiting: Vec<String>,
    /// The approval values that count as approved.
    #[schemars(length(min = 1, max = 10), inner(length(min = 1, max = 64)))]
    pub approved: Vec<String>,
}

impl Default for TicketStates {
    fn default() -> Self {
        let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
        Self {
            implement: strings(&["-1"]),
            waiting: strings(&["-5", "-4", "-3", "-2"]),
            approved: strings(&["approved"]),
        }
    }
}
