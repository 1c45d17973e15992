//! The `auth://status` resource: for the calling agent, each server's state as that user sees it
//! (reference §4.6). One closed status enum; every formatter (this JSON, `muster auth status`)
//! matches it exhaustively, so no state prints as "unhandled" (Muster #1000).
//!
//! Without sign-in (no `aggregator.oauth.server`) there is no per-user state: the resource is
//! `FleetStatus`, each server's state as muster sees it, without the sign-in fields, and with
//! when a failed server is retried. With sign-in its shape is `AuthStatus`, unchanged.

use serde::{Deserialize, Serialize};

use crate::auth::Identity;
use crate::crd::status::State;
use crate::routing::CatalogSnapshot;

pub const URI: &str = "auth://status";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Connected,
    AuthRequired,
    ReauthRequired,
    SsoPending,
    Disconnected,
    Error,
    Unreachable,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub name: String,
    pub status: SessionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// A tool that would fix `auth_required`; muster's SSO servers have none (Muster #1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub token_forwarding_enabled: bool,
    pub token_exchange_enabled: bool,
    pub sso_attempt_failed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthStatus {
    pub servers: Vec<ServerStatus>,
}

/// `auth://status` without sign-in: `{servers: [{name, status, error?, retry_in_seconds?}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStatus {
    pub servers: Vec<ServerState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerState {
    pub name: String,
    pub status: SessionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When muster tries a failed server again on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_seconds: Option<u64>,
}

/// Each server's state as muster sees it, for a muster without sign-in.
pub fn compute_without_sign_in(snapshot: &CatalogSnapshot) -> FleetStatus {
    let now = std::time::Instant::now();
    let servers = snapshot
        .servers
        .iter()
        .map(|(name, server)| {
            let connection = server.handle.status();
            let status = session_status(connection.state);
            let retry_in_seconds = connection.retry_at.filter(|_| status == SessionStatus::Failed).map(|at| {
                let left = at.saturating_duration_since(now);
                left.as_secs() + u64::from(left.subsec_nanos() > 0)
            });
            ServerState { name: name.clone(), status, error: connection.last_error, retry_in_seconds }
        })
        .collect();
    FleetStatus { servers }
}

/// A server's own connection state (no user involved) in the resource's words.
fn session_status(state: State) -> SessionStatus {
    match state {
        State::Connected | State::Running => SessionStatus::Connected,
        State::Failed => SessionStatus::Failed,
        State::AuthRequired => SessionStatus::AuthRequired,
        State::Starting | State::Connecting | State::Disconnected | State::Stopped => SessionStatus::Disconnected,
    }
}

pub async fn compute(snapshot: &CatalogSnapshot, identity: Option<&Identity>) -> AuthStatus {
    let mut servers = Vec::new();
    for (name, server) in &snapshot.servers {
        let connection = server.handle.status();
        let mut entry = ServerStatus {
            name: name.clone(),
            status: SessionStatus::Disconnected,
            issuer: None,
            auth_tool: None,
            error: None,
            token_forwarding_enabled: false,
            token_exchange_enabled: false,
            sso_attempt_failed: false,
        };
        match (server.handle.auth(), identity) {
            (None, _) => {
                entry.status = session_status(connection.state);
                entry.error = connection.last_error;
            }
            (Some(auth), identity) => {
                entry.issuer = auth.issuer().map(str::to_owned);
                entry.token_exchange_enabled = auth.is_exchange();
                entry.token_forwarding_enabled = !auth.is_exchange();
                let Some(identity) = identity else {
                    entry.status = SessionStatus::AuthRequired;
                    servers.push(entry);
                    continue;
                };
                if auth.has_token(identity).await {
                    entry.status = SessionStatus::Connected;
                } else if let Some(failure) = auth.last_failure(identity).await {
                    entry.sso_attempt_failed = true;
                    entry.status =
                        if failure.is_auth_failure() { SessionStatus::Failed } else { SessionStatus::Unreachable };
                    entry.error = Some(failure.to_string());
                } else {
                    entry.status = SessionStatus::SsoPending;
                }
            }
        }
        servers.push(entry);
    }
    AuthStatus { servers }
}
