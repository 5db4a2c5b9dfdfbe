//! Greenlight's decisions, as pure functions: observed state and the time go in, actions and
//! typed events come out. This crate has no Kubernetes client, no async runtime, no network and
//! no clock; `tests/purity.rs` at the repository's root and this crate's `clippy.toml` hold it
//! to that.

pub mod digest;
pub mod dora;
pub mod judge;
pub mod machine;
pub mod observed;
pub mod pipeline;
pub mod review;
pub mod schedule;
pub mod validation;
pub mod verdict;

use greenlight_api as api;
