//! MCP streamable HTTP for muster's own agent sessions (the 2025 revisions): `initialize` opens a
//! session in `mcp::sessions`, then each `POST` is one JSON-RPC message of that session, `GET`
//! opens its standalone stream and `DELETE` ends it.
//!
//! A request runs in its own task and answers on a per-request channel. When the answer is the
//! first thing on it, the reply is one `application/json` body; when progress, a log line or a
//! sampling or elicitation request comes first, the reply becomes an SSE stream that ends with
//! the answer. The agent's answers to those requests, and `notifications/cancelled`, arrive as
//! later POSTs and are matched to the request by id. A request whose HTTP connection closes is
//! cancelled (upstream too).

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures::StreamExt as _;
use futures::channel::mpsc;
use rmcp::ServerHandler as _;
use rmcp::model::{
    ClientJsonRpcMessage, ClientNotification, ClientRequest, GetMeta as _, ProgressToken, ProtocolVersion,
    ServerJsonRpcMessage, ServerResult,
};
use tokio_util::sync::CancellationToken;

use super::error;
use crate::auth::Identity;
use crate::backend::Caller;
use crate::mcp::GatewayServer;
use crate::mcp::link::AgentLink;
use crate::mcp::sessions::{AgentSession, Sessions};

const SESSION_HEADER: &str = "mcp-session-id";
/// A comment line on an idle standalone stream, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What the session routes need.
pub(super) struct Endpoint {
    pub gateway: GatewayServer,
    pub sessions: Arc<Sessions>,
}

/// `initialize`: negotiates the version and opens a session owned by `owner`.
pub(super) fn initialize(
    endpoint: &Endpoint,
    req: &HttpRequest,
    id: rmcp::model::RequestId,
    params: &rmcp::model::InitializeRequestParams,
    owner: Option<String>,
) -> HttpResponse {
    let message = match endpoint.gateway.negotiate_initialize(params) {
        Ok(result) => {
            let (session_id, _) = endpoint.sessions.open(owner);
            let mut response = reply(req, &ServerJsonRpcMessage::response(ServerResult::InitializeResult(result), id));
            if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&session_id) {
                response.headers_mut().insert(actix_web::http::header::HeaderName::from_static(SESSION_HEADER), value);
            }
            return response;
        }
        Err(e) => ServerJsonRpcMessage::error(e, Some(id)),
    };
    reply(req, &message)
}

/// Any method on an existing session.
pub(super) async fn on_session(
    endpoint: &Endpoint,
    req: &HttpRequest,
    body: Option<ClientJsonRpcMessage>,
    session_id: &str,
    identity: Option<Arc<Identity>>,
) -> HttpResponse {
    let Some(session) = endpoint.sessions.get(session_id) else {
        return error::jsonrpc_error(
            StatusCode::NOT_FOUND,
            error::INVALID_REQUEST,
            "Not Found: no such MCP session (it ended or expired); send initialize to start a new one",
        );
    };
    if session.owner.is_some() && session.owner != identity.as_ref().map(|i| i.key()) {
        return error::forbidden_session();
    }
    if let Some(version) = req.headers().get("mcp-protocol-version")
        && !ProtocolVersion::KNOWN_VERSIONS.iter().any(|known| known.as_str().as_bytes() == version.as_bytes())
    {
        return error::jsonrpc_error(
            StatusCode::BAD_REQUEST,
            error::INVALID_REQUEST,
            &format!("Bad Request: unsupported MCP-Protocol-Version {:?}", String::from_utf8_lossy(version.as_bytes())),
        );
    }
    match (req.method().as_str(), body) {
        ("POST", Some(message)) => post(endpoint, req, session_id, session, message, identity).await,
        ("GET", _) => standalone_stream(req, &endpoint.sessions, session_id, &session),
        ("DELETE", _) => {
            endpoint.sessions.close(session_id);
            HttpResponse::Ok().finish()
        }
        _ => HttpResponse::MethodNotAllowed().insert_header(("allow", "GET, POST, DELETE")).finish(),
    }
}

async fn post(
    endpoint: &Endpoint,
    req: &HttpRequest,
    session_id: &str,
    session: Arc<AgentSession>,
    message: ClientJsonRpcMessage,
    identity: Option<Arc<Identity>>,
) -> HttpResponse {
    match message {
        ClientJsonRpcMessage::Request(request) => {
            let progress_token = progress_token(&request.request);
            let ct = CancellationToken::new();
            let (reply_tx, replies) = mpsc::unbounded();
            let caller = Caller {
                agent_id: session.agent_id,
                link: AgentLink::Session { session: session.clone(), reply: Some(reply_tx.clone()), ct: ct.clone() },
                ct: ct.clone(),
                progress_token,
                identity,
            };
            let in_flight = session.begin(request.id.clone(), ct.clone());
            let gateway = endpoint.gateway.clone();
            let headers = trace_headers(req);
            let id = request.id;
            tokio::spawn(async move {
                let _in_flight = in_flight;
                let result = gateway.handle(request.request, &caller, Some(&headers)).await;
                drop(caller);
                let message = match result {
                    Ok(result) => ServerJsonRpcMessage::response(result, id),
                    Err(e) => ServerJsonRpcMessage::error(e, Some(id)),
                };
                let _ = reply_tx.unbounded_send(message);
            });
            respond(req, replies, ct, Touch(endpoint.sessions.clone(), Arc::from(session_id))).await
        }
        ClientJsonRpcMessage::Notification(notification) => {
            match notification.notification {
                ClientNotification::CancelledNotification(cancelled) => {
                    if let Some(id) = &cancelled.params.request_id {
                        session.cancel(id);
                    }
                }
                ClientNotification::InitializedNotification(_) => {
                    if let Some(identity) = &identity {
                        endpoint.gateway.warm_up(identity);
                    }
                }
                _ => {}
            }
            HttpResponse::Accepted().finish()
        }
        ClientJsonRpcMessage::Response(response) => {
            session.answer(&response.id, Ok(response.result));
            HttpResponse::Accepted().finish()
        }
        ClientJsonRpcMessage::Error(e) => {
            if let Some(id) = &e.id {
                session.answer(id, Err(e.error));
            }
            HttpResponse::Accepted().finish()
        }
    }
}

/// Refreshes a session's idle clock; false once the session is gone.
#[derive(Clone)]
struct Touch(Arc<Sessions>, Arc<str>);

impl Touch {
    fn touch(&self) -> bool {
        self.0.get(&self.1).is_some()
    }
}

/// The request's reply: JSON when the answer comes first (within `KEEP_ALIVE`), else SSE until
/// the answer, with a keep-alive comment every `KEEP_ALIVE` of silence (so proxies keep a long
/// call open, and a hung-up agent is noticed at the next write). Dropping the reply cancels the
/// request. Each event and the answer `session` touches, so a session never idles out while one
/// of its requests runs.
async fn respond(
    req: &HttpRequest,
    mut replies: mpsc::UnboundedReceiver<ServerJsonRpcMessage>,
    ct: CancellationToken,
    session: Touch,
) -> HttpResponse {
    let cancel_on_drop = ct.drop_guard();
    let first = tokio::select! {
        first = replies.next() => match first {
            Some(first) => Some(first),
            None => {
                let message = "the request ended without an answer";
                return error::jsonrpc_error(StatusCode::INTERNAL_SERVER_ERROR, -32603, message);
            }
        },
        () = tokio::time::sleep(KEEP_ALIVE) => None,
    };
    session.touch();
    if let Some(first) = first.as_ref().filter(|m| is_answer(m)) {
        cancel_on_drop.disarm();
        return reply(req, first);
    }
    let state = (first, replies, Some(cancel_on_drop), session);
    let stream = futures::stream::unfold(state, |(next, mut replies, mut guard, session)| async move {
        guard.as_ref()?;
        let event = match next {
            Some(message) => message,
            None => tokio::select! {
                message = replies.next() => message?,
                () = tokio::time::sleep(KEEP_ALIVE) => {
                    session.touch();
                    return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), (None, replies, guard, session)));
                }
            },
        };
        session.touch();
        if is_answer(&event) {
            guard.take().map(tokio_util::sync::DropGuard::disarm);
        }
        Some((Ok::<_, std::convert::Infallible>(sse_event(&event)), (None, replies, guard, session)))
    });
    sse(stream)
}

/// `GET`: the session's standalone stream (list changes, resource updates), until the agent
/// closes it or the session ends.
fn standalone_stream(req: &HttpRequest, sessions: &Arc<Sessions>, id: &str, session: &AgentSession) -> HttpResponse {
    if !accepts(req, "text/event-stream") {
        return error::jsonrpc_error(
            StatusCode::NOT_ACCEPTABLE,
            error::INVALID_REQUEST,
            "Not Acceptable: the standalone stream needs Accept: text/event-stream",
        );
    }
    let messages = session.open_standalone();
    let state = (messages, Touch(sessions.clone(), Arc::from(id)));
    let stream = futures::stream::unfold(state, |(mut messages, session)| async move {
        let event = tokio::select! {
            message = messages.next() => sse_event(&message?),
            () = tokio::time::sleep(KEEP_ALIVE) => {
                // Also keeps the session from idling out while the agent listens.
                session.touch().then_some(())?;
                Bytes::from_static(b": keep-alive\n\n")
            }
        };
        Some((Ok::<_, std::convert::Infallible>(event), (messages, session)))
    });
    sse(stream)
}

fn is_answer(message: &ServerJsonRpcMessage) -> bool {
    matches!(message, ServerJsonRpcMessage::Response(_) | ServerJsonRpcMessage::Error(_))
}

/// One message as the whole reply: JSON if the agent accepts it, else a one-event SSE stream.
fn reply(req: &HttpRequest, message: &ServerJsonRpcMessage) -> HttpResponse {
    if accepts(req, "application/json") || !accepts(req, "text/event-stream") {
        let body = serde_json::to_vec(message).unwrap_or_default();
        return HttpResponse::Ok().content_type("application/json").body(body);
    }
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .body(sse_event(message))
}

fn sse<S>(stream: S) -> HttpResponse
where
    S: futures::Stream<Item = Result<Bytes, std::convert::Infallible>> + 'static,
{
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream)
}

fn sse_event(message: &ServerJsonRpcMessage) -> Bytes {
    let mut event = b"event: message\ndata: ".to_vec();
    if serde_json::to_writer(&mut event, message).is_err() {
        return Bytes::from_static(b": unserializable message dropped\n\n");
    }
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

/// Whether the `Accept` header admits `media` (a missing header or `*/*` admits everything).
pub(super) fn accepts(req: &HttpRequest, media: &str) -> bool {
    let Some(accept) = req.headers().get(actix_web::http::header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let (kind, _) = media.split_once('/').unwrap_or((media, ""));
    accept.split(',').any(|range| {
        let mut parts = range.split(';');
        let range = parts.next().unwrap_or_default().trim();
        let refused = parts.any(|p| p.trim().strip_prefix("q=").is_some_and(|q| q.trim().parse() == Ok(0.0)));
        !refused && (range.eq_ignore_ascii_case(media) || range == "*/*" || range == format!("{kind}/*"))
    })
}

/// The agent's progress token, from `_meta` wherever this request carries it.
fn progress_token(request: &ClientRequest) -> Option<ProgressToken> {
    request.get_meta().get_progress_token().or_else(|| match request {
        ClientRequest::CallToolRequest(r) => r.params.meta.as_ref()?.get_progress_token(),
        _ => None,
    })
}

/// The W3C trace context headers of the HTTP request, for the request's span.
fn trace_headers(req: &HttpRequest) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    for name in ["traceparent", "tracestate"] {
        if let Some(value) = req.headers().get(name).and_then(|v| http::HeaderValue::from_bytes(v.as_bytes()).ok()) {
            headers.insert(name, value);
        }
    }
    headers
}

/// Reads a POST body as one JSON-RPC message, or the JSON-RPC error reply for it.
pub(super) fn decode(req: &HttpRequest, body: &web::Bytes) -> Result<ClientJsonRpcMessage, Box<HttpResponse>> {
    let content_type =
        req.headers().get(actix_web::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !content_type.trim_start().to_ascii_lowercase().starts_with("application/json") {
        return Err(Box::new(error::undecodable_body(
            body,
            "Unsupported Media Type: POST bodies must be application/json",
        )));
    }
    serde_json::from_slice(body).map_err(|e| Box::new(error::undecodable_body(body, &e.to_string())))
}
