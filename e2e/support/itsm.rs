//! A local ITSM for the tests: the subset of ServiceNow's Table API the `changeTicket` gate
//! uses (read a change request by number, add a work note to it, and an OAuth
//! client-credentials token), with change requests the test moves between states.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, patch, post};
use base64::Engine;
use serde_json::{Value, json};

/// The user and password the ITSM accepts.
pub const USER: &str = "greenlight";
pub const PASSWORD: &str = "itsm-s3cret";
const TOKEN: &str = "itsm-oauth-token";

#[derive(Clone, Default)]
pub struct ItsmServer {
    changes: Arc<Mutex<BTreeMap<String, Value>>>,
    notes: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
    /// Requests refused for want of valid credentials.
    pub refused: Arc<Mutex<usize>>,
}

impl ItsmServer {
    /// Puts change `number` in `state` (ServiceNow's raw value, e.g. `-4` for Assess) with
    /// this approval and planned window.
    pub fn set(
        &self,
        number: &str,
        state: &str,
        approval: &str,
        window: (jiff::Timestamp, jiff::Timestamp),
    ) {
        let time = |t: jiff::Timestamp| t.strftime("%Y-%m-%d %H:%M:%S").to_string();
        let record = json!({
            "sys_id": format!("sys-{number}"), "number": number, "state": state,
            "approval": approval, "start_date": time(window.0), "end_date": time(window.1),
        });
        self.changes
            .lock()
            .unwrap()
            .insert(number.to_string(), record);
    }

    /// Sets one more field of change `number` (e.g. the release it is for).
    pub fn set_field(&self, number: &str, field: &str, value: &str) {
        let mut changes = self.changes.lock().unwrap();
        if let Some(record) = changes.get_mut(number) {
            record[field] = Value::String(value.to_string());
        }
    }

    /// The work notes written to change `number`, oldest first.
    pub fn notes(&self, number: &str) -> Vec<String> {
        self.notes
            .lock()
            .unwrap()
            .get(number)
            .cloned()
            .unwrap_or_default()
    }

    /// Starts serving on a free loopback port; returns `host:port`.
    pub async fn start(&self) -> String {
        let app = axum::Router::new()
            .route("/api/now/table/change_request", get(lookup))
            .route("/api/now/table/change_request/{id}", patch(note))
            .route("/oauth_token.do", post(token))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn signed_in(&self, headers: &HeaderMap) -> bool {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        let given = headers.get("authorization").and_then(|h| h.to_str().ok());
        let ok =
            given == Some(&format!("Basic {basic}")) || given == Some(&format!("Bearer {TOKEN}"));
        if !ok {
            *self.refused.lock().unwrap() += 1;
        }
        ok
    }
}

type Answer = (StatusCode, String);

fn refused() -> Answer {
    let body = json!({"error": {"message": "User Not Authenticated"}});
    (StatusCode::UNAUTHORIZED, body.to_string())
}

async fn lookup(
    State(itsm): State<ItsmServer>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Answer {
    if !itsm.signed_in(&headers) {
        return refused();
    }
    let wanted = query
        .get("sysparm_query")
        .and_then(|q| q.strip_prefix("number="));
    let changes = itsm.changes.lock().unwrap();
    let found: Vec<Value> = wanted
        .and_then(|n| changes.get(n))
        .cloned()
        .into_iter()
        .collect();
    (StatusCode::OK, json!({ "result": found }).to_string())
}

async fn note(
    State(itsm): State<ItsmServer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Answer {
    if !itsm.signed_in(&headers) {
        return refused();
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let changes = itsm.changes.lock().unwrap();
    let Some(record) = changes.values().find(|c| c["sys_id"] == id.as_str()) else {
        return (
            StatusCode::NOT_FOUND,
            json!({"error": {"message": "No Record found"}}).to_string(),
        );
    };
    let number = record["number"].as_str().unwrap_or_default().to_string();
    let text = body["work_notes"].as_str().unwrap_or_default().to_string();
    itsm.notes
        .lock()
        .unwrap()
        .entry(number)
        .or_default()
        .push(text);
    (StatusCode::OK, json!({ "result": record }).to_string())
}

async fn token(State(_): State<ItsmServer>, body: String) -> Answer {
    let form: BTreeMap<&str, &str> = body
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    match (form.get("client_id"), form.get("client_secret")) {
        (Some(&USER), Some(&PASSWORD)) => (
            StatusCode::OK,
            json!({"access_token": TOKEN, "expires_in": 1800}).to_string(),
        ),
        _ => (
            StatusCode::UNAUTHORIZED,
            json!({"error": "access_denied"}).to_string(),
        ),
    }
}
