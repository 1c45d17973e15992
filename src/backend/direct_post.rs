//! `DirectPost`: the call path for streamable-HTTP upstreams. The calling task POSTs the request
//! on the session rmcp opened and reads the reply from that POST's own response, skipping rmcp's
//! service loop and HTTP worker (the cost measured: loadtests/README.md, "Design figures"). rmcp
//! still opens and reconnects the session; `UpstreamClient` tells `DirectPost` its id and headers.
//!
//! An upstream spoken to in 2026-07-28 has no session: each request carries the revision, client
//! info and capabilities in its `_meta` (learned from the first request rmcp sends that has them)
//! and the `Mcp-Method` and `Mcp-Name` headers (SEP-2243, `standard_headers`), and the agent's log
//! level (`io.modelcontextprotocol/logLevel`) if it has one. Its cancellation is
//! the closed connection (there is no session to send `notifications/cancelled` on).
//!
//! Calls go out on one `ThreadLane` per worker thread, each with its own connection pool, so a
//! call's connection is served by the thread that makes it. The session's 6 permits are shared
//! out among the lanes; a call whose lane has none free waits `BORROW_AFTER`, then takes any
//! lane's permit. No lane has more connections busy than it holds permits, nor keeps more idle.
//!
//! What the upstream sends on a call's reply stream belongs to that call and goes to its caller:
//! progress (under the agent's own token), log messages, and sampling, elicitation and roots
//! requests, whose replies are POSTed back. A 404 (the upstream forgot the session) is a lost
//! connection: the caller reconnects through the actor and retries once.

#![allow(deprecated, reason = "sampling, roots and logging are deprecated by SEP-2577 but still in use")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, RwLock};

use futures::StreamExt as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use rmcp::model::{
    ClientJsonRpcMessage, ClientNotification, ClientRequest, ClientResult, GetMeta as _, JsonRpcRequest, ProgressToken,
    RequestId, ServerJsonRpcMessage, ServerNotification, ServerRequest,
};

use super::Error;
use super::upstream_result::{RawToolResult, UpstreamResult};
use crate::caller::{Caller, QUESTIONS};

const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");

/// One upstream session, as the direct path uses it.
pub(super) struct DirectPost {
    lanes: Box<[ThreadLane]>,
    /// ThreadLane 0's client, built at once so that a bad configuration fails the connect.
    first: reqwest::Client,
    timeout: std::time::Duration,
    /// The largest answer (or other message) a call's reply may carry.
    max_result_bytes: usize,
    url: reqwest::Url,
    /// The session id and the headers rmcp sends with it; `None` until the handshake is done.
    learned: RwLock<Option<Arc<Learned>>>,
    next_id: AtomicU64,
}

/// The calls one worker thread makes on a session: their connection pool, and their share of
/// the session's calls on the wire.
struct ThreadLane {
    /// Built on first use (a client loads the TLS roots, and a session used by one thread needs
    /// one), except lane 0's (`DirectPost::first`).
    http: std::sync::OnceLock<reqwest::Client>,
    /// Its share of the session's permits, and so the idle connections its pool keeps.
    permit_count: usize,
    /// HTTP/1.1 carries one request per connection at a time, and a reply's connection is free
    /// only once the reply has been read to its end. So the lanes together have at most
    /// `MAX_CONCURRENT_REQUESTS` calls of this session on the wire; the rest wait here. The
    /// session's connections stay bounded and are reused, not reopened.
    permits: Arc<tokio::sync::Semaphore>,
}

/// How long a call waits for a permit of its own thread's lane before it takes another lane's.
const BORROW_AFTER: std::time::Duration = std::time::Duration::from_millis(5);

/// Lanes per session: one per worker thread (actix starts one per core), and no more than there
/// are calls on the wire, so each lane has at least one permit. Threads beyond that share lanes.
static LANES: LazyLock<usize> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    cores.clamp(1, super::http::MAX_CONCURRENT_REQUESTS)
});

/// This thread's lane number: threads are numbered as they first call, so the worker threads
/// (the only ones that make calls) get lanes of their own.
fn this_thread_lane() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static LANE: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    LANE.with(|lane| *lane)
}

struct Learned {
    /// The session id; `None` for a 2026-07-28 upstream.
    session: Option<Arc<str>>,
    headers: HeaderMap,
    /// A 2026-07-28 upstream's per-request `_meta` (revision, client info, capabilities).
    sessionless: Option<rmcp::model::JsonObject>,
}

/// The `_meta` keys every 2026-07-28 request carries (SEP-2575).
const PER_REQUEST_META: [&str; 3] = [
    "io.modelcontextprotocol/protocolVersion",
    "io.modelcontextprotocol/clientInfo",
    "io.modelcontextprotocol/clientCapabilities",
];

impl DirectPost {
    /// Its lanes' clients come from `connect::http_client` with the server's `timeout`.
    pub(super) fn new(
        url: &str,
        timeout: std::time::Duration,
        max_result_bytes: usize,
    ) -> Result<Option<Self>, reqwest::Error> {
        let Ok(url) = reqwest::Url::parse(url) else { return Ok(None) };
        let (total, count) = (super::http::MAX_CONCURRENT_REQUESTS, *LANES);
        let lanes: Box<[ThreadLane]> = (0..count)
            .map(|i| {
                // The permits shared out: the first `total % count` lanes get one more.
                let permit_count = total / count + usize::from(i < total % count);
                let permits = Arc::new(tokio::sync::Semaphore::new(permit_count));
                ThreadLane { http: std::sync::OnceLock::new(), permit_count, permits }
            })
            .collect();
        let first = super::http::http_client(timeout, lanes[0].permit_count)?;
        let _ = lanes[0].http.set(first.clone());
        Ok(Some(Self {
            lanes,
            first,
            timeout,
            max_result_bytes,
            url,
            learned: RwLock::default(),
            next_id: AtomicU64::new(1),
        }))
    }

    /// A permit to put a call on the wire, and the lane it belongs to: this thread's lane if it
    /// has one free within `BORROW_AFTER`, else any lane with one free, else whichever frees one
    /// first. `None` only if a semaphore were closed (none is).
    async fn acquire(&self) -> (&ThreadLane, Option<tokio::sync::OwnedSemaphorePermit>) {
        let count = self.lanes.len();
        let home = this_thread_lane() % count;
        let own = &self.lanes[home];
        if let Ok(permit) = own.permits.clone().try_acquire_owned() {
            return (own, Some(permit));
        }
        if let Ok(permit) = tokio::time::timeout(BORROW_AFTER, own.permits.clone().acquire_owned()).await {
            return (own, permit.ok());
        }
        let order = (0..count).map(|i| (home + i) % count);
        for i in order.clone() {
            if let Ok(permit) = self.lanes[i].permits.clone().try_acquire_owned() {
                return (&self.lanes[i], Some(permit));
            }
        }
        let waits =
            order.map(|i| Box::pin(async move { (i, self.lanes[i].permits.clone().acquire_owned().await.ok()) }));
        let ((i, permit), _, _) = futures::future::select_all(waits).await;
        (&self.lanes[i], permit)
    }

    fn client(&self, lane: &ThreadLane) -> reqwest::Client {
        // The same configuration built lane 0's client, so this does not fail; if it did, lane 0's
        // pool would serve.
        let built = lane.http.get_or_init(|| {
            super::http::http_client(self.timeout, lane.permit_count).unwrap_or_else(|_| self.first.clone())
        });
        built.clone()
    }

    /// What rmcp sends on this session (from `UpstreamClient`), or, without a session, what it
    /// sends with `message` to a 2026-07-28 upstream. Cheap when nothing changed.
    pub(super) fn learn(
        &self,
        session: Option<&Arc<str>>,
        custom_headers: &HashMap<HeaderName, HeaderValue>,
        auth_header: Option<&str>,
        message: &ClientJsonRpcMessage,
    ) {
        let known = self.learned.read().ok().and_then(|l| {
            l.as_ref().map(|l| match (&l.session, session) {
                (Some(known), Some(session)) => Arc::ptr_eq(known, session),
                (None, None) => l.sessionless.is_some(),
                _ => false,
            })
        });
        if known == Some(true) {
            return;
        }
        let sessionless = match session {
            Some(_) => None,
            None => {
                // By `HeaderName`: a `&str` key hashes differently and is never found.
                let modern = custom_headers
                    .get(&HeaderName::from_static("mcp-protocol-version"))
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v >= rmcp::model::ProtocolVersion::V_2026_07_28.as_str());
                let ClientJsonRpcMessage::Request(request) = message else { return };
                let meta = &request.request.get_meta().0.0;
                let learned: rmcp::model::JsonObject = PER_REQUEST_META
                    .iter()
                    .filter_map(|key| meta.get(*key).map(|value| ((*key).to_owned(), value.clone())))
                    .collect();
                // Not yet a request that shows it all (or a 2025 server without sessions, which
                // rmcp's transport keeps).
                if !modern || learned.len() < PER_REQUEST_META.len() {
                    return;
                }
                Some(learned)
            }
        };
        // Per-message headers (SEP-2243 `Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`) are not the
        // session's.
        let mut headers: HeaderMap = custom_headers
            .iter()
            .filter(|(k, _)| !k.as_str().starts_with("mcp-") || k.as_str() == "mcp-protocol-version")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(token) = auth_header
            && let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            value.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, value);
        }
        headers.insert(http::header::ACCEPT, HeaderValue::from_static("application/json, text/event-stream"));
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(value) = session.and_then(|session| HeaderValue::from_str(session).ok()) {
            headers.insert(SESSION_HEADER, value);
        }
        if let Ok(mut learned) = self.learned.write() {
            *learned = Some(Arc::new(Learned { session: session.cloned(), headers, sessionless }));
        }
    }

    fn learned(&self) -> Option<Arc<Learned>> {
        self.learned.read().ok()?.clone()
    }

    /// Whether the session is known, so `call` can be used: its id, or, for a session that
    /// negotiated 2026-07-28 (`sessionless`), the per-request `_meta`. A 2025 server without
    /// sessions is not (its `server/discover` taught a 2026 `_meta` that it then refused).
    pub(super) fn ready(&self, sessionless: bool) -> bool {
        self.learned.read().is_ok_and(|l| {
            l.as_ref().is_some_and(|l| if sessionless { l.sessionless.is_some() } else { l.session.is_some() })
        })
    }

    fn post(&self, lane: &ThreadLane, learned: &Learned, message: &ClientJsonRpcMessage) -> reqwest::RequestBuilder {
        let mut headers = learned.headers.clone();
        headers.extend(super::http::traceparent_header(message));
        if learned.sessionless.is_some()
            && let ClientJsonRpcMessage::Request(request) = message
        {
            headers.extend(super::http::standard_headers(&request.request));
        }
        let body = serde_json::to_vec(message).unwrap_or_default();
        self.client(lane).post(self.url.clone()).headers(headers).body(body)
    }

    /// A request id of its own, so it never meets the ids rmcp uses on the same session.
    pub(super) fn next_id(&self) -> RequestId {
        RequestId::String(format!("muster-{}", self.next_id.fetch_add(1, Ordering::Relaxed)).into())
    }

    /// Sends `request` as `id` and waits for its answer, relaying to `caller` what comes before it.
    /// The call's permit to be on the wire is held until the reply has been read to its end, so
    /// the next call finds the connection back in the pool.
    ///
    /// Only a lost session (404) or a failed send is `Error::Upstream`, after which the caller
    /// reconnects and retries; an HTTP error status or a broken reply is a plain failure, since
    /// the upstream may have run the call.
    pub(super) async fn call(
        &self,
        server: &str,
        id: RequestId,
        mut request: ClientRequest,
        caller: &Caller,
    ) -> Result<UpstreamResult, Error> {
        let upstream = |message: String| Error::Upstream { server: server.to_owned(), message };
        let failed = |message: String| Error::Protocol { server: server.to_owned(), code: -32603, message };
        let learned = self.learned().ok_or_else(|| upstream("the session is not open yet".into()))?;
        let (lane, permit) = tokio::select! {
            acquired = self.acquire() => acquired,
            // The deadline (or the agent) ended the call before it reached the upstream.
            () = caller.ct.cancelled() => return Err(Error::Busy { server: server.to_owned(), timeout: self.timeout }),
        };
        // Progress comes back on this call's own stream, so the call's id is a unique token.
        let progress = caller.progress_token.clone();
        let tool_call = matches!(request, ClientRequest::CallToolRequest(_));
        if progress.is_some() {
            request.get_meta_mut().set_progress_token(ProgressToken(id.clone()));
        }
        if let Some(meta) = &learned.sessionless {
            let request_meta = request.get_meta_mut();
            request_meta.0.0.extend(meta.iter().map(|(k, v)| (k.clone(), v.clone())));
            // A 2026-07-28 upstream logs only at a level asked for: the agent's, if it has one.
            if let Some(level) = caller.reply_path.log_level() {
                request_meta.set_log_level(level);
            }
        }
        let message = ClientJsonRpcMessage::request(request, id.clone());
        let sent = tokio::select! {
            sent = self.post(lane, &learned, &message).send() => sent,
            () = caller.ct.cancelled() => return Err(self.cancelled(lane, &learned, server, id)),
        };
        let response = sent.map_err(|e| upstream(super::failure::describe(&e)))?;
        match response.status() {
            status if status.is_success() => {}
            reqwest::StatusCode::NOT_FOUND => {
                return Err(upstream("the upstream forgot the session (HTTP 404)".into()));
            }
            reqwest::StatusCode::UNAUTHORIZED => return Err(Error::Unauthorized { server: server.to_owned() }),
            status => return Err(failed(format!("answered HTTP {}", status.as_u16()))),
        }
        let too_large = || Error::TooLarge { server: server.to_owned(), limit: self.max_result_bytes };
        if response.content_length().is_some_and(|length| length > self.max_result_bytes as u64) {
            return Err(too_large());
        }
        let is_sse = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if !is_sse {
            let body = tokio::select! {
                body = read_capped(response, self.max_result_bytes) => match body {
                    Ok(Some(body)) => body,
                    Ok(None) => return Err(too_large()),
                    Err(e) => return Err(failed(super::failure::describe(&e))),
                },
                () = caller.ct.cancelled() => return Err(self.cancelled(lane, &learned, server, id)),
            };
            drop(permit);
            let text = std::str::from_utf8(&body).map_err(|e| failed(format!("undecodable reply: {e}")))?;
            return match read(server, text, &id, tool_call).map_err(|e| failed(format!("undecodable reply: {e}")))? {
                Sorted::UpstreamResult(answer) => answer,
                Sorted::Other(_) => Err(failed("the reply answered another request".into())),
            };
        }
        // The bytes since the last whole event: one event (the answer, a log line) may not grow
        // past the limit while the parser holds it.
        let pending = Arc::new(AtomicUsize::new(0));
        let limit = self.max_result_bytes;
        let counted = {
            let pending = pending.clone();
            response.bytes_stream().map(move |chunk| {
                let chunk = chunk.map_err(std::io::Error::other)?;
                if pending.fetch_add(chunk.len(), Ordering::Relaxed) + chunk.len() > limit {
                    return Err(std::io::Error::other(TooLargeMarker));
                }
                Ok(chunk)
            })
        };
        let mut events = sse_stream::SseStream::from_byte_stream(counted);
        // Questions the upstream asked and the agent has not answered yet: the reply is read on
        // meanwhile, so questions asked at once reach the agent together (one round for a
        // sessionless agent, ADR 0012).
        let mut asking = futures::stream::FuturesUnordered::new();
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                Some(()) = asking.next(), if !asking.is_empty() => continue,
                () = caller.ct.cancelled() => return Err(self.cancelled(lane, &learned, server, id)),
            };
            let event = match event {
                Some(Ok(event)) => {
                    pending.store(0, Ordering::Relaxed);
                    event
                }
                Some(Err(e)) if pending.load(Ordering::Relaxed) > limit || is_too_large(&e) => {
                    return Err(too_large());
                }
                Some(Err(e)) => {
                    return Err(failed(format!("broke off its reply stream ({})", super::failure::describe(&e))));
                }
                None => return Err(failed("the reply stream ended without an answer".into())),
            };
            let Some(data) = event.data.filter(|d| !d.trim().is_empty()) else { continue };
            match read(server, &data, &id, tool_call).map_err(|e| failed(format!("undecodable event: {e}")))? {
                Sorted::UpstreamResult(answer) => {
                    // Read the stream's end in the background, so the connection is reused.
                    tokio::spawn(async move {
                        super::http::drain(events).await;
                        // Let hyper's connection task put the connection back before the next call.
                        tokio::task::yield_now().await;
                        drop(permit);
                    });
                    return answer;
                }
                Sorted::Other(ServerJsonRpcMessage::Request(asked)) if asking.len() < QUESTIONS => {
                    asking.push(self.answer(lane, &learned, asked, caller));
                }
                // Past `QUESTIONS` open questions one waits here; the caller's cancellation still
                // ends the call and frees its upstream request.
                Sorted::Other(message) => tokio::select! {
                    () = self.relay(lane, &learned, message, progress.as_ref(), caller) => {}
                    () = caller.ct.cancelled() => return Err(self.cancelled(lane, &learned, server, id)),
                },
            }
        }
    }

    /// Asks the agent what the upstream asked and posts its answer (or its refusal) back.
    async fn answer(
        &self,
        lane: &ThreadLane,
        learned: &Learned,
        asked: JsonRpcRequest<ServerRequest>,
        caller: &Caller,
    ) {
        let reply = match ask_agent(asked.request, caller).await {
            Ok(result) => ClientJsonRpcMessage::response(result, asked.id),
            Err(e) => ClientJsonRpcMessage::error(e, Some(asked.id)),
        };
        let _ = self.post(lane, learned, &reply).send().await;
    }

    /// What comes on a call's reply before its answer goes to the caller; requests are answered.
    async fn relay(
        &self,
        lane: &ThreadLane,
        learned: &Learned,
        message: ServerJsonRpcMessage,
        progress: Option<&ProgressToken>,
        caller: &Caller,
    ) {
        match message {
            ServerJsonRpcMessage::Notification(notification) => {
                relay_notification(notification.notification, progress, caller).await;
            }
            // More questions than a call may have open at once: refused.
            ServerJsonRpcMessage::Request(asked) => {
                let refused = rmcp::ErrorData::invalid_request("too many questions to the agent at once", None);
                let _ = self.post(lane, learned, &ClientJsonRpcMessage::error(refused, Some(asked.id))).send().await;
            }
            _ => {}
        }
    }

    /// Tells the upstream the call is cancelled (in the background) and returns the error. A
    /// 2026-07-28 upstream learns it from the closed connection.
    fn cancelled(&self, lane: &ThreadLane, learned: &Learned, server: &str, id: RequestId) -> Error {
        if learned.sessionless.is_some() {
            return Error::Cancelled { server: server.to_owned() };
        }
        let params = rmcp::model::CancelledNotificationParam::new(Some(id), Some("cancelled by the client".into()));
        let notification = rmcp::model::CancelledNotification::new(params);
        let message = ClientJsonRpcMessage::notification(ClientNotification::CancelledNotification(notification));
        let post = self.post(lane, learned, &message);
        tokio::spawn(async move {
            let _ = post.send().await;
        });
        Error::Cancelled { server: server.to_owned() }
    }
}

/// One message of a call's reply: the common answer read by `plain_tool_result`, anything else
/// decoded whole and sorted.
fn read(server: &str, text: &str, id: &RequestId, tool_call: bool) -> Result<Sorted, serde_json::Error> {
    if let Some(answer) = plain_tool_result(text, id, tool_call) {
        return Ok(Sorted::UpstreamResult(Ok(answer)));
    }
    serde_json::from_str(text).map(|message| sort_reply(server, message, id))
}

/// A message on a call's reply: the call's answer, or something else.
enum Sorted {
    UpstreamResult(Result<UpstreamResult, Error>),
    Other(ServerJsonRpcMessage),
}

/// Sorts `message` by whether it answers request `id`.
fn sort_reply(server: &str, message: ServerJsonRpcMessage, id: &RequestId) -> Sorted {
    match message {
        ServerJsonRpcMessage::Response(response) if &response.id == id => {
            Sorted::UpstreamResult(Ok(UpstreamResult::Result(response.result)))
        }
        ServerJsonRpcMessage::Error(error) if error.id.as_ref() == Some(id) => {
            Sorted::UpstreamResult(Err(Error::Protocol {
                server: server.to_owned(),
                code: error.error.code.0,
                message: error.error.message.to_string(),
            }))
        }
        other => Sorted::Other(other),
    }
}

/// The common case, read without rmcp's untagged decoding: a successful answer to request
/// `id`. A plain tool result stays raw (`upstream_result.rs`); any other result is decoded by its own
/// type. `None` for anything else (errors, notifications, requests, other ids), which the full
/// decode then reads.
fn plain_tool_result(text: &str, id: &RequestId, tool_call: bool) -> Option<UpstreamResult> {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        id: Option<RequestId>,
        method: Option<serde::de::IgnoredAny>,
        error: Option<serde::de::IgnoredAny>,
        #[serde(borrow)]
        result: Option<&'a serde_json::value::RawValue>,
    }
    let envelope: Envelope<'_> = serde_json::from_str(text).ok()?;
    if envelope.method.is_some() || envelope.error.is_some() || envelope.id.as_ref() != Some(id) {
        return None;
    }
    let result = envelope.result?;
    if tool_call && let Some(raw) = RawToolResult::from_upstream(result) {
        return Some(UpstreamResult::ToolResult(raw));
    }
    if tool_call
        && RawToolResult::says_complete(result)
        && let Ok(complete) = serde_json::from_str::<rmcp::model::CallToolResult>(result.get())
    {
        return Some(UpstreamResult::Result(rmcp::model::ServerResult::CallToolResult(complete)));
    }
    serde_json::from_str(result.get()).ok().map(UpstreamResult::Result)
}

async fn relay_notification(notification: ServerNotification, progress: Option<&ProgressToken>, caller: &Caller) {
    match notification {
        ServerNotification::ProgressNotification(mut progress_notification) => {
            if let Some(agent_token) = progress {
                progress_notification.params.progress_token = agent_token.clone();
                caller.reply_path.notify(ServerNotification::ProgressNotification(progress_notification)).await;
            }
        }
        notification @ ServerNotification::LoggingMessageNotification(_) => {
            caller.reply_path.notify(notification).await
        }
        // List changes and resource updates come on the session's GET stream, which rmcp reads.
        _ => {}
    }
}

async fn ask_agent(request: ServerRequest, caller: &Caller) -> Result<ClientResult, rmcp::ErrorData> {
    match request {
        ServerRequest::PingRequest(_) => Ok(ClientResult::empty(())),
        other => caller.reply_path.request(other).await,
    }
}

/// Reads a JSON reply's body, or `None` once it grows past `limit`.
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut body = Vec::with_capacity(response.content_length().map_or(0, |l| l as usize).min(limit));
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// What the counting stream of an SSE reply fails with past the limit.
#[derive(Debug)]
struct TooLargeMarker;

impl std::fmt::Display for TooLargeMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the reply grew past the result size limit")
    }
}

impl std::error::Error for TooLargeMarker {}

fn is_too_large(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<TooLargeMarker>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_borrows_a_free_permit_from_another_lane_and_the_session_keeps_six() {
        let direct = DirectPost::new("http://127.0.0.1:9/mcp", std::time::Duration::from_secs(1), 1 << 20)
            .expect("a client")
            .expect("a valid URL");
        // One thread makes every call: its own lane's permits, then the other lanes'.
        let mut held = Vec::new();
        for _ in 0..super::super::http::MAX_CONCURRENT_REQUESTS {
            let acquired = tokio::time::timeout(std::time::Duration::from_secs(5), direct.acquire()).await;
            let (_, permit) = acquired.expect("a free permit is never waited for");
            held.push(permit.expect("open semaphore"));
        }
        let free: usize = direct.lanes.iter().map(|lane| lane.permits.available_permits()).sum();
        assert_eq!(free, 0, "six calls on the wire hold every permit of the session");
        let mut seventh = std::pin::pin!(direct.acquire());
        assert!(futures::poll!(seventh.as_mut()).is_pending(), "a seventh call waits");
        held.pop();
        let freed = tokio::time::timeout(std::time::Duration::from_secs(5), seventh).await;
        assert!(freed.is_ok_and(|(_, permit)| permit.is_some()), "the freed permit goes to the waiting call");
    }
}
