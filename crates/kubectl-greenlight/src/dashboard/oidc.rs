//! The shared, signed-in dashboard (`--auth oidc`): people sign in at any OpenID Connect
//! issuer (authorization code with PKCE), and every call the dashboard makes for them
//! impersonates their user and groups, so Kubernetes RBAC decides what each sees and may do.
//! The dashboard's own account needs nothing but `impersonate`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use kube::{Client, Config};
use serde::Deserialize;
use serde_json::Value;

use super::{Session, guard};
use crate::PluginError;

/// The flags of the signed-in mode.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OidcOptions {
    /// The OpenID Connect issuer people sign in at (https, or http on loopback for tests).
    #[arg(long, env = "GREENLIGHT_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// The client ID registered at the issuer for the dashboard.
    #[arg(long, env = "GREENLIGHT_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,
    /// A file with the client secret, for an issuer that wants one besides PKCE.
    #[arg(long, env = "GREENLIGHT_OIDC_CLIENT_SECRET_FILE")]
    pub oidc_client_secret_file: Option<std::path::PathBuf>,
    /// The address people open the dashboard at, e.g. `https://greenlight.example.com`: the
    /// issuer sends them back to its `/auth/callback`.
    #[arg(long, env = "GREENLIGHT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The ID token claim that names the user.
    #[arg(long, default_value = "email")]
    pub oidc_username_claim: String,
    /// The ID token claim that lists the user's groups.
    #[arg(long, default_value = "groups")]
    pub oidc_groups_claim: String,
    /// Put before every user name, as the apiserver's --oidc-username-prefix does.
    #[arg(long, default_value = "")]
    pub oidc_username_prefix: String,
    /// Put before every group name, as the apiserver's --oidc-groups-prefix does.
    #[arg(long, default_value = "")]
    pub oidc_groups_prefix: String,
}

/// Where the issuer's endpoints are, from its discovery document.
#[derive(Deserialize, Debug, Clone)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// How long a sign-in may take, how many sessions are kept in all and per person, and the
/// longest a session lives, whatever the ID token says.
const SIGN_IN_WITHIN: i64 = 600;
const MAX_SESSIONS: usize = 500;
const SESSIONS_PER_PERSON: usize = 3;
const SESSION_AT_MOST: Duration = Duration::from_secs(8 * 3600);
/// A session's cookie, and the cookie that carries a sign-in under way.
pub const COOKIE: &str = "greenlight_session";
const SIGN_IN_COOKIE: &str = "greenlight_sign_in";

/// The cookie of one sign-in, named by its state (which the sealed value begins with), so
/// that two tabs signing in at once do not overwrite each other's.
pub fn sign_in_cookie(state_or_sealed: &str) -> String {
    let state: String = state_or_sealed.chars().take(16).collect();
    format!("{SIGN_IN_COOKIE}_{state}")
}

/// A session, whose it is and until when.
struct Held {
    session: Arc<Session>,
    user: String,
    opened: Instant,
    until: Instant,
}

/// The signed-in mode: the issuer, the key that seals sign-ins under way (kept in the
/// browser, bound to it: nothing is held for them here) and the sessions.
pub struct Provider {
    options: OidcOptions,
    client_id: String,
    secret: Option<String>,
    public_url: String,
    discovery: Discovery,
    keys: Mutex<JwkSet>,
    http: reqwest::Client,
    /// The dashboard's own connection, which each session's impersonates from.
    base: Config,
    namespace: String,
    seal: ring::hmac::Key,
    sessions: Mutex<HashMap<String, Held>>,
}

fn config_error(what: impl std::fmt::Display) -> PluginError {
    PluginError::Config(what.to_string())
}

impl Provider {
    /// Reads the issuer's discovery document and keys; refuses an incomplete configuration.
    pub async fn start(
        options: OidcOptions,
        base: Config,
        namespace: String,
    ) -> Result<Provider, PluginError> {
        let need = |v: &Option<String>, flag: &str| {
            v.clone()
                .ok_or_else(|| config_error(format!("--auth oidc needs {flag}")))
        };
        let issuer = need(&options.oidc_issuer, "--oidc-issuer")?;
        let client_id = need(&options.oidc_client_id, "--oidc-client-id")?;
        let public_url = need(&options.public_url, "--public-url")?
            .trim_end_matches('/')
            .to_string();
        secure_enough(&issuer)?;
        let secret = match &options.oidc_client_secret_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(config_error)?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(config_error)?;
        let well_known = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery: Discovery = fetch_json(&http, &well_known).await?;
        if discovery.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(config_error(format!(
                "the issuer calls itself {}, not {issuer}",
                discovery.issuer
            )));
        }
        for endpoint in [
            &discovery.authorization_endpoint,
            &discovery.token_endpoint,
            &discovery.jwks_uri,
        ] {
            secure_enough(endpoint)?;
        }
        let keys: JwkSet = fetch_json(&http, &discovery.jwks_uri).await?;
        Ok(Provider {
            options,
            client_id,
            secret,
            public_url,
            discovery,
            keys: Mutex::new(keys),
            http,
            base,
            namespace,
            seal: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, guard::token().as_bytes()),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// The `Host` values the dashboard answers to: its public address's.
    pub fn host(&self) -> Option<String> {
        let url = reqwest::Url::parse(&self.public_url).ok()?;
        let host = url.host_str()?;
        Some(match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        })
    }

    pub fn secure_cookie(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    fn redirect_uri(&self) -> String {
        format!("{}/auth/callback", self.public_url)
    }

    /// Where to send the browser to sign in (a fresh state, nonce and PKCE challenge), and
    /// the sealed cookie that binds this sign-in to this browser.
    pub fn sign_in(&self) -> Result<(String, String), PluginError> {
        let (state, nonce, verifier) = (guard::token(), guard::token(), guard::token());
        let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            verifier.as_bytes(),
        ));
        let until = jiff::Timestamp::now().as_second() + SIGN_IN_WITHIN;
        let carried = format!("{state}.{nonce}.{verifier}.{until}");
        let tag = ring::hmac::sign(&self.seal, carried.as_bytes());
        let cookie = format!("{carried}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        let mut url =
            reqwest::Url::parse(&self.discovery.authorization_endpoint).map_err(config_error)?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_uri())
            .append_pair("scope", "openid email profile groups")
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok((url.to_string(), cookie))
    }

    /// The nonce and verifier of the sign-in the browser's cookie carries, when its seal
    /// holds, it has not expired, and the issuer's `state` is its own.
    fn unseal(&self, cookie: Option<&str>, state: &str) -> Option<(String, String)> {
        let (carried, tag) = cookie?.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        ring::hmac::verify(&self.seal, carried.as_bytes(), &tag).ok()?;
        let mut parts = carried.split('.');
        let (ours, nonce, verifier, until) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let fresh = until.parse::<i64>().ok()? >= jiff::Timestamp::now().as_second();
        (fresh && ours == state).then(|| (nonce.to_string(), verifier.to_string()))
    }

    /// The issuer sent the browser back: the code is exchanged, the ID token checked, and a
    /// session made for its user. Returns the session's cookie value.
    pub async fn callback(
        &self,
        code: &str,
        state: &str,
        sign_in: Option<&str>,
    ) -> Result<String, PluginError> {
        let (nonce, verifier) = self.unseal(sign_in, state).ok_or_else(|| {
            PluginError::Forbidden(
                "this sign-in was not started in this browser, or expired: sign in again".into(),
            )
        })?;
        let id_token = self.exchange(code, &verifier).await?;
        let claims = self.verify(&id_token).await?;
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce.as_str()) {
            return Err(PluginError::Forbidden(
                "the ID token is not for this sign-in (nonce)".into(),
            ));
        }
        let (user, groups) = identity(&self.options, &claims)?;
        let expires = claims.get("exp").and_then(Value::as_i64).unwrap_or(0)
            - jiff::Timestamp::now().as_second();
        let lifetime = Duration::from_secs(expires.max(60) as u64).min(SESSION_AT_MOST);
        self.open_session(user, groups, lifetime)
    }

    async fn exchange(&self, code: &str, verifier: &str) -> Result<String, PluginError> {
        let mut form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.to_string()),
            ("redirect_uri", self.redirect_uri()),
            ("client_id", self.client_id.clone()),
            ("code_verifier", verifier.to_string()),
        ];
        if let Some(secret) = &self.secret {
            form.push(("client_secret", secret.clone()));
        }
        let response = self
            .http
            .post(&self.discovery.token_endpoint)
            .form(&form)
            .send()
            .await;
        let response = response
            .map_err(|e| PluginError::Unreachable(format!("the issuer's token endpoint: {e}")))?;
        if !response.status().is_success() {
            return Err(PluginError::Forbidden(format!(
                "the issuer refused the code: {}",
                response.status()
            )));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| PluginError::Api(format!("the issuer's answer: {e}")))?;
        body.get("id_token")
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| PluginError::Api("the issuer's answer has no id_token".into()))
    }

    /// The ID token's claims, once its signature, issuer, audience and expiry hold.
    async fn verify(&self, token: &str) -> Result<Value, PluginError> {
        let bad =
            |e: jsonwebtoken::errors::Error| PluginError::Forbidden(format!("the ID token: {e}"));
        let header = jsonwebtoken::decode_header(token).map_err(bad)?;
        let allowed = [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::ES384,
        ];
        if !allowed.contains(&header.alg) {
            return Err(PluginError::Forbidden(format!(
                "the ID token is signed with {:?}",
                header.alg
            )));
        }
        let kid = header.kid.clone().unwrap_or_default();
        let key = match self.key(&kid) {
            Some(key) => key,
            None => {
                // A key the issuer rotated in since the dashboard started.
                let keys: JwkSet = fetch_json(&self.http, &self.discovery.jwks_uri).await?;
                *self.keys.lock().unwrap_or_else(|e| e.into_inner()) = keys;
                self.key(&kid).ok_or_else(|| {
                    PluginError::Forbidden("the ID token's key is not the issuer's".into())
                })?
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[&self.client_id]);
        validation.set_issuer(&[self.discovery.issuer.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(bad)?;
        Ok(data.claims)
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let jwk = keys
            .keys
            .iter()
            .find(|k| k.common.key_id.as_deref().unwrap_or_default() == kid)?;
        DecodingKey::from_jwk(jwk).ok()
    }

    fn open_session(
        &self,
        user: String,
        groups: Vec<String>,
        lifetime: Duration,
    ) -> Result<String, PluginError> {
        let mut config = self.base.clone();
        config.auth_info.impersonate = Some(user.clone());
        config.auth_info.impersonate_groups = Some(groups);
        let client = Client::try_from(config).map_err(config_error)?;
        let session = Arc::new(Session::new(
            client,
            self.namespace.clone(),
            Some(user.clone()),
        ));
        let id = guard::token();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, held| held.until > Instant::now());
        // A person's oldest sessions make way for a new one, then everyone's oldest: signing in
        // again and again fills nothing up.
        let theirs = sessions.values().filter(|h| h.user == user).count();
        if theirs >= SESSIONS_PER_PERSON {
            evict_oldest(&mut sessions, |h| h.user == user);
        }
        if sessions.len() >= MAX_SESSIONS {
            evict_oldest(&mut sessions, |_| true);
        }
        let now = Instant::now();
        sessions.insert(
            id.clone(),
            Held {
                session,
                user,
                opened: now,
                until: now + lifetime,
            },
        );
        Ok(id)
    }

    /// The session a request's cookie names, while it lasts.
    pub fn session(&self, headers: &axum::http::HeaderMap) -> Option<Arc<Session>> {
        let id = guard::cookie_value(headers, COOKIE)?;
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let held = sessions.get(id)?;
        (held.until > Instant::now()).then(|| held.session.clone())
    }

    /// Ends the session the cookie names (its watches stop with it).
    pub fn sign_out(&self, headers: &axum::http::HeaderMap) {
        let Some(id) = guard::cookie_value(headers, COOKIE) else {
            return;
        };
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

fn evict_oldest(sessions: &mut HashMap<String, Held>, among: impl Fn(&Held) -> bool) {
    let oldest = sessions
        .iter()
        .filter(|(_, h)| among(h))
        .min_by_key(|(_, h)| h.opened);
    if let Some(id) = oldest.map(|(id, _)| id.clone()) {
        sessions.remove(&id);
    }
}

/// The user and groups to impersonate, from the ID token's claims. Kubernetes' own names
/// (`system:`) are never taken from an issuer: a group `system:masters` would be cluster-admin.
pub fn identity(
    options: &OidcOptions,
    claims: &Value,
) -> Result<(String, Vec<String>), PluginError> {
    let claim = &options.oidc_username_claim;
    let name = claims
        .get(claim)
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty());
    let name =
        name.ok_or_else(|| PluginError::Forbidden(format!("the ID token has no '{claim}' claim")))?;
    if claim == "email" && claims.get("email_verified").and_then(Value::as_bool) == Some(false) {
        return Err(PluginError::Forbidden(format!(
            "{name} is not a verified email address"
        )));
    }
    let groups: Vec<String> = match claims.get(&options.oidc_groups_claim) {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        Some(Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    };
    if groups.len() > 100 || groups.iter().any(|g| g.len() > 256) || name.len() > 256 {
        return Err(PluginError::Forbidden(
            "the ID token's user or groups are too long".into(),
        ));
    }
    let user = format!("{}{name}", options.oidc_username_prefix);
    let groups: Vec<String> = groups
        .iter()
        .map(|g| format!("{}{g}", options.oidc_groups_prefix))
        .collect();
    if let Some(reserved) = std::iter::once(&user)
        .chain(&groups)
        .find(|n| n.starts_with("system:"))
    {
        return Err(PluginError::Forbidden(format!(
            "'{reserved}' is a name Kubernetes keeps for itself"
        )));
    }
    Ok((user, groups))
}

/// https, or http to a loopback address (a local issuer in tests).
fn secure_enough(url: &str) -> Result<(), PluginError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| config_error(format!("{url}: {e}")))?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(config_error(format!(
            "{url}: the issuer must be reached over https"
        ))),
    }
}

async fn fetch_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, PluginError> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| PluginError::Unreachable(format!("{url}: {e}")))?;
    if !response.status().is_success() {
        return Err(PluginError::Api(format!("{url}: {}", response.status())));
    }
    response
        .json()
        .await
        .map_err(|e| PluginError::Api(format!("{url}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> OidcOptions {
        OidcOptions {
            oidc_username_claim: "email".into(),
            oidc_groups_claim: "groups".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_user_and_groups_come_from_the_claims_with_their_prefixes() {
        let claims =
            serde_json::json!({"email": "alice@example.com", "groups": ["release-managers"]});
        let mut o = options();
        assert_eq!(
            identity(&o, &claims).unwrap(),
            (
                "alice@example.com".into(),
                vec!["release-managers".to_string()]
            )
        );
        o.oidc_username_prefix = "oidc:".into();
        o.oidc_groups_prefix = "oidc:".into();
        assert_eq!(
            identity(&o, &claims).unwrap(),
            (
                "oidc:alice@example.com".into(),
                vec!["oidc:release-managers".to_string()]
            )
        );
    }

    #[test]
    fn kubernetes_own_names_an_unverified_email_or_no_name_are_refused() {
        let o = options();
        for claims in [
            serde_json::json!({"email": "alice@example.com", "groups": ["system:masters"]}),
            serde_json::json!({"email": "system:admin"}),
            serde_json::json!({"email": "alice@example.com", "email_verified": false}),
            serde_json::json!({"sub": "alice"}),
        ] {
            assert!(identity(&o, &claims).is_err(), "{claims}");
        }
    }

    fn provider() -> Provider {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Provider {
            options: options(),
            client_id: "gl".into(),
            secret: None,
            public_url: "https://gl.example.com".into(),
            discovery: Discovery {
                issuer: "https://idp.example.com".into(),
                authorization_endpoint: "https://idp.example.com/authorize".into(),
                token_endpoint: "https://idp.example.com/token".into(),
                jwks_uri: "https://idp.example.com/keys".into(),
            },
            keys: Mutex::new(JwkSet { keys: Vec::new() }),
            http: reqwest::Client::new(),
            base: Config::new("http://127.0.0.1:9".parse().unwrap()),
            namespace: "shop".into(),
            seal: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"test"),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    #[test]
    fn a_sign_in_holds_only_with_its_own_sealed_cookie_and_state() {
        let p = provider();
        let (url, sealed) = p.sign_in().unwrap();
        let state = url
            .split("state=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        assert!(p.unseal(Some(&sealed), state).is_some());
        assert!(
            p.unseal(Some(&sealed), "another-state").is_none(),
            "someone else's answer"
        );
        assert!(p.unseal(None, state).is_none(), "another browser");
        let tampered = sealed.replacen(state, &"0".repeat(state.len()), 1);
        assert!(
            p.unseal(Some(&tampered), &"0".repeat(state.len()))
                .is_none(),
            "a forged seal"
        );
        let (carried, _) = sealed.rsplit_once('.').unwrap();
        let (front, _) = carried.rsplit_once('.').unwrap();
        let stale = format!("{front}.{}", jiff::Timestamp::now().as_second() - 1);
        let tag = ring::hmac::sign(&p.seal, stale.as_bytes());
        let expired = format!("{stale}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        assert!(
            p.unseal(Some(&expired), state).is_none(),
            "an expired sign-in"
        );
        assert_eq!(
            sign_in_cookie(state),
            sign_in_cookie(&sealed),
            "found by its state"
        );
    }

    #[tokio::test]
    async fn a_persons_oldest_session_makes_way_for_a_new_one() {
        let p = provider();
        let hour = Duration::from_secs(3600);
        let first = p.open_session("alice".into(), vec![], hour).unwrap();
        for _ in 0..SESSIONS_PER_PERSON {
            p.open_session("alice".into(), vec![], hour).unwrap();
        }
        p.open_session("bob".into(), vec![], hour).unwrap();
        let sessions = p.sessions.lock().unwrap();
        assert_eq!(
            sessions.values().filter(|h| h.user == "alice").count(),
            SESSIONS_PER_PERSON
        );
        assert!(!sessions.contains_key(&first), "alice's oldest went");
        assert_eq!(sessions.len(), SESSIONS_PER_PERSON + 1);
    }

    #[test]
    fn the_issuer_is_reached_over_https_or_on_loopback() {
        assert!(secure_enough("https://login.example.com").is_ok());
        assert!(secure_enough("http://127.0.0.1:5556/dex").is_ok());
        assert!(secure_enough("http://login.example.com").is_err());
        assert!(secure_enough("http://127.0.0.1.nip.io").is_err());
    }
}
