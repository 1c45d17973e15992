//! Exchanged tokens shared by the replicas through the store (ADR 0009), so that a (user,
//! cluster) is exchanged once per token lifetime for the whole deployment.
//!
//! - A token is stored sealed (`store::seal`, bound to its cache key) under `token:<cache key>`,
//!   expiring with it; the cache key is already a hash of (endpoint, client, scopes, user).
//! - A replica that misses locally reads the store; on a miss there it takes a short lock
//!   (`token-lock:<cache key>`, set-if-absent, `LOCK_TTL`) and exchanges, or waits for the
//!   holder's token (polling every `POLL`, at most `WAIT`, then exchanges itself).
//! - Without the store (down), a replica exchanges on its own: one more exchange, no failed call.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{Exchanged, Secret};
use crate::store::{Keyring, Store};

/// A lock holder that died frees the lock after this: longer than an exchange can take (the
/// identity-provider client's 15 s timeout), so a slow exchange keeps its lock.
const LOCK_TTL: Duration = Duration::from_secs(20);
/// How long a replica waits for another one's exchange: as long as that exchange may take. A
/// holder that fails unlocks at once, so waiters only wait this long for a holder that died.
pub(super) const WAIT: Duration = Duration::from_secs(15);
pub(super) const POLL: Duration = Duration::from_millis(20);

pub(super) struct Shared {
    store: Store,
    keyring: Keyring,
}

/// What the store says about a token.
pub(super) enum Lookup {
    Found(Arc<Exchanged>),
    Missing,
    /// The store failed: exchange locally.
    Unavailable,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    token: String,
    /// When the cached lifetime ends (Unix milliseconds).
    until_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Shared {
    pub(super) fn new(store: Store, keyring: Keyring) -> Self {
        Self { store, keyring }
    }

    pub(super) async fn lookup(&self, key: &str) -> Lookup {
        let sealed = match self.store.get(&format!("token:{key}")).await {
            Ok(Some(sealed)) => sealed,
            Ok(None) => return Lookup::Missing,
            Err(_) => return Lookup::Unavailable,
        };
        let Some(stored) =
            self.keyring.open(&sealed, key).ok().and_then(|plain| serde_json::from_slice::<Stored>(&plain).ok())
        else {
            // Sealed under a key this replica lacks: treat as absent (it exchanges and overwrites).
            return Lookup::Missing;
        };
        let left = stored.until_ms.saturating_sub(now_ms());
        if left < 1000 {
            return Lookup::Missing;
        }
        Lookup::Found(Arc::new(Exchanged {
            token: Secret::new(stored.token),
            ttl: Duration::from_millis(left),
            obtained: Instant::now(),
        }))
    }

    /// Takes the exchange lock for `key`: `Some(true)` taken, `Some(false)` held elsewhere,
    /// `None` the store failed.
    pub(super) async fn lock(&self, key: &str) -> Option<bool> {
        self.store.set_if_absent(&format!("token-lock:{key}"), b"1", LOCK_TTL).await.ok()
    }

    pub(super) async fn unlock(&self, key: &str) {
        let _ = self.store.delete(&format!("token-lock:{key}")).await;
    }

    /// Shares a token this replica exchanged.
    pub(super) async fn publish(&self, key: &str, entry: &Exchanged) {
        let left = entry.ttl.saturating_sub(entry.obtained.elapsed());
        let stored = Stored {
            token: entry.token.expose().to_owned(),
            until_ms: now_ms() + u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
        };
        let Ok(sealed) =
            serde_json::to_vec(&stored).map_err(|_| ()).and_then(|p| self.keyring.seal(&p, key).map_err(|_| ()))
        else {
            return;
        };
        if let Err(e) = self.store.set(&format!("token:{key}"), &sealed, left).await {
            tracing::debug!(error = %e, "an exchanged token was not shared");
        }
    }

    /// The upstream refused the token: no replica should hand it out again.
    pub(super) async fn forget(&self, key: &str) {
        let _ = self.store.delete(&format!("token:{key}")).await;
    }
}
