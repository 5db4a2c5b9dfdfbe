//! The webhook certificate kept in a Secret the operator owns, as the identity key is (see
//! [`crate::keystore`]): under `helm template`, as Argo CD renders, a chart cannot keep a
//! certificate it made, so every sync would make a new CA. The first replica to start creates
//! the Secret: a CA for ten years and a serving certificate it signs for one. Every replica
//! reads the Secret again at each refresh and serves what it holds.
//!
//! A serving certificate a month from its end, or made for other hosts, is signed again by the
//! same CA, so the webhooks' CA bundle does not change. A CA in its last year is replaced, and
//! the bundle then carries the new and the old CA, so a replica still serving the old
//! certificate is trusted until it reads the new one. Every write carries the resourceVersion
//! it was decided on, so replicas renewing at once agree on one certificate. A Secret that is
//! deleted, or that holds something else (the chart-made Secret of older versions), is written
//! again from what the replica holds, with the same CA.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};

use super::issue::{Issued, new_ca, sign_leaf};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read Secret {0}: {1}")]
    Read(String, kube::Error),
    #[error("cannot write Secret {0}: {1}")]
    Write(String, kube::Error),
    #[error("Secret {0}: {1}")]
    Invalid(String, String),
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

const TLS_TYPE: &str = "kubernetes.io/tls";
const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const CERT: &str = "tls.crt";
const KEY: &str = "tls.key";
const HOSTS: &str = "greenlight.dev/hosts";
const RENEW_AT: &str = "greenlight.dev/renew-at";
const CA_RENEW_AT: &str = "greenlight.dev/ca-renew-at";
/// A CA lasts ten years and is replaced in its last.
const CA_DAYS: i64 = 3650;
const CA_RENEW_BEFORE_DAYS: i64 = 365;

/// What the Secret holds: the CA bundle clients trust, the CA's key, the serving certificate
/// and its key (all PEM), the hosts it was made for, and when each is due.
#[derive(Clone, PartialEq)]
pub struct Stored {
    pub ca_bundle: String,
    ca_key: String,
    pub cert: String,
    pub key: String,
    hosts: Vec<String>,
    pub renew_at: Timestamp,
    ca_renew_at: Timestamp,
}

/// What a refresh must make anew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    Nothing,
    /// A serving certificate, signed by the same CA.
    Certificate,
    /// A CA, and a serving certificate it signs.
    Authority,
}

impl Stored {
    fn fresh(hosts: &[String], now: Timestamp) -> Result<Self, SecretError> {
        let ca = new_ca(now, CA_DAYS, CA_RENEW_BEFORE_DAYS)?;
        Self::signed_by(ca, String::new(), hosts, now)
    }

    /// A serving certificate signed by `ca`; the bundle is `ca` and then `older`.
    fn signed_by(
        ca: Issued,
        older: String,
        hosts: &[String],
        now: Timestamp,
    ) -> Result<Self, SecretError> {
        let leaf = sign_leaf(&ca.key, hosts, now)?;
        Ok(Self {
            ca_bundle: format!("{}{older}", ca.cert),
            ca_key: ca.key,
            cert: leaf.cert,
            key: leaf.key,
            hosts: hosts.to_vec(),
            renew_at: leaf.renew_at,
            ca_renew_at: ca.renew_at,
        })
    }

    fn due(&self, hosts: &[String], now: Timestamp) -> Due {
        if now >= self.ca_renew_at {
            Due::Authority
        } else if now >= self.renew_at || self.hosts != hosts {
            Due::Certificate
        } else {
            Due::Nothing
        }
    }

    fn renewed(self, due: Due, hosts: &[String], now: Timestamp) -> Result<Self, SecretError> {
        match due {
            Due::Nothing => Ok(self),
            Due::Certificate => {
                let ca = Issued {
                    cert: String::new(),
                    key: self.ca_key.clone(),
                    renew_at: self.ca_renew_at,
                };
                Self::signed_by(ca, self.ca_bundle, hosts, now)
            }
            Due::Authority => {
                let ca = new_ca(now, CA_DAYS, CA_RENEW_BEFORE_DAYS)?;
                Self::signed_by(ca, first_certificate(&self.ca_bundle), hosts, now)
            }
        }
    }

    fn from_secret(secret: &Secret) -> Result<Self, String> {
        let data = secret.data.clone().unwrap_or_default();
        let text = |key: &str| -> Result<String, String> {
            let bytes = data.get(key).ok_or_else(|| format!("no '{key}'"))?;
            String::from_utf8(bytes.0.clone()).map_err(|_| format!("'{key}' is not PEM"))
        };
        let notes = secret.annotations();
        let time = |key: &str| -> Result<Timestamp, String> {
            let value = notes
                .get(key)
                .ok_or_else(|| format!("no {key} annotation"))?;
            value.parse().map_err(|e| format!("{key}: {e}"))
        };
        let hosts = notes
            .get(HOSTS)
            .ok_or_else(|| format!("no {HOSTS} annotation"))?;
        Ok(Self {
            ca_bundle: text(CA_CERT)?,
            ca_key: text(CA_KEY)?,
            cert: text(CERT)?,
            key: text(KEY)?,
            hosts: hosts.split(',').map(String::from).collect(),
            renew_at: time(RENEW_AT)?,
            ca_renew_at: time(CA_RENEW_AT)?,
        })
    }

    fn into_secret(self, name: &str, resource_version: Option<String>) -> Secret {
        let data = [
            (CA_CERT, self.ca_bundle),
            (CA_KEY, self.ca_key),
            (CERT, self.cert),
            (KEY, self.key),
        ];
        let annotations = [
            (HOSTS, self.hosts.join(",")),
            (RENEW_AT, self.renew_at.to_string()),
            (CA_RENEW_AT, self.ca_renew_at.to_string()),
        ];
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                resource_version,
                annotations: Some(
                    annotations
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                ),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/created-by".to_string(),
                    "greenlight".to_string(),
                )])),
                ..Default::default()
            },
            type_: Some(TLS_TYPE.into()),
            data: Some(
                data.into_iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
                    .collect(),
            ),
            ..Default::default()
        }
    }
}

/// The first PEM certificate of a bundle.
fn first_certificate(bundle: &str) -> String {
    const END: &str = "-----END CERTIFICATE-----";
    match bundle.find(END) {
        Some(at) => format!("{}\n", &bundle[..at + END.len()]),
        None => String::new(),
    }
}

/// The Secret that holds the webhook certificate.
pub struct CertSecret {
    api: Api<Secret>,
    /// `namespace/name`, for messages.
    path: String,
    name: String,
    hosts: Vec<String>,
}

impl CertSecret {
    pub fn new(client: Client, namespace: &str, name: &str, mut hosts: Vec<String>) -> Self {
        // Compared as a set: replicas started with the same hosts in another order agree.
        hosts.sort();
        hosts.dedup();
        Self {
            api: Api::namespaced(client, namespace),
            path: format!("{namespace}/{name}"),
            name: name.to_string(),
            hosts,
        }
    }

    fn read_error(&self, e: kube::Error) -> SecretError {
        SecretError::Read(self.path.clone(), e)
    }

    fn write_error(&self, e: kube::Error) -> SecretError {
        SecretError::Write(self.path.clone(), e)
    }

    /// What the Secret holds once anything due is renewed, creating or repairing it first
    /// (from `held`, the replica's own, when it has one).
    pub async fn settle(&self, held: Option<&Stored>) -> Result<Stored, SecretError> {
        let now = Timestamp::now();
        let read = self.api.get_opt(&self.name).await;
        let Some(secret) = read.map_err(|e| self.read_error(e))? else {
            let stored = match held {
                Some(held) => held.clone(),
                None => Stored::fresh(&self.hosts, now)?,
            };
            return self.create(stored).await;
        };
        let version = secret.resource_version();
        let stored = match Stored::from_secret(&secret) {
            Ok(stored) => stored,
            Err(why) => return self.repair(&secret, held, why, now).await,
        };
        match stored.due(&self.hosts, now) {
            Due::Nothing => Ok(stored),
            due => {
                let renewed = stored.renewed(due, &self.hosts, now)?;
                self.replace(renewed, version).await
            }
        }
    }

    /// Writes the Secret again when it holds something else, such as the chart-made
    /// certificate of older versions: from what this replica holds, else anew, with the CA it
    /// held still in the bundle, so servers not yet on the new certificate stay trusted.
    async fn repair(
        &self,
        secret: &Secret,
        held: Option<&Stored>,
        why: String,
        now: Timestamp,
    ) -> Result<Stored, SecretError> {
        tracing::warn!(secret = %self.path, why, "the webhook certificate's Secret is not the operator's; writing it again");
        let mut stored = match held {
            Some(held) => held.clone(),
            None => Stored::fresh(&self.hosts, now)?,
        };
        let old = secret.data.as_ref().and_then(|d| d.get(CA_CERT));
        let old = old.map(|b| first_certificate(&String::from_utf8_lossy(&b.0)));
        if let Some(old) = old.filter(|o| !o.is_empty() && !stored.ca_bundle.contains(o.as_str())) {
            stored.ca_bundle = format!("{}{old}", first_certificate(&stored.ca_bundle));
        }
        if secret.type_.as_deref() == Some(TLS_TYPE) {
            return self.replace(stored, secret.resource_version()).await;
        }
        // A Secret's type cannot change: it is deleted, as it was read, and made again.
        let params = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: secret.uid(),
                resource_version: secret.resource_version(),
            }),
            ..Default::default()
        };
        match self.api.delete(&self.name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(self.write_error(e)),
        }
        self.create(stored).await
    }

    async fn create(&self, stored: Stored) -> Result<Stored, SecretError> {
        let secret = stored.clone().into_secret(&self.name, None);
        match self.api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(secret = %self.path, "created the webhook certificate's Secret");
                Ok(stored)
            }
            // Another replica wrote first: take theirs.
            Err(kube::Error::Api(e)) if e.code == 409 => self.reread().await,
            Err(e) => Err(self.write_error(e)),
        }
    }

    async fn replace(
        &self,
        stored: Stored,
        version: Option<String>,
    ) -> Result<Stored, SecretError> {
        let secret = stored.clone().into_secret(&self.name, version);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &secret)
            .await
        {
            Ok(_) => {
                tracing::info!(secret = %self.path, renew_at = %stored.renew_at, "wrote a renewed webhook certificate");
                Ok(stored)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => self.reread().await,
            Err(e) => Err(self.write_error(e)),
        }
    }

    async fn reread(&self) -> Result<Stored, SecretError> {
        let secret = self.api.get(&self.name).await;
        let secret = secret.map_err(|e| self.read_error(e))?;
        Stored::from_secret(&secret).map_err(|why| SecretError::Invalid(self.path.clone(), why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<String> {
        vec!["greenlight-webhook.system.svc".into()]
    }

    fn days(n: i64) -> jiff::SignedDuration {
        jiff::SignedDuration::from_hours(24 * n)
    }

    #[test]
    fn a_fresh_certificate_is_due_for_nothing_until_a_month_before_its_end() {
        let now = Timestamp::now();
        let stored = Stored::fresh(&hosts(), now).unwrap();
        assert_eq!(stored.due(&hosts(), now + days(300)), Due::Nothing);
        assert_eq!(stored.due(&hosts(), now + days(340)), Due::Certificate);
        assert_eq!(stored.due(&hosts(), now + days(3300)), Due::Authority);
    }

    #[test]
    fn a_certificate_for_other_hosts_is_signed_again_by_the_same_ca() {
        let now = Timestamp::now();
        let stored = Stored::fresh(&hosts(), now).unwrap();
        let moved = vec!["greenlight-webhook.elsewhere.svc".to_string()];
        assert_eq!(stored.due(&moved, now), Due::Certificate);
        let renewed = stored
            .clone()
            .renewed(Due::Certificate, &moved, now)
            .unwrap();
        assert_eq!(renewed.ca_bundle, stored.ca_bundle, "the CA bundle stays");
        assert_ne!(renewed.cert, stored.cert);
        assert_eq!(renewed.due(&moved, now), Due::Nothing);
        trusted(&renewed, now);
    }

    #[test]
    fn a_new_ca_is_trusted_beside_the_old_one_until_the_next() {
        let now = Timestamp::now();
        let stored = Stored::fresh(&hosts(), now).unwrap();
        let later = now + days(3300);
        let renewed = stored
            .clone()
            .renewed(Due::Authority, &hosts(), later)
            .unwrap();
        assert!(
            renewed.ca_bundle.ends_with(&stored.ca_bundle),
            "old CA kept"
        );
        assert_eq!(renewed.ca_bundle.matches("BEGIN CERTIFICATE").count(), 2);
        let again = renewed
            .clone()
            .renewed(Due::Authority, &hosts(), later + days(3300));
        let bundle = again.unwrap().ca_bundle;
        assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2, "never more");
        assert!(bundle.ends_with(&first_certificate(&renewed.ca_bundle)));
        trusted(&renewed, later);
    }

    #[test]
    fn what_is_written_is_read_back_the_same() {
        let stored = Stored::fresh(&hosts(), Timestamp::now()).unwrap();
        let secret = stored.clone().into_secret("tls", Some("7".into()));
        assert_eq!(secret.metadata.resource_version.as_deref(), Some("7"));
        assert!(Stored::from_secret(&secret).unwrap() == stored);
        let mut charts = secret;
        charts.metadata.annotations = None;
        let err = Stored::from_secret(&charts).err().unwrap();
        assert!(err.contains(HOSTS), "{err}");
    }

    /// The serving certificate verifies against the bundle's first CA, for its host.
    fn trusted(stored: &Stored, at: Timestamp) {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        crate::gates::ensure_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(stored.ca_bundle.as_bytes()) {
            roots.add(ca.unwrap()).unwrap();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder(roots.into())
            .build()
            .unwrap();
        let leaf = CertificateDer::from_pem_slice(stored.cert.as_bytes()).unwrap();
        let host = ServerName::try_from(stored.hosts[0].clone()).unwrap();
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(at.as_second() as u64));
        verifier
            .verify_server_cert(&leaf, &[], &host, &[], at)
            .expect("the serving certificate verifies against the CA bundle");
    }
}
