//! Delivery insight read from the index: DORA figures per pipeline and stage ([`dora`]),
//! and the per-stage series the metrics endpoint serves at each scrape ([`collector`]).

pub mod collector;
pub use greenlight_core::dora;
