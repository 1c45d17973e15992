//! Leader election among replicas in Kubernetes mode
//! ([ADR 0010](../../docs/adr/0010-leader-election-on-a-lease.md)): one replica at a time writes
//! MCPServer status and Kubernetes Events, the holder of the `coordination.k8s.io/v1` Lease
//! `muster-leader` in muster's own namespace. Every replica watches and serves; only those writes
//! are gated, through `Leadership`.
//!
//! The loop is client-go's `leaderelection` on a Lease: read it, create it when it is missing,
//! take it when it is free (released: no holder) or when it has not changed for a lease duration
//! by this process's own clock (never by the holder's `renewTime`, so nodes' clocks may differ),
//! and renew it while held. Every write carries the `resourceVersion` just read, so of replicas
//! racing for it one wins and the others get 409. A leader that has not renewed for
//! `RENEW_DEADLINE` stops writing, `LEASE_DURATION − RENEW_DEADLINE` before anyone may take over.
//! `Election::release` hands the lease back on a graceful stop, so a follower takes it within
//! `FOLLOW_INTERVAL` instead of a lease duration. Filesystem mode has no election: one muster
//! writes one folder.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The Lease's name, in muster's own namespace (`namespace` in config.yaml).
pub const LEASE_NAME: &str = "muster-leader";
/// How long a Lease not renewed stays its holder's.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// A leader renews this often.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(5);
/// A leader that has not renewed for this long stops writing (before the lease can expire).
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// A follower looks at the Lease this often, and a leader retries a failed renewal this often.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(2);
/// Every request to the API server gets at most this long (kube's client has no read timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Kubernetes API did not answer within {} s", REQUEST_TIMEOUT.as_secs())]
    Timeout,
    #[error("lease {namespace}/{LEASE_NAME}: {source}")]
    Api {
        namespace: String,
        #[source]
        source: kube::Error,
    },
}

/// Whether this replica writes status and events now. Cheap to clone and to read.
#[derive(Clone, Debug)]
pub struct Leadership {
    rx: watch::Receiver<bool>,
}

impl Leadership {
    /// A replica that always writes (no election), for tests of what the writers do.
    pub fn always() -> Self {
        let (_, rx) = watch::channel(true);
        Self { rx }
    }

    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits for the next change and returns whether this replica now leads. Never returns
    /// when nothing can change any more (`always`, or the election ended).
    pub async fn changed(&mut self) -> bool {
        if self.rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        *self.rx.borrow_and_update()
    }
}

/// The running election: its loop, and the way to end it (`release`).
pub struct Election {
    leadership: Leadership,
    stop: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

impl Election {
    /// Makes the first attempt before returning, so a lone replica leads before its first
    /// status or event, then keeps trying (or renewing) in a task.
    pub async fn start(client: Client, namespace: &str, identity: String) -> Self {
        let (tx, rx) = watch::channel(false);
        let mut elector = Elector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            identity,
            observed: None,
            last_renewal: None,
            tx,
        };
        tracing::info!(identity = elector.identity, lease = LEASE_NAME, namespace, "joining the leader election");
        elector.round().await;
        let stop = CancellationToken::new();
        let done = tokio::spawn(elector.run(stop.clone()));
        Self { leadership: Leadership { rx }, stop, done }
    }

    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// Stops writing at once and hands the Lease back if this replica holds it (muster is
    /// stopping). Waits at most `REQUEST_TIMEOUT` for the API server.
    pub async fn release(self) {
        self.stop.cancel();
        if tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(1), self.done).await.is_err() {
            tracing::info!("the leader lease was not released in time; it expires on its own");
        }
    }
}

/// What the Lease, as read, means for this replica.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    /// It is ours: renew it.
    Renew,
    /// It is free (released, or expired by our clock): take it.
    Take,
    /// Another replica holds it.
    Follow { holder: String },
}

/// The pure rule: `unchanged_for` is how long the Lease's record has stayed the same by this
/// process's clock.
fn decide(spec: &LeaseSpec, identity: &str, unchanged_for: Duration) -> Decision {
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(LEASE_DURATION, Duration::from_secs)
        .max(Duration::from_secs(1));
    if holder.is_empty() || unchanged_for >= duration {
        return Decision::Take;
    }
    Decision::Follow { holder: holder.to_owned() }
}

/// The Lease's spec once this replica renews or takes it.
fn claimed(previous: &LeaseSpec, identity: &str, now: Timestamp) -> LeaseSpec {
    let ours = previous.holder_identity.as_deref() == Some(identity);
    LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(seconds(LEASE_DURATION)),
        acquire_time: if ours { previous.acquire_time.clone() } else { Some(MicroTime(now)) },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(previous.lease_transitions.unwrap_or(0) + i32::from(!ours)),
        ..previous.clone()
    }
}

/// The Lease's spec once its holder hands it back (as client-go does: no holder, 1 s).
fn released(previous: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        renew_time: Some(MicroTime(now)),
        ..previous.clone()
    }
}

fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

/// The part of the Lease whose change shows its holder is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    transitions: Option<i32>,
}

struct Elector {
    api: Api<Lease>,
    namespace: String,
    identity: String,
    /// The Lease's record when last read, and when (by our clock) it last changed.
    observed: Option<(Record, Instant)>,
    /// When this replica last wrote the Lease as its holder.
    last_renewal: Option<Instant>,
    tx: watch::Sender<bool>,
}

impl Elector {
    async fn run(mut self, stop: CancellationToken) {
        loop {
            let wait = match (self.is_leader(), self.last_renewal) {
                (true, Some(at)) if at.elapsed() < RENEW_INTERVAL => RENEW_INTERVAL.saturating_sub(at.elapsed()),
                _ => FOLLOW_INTERVAL,
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(wait) => self.round().await,
            }
        }
        let was_leader = self.is_leader();
        self.set_leader(false);
        if was_leader {
            match tokio::time::timeout(REQUEST_TIMEOUT, self.release()).await {
                Ok(Ok(())) => tracing::info!(identity = self.identity, "released the leader lease"),
                Ok(Err(e)) => tracing::info!(error = %e, "cannot release the leader lease; it expires on its own"),
                Err(_) => tracing::info!("releasing the leader lease timed out; it expires on its own"),
            }
        }
    }

    fn is_leader(&self) -> bool {
        *self.tx.borrow()
    }

    fn set_leader(&self, leader: bool) {
        self.tx.send_if_modified(|current| std::mem::replace(current, leader) != leader);
    }

    /// One attempt to take or renew the Lease; a failure keeps leadership until the deadline.
    async fn round(&mut self) {
        let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, self.try_acquire_or_renew()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::Timeout),
        };
        let was_leader = self.is_leader();
        match outcome {
            Ok(true) => {
                self.last_renewal = Some(Instant::now());
                if !was_leader {
                    tracing::info!(identity = self.identity, "leading: this replica writes status and events");
                }
                self.set_leader(true);
            }
            Ok(false) => {
                if was_leader {
                    tracing::warn!(identity = self.identity, "lost the leader lease; no longer writing status");
                }
                self.set_leader(false);
            }
            Err(e) => {
                let overdue = self.last_renewal.is_none_or(|at| at.elapsed() >= RENEW_DEADLINE);
                if was_leader && overdue {
                    tracing::warn!(error = %e, "cannot renew the leader lease in time; no longer writing status");
                    self.set_leader(false);
                } else {
                    tracing::info!(error = %e, "leader election attempt failed");
                }
            }
        }
    }

    /// `Ok(true)`: this replica holds the Lease now.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, Error> {
        let Some(lease) = self.api.get_opt(LEASE_NAME).await.map_err(|e| self.error(e))? else {
            return self.create().await;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let unchanged_for = self.observe(&spec);
        match decide(&spec, &self.identity, unchanged_for) {
            Decision::Follow { holder } => {
                tracing::debug!(holder, "another replica leads");
                Ok(false)
            }
            Decision::Renew | Decision::Take => {
                let updated = Lease { spec: Some(claimed(&spec, &self.identity, Timestamp::now())), ..lease };
                self.replace(&updated).await
            }
        }
    }

    /// Remembers what the Lease holds; returns how long it has held it by our clock.
    fn observe(&mut self, spec: &LeaseSpec) -> Duration {
        let record = Record {
            holder: spec.holder_identity.clone(),
            renew_time: spec.renew_time.clone(),
            transitions: spec.lease_transitions,
        };
        match &self.observed {
            Some((seen, at)) if *seen == record => at.elapsed(),
            _ => {
                self.observed = Some((record, Instant::now()));
                Duration::ZERO
            }
        }
    }

    async fn create(&mut self) -> Result<bool, Error> {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(LEASE_NAME.to_owned()), ..ObjectMeta::default() },
            spec: Some(claimed(&LeaseSpec::default(), &self.identity, Timestamp::now())),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(created) => {
                self.remember(&created);
                Ok(true)
            }
            // Another replica created it first: it leads.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Writes the Lease with the `resourceVersion` read; another replica's write in between
    /// makes it a 409, and that replica leads.
    async fn replace(&mut self, lease: &Lease) -> Result<bool, Error> {
        match self.api.replace(LEASE_NAME, &PostParams::default(), lease).await {
            Ok(written) => {
                self.remember(&written);
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Our own write is a change we saw now.
    fn remember(&mut self, lease: &Lease) {
        if let Some(spec) = &lease.spec {
            self.observe(spec);
        }
    }

    async fn release(&self) -> Result<(), Error> {
        let Some(lease) = self.api.get_opt(LEASE_NAME).await.map_err(|e| self.error(e))? else { return Ok(()) };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        let updated = Lease { spec: Some(released(&spec, Timestamp::now())), ..lease };
        match self.api.replace(LEASE_NAME, &PostParams::default(), &updated).await {
            // Someone took it meanwhile: nothing to hand back.
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    fn error(&self, source: kube::Error) -> Error {
        Error::Api { namespace: self.namespace.clone(), source }
    }
}

/// This replica's name in the election: the pod's name (`POD_NAME`, from the downward API),
/// else the host name (a pod's host name is its name), else one made of the process id.
pub fn identity() -> String {
    let from_env = |key: &str| std::env::var(key).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    from_env("POD_NAME")
        .or_else(|| from_env("HOSTNAME"))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| format!("muster-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: Option<&str>, duration: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: duration,
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_held_lease_is_followed_until_it_stays_unchanged_for_its_duration() {
        let spec = held_by(Some("muster-a"), Some(15));
        let follow = Decision::Follow { holder: "muster-a".to_owned() };
        assert_eq!(decide(&spec, "muster-b", Duration::ZERO), follow);
        assert_eq!(decide(&spec, "muster-b", Duration::from_millis(14_999)), follow);
        assert_eq!(decide(&spec, "muster-b", Duration::from_secs(15)), Decision::Take);
        // Without a duration, muster's own.
        assert_eq!(decide(&held_by(Some("muster-a"), None), "muster-b", Duration::from_secs(14)), follow);
        // A zero duration is not "expired at once": at least a second. A negative one is muster's.
        assert_eq!(decide(&held_by(Some("muster-a"), Some(0)), "muster-b", Duration::ZERO), follow);
        assert_eq!(decide(&held_by(Some("muster-a"), Some(0)), "muster-b", Duration::from_secs(1)), Decision::Take);
        assert_eq!(decide(&held_by(Some("muster-a"), Some(-5)), "muster-b", Duration::from_secs(14)), follow);
    }

    #[test]
    fn a_free_lease_is_taken_and_our_own_renewed() {
        assert_eq!(decide(&held_by(None, Some(1)), "muster-b", Duration::ZERO), Decision::Take);
        assert_eq!(decide(&held_by(Some(""), Some(15)), "muster-b", Duration::ZERO), Decision::Take);
        assert_eq!(decide(&held_by(Some("muster-b"), Some(15)), "muster-b", Duration::from_secs(60)), Decision::Renew);
    }

    #[test]
    fn taking_counts_a_transition_and_renewing_keeps_the_acquire_time() {
        let (t1, t2) = (Timestamp::from_second(1_000).unwrap(), Timestamp::from_second(2_000).unwrap());
        let taken = claimed(&held_by(Some("muster-a"), Some(1)), "muster-b", t1);
        assert_eq!(taken.holder_identity.as_deref(), Some("muster-b"));
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.lease_duration_seconds, Some(15));
        assert_eq!(taken.acquire_time, Some(MicroTime(t1)));
        let renewed = claimed(&taken, "muster-b", t2);
        assert_eq!(renewed.lease_transitions, Some(4));
        assert_eq!(renewed.acquire_time, Some(MicroTime(t1)));
        assert_eq!(renewed.renew_time, Some(MicroTime(t2)));
        let handed_back = released(&renewed, t2);
        assert_eq!(handed_back.holder_identity, None);
        assert_eq!(decide(&handed_back, "muster-a", Duration::ZERO), Decision::Take);
    }
}
