//! The call path of a backend: from `BackendHandle::call_tool` (and the other requests) to the
//! upstream and back.
//!
//! 1. `request_with`: the shared session (`request_shared`) or, for servers with `spec.auth`, the
//!    caller's own session with the caller's token for this cluster (`request_as_user`).
//! 2. `ready_session`: the live session, or the outcome of a connection attempt in progress or one
//!    this call starts (at most one a `PROBE_INTERVAL`); otherwise `Error::NotConnected` at once.
//! 3. `call_upstream`: under the call's deadline, by the session's `Transport`: `post_direct`
//!    (`direct_post.rs`) or `request_through_peer`. A lost session is reconnected at once and the call
//!    retried once.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rmcp::Peer;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, ClientRequest, CompleteRequestParams, CompleteResult,
    GetPromptRequestParams, GetPromptResult, ReadResourceRequestParams, ReadResourceResult, ServerResult,
    SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::service::{PeerRequestOptions, RoleClient, ServiceError};
use tokio::sync::watch;
use tracing::Instrument as _;

use super::{
    BackendHandle, BackendStatus, CallHealth, CapabilitiesDiscovered, ConnectNow, ConnectionLost, Error, Relay,
    Transport, UpstreamAuth, UpstreamResult, UpstreamSession, connect, direct_post, input_required, user_sessions,
};
use crate::caller::Caller;
use crate::crd::status::State;

/// How long a call waits for a connection attempt in progress (or one it started itself) before
/// it fails. Not `spec.timeout`: an agent learns within seconds that a member is down.
const CALL_CONNECT_WAIT: Duration = Duration::from_secs(5);
/// A call to a failed backend starts a connection attempt itself, unless one started this
/// recently: a member that comes back serves the first call after its return, and a flood of
/// calls to a dead member makes at most one attempt a second.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

impl BackendHandle {
    /// Calls one upstream tool. On a lost connection the session is rebuilt and the call is
    /// retried once (Muster #999: a dead session must not need an operator).
    /// The answer is a tool result, an input request or a task; a plain tool result stays the
    /// upstream's own JSON (`upstream_result.rs`).
    ///
    /// A 2026-07-28 upstream that answers `input_required` to a caller that cannot take that
    /// (a 2025 agent) has its input requests asked on the agent's reply stream, and the call is
    /// sent again with the answers (`input_required.rs`).
    pub async fn call_tool(&self, mut params: CallToolRequestParams, caller: &Caller) -> Result<UpstreamResult, Error> {
        for _ in 0..input_required::MAX_ROUNDS {
            match self.call_tool_once(params.clone(), caller).await? {
                UpstreamResult::Result(ServerResult::InputRequiredResult(asked))
                    if !caller.reply_path.takes_input_requests() =>
                {
                    let (responses, state) = input_required::answer(&self.name, asked, caller).await?;
                    params.input_responses = responses;
                    params.request_state = state;
                }
                answer => return Ok(answer),
            }
        }
        let rounds = input_required::MAX_ROUNDS;
        Err(input_required::unanswered(&self.name, &format!("it still asked after {rounds} rounds")))
    }

    async fn call_tool_once(&self, params: CallToolRequestParams, caller: &Caller) -> Result<UpstreamResult, Error> {
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        match self.request_with(request, caller, &SubscriptionChange::None).await? {
            answer @ UpstreamResult::ToolResult(_) => Ok(answer),
            UpstreamResult::Result(
                result @ (ServerResult::CallToolResult(_)
                | ServerResult::InputRequiredResult(_)
                | ServerResult::CreateTaskResult(_)),
            ) => Ok(UpstreamResult::Result(result)),
            UpstreamResult::Result(ServerResult::EmptyResult(_)) => {
                Ok(UpstreamResult::from(rmcp::model::CallToolResult::success(Vec::new())))
            }
            UpstreamResult::Result(_) => Err(self.unexpected()),
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
        let change = SubscriptionChange::Subscribe(params.uri.clone());
        let request = ClientRequest::SubscribeRequest(rmcp::model::SubscribeRequest::new(params));
        self.request_with(request, caller, &change).await.map(drop)
    }

    #[allow(deprecated, reason = "resources/unsubscribe is what 2025-era agents send")]
    pub async fn unsubscribe(&self, params: UnsubscribeRequestParams, caller: &Caller) -> Result<(), Error> {
        let change = SubscriptionChange::Unsubscribe(params.uri.clone());
        let request = ClientRequest::UnsubscribeRequest(rmcp::model::UnsubscribeRequest::new(params));
        self.request_with(request, caller, &change).await.map(drop)
    }

    fn unexpected(&self) -> Error {
        Error::Upstream { server: self.name.to_string(), message: "unexpected response type".into() }
    }

    async fn request(&self, request: ClientRequest, caller: &Caller) -> Result<ServerResult, Error> {
        self.request_with(request, caller, &SubscriptionChange::None)
            .await?
            .into_result()
            .map_err(|e| Error::Upstream { server: self.name.to_string(), message: format!("undecodable result: {e}") })
    }

    async fn request_with(
        &self,
        request: ClientRequest,
        caller: &Caller,
        change: &SubscriptionChange,
    ) -> Result<UpstreamResult, Error> {
        let mut answer = match &self.auth {
            Some(auth) => self.request_as_user(auth, request, caller, change).await?,
            None => self.request_shared(request, caller, change).await?,
        };
        if let UpstreamResult::Result(result) = &mut answer {
            mark_complete(result);
        }
        Ok(answer)
    }

    /// Over the backend's shared session (servers without `spec.auth`).
    async fn request_shared(
        &self,
        request: ClientRequest,
        caller: &Caller,
        change: &SubscriptionChange,
    ) -> Result<UpstreamResult, Error> {
        if !change.apply(&self.relay, caller) {
            return Ok(UpstreamResult::Result(ServerResult::empty(())));
        }
        let answered = async {
            let upstream = self.ready_session(None).await?;
            match self.call_upstream(&upstream, &self.relay, request.clone(), caller).await {
                Err(Error::Upstream { message, .. }) => {
                    // The session is gone: reconnect now (single flight) and retry once on the new one.
                    self.addr.do_send(ConnectionLost { generation: upstream.generation, reason: message });
                    let upstream = self.ready_session(Some(upstream.generation)).await?;
                    self.call_upstream(&upstream, &self.relay, request, caller).await
                }
                other => other,
            }
        }
        .await;
        if answered.is_err() {
            change.undo(&self.relay, caller);
        }
        answered
    }

    /// Over the caller's own session with this upstream, with the caller's token for this cluster.
    /// A 401 drops the cached token and session, and the call is retried once with a fresh one.
    async fn request_as_user(
        &self,
        auth: &UpstreamAuth,
        request: ClientRequest,
        caller: &Caller,
        change: &SubscriptionChange,
    ) -> Result<UpstreamResult, Error> {
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
            if !change.apply(&session.relay, caller) {
                return Ok(UpstreamResult::Result(ServerResult::empty(())));
            }
            match self.call_upstream(&session.upstream, &session.relay, request.clone(), caller).await {
                Err(e) if (e.is_unauthorized() || e.is_connection_loss()) && attempt == 1 => {
                    if e.is_unauthorized() {
                        auth.invalidate(identity).await;
                    }
                    self.user_sessions.invalidate(identity, &token).await;
                }
                Err(e) => {
                    change.undo(&session.relay, caller);
                    return Err(e);
                }
                other => return other,
            }
        }
    }

    /// The live session for a call. Without one, the call waits only while a connection attempt
    /// is in progress (at most `CALL_CONNECT_WAIT`); a failed backend whose last attempt is older
    /// than `PROBE_INTERVAL` gets a new attempt now (single flight: the actor starts it only if
    /// no other did), and the call waits for its outcome. Otherwise it fails at once, naming the
    /// server, what failed and when muster retries. `after` is a session the call lost: only a
    /// newer one will do.
    async fn ready_session(&self, after: Option<u64>) -> Result<UpstreamSession, Error> {
        let usable = |c: &BackendStatus| c.session.clone().filter(|s| after.is_none_or(|lost| s.generation > lost));
        if let Some(session) = usable(&self.status.borrow()) {
            return Ok(session);
        }
        let deadline = tokio::time::Instant::now() + CALL_CONNECT_WAIT;
        let mut rx = self.status.clone();
        let (mut asked, mut waited_for_probe) = (None, false);
        loop {
            let mut wake = deadline;
            {
                let connection = rx.borrow_and_update();
                if let Some(session) = usable(&connection) {
                    return Ok(session);
                }
                // A session this call lost is replaced at once; otherwise at most one attempt a
                // `PROBE_INTERVAL`.
                let probe_at = connection.attempted_at.map(|at| at + PROBE_INTERVAL);
                let probe_due = after == Some(connection.attempt) || probe_at.is_none_or(|at| at <= Instant::now());
                match (connection.state, probe_at) {
                    // An attempt is in progress, or the lost session is not yet noticed: wait.
                    (State::Connecting | State::Starting, _) => {}
                    (State::Connected | State::Running, _) if connection.session.is_some() => {}
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
    async fn unavailable(&self, rx: &mut watch::Receiver<BackendStatus>) -> Error {
        let stale = |c: &BackendStatus| {
            c.state == State::Failed && c.retry_at.is_none_or(|at| at <= Instant::now()) && c.session.is_none()
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

    /// The `call_upstream` phase: one request on `upstream`, under the call's deadline, which
    /// cancels the call as the agent's own cancellation does (the upstream hears
    /// `notifications/cancelled` and the call's place on the wire is freed).
    async fn call_upstream(
        &self,
        upstream: &UpstreamSession,
        relay: &Relay,
        mut request: ClientRequest,
        caller: &Caller,
    ) -> Result<UpstreamResult, Error> {
        use rmcp::model::GetMeta as _;
        let span = tracing::info_span!("mcp.upstream_call", "mcp.server" = %self.name, "otel.kind" = "client");
        let ct = caller.ct.child_token();
        let scoped = Caller { ct: ct.clone(), ..caller.clone() };
        let timeout = self.call_timeout;
        let deadline = async {
            tokio::time::sleep(timeout).await;
            ct.cancel();
            std::future::pending::<std::convert::Infallible>().await
        };
        let sending = async {
            crate::telemetry::propagation::inject(request.get_meta_mut());
            match &upstream.transport {
                Transport::Direct(direct) => self.post_direct(direct, relay, request, &scoped).await,
                Transport::Peer => self.request_through_peer(&upstream.peer, relay, request, &scoped).await,
            }
        };
        let result = tokio::select! {
            result = sending.instrument(span) => result,
            never = deadline => match never {},
        };
        self.record_health(result, caller, timeout)
    }

    /// Tells a deadline from the agent's cancellation, and keeps `Degraded` in step with calls.
    fn record_health(
        &self,
        result: Result<UpstreamResult, Error>,
        caller: &Caller,
        timeout: Duration,
    ) -> Result<UpstreamResult, Error> {
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

    /// A streamable-HTTP session: the calling task POSTs the request and reads its reply.
    async fn post_direct(
        &self,
        direct: &direct_post::DirectPost,
        relay: &Relay,
        request: ClientRequest,
        caller: &Caller,
    ) -> Result<UpstreamResult, Error> {
        let id = direct.next_id();
        // Progress the upstream sends on its GET stream instead of the reply finds the caller too.
        let _route = relay.begin_call(&rmcp::model::ProgressToken(id.clone()), caller);
        direct.call(&self.name, id, request, caller).await
    }

    /// Any other session: rmcp's peer sends the request and routes the answer back by id.
    async fn request_through_peer(
        &self,
        peer: &Peer<RoleClient>,
        relay: &Relay,
        request: ClientRequest,
        caller: &Caller,
    ) -> Result<UpstreamResult, Error> {
        let server = self.name.to_string();
        let options = PeerRequestOptions::no_options();
        let handle =
            peer.send_cancellable_request(request, options).await.map_err(|e| map_service_error(&server, e))?;
        // Progress notifications for this call carry rmcp's token; route them back to the caller.
        let _route = relay.begin_call(&handle.progress_token, caller);
        let id = handle.id.clone();
        tokio::select! {
            result = handle.await_response() => result.map(UpstreamResult::Result).map_err(|e| map_service_error(&server, e)),
            () = caller.ct.cancelled() => {
                let cancelled = rmcp::model::CancelledNotificationParam::new(
                    Some(id),
                    Some("cancelled by the client".into()),
                );
                let _ = peer.send_notification(rmcp::model::CancelledNotification::new(cancelled).into()).await;
                Err(Error::Cancelled { server })
            }
        }
    }
}

/// What a request does to its session's relay before it is sent.
enum SubscriptionChange {
    None,
    Subscribe(String),
    Unsubscribe(String),
}

impl SubscriptionChange {
    /// Applies the change; false when the upstream need not hear the request (the upstream
    /// subscription exists already, or other agents still want it).
    fn apply(&self, relay: &Relay, caller: &Caller) -> bool {
        match self {
            Self::None => true,
            Self::Subscribe(uri) => relay.subscribe(uri, caller),
            Self::Unsubscribe(uri) => relay.unsubscribe(uri, caller),
        }
    }

    /// The upstream refused a subscription (or could not be reached): the caller is not
    /// subscribed, so the next subscriber asks the upstream again. An unsubscribe stays done.
    fn undo(&self, relay: &Relay, caller: &Caller) {
        if let Self::Subscribe(uri) = self {
            relay.unsubscribe(uri, caller);
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
