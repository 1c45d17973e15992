//! Access tokens this replica resolved a moment ago, so an agent's calls on a healthy path make
//! no store round trip (issue 16): the access record and its family, kept at most `FOR`, keyed by
//! the token's hash. A revocation anywhere empties every replica's copy: the replica that revokes
//! publishes `REVOKED` on the shared store's channel, and each replica's `follow` task forgets
//! what it held. Should that message be lost (the store down at that moment), a revoked token
//! still stops working within `FOR`.

use std::time::Duration;

use super::tokens::{AccessRecord, Family};
use crate::store::{Message, Store};

/// How long a resolved token is trusted without asking the store again.
const FOR: Duration = Duration::from_secs(5);
/// At most this many tokens held.
const CAPACITY: u64 = 50_000;
/// The channel topic of a revocation.
const REVOKED: &str = "oauth-revoked";

pub(super) struct Recent {
    tokens: moka::sync::Cache<String, (AccessRecord, Family)>,
    store: Store,
}

impl Recent {
    /// Starts following revocations published by every replica (only with a shared store: a
    /// replica alone forgets on its own `forget_all`).
    pub(super) fn new(store: &Store) -> std::sync::Arc<Self> {
        let recent = std::sync::Arc::new(Self {
            tokens: moka::sync::Cache::builder().max_capacity(CAPACITY).time_to_live(FOR).build(),
            store: store.clone(),
        });
        if store.is_shared() {
            let mut messages = store.subscribe();
            let weak = std::sync::Arc::downgrade(&recent);
            tokio::spawn(async move {
                loop {
                    let forget = match messages.recv().await {
                        Ok(message) => message.topic == REVOKED,
                        // Skipped messages may have held a revocation.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    };
                    let Some(recent) = weak.upgrade() else { return };
                    if forget {
                        recent.tokens.invalidate_all();
                    }
                }
            });
        }
        recent
    }

    pub(super) fn get(&self, token_hash: &str) -> Option<(AccessRecord, Family)> {
        self.tokens.get(token_hash)
    }

    pub(super) fn remember(&self, token_hash: String, access: &AccessRecord, family: &Family) {
        self.tokens.insert(token_hash, (access.clone(), family.clone()));
    }

    /// Forgets every token here and, through the store, on every other replica.
    pub(super) async fn forget_all(&self) {
        self.tokens.invalidate_all();
        if self.store.is_shared() {
            let message = Message { topic: REVOKED.to_owned(), payload: String::new() };
            if let Err(e) = self.store.publish(message).await {
                tracing::warn!(error = %e, "a revocation could not be announced; other replicas stop the token within 5 s");
            }
        }
    }
}
