//! Greenlight: a Kubernetes operator that moves each Release through the Stages of its
//! pipeline, gate by gate, and rolls back a rollout that fails.
//!
//! This crate is the shell: the index, the controllers and the one writer, the gates' IO, the
//! routers, admission, leader election and metrics. The API types (`greenlight-api`) and the
//! pure decisions (`greenlight-core`) are crates of their own, named here as they always were.

pub mod admission;
pub mod controller;
pub mod gates;
pub mod identity;
pub mod index;
pub mod insight;
pub mod keystore;
pub mod leader;
pub mod metrics;
pub mod notify;
pub mod routers;
pub mod workload;

pub use greenlight_api as api;
pub use greenlight_api::crdgen;
pub use greenlight_core::{machine, pipeline, review, schedule, validation};
