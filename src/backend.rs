//! BackendActor: one upstream MCP server. It owns the upstream session (stdio child or
//! streamable HTTP, opened by rmcp), watches it, probes it with
//! MCP `ping`, and re-lists its capabilities when the upstream says they changed.
//!
//! Accepts `Connect` and `Shutdown` (from the supervisor), `ConnectionLost` (from its session
//! watcher, its health probe and the call path) and `ListChanged` (from its upstream handler).
//! Emits `BackendStateChanged` to the supervisor and `ServerUpdated` to the router.
//!
//! Calls never enter the mailbox: the actor publishes the live session in a `watch` channel and
//! `BackendHandle::call_tool` reads it, so calls to one backend run concurrently: on streamable
//! HTTP each is POSTed by the calling task on the session (`direct.rs`), elsewhere rmcp
//! multiplexes them by request id.

mod answer;
mod connect;
mod direct;
mod failure;
mod relay;
mod sse;
mod upstream_client;
mod user_sessions;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use rmcp::Peer;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, ClientRequest, CompleteRequestParams, CompleteResult,
    GetPromptRequestParams, GetPromptResult, ReadResourceRequestParams, ReadResourceResult, ServerResult,
    SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::service::{PeerRequestOptions, RequestContext, RoleClient, RoleServer, ServiceError};
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::crd::McpServer;
use crate::crd::status::State;
use crate::routing::catalog::ServerCapabilities;
pub use answer::{Answer, RawToolResult};
pub use relay::Relay;
pub use user_sessions::UpstreamAuth;

/// How long a call waits for a connection attempt in progress (or one it started itself) before
/// it fails. Not `spec.timeout`: an agent learns within seconds that a member is down.
const CALL_CONNECT_WAIT: Duration = Duration::from_secs(5);
/// A call to a failed backend starts a connection attempt itself, unless one started this
/// recently: a member that comes back serves the first call after its return, and a flood of
/// calls to a dead member makes at most one attempt a second.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

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

/// The live upstream session, as published to callers.
#[derive(Clone)]
pub struct Link {
    pub peer: Peer<RoleClient>,
    wire: Option<Arc<direct::Wire>>,
    pub generation: u64,
}

/// What callers can see of a backend without asking its mailbox.
#[derive(Clone)]
pub struct Connection {
    pub link: Option<Link>,
    pub state: State,
    /// Why the last attempt or session failed, in words.
    pub last_error: Option<String>,
    /// Connection attempts so far: each `Connect` starts the next (the `Link`'s generation).
    pub attempt: u64,
    /// When the latest attempt started.
    pub attempted_at: Option<Instant>,
    /// When the supervisor tries again on its own, after a failure.
    pub retry_at: Option<Instant>,
}

impl Connection {
    fn initial() -> Self {
        Self { link: None, state: State::Stopped, last_error: None, attempt: 0, attempted_at: None, retry_at: None }
    }
}

/// How other modules reach a backend.
#[derive(Clone)]
pub struct BackendHandle {
    pub name: Arc<str>,
    /// Unique per actor: messages from a replaced backend are recognised and dropped.
    pub instance: u64,
    addr: Addr<BackendActor>,
    connection: watch::Receiver<Connection>,
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

/// The agent session a request came from: where progress, logging, sampling, elicitation and
/// roots requests of the upstream go back to.
#[derive(Clone)]
pub struct Caller {
    /// Unique per agent session (assigned when the session starts).
    pub agent_id: u64,
    pub link: crate::mcp::link::AgentLink,
    pub ct: tokio_util::sync::CancellationToken,
    pub progress_token: Option<rmcp::model::ProgressToken>,
    /// Who the agent is, when inbound authentication is on.
    pub identity: Option<Arc<crate::auth::Identity>>,
}

impl Caller {
    pub fn from_context(agent_id: u64, context: &RequestContext<RoleServer>) -> Self {
        let identity = crate::mcp::identity_of(&context.extensions);
        Self {
            agent_id,
            link: crate::mcp::link::AgentLink::Rmcp(context.peer.clone()),
            ct: context.ct.clone(),
            progress_token: context.meta.get_progress_token(),
            identity,
        }
    }
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

    pub fn connection(&self) -> Connection {
        self.connection.borrow().clone()
    }

    /// Calls one upstream tool. On a lost connection the session is rebuilt and the call is
    /// retried once (Muster #999: a dead session must not need an operator).
    /// The answer is a tool result, an input request or a task; a plain tool result stays the
    /// upstream's own JSON (`answer.rs`).
    pub async fn call_tool(&self, params: CallToolRequestParams, caller: &Caller) -> Result<Answer, Error> {
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        match self.request_with(request, caller, &Hook::None).await? {
            answer @ Answer::ToolResult(_) => Ok(answer),
            Answer::Result(
                result @ (ServerResult::CallToolResult(_)
                | ServerResult::InputRequiredResult(_)
                | ServerResult::CreateTaskResult(_)),
            ) => Ok(Answer::Result(result)),
            Answer::Result(ServerResult::EmptyResult(_)) => {
                Ok(Answer::from(rmcp::model::CallToolResult::success(Vec::new())))
            }
            Answer::Result(_) => Err(self.unexpected()),
        }
    }

    pub async fn read_resource(
        &self,
        params: ReadResourceRequestParams,
        caller: &Caller,
    ) -> Result<ReadResourceResult, Error> {
        match self
            .request(ClientRequest::ReadResourceRequest(rmcp::model::ReadResourceRequest::new(params)), caller)
            .await?
        {
            ServerResult::ReadResourceResult(result) => Ok(result),
            _ => Err(self.unexpected()),
        }
    }

    pub async fn get_prompt(&self, params: GetPromptRequestParams, caller: &Caller) -> Result<GetPromptResult, Error> {
        match self.request(ClientRequest::GetPromptRequest(rmcp::model::GetPromptRequest::new(params)), caller).await? {
            ServerResult::GetPromptResult(result) => Ok(result),
            _ => Err(self.unexpected()),
        }
    }

    pub async fn complete(&self, params: CompleteRequestParams, caller: &Caller) -> Result<CompleteResult, Error> {
        match self.request(ClientRequest::CompleteRequest(rmcp::model::CompleteRequest::new(params)), caller).await? {
            ServerResult::CompleteResult(result) => Ok(result),
            _ => Err(self.unexpected()),
        }
    }

    #[allow(deprecated, reason = "resources/subscribe is what 2025-era agents send")]
    pub async fn subscribe(&self, params: SubscribeRequestParams, caller: &Caller) -> Result<(), Error> {
        let hook = Hook::Subscribe(params.uri.clone());
        let request = ClientRequest::SubscribeRequest(rmcp::model::SubscribeRequest::new(params));
        self.request_with(request, caller, &hook).await.map(drop)
    }

    #[allow(deprecated, reason = "resources/unsubscribe is what 2025-era agents send")]
    pub async fn unsubscribe(&self, params: UnsubscribeRequestParams, caller: &Caller) -> Result<(), Error> {
        let hook = Hook::Unsubscribe(params.uri.clone());
        let request = ClientRequest::UnsubscribeRequest(rmcp::model::UnsubscribeRequest::new(params));
        self.request_with(request, caller, &hook).await.map(drop)
    }

    fn unexpected(&self) -> Error {
        Error::Upstream { server: self.name.to_string(), message: "unexpected response type".into() }
    }

    async fn request(&self, request: ClientRequest, caller: &Caller) -> Result<ServerResult, Error> {
        self.request_with(request, caller, &Hook::None)
            .await?
            .into_result()
            .map_err(|e| Error::Upstream { server: self.name.to_string(), message: format!("undecodable result: {e}") })
    }

    async fn request_with(&self, request: ClientRequest, caller: &Caller, hook: &Hook) -> Result<Answer, Error> {
        let mut answer = match &self.auth {
            Some(auth) => self.request_as_user(auth, request, caller, hook).await?,
            None => self.request_shared(request, caller, hook).await?,
        };
        if let Answer::Result(result) = &mut answer {
            mark_complete(result);
        }
        Ok(answer)
    }

    /// Over the backend's shared session (servers without `spec.auth`).
    async fn request_shared(&self, request: ClientRequest, caller: &Caller, hook: &Hook) -> Result<Answer, Error> {
        if !hook.apply(&self.relay, caller) {
            return Ok(Answer::Result(ServerResult::empty(())));
        }
        let link = self.ready_link(None).await?;
        match self.send(&link.peer, link.wire.as_deref(), &self.relay, request.clone(), caller).await {
            Err(Error::Upstream { message, .. }) => {
                // The session is gone: reconnect now (single flight) and retry once on the new one.
                self.addr.do_send(ConnectionLost { generation: link.generation, reason: message });
                let link = self.ready_link(Some(link.generation)).await?;
                self.send(&link.peer, link.wire.as_deref(), &self.relay, request, caller).await
            }
            other => other,
        }
    }

    /// Over the caller's own session with this upstream, with the caller's token for this cluster.
    /// A 401 drops the cached token and session, and the call is retried once with a fresh one.
    async fn request_as_user(
        &self,
        auth: &UpstreamAuth,
        request: ClientRequest,
        caller: &Caller,
        hook: &Hook,
    ) -> Result<Answer, Error> {
        let server = self.name.to_string();
        let identity = caller.identity.as_deref().ok_or_else(|| Error::Unauthenticated { server: server.clone() })?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token =
                auth.token(identity).await.map_err(|error| Error::Exchange { server: server.clone(), error })?;
            let (session, fresh) = match self.user_sessions.get(&self.definition, &self.http, identity, &token).await {
                Ok(found) => found,
                Err(e) if matches!(*e, connect::Error::AuthRequired) && attempt == 1 => {
                    auth.invalidate(identity).await;
                    continue;
                }
                Err(e) if matches!(*e, connect::Error::AuthRequired) => return Err(Error::Unauthorized { server }),
                Err(e) => {
                    return Err(Error::NotConnected {
                        server,
                        state: State::Failed,
                        reason: e.to_string(),
                        retry_after: Some(user_sessions::FAILURE_BACKOFF),
                    });
                }
            };
            if fresh {
                self.addr.do_send(CapabilitiesDiscovered { capabilities: session.capabilities.clone() });
            }
            // Each user session has its own relay: progress, logs and requests from the upstream
            // go back only to this user's agents.
            if !hook.apply(&session.relay, caller) {
                return Ok(Answer::Result(ServerResult::empty(())));
            }
            match self.send(&session.peer, session.wire.as_deref(), &session.relay, request.clone(), caller).await {
                Err(e) if (e.is_unauthorized() || e.is_connection_loss()) && attempt == 1 => {
                    if e.is_unauthorized() {
                        auth.invalidate(identity).await;
                    }
                    self.user_sessions.invalidate(identity, &token).await;
                }
                other => return other,
            }
        }
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

    /// The live session for a call. Without one, the call waits only while a connection attempt
    /// is in progress (at most `CALL_CONNECT_WAIT`); a failed backend whose last attempt is older
    /// than `PROBE_INTERVAL` gets a new attempt now (single flight: the actor starts it only if
    /// no other did), and the call waits for its outcome. Otherwise it fails at once, naming the
    /// server, what failed and when muster retries. `after` is a session the call lost: only a
    /// newer one will do.
    async fn ready_link(&self, after: Option<u64>) -> Result<Link, Error> {
        let usable = |c: &Connection| c.link.clone().filter(|l| after.is_none_or(|lost| l.generation > lost));
        if let Some(link) = usable(&self.connection.borrow()) {
            return Ok(link);
        }
        let deadline = tokio::time::Instant::now() + CALL_CONNECT_WAIT;
        let mut rx = self.connection.clone();
        let (mut asked, mut waited_for_probe) = (None, false);
        loop {
            let mut wake = deadline;
            {
                let connection = rx.borrow_and_update();
                if let Some(link) = usable(&connection) {
                    return Ok(link);
                }
                // A session this call lost is replaced at once; otherwise at most one attempt a
                // `PROBE_INTERVAL`.
                let probe_at = connection.attempted_at.map(|at| at + PROBE_INTERVAL);
                let probe_due = after == Some(connection.attempt) || probe_at.is_none_or(|at| at <= Instant::now());
                match (connection.state, probe_at) {
                    // An attempt is in progress, or the lost session is not yet noticed: wait.
                    (State::Connecting | State::Starting, _) => {}
                    (State::Connected | State::Running, _) if connection.link.is_some() => {}
                    (State::Failed | State::Disconnected, _) if asked.is_none() && probe_due => {
                        self.addr.do_send(ConnectNow { attempt: connection.attempt });
                        asked = Some(connection.attempt);
                    }
                    // The last attempt failed just now: the next is due within `PROBE_INTERVAL`.
                    // Wait for it once, so a member that has just come back serves this call.
                    (State::Failed | State::Disconnected, Some(at)) if asked.is_none() && !waited_for_probe => {
                        waited_for_probe = true;
                        wake = deadline.min(tokio::time::Instant::from_std(at));
                    }
                    // Our request for an attempt is still in the mailbox.
                    (State::Failed | State::Disconnected, _) if asked == Some(connection.attempt) => {}
                    _ => break,
                }
            }
            match tokio::time::timeout_at(wake, rx.changed()).await {
                Ok(Ok(())) => {}
                Err(_) if wake < deadline => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
        Err(self.unavailable(&mut rx).await)
    }

    /// Why the backend cannot take a call now. After a failure, the supervisor's retry time
    /// follows the state by a message; wait for it briefly, so the agent learns when to retry.
    async fn unavailable(&self, rx: &mut watch::Receiver<Connection>) -> Error {
        let stale = |c: &Connection| {
            c.state == State::Failed && c.retry_at.is_none_or(|at| at <= Instant::now()) && c.link.is_none()
        };
        if stale(&rx.borrow_and_update()) {
            let _ = tokio::time::timeout(Duration::from_millis(200), rx.wait_for(|c| !stale(c))).await;
        }
        let connection = rx.borrow();
        let reason = connection.last_error.clone().unwrap_or_else(|| match connection.state {
            State::Connecting | State::Starting => {
                format!("the connection attempt takes longer than {} s", CALL_CONNECT_WAIT.as_secs())
            }
            State::Stopped => "it is not started (autoStart is false, or it was removed)".to_owned(),
            _ => "no session".to_owned(),
        });
        let retry_after = match connection.state {
            State::Failed | State::Disconnected => Some(
                connection
                    .retry_at
                    .map_or(PROBE_INTERVAL, |at| at.saturating_duration_since(Instant::now()))
                    .max(PROBE_INTERVAL),
            ),
            State::Connecting | State::Starting => Some(PROBE_INTERVAL),
            _ => None,
        };
        Error::NotConnected { server: self.name.to_string(), state: connection.state, reason, retry_after }
    }

    /// One request upstream: directly on a streamable-HTTP session (`direct.rs`), else through
    /// rmcp's peer.
    async fn send(
        &self,
        peer: &Peer<RoleClient>,
        wire: Option<&direct::Wire>,
        relay: &Relay,
        request: ClientRequest,
        caller: &Caller,
    ) -> Result<Answer, Error> {
        let span = tracing::info_span!("mcp.upstream_call", "mcp.server" = %self.name, "otel.kind" = "client");
        // The deadline cancels the call as the agent's own cancellation does: the upstream hears
        // `notifications/cancelled` and the call's place on the wire is freed.
        let ct = caller.ct.child_token();
        let scoped = Caller { ct: ct.clone(), ..caller.clone() };
        let timeout = self.call_timeout;
        let deadline = async {
            tokio::time::sleep(timeout).await;
            ct.cancel();
            std::future::pending::<std::convert::Infallible>().await
        };
        let result = tokio::select! {
            result = self.send_in_span(peer, wire, relay, request, &scoped).instrument(span) => result,
            never = deadline => match never {},
        };
        match result {
            Err(Error::Cancelled { server } | Error::Busy { server, .. }) if caller.ct.is_cancelled() => {
                Err(Error::Cancelled { server })
            }
            Err(Error::Cancelled { server }) => {
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    self.addr.do_send(CallHealth { degraded: true });
                }
                Err(Error::Timeout { server, timeout })
            }
            Err(Error::Busy { server, .. }) => Err(Error::Busy { server, timeout }),
            Ok(answer) => {
                if self.degraded.load(Ordering::Relaxed) && self.degraded.swap(false, Ordering::Relaxed) {
                    self.addr.do_send(CallHealth { degraded: false });
                }
                Ok(answer)
            }
            other => other,
        }
    }

    async fn send_in_span(
        &self,
        peer: &Peer<RoleClient>,
        wire: Option<&direct::Wire>,
        relay: &Relay,
        mut request: ClientRequest,
        caller: &Caller,
    ) -> Result<Answer, Error> {
        use rmcp::model::GetMeta as _;
        crate::telemetry::propagation::inject(request.get_meta_mut());
        let server = self.name.to_string();
        if let Some(wire) = wire.filter(|w| w.ready()) {
            let id = wire.next_id();
            // Progress the upstream sends on its GET stream instead of the reply finds the caller too.
            let _route = relay.begin_call(&rmcp::model::ProgressToken(id.clone()), caller);
            return wire.call(&server, id, request, caller).await;
        }
        let options = PeerRequestOptions::no_options();
        let handle =
            peer.send_cancellable_request(request, options).await.map_err(|e| map_service_error(&server, e))?;
        // Progress notifications for this call carry rmcp's token; route them back to the caller.
        let _route = relay.begin_call(&handle.progress_token, caller);
        let ct = caller.ct.clone();
        let id = handle.id.clone();
        let peer = peer.clone();
        tokio::select! {
            result = handle.await_response() => result.map(Answer::Result).map_err(|e| map_service_error(&server, e)),
            () = ct.cancelled() => {
                let _ = peer.send_notification(rmcp::model::CancelledNotification::new(
                    rmcp::model::CancelledNotificationParam::new(Some(id), Some("cancelled by the client".into()))
                ).into()).await;
                Err(Error::Cancelled { server })
            }
        }
    }
}

/// What a request does to its session's relay before it is sent.
enum Hook {
    None,
    Subscribe(String),
    Unsubscribe(String),
}

impl Hook {
    /// Applies the hook; false when the upstream need not hear the request (the upstream
    /// subscription exists already, or other agents still want it).
    fn apply(&self, relay: &Relay, caller: &Caller) -> bool {
        match self {
            Self::None => true,
            Self::Subscribe(uri) => relay.subscribe(uri, caller),
            Self::Unsubscribe(uri) => relay.unsubscribe(uri, caller),
        }
    }
}

/// Upstream sessions speak a 2025 revision, whose results carry no `resultType`. An agent on
/// 2026-07-28 requires it; rmcp strips it again for agents on older revisions.
fn mark_complete(result: &mut ServerResult) {
    let result_type = match result {
        ServerResult::CallToolResult(r) => &mut r.result_type,
        ServerResult::ReadResourceResult(r) => &mut r.result_type,
        ServerResult::GetPromptResult(r) => &mut r.result_type,
        ServerResult::CompleteResult(r) => &mut r.result_type,
        _ => return,
    };
    result_type.get_or_insert(rmcp::model::ResultType::COMPLETE);
}

fn map_service_error(server: &str, error: ServiceError) -> Error {
    let server = server.to_owned();
    if error.is_authorization_required() {
        return Error::Unauthorized { server };
    }
    match error {
        ServiceError::McpError(e) => Error::Protocol { server, code: e.code.0, message: e.message.to_string() },
        ServiceError::Timeout { timeout } => Error::Timeout { server, timeout },
        ServiceError::Cancelled { .. } => Error::Cancelled { server },
        other => Error::Upstream { server, message: other.to_string() },
    }
}

/// Supervisor -> backend: (re)connect now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect;

/// Supervisor -> backend: close the session and stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// The session of `generation` is gone (child exit, failed ping, transport error).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectionLost {
    pub generation: u64,
    pub reason: String,
}

/// The upstream announced `notifications/*/list_changed`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ListChanged {
    pub generation: u64,
}

/// A call found the backend failed and no attempt started within `PROBE_INTERVAL`: connect now,
/// unless attempt `attempt` is no longer the latest (another call or the supervisor started one).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectNow {
    pub attempt: u64,
}

/// Supervisor -> backend: after the failure it was told of, it connects again at `at`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RetryScheduled {
    pub at: Instant,
}

/// From the call path: calls time out (`degraded`) while the session is up, or one answered in
/// time again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CallHealth {
    pub degraded: bool,
}

/// A user session listed the upstream's capabilities (servers with `spec.auth` have no shared
/// session to list them with).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CapabilitiesDiscovered {
    pub capabilities: ServerCapabilities,
}

/// Backend -> supervisor: the backend's state changed.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct BackendStateChanged {
    pub name: String,
    pub instance: u64,
    pub state: State,
    pub error: Option<String>,
    /// Connected, but calls time out.
    pub degraded: bool,
}

/// Backend -> router: a server's capabilities or state changed.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct ServerUpdated {
    pub capabilities: Option<ServerCapabilities>,
    pub handle: BackendHandle,
}

pub struct BackendActor {
    definition: Arc<McpServer>,
    instance: u64,
    http: reqwest::Client,
    health_interval: Duration,
    supervisor: Recipient<BackendStateChanged>,
    router: Recipient<ServerUpdated>,
    connection: watch::Sender<Connection>,
    relay: Arc<Relay>,
    generation: u64,
    call_timeout: Duration,
    max_result_bytes: usize,
    degraded: Arc<AtomicBool>,
    session_cancel: Option<tokio_util::sync::CancellationToken>,
    health: Option<SpawnHandle>,
    stopping: bool,
    auth: Option<Arc<UpstreamAuth>>,
    user_sessions: Arc<user_sessions::UserSessions>,
    /// Capabilities came from a user session (auth servers): skip re-publishing the same ones.
    discovered: bool,
}

impl BackendActor {
    /// Starts the actor and returns its handle. It does not connect until `Connect`.
    pub fn start(
        definition: Arc<McpServer>,
        health_interval: Duration,
        calls: crate::config::Calls,
        supervisor: Recipient<BackendStateChanged>,
        router: Recipient<ServerUpdated>,
        auth: Option<Arc<UpstreamAuth>>,
    ) -> Result<BackendHandle, connect::Error> {
        let http = connect::http_client(definition.timeout(), connect::MAX_CONCURRENT_REQUESTS)?;
        let (tx, rx) = watch::channel(Connection::initial());
        let relay = Arc::new(Relay::new(definition.name().to_owned()));
        let call_timeout = calls.timeout.unwrap_or_else(|| definition.timeout());
        let degraded = Arc::new(AtomicBool::new(false));
        let name: Arc<str> = definition.name().into();
        let user_sessions = Arc::new(user_sessions::UserSessions::new(calls.max_result_bytes));
        static NEXT_INSTANCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let instance = NEXT_INSTANCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let actor = Self {
            instance,
            definition: definition.clone(),
            http: http.clone(),
            health_interval,
            supervisor,
            router,
            connection: tx,
            relay: relay.clone(),
            generation: 0,
            call_timeout,
            max_result_bytes: calls.max_result_bytes,
            degraded: degraded.clone(),
            session_cancel: None,
            health: None,
            stopping: false,
            auth: auth.clone(),
            user_sessions: user_sessions.clone(),
            discovered: false,
        };
        let addr = actor.start();
        Ok(BackendHandle {
            name,
            instance,
            addr,
            connection: rx,
            relay,
            call_timeout,
            degraded,
            auth,
            user_sessions,
            definition,
            http,
        })
    }

    fn backend_handle(&self, ctx: &Context<Self>) -> BackendHandle {
        BackendHandle {
            name: self.definition.name().into(),
            instance: self.instance,
            addr: ctx.address(),
            connection: self.connection.subscribe(),
            relay: self.relay.clone(),
            call_timeout: self.call_timeout,
            degraded: self.degraded.clone(),
            auth: self.auth.clone(),
            user_sessions: self.user_sessions.clone(),
            definition: self.definition.clone(),
            http: self.http.clone(),
        }
    }

    fn set_state(&mut self, ctx: &Context<Self>, state: State, error: Option<String>, link: Option<Link>) {
        self.connection.send_modify(|c| {
            c.link = link;
            c.state = state;
            c.last_error.clone_from(&error);
        });
        self.report(state, error);
        self.router.do_send(ServerUpdated { capabilities: None, handle: self.backend_handle(ctx) });
    }

    fn report(&self, state: State, error: Option<String>) {
        self.supervisor.do_send(BackendStateChanged {
            name: self.definition.name().to_owned(),
            instance: self.instance,
            state,
            error,
            degraded: self.degraded.load(Ordering::Relaxed),
        });
    }

    fn drop_session(&mut self, ctx: &mut Context<Self>) {
        if let Some(cancel) = self.session_cancel.take() {
            cancel.cancel();
        }
        if let Some(health) = self.health.take() {
            ctx.cancel_future(health);
        }
    }

    fn connected_state(&self) -> State {
        match self.definition.spec.server_type {
            Some(crate::crd::ServerType::Stdio) => State::Running,
            _ => State::Connected,
        }
    }

    fn start_health_probe(&mut self, ctx: &mut Context<Self>, peer: Peer<RoleClient>, generation: u64) {
        let timeout = self.definition.timeout();
        let handle = ctx.run_interval(self.health_interval, move |_, ctx| {
            let peer = peer.clone();
            let addr = ctx.address();
            actix::spawn(async move {
                let ping = peer.send_request(ClientRequest::PingRequest(rmcp::model::PingRequest::default()));
                let reason = match tokio::time::timeout(timeout, ping).await {
                    Ok(Ok(_)) => return,
                    Ok(Err(e)) => format!("health probe failed: {}", failure::describe(&e)),
                    Err(_) => format!("health probe timed out after {}s", timeout.as_secs()),
                };
                addr.do_send(ConnectionLost { generation, reason });
            });
        });
        self.health = Some(handle);
    }
}

impl Actor for BackendActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // moka evicts idle user sessions lazily; close them on time even when nobody calls.
        ctx.run_interval(Duration::from_secs(60), |actor, _| {
            let sessions = actor.user_sessions.clone();
            actix::spawn(async move { sessions.reap().await });
        });
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.drop_session(ctx);
        self.user_sessions.close_all();
    }
}

impl Handler<Connect> for BackendActor {
    type Result = ();

    fn handle(&mut self, _: Connect, ctx: &mut Self::Context) {
        if self.stopping {
            return;
        }
        self.drop_session(ctx);
        self.generation += 1;
        let generation = self.generation;
        let state = match self.connected_state() {
            State::Running => State::Starting,
            _ => State::Connecting,
        };
        self.degraded.store(false, Ordering::Relaxed);
        // One change: a waiting call never sees the new attempt with the old state.
        self.connection.send_modify(|c| {
            *c = Connection {
                link: None,
                state,
                last_error: None,
                attempt: generation,
                attempted_at: Some(Instant::now()),
                retry_at: None,
            };
        });
        self.report(state, None);
        self.router.do_send(ServerUpdated { capabilities: None, handle: self.backend_handle(ctx) });
        let definition = self.definition.clone();
        let http = self.http.clone();
        let max_result_bytes = self.max_result_bytes;
        let relay = self.relay.clone();
        let handler = relay::UpstreamHandler::new(relay, Some(ctx.address().downgrade().recipient()), generation);
        let connecting = async move { connect::connect(&definition, http, handler, None, max_result_bytes).await };
        ctx.spawn(connecting.into_actor(self).map(move |result, actor, ctx| {
            if actor.generation != generation || actor.stopping {
                return; // superseded; the session (if any) is dropped here
            }
            match result {
                Ok(connected) => {
                    let peer = connected.peer.clone();
                    actor.session_cancel = Some(connected.cancel.clone());
                    let addr = ctx.address();
                    let waiting = connected.closed;
                    actix::spawn(async move {
                        let reason = waiting.await;
                        addr.do_send(ConnectionLost { generation, reason });
                    });
                    actor.start_health_probe(ctx, peer.clone(), generation);
                    let link = Link { peer, wire: connected.wire, generation };
                    let state = actor.connected_state();
                    actor.set_state(ctx, state, None, Some(link));
                    actor.router.do_send(ServerUpdated {
                        capabilities: Some(connected.capabilities),
                        handle: actor.backend_handle(ctx),
                    });
                }
                Err(connect::Error::AuthRequired) if actor.auth.is_some() => {
                    // Expected: this upstream only talks to users. Their sessions carry tokens.
                    if !actor.discovered {
                        actor.set_state(ctx, State::AuthRequired, None, None);
                    }
                }
                Err(e) => {
                    tracing::warn!(server = actor.definition.name(), reason = %e, "connect failed");
                    actor.set_state(ctx, State::Failed, Some(e.to_string()), None);
                }
            }
        }));
    }
}

impl Handler<ConnectionLost> for BackendActor {
    type Result = ();

    fn handle(&mut self, msg: ConnectionLost, ctx: &mut Self::Context) {
        if msg.generation != self.generation || self.stopping || self.connection.borrow().link.is_none() {
            return;
        }
        tracing::warn!(server = self.definition.name(), reason = %msg.reason, "upstream connection lost");
        self.drop_session(ctx);
        self.set_state(ctx, State::Failed, Some(msg.reason), None);
    }
}

impl Handler<ListChanged> for BackendActor {
    type Result = ();

    fn handle(&mut self, msg: ListChanged, ctx: &mut Self::Context) {
        let Some(link) = self.connection.borrow().link.clone() else { return };
        if msg.generation != link.generation {
            return;
        }
        let definition = self.definition.clone();
        let relisting = async move { connect::list_capabilities(&definition, &link.peer).await };
        ctx.spawn(relisting.into_actor(self).map(move |result, actor, ctx| match result {
            Ok(capabilities) if actor.generation == msg.generation => {
                actor
                    .router
                    .do_send(ServerUpdated { capabilities: Some(capabilities), handle: actor.backend_handle(ctx) });
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(server = actor.definition.name(), error = %e, "re-listing after list_changed failed")
            }
        }));
    }
}

impl Handler<CapabilitiesDiscovered> for BackendActor {
    type Result = ();

    fn handle(&mut self, msg: CapabilitiesDiscovered, ctx: &mut Self::Context) {
        if self.stopping {
            return;
        }
        // Each newly opened user session re-lists: the catalog follows the upstream.
        if self.discovered {
            self.router
                .do_send(ServerUpdated { capabilities: Some(msg.capabilities), handle: self.backend_handle(ctx) });
            return;
        }
        self.discovered = true;
        self.connection.send_modify(|c| c.state = State::Connected);
        self.report(State::Connected, None);
        self.router.do_send(ServerUpdated { capabilities: Some(msg.capabilities), handle: self.backend_handle(ctx) });
    }
}

impl Handler<ConnectNow> for BackendActor {
    type Result = ();

    fn handle(&mut self, msg: ConnectNow, ctx: &mut Self::Context) {
        let failed = matches!(self.connection.borrow().state, State::Failed | State::Disconnected);
        if msg.attempt == self.generation && failed && !self.stopping {
            tracing::info!(server = self.definition.name(), "a call is waiting: connecting now");
            <Self as Handler<Connect>>::handle(self, Connect, ctx);
        }
    }
}

impl Handler<RetryScheduled> for BackendActor {
    type Result = ();

    fn handle(&mut self, msg: RetryScheduled, _: &mut Self::Context) {
        self.connection.send_modify(|c| c.retry_at = Some(msg.at));
    }
}

impl Handler<CallHealth> for BackendActor {
    type Result = ();

    fn handle(&mut self, msg: CallHealth, _: &mut Self::Context) {
        if msg.degraded {
            tracing::warn!(server = self.definition.name(), "calls time out while the session is up: degraded");
        } else {
            tracing::info!(server = self.definition.name(), "calls answer in time again");
        }
        let (state, error) = {
            let connection = self.connection.borrow();
            (connection.state, connection.last_error.clone())
        };
        self.report(state, error);
    }
}

impl Handler<Shutdown> for BackendActor {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        self.stopping = true;
        self.drop_session(ctx);
        self.connection.send_modify(|c| {
            c.link = None;
            c.state = State::Stopped;
            c.last_error = None;
        });
        ctx.stop();
    }
}
