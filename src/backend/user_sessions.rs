//! Upstream sessions per (user, backend), for servers with `spec.auth`: each carries that user's
//! token for that cluster only (exchanged by RFC 8693, or forwarded). They ride the backend's one
//! HTTP client, so thousands of agent sessions of one user share one upstream session and the TCP
//! connections stay pooled. Idle sessions are reaped; a new token (after a refresh) opens a new
//! session and the old one idles out.

use std::sync::Arc;
use std::time::Duration;

use super::ServerCapabilities;
use super::connect;
use super::relay::{Relay, UpstreamHandler};
use crate::auth::exchange::{self, ExchangeTarget, Exchanger};
use crate::auth::{Identity, Secret};
use crate::crd::McpServer;

const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// How a backend authenticates its upstream calls.
pub enum UpstreamAuth {
    /// Send the agent's own validated token (`forwardToken: true`).
    Forward,
    /// Exchange the agent's token at the cluster's identity provider (`tokenExchange`).
    Exchange { target: Box<ExchangeTarget>, exchanger: Arc<Exchanger> },
}

impl UpstreamAuth {
    pub async fn token(&self, identity: &Identity) -> Result<Secret, exchange::Error> {
        match self {
            Self::Forward => Ok(identity.token.clone()),
            Self::Exchange { target, exchanger } => exchanger.token(target, identity).await,
        }
    }

    pub async fn invalidate(&self, identity: &Identity) {
        if let Self::Exchange { target, exchanger } = self {
            exchanger.invalidate(target, identity).await;
        }
    }

    pub fn is_exchange(&self) -> bool {
        matches!(self, Self::Exchange { .. })
    }

    /// The cluster identity provider's issuer (for `auth://status`).
    pub fn issuer(&self) -> Option<&str> {
        match self {
            Self::Exchange { target, .. } => Some(&target.expected_issuer),
            Self::Forward => None,
        }
    }

    pub async fn has_token(&self, identity: &Identity) -> bool {
        match self {
            Self::Forward => true,
            Self::Exchange { target, exchanger } => exchanger.has_token(target, identity).await,
        }
    }

    pub async fn last_failure(&self, identity: &Identity) -> Option<exchange::Error> {
        match self {
            Self::Forward => None,
            Self::Exchange { target, exchanger } => exchanger.last_failure(target, identity).await,
        }
    }
}

/// One user's live session with one upstream.
pub(super) struct UserSession {
    pub(super) upstream: super::UpstreamSession,
    /// This session's own relay: what the upstream sends during calls goes to this user only.
    pub(super) relay: Arc<Relay>,
    pub(super) capabilities: ServerCapabilities,
    cancel: tokio_util::sync::CancellationToken,
}

impl Drop for UserSession {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub(super) struct UserSessions {
    sessions: moka::future::Cache<(String, String), Arc<UserSession>>,
    /// Recent failures to open a session, so a dead upstream costs one attempt per user per
    /// `FAILURE_BACKOFF`, not one handshake (and timeout) per call.
    failures: moka::sync::Cache<(String, String), Arc<connect::Error>>,
    /// The largest reply a call on these sessions may have (`aggregator.calls.maxResultBytes`).
    max_result_bytes: usize,
}

pub(super) const FAILURE_BACKOFF: Duration = Duration::from_secs(5);

impl UserSessions {
    pub(super) fn new(max_result_bytes: usize) -> Self {
        Self {
            max_result_bytes,
            sessions: moka::future::Cache::builder().time_to_idle(IDLE_TIMEOUT).max_capacity(100_000).build(),
            failures: moka::sync::Cache::builder().time_to_live(FAILURE_BACKOFF).build(),
        }
    }

    /// The session of `identity` holding `token` (and whether it was just opened); concurrent
    /// first calls open one session.
    pub(super) async fn get(
        &self,
        definition: &Arc<McpServer>,
        http: &reqwest::Client,
        identity: &Identity,
        token: &Secret,
    ) -> Result<(Arc<UserSession>, bool), Arc<connect::Error>> {
        let key = (identity.key(), token.fingerprint());
        if let Some(error) = self.failures.get(&key) {
            return Err(error);
        }
        let (definition, http, token) = (definition.clone(), http.clone(), token.clone());
        let max_result_bytes = self.max_result_bytes;
        let entry = self
            .sessions
            .entry(key.clone())
            .or_try_insert_with(async move {
                let relay = Arc::new(Relay::new(definition.name().to_owned()));
                // User sessions do not report list_changed to the actor (it owns the shared one).
                let handler = UpstreamHandler::new(relay.clone(), None, 0);
                let connected = connect::connect(&definition, http, handler, Some(&token), max_result_bytes).await?;
                let closed = connected.closed;
                tokio::spawn(async move {
                    let _ = closed.await;
                });
                Ok(Arc::new(UserSession {
                    upstream: super::UpstreamSession {
                        peer: connected.peer,
                        transport: connected.transport,
                        generation: 0,
                    },
                    relay,
                    capabilities: connected.capabilities,
                    cancel: connected.cancel,
                }))
            })
            .await;
        match entry {
            Ok(entry) => {
                let fresh = entry.is_fresh();
                Ok((entry.into_value(), fresh))
            }
            Err(error) => {
                // A 401 is handled by the caller (re-exchange); other failures back off.
                if !matches!(*error, connect::Error::AuthRequired) {
                    self.failures.insert(key, error.clone());
                }
                Err(error)
            }
        }
    }

    pub(super) async fn invalidate(&self, identity: &Identity, token: &Secret) {
        self.sessions.invalidate(&(identity.key(), token.fingerprint())).await;
    }

    /// Closes idle sessions now (moka evicts lazily, on use).
    pub(super) async fn reap(&self) {
        self.sessions.run_pending_tasks().await;
    }

    /// Closes every session (the backend is stopping).
    pub(super) fn close_all(&self) {
        self.sessions.invalidate_all();
    }

    pub(super) fn count(&self) -> u64 {
        self.sessions.entry_count()
    }
}
