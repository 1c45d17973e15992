//! Opening an upstream session: the transport (stdio child or streamable HTTP), the MCP
//! handshake, and the capability listing.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{ProtocolVersion, ServerCapabilities as Advertised};
use rmcp::service::{ClientInitializeError, ClientLifecycleMode, ClientServiceExt as _, RoleClient, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{Peer, ServiceExt as _};
use tokio::io::AsyncReadExt as _;
use tokio_util::sync::CancellationToken;

use super::ServerCapabilities;
use super::relay::UpstreamHandler;
use crate::crd::{McpServer, ServerType};

/// Why a session could not be opened, in words (`failure.rs`): these become `lastError` and the
/// agent's error, so they never carry an upstream's body or a child's stderr.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not start {command:?}: {reason}")]
    Spawn { command: String, reason: String },
    #[error("{reason}")]
    Initialize { reason: String },
    #[error("did not complete the MCP handshake within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("failed to list its capabilities: {0}")]
    List(String),
    #[error("header {name:?} is not a valid HTTP header")]
    Header { name: String },
    #[error("requires authentication (HTTP 401)")]
    AuthRequired,
    #[error("type is required")]
    NoType,
    #[error("{0}")]
    Sse(String),
    #[error("building the HTTP client failed: {0}")]
    Client(String),
    /// The URL names an address `egress` refuses (a host name is checked when it is resolved).
    #[error("{url} is refused: {refused}{}", private_hint(refused))]
    Refused { url: String, refused: crate::egress::Refused },
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        Self::Client(e.to_string())
    }
}

fn private_hint(refused: &crate::egress::Refused) -> &'static str {
    match refused {
        crate::egress::Refused::Private(_) => "; set aggregator.upstreams.allowPrivateNetworks: true to allow it",
        crate::egress::Refused::Metadata(_) | crate::egress::Refused::NotUnicast(_) => "",
    }
}

/// The longest error detail written to the debug log (an upstream's body can be in it).
const DETAIL_LIMIT: usize = 300;

/// An error's full text for the debug log: bounded, on one line.
pub(super) fn detail(error: &dyn std::fmt::Display) -> String {
    let text = error.to_string().replace(['\n', '\r'], " ");
    let mut cut: String = text.chars().take(DETAIL_LIMIT).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}

/// A live session and what is needed to watch and end it.
pub(super) struct Connected {
    pub(super) peer: Peer<RoleClient>,
    /// How its calls go: directly (`direct_post.rs`) on a streamable-HTTP session, else rmcp's peer.
    pub(super) transport: super::Transport,
    pub(super) cancel: CancellationToken,
    /// Resolves with a reason when the session ends on its own (child exit, transport death).
    pub(super) closed: Pin<Box<dyn Future<Output = String> + Send>>,
    pub(super) capabilities: ServerCapabilities,
    /// The revision the session speaks: 2026-07-28 when the upstream answered `server/discover`,
    /// else the one `initialize` agreed on.
    pub(super) protocol_version: String,
}

/// Streamable-HTTP upstreams are asked `server/discover` first (2026-07-28, sessionless); one that
/// answers it with a JSON-RPC error or an HTTP 4xx other than 401/403 is a 2025 server and gets
/// `initialize` on the same transport (rmcp's `Auto` lifecycle; ADR 0012). One whose discovery
/// offers only 2025 revisions gets `initialize` on a new transport.
fn newest_first() -> ClientLifecycleMode {
    ClientLifecycleMode::Auto { preferred_versions: vec![ProtocolVersion::V_2026_07_28], legacy_version: None }
}

pub(super) async fn connect(
    definition: &McpServer,
    http: reqwest::Client,
    handler: UpstreamHandler,
    bearer: Option<&crate::auth::Secret>,
    max_result_bytes: usize,
) -> Result<Connected, Error> {
    let timeout = definition.timeout();
    let mut direct = None;
    if let Some(url) = definition.spec.url.as_deref() {
        crate::egress::upstream_policy()
            .check_url(url)
            .map_err(|refused| Error::Refused { url: url.to_owned(), refused })?;
    }
    let listener = handler.clone();
    let serving = match definition.spec.server_type {
        Some(ServerType::Stdio) => {
            let transport = spawn_child(definition)?;
            tokio::time::timeout(timeout, handler.serve(transport)).await
        }
        Some(ServerType::StreamableHttp) => {
            let url = definition.spec.url.clone().unwrap_or_default();
            // Pools of its own: connections for calls are opened (and served) by the threads that
            // make the calls, not by the one running rmcp's session.
            direct = super::direct_post::DirectPost::new(&url, definition.timeout(), max_result_bytes)?.map(Arc::new);
            let mut config = StreamableHttpClientTransportConfig::with_uri(url).custom_headers(headers(definition)?);
            if let Some(bearer) = bearer {
                config = config.auth_header(bearer.expose());
            }
            config.max_concurrent_requests = super::http::MAX_CONCURRENT_REQUESTS;
            config.max_json_response_size = max_result_bytes;
            config.max_sse_event_size = max_result_bytes;
            let client = super::upstream_client::UpstreamClient(http, direct.clone());
            let transport = || StreamableHttpClientTransport::with_client(client.clone(), config.clone());
            tokio::time::timeout(timeout, async {
                match handler.clone().serve_with_lifecycle(transport(), newest_first()).await {
                    // It knows `server/discover` but offers 2025 revisions only there (such servers
                    // exist: kubernetes-mcp-server 0.0.67): those are spoken after `initialize`.
                    Err(ClientInitializeError::NoCompatibleProtocolVersion { .. }) => handler.serve(transport()).await,
                    other => other,
                }
            })
            .await
        }
        Some(ServerType::Sse) => {
            let url = definition.spec.url.clone().unwrap_or_default();
            let mut headers: reqwest::header::HeaderMap = headers(definition)?.into_iter().collect();
            if let Some(bearer) = bearer
                && let Ok(value) = http::HeaderValue::try_from(format!("Bearer {}", bearer.expose()))
            {
                headers.insert(http::header::AUTHORIZATION, value);
            }
            let transport = super::sse::SseTransport::connect(http, &url, headers, timeout)
                .await
                .map_err(|e| Error::Sse(e.to_string()))?;
            tokio::time::timeout(timeout, handler.serve(transport)).await
        }
        None => return Err(Error::NoType),
    };
    let running: RunningService<RoleClient, UpstreamHandler> = match serving {
        Err(_) => return Err(Error::Timeout(timeout)),
        Ok(Err(e)) if e.is_authorization_required() => return Err(Error::AuthRequired),
        Ok(Err(e)) => {
            tracing::debug!(server = definition.name(), error = detail(&e), "handshake failed");
            let reason = match definition.spec.server_type {
                // Its stderr (logged at debug level) says why; it may hold secrets, so it stays there.
                Some(ServerType::Stdio) => {
                    "the process exited or closed its output during the MCP handshake".to_owned()
                }
                _ => super::failure::describe(&e),
            };
            return Err(Error::Initialize { reason });
        }
        Ok(Ok(running)) => running,
    };
    let peer = running.peer().clone();
    let protocol_version = peer.peer_info().map(|info| info.protocol_version.to_string()).unwrap_or_default();
    let capabilities = list_capabilities(definition, &peer).await?;
    let cancel = CancellationToken::new();
    let sessionless = peer.peer_info().is_some_and(|info| !info.protocol_version.has_initialize());
    if sessionless {
        tokio::spawn(listener.follow_list_changes(peer.clone(), cancel.clone()));
    }
    let stop = cancel.clone();
    let is_stdio = definition.spec.server_type == Some(ServerType::Stdio);
    let rmcp_cancel = running.cancellation_token();
    let closed = Box::pin(async move {
        let waiting = running.waiting();
        tokio::pin!(waiting);
        tokio::select! {
            reason = &mut waiting => {
                tracing::debug!(?reason, "upstream session ended");
                if is_stdio { "the process exited".to_owned() } else { "the session was closed".to_owned() }
            }
            // Closed by muster: rmcp ends the session (a DELETE, or the child's exit) and this
            // resolves only then, so muster can wait for it before it exits.
            () = stop.cancelled() => {
                rmcp_cancel.cancel();
                let _ = waiting.await;
                "closed by muster".to_owned()
            }
        }
    });
    // The handshake and the listing carried the session id (or, in 2026-07-28, the per-request
    // `_meta`), so the `DirectPost` knows it by now; a 2025 server without sessions keeps rmcp's
    // transport, and so does one whose tools want arguments as headers (`x-mcp-header`, SEP-2243),
    // which rmcp writes.
    let params_as_headers = || serde_json::to_string(&*capabilities.tools).is_ok_and(|t| t.contains("x-mcp-header"));
    let transport = match direct {
        Some(direct) if direct.ready(sessionless) && !params_as_headers() => super::Transport::Direct(direct),
        _ => super::Transport::Peer,
    };
    Ok(Connected { peer, transport, cancel, closed, capabilities, protocol_version })
}

fn spawn_child(definition: &McpServer) -> Result<TokioChildProcess, Error> {
    let command = definition.spec.command.clone().unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&command);
    cmd.args(&definition.spec.args).envs(&definition.spec.env).kill_on_drop(true);
    let (transport, child_stderr) = TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn { command: command.clone(), reason: super::failure::describe(&source) })?;
    if let Some(child_stderr) = child_stderr {
        let server = definition.name().to_owned();
        tokio::spawn(log_stderr(server, child_stderr));
    }
    Ok(transport)
}

/// The longest stderr line of a child that is logged (the rest of the line is dropped).
const STDERR_LINE_LIMIT: usize = 1000;

/// Logs a child's stderr at debug level, line by line, each cut to `STDERR_LINE_LIMIT`: a child
/// that prints without newlines costs no memory. Its stderr never reaches status or an agent.
async fn log_stderr(server: String, mut stderr: tokio::process::ChildStderr) {
    let mut chunk = [0u8; 4096];
    let mut line = Vec::new();
    let mut dropped = false;
    while let Ok(read) = stderr.read(&mut chunk).await {
        if read == 0 {
            break;
        }
        for &byte in &chunk[..read] {
            if byte == b'\n' {
                let text = String::from_utf8_lossy(&line);
                tracing::debug!(server, line = %text, cut = dropped, "stdio server stderr");
                line.clear();
                dropped = false;
            } else if line.len() < STDERR_LINE_LIMIT {
                line.push(byte);
            } else {
                dropped = true;
            }
        }
    }
}

fn headers(definition: &McpServer) -> Result<HashMap<http::HeaderName, http::HeaderValue>, Error> {
    definition
        .spec
        .headers
        .iter()
        .map(|(name, value)| {
            let bad = || Error::Header { name: name.clone() };
            Ok((
                http::HeaderName::try_from(name.as_str()).map_err(|_| bad())?,
                http::HeaderValue::try_from(value.as_str()).map_err(|_| bad())?,
            ))
        })
        .collect()
}

/// Lists tools, resources, templates and prompts, each only if the server advertises it.
pub(super) async fn list_capabilities(
    definition: &McpServer,
    peer: &Peer<RoleClient>,
) -> Result<ServerCapabilities, Error> {
    let advertised: Advertised = peer.peer_info().map(|info| info.capabilities.clone()).unwrap_or_default();
    let list = |e: rmcp::ServiceError| Error::List(super::failure::describe(&e));
    let tools = if advertised.tools.is_some() { peer.list_all_tools().await.map_err(list)? } else { Vec::new() };
    let (resources, resource_templates) = if advertised.resources.is_some() {
        (peer.list_all_resources().await.map_err(list)?, peer.list_all_resource_templates().await.unwrap_or_default())
    } else {
        (Vec::new(), Vec::new())
    };
    let prompts = if advertised.prompts.is_some() { peer.list_all_prompts().await.map_err(list)? } else { Vec::new() };
    Ok(ServerCapabilities {
        name: definition.name().to_owned(),
        tool_prefix: definition.spec.tool_prefix.clone(),
        family: definition.spec.family.clone(),
        tools: Arc::new(tools),
        resources: Arc::new(resources),
        resource_templates: Arc::new(resource_templates),
        prompts: Arc::new(prompts),
    })
}
