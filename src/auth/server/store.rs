//! Where the authorization server keeps its state: registered clients, pending authorizations,
//! codes, token families (with the sealed IdP tokens) and token hashes. `Store` is a small
//! key-value interface with expiry and an atomic `take`. `MemoryStore` keeps it in this process
//! and loses it on restart; `Shared` keeps it in the replicas' shared store (Valkey: `SET … PX`,
//! `GET`, `GETDEL`, `DEL` under `oauth:`), so a sign-in made at one replica works at every one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use std::time::Instant;

/// Why the store could not answer (only a remote store fails; memory never does).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the authorization server's store is unavailable: {0}")]
pub(super) struct Error(pub String);

/// Bytes under string keys, each with a time to live.
pub(super) trait Store: Send + Sync {
    fn put<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Duration) -> BoxFuture<'a, Result<(), Error>>;
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, Error>>;
    /// Gets and deletes at once: a value taken is seen by one caller only (one-time codes).
    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, Error>>;
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), Error>>;
}

/// The replicas' shared store (ADR 0009).
pub(super) struct Shared(pub crate::store::Store);

const SHARED_PREFIX: &str = "oauth:";

fn shared_error(e: crate::store::Error) -> Error {
    let crate::store::Error::Unavailable { at, reason } = e;
    Error(format!("{at}: {reason}"))
}

impl Store for Shared {
    fn put<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Duration) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move { self.0.set(&format!("{SHARED_PREFIX}{key}"), &value, ttl).await.map_err(shared_error) })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, Error>> {
        Box::pin(async move { self.0.get(&format!("{SHARED_PREFIX}{key}")).await.map_err(shared_error) })
    }

    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, Error>> {
        Box::pin(async move { self.0.take(&format!("{SHARED_PREFIX}{key}")).await.map_err(shared_error) })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move { self.0.delete(&format!("{SHARED_PREFIX}{key}")).await.map_err(shared_error) })
    }
}

/// Entries before expired ones are swept on the next write.
const SWEEP_EVERY: usize = 1024;
/// The most entries memory holds (about 500 bytes each): past it, a write fails rather than
/// growing without bound (registrations are rate-limited, but an address has days to try).
const MAX_ENTRIES: usize = 500_000;

/// The store of one process.
pub(super) struct MemoryStore {
    entries: Mutex<Entries>,
    capacity: usize,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self { entries: Mutex::default(), capacity: MAX_ENTRIES }
    }
}

#[derive(Default)]
struct Entries {
    map: HashMap<String, (Instant, Vec<u8>)>,
    writes: usize,
}

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut Entries) -> T) -> T {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut entries)
    }

    fn live(entries: &mut Entries, key: &str, remove: bool) -> Option<Vec<u8>> {
        let now = Instant::now();
        match entries.map.get(key) {
            Some((expires, _)) if *expires <= now => {
                entries.map.remove(key);
                None
            }
            Some(_) if remove => entries.map.remove(key).map(|(_, v)| v),
            Some((_, value)) => Some(value.clone()),
            None => None,
        }
    }
}

impl Store for MemoryStore {
    fn put<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Duration) -> BoxFuture<'a, Result<(), Error>> {
        let stored = self.with(|entries| {
            let now = Instant::now();
            entries.writes += 1;
            if entries.writes.is_multiple_of(SWEEP_EVERY) || entries.map.len() >= self.capacity {
                entries.map.retain(|_, (expires, _)| *expires > now);
            }
            if entries.map.len() >= self.capacity && !entries.map.contains_key(key) {
                return Err(Error(format!("it holds {} entries, the most it keeps in memory", self.capacity)));
            }
            entries.map.insert(key.to_owned(), (now + ttl, value));
            Ok(())
        });
        Box::pin(async move { stored })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, Error>> {
        let value = self.with(|entries| Self::live(entries, key, false));
        Box::pin(async move { Ok(value) })
    }

    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, Error>> {
        let value = self.with(|entries| Self::live(entries, key, true));
        Box::pin(async move { Ok(value) })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        self.with(|entries| entries.map.remove(key));
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn values_expire_and_a_taken_value_is_gone() {
        let store = MemoryStore::default();
        store.put("a", b"1".to_vec(), Duration::from_secs(10)).await.expect("put");
        store.put("b", b"2".to_vec(), Duration::ZERO).await.expect("put");
        assert_eq!(store.get("a").await.expect("get"), Some(b"1".to_vec()));
        assert_eq!(store.take("a").await.expect("take"), Some(b"1".to_vec()));
        assert_eq!(store.take("a").await.expect("take"), None, "a value is taken once");
        assert_eq!(store.get("b").await.expect("get"), None, "expired");
        store.put("c", b"3".to_vec(), Duration::from_secs(10)).await.expect("put");
        store.delete("c").await.expect("delete");
        assert_eq!(store.get("c").await.expect("get"), None);
    }

    #[tokio::test]
    async fn a_full_store_refuses_new_keys_after_dropping_expired_ones() {
        let store = MemoryStore { entries: Mutex::default(), capacity: 2 };
        store.put("a", vec![], Duration::from_secs(10)).await.expect("put");
        store.put("b", vec![], Duration::ZERO).await.expect("put");
        store.put("c", vec![], Duration::from_secs(10)).await.expect("the expired entry made room");
        assert!(store.put("d", vec![], Duration::from_secs(10)).await.is_err(), "full");
        store.put("a", b"1".to_vec(), Duration::from_secs(10)).await.expect("an existing key may change");
    }
}
