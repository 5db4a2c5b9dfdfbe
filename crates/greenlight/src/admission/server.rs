//! The webhook server's front door: TLS, who may call it, and the limits that keep slow or
//! hostile clients from holding it. Only the apiserver should reach it: with `--admission-client-ca`
//! it must present a client certificate from that CA, and with `--admission-token-file` the
//! bearer token in that file (both set in the apiserver's `AdmissionConfiguration`). Every
//! client gets a few connections at most, and each phase of a request (handshake, headers,
//! body) a few seconds, so a thousand stalled connections cannot delay the apiserver's reviews.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use tracing::{debug, info, warn};

use super::{AdmissionError, AdmissionState, tls};

/// How the webhook server is set up.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub certificate: tls::CertSource,
    /// Name of the Mutating- and ValidatingWebhookConfiguration whose CA bundle the operator
    /// keeps current; `None` leaves the CA bundle to someone else (e.g. cert-manager).
    pub configuration: Option<String>,
    /// How often certificate files are re-read and the CA bundle checked.
    pub refresh_every: Duration,
    pub limits: Limits,
    pub clients: Clients,
    /// The only user who may change or delete the leader Lease (see [`super::lease`]).
    pub lease_writer: Option<String>,
}

/// How callers prove they are the apiserver. With neither set, anyone who reaches the port
/// may call, and only the network (a NetworkPolicy) keeps others out.
#[derive(Debug, Clone, Default)]
pub struct Clients {
    /// PEM file of the CA whose client certificates are accepted; clients without one fail
    /// the handshake.
    pub ca_file: Option<PathBuf>,
    /// File holding the bearer token callers must present; others get 401.
    pub token_file: Option<PathBuf>,
}

/// What keeps slow or hostile clients from tying up the webhook server (and with it every
/// Release and Approval create, which fail closed).
#[derive(Debug, Clone)]
pub struct Limits {
    /// The longest a TLS handshake may take.
    pub handshake: Duration,
    /// The longest a client may take to send a request's headers, and so also the longest an
    /// idle kept-alive connection stays open.
    pub header_read: Duration,
    /// The longest a client may take to send a request's body.
    pub body: Duration,
    /// The largest body read: two objects of the apiserver's 1.5 MiB limit, with room.
    pub body_bytes: usize,
    /// Connections served at once; more are closed at once.
    pub connections: usize,
    /// Connections served at once from one address.
    pub per_client: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(3),
            header_read: Duration::from_secs(10),
            body: Duration::from_secs(5),
            body_bytes: 6 << 20,
            connections: 4096,
            // The apiserver speaks HTTP/1.1 here, a connection per review in flight, and may
            // come from one address for all its instances (SNAT, konnectivity).
            per_client: 128,
        }
    }
}

/// Starts serving; returns once the listener is bound and the certificate loaded.
pub async fn start(config: ServerConfig, ctx: Arc<AdmissionState>) -> Result<(), AdmissionError> {
    crate::gates::ensure_crypto_provider();
    let certs = tls::Certificates::open(config.certificate.clone(), &ctx.client).await?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(client_verifier(&config.clients, provider)?)
        .with_cert_resolver(certs.clone());
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|source| AdmissionError::Bind {
            addr: config.addr,
            source,
        })?;
    tokio::spawn(tls::keep_fresh(
        certs,
        ctx.client.clone(),
        config.configuration.clone(),
        config.refresh_every,
        ctx.metrics.clone(),
    ));
    let door = Arc::new(Door {
        token: read_token(&config.clients)?,
        limits: config.limits.clone(),
    });
    // /healthz too is behind the door, so it holds no slot open for a caller without the token.
    let app = axum::Router::new()
        .route("/mutate", post(super::mutate_handler))
        .route("/validate", post(super::validate_handler))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(ctx)
        .layer(axum::middleware::from_fn_with_state(door, admit))
        .layer(DefaultBodyLimit::max(config.limits.body_bytes));
    info!(addr = %config.addr, clients = ?config.clients, "admission webhooks listening");
    tokio::spawn(serve(listener, acceptor, app, config.limits));
    Ok(())
}

fn client_verifier(
    clients: &Clients,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, AdmissionError> {
    let Some(path) = &clients.ca_file else {
        return Ok(WebPkiClientVerifier::no_client_auth());
    };
    let refused = |e: String| AdmissionError::Clients(format!("{}: {e}", path.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| refused(e.to_string()))? {
        let cert = cert.map_err(|e| refused(e.to_string()))?;
        roots.add(cert).map_err(|e| refused(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(refused("no certificate in the file".into()));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| refused(e.to_string()))
}

fn read_token(clients: &Clients) -> Result<Option<Vec<u8>>, AdmissionError> {
    let Some(path) = &clients.token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| AdmissionError::Clients(format!("{}: {e}", path.display())))?;
    let token = text.trim();
    if token.len() < 16 {
        return Err(AdmissionError::Clients(format!(
            "{}: the token needs at least 16 characters",
            path.display()
        )));
    }
    Ok(Some(token.as_bytes().to_vec()))
}

/// What every review must pass before it is read.
struct Door {
    token: Option<Vec<u8>>,
    limits: Limits,
}

/// Refuses a caller without the token, and reads the body within its time and size.
async fn admit(State(door): State<Arc<Door>>, req: Request, next: Next) -> Response {
    if let Some(token) = &door.token {
        let presented = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|p| same(p.trim().as_bytes(), token)) {
            return (
                StatusCode::UNAUTHORIZED,
                "the apiserver's token is required\n",
            )
                .into_response();
        }
    }
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(body, door.limits.body_bytes);
    match tokio::time::timeout(door.limits.body, read).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response(),
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "body too slow\n").into_response(),
    }
}

/// Compares secrets in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Open connections, in all and per client address.
struct Slots {
    limits: Limits,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place; given back when dropped.
struct Slot {
    slots: Arc<Slots>,
    ip: IpAddr,
}

impl Slots {
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = open.values().sum();
        let mine = open.get(&ip).copied().unwrap_or(0);
        if total >= self.limits.connections || mine >= self.limits.per_client {
            return None;
        }
        open.insert(ip, mine + 1);
        Some(Slot {
            slots: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections within the limits and serves each on its own task.
async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
    limits: Limits,
) {
    let slots = Arc::new(Slots {
        limits: limits.clone(),
        open: Mutex::default(),
    });
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "webhook accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = slots.take(peer.ip()) else {
            debug!(%peer, "webhook connection refused: too many open");
            continue;
        };
        let (acceptor, service) = (acceptor.clone(), TowerToHyperService::new(app.clone()));
        let limits = limits.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let stream = match tokio::time::timeout(limits.handshake, acceptor.accept(stream)).await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return debug!(%peer, "TLS handshake timed out"),
            };
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                debug!(%peer, error = %e, "webhook connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::AsyncReadExt;

    use super::*;

    /// A webhook server on a free loopback port, with a generated certificate.
    async fn server(limits: Limits, clients: Clients) -> SocketAddr {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let state =
            super::super::test_state(Default::default(), crate::identity::IdentityKey::generate());
        let config = ServerConfig {
            addr,
            certificate: tls::CertSource::SelfSigned {
                hosts: vec!["127.0.0.1".into()],
            },
            configuration: None,
            refresh_every: Duration::from_secs(3600),
            limits,
            clients,
            lease_writer: None,
        };
        start(config, Arc::new(state)).await.unwrap();
        addr
    }

    /// How long until the server closes a connection from `from` that sends nothing.
    async fn closed_after(addr: SocketAddr, from: &str) -> Duration {
        let started = Instant::now();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "closed, not still open: {read:?}"
        );
        started.elapsed()
    }

    fn insecure_client() -> reqwest::Client {
        reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_handshake_is_dropped() {
        let limits = Limits {
            handshake: Duration::from_millis(300),
            ..Default::default()
        };
        let took = closed_after(server(limits, Clients::default()).await, "127.0.0.1").await;
        assert!(took >= Duration::from_millis(250), "{took:?}");
    }

    #[tokio::test]
    async fn one_client_cannot_take_the_slots_of_another() {
        let limits = Limits {
            per_client: 2,
            ..Default::default()
        };
        let addr = server(limits, Clients::default()).await;
        let mut held = vec![];
        for _ in 0..2 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            held.push(socket.connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let third = closed_after(addr, "127.0.0.2").await;
        assert!(
            // Held, it would last the 3 s handshake; closed at once, well under it.
            third < Duration::from_secs(2),
            "the third was held {third:?}"
        );
        let url = format!("https://{addr}/healthz");
        let answered = insecure_client().get(&url).send().await.unwrap();
        assert!(answered.status().is_success(), "another address is served");
    }

    #[tokio::test]
    async fn a_review_without_the_apiservers_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "0123456789abcdef-token\n").unwrap();
        let clients = Clients {
            token_file: Some(token_file),
            ..Default::default()
        };
        let addr = server(Limits::default(), clients).await;
        let url = format!("https://{addr}/mutate");
        let client = insecure_client();
        for bearer in [None, Some("wrong-token-of-some-length")] {
            let mut post = client.post(&url).body("{}");
            if let Some(bearer) = bearer {
                post = post.bearer_auth(bearer);
            }
            assert_eq!(post.send().await.unwrap().status(), 401, "with {bearer:?}");
        }
        let right = client.post(&url).bearer_auth("0123456789abcdef-token");
        let answer = right.body("{}").send().await.unwrap();
        assert_eq!(
            answer.status(),
            200,
            "a malformed review is answered as such"
        );
    }

    #[tokio::test]
    async fn a_client_without_a_certificate_from_the_ca_cannot_connect() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["apiserver".into()]).unwrap();
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, ca.cert.pem()).unwrap();
        let clients = Clients {
            ca_file: Some(ca_file),
            ..Default::default()
        };
        let addr = server(Limits::default(), clients).await;
        let url = format!("https://{addr}/mutate");
        let sent = insecure_client().post(&url).body("{}").send().await;
        assert!(sent.is_err(), "answered without a certificate: {sent:?}");
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
