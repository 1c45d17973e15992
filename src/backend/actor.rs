//! BackendActor: one upstream MCP server's session. It opens it (stdio child or streamable HTTP,
//! through rmcp), watches it, probes it with MCP `ping`, re-lists its capabilities when the
//! upstream says they changed, and publishes it (`BackendStatus`) for the call path.
//!
//! Accepts `Connect`, `Draining` and `Shutdown` (from the supervisor), `RetryScheduled` (from the supervisor),
//! `ConnectionLost` (from its session watcher, its health probe and the call path), `ConnectNow`
//! and `CallHealth` (from the call path), `ListChanged` (from its upstream handler) and
//! `CapabilitiesDiscovered` (from user sessions). Emits `BackendStateChanged` to the supervisor
//! and `ServerUpdated` to the router.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use rmcp::Peer;
use rmcp::model::ClientRequest;
use rmcp::service::RoleClient;
use tokio::sync::watch;

use super::ServerCapabilities;
use super::{
    BackendHandle, BackendStatus, Relay, UpstreamAuth, UpstreamSession, connect, failure, relay, user_sessions,
};
use crate::crd::McpServer;
use crate::crd::status::State;

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
    /// The revision the live session speaks (`2026-07-28` when the upstream answered
    /// `server/discover`); none without a session.
    pub protocol_version: Option<String>,
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
    status: watch::Sender<BackendStatus>,
    relay: Arc<Relay>,
    generation: u64,
    call_timeout: Duration,
    max_result_bytes: usize,
    degraded: Arc<AtomicBool>,
    session_cancel: Option<tokio_util::sync::CancellationToken>,
    /// Cancelled once the current session has really ended (its DELETE sent, its child gone).
    session_ended: Option<tokio_util::sync::CancellationToken>,
    health: Option<SpawnHandle>,
    stopping: bool,
    auth: Option<Arc<UpstreamAuth>>,
    user_sessions: Arc<user_sessions::UserSessions>,
    /// Capabilities came from a user session (auth servers): skip re-publishing the same ones.
    discovered: bool,
    /// The revision of the live session, for status.
    protocol_version: Option<String>,
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
        let http = super::http::http_client(definition.timeout(), super::http::MAX_CONCURRENT_REQUESTS)?;
        let (tx, rx) = watch::channel(BackendStatus::initial());
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
            status: tx,
            relay: relay.clone(),
            generation: 0,
            call_timeout,
            max_result_bytes: calls.max_result_bytes,
            degraded: degraded.clone(),
            session_cancel: None,
            session_ended: None,
            health: None,
            stopping: false,
            auth: auth.clone(),
            user_sessions: user_sessions.clone(),
            discovered: false,
            protocol_version: None,
        };
        let addr = actor.start();
        Ok(BackendHandle {
            name,
            instance,
            addr,
            status: rx,
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
            status: self.status.subscribe(),
            relay: self.relay.clone(),
            call_timeout: self.call_timeout,
            degraded: self.degraded.clone(),
            auth: self.auth.clone(),
            user_sessions: self.user_sessions.clone(),
            definition: self.definition.clone(),
            http: self.http.clone(),
        }
    }

    fn set_state(
        &mut self,
        ctx: &Context<Self>,
        state: State,
        error: Option<String>,
        session: Option<UpstreamSession>,
    ) {
        if session.is_none() {
            self.protocol_version = None;
        }
        self.status.send_modify(|c| {
            c.session = session;
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
            protocol_version: self.protocol_version.clone(),
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
                // 2026-07-28 has no `ping`: a modern session is probed with `server/discover`.
                let modern = peer.peer_info().is_some_and(|info| !info.protocol_version.has_initialize());
                let probe = if modern {
                    ClientRequest::DiscoverRequest(rmcp::model::DiscoverRequest::new(Default::default()))
                } else {
                    ClientRequest::PingRequest(rmcp::model::PingRequest::default())
                };
                let ping = peer.send_request(probe);
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

/// Supervisor -> backend: (re)connect now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect;

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
        self.status.send_modify(|c| {
            *c = BackendStatus {
                session: None,
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
                    let ended = tokio_util::sync::CancellationToken::new();
                    actor.session_ended = Some(ended.clone());
                    let addr = ctx.address();
                    let waiting = connected.closed;
                    actix::spawn(async move {
                        let reason = waiting.await;
                        ended.cancel();
                        addr.do_send(ConnectionLost { generation, reason });
                    });
                    actor.start_health_probe(ctx, peer.clone(), generation);
                    let session = UpstreamSession { peer, transport: connected.transport, generation };
                    actor.protocol_version = Some(connected.protocol_version);
                    let state = actor.connected_state();
                    actor.set_state(ctx, state, None, Some(session));
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

/// A call found the backend failed and no attempt started within `PROBE_INTERVAL`: connect now,
/// unless attempt `attempt` is no longer the latest (another call or the supervisor started one).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectNow {
    pub attempt: u64,
}

impl Handler<ConnectNow> for BackendActor {
    type Result = ();

    fn handle(&mut self, msg: ConnectNow, ctx: &mut Self::Context) {
        let failed = matches!(self.status.borrow().state, State::Failed | State::Disconnected);
        if msg.attempt == self.generation && failed && !self.stopping {
            tracing::info!(server = self.definition.name(), "a call is waiting: connecting now");
            <Self as Handler<Connect>>::handle(self, Connect, ctx);
        }
    }
}

/// Supervisor -> backend: after the failure it was told of, it connects again at `at`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RetryScheduled {
    pub at: Instant,
}

impl Handler<RetryScheduled> for BackendActor {
    type Result = ();

    fn handle(&mut self, msg: RetryScheduled, _: &mut Self::Context) {
        self.status.send_modify(|c| c.retry_at = Some(msg.at));
    }
}

/// The session of `generation` is gone (child exit, failed ping, transport error).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectionLost {
    pub generation: u64,
    pub reason: String,
}

impl Handler<ConnectionLost> for BackendActor {
    type Result = ();

    fn handle(&mut self, msg: ConnectionLost, ctx: &mut Self::Context) {
        if msg.generation != self.generation || self.stopping || self.status.borrow().session.is_none() {
            return;
        }
        tracing::warn!(server = self.definition.name(), reason = %msg.reason, "upstream connection lost");
        self.drop_session(ctx);
        self.set_state(ctx, State::Failed, Some(msg.reason), None);
    }
}

/// The upstream announced `notifications/*/list_changed`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ListChanged {
    pub generation: u64,
}

impl Handler<ListChanged> for BackendActor {
    type Result = ();

    fn handle(&mut self, msg: ListChanged, ctx: &mut Self::Context) {
        let Some(session) = self.status.borrow().session.clone() else { return };
        if msg.generation != session.generation {
            return;
        }
        let definition = self.definition.clone();
        let relisting = async move { connect::list_capabilities(&definition, &session.peer).await };
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

/// A user session listed the upstream's capabilities (servers with `spec.auth` have no shared
/// session to list them with).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CapabilitiesDiscovered {
    pub capabilities: ServerCapabilities,
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
        self.status.send_modify(|c| c.state = State::Connected);
        self.report(State::Connected, None);
        self.router.do_send(ServerUpdated { capabilities: Some(msg.capabilities), handle: self.backend_handle(ctx) });
    }
}

/// From the call path: calls time out (`degraded`) while the session is up, or one answered in
/// time again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CallHealth {
    pub degraded: bool,
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
            let connection = self.status.borrow();
            (connection.state, connection.last_error.clone())
        };
        self.report(state, error);
    }
}

/// Supervisor -> backend: muster is stopping. The session stays for calls still draining, but
/// its loss is neither reported nor repaired: upstreams that stop with muster did not fail.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Draining;

impl Handler<Draining> for BackendActor {
    type Result = ();

    fn handle(&mut self, _: Draining, _: &mut Self::Context) {
        self.stopping = true;
    }
}

/// Supervisor -> backend: close the session and stop. Answers once the session has ended, so
/// muster can close its upstream sessions before it exits (`BackendHandle::close`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for BackendActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        self.stopping = true;
        self.drop_session(ctx);
        self.status.send_modify(|c| {
            c.session = None;
            c.state = State::Stopped;
            c.last_error = None;
        });
        ctx.stop();
        let ended = self.session_ended.take();
        Box::pin(async move {
            if let Some(ended) = ended {
                ended.cancelled().await;
            }
        })
    }
}
