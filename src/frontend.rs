//! The HTTP side: actix-web serving MCP streamable HTTP at `/mcp` (through rmcp's
//! `StreamableHttpService`, ADR 0001), `/health` and `/readyz`. `routes` is the one route table.
//!
//! rmcp's service does the MCP framing: sessions (2025-06-18, 2025-11-25), the stateless
//! 2026-07-28 protocol, SSE streams, and the Host/Origin checks against DNS rebinding, which are on
//! by default here. actix enforces the body limit (413) before rmcp sees a byte.

mod error;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use futures::StreamExt as _;
use http_body_util::BodyExt as _;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::auth::InboundAuth;
use crate::config::Config;
use crate::mcp::GatewayServer;
use crate::mcp::agents::Agents;
use crate::routing::RouterHandle;

pub type McpService = StreamableHttpService<GatewayServer, LocalSessionManager>;

#[derive(Clone)]
struct State {
    mcp: Arc<McpService>,
    router: RouterHandle,
    auth: Option<Arc<InboundAuth>>,
    /// With sign-in on: MCP session id → the user (issuer, subject) who opened it. Another
    /// user presenting that id (to call, stream or delete) is refused.
    owners: moka::sync::Cache<String, String>,
    sessions: Arc<LocalSessionManager>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
}

/// The agent-session store. Per-session channels are kept short: an idle agent session is mostly
/// these buffers (measured in loadtests/README.md), and agents rarely have more than a few
/// messages in flight on one session.
pub fn session_manager() -> LocalSessionManager {
    let mut manager = LocalSessionManager::default();
    manager.session_config.channel_capacity = SESSION_CHANNEL_CAPACITY;
    // rmcp keeps each finished request's stream for late resumption; a minute of that at
    // thousands of calls a second is most of muster's memory under load.
    manager.session_config.completed_cache_ttl = COMPLETED_REQUEST_TTL;
    manager
}

/// How long a finished request's reply stays available for a client that reconnects to resume it.
const COMPLETED_REQUEST_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// Messages buffered per agent-session channel (rmcp's default is 16).
const SESSION_CHANNEL_CAPACITY: usize = 4;

/// Builds the MCP service: one `GatewayServer` per agent session, each with a unique id.
pub fn mcp_service(
    config: &Config,
    router: RouterHandle,
    agents: Arc<Agents>,
    cancel: CancellationToken,
    sessions: Arc<LocalSessionManager>,
) -> McpService {
    let next_agent = Arc::new(AtomicU64::new(1));
    let exposure = config.tool_exposure;
    let sign_in = config.oauth.is_some();
    let factory_router = router.clone();
    let factory = move || {
        let id = next_agent.fetch_add(1, Ordering::Relaxed);
        Ok(GatewayServer::new(id, factory_router.clone(), exposure, agents.clone(), sign_in))
    };
    let mut server_config = StreamableHttpServerConfig::default()
        .with_cancellation_token(cancel)
        .with_max_request_body_bytes(config.max_body_bytes);
    server_config = if config.allowed_hosts.is_empty() {
        server_config.disable_allowed_hosts()
    } else {
        server_config.with_allowed_hosts(config.allowed_hosts.clone())
    };
    server_config = if config.allowed_origins.is_empty() {
        server_config.disable_allowed_origins()
    } else {
        server_config.with_allowed_origins(config.allowed_origins.clone())
    };
    StreamableHttpService::new(factory, sessions, server_config)
}

/// The one route table.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/mcp", web::route().to(mcp))
        .route("/health", web::get().to(health))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .route("/.well-known/oauth-protected-resource", web::get().to(protected_resource))
        .route("/.well-known/oauth-protected-resource/mcp", web::get().to(protected_resource));
}

/// Serves until the process is told to stop.
pub async fn serve(
    config: &Config,
    mcp: McpService,
    router: RouterHandle,
    auth: Option<Arc<InboundAuth>>,
    sessions: Arc<LocalSessionManager>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> std::io::Result<()> {
    let owners = moka::sync::Cache::builder()
        .time_to_idle(std::time::Duration::from_secs(24 * 3600))
        .max_capacity(1_000_000)
        .build();
    let state = State { mcp: Arc::new(mcp), router, auth, owners, sessions, metrics };
    let max_body = config.max_body_bytes;
    let server = HttpServer::new(move || {
        App::new().app_data(web::Data::new(state.clone())).app_data(web::PayloadConfig::new(max_body)).configure(routes)
    })
    // Without TCP_NODELAY, a streamed (SSE) reply waits for the client's delayed ACK: ~40 ms a call.
    .on_connect(set_nodelay)
    .shutdown_timeout(5)
    .bind((config.host.as_str(), config.port))?;
    for addr in server.addrs() {
        tracing::info!(%addr, "muster is serving MCP at /mcp");
    }
    server.run().await
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

/// Prometheus exposition (`telemetry/metrics.rs` lists every name).
async fn metrics(state: web::Data<State>) -> HttpResponse {
    let agent_sessions = state.sessions.sessions.read().await.len();
    crate::telemetry::metrics::set_gauges(&state.router.current(), agent_sessions);
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}

async fn readyz(state: web::Data<State>) -> HttpResponse {
    let snapshot = state.router.current();
    let body = serde_json::json!({
        "ready": snapshot.ready,
        "servers": snapshot.servers.len(),
        "tools": snapshot.catalog.tools.len(),
    });
    if snapshot.ready { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}

/// RFC 9728 protected-resource metadata; 404 when inbound sign-in is off.
async fn protected_resource(state: web::Data<State>) -> HttpResponse {
    match &state.auth {
        Some(auth) => HttpResponse::Ok().json(&auth.metadata),
        None => HttpResponse::NotFound().finish(),
    }
}

/// `authenticate` (when sign-in is on), then the bridge to rmcp with the identity attached.
async fn mcp(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let mut extensions = http::Extensions::new();
    let mut owner = None;
    if let Some(auth) = &state.auth {
        match authenticate(auth, &req).await {
            Ok(identity) => {
                owner = Some(identity.key());
                extensions.insert(Arc::new(identity));
            }
            Err(e) => return error::unauthorized(&auth.resource_metadata_url, &e),
        }
    }
    let session = req.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let (Some(session), Some(owner)) = (&session, &owner)
        && state.owners.get(session).is_some_and(|o| &o != owner)
    {
        return error::forbidden_session();
    }
    let response = bridge_with(&state.mcp, &req, body, extensions).await;
    if let (None, Some(owner)) = (&session, owner)
        && let Some(created) = response.headers().get("mcp-session-id").and_then(|v| v.to_str().ok())
    {
        state.owners.insert(created.to_owned(), owner);
    }
    response
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
    auth.validator.validate(token).await
}

/// The bridge without extra request extensions (tests serve their own upstreams with it).
pub async fn bridge<S>(
    service: &StreamableHttpService<S, LocalSessionManager>,
    req: &HttpRequest,
    body: web::Bytes,
) -> HttpResponse
where
    S: rmcp::ServerHandler + Send + 'static,
{
    bridge_with(service, req, body, http::Extensions::new()).await
}

/// The bridge: actix request (http 0.2) → `http::Request` (1.x) → rmcp → streamed response.
/// `extensions` (the caller's identity) reach the MCP handlers through rmcp's request parts.
async fn bridge_with<S>(
    service: &StreamableHttpService<S, LocalSessionManager>,
    req: &HttpRequest,
    body: web::Bytes,
    extensions: http::Extensions,
) -> HttpResponse
where
    S: rmcp::ServerHandler + Send + 'static,
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
