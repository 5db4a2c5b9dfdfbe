//! A small OpenID Connect issuer for the dashboard's sign-in tests, speaking the real
//! protocol: discovery, an authorization endpoint that signs in whoever the test says sits at
//! the browser, a token endpoint that checks the PKCE verifier, and its key set. ID tokens are
//! ES256, signed with a P-256 key made by ring at start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::Deserialize;
use serde_json::json;

pub const CLIENT_ID: &str = "greenlight-dashboard";

pub struct Issuer {
    pub url: String,
    state: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    url: String,
    /// Each user's groups.
    users: HashMap<String, Vec<String>>,
    /// Who signs in at the next authorization request.
    at_browser: Mutex<Option<String>>,
    grants: Mutex<HashMap<String, Grant>>,
    key: EcdsaKeyPair,
    /// Token requests refused (a wrong verifier, an unknown code...).
    refused: Mutex<Vec<String>>,
}

struct Grant {
    user: String,
    nonce: String,
    challenge: String,
    redirect_uri: String,
}

impl Issuer {
    /// An issuer on a loopback port, knowing `users` and their groups.
    pub async fn start(users: &[(&str, &[&str])]) -> Issuer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let users = users
            .iter()
            .map(|(u, g)| (u.to_string(), g.iter().map(|g| g.to_string()).collect()))
            .collect();
        let state = Arc::new(Shared {
            url: url.clone(),
            users,
            at_browser: Mutex::new(None),
            grants: Mutex::new(HashMap::new()),
            key,
            refused: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/keys", get(keys))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Issuer { url, state, task }
    }

    /// The next sign-in is `user`'s.
    pub fn sign_in_as(&self, user: &str) {
        *self.state.at_browser.lock().unwrap() = Some(user.to_string());
    }

    /// Why token requests were refused, if any were.
    pub fn refused(&self) -> Vec<String> {
        self.state.refused.lock().unwrap().clone()
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn discovery(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(json!({
        "issuer": s.url,
        "authorization_endpoint": format!("{}/authorize", s.url),
        "token_endpoint": format!("{}/token", s.url),
        "jwks_uri": format!("{}/keys", s.url),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "id_token_signing_alg_values_supported": ["ES256"],
    }))
    .into_response()
}

#[derive(Deserialize)]
struct Authorize {
    client_id: String,
    redirect_uri: String,
    state: String,
    nonce: String,
    code_challenge: String,
    code_challenge_method: String,
}

async fn authorize(State(s): State<Arc<Shared>>, Query(q): Query<Authorize>) -> Response {
    if q.client_id != CLIENT_ID || q.code_challenge_method != "S256" {
        return (
            StatusCode::BAD_REQUEST,
            "unknown client, or no S256 challenge",
        )
            .into_response();
    }
    let Some(user) = s.at_browser.lock().unwrap().clone() else {
        return (StatusCode::FORBIDDEN, "nobody at the browser").into_response();
    };
    let code = random_code();
    let grant = Grant {
        user,
        nonce: q.nonce,
        challenge: q.code_challenge,
        redirect_uri: q.redirect_uri.clone(),
    };
    s.grants.lock().unwrap().insert(code.clone(), grant);
    let mut back = reqwest::Url::parse(&q.redirect_uri).unwrap();
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &q.state);
    Redirect::to(back.as_str()).into_response()
}

#[derive(Deserialize)]
struct TokenAsked {
    grant_type: String,
    code: String,
    redirect_uri: String,
    client_id: String,
    code_verifier: String,
}

async fn token(State(s): State<Arc<Shared>>, Form(t): Form<TokenAsked>) -> Response {
    let grant = s.grants.lock().unwrap().remove(&t.code);
    let challenge = B64.encode(ring::digest::digest(
        &ring::digest::SHA256,
        t.code_verifier.as_bytes(),
    ));
    let why = match &grant {
        None => Some("an unknown or used code"),
        Some(_) if t.grant_type != "authorization_code" || t.client_id != CLIENT_ID => {
            Some("a wrong grant or client")
        }
        Some(g) if g.redirect_uri != t.redirect_uri => Some("another redirect URI"),
        Some(g) if g.challenge != challenge => Some("a verifier that does not match the challenge"),
        Some(_) => None,
    };
    if let Some(why) = why {
        s.refused.lock().unwrap().push(why.to_string());
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": why})),
        )
            .into_response();
    }
    let grant = grant.unwrap();
    axum::Json(
        json!({"access_token": "unused", "token_type": "Bearer", "id_token": id_token(&s, &grant)}),
    )
    .into_response()
}

fn id_token(s: &Shared, grant: &Grant) -> String {
    let now = jiff::Timestamp::now().as_second();
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": "test-key"});
    let claims = json!({
        "iss": s.url, "sub": grant.user, "aud": CLIENT_ID, "iat": now, "exp": now + 3600,
        "nonce": grant.nonce, "email": format!("{}@example.com", grant.user), "email_verified": true,
        "groups": s.users.get(&grant.user).cloned().unwrap_or_default(),
    });
    let signing_input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let signature = s
        .key
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .unwrap();
    format!("{signing_input}.{}", B64.encode(signature.as_ref()))
}

async fn keys(State(s): State<Arc<Shared>>) -> Response {
    // An uncompressed P-256 point: 0x04, then x and y, 32 bytes each.
    let point = s.key.public_key().as_ref();
    axum::Json(json!({"keys": [{
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "test-key",
        "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
    }]}))
    .into_response()
}

fn random_code() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).unwrap();
    B64.encode(bytes)
}
