//! The HTTP side: actix-web serving MCP streamable HTTP at `/mcp`, `/health`, `/readyz`,
//! `/metrics` and the RFC 9728 metadata. `routes` is the one route table.
//!
//! Browser clients get CORS (`cors.rs`): any origin for the discovery documents and the token,
//! registration and revocation endpoints, the guard's origins for `/mcp`.
//!
//! Every `/mcp` request passes the Host/Origin guard against DNS rebinding (`host_guard.rs`) and, with
//! sign-in on, `authenticate`, both from the headers alone; only then is its body read
//! (`body.rs`: `maxBodyBytes`, `bodyTimeoutMs`). Then sessions of the 2025 revisions
//! (`initialize`, and anything carrying `Mcp-Session-Id`) are muster's own (`streamable.rs`,
//! ADR 0004); a request without a session that carries the 2026-07-28 revision goes to rmcp's
//! `StreamableHttpService` through `bridge` (ADR 0001), anything else gets 400.
//!
//! Connections are counted (`connections.rs`): past `maxConnections` a request gets 503 and its
//! connection is closed. An idle connection closes after `keepAliveMs`, one that sends no request
//! head after `HEADER_TIMEOUT`, and one whose agent hangs up (EOF) at once, which drops and so
//! cancels the request it was waiting for, whatever the reply format.

mod body;
mod connections;
mod cors;
mod error;
mod host_guard;
mod oauth;
mod streamable;

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Service as _, ServiceResponse};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use futures::StreamExt as _;
use futures::future::Either;
use http_body_util::BodyExt as _;
use rmcp::model::{ClientJsonRpcMessage, ClientRequest};
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::auth::InboundAuth;
use crate::config::Config;
use crate::mcp::GatewayServer;
use crate::mcp::core::Core;
use crate::mcp::sessions::Sessions;
use crate::routing::RouterHandle;

/// A connection must send its request head within this (actix's default, stated).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// After a response that closes the connection, how long muster reads (and drops) what the client
/// still sends, so the client reads the response rather than a reset (actix's default, stated).
const LINGER: Duration = Duration::from_secs(1);

/// rmcp's service, for requests without a session (the 2026-07-28 protocol).
pub type McpService = StreamableHttpService<GatewayServer, NeverSessionManager>;

#[derive(Clone)]
struct FrontendState {
    endpoint: Arc<streamable::SessionRoutes>,
    mcp: Arc<McpService>,
    guard: host_guard::HostGuard,
    router: RouterHandle,
    auth: Option<Arc<InboundAuth>>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    max_body: usize,
    body_timeout: Duration,
    connections: connections::Connections,
    body_budget: Arc<tokio::sync::Semaphore>,
    /// The shared store, for `/readyz`.
    store: crate::store::Store,
    /// Cancelled when muster is told to stop: `/readyz` says 503, answers close their connections.
    stopping: CancellationToken,
}

/// Builds rmcp's service for sessionless requests: one `GatewayServer` per request, each with a
/// unique agent id, all sharing what sessionless agents share (`mcp::Sessionless`).
pub fn mcp_service(
    config: &Config,
    router: RouterHandle,
    sessions: Arc<Sessions>,
    cancel: CancellationToken,
    core: Arc<Core>,
    sessionless: crate::mcp::Sessionless,
) -> McpService {
    let exposure = config.tool_exposure;
    let sign_in = config.oauth.is_some();
    let factory = move || {
        Ok(GatewayServer::new(sessions.next_agent_id(), router.clone(), exposure, sign_in)
            .with_core(core.clone())
            .with_sessionless(sessionless.clone()))
    };
    // `guard` has checked Host and Origin before any request gets here, with the same lists.
    let server_config = StreamableHttpServerConfig::default()
        .with_cancellation_token(cancel)
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_max_request_body_bytes(config.max_body_bytes)
        .disable_allowed_hosts()
        .disable_allowed_origins();
    StreamableHttpService::new(factory, Arc::new(NeverSessionManager::default()), server_config)
}

/// The one route table.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/mcp", web::route().to(mcp))
        .route("/health", web::get().to(health))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .route("/.well-known/oauth-protected-resource", web::get().to(protected_resource))
        .route("/.well-known/oauth-protected-resource/mcp", web::get().to(protected_resource))
        .route("/.well-known/oauth-authorization-server", web::get().to(oauth::metadata))
        .route("/.well-known/oauth-authorization-server/mcp", web::get().to(oauth::metadata))
        .route("/.well-known/openid-configuration", web::get().to(oauth::metadata))
        .route("/oauth/authorize", web::get().to(oauth::authorize))
        .route("/oauth/callback", web::get().to(oauth::callback))
        .route("/oauth/token", web::post().to(oauth::token))
        .route("/oauth/register", web::post().to(oauth::register))
        .route("/oauth/revoke", web::post().to(oauth::revoke));
}

/// What the HTTP frontend serves, built by `app::run`.
pub struct Parts {
    /// The stateless (2026-era) MCP service.
    pub mcp: McpService,
    pub router: RouterHandle,
    /// The agents' sessions (2025 era).
    pub sessions: Arc<Sessions>,
    /// Sign-in: `None` when `aggregator.oauth` is off.
    pub auth: Option<Arc<InboundAuth>>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// The `core_*` management tools.
    pub core: Arc<Core>,
    /// What the replicas share (`/readyz` reports it).
    pub store: crate::store::Store,
    pub stop: Stop,
}

/// How the frontend stops. When `signal` is cancelled (SIGTERM, Ctrl-C) `/readyz` answers 503 and
/// every answer closes its connection, so load balancers take this replica out and agents come
/// back on new connections (to another replica); after `delay` muster stops accepting and gives
/// the requests in flight `SHUTDOWN_TIMEOUT` to finish.
#[derive(Clone)]
pub struct Stop {
    pub signal: CancellationToken,
    pub delay: Duration,
}

/// How long requests in flight may take once muster stops accepting (then they are dropped).
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until the process is told to stop.
pub async fn serve(config: &Config, parts: Parts) -> std::io::Result<()> {
    let Parts { mcp, router, sessions, auth, metrics, core, store, stop } = parts;
    let gateway = GatewayServer::new(0, router.clone(), config.tool_exposure, config.oauth.is_some()).with_core(core);
    let state = FrontendState {
        endpoint: Arc::new(streamable::SessionRoutes { gateway, sessions }),
        mcp: Arc::new(mcp),
        guard: host_guard::HostGuard::new(&config.allowed_hosts, &config.allowed_origins),
        router,
        auth,
        metrics,
        max_body: config.max_body_bytes,
        body_timeout: config.limits.body_timeout,
        connections: connections::Connections::within_open_files(config.limits.max_connections),
        body_budget: body::budget(),
        store,
        stopping: stop.signal.clone(),
    };
    let connections = state.connections.clone();
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let counted = connections.clone();
    let limit = connections.limit();
    let server = HttpServer::new(move || {
        let guard = state.guard.clone();
        App::new()
            .app_data(web::Data::new(state.clone()))
            .configure(routes)
            // CORS for browser clients (`cors.rs`): preflights answered here, headers added to answers.
            .wrap_fn(move |req, service| {
                if let Some(answer) = cors::preflight(req.request(), &guard) {
                    let answer = req.into_response(answer).map_into_right_body();
                    return Either::Left(futures::future::ready(Ok(answer)));
                }
                let headers = cors::headers(req.request(), &guard);
                let response = service.call(req);
                Either::Right(async move {
                    let mut response = response.await?;
                    for (name, value) in headers {
                        response.headers_mut().insert(name, value);
                    }
                    Ok(response.map_into_left_body())
                })
            })
            // Once muster stops, every answer closes its connection: the agent's next request
            // opens a new one, which the Service sends to a replica that stays.
            .wrap_fn(|req, service| {
                let stopping = req.app_data::<web::Data<FrontendState>>().map(|s| s.stopping.clone());
                let response = service.call(req);
                async move {
                    let mut response = response.await?;
                    if stopping.is_some_and(|s| s.is_cancelled()) {
                        response.response_mut().head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
                    }
                    Ok(response)
                }
            })
            .wrap_fn(move |req, service| {
                if connections::refused(req.request()) {
                    let refused = req.into_response(error::overloaded(limit)).map_into_right_body();
                    return Either::Left(futures::future::ready(Ok(refused)));
                }
                let response = service.call(req);
                Either::Right(async move { response.await.map(ServiceResponse::map_into_left_body) })
            })
    })
    // Without TCP_NODELAY, a streamed (SSE) reply waits for the client's delayed ACK: ~40 ms a call.
    .on_connect(move |connection, extensions| {
        let local = set_nodelay_and_get_local(connection);
        counted.accept(local, extensions);
    })
    .workers(workers)
    .max_connections(connections.hard_limit_per_worker(workers))
    .keep_alive(config.limits.keep_alive)
    .client_request_timeout(HEADER_TIMEOUT)
    .client_disconnect_timeout(LINGER)
    // An agent that hangs up (EOF) ends its requests, also one waiting for a JSON answer.
    .h1_allow_half_closed(false)
    .shutdown_timeout(SHUTDOWN_TIMEOUT.as_secs())
    // `app::run` hears the signals and cancels `stop.signal`; actix's own would stop accepting
    // at once, before load balancers know.
    .disable_signals()
    .bind((config.host.as_str(), config.port))?;
    for addr in server.addrs() {
        tracing::info!(%addr, max_connections = limit, "muster is serving MCP at /mcp");
    }
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        stop.signal.cancelled().await;
        tracing::info!(delay_ms = stop.delay.as_millis(), "stopping: /readyz answers 503, then muster stops accepting");
        tokio::time::sleep(stop.delay).await;
        handle.stop(true).await;
    });
    server.await
}

fn set_nodelay_and_get_local(connection: &dyn std::any::Any) -> Option<std::net::SocketAddr> {
    let stream = connection.downcast_ref::<actix_web::rt::net::TcpStream>()?;
    let _ = stream.set_nodelay(true);
    stream.local_addr().ok()
}

/// Disables Nagle on each accepted connection (see `serve`). Public for the load-test fixtures.
pub fn set_nodelay(connection: &dyn std::any::Any, _: &mut actix_web::dev::Extensions) {
    if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        let _ = stream.set_nodelay(true);
    }
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Prometheus exposition (`telemetry/metrics.rs` lists every name), behind the Host check.
async fn metrics(req: HttpRequest, state: web::Data<FrontendState>) -> HttpResponse {
    if let Err(refused) = scrape_guard(&req, &state) {
        return *refused;
    }
    let agent_sessions = state.endpoint.sessions.len();
    set_gauges(&state.router.current(), agent_sessions);
    metrics::gauge!(crate::telemetry::metrics::AGENT_CONNECTIONS).set(state.connections.open() as f64);
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}

/// Sets the scrape-time gauges.
fn set_gauges(snapshot: &crate::routing::CatalogSnapshot, agent_sessions: u64) {
    use crate::telemetry::metrics::{AGENT_SESSIONS, BACKEND_STATE, UPSTREAM_CONNECTIONS, UPSTREAM_SESSIONS};
    metrics::gauge!(AGENT_SESSIONS).set(agent_sessions as f64);
    let connections = crate::telemetry::propagation::established_connections();
    for (name, server) in &snapshot.servers {
        let connection = server.handle.status();
        for state in crate::crd::status::State::ALL {
            let value = if state == connection.state { 1.0 } else { 0.0 };
            metrics::gauge!(BACKEND_STATE, "server" => name.clone(), "state" => state.as_str()).set(value);
        }
        let sessions = u64::from(connection.session.is_some()) + server.handle.user_session_count();
        metrics::gauge!(UPSTREAM_SESSIONS, "server" => name.clone()).set(sessions as f64);
        if let Some(addr) = server.handle.upstream_addr() {
            let count = connections.iter().filter(|remote| **remote == addr).count();
            metrics::gauge!(UPSTREAM_CONNECTIONS, "server" => name.clone()).set(count as f64);
        }
    }
}

async fn readyz(req: HttpRequest, state: web::Data<FrontendState>) -> HttpResponse {
    if let Err(refused) = scrape_guard(&req, &state) {
        return *refused;
    }
    let snapshot = state.router.current();
    // A store that went away degrades muster (each replica serves what it holds); it stays ready.
    let store = match (state.store.is_shared(), state.store.is_up()) {
        (false, _) => "memory",
        (true, true) => "up",
        (true, false) => "down",
    };
    let stopping = state.stopping.is_cancelled();
    let ready = snapshot.ready && !stopping;
    let body = serde_json::json!({
        "ready": ready,
        "stopping": stopping,
        "servers": snapshot.servers.len(),
        "tools": snapshot.catalog.tools.len(),
        "store": store,
    });
    if ready { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}

/// The Host/Origin guard of `/mcp` for `/metrics` and `/readyz`, which also accepts the IP
/// address the connection arrived on (kubelet probes, Prometheus scraping a pod).
fn scrape_guard(req: &HttpRequest, state: &FrontendState) -> Result<(), Box<HttpResponse>> {
    let local = req.conn_data::<connections::Slot>().and_then(|slot| slot.local).map(|addr| addr.ip());
    state.guard.check_scrape(req, local).map_err(|refused| {
        Box::new(error::jsonrpc_error(
            actix_web::http::StatusCode::FORBIDDEN,
            error::INVALID_REQUEST,
            &refused.to_string(),
        ))
    })
}

/// RFC 9728 protected-resource metadata; 404 when inbound sign-in is off.
async fn protected_resource(state: web::Data<FrontendState>) -> HttpResponse {
    match &state.auth {
        Some(auth) => HttpResponse::Ok().json(&auth.metadata),
        None => HttpResponse::NotFound().finish(),
    }
}

/// `/mcp`: the Host/Origin guard, `authenticate` (when sign-in is on), reading the body, then a
/// session's own route (`streamable.rs`), `initialize`, or rmcp for a request without a session
/// (2026-07-28).
async fn mcp(req: HttpRequest, payload: web::Payload, state: web::Data<FrontendState>) -> HttpResponse {
    if let Err(refused) = state.guard.check(&req) {
        return error::jsonrpc_error(
            actix_web::http::StatusCode::FORBIDDEN,
            error::INVALID_REQUEST,
            &refused.to_string(),
        );
    }
    let mut identity = None;
    if let Some(auth) = &state.auth {
        match authenticate(auth, &req).await {
            Ok(who) => identity = Some(Arc::new(who)),
            Err(e) => return error::unauthorized(&auth.resource_metadata_url, &e),
        }
    }
    let body = match body::read(&req, payload, state.max_body, state.body_timeout, &state.body_budget).await {
        Ok(body) => body,
        Err(e) => return error::body_refused(&e),
    };
    let message = if req.method() == actix_web::http::Method::POST {
        match streamable::decode(&req, &body) {
            Ok(message) => Some(message),
            Err(response) => return *response,
        }
    } else {
        None
    };
    if let Some(session) = req.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()) {
        return streamable::on_session(&state.endpoint, &req, message, session, identity).await;
    }
    if let Some(ClientJsonRpcMessage::Request(request)) = &message
        && let ClientRequest::InitializeRequest(init) = &request.request
    {
        let owner = identity.as_ref().map(|i| i.key());
        return streamable::initialize(&state.endpoint, &req, request.id.clone(), &init.params, owner).await;
    }
    if let Some(refused) = streamable::needs_session(&req, message.as_ref()) {
        return refused;
    }
    let mut extensions = http::Extensions::new();
    if let Some(identity) = identity {
        extensions.insert(identity);
    }
    if req.peer_addr().is_some_and(|addr| addr.ip().to_canonical().is_loopback()) {
        extensions.insert(crate::caller::Loopback);
    }
    bridge_with(&state.mcp, &req, body, extensions).await
}

async fn authenticate(
    auth: &InboundAuth,
    req: &HttpRequest,
) -> Result<crate::auth::Identity, crate::auth::inbound::Error> {
    let header =
        req.headers().get(actix_web::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or(crate::auth::inbound::Error::Missing)?;
    match &auth.server {
        Some(server) if token.starts_with(crate::auth::server::ACCESS_TOKEN_PREFIX) => server.identity(token).await,
        _ => auth.validator.validate(token).await,
    }
}

/// The bridge without extra request extensions (tests serve their own upstreams with it).
pub async fn bridge<S, M>(service: &StreamableHttpService<S, M>, req: &HttpRequest, body: web::Bytes) -> HttpResponse
where
    S: rmcp::ServerHandler + Send + 'static,
    M: SessionManager,
{
    bridge_with(service, req, body, http::Extensions::new()).await
}

/// The bridge: actix request (http 0.2) → `http::Request` (1.x) → rmcp → streamed response.
/// `extensions` (the caller's identity) reach the MCP handlers through rmcp's request parts.
async fn bridge_with<S, M>(
    service: &StreamableHttpService<S, M>,
    req: &HttpRequest,
    body: web::Bytes,
    extensions: http::Extensions,
) -> HttpResponse
where
    S: rmcp::ServerHandler + Send + 'static,
    M: SessionManager,
{
    let mut builder = http::Request::builder().method(req.method().as_str()).uri(req.uri().to_string());
    for (name, value) in req.headers() {
        builder = builder.header(name.as_str(), value.as_bytes());
    }
    let request_body = body.clone();
    let request = match builder.body(http_body_util::Full::new(body)) {
        Ok(mut request) => {
            request.extensions_mut().extend(extensions);
            request
        }
        Err(e) => return HttpResponse::BadRequest().body(format!("malformed request: {e}")),
    };
    let is_delete = req.method() == actix_web::http::Method::DELETE;
    let (parts, body) = service.handle(request).await.into_parts();
    let mut status = actix_web::http::StatusCode::from_u16(parts.status.as_u16())
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    // rmcp answers a session DELETE with 202; clients (the Python SDK) expect 200 or 204.
    if is_delete && status == actix_web::http::StatusCode::ACCEPTED {
        status = actix_web::http::StatusCode::OK;
    }
    if req.method() == actix_web::http::Method::POST && status == actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE {
        let is_text = parts.headers.get(http::header::CONTENT_TYPE).is_none_or(|v| v.as_bytes().starts_with(b"text/"));
        if is_text {
            let detail =
                body.collect().await.map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned()).unwrap_or_default();
            return error::undecodable_body(&request_body, &detail);
        }
    }
    let mut out = HttpResponse::build(status);
    for (name, value) in &parts.headers {
        out.append_header((name.as_str(), value.as_bytes()));
    }
    out.streaming(body.into_data_stream().map(|chunk| chunk.map_err(|e: std::convert::Infallible| match e {})))
}
