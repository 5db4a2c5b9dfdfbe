//! Verified identities. The admission webhook stamps the authenticated user into Approvals,
//! new Releases, StageCommands and spec changes of Stages and Gates, and signs each stamp with
//! the operator's identity key (HMAC-SHA256) over the stamp and the facts it vouches for. The
//! controller counts only stamps whose signature checks out, so a forged or copied stamp, or
//! one written while the webhook was off, is worth nothing. Keys rotate: the current key signs,
//! and previous keys still verify until they are removed.

use std::path::Path;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::json;

use crate::api::{ApprovalSpec, Identity, ReleaseSpec, StageCommandSpec};
pub use greenlight_core::digest::{digest, release_digest};

/// What a stamp vouches for, besides who made the request.
pub enum Subject<'a> {
    /// An approval or rejection of one release object at one stage (the comment is not
    /// vouched for).
    Approval {
        namespace: &'a str,
        spec: &'a ApprovalSpec,
    },
    /// The creation of a release with exactly this spec.
    Release {
        namespace: &'a str,
        spec: &'a ReleaseSpec,
    },
    /// A promote, abort or retry of one Stage object at one generation (the comment is not
    /// vouched for).
    Command {
        namespace: &'a str,
        spec: &'a StageCommandSpec,
    },
    /// A spec change of a Stage or Gate, to the spec with this digest, making this generation
    /// of the object with this uid (empty for a creation, before the uid exists).
    Spec {
        kind: &'a str,
        namespace: &'a str,
        name: &'a str,
        fields: &'a [String],
        digest: &'a str,
        uid: &'a str,
        generation: i64,
    },
}

impl Subject<'_> {
    fn payload(&self, username: &str, groups: &[String]) -> String {
        let facts = match self {
            Self::Approval { namespace, spec } => {
                json!([
                    "Approval",
                    namespace,
                    spec.release,
                    spec.stage,
                    spec.decision,
                    spec.release_ref
                ])
            }
            Self::Release { namespace, spec } => {
                let mut spec = (*spec).clone();
                spec.created_by = None;
                json!(["Release", namespace, spec])
            }
            Self::Command { namespace, spec } => {
                let mut signed = json!([
                    "Command",
                    namespace,
                    spec.stage,
                    spec.action,
                    spec.release,
                    spec.stage_ref
                ]);
                // What an emergency or a review's close says is the requester's own word too.
                let words = [&spec.reason, &spec.reference, &spec.post_mortem];
                if let (true, Some(all)) =
                    (words.iter().any(|w| w.is_some()), signed.as_array_mut())
                {
                    all.push(json!(words));
                }
                signed
            }
            Self::Spec {
                kind,
                namespace,
                name,
                fields,
                digest,
                uid,
                generation,
            } => json!([
                "Spec", kind, namespace, name, fields, digest, uid, generation
            ]),
        };
        json!([facts, username, groups]).to_string()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityKeyError {
    #[error("cannot read the identity key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the identity key file {path} holds {len} bytes; it needs at least 32 random bytes")]
    TooShort { path: String, len: usize },
}

/// The operator's secrets for signing and checking identity stamps: the current key signs
/// and verifies; previous keys (during a rotation) only verify.
pub struct IdentityKey {
    keys: std::sync::RwLock<Keys>,
}

/// The keys in use: the current one, and previous ones that still verify.
struct Keys {
    current: hmac::Key,
    previous: Vec<hmac::Key>,
    /// A digest of the current key's bytes, to tell keys apart without showing them.
    fingerprint: String,
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityKey(<redacted>)")
    }
}

impl IdentityKey {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        Self {
            keys: std::sync::RwLock::new(Keys {
                current: hmac::Key::new(hmac::HMAC_SHA256, bytes),
                previous: vec![],
                fingerprint: hex(&digest.as_ref()[..8]),
            }),
        }
    }

    /// This key, still accepting stamps made with `previous` (read from a file like the
    /// current one) until the operator is restarted without it.
    pub fn with_previous(self, previous: IdentityKey) -> Self {
        let previous = previous.into_keys();
        let mut keys = self.into_keys();
        keys.previous.push(previous.current);
        keys.previous.extend(previous.previous);
        Self {
            keys: std::sync::RwLock::new(keys),
        }
    }

    fn into_keys(self) -> Keys {
        self.keys.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the keys of `other` from now on (a rotation read from the key's Secret).
    pub fn replace(&self, other: IdentityKey) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = other.into_keys();
    }

    /// A short digest of the current key: the same on every replica that signs alike.
    pub fn fingerprint(&self) -> String {
        self.read().fingerprint.clone()
    }

    /// Reads the key from a file (a mounted Secret); surrounding whitespace is ignored.
    pub fn from_file(path: &Path) -> Result<Self, IdentityKeyError> {
        let bytes = std::fs::read(path).map_err(|source| IdentityKeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < 32 {
            return Err(IdentityKeyError::TooShort {
                path: path.display().to_string(),
                len: trimmed.len(),
            });
        }
        Ok(Self::from_bytes(trimmed))
    }

    /// A fresh random key; stamps made with it die with the process.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the operating system provides randomness");
        Self::from_bytes(&bytes)
    }

    /// The stamp for `username` (in `groups`) acting on `subject`.
    pub fn stamp(&self, subject: &Subject, username: &str, groups: &[String]) -> Identity {
        let tag = hmac::sign(
            &self.read().current,
            subject.payload(username, groups).as_bytes(),
        );
        Identity {
            username: username.to_string(),
            groups: groups.to_vec(),
            signature: hex(tag.as_ref()),
        }
    }

    /// The stamped identity when its signature is this key's over `subject`, else why not.
    pub fn verify<'a>(
        &self,
        subject: &Subject,
        stamp: Option<&'a Identity>,
    ) -> Result<&'a Identity, Unverified> {
        let stamp = stamp.ok_or(Unverified::Missing)?;
        let signature = unhex(&stamp.signature).ok_or(Unverified::BadSignature)?;
        let payload = subject.payload(&stamp.username, &stamp.groups);
        let keys = self.read();
        std::iter::once(&keys.current)
            .chain(&keys.previous)
            .any(|key| hmac::verify(key, payload.as_bytes(), &signature).is_ok())
            .then_some(stamp)
            .ok_or(Unverified::BadSignature)
    }
}

impl IdentityKey {
    /// A seal over facts the operator itself wrote somewhere others can write too (an
    /// Event): only this key can make it, so a copy with any fact changed does not check out.
    pub fn seal(&self, facts: &serde_json::Value) -> String {
        let payload = json!(["Seal", facts]).to_string();
        hex(hmac::sign(&self.read().current, payload.as_bytes()).as_ref())
    }

    /// Whether `seal` is this key's (or a previous key's) over `facts`.
    pub fn sealed(&self, facts: &serde_json::Value, seal: &str) -> bool {
        let Some(tag) = unhex(seal) else {
            return false;
        };
        let payload = json!(["Seal", facts]).to_string();
        let keys = self.read();
        std::iter::once(&keys.current)
            .chain(&keys.previous)
            .any(|key| hmac::verify(key, payload.as_bytes(), &tag).is_ok())
    }
}

/// Why a stamp does not vouch for anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unverified {
    #[error("not stamped by Greenlight's admission webhook (is it registered?)")]
    Missing,
    #[error("its identity stamp was not made by this operator for this object (forged or copied)")]
    BadSignature,
    #[error("its stamp is for another version of the spec (changed while the webhook was off?)")]
    OtherSpec,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Decision;

    fn approval(decision: Decision) -> ApprovalSpec {
        ApprovalSpec {
            release: "web-1-2-0".into(),
            stage: "prod".into(),
            decision,
            comment: Some("looks good".into()),
            approver: None,
            release_ref: None,
        }
    }

    #[test]
    fn a_stamp_verifies_for_the_object_it_was_made_for() {
        let key = IdentityKey::from_bytes(b"0123456789abcdef0123456789abcdef");
        let spec = approval(Decision::Approve);
        let subject = Subject::Approval {
            namespace: "shop",
            spec: &spec,
        };
        let stamp = key.stamp(&subject, "alice", &["release-managers".into()]);
        assert_eq!(key.verify(&subject, Some(&stamp)), Ok(&stamp));
    }

    #[test]
    fn a_forged_name_a_copied_stamp_or_another_key_does_not_verify() {
        let key = IdentityKey::from_bytes(b"0123456789abcdef0123456789abcdef");
        let spec = approval(Decision::Approve);
        let subject = Subject::Approval {
            namespace: "shop",
            spec: &spec,
        };
        let stamp = key.stamp(&subject, "alice", &[]);
        let mut forged = stamp.clone();
        forged.username = "mallory".into();
        assert_eq!(
            key.verify(&subject, Some(&forged)),
            Err(Unverified::BadSignature)
        );
        let reject = approval(Decision::Reject);
        let other = Subject::Approval {
            namespace: "shop",
            spec: &reject,
        };
        assert_eq!(
            key.verify(&other, Some(&stamp)),
            Err(Unverified::BadSignature)
        );
        let elsewhere = Subject::Approval {
            namespace: "other",
            spec: &spec,
        };
        assert!(key.verify(&elsewhere, Some(&stamp)).is_err());
        let stranger = IdentityKey::generate();
        assert!(stranger.verify(&subject, Some(&stamp)).is_err());
        assert_eq!(key.verify(&subject, None), Err(Unverified::Missing));
        let mut garbage = stamp.clone();
        garbage.signature = "zz".into();
        assert_eq!(
            key.verify(&subject, Some(&garbage)),
            Err(Unverified::BadSignature)
        );
    }

    #[test]
    fn a_release_stamp_covers_the_whole_spec_but_not_itself() {
        let key = IdentityKey::generate();
        let mut spec: ReleaseSpec = serde_json::from_value(json!({
            "pipeline": "web", "version": "1.2.0",
            "artifacts": [{"name": "app", "image": format!("r/app@sha256:{}", "a".repeat(64))}]
        }))
        .unwrap();
        let stamp = key.stamp(
            &Subject::Release {
                namespace: "shop",
                spec: &spec,
            },
            "ci",
            &[],
        );
        spec.created_by = Some(stamp.clone());
        let subject = Subject::Release {
            namespace: "shop",
            spec: &spec,
        };
        assert!(key.verify(&subject, spec.created_by.as_ref()).is_ok());
        spec.version = "1.2.1".into();
        let changed = Subject::Release {
            namespace: "shop",
            spec: &spec,
        };
        assert!(key.verify(&changed, Some(&stamp)).is_err());
    }

    #[test]
    fn short_key_files_are_refused_and_whitespace_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "tooshort\n").unwrap();
        assert!(matches!(
            IdentityKey::from_file(&short),
            Err(IdentityKeyError::TooShort { len: 8, .. })
        ));
        let good = dir.path().join("good");
        std::fs::write(&good, "0123456789abcdef0123456789abcdef\n").unwrap();
        let a = IdentityKey::from_file(&good).unwrap();
        let b = IdentityKey::from_bytes(b"0123456789abcdef0123456789abcdef");
        let spec = approval(Decision::Approve);
        let subject = Subject::Approval {
            namespace: "n",
            spec: &spec,
        };
        assert!(
            b.verify(&subject, Some(&a.stamp(&subject, "u", &[])))
                .is_ok()
        );
    }

    #[test]
    fn a_seal_checks_out_only_for_the_same_facts_and_key() {
        let key = IdentityKey::generate();
        let facts = json!(["ns", "v1.abc", "RolledBack", "stage prod: breached"]);
        let seal = key.seal(&facts);
        assert!(key.sealed(&facts, &seal));
        let changed = json!(["ns", "v1.abc", "RolledBack", "stage prod: all good"]);
        assert!(!key.sealed(&changed, &seal));
        assert!(!IdentityKey::generate().sealed(&facts, &seal));
        assert!(!key.sealed(&facts, "not hex"));
    }

    #[test]
    fn after_a_rotation_old_stamps_verify_until_the_previous_key_is_removed() {
        let old = || IdentityKey::from_bytes(b"0123456789abcdef0123456789abcdef");
        let new = || IdentityKey::from_bytes(b"fedcba9876543210fedcba9876543210");
        let spec = approval(Decision::Approve);
        let subject = Subject::Approval {
            namespace: "shop",
            spec: &spec,
        };
        let before = old().stamp(&subject, "alice", &[]);
        let rotating = new().with_previous(old());
        assert!(rotating.verify(&subject, Some(&before)).is_ok());
        let after = rotating.stamp(&subject, "bob", &[]);
        assert!(
            new().verify(&subject, Some(&after)).is_ok(),
            "the new key signs"
        );
        assert!(old().verify(&subject, Some(&after)).is_err());
        assert_eq!(
            new().verify(&subject, Some(&before)),
            Err(Unverified::BadSignature),
            "once the previous key is gone, its stamps are worth nothing"
        );
    }

    #[test]
    fn an_approval_stamp_is_bound_to_one_release_object() {
        let key = IdentityKey::from_bytes(b"0123456789abcdef0123456789abcdef");
        let mut spec = approval(Decision::Approve);
        spec.release_ref = Some(crate::api::ReleaseRef {
            uid: "uid-1".into(),
            digest: "d1".into(),
        });
        let stamp = key.stamp(
            &Subject::Approval {
                namespace: "shop",
                spec: &spec,
            },
            "alice",
            &[],
        );
        spec.release_ref = Some(crate::api::ReleaseRef {
            uid: "uid-2".into(),
            digest: "d1".into(),
        });
        let moved = Subject::Approval {
            namespace: "shop",
            spec: &spec,
        };
        assert_eq!(
            key.verify(&moved, Some(&stamp)),
            Err(Unverified::BadSignature)
        );
    }
}
