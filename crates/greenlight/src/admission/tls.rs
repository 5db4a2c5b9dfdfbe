//! The webhook server's certificate: read from a mounted Secret (`tls.crt`, `tls.key`, and
//! `ca.crt` when there is one, as cert-manager writes them) or generated at start-up and signed
//! by a generated CA. Either way it is swapped in place while the server runs: files are re-read
//! when they change, and a generated certificate is renewed a month before it expires. The CA
//! bundle is patched into the named webhook configurations whenever it differs.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use jiff::Timestamp;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{Api, Patch, PatchParams};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::json;
use tracing::{info, warn};

use super::certsecret::{CertSecret, Stored};
use super::issue;
use crate::metrics::Metrics;

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// A directory with `tls.crt` and `tls.key` (and optionally `ca.crt`), e.g. a mounted Secret.
    Files(PathBuf),
    /// Generated in memory for these DNS names and IP addresses.
    SelfSigned { hosts: Vec<String> },
    /// Kept in a Secret the operator creates once and renews (see [`super::certsecret`]).
    Secret {
        namespace: String,
        name: String,
        hosts: Vec<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: String, message: String },
    #[error("the private key is not usable for TLS: {0}")]
    Key(String),
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error(transparent)]
    Secret(#[from] super::certsecret::SecretError),
    #[error("a certificate Secret needs a client to read it")]
    NoClient,
}

/// One certificate with what is needed to serve and to trust it.
struct Material {
    key: Arc<CertifiedKey>,
    /// PEM of the CA that clients must trust, when known.
    ca_bundle: Option<String>,
    /// What the material was built from, to notice a change.
    origin: Vec<u8>,
    /// When a generated certificate should be renewed.
    renew_at: Option<Timestamp>,
    /// What the Secret held, for a certificate kept in one.
    stored: Option<Stored>,
}

/// The certificate the server presents, replaceable while connections are served.
pub struct Certificates {
    source: CertSource,
    current: RwLock<Arc<Material>>,
    store: Option<CertSecret>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.read().key.clone())
    }
}

impl Certificates {
    /// The certificate from files or generated; one kept in a Secret needs [`Self::open`].
    pub fn load(source: CertSource) -> Result<Arc<Self>, TlsError> {
        let material = build(&source)?;
        Ok(Arc::new(Self {
            source,
            current: RwLock::new(Arc::new(material)),
            store: None,
        }))
    }

    /// The certificate from any source, reading (or creating) its Secret through `client`.
    pub async fn open(source: CertSource, client: &kube::Client) -> Result<Arc<Self>, TlsError> {
        let CertSource::Secret {
            namespace,
            name,
            hosts,
        } = &source
        else {
            return Self::load(source);
        };
        let store = CertSecret::new(client.clone(), namespace, name, hosts.clone());
        let material = from_stored(store.settle(None).await?)?;
        Ok(Arc::new(Self {
            source,
            current: RwLock::new(Arc::new(material)),
            store: Some(store),
        }))
    }

    fn read(&self) -> Arc<Material> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The CA bundle (PEM) clients should trust, when known.
    pub fn ca_bundle(&self) -> Option<String> {
        self.read().ca_bundle.clone()
    }

    /// Takes a new certificate if the files or the Secret changed, or a generated one is due;
    /// true if it did.
    pub async fn refresh(&self) -> Result<bool, TlsError> {
        let old = self.read();
        let fresh = match (&self.source, &self.store) {
            (_, Some(store)) => {
                let stored = store.settle(old.stored.as_ref()).await?;
                if old.stored.as_ref() == Some(&stored) {
                    return Ok(false);
                }
                from_stored(stored)?
            }
            (CertSource::Secret { .. }, None) => return Err(TlsError::NoClient),
            (CertSource::Files(dir), None) => {
                let files = read_files(dir)?;
                if files.origin() == old.origin {
                    return Ok(false);
                }
                from_files(&files)?
            }
            (CertSource::SelfSigned { hosts }, None) => {
                if old.renew_at.is_none_or(|at| Timestamp::now() < at) {
                    return Ok(false);
                }
                self_signed(hosts)?
            }
        };
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        Ok(true)
    }
}

struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Option<Vec<u8>>,
    dir: PathBuf,
}

impl Files {
    fn origin(&self) -> Vec<u8> {
        [
            self.cert.as_slice(),
            self.key.as_slice(),
            self.ca.as_deref().unwrap_or_default(),
        ]
        .concat()
    }
}

fn read_files(dir: &std::path::Path) -> Result<Files, TlsError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    Ok(Files {
        cert: read("tls.crt")?,
        key: read("tls.key")?,
        ca: read("ca.crt").ok(),
        dir: dir.to_path_buf(),
    })
}

fn build(source: &CertSource) -> Result<Material, TlsError> {
    match source {
        CertSource::Files(dir) => from_files(&read_files(dir)?),
        CertSource::SelfSigned { hosts } => self_signed(hosts),
        CertSource::Secret { .. } => Err(TlsError::NoClient),
    }
}

fn from_files(files: &Files) -> Result<Material, TlsError> {
    Ok(Material {
        key: certified_key(&files.cert, &files.key, &files.dir)?,
        ca_bundle: files
            .ca
            .as_ref()
            .map(|ca| String::from_utf8_lossy(ca).into_owned()),
        origin: files.origin(),
        renew_at: None,
        stored: None,
    })
}

fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    dir: &std::path::Path,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let pem_error = |file: &str, message: String| TlsError::Pem {
        path: dir.join(file).display().to_string(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error("tls.crt", e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error("tls.crt", "holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| pem_error("tls.key", format!("holds no private key: {e}")))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| TlsError::Key(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

/// What a server presents: `cert` and `key`, trusted through `ca_bundle`.
fn material(
    cert: &str,
    key: &str,
    ca_bundle: String,
    renew_at: Option<Timestamp>,
) -> Result<Material, TlsError> {
    Ok(Material {
        key: certified_key(
            cert.as_bytes(),
            key.as_bytes(),
            std::path::Path::new("<generated>"),
        )?,
        origin: [cert.as_bytes(), key.as_bytes(), ca_bundle.as_bytes()].concat(),
        ca_bundle: Some(ca_bundle),
        renew_at,
        stored: None,
    })
}

fn from_stored(stored: Stored) -> Result<Material, TlsError> {
    let mut made = material(
        &stored.cert,
        &stored.key,
        stored.ca_bundle.clone(),
        Some(stored.renew_at),
    )?;
    made.stored = Some(stored);
    Ok(made)
}

fn self_signed(hosts: &[String]) -> Result<Material, TlsError> {
    let now = Timestamp::now();
    let ca = issue::new_ca(now, issue::CERTIFICATE_DAYS, issue::RENEW_BEFORE_DAYS)?;
    let leaf = issue::sign_leaf(&ca.key, hosts, now)?;
    material(&leaf.cert, &leaf.key, ca.cert, Some(leaf.renew_at))
}

/// Re-reads or renews the certificate every `every`, and keeps the CA bundle of the named
/// webhook configurations equal to the one clients need.
pub async fn keep_fresh(
    certs: Arc<Certificates>,
    client: kube::Client,
    configuration: Option<String>,
    every: Duration,
    metrics: Arc<Metrics>,
) {
    // A configuration created after start-up gets its CA bundle at once, not at the next tick.
    let appeared = Arc::new(tokio::sync::Notify::new());
    if let Some(name) = &configuration {
        tokio::spawn(watch_configurations(
            client.clone(),
            name.clone(),
            appeared.clone(),
        ));
    }
    loop {
        match certs.refresh().await {
            Ok(true) => {
                metrics.webhook_certificate_reloads.inc();
                info!("webhook serving certificate replaced");
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, "keeping the current webhook certificate"),
        }
        if let (Some(name), Some(bundle)) = (&configuration, certs.ca_bundle()) {
            match publish_ca_bundle(&client, name, &bundle).await {
                Ok(true) => info!(configuration = %name, "webhook CA bundle patched"),
                Ok(false) => {}
                Err(e) => {
                    warn!(configuration = %name, error = %e, "cannot patch the webhook CA bundle")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = appeared.notified() => {}
        }
    }
}

/// Notifies `changed` whenever the webhook configurations named `name` are created or
/// changed (someone, Git say, may have put their `caBundle` back).
async fn watch_configurations(
    client: kube::Client,
    name: String,
    changed: Arc<tokio::sync::Notify>,
) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let config = || watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mutating = watcher(
        Api::<MutatingWebhookConfiguration>::all(client.clone()),
        config(),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()));
    let validating = watcher(Api::<ValidatingWebhookConfiguration>::all(client), config())
        .default_backoff()
        .map(|e| e.map(|_| ()));
    let mut events = std::pin::pin!(futures::stream::select(mutating, validating));
    while let Some(event) = events.next().await {
        match event {
            Ok(()) => changed.notify_one(),
            Err(e) => tracing::debug!(error = %e, "watching the webhook configurations"),
        }
    }
}

/// Patches `bundle` into every webhook of the mutating and validating configurations named
/// `name` whose CA bundle differs; true if it wrote anything. A missing configuration is fine:
/// the webhooks are simply not registered.
async fn publish_ca_bundle(
    client: &kube::Client,
    name: &str,
    bundle: &str,
) -> Result<bool, kube::Error> {
    let wanted = bundle.as_bytes();
    let mut changed = false;
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    if let Some(config) = mutating.get_opt(name).await? {
        let webhooks = config.webhooks.unwrap_or_default();
        let bundles = webhooks
            .iter()
            .map(|w| (&w.name, &w.client_config.ca_bundle));
        changed |= patch_bundle(&mutating, name, &stale(bundles, wanted), bundle).await?;
    }
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    if let Some(config) = validating.get_opt(name).await? {
        let webhooks = config.webhooks.unwrap_or_default();
        let bundles = webhooks
            .iter()
            .map(|w| (&w.name, &w.client_config.ca_bundle));
        changed |= patch_bundle(&validating, name, &stale(bundles, wanted), bundle).await?;
    }
    Ok(changed)
}

/// Names of the webhooks whose CA bundle is not `wanted`.
fn stale<'a>(
    webhooks: impl Iterator<Item = (&'a String, &'a Option<k8s_openapi::ByteString>)>,
    wanted: &[u8],
) -> Vec<String> {
    webhooks
        .filter(|(_, ca)| ca.as_ref().map(|b| b.0.as_slice()) != Some(wanted))
        .map(|(name, _)| name.clone())
        .collect()
}

async fn patch_bundle<K>(
    api: &Api<K>,
    name: &str,
    webhooks: &[String],
    bundle: &str,
) -> Result<bool, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if webhooks.is_empty() {
        return Ok(false);
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(bundle);
    // `webhooks` merges by name, so only the CA bundle of each listed webhook changes.
    let patch = json!({
        "webhooks": webhooks
            .iter()
            .map(|w| json!({"name": w, "clientConfig": {"caBundle": encoded}}))
            .collect::<Vec<_>>()
    });
    api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_generated_certificate_has_a_ca_bundle_and_is_renewed_before_it_expires() {
        crate::gates::ensure_crypto_provider();
        let certs = Certificates::load(CertSource::SelfSigned {
            hosts: vec!["127.0.0.1".into(), "greenlight-webhook.system.svc".into()],
        })
        .unwrap();
        let bundle = certs.ca_bundle().unwrap();
        assert!(bundle.starts_with("-----BEGIN CERTIFICATE-----"));
        let renew_at = certs.read().renew_at.unwrap();
        let days = (renew_at - Timestamp::now()).get_seconds() / 86_400;
        assert!((330..=336).contains(&days), "renews in {days} days");
        assert!(!certs.refresh().await.unwrap(), "nothing is due yet");
    }

    #[test]
    fn missing_or_broken_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = Certificates::load(CertSource::Files(dir.path().into())).unwrap_err();
        assert!(err.to_string().contains("tls.crt"), "{err}");
        std::fs::write(dir.path().join("tls.crt"), "not a certificate").unwrap();
        std::fs::write(dir.path().join("tls.key"), "not a key").unwrap();
        let err = Certificates::load(CertSource::Files(dir.path().into())).unwrap_err();
        assert!(err.to_string().contains("tls.crt"), "{err}");
    }
}
