//! Greenlight: a Kubernetes operator that moves each Release through the Stages of its
//! pipeline, gate by gate, and rolls back a rollout that fails.

pub mod admission;
pub mod api;
pub mod controller;
pub mod crdgen;
pub mod gates;
pub mod identity;
pub mod index;
pub mod insight;
pub mod keystore;
pub mod leader;
pub mod machine;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod plugin;
pub mod routers;
pub mod schedule;
pub mod validation;
pub mod workload;
