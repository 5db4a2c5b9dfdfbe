//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas only one
//! reconciles. Every replica serves the admission webhooks; only the leader writes.
//!
//! Leadership is a deadline on this process's monotonic clock: each successful renewal makes
//! the replica leader until the moment it sent the renewal plus the lease duration, less a
//! safety margin. The writer checks that deadline before every write (the fence), so a leader
//! that cannot renew (cut off from the apiserver, or paused with SIGSTOP) stops writing before
//! its lease can expire and another replica can take over, and never writes after that. A
//! replica that has lost the lease exits, to start again as a standby. A lease held by another
//! replica counts as expired only when this replica has seen no renewal of it for a lease
//! duration on its own clock, so clock skew between nodes does not matter.
//!
//! `kube-lease-manager` (kube 5) was considered: it reports leadership changes, but not the
//! instant from which a leader that cannot reach the apiserver must stop writing, which the
//! fence needs; it keeps reporting leadership while renewals fail.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};

/// How leadership is held: the Lease and its timings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity, unique among replicas (the pod name).
    pub identity: String,
    /// How long a renewal keeps the lease; a standby takes over after this much silence.
    pub duration: Duration,
    /// How often the leader renews, and a standby looks.
    pub retry: Duration,
}

/// The lease timings the operator works with. The chart's schema carries the same ranges
/// (`controller.leaderElection`), and `tests/lease_timings.rs` checks both against one table.
pub mod timings {
    use std::time::Duration;

    /// The shortest and the longest lease duration.
    pub const DURATION_MIN: Duration = Duration::from_secs(3);
    pub const DURATION_MAX: Duration = Duration::from_secs(3600);
    /// The shortest retry: each is a request to the apiserver.
    pub const RETRY_MIN: Duration = Duration::from_millis(200);
    /// A leader renews at least this many times a lease duration, so one slow renewal does
    /// not cost the lease.
    pub const RENEWALS_PER_DURATION: u32 = 4;

    /// Timings a lease can work with, or why not.
    pub fn check(duration: Duration, retry: Duration) -> Result<(), String> {
        if !(DURATION_MIN..=DURATION_MAX).contains(&duration) {
            return Err("the lease duration must be within 3s..1h".into());
        }
        if retry < RETRY_MIN {
            return Err(
                "the retry must be at least 200ms: each retry is a request to the apiserver".into(),
            );
        }
        if retry * RENEWALS_PER_DURATION > duration {
            return Err("the retry must be at most a quarter of the lease duration, so a leader renews in time".into());
        }
        Ok(())
    }
}

/// Why leadership ended.
#[derive(Debug, thiserror::Error)]
pub enum LeadershipError {
    #[error("lease {0} is held by {1} now")]
    Taken(String, String),
    #[error("lease {0} could not be renewed before it expired: {1}")]
    Expired(String, String),
}

pub struct Leadership {
    config: LeaseConfig,
    api: Api<Lease>,
    /// Leader until then (this process's clock); `None` when not leader.
    until: Mutex<Option<Instant>>,
    /// The other holder's record as last seen, and when it was first seen like that.
    observed: Mutex<Option<(String, Instant)>>,
    /// When a renewal by any holder (this replica included) was last seen.
    renewed: Mutex<Instant>,
}

/// What a pass of the election loop found.
#[derive(Debug, PartialEq, Eq)]
enum Held {
    ByUs,
    By(String),
}

impl Leadership {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            until: Mutex::default(),
            observed: Mutex::default(),
            renewed: Mutex::new(Instant::now()),
        }
    }

    /// How long since this replica last saw any holder renew the lease: when it grows past
    /// two lease durations, no leader is reconciling.
    pub fn silence(&self) -> Duration {
        self.renewed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    /// The lease duration this replica runs with.
    pub fn duration(&self) -> Duration {
        self.config.duration
    }

    fn saw_renewal(&self) {
        *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// A lease held until `until` and never renewed (for scenario tests of the fence).
    #[cfg(test)]
    pub fn held_until(client: Client, until: Instant) -> Self {
        let config = LeaseConfig {
            namespace: "ns".into(),
            name: "greenlight-controller".into(),
            identity: "test".into(),
            duration: Duration::from_secs(6),
            retry: Duration::from_secs(1),
        };
        let lease = Self::new(client, config);
        *lease.until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
        lease
    }

    /// Until when this replica may write, if it leads now.
    pub fn deadline(&self) -> Option<Instant> {
        let until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        until.filter(|u| Instant::now() < *u)
    }

    /// Whether this replica may write now.
    pub fn is_leader(&self) -> bool {
        let until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        until.is_some_and(|u| Instant::now() < u)
    }

    /// The safety margin kept before the lease's end: a fifth of its duration, at least 1s.
    fn margin(&self) -> Duration {
        (self.config.duration / 5).max(Duration::from_secs(1))
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Held::ByUs) => return,
                Ok(Held::By(holder)) => tracing::debug!(%holder, "standing by"),
                Err(e) => tracing::warn!(error = %e, "cannot read the leader lease"),
            }
            tokio::time::sleep(self.config.retry).await;
        }
    }

    /// Renews the lease for as long as it can; returns why leadership ended. A renewal that
    /// hangs past the deadline ends it too.
    pub async fn hold(&self) -> LeadershipError {
        let name = self.config.name.clone();
        loop {
            tokio::time::sleep(self.config.retry).await;
            let Some(deadline) = *self.until.lock().unwrap_or_else(|e| e.into_inner()) else {
                return LeadershipError::Expired(name, "not held".into());
            };
            let attempt = tokio::select! {
                attempt = self.try_acquire_or_renew() => attempt,
                _ = tokio::time::sleep_until(deadline.into()) => {
                    self.step_down();
                    return LeadershipError::Expired(name, "no answer before the deadline".into());
                }
            };
            match attempt {
                Ok(Held::ByUs) => {}
                Ok(Held::By(holder)) => {
                    self.step_down();
                    return LeadershipError::Taken(name, holder);
                }
                Err(e) if !self.is_leader() => {
                    self.step_down();
                    return LeadershipError::Expired(name, e.to_string());
                }
                Err(e) => tracing::warn!(error = %e, "lease renewal failed; retrying"),
            }
        }
    }

    /// Gives the lease up at once, so a standby takes over without waiting for it to expire.
    pub async fn release(&self) {
        if !self.is_leader() {
            return;
        }
        self.step_down();
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!("leader lease released"),
            Err(e) => tracing::warn!(error = %e, "cannot release the leader lease"),
        }
    }

    fn step_down(&self) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// One pass: takes the lease if it is free or expired, renews it if ours. Writes use the
    /// lease's resourceVersion, so two replicas cannot both win one pass.
    async fn try_acquire_or_renew(&self) -> Result<Held, kube::Error> {
        let sent = Instant::now();
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            // Deleted under a leader that may still be writing: wait a lease duration.
            if !self.is_leader() && !self.expired(&LeaseSpec::default(), true) {
                return Ok(Held::By("nobody yet (the lease is gone)".into()));
            }
            let created = self
                .api
                .create(&PostParams::default(), &self.record(None))
                .await;
            return self.outcome(created.map(|_| ()), sent);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.config.identity.as_str());
        let labelled = lease.labels().contains_key(crate::api::LEASE_LABEL);
        if let Some(other) = holder.filter(|_| !ours && !self.expired(&spec, labelled)) {
            self.step_down();
            return Ok(Held::By(other));
        }
        let mut next = self.record(Some(&lease));
        next.metadata.resource_version = lease.metadata.resource_version.clone();
        let replaced = self
            .api
            .replace(&self.config.name, &PostParams::default(), &next)
            .await;
        self.outcome(replaced.map(|_| ()), sent)
    }

    /// Leader until `sent` + duration − margin on success; a lost race is someone else's win.
    fn outcome(
        &self,
        written: Result<(), kube::Error>,
        sent: Instant,
    ) -> Result<Held, kube::Error> {
        match written {
            Ok(()) => {
                let until = sent + self.config.duration.saturating_sub(self.margin());
                *self.until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
                self.saw_renewal();
                Ok(Held::ByUs)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                self.step_down();
                Ok(Held::By("another replica".into()))
            }
            Err(e) => Err(e),
        }
    }

    /// Whether another holder's lease has gone unrenewed for a lease duration, as this
    /// replica has watched it. The duration is this replica's own, never the one written in
    /// the Lease: anyone who may write the Lease could write a year there.
    ///
    /// A Lease without the operator's label was not written by a replica (the webhook guards
    /// only labelled ones): its renewals do not count, so a holder someone else keeps
    /// "renewing" there is expired after a lease duration all the same.
    fn expired(&self, spec: &LeaseSpec, labelled: bool) -> bool {
        let renewed = if labelled {
            format!("{:?}", spec.renew_time)
        } else {
            String::new()
        };
        let record = format!("{:?}/{renewed}", spec.holder_identity);
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        match observed.as_ref() {
            Some((seen, since)) if *seen == record => since.elapsed() >= self.config.duration,
            Some(_) => {
                *observed = Some((record, Instant::now()));
                drop(observed);
                self.saw_renewal();
                false
            }
            None => {
                *observed = Some((record, Instant::now()));
                false
            }
        }
    }

    /// The lease as this replica holds it, taking over `previous` when given.
    fn record(&self, previous: Option<&Lease>) -> Lease {
        let now = MicroTime(jiff::Timestamp::now());
        let old = previous.and_then(|l| l.spec.clone()).unwrap_or_default();
        let ours = old.holder_identity.as_deref() == Some(self.config.identity.as_str());
        let transitions =
            old.lease_transitions.unwrap_or(0) + i32::from(!ours && previous.is_some());
        Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                labels: Some({
                    let mut labels = previous
                        .and_then(|l| l.metadata.labels.clone())
                        .unwrap_or_default();
                    labels.insert(crate::api::LEASE_LABEL.into(), "true".into());
                    labels
                }),
                annotations: previous.and_then(|l| l.metadata.annotations.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                lease_duration_seconds: Some(self.config.duration.as_secs().clamp(1, 3600) as i32),
                acquire_time: if ours {
                    old.acquire_time
                } else {
                    Some(now.clone())
                },
                renew_time: Some(now),
                lease_transitions: Some(transitions),
                ..Default::default()
            }),
        }
    }
}
