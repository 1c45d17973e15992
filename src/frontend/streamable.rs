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
use rmcp::model::{
    ClientJsonRpcMessage, ClientNotification, ClientRequest, GetMeta as _, ProgressToken, ProtocolVersion, RequestId,
    ServerJsonRpcMessage, ServerResult,
};
use rmcp::{ErrorData, ServerHandler as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::error;
use crate::auth::Identity;
use crate::backend::UpstreamResult;
use crate::caller::{self, Caller, Outgoing, ReplyPath};
use crate::mcp::GatewayServer;
use crate::mcp::session_ids::Relayed;
use crate::mcp::sessions::{AgentSession, Sessions};

const SESSION_HEADER: &str = "mcp-session-id";
/// A comment line on an idle standalone stream, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What the session routes need.
pub(super) struct SessionRoutes {
    pub gateway: GatewayServer,
    pub sessions: Arc<Sessions>,
}

/// `initialize`: negotiates the version and opens a session owned by `owner`.
pub(super) async fn initialize(
    endpoint: &SessionRoutes,
    req: &HttpRequest,
    id: rmcp::model::RequestId,
    params: &rmcp::model::InitializeRequestParams,
    owner: Option<String>,
) -> HttpResponse {
    let result = match endpoint.gateway.negotiate_initialize(params) {
        Ok(result) => result,
        Err(e) => return reply(req, answer_message(id, Err(e))),
    };
    let (session_id, _) = match endpoint.sessions.open(owner) {
        Ok(opened) => opened,
        Err(refused) => return error::sessions_refused(&refused),
    };
    endpoint.sessions.announce(&session_id).await;
    let mut response =
        reply(req, answer_message(id, Ok(UpstreamResult::Result(ServerResult::InitializeResult(result)))));
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&session_id) {
        response.headers_mut().insert(actix_web::http::header::HeaderName::from_static(SESSION_HEADER), value);
    }
    response
}

/// A request without a session that does not carry the 2026-07-28 revision (the
/// `MCP-Protocol-Version` header, or `_meta` for a request): 400, the rule of the revisions with
/// sessions, instead of serving it without one. `initialize` never gets here.
pub(super) fn needs_session(req: &HttpRequest, message: Option<&ClientJsonRpcMessage>) -> Option<HttpResponse> {
    let stateless = ProtocolVersion::V_2026_07_28.as_str();
    let in_header = req
        .headers()
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|version| version >= stateless);
    let in_meta = match message {
        Some(ClientJsonRpcMessage::Request(request)) => {
            request.request.get_meta().protocol_version().is_some_and(|version| version.as_str() >= stateless)
        }
        _ => false,
    };
    (!in_header && !in_meta).then(|| {
        error::jsonrpc_error(
            StatusCode::BAD_REQUEST,
            error::INVALID_REQUEST,
            "Bad Request: Mcp-Session-Id header is required; send initialize to start a session (or use protocol 2026-07-28, which has none)",
        )
    })
}

/// Any method on an existing session.
pub(super) async fn on_session(
    endpoint: &SessionRoutes,
    req: &HttpRequest,
    body: Option<ClientJsonRpcMessage>,
    session_id: &str,
    identity: Option<Arc<Identity>>,
) -> HttpResponse {
    let Some(session) = endpoint.sessions.find(session_id).await else {
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
            endpoint.sessions.end(session_id).await;
            HttpResponse::Ok().finish()
        }
        _ => HttpResponse::MethodNotAllowed().insert_header(("allow", "GET, POST, DELETE")).finish(),
    }
}

async fn post(
    endpoint: &SessionRoutes,
    req: &HttpRequest,
    session_id: &str,
    session: Arc<AgentSession>,
    message: ClientJsonRpcMessage,
    identity: Option<Arc<Identity>>,
) -> HttpResponse {
    match message {
        ClientJsonRpcMessage::Request(request) => {
            // The subscription may be held by the replica the agent subscribed through.
            if let ClientRequest::UnsubscribeRequest(unsubscribe) = &request.request {
                let uri = unsubscribe.params.uri.clone();
                endpoint.sessions.relay(session_id, Relayed::Unsubscribe { uri }).await;
            }
            // The level applies wherever the session's calls run.
            if let ClientRequest::SetLevelRequest(set_level) = &request.request {
                #[allow(deprecated, reason = "logging is deprecated by SEP-2577, but 2025 agents set levels")]
                let level = set_level.params.level;
                session.set_log_level(level);
                endpoint.sessions.relay(session_id, Relayed::LogLevel { level }).await;
            }
            let progress_token = progress_token(&request.request);
            let ct = CancellationToken::new();
            let (reply_tx, replies) = mpsc::channel(caller::REPLY_QUEUE);
            // An agent that takes no SSE gets one JSON answer: what would go before it on the reply
            // (progress, logs) goes to its standalone stream, and questions to it fail at once.
            let takes_sse = accepts(req, "text/event-stream");
            let reply = takes_sse.then(|| reply_tx.clone());
            let caller = Caller {
                agent_id: session.agent_id,
                reply_path: ReplyPath::Session { session: session.clone(), reply, ct: ct.clone() },
                ct: ct.clone(),
                progress_token,
                identity,
                loopback: req.peer_addr().is_some_and(|addr| addr.ip().to_canonical().is_loopback()),
            };
            let in_flight = session.begin(request.id.clone(), ct.clone());
            let gateway = endpoint.gateway.clone();
            let headers = trace_headers(req);
            let id = request.id;
            let answered = ct.clone();
            tokio::spawn(async move {
                let _in_flight = in_flight;
                let answer = gateway.handle(request.request, &caller, Some(&headers)).await;
                drop(caller);
                let _ = caller::push(&reply_tx, &answered, answer_message(id, answer));
            });
            respond(req, takes_sse, replies, ct, IdleClock(endpoint.sessions.clone(), Arc::from(session_id))).await
        }
        ClientJsonRpcMessage::Notification(notification) => {
            match notification.notification {
                ClientNotification::CancelledNotification(cancelled) => {
                    if let Some(id) = cancelled.params.request_id
                        && !session.cancel(&id)
                    {
                        endpoint.sessions.relay(session_id, Relayed::Cancel { id }).await;
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
            let (id, reply) = (response.id, Ok(response.result));
            if let Err(reply) = session.deliver_reply(&id, reply) {
                endpoint.sessions.relay(session_id, Relayed::Reply { id, reply }).await;
            }
            HttpResponse::Accepted().finish()
        }
        ClientJsonRpcMessage::Error(e) => {
            if let Some(id) = e.id
                && let Err(reply) = session.deliver_reply(&id, Err(e.error))
            {
                endpoint.sessions.relay(session_id, Relayed::Reply { id, reply }).await;
            }
            HttpResponse::Accepted().finish()
        }
    }
}

/// Refreshes a session's idle clock; false once the session is gone.
#[derive(Clone)]
struct IdleClock(Arc<Sessions>, Arc<str>);

impl IdleClock {
    fn touch(&self) -> bool {
        self.0.get(&self.1).is_some()
    }
}

/// The request's reply: JSON when the answer comes first (within `KEEP_ALIVE`, or whenever it
/// comes for an agent that does not accept SSE), else SSE until the answer, with a keep-alive
/// comment every `KEEP_ALIVE` of silence (so proxies keep a long call open, and a hung-up agent is
/// noticed at the next write). Dropping the reply cancels the
/// request. Each event and the answer `session` touches, so a session never idles out while one
/// of its requests runs.
async fn respond(
    req: &HttpRequest,
    takes_sse: bool,
    mut replies: mpsc::Receiver<Outgoing>,
    ct: CancellationToken,
    session: IdleClock,
) -> HttpResponse {
    let cancel_on_drop = ct.drop_guard();
    // An agent that takes no SSE gets nothing but its answer on the reply (`post` gave its link
    // no reply stream), so it waits for that however long the call runs.
    let first = loop {
        tokio::select! {
            first = replies.recv() => match first {
                Some(first) => break Some(first),
                None => {
                    let message = "the request ended without an answer";
                    return error::jsonrpc_error(StatusCode::INTERNAL_SERVER_ERROR, -32603, message);
                }
            },
            () = tokio::time::sleep(KEEP_ALIVE) => {
                if takes_sse {
                    break None;
                }
                session.touch();
            }
        }
    };
    session.touch();
    let first = match first {
        Some(answer) if answer.is_answer => {
            cancel_on_drop.disarm();
            return reply(req, answer);
        }
        other => other,
    };
    let state = (first, replies, Some(cancel_on_drop), session);
    let stream = futures::stream::unfold(state, |(next, mut replies, mut guard, session)| async move {
        guard.as_ref()?;
        let event = match next {
            Some(message) => message,
            None => tokio::select! {
                message = replies.recv() => message?,
                () = tokio::time::sleep(KEEP_ALIVE) => {
                    session.touch();
                    return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), (None, replies, guard, session)));
                }
            },
        };
        session.touch();
        if event.is_answer {
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
    let messages = if sessions.is_stopping() {
        // Muster is stopping: a stream that ends at once, so the agent listens elsewhere.
        tokio::sync::mpsc::channel(1).1
    } else {
        let messages = session.open_standalone();
        sessions.announce_listening(id);
        messages
    };
    let state = (messages, IdleClock(sessions.clone(), Arc::from(id)));
    let stream = futures::stream::unfold(state, |(mut messages, session)| async move {
        let event = tokio::select! {
            message = messages.recv() => match Outgoing::message(&message?) {
                Some(message) => sse_event(&message),
                None => Bytes::from_static(b": unencodable message dropped\n\n"),
            },
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

/// The answer to request `id`, as the reply stream's last message. A raw tool result goes out
/// as the upstream encoded it.
fn answer_message(id: RequestId, answer: Result<UpstreamResult, ErrorData>) -> Outgoing {
    #[derive(serde::Serialize)]
    struct RawResponse<'a> {
        jsonrpc: &'static str,
        id: &'a RequestId,
        result: &'a serde_json::value::RawValue,
    }
    let message = match answer {
        Ok(UpstreamResult::ToolResult(raw)) => {
            let response = RawResponse { jsonrpc: "2.0", id: &id, result: raw.json() };
            if let Ok(json) = serde_json::to_vec(&response) {
                return Outgoing { json: Bytes::from(json), is_answer: true };
            }
            let e = ErrorData::internal_error("the tool result could not be encoded", None);
            ServerJsonRpcMessage::error(e, Some(id))
        }
        Ok(UpstreamResult::Result(result)) => ServerJsonRpcMessage::response(result, id),
        Err(e) => ServerJsonRpcMessage::error(e, Some(id)),
    };
    Outgoing::message(&message).unwrap_or_else(|| Outgoing {
        json: Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"muster could not encode the answer"}}"#,
        ),
        is_answer: true,
    })
}

/// One message as the whole reply: JSON if the agent accepts it, else a one-event SSE stream.
fn reply(req: &HttpRequest, message: Outgoing) -> HttpResponse {
    if accepts(req, "application/json") || !accepts(req, "text/event-stream") {
        return HttpResponse::Ok().content_type("application/json").body(message.json);
    }
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .body(sse_event(&message))
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

/// One SSE event. A raw tool result may be pretty-printed; its line breaks (whitespace, since
/// JSON strings cannot hold them unescaped) become `data:` lines, which the agent joins again.
fn sse_event(message: &Outgoing) -> Bytes {
    const DATA: &[u8] = b"data: ";
    let mut event = Vec::with_capacity(DATA.len() + message.json.len() + 18);
    event.extend_from_slice(b"event: message\n");
    for line in message.json.split(|&b| b == b'\n') {
        event.extend_from_slice(DATA);
        event.extend(line.iter().filter(|&&b| b != b'\r'));
        event.push(b'\n');
    }
    event.push(b'\n');
    Bytes::from(event)
}

/// Whether the `Accept` headers admit `media` (none, or `*/*`, admits everything).
pub(super) fn accepts(req: &HttpRequest, media: &str) -> bool {
    let mut accept = req.headers().get_all(actix_web::http::header::ACCEPT).filter_map(|v| v.to_str().ok()).peekable();
    if accept.peek().is_none() {
        return true;
    }
    let (kind, _) = media.split_once('/').unwrap_or((media, ""));
    accept.flat_map(|header| header.split(',')).any(|range| {
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
    decode_message(body).map_err(|e| Box::new(error::undecodable_body(body, &e.to_string())))
}

/// `tools/call`, most of what agents send, is decoded as what it is. rmcp's
/// `ClientJsonRpcMessage` is an untagged enum that buffers the message and tries each message
/// and request shape in turn; anything else (and a `tools/call` that does not decode this way,
/// for its precise error) still goes through it.
fn decode_message(body: &[u8]) -> Result<ClientJsonRpcMessage, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Method<'a> {
        #[serde(borrow)]
        method: Option<std::borrow::Cow<'a, str>>,
        // A request carries neither; rmcp refuses a message that mixes them.
        result: Option<serde::de::IgnoredAny>,
        error: Option<serde::de::IgnoredAny>,
    }
    let is_tool_call = serde_json::from_slice::<Method<'_>>(body)
        .is_ok_and(|m| m.method.as_deref() == Some("tools/call") && m.result.is_none() && m.error.is_none());
    if is_tool_call
        && let Ok(call) = serde_json::from_slice::<rmcp::model::JsonRpcRequest<rmcp::model::CallToolRequest>>(body)
    {
        let rmcp::model::JsonRpcRequest { jsonrpc, id, request } = call;
        let request = ClientRequest::CallToolRequest(request);
        return Ok(ClientJsonRpcMessage::Request(rmcp::model::JsonRpcRequest { jsonrpc, id, request }));
    }
    serde_json::from_slice(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_call_decodes_as_rmcp_would_decode_it() {
        let body = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call",
            "params":{"name":"x_k8s_pods_list","arguments":{"management_cluster":"a","n":[1]},"_meta":{"progressToken":"p"}}}"#;
        let narrow = decode_message(body).expect("decodes");
        let full: ClientJsonRpcMessage = serde_json::from_slice(body).expect("rmcp decodes it");
        assert_eq!(serde_json::to_value(&narrow).expect("encodes"), serde_json::to_value(&full).expect("encodes"));
        let ClientJsonRpcMessage::Request(request) = narrow else { panic!("a request") };
        assert!(progress_token(&request.request).is_some(), "the progress token survives");
        // A tool call without a name gets what rmcp makes of it.
        let bad = br#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{}}"#;
        let full: ClientJsonRpcMessage = serde_json::from_slice(bad).expect("rmcp decodes it");
        let narrow = decode_message(bad).expect("decodes as rmcp does");
        assert_eq!(serde_json::to_value(&narrow).expect("encodes"), serde_json::to_value(&full).expect("encodes"));
        // Everything else takes rmcp's path.
        let list = br#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#;
        assert!(matches!(
            decode_message(list),
            Ok(ClientJsonRpcMessage::Request(r)) if matches!(r.request, ClientRequest::ListToolsRequest(_))
        ));
    }

    #[test]
    fn a_pretty_printed_result_stays_one_sse_event() {
        let json = "{\r\n  \"content\": [],\n  \"isError\": false\n}";
        let event = sse_event(&Outgoing { json: Bytes::from(json), is_answer: true });
        let text = std::str::from_utf8(&event).expect("utf-8");
        assert!(text.starts_with("event: message\ndata: {\n") && text.ends_with("\n\n"), "{text:?}");
        let data: String = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect::<Vec<_>>().join("\n");
        let value: serde_json::Value = serde_json::from_str(&data).expect("the agent reads the JSON back");
        assert_eq!(value["isError"], false);
        assert_eq!(text.matches("\n\n").count(), 1, "one event: {text:?}");
    }
}
