//! The state muster's replicas share (ADR 0009): a few operations on expiring keys, a short lock
//! (set-if-absent), and one publish/subscribe channel, in this process (`Local`, one replica, the
//! default) or in a Valkey or Redis server (`Valkey`, several replicas).
//!
//! Callers keep their own local caches in front and reach the store only on a local miss, so a
//! call on a healthy path makes no store round trip. Store errors are `Error::Unavailable`: a
//! caller degrades (serves from what it holds, exchanges again) rather than failing the agent's
//! call, and `is_up` (for `/readyz` and the `muster_store_up` gauge) says the store is down until
//! an operation succeeds again. Keys and the channel carry `keyPrefix`; values are bytes, sealed
//! by the caller when they hold a secret (`seal::Keyring`).

pub mod seal;
mod valkey;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

pub use seal::Keyring;

/// Messages a subscriber has not read yet; a slower one skips ahead (and is told so).
const EVENTS_QUEUE: usize = 1024;
/// How often a store that is down is asked whether it is back.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// At most this many keys in the local store.
const LOCAL_CAPACITY: u64 = 100_000;

/// A store operation failed; never holds a value or a password.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("the shared store at {at} is unavailable: {reason}")]
    Unavailable { at: String, reason: String },
}

/// One message on the shared channel: a topic (what it is about) and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: String,
}

/// The shared store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    events: broadcast::Sender<Message>,
    up: AtomicBool,
}

enum Backend {
    Local(moka::sync::Cache<String, Entry>),
    Valkey(valkey::Valkey),
}

#[derive(Clone)]
struct Entry {
    value: Arc<[u8]>,
    ttl: Duration,
}

struct EntryTtl;

impl moka::Expiry<String, Entry> for EntryTtl {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(&self, _: &String, entry: &Entry, _: Instant, _: Option<Duration>) -> Option<Duration> {
        Some(entry.ttl)
    }
}

impl Store {
    /// This process only.
    pub fn local() -> Self {
        let cache = moka::sync::Cache::builder().max_capacity(LOCAL_CAPACITY).expire_after(EntryTtl).build();
        Self::with(Backend::Local(cache))
    }

    /// The store `storage` names. A Valkey that cannot be reached now is an error: muster does
    /// not start on a store it was told to share and cannot (never a silent fallback to memory).
    pub async fn connect(storage: &crate::config::Storage) -> Result<Self, Error> {
        match storage {
            crate::config::Storage::Memory => Ok(Self::local()),
            crate::config::Storage::Valkey(config) => {
                let (events, _) = broadcast::channel(EVENTS_QUEUE);
                let valkey = valkey::Valkey::connect(config, events.clone()).await?;
                Ok(Self {
                    inner: Arc::new(Inner { backend: Backend::Valkey(valkey), events, up: AtomicBool::new(true) }),
                })
            }
        }
    }

    fn with(backend: Backend) -> Self {
        let (events, _) = broadcast::channel(EVENTS_QUEUE);
        Self { inner: Arc::new(Inner { backend, events, up: AtomicBool::new(true) }) }
    }

    /// True when other replicas share this store (Valkey): callers then publish and look up
    /// what a replica may not hold itself.
    pub fn is_shared(&self) -> bool {
        matches!(self.inner.backend, Backend::Valkey(_))
    }

    /// False from a failed operation until one succeeds.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    fn observe<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        let up = result.is_ok();
        if self.inner.up.swap(up, Ordering::Relaxed) != up {
            match &result {
                Ok(_) => tracing::info!("the shared store is reachable again"),
                Err(e) => {
                    tracing::warn!(error = %e, "the shared store failed; serving from what this replica holds");
                    self.probe_until_up();
                }
            }
            metrics::gauge!(crate::telemetry::metrics::STORE_UP).set(if up { 1.0 } else { 0.0 });
        }
        result
    }

    /// While the store is down, asks it every `PROBE_EVERY` whether it is back, so `/readyz` and
    /// the gauge say so even when no request needs the store.
    fn probe_until_up(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                let Some(inner) = weak.upgrade() else { return };
                let store = Self { inner };
                if store.is_up() {
                    return;
                }
                let result = match &store.inner.backend {
                    Backend::Local(_) => Ok(()),
                    Backend::Valkey(valkey) => valkey.ping().await,
                };
                if store.observe(result).is_ok() {
                    return;
                }
            }
        });
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let result = match &self.inner.backend {
            Backend::Local(cache) => Ok(cache.get(key).map(|e| e.value.to_vec())),
            Backend::Valkey(valkey) => valkey.get(key).await,
        };
        self.observe(result)
    }

    /// Sets `key` to `value` for `ttl`.
    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Error> {
        let result = match &self.inner.backend {
            Backend::Local(cache) => {
                cache.insert(key.to_owned(), Entry { value: value.into(), ttl });
                Ok(())
            }
            Backend::Valkey(valkey) => valkey.set(key, value, ttl).await,
        };
        self.observe(result)
    }

    /// Sets `key` only if it is absent: true when this caller set it (took the lock).
    pub async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, Error> {
        let result = match &self.inner.backend {
            Backend::Local(cache) => {
                Ok(cache.entry(key.to_owned()).or_insert_with(|| Entry { value: value.into(), ttl }).is_fresh())
            }
            Backend::Valkey(valkey) => valkey.set_if_absent(key, value, ttl).await,
        };
        self.observe(result)
    }

    /// Gets and deletes `key` at once: a value taken is seen by one caller, on any replica.
    pub async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let result = match &self.inner.backend {
            Backend::Local(cache) => Ok(cache.remove(key).map(|e| e.value.to_vec())),
            Backend::Valkey(valkey) => valkey.take(key).await,
        };
        self.observe(result)
    }

    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        let result = match &self.inner.backend {
            Backend::Local(cache) => {
                cache.invalidate(key);
                Ok(())
            }
            Backend::Valkey(valkey) => valkey.delete(key).await,
        };
        self.observe(result)
    }

    /// Sends `message` to every replica's subscribers, this one's included.
    pub async fn publish(&self, message: Message) -> Result<(), Error> {
        let result = match &self.inner.backend {
            Backend::Local(_) => {
                let _ = self.inner.events.send(message);
                Ok(())
            }
            Backend::Valkey(valkey) => valkey.publish(&message).await,
        };
        self.observe(result)
    }

    /// Messages published from now on, by any replica.
    pub fn subscribe(&self) -> broadcast::Receiver<Message> {
        self.inner.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_local_store_expires_locks_once_and_publishes_to_itself() {
        let store = Store::local();
        assert!(!store.is_shared());
        store.set("a", b"1", Duration::from_secs(60)).await.expect("set");
        assert_eq!(store.get("a").await.expect("get").as_deref(), Some(&b"1"[..]));
        assert_eq!(store.take("a").await.expect("take").as_deref(), Some(&b"1"[..]));
        assert_eq!(store.take("a").await.expect("take"), None, "a value is taken once");
        assert!(store.set_if_absent("lock", b"me", Duration::from_millis(50)).await.expect("lock"));
        assert!(!store.set_if_absent("lock", b"you", Duration::from_millis(50)).await.expect("lock"));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(store.set_if_absent("lock", b"you", Duration::from_secs(5)).await.expect("lock"), "expired");
        store.delete("a").await.expect("delete");
        assert_eq!(store.get("a").await.expect("get"), None);
        let mut events = store.subscribe();
        let message = Message { topic: "t".into(), payload: "p".into() };
        store.publish(message.clone()).await.expect("publish");
        assert_eq!(events.recv().await.expect("message"), message);
        assert!(store.is_up());
    }
}
