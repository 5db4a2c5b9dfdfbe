//! The identity key, kept in a Secret the operator owns rather than one Helm makes (under
//! `helm template`, as Argo CD renders, Helm cannot look up the key it made before, so every
//! sync would make a new one). At start the operator reads the Secret and creates it once when
//! it is missing, with 48 random bytes; a replica that loses that race reads the winner's.
//! Every replica reads it again every few seconds and takes a new key at once, so a rotation
//! reaches all of them without a restart, and `/readyz` fails while the Secret cannot be read.
//! `greenlight rotate-identity-key` writes a new `key` and keeps the last three as `previous-N`,
//! so stamps made before a rotation still verify.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use ring::rand::{SecureRandom, SystemRandom};

use crate::identity::IdentityKey;
use crate::metrics::Metrics;

/// The data key of the current identity key (the same as a Secret for `--identity-key-file`).
pub const KEY: &str = "key";
const PREVIOUS: &str = "previous-";
/// Previous keys kept by a rotation.
const KEEP_PREVIOUS: usize = 3;
/// How often the Secret is read again.
const REFRESH: Duration = Duration::from_secs(5);
/// Failed reads in a row before `/readyz` says so.
const UNREADY_AFTER: u32 = 6;

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("cannot read Secret {0}: {1}")]
    Read(String, kube::Error),
    #[error("cannot write Secret {0}: {1}")]
    Write(String, kube::Error),
    #[error("Secret {0}: {1}")]
    Invalid(String, String),
}

/// The Secret that holds the identity key.
#[derive(Clone)]
pub struct KeySecret {
    api: Api<Secret>,
    /// `namespace/name`, for messages.
    path: String,
    name: String,
}

impl KeySecret {
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            path: format!("{namespace}/{name}"),
            name: name.to_string(),
        }
    }

    /// The key in the Secret, creating the Secret with a new key when there is none.
    pub async fn load_or_create(&self) -> Result<IdentityKey, KeyStoreError> {
        let read = |e| KeyStoreError::Read(self.path.clone(), e);
        if let Some(secret) = self.api.get_opt(&self.name).await.map_err(read)? {
            return self.parse(&secret);
        }
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                KEY.to_string(),
                ByteString(random_key()),
            )])),
            ..Default::default()
        };
        match self.api.create(&PostParams::default(), &secret).await {
            Ok(created) => {
                tracing::info!(secret = %self.path, "created the identity key Secret");
                self.parse(&created)
            }
            // Another replica created it first: take theirs.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let secret = self.api.get(&self.name).await.map_err(read)?;
                self.parse(&secret)
            }
            Err(e) => Err(KeyStoreError::Write(self.path.clone(), e)),
        }
    }

    /// The current key and the previous ones, oldest last.
    fn parse(&self, secret: &Secret) -> Result<IdentityKey, KeyStoreError> {
        let invalid = |why: String| KeyStoreError::Invalid(self.path.clone(), why);
        let data = secret.data.clone().unwrap_or_default();
        let key = |bytes: &ByteString, field: &str| -> Result<IdentityKey, KeyStoreError> {
            let trimmed = bytes.0.trim_ascii();
            match trimmed.len() {
                n if n < 32 => Err(invalid(format!(
                    "'{field}' holds {n} bytes; it needs 32 or more"
                ))),
                _ => Ok(IdentityKey::from_bytes(trimmed)),
            }
        };
        let current = data
            .get(KEY)
            .ok_or_else(|| invalid(format!("no '{KEY}'")))?;
        let mut identity = key(current, KEY)?;
        for n in 1..=KEEP_PREVIOUS {
            let field = format!("{PREVIOUS}{n}");
            if let Some(bytes) = data.get(&field) {
                identity = identity.with_previous(key(bytes, &field)?);
            }
        }
        Ok(identity)
    }

    /// Reads the Secret every few seconds and takes its keys when they change; says on
    /// `/readyz` when it has not been able to read them for a while.
    pub async fn keep_current(self, identity: Arc<IdentityKey>, metrics: Arc<Metrics>) {
        let (mut failures, mut seen) = (0u32, None);
        loop {
            tokio::time::sleep(REFRESH).await;
            let read = match self.api.get(&self.name).await {
                Ok(secret) => self.parse(&secret).map(|key| (key, digest(&secret))),
                Err(e) => Err(KeyStoreError::Read(self.path.clone(), e)),
            };
            match read {
                // Any key changed, a previous one dropped included.
                Ok((fresh, now)) if seen.as_ref() != Some(&now) => {
                    failures = 0;
                    if seen.is_some() || fresh.fingerprint() != identity.fingerprint() {
                        tracing::info!(secret = %self.path, fingerprint = %fresh.fingerprint(), "the identity key changed; signing and checking with the Secret's keys now");
                        identity.replace(fresh);
                    }
                    seen = Some(now);
                }
                Ok(_) => failures = 0,
                // Deleted: the key held still signs what the others check; a new one is made
                // only at a start, so this is loud rather than unready.
                Err(KeyStoreError::Read(_, kube::Error::Api(e))) if e.code == 404 => {
                    tracing::error!(secret = %self.path, "the identity key's Secret is gone: signing with the key held; a restart makes a new key, and every stamp made before stops counting");
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "cannot read the identity key");
                }
            }
            metrics
                .identity_unreadable
                .store(failures >= UNREADY_AFTER, Ordering::SeqCst);
        }
    }

    /// Writes a new current key and keeps the previous ones; returns the new fingerprint.
    pub async fn rotate(&self) -> Result<String, KeyStoreError> {
        let read = |e| KeyStoreError::Read(self.path.clone(), e);
        let mut secret = self.api.get(&self.name).await.map_err(read)?;
        self.parse(&secret)?;
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        for n in (1..KEEP_PREVIOUS).rev() {
            if let Some(older) = data.remove(&format!("{PREVIOUS}{n}")) {
                data.insert(format!("{PREVIOUS}{}", n + 1), older);
            }
        }
        if let Some(current) = data.remove(KEY) {
            data.insert(format!("{PREVIOUS}1"), current);
        }
        let fresh = random_key();
        let fingerprint = IdentityKey::from_bytes(&fresh).fingerprint();
        data.insert(KEY.into(), ByteString(fresh));
        // The resourceVersion read makes two rotations at once fail rather than lose a key.
        self.api
            .replace(&self.name, &PostParams::default(), &secret)
            .await
            .map_err(|e| KeyStoreError::Write(self.path.clone(), e))?;
        Ok(fingerprint)
    }
}

/// A digest of every key in the Secret, to notice any change.
fn digest(secret: &Secret) -> String {
    crate::identity::digest(&secret.data.clone().unwrap_or_default())
}

fn random_key() -> Vec<u8> {
    let mut bytes = vec![0u8; 48];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system provides randomness");
    bytes
}
