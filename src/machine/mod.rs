//! The pure decision layer: observed state and the current time in, a new status, workloads,
//! traffic and typed events out. Nothing here talks to Kubernetes, Prometheus or the clock.

pub mod canary;
mod draft;
pub mod events;
pub mod release;
pub mod stage;
pub mod types;

pub use events::{StageEvent, Transition};
pub use stage::decide;
pub use types::*;

#[cfg(test)]
mod canary_tests;
#[cfg(test)]
mod props;
#[cfg(test)]
mod stage_tests;
