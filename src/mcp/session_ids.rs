//! Agent session ids that any replica can serve (ADR 0009).
//!
//! - An id is the session's record sealed (AES-256-GCM under `aggregator.sessions.keyFile`): its
//!   owner and when it began. A replica that never saw the session opens the id and serves it;
//!   nobody can forge one or read the owner out of it.
//! - With a shared store, the session's liveness is a store key (`session:<key>`): `initialize`
//!   sets it before the agent learns the id, requests refresh it (at most every `TOUCH_EVERY` per
//!   replica, off the request's path) and it expires after `IDLE_TIMEOUT` without any; a session
//!   opened while the store was down is set by its first request once the store answers; `DELETE`
//!   removes it and publishes `session-ended`, so every replica drops its copy at once.
//! - A replica meets an unknown id only on a local miss: one store read then, none per request.
//!   With the store down, a sealed id is served (degraded: an ended session may be resumed).
//! - What an agent posts to one replica for a call another replica runs (its answer to a
//!   server-to-client request, `notifications/cancelled`) is published as `session-relay`
//!   (`Relayed`); the replica holding that request takes it. So do the session's notifications
//!   when its standalone stream is on another replica (announced as `Relayed::Listening`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::store::{Keyring, Message, Store};

/// What a sealed id holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    #[serde(rename = "o")]
    pub owner: Option<String>,
    /// When the session began (Unix seconds).
    #[serde(rename = "t")]
    pub created: u64,
}

/// The associated data of every sealed id: an id opens only as an id.
const SEALED_AS: &str = "muster agent session";
/// The topic on the store's channel when a session ends; the payload is its key.
pub const ENDED: &str = "session-ended";
/// The topic of what an agent posted to a replica that does not run the call it is about.
pub const RELAYED: &str = "session-relay";
/// A replica refreshes a session's liveness at most this often.
pub const TOUCH_EVERY: Duration = Duration::from_secs(30);

/// What an agent posted about a call that another replica runs.
#[derive(Debug, Serialize, Deserialize)]
pub enum Relayed {
    /// The agent's answer to the server-to-client request `id`.
    Reply { id: rmcp::model::RequestId, reply: crate::caller::AgentReply },
    /// `notifications/cancelled` for the agent's request `id`.
    Cancel { id: rmcp::model::RequestId },
    /// The agent opened its standalone stream on the replica that published this.
    Listening,
    /// A notification for the agent's standalone stream, which this replica does not hold.
    Notify { notification: rmcp::model::ServerNotification },
    /// `resources/unsubscribe` for `uri`, for the replica that holds the subscription.
    Unsubscribe { uri: String },
    /// The agent's `logging/setLevel`, for every replica that holds the session.
    LogLevel { level: rmcp::model::LoggingLevel },
}

/// A `Relayed` for the session with key `session`, as it crosses the store.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub session: String,
    pub relayed: Relayed,
}

pub struct SessionIds {
    keyring: Keyring,
}

impl SessionIds {
    pub fn new(keyring: Keyring) -> Self {
        Self { keyring }
    }

    /// A new id for a session of `owner`.
    pub fn mint(&self, owner: Option<&str>) -> String {
        let record = Record { owner: owner.map(str::to_owned), created: now() };
        let plain = serde_json::to_vec(&record).unwrap_or_default();
        match self.keyring.seal(&plain, SEALED_AS) {
            Ok(sealed) => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed),
            // Sealing fails only without a key, which `Keyring` never is: fall back to a random id,
            // which this replica still serves.
            Err(_) => hex::encode(rand::random::<[u8; 16]>()),
        }
    }

    /// The record an id holds, if it is one of ours.
    pub fn open(&self, id: &str) -> Option<Record> {
        if id.len() > 1024 {
            return None;
        }
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(id).ok()?;
        let plain = self.keyring.open(&sealed, SEALED_AS).ok()?;
        serde_json::from_slice(&plain).ok()
    }
}

/// The key of an id in this replica's map and in the store: a hash, so neither holds the id.
pub fn key_of(id: &str) -> String {
    hex::encode(&sha2::Sha256::digest(id.as_bytes())[..16])
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Session liveness in the shared store.
#[derive(Clone)]
pub struct Liveness {
    store: Store,
    idle: Duration,
}

impl Liveness {
    pub fn new(store: Store, idle: Duration) -> Self {
        Self { store, idle }
    }

    fn store_key(key: &str) -> String {
        format!("session:{key}")
    }

    /// The session began, or is used for the first time since the store came back: set before
    /// its id reaches the agent (before that request is answered). False when the store is down.
    pub async fn begin(&self, key: &str) -> bool {
        match self.store.set(&Self::store_key(key), b"1", self.idle).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "a session is not shared yet; its next request shares it");
                false
            }
        }
    }

    /// Whether the store answered its last operation (see `Store::is_up`).
    pub fn store_is_up(&self) -> bool {
        self.store.is_up()
    }

    /// The session is in use here: refresh its liveness, off the request's path.
    pub fn touch(&self, key: &str) {
        let (store, key, idle) = (self.store.clone(), Self::store_key(key), self.idle);
        tokio::spawn(async move {
            let _ = store.set(&key, b"1", idle).await;
        });
    }

    /// Whether the session is still alive somewhere; true when the store cannot say (degraded).
    pub async fn alive(&self, key: &str) -> bool {
        match self.store.get(&Self::store_key(key)).await {
            Ok(value) => value.is_some(),
            Err(_) => true,
        }
    }

    /// Hands `relayed` to the replica that runs the call it is about.
    pub async fn relay(&self, key: &str, relayed: Relayed) {
        let envelope = Envelope { session: key.to_owned(), relayed };
        let Ok(payload) = serde_json::to_string(&envelope) else { return };
        if let Err(e) = self.store.publish(Message { topic: RELAYED.to_owned(), payload }).await {
            tracing::warn!(error = %e, "an agent's answer for a call on another replica could not be passed on");
        }
    }

    /// The session ended (`DELETE`): every replica drops it.
    pub async fn end(&self, key: &str) {
        let _ = self.store.delete(&Self::store_key(key)).await;
        let _ = self.store.publish(Message { topic: ENDED.to_owned(), payload: key.to_owned() }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_opens_to_its_record_and_nothing_else_opens() {
        let ids = SessionIds::new(Keyring::new(&[[3; 32]]));
        let id = ids.mint(Some("https://idp|alice"));
        assert!(id.bytes().all(|b| (0x21..=0x7e).contains(&b)), "visible ASCII: {id}");
        assert!(!id.contains("alice"));
        let record = ids.open(&id).expect("opens");
        assert_eq!(record.owner.as_deref(), Some("https://idp|alice"));
        assert!(record.created > 0);
        assert_ne!(ids.mint(None), ids.mint(None), "unique");
        assert_eq!(SessionIds::new(Keyring::new(&[[4; 32]])).open(&id), None, "another deployment's key");
        let mut forged = id.clone().into_bytes();
        forged[10] = if forged[10] == b'A' { b'B' } else { b'A' };
        assert_eq!(ids.open(&String::from_utf8(forged).expect("ascii")), None);
        assert_eq!(ids.open("0123456789abcdef"), None);
        assert_eq!(ids.open(&"A".repeat(5000)), None);
    }

    #[tokio::test]
    async fn liveness_begins_ends_and_is_published() {
        let store = Store::local();
        let mut events = store.subscribe();
        let liveness = Liveness::new(store, Duration::from_secs(60));
        assert!(!liveness.alive("k").await);
        liveness.begin("k").await;
        assert!(liveness.alive("k").await);
        liveness.end("k").await;
        assert!(!liveness.alive("k").await);
        assert_eq!(events.recv().await.expect("published"), Message { topic: ENDED.into(), payload: "k".into() });
    }
}
