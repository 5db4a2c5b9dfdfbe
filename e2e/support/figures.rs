//! Figures a case measures on its way. The e2e suite asserts only bounds that are the
//! behaviour, with a margin for a loaded machine; `make bench` runs those cases one at a time on
//! a quiet machine and prints the figures they recorded (benches/responses.rs).

use std::sync::Mutex;
use std::time::Duration;

static FIGURES: Mutex<Vec<(String, Duration)>> = Mutex::new(Vec::new());

/// Notes how long `what` took, and says it on stderr for a reader of the e2e log.
pub fn record(what: &str, took: Duration) {
    eprintln!("figure: {what}: {} ms", took.as_millis());
    FIGURES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((what.to_string(), took));
}

/// Every figure noted so far, oldest first; the list is emptied.
pub fn take() -> Vec<(String, Duration)> {
    std::mem::take(&mut *FIGURES.lock().unwrap_or_else(|p| p.into_inner()))
}

static SIZES: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());

/// Notes how many bytes `what` took, and says it on stderr.
pub fn record_bytes(what: &str, bytes: u64) {
    eprintln!("figure: {what}: {bytes} bytes");
    SIZES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((what.to_string(), bytes));
}

/// Every size noted so far, oldest first; the list is emptied.
pub fn take_bytes() -> Vec<(String, u64)> {
    std::mem::take(&mut *SIZES.lock().unwrap_or_else(|p| p.into_inner()))
}
