//! Digests that bind an approval or a stamp to the exact spec it was given for.

use greenlight_api::ReleaseSpec;
use serde::Serialize;

/// SHA-256, in hex, of a value's JSON: what a stamp binds a spec by.
pub fn digest<T: Serialize>(value: &T) -> String {
    let text = serde_json::to_string(value).unwrap_or_default();
    hex(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref())
}

/// The digest a Release is approved by: its spec without the creator stamp.
pub fn release_digest(spec: &ReleaseSpec) -> String {
    let mut spec = spec.clone();
    spec.created_by = None;
    digest(&spec)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
