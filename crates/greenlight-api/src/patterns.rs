//! The string patterns of the CRD schema, shared by every kind.

/// Image references must be pinned by digest so every stage runs the same bytes.
pub const DIGEST_PATTERN: &str = r"^[^@\s]+@sha256:[0-9a-f]{64}$";

/// A DNS-1123 label: the form of pipeline, stage and container names.
pub const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Go-style durations: `90s`, `10m`, `1h30m`, `500ms`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// A release's version: letters, digits and `.`, `_`, `+`, `-`, starting with a letter or digit
/// (semver and build numbers fit). Versions reach PromQL, URLs, notices and terminals, so
/// they are held to this set at admission, besides being escaped wherever they go.
pub const VERSION_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$";
