//! The pure decision layer: observed state and the current time in, a new status, workloads,
//! traffic and typed events out. Nothing here talks to Kubernetes, Prometheus or the clock.

pub mod analysis;
pub mod canary;
mod checks;
mod draft;
pub mod drain;
mod drift;
mod emergency;
pub mod events;
pub mod release;
pub mod retention;
pub mod stage;
pub mod types;

pub use events::{Pinned, StageEvent, Transition};
pub use stage::decide;
pub use types::*;

#[cfg(test)]
mod canary_tests;
#[cfg(test)]
mod checks_tests;
#[cfg(test)]
mod emergency_tests;
#[cfg(test)]
mod pin_tests;
#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod props;
#[cfg(test)]
mod stage_tests;
