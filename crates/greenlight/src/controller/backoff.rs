//! Per-object backoff after a failed or refused write: exponential with jitter, from
//! [`FIRST`] up to [`LONGEST`]. While an object backs off, watch events (most of them caused by
//! the operator's own status writes) do not make it try again; a change of its spec does, and
//! so does a person's new StageCommand, at most once per [`COMMAND_WAKE_EVERY`]: a script
//! creating commands can never turn a backoff into a hot retry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const FIRST: Duration = Duration::from_secs(2);
pub const LONGEST: Duration = Duration::from_secs(120);
/// The least time between two waits ended by new StageCommands, per object.
pub const COMMAND_WAKE_EVERY: Duration = Duration::from_secs(10);

/// What an object looked like when it failed: a change to it ends the wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub generation: Option<i64>,
    /// StageCommands waiting for the object.
    pub commands: Vec<String>,
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    until: Instant,
    seen: Fingerprint,
    /// When new StageCommands last ended the wait.
    woken_by_command: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct Backoff {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Backoff {
    /// How much longer `key` must wait, if it is backing off and has not changed.
    pub fn remaining(&self, key: &str, now: &Fingerprint) -> Option<Duration> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get_mut(key)?;
        let instant = Instant::now();
        let left = entry.until.checked_duration_since(instant)?;
        if entry.seen.generation != now.generation {
            return None;
        }
        if entry.seen.commands == now.commands {
            return Some(left);
        }
        let recently = entry
            .woken_by_command
            .is_some_and(|at| instant.duration_since(at) < COMMAND_WAKE_EVERY);
        if recently {
            return Some(left);
        }
        entry.woken_by_command = Some(instant);
        entry.seen.commands = now.commands.clone();
        None
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn failed(&self, key: &str, seen: Fingerprint) -> Duration {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let before = entries.get(key);
        let failures = before.map_or(0, |e| e.failures) + 1;
        let woken_by_command = before.and_then(|e| e.woken_by_command);
        let wait = delay(failures, jitter(key, failures));
        let until = Instant::now() + wait;
        entries.insert(
            key.to_string(),
            Entry {
                failures,
                until,
                seen,
                woken_by_command,
            },
        );
        wait
    }

    /// Forgets the failures of `key` after a clean pass.
    pub fn succeeded(&self, key: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(key);
    }

    #[cfg(test)]
    pub fn failures(&self, key: &str) -> u32 {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(key).map_or(0, |e| e.failures)
    }
}

/// `FIRST × 2^(n-1)`, capped at `LONGEST`, scaled by `jitter` in 0.8..1.2.
fn delay(failures: u32, jitter: f64) -> Duration {
    let doubled = FIRST.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(LONGEST).mul_f64(jitter)
}

/// A random factor in 0.8..1.2 (each `RandomState` is seeded afresh), so that many objects
/// refused at once do not all come back at the same instant.
fn jitter(key: &str, failures: u32) -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(key.as_bytes());
    hasher.write_u32(failures);
    0.8 + (hasher.finish() % 4001) as f64 / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(generation: i64) -> Fingerprint {
        Fingerprint {
            generation: Some(generation),
            commands: vec![],
        }
    }

    #[test]
    fn the_wait_doubles_from_two_seconds_and_stops_growing_at_the_cap() {
        assert_eq!(delay(1, 1.0), Duration::from_secs(2));
        assert_eq!(delay(2, 1.0), Duration::from_secs(4));
        assert_eq!(delay(5, 1.0), Duration::from_secs(32));
        assert_eq!(delay(40, 1.0), LONGEST);
        assert!(delay(3, jitter("a", 3)) >= Duration::from_millis(6400));
        assert!(delay(3, jitter("a", 3)) <= Duration::from_millis(9600));
    }

    #[test]
    fn an_object_backing_off_waits_until_its_spec_or_commands_change() {
        let backoff = Backoff::default();
        assert_eq!(backoff.remaining("ns/a", &seen(1)), None);
        backoff.failed("ns/a", seen(1));
        assert!(backoff.remaining("ns/a", &seen(1)).is_some());
        assert_eq!(
            backoff.remaining("ns/a", &seen(2)),
            None,
            "an edit ends the wait"
        );
        let abort = Fingerprint {
            generation: Some(1),
            commands: vec!["abort-prod-1".into()],
        };
        assert_eq!(
            backoff.remaining("ns/a", &abort),
            None,
            "a new StageCommand ends the wait"
        );
        assert_eq!(backoff.failures("ns/a"), 1);
        let another = Fingerprint {
            generation: Some(1),
            commands: vec!["abort-prod-1".into(), "abort-prod-2".into()],
        };
        assert!(
            backoff.remaining("ns/a", &another).is_some(),
            "a second new StageCommand within 10s does not end the wait again"
        );
        backoff.succeeded("ns/a");
        assert_eq!(backoff.failures("ns/a"), 0);
    }
}
