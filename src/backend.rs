//! One upstream MCP server, as the rest of muster sees it: `BackendHandle` (calls and lifecycle
//! commands), the published `BackendStatus`, and `Error`. A call comes with its `Caller`
//! (`caller.rs`).
//!
//! - `actor.rs`: the `BackendActor`, which owns the upstream session's lifecycle (connect, watch,
//!   ping, re-list, reconnect on request) and its messages.
//! - `call.rs`: the call path: `ready_session` (fail fast, heal fast), the call's deadline, the
//!   shared session or the caller's own (`user_sessions.rs`), and the transport (`direct_post.rs` for
//!   streamable HTTP, rmcp's peer otherwise).
//!
//! Calls never enter the mailbox: the actor publishes the live session in a `watch` channel and
//! the call path reads it, so calls to one backend run concurrently.

mod actor;
mod call;
mod capabilities;
mod connect;
mod direct_post;
mod failure;
mod http;
mod input_required;
mod relay;
mod sse;
mod upstream_client;
mod upstream_result;
mod user_sessions;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use actix::prelude::*;
use rmcp::Peer;
use rmcp::service::RoleClient;
use tokio::sync::watch;

use crate::crd::McpServer;
use crate::crd::status::State;
pub use capabilities::ServerCapabilities;
pub use relay::Relay;
pub use upstream_result::{RawToolResult, UpstreamResult};
pub use user_sessions::UpstreamAuth;

pub use actor::{
    BackendActor, BackendStateChanged, CallHealth, CapabilitiesDiscovered, Connect, ConnectNow, ConnectionLost,
    Draining, ListChanged, RetryScheduled, ServerUpdated, Shutdown,
};

/// Why a backend call or connection failed. Messages name the server and say what failed in
/// words (`failure.rs`), never a credential, a Rust type or an upstream's body.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{server} {}: {reason}{}", unavailable(*state), retry_note(*retry_after))]
    NotConnected { server: String, state: State, reason: String, retry_after: Option<Duration> },
    #[error("{server} did not answer within {} s; muster cancelled the call", timeout.as_secs())]
    Timeout { server: String, timeout: Duration },
    /// The call's deadline passed while every place on the wire was taken by other calls.
    #[error("{server} had no free connection within {} s: its other calls are still running", timeout.as_secs())]
    Busy { server: String, timeout: Duration },
    #[error("{server} failed: {message}")]
    Upstream { server: String, message: String },
    #[error("{server} answered with a result larger than {limit} bytes (aggregator.calls.maxResultBytes)")]
    TooLarge { server: String, limit: usize },
    #[error("{server} returned an error: {message}")]
    Protocol { server: String, code: i32, message: String },
    #[error("call to {server} was cancelled by the client")]
    Cancelled { server: String },
    #[error(
        "server {server} needs your identity: sign in to muster (muster auth login) and send the token as a bearer"
    )]
    Unauthenticated { server: String },
    #[error("server {server}: {error}")]
    Exchange { server: String, error: crate::auth::exchange::Error },
    #[error("server {server} refused the credentials muster sent for you (HTTP 401)")]
    Unauthorized { server: String },
    /// A 2026-07-28 upstream asked for input (`input_required`) that the agent did not give.
    #[error("{server} asked the agent for input that did not come: {reason}")]
    Unanswered { server: String, reason: String },
}

/// How a server that cannot take calls is, in words.
fn unavailable(state: State) -> &'static str {
    match state {
        State::Connecting | State::Starting => "is still connecting",
        State::Stopped => "is stopped",
        State::AuthRequired => "needs a signed-in user",
        _ => "is unreachable",
    }
}

fn retry_note(retry_after: Option<Duration>) -> String {
    retry_after.map(|after| format!("; retrying in {} s", after.as_secs_f64().ceil().max(1.0))).unwrap_or_default()
}

impl Error {
    /// Transport-level failures, after which the session is rebuilt and the call retried once.
    fn is_connection_loss(&self) -> bool {
        matches!(self, Self::Upstream { .. })
    }

    fn is_unauthorized(&self) -> bool {
        matches!(self, Self::Unauthorized { .. })
    }
}

/// A live upstream session, as published to callers.
#[derive(Clone)]
pub struct UpstreamSession {
    /// rmcp's side of the session: the handshake, pings, re-lists, and the calls of
    /// `Transport::Peer`.
    pub peer: Peer<RoleClient>,
    transport: Transport,
    /// The connection attempt that opened it (0 for a user's session).
    pub generation: u64,
}

impl UpstreamSession {
    /// The revision the session speaks: `2026-07-28` when the upstream answered `server/discover`.
    pub fn protocol_version(&self) -> Option<String> {
        self.peer.peer_info().map(|info| info.protocol_version.to_string())
    }
}

/// How a session's calls reach the upstream, decided when the session opens.
#[derive(Clone)]
enum Transport {
    /// Streamable HTTP with a session id, or in 2026-07-28: the calling task POSTs each call
    /// itself (`direct_post.rs`).
    Direct(Arc<direct_post::DirectPost>),
    /// stdio, legacy SSE, or a 2025 streamable-HTTP server without sessions: rmcp's peer carries it.
    Peer,
}

/// What callers can see of a backend without asking its mailbox.
#[derive(Clone)]
pub struct BackendStatus {
    pub session: Option<UpstreamSession>,
    pub state: State,
    /// Why the last attempt or session failed, in words.
    pub last_error: Option<String>,
    /// Connection attempts so far: each `Connect` starts the next (the session's generation).
    pub attempt: u64,
    /// When the latest attempt started.
    pub attempted_at: Option<Instant>,
    /// When the supervisor tries again on its own, after a failure.
    pub retry_at: Option<Instant>,
}

impl BackendStatus {
    fn initial() -> Self {
        Self { session: None, state: State::Stopped, last_error: None, attempt: 0, attempted_at: None, retry_at: None }
    }
}

/// How other modules reach a backend.
#[derive(Clone)]
pub struct BackendHandle {
    pub name: Arc<str>,
    /// Unique per actor: messages from a replaced backend are recognised and dropped.
    pub instance: u64,
    addr: Addr<BackendActor>,
    status: watch::Receiver<BackendStatus>,
    relay: Arc<Relay>,
    /// Every upstream call's deadline.
    call_timeout: Duration,
    /// Set by a call that timed out, cleared by one that did not (`Degraded`).
    degraded: Arc<AtomicBool>,
    auth: Option<Arc<UpstreamAuth>>,
    user_sessions: Arc<user_sessions::UserSessions>,
    definition: Arc<McpServer>,
    http: reqwest::Client,
}

impl BackendHandle {
    /// Sends a lifecycle command (`Connect`, `Shutdown`) to the actor.
    pub fn tell<M>(&self, msg: M)
    where
        M: Message<Result = ()> + Send + 'static,
        BackendActor: Handler<M>,
    {
        self.addr.do_send(msg);
    }

    /// Closes the session and stops the actor; resolves once the upstream session has ended.
    pub fn close(&self) -> impl std::future::Future<Output = ()> + use<> {
        let sent = self.addr.send(Shutdown);
        async move {
            let _ = sent.await;
        }
    }

    /// The MCPServer definition this backend runs.
    pub fn definition(&self) -> &Arc<McpServer> {
        &self.definition
    }

    pub fn status(&self) -> BackendStatus {
        self.status.borrow().clone()
    }

    /// Opens the caller's upstream session ahead of the first call (SSO at sign-in), so the
    /// exchange is done and `auth://status` shows it. Failures are kept for `auth://status`.
    pub async fn warm_up(&self, identity: &crate::auth::Identity) -> bool {
        let Some(auth) = &self.auth else { return false };
        let Ok(token) = auth.token(identity).await else { return false };
        match self.user_sessions.get(&self.definition, &self.http, identity, &token).await {
            Ok((session, fresh)) => {
                if fresh {
                    self.addr.do_send(CapabilitiesDiscovered { capabilities: session.capabilities.clone() });
                }
                true
            }
            Err(e) => {
                tracing::warn!(server = %self.name, user = identity.subject_hash(), error = %e, "user session failed");
                false
            }
        }
    }

    /// This server with no capabilities: its name, prefix and family only.
    pub fn placeholder_capabilities(&self) -> ServerCapabilities {
        ServerCapabilities {
            name: self.definition.name().to_owned(),
            tool_prefix: self.definition.spec.tool_prefix.clone(),
            family: self.definition.spec.family.clone(),
            ..ServerCapabilities::default()
        }
    }

    /// The upstream's socket address, when its URL names an IP (or localhost): for counting
    /// connections in metrics without a DNS lookup at scrape time.
    pub fn upstream_addr(&self) -> Option<std::net::SocketAddr> {
        let url = reqwest::Url::parse(self.definition.spec.url.as_deref()?).ok()?;
        let host = url.host_str()?.trim_matches(['[', ']']);
        let ip: std::net::IpAddr =
            if host == "localhost" { std::net::Ipv4Addr::LOCALHOST.into() } else { host.parse().ok()? };
        Some(std::net::SocketAddr::new(ip, url.port_or_known_default()?))
    }

    pub fn auth(&self) -> Option<&UpstreamAuth> {
        self.auth.as_deref()
    }

    /// Upstream sessions held for users (for status and metrics).
    pub fn user_session_count(&self) -> u64 {
        self.user_sessions.count()
    }
}
