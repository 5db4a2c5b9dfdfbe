//! The pure decision layer: observed state and the current time in, a new status and actions
//! out. Nothing here talks to Kubernetes, Prometheus or the clock.

pub mod release;
pub mod stage;
