//! The ITSM client of the `changeTicket` gate: signs in (basic, or an OAuth client-credentials
//! token), reads one change record by its number through the Table API, and writes a work
//! note to it. Every call goes through the gates' fenced HTTP client and allow-list.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::prom_client::error_chain;
use super::{read_capped, secret_key};
use crate::api::ticket::{ChangeTicketGate, ItsmCredentials};

/// The most of an ITSM answer that is read.
const BODY_LIMIT: usize = 64 * 1024;
/// The default change table of ServiceNow's Table API.
pub const DEFAULT_PATH: &str = "/api/now/table/change_request";

/// One ITSM instance, as a gate reaches it.
pub struct Itsm {
    pub http: reqwest::Client,
    pub base: reqwest::Url,
    pub spec: ChangeTicketGate,
    pub timeout: Duration,
}

/// How a request signs in.
enum SignIn {
    None,
    Basic(String, String),
    Bearer(String),
}

impl Itsm {
    fn table(&self) -> Result<reqwest::Url, String> {
        let path = self.spec.path.as_deref().unwrap_or(DEFAULT_PATH);
        self.base
            .join(path)
            .map_err(|e| format!("bad table path: {e}"))
    }

    async fn sign_in(&self, secrets: &BTreeMap<String, String>) -> Result<SignIn, String> {
        let value = |r| {
            secrets
                .get(&secret_key(r))
                .cloned()
                .ok_or_else(|| format!("Secret key {} was not read", secret_key(r)))
        };
        match &self.spec.credentials {
            None => Ok(SignIn::None),
            Some(ItsmCredentials { basic: Some(b), .. }) => {
                Ok(SignIn::Basic(value(&b.username)?, value(&b.password)?))
            }
            Some(ItsmCredentials { oauth: Some(o), .. }) => {
                let (id, secret) = (value(&o.client_id)?, value(&o.client_secret)?);
                self.token(&id, &secret).await.map(SignIn::Bearer)
            }
            Some(_) => Err("spec.changeTicket.credentials names no way to sign in".into()),
        }
    }

    /// An OAuth access token for the client, from `<url>/oauth_token.do`.
    async fn token(&self, id: &str, secret: &str) -> Result<String, String> {
        let url = self
            .base
            .join("/oauth_token.do")
            .map_err(|e| e.to_string())?;
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ];
        let request = self.http.post(url).form(&form).timeout(self.timeout);
        let answer = self.json(request, "the OAuth token request").await?;
        answer["access_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| "the OAuth token answer has no access_token".into())
    }

    fn signed(
        &self,
        request: reqwest::RequestBuilder,
        sign_in: &SignIn,
    ) -> reqwest::RequestBuilder {
        let request = request
            .timeout(self.timeout)
            .header("Accept", "application/json");
        match sign_in {
            SignIn::None => request,
            SignIn::Basic(user, password) => request.basic_auth(user, Some(password)),
            SignIn::Bearer(token) => request.bearer_auth(token),
        }
    }

    async fn json(&self, request: reqwest::RequestBuilder, what: &str) -> Result<Value, String> {
        let host = self.base.host_str().unwrap_or("the ITSM").to_string();
        let response = request.send().await.map_err(|e| {
            format!(
                "{what}: no answer from {host}: {}",
                error_chain(&e.without_url())
            )
        })?;
        let status = response.status();
        let body = read_capped(response, BODY_LIMIT).await?;
        if !status.is_success() {
            let body = super::excerpt(&body, 200);
            return Err(format!(
                "{what}: {host} answered HTTP {}: {body}",
                status.as_u16()
            ));
        }
        serde_json::from_str(&body).map_err(|e| format!("{what}: {host} sent no JSON: {e}"))
    }

    /// The change records whose number field is `number` (at most two are asked for).
    pub async fn records(
        &self,
        number: &str,
        secrets: &BTreeMap<String, String>,
    ) -> Result<Vec<Value>, String> {
        let sign_in = self.sign_in(secrets).await?;
        let mut url = self.table()?;
        let query = format!("{}={number}", self.spec.fields.number);
        url.query_pairs_mut()
            .append_pair("sysparm_query", &query)
            .append_pair("sysparm_limit", "2")
            .append_pair("sysparm_exclude_reference_link", "true");
        let request = self.signed(self.http.get(url), &sign_in);
        let answer = self.json(request, "the change request lookup").await?;
        match answer.get("result") {
            Some(Value::Array(records)) => Ok(records.clone()),
            Some(Value::Object(_)) => Ok(vec![answer["result"].clone()]),
            _ => Err("the ITSM's answer has no `result` list".into()),
        }
    }

    /// Adds `note` to the change record `number` as a work note.
    pub async fn work_note(
        &self,
        number: &str,
        note: &str,
        secrets: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        let records = self.records(number, secrets).await?;
        let [record] = records.as_slice() else {
            return Err(format!(
                "{} change records numbered {number}",
                records.len()
            ));
        };
        let id = field(record, &self.spec.fields.id)
            .ok_or_else(|| format!("change {number} has no {}", self.spec.fields.id))?;
        let sign_in = self.sign_in(secrets).await?;
        let mut url = self.table()?;
        url.path_segments_mut()
            .map_err(|_| "the table URL cannot take a record id".to_string())?
            .push(&id);
        let body = serde_json::json!({ self.spec.fields.work_notes.clone(): note });
        let request = self.signed(self.http.patch(url), &sign_in).json(&body);
        self.json(request, "the work note").await.map(drop)
    }
}

/// A field of a record as text: a string, a number, or a reference's `value`.
pub fn field(record: &Value, name: &str) -> Option<String> {
    match record.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => o.get("value")?.as_str().map(str::to_string),
        _ => None,
    }
}
