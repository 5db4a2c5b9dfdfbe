//! The string patterns of the CRD schema, shared by every kind.

/// Image references must be pinned by digest so every stage runs the same bytes.
pub const DIGEST_PATTERN: &str = r"^[^@\s]+@sha256:[0-9a-f]{64}$";

/// A DNS-1123 label: the form of pipeline, stage and container names.
pub const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Go-style durations: `90s`, `10m`, `1h30m`, `500ms`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";
