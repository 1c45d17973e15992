//! The `auth://status` resource: for the calling agent, each server's state as that user sees it
//! (reference §4.6). One closed status enum; every formatter (this JSON, `muster auth status`)
//! matches it exhaustively, so no state prints as "unhandled" (Muster #1000).

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
                entry.status = match connection.state {
                    State::Connected | State::Running => SessionStatus::Connected,
                    State::Failed => SessionStatus::Failed,
                    State::AuthRequired => SessionStatus::AuthRequired,
                    State::Starting | State::Connecting | State::Disconnected | State::Stopped => {
                        SessionStatus::Disconnected
                    }
                };
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
