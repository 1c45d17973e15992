//! The bridge's side towards muster: a raw streamable-HTTP client (MCP 2025-03-26 and later) that
//! POSTs each message as it came and hands every message muster sends back, untouched, to the
//! agent: a JSON reply, each event of an SSE reply, and each event of the session's standalone
//! GET stream (`list_changed`, server-to-client requests outside a call). It keeps the
//! `Mcp-Session-Id` and `MCP-Protocol-Version` of the session, and reads the bearer for every
//! request from a `watch`, so a refreshed token needs no new session.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Why a message did not reach muster (or muster would not take it).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error("muster refused the sign-in (401)")]
    Unauthorized,
    #[error("muster no longer knows the session (404)")]
    SessionGone,
    #[error("{0}")]
    Other(String),
}

pub(crate) struct Upstream {
    http: reqwest::Client,
    endpoint: String,
    bearer: watch::Receiver<Option<String>>,
    session: Mutex<Option<String>>,
    version: Mutex<Option<String>>,
    out: mpsc::Sender<Value>,
    /// Ends the standalone stream when the bridge lets this session go.
    closed: CancellationToken,
    /// Cancelled when the standalone stream learns that muster forgot the session (404).
    lost: CancellationToken,
}

/// Where the messages of a reply go.
pub(crate) enum Sink<'a> {
    Agent,
    /// The bridge's own requests (its replayed `initialize`): kept, not shown to the agent.
    Collect(&'a mut Vec<Value>),
}

impl Upstream {
    pub(crate) fn new(
        http: reqwest::Client,
        endpoint: &str,
        bearer: watch::Receiver<Option<String>>,
        out: mpsc::Sender<Value>,
    ) -> Self {
        Self {
            http,
            endpoint: endpoint.to_owned(),
            bearer,
            session: Mutex::new(None),
            version: Mutex::new(None),
            out,
            closed: CancellationToken::new(),
            lost: CancellationToken::new(),
        }
    }

    fn request(&self, method: reqwest::Method) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, &self.endpoint);
        if let Some(token) = self.bearer.borrow().as_deref() {
            request = request.bearer_auth(token);
        }
        if let Some(session) = lock(&self.session).as_deref() {
            request = request.header("mcp-session-id", session);
        }
        if let Some(version) = lock(&self.version).as_deref() {
            request = request.header("mcp-protocol-version", version);
        }
        request
    }

    /// POSTs one message and passes on everything the reply carries, to its end.
    pub(crate) async fn post(&self, message: &Value, mut sink: Sink<'_>) -> Result<(), Failure> {
        let initialize = message["method"] == "initialize";
        let had_session = lock(&self.session).is_some();
        let response = self
            .request(reqwest::Method::POST)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(message.to_string())
            .send()
            .await
            .map_err(|e| Failure::Other(format!("cannot reach muster at {}: {e}", self.endpoint)))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(Failure::Unauthorized);
        }
        if status == reqwest::StatusCode::NOT_FOUND && had_session && !initialize {
            return Err(Failure::SessionGone);
        }
        if initialize && let Some(id) = response.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()) {
            *lock(&self.session) = Some(id.to_owned());
        }
        let is_sse = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if status == reqwest::StatusCode::ACCEPTED {
            return Ok(());
        }
        if is_sse {
            let mut events = sse_stream::SseStream::from_bytes_stream(response.bytes_stream());
            while let Some(event) = events.next().await {
                let event = event.map_err(|e| Failure::Other(format!("muster's reply stream broke: {e}")))?;
                if let Some(data) = event.data.filter(|d| !d.trim().is_empty()) {
                    self.pass_on(&data, initialize, &mut sink).await;
                }
            }
            return Ok(());
        }
        let body = response.text().await.map_err(|e| Failure::Other(format!("reading muster's reply: {e}")))?;
        let is_request = message.get("method").is_some() && message.get("id").is_some();
        if !status.is_success() && !is_request {
            // Nothing the agent could match a refusal of its notification or answer to.
            tracing::warn!(method = %message["method"], %status, "muster refused a message that was not a request");
            return Ok(());
        }
        if body.trim().is_empty() && status.is_success() {
            return Ok(());
        }
        match serde_json::from_str::<Value>(&body) {
            Ok(mut value) if value.get("jsonrpc").is_some() || value.is_array() => {
                // A refusal before muster read the request (400 without a session) carries no id;
                // the agent waits for its own.
                if is_request && value["id"].is_null() && value.get("error").is_some() {
                    value["id"] = message["id"].clone();
                }
                self.pass_on(&value.to_string(), initialize, &mut sink).await;
                Ok(())
            }
            _ => {
                Err(Failure::Other(format!("muster answered {status}: {}", body.chars().take(300).collect::<String>())))
            }
        }
    }

    /// Hands one JSON-RPC message (or batch) on; notes the protocol version an `initialize` agreed.
    async fn pass_on(&self, data: &str, initialize: bool, sink: &mut Sink<'_>) {
        let Ok(value) = serde_json::from_str::<Value>(data) else {
            tracing::warn!("muster sent an event that is not JSON; dropped");
            return;
        };
        let messages = match value {
            Value::Array(batch) => batch,
            one => vec![one],
        };
        for message in messages {
            if initialize && let Some(version) = message["result"]["protocolVersion"].as_str() {
                *lock(&self.version) = Some(version.to_owned());
            }
            match sink {
                Sink::Agent => {
                    let _ = self.out.send(message).await;
                }
                Sink::Collect(kept) => kept.push(message),
            }
        }
    }

    /// Opens the standalone stream (GET) and returns once muster has answered it, so what muster
    /// sends from then on is not missed; a task then passes on its events until the session ends,
    /// muster says it has none (4xx), or `close` is called. Reopened after a drop.
    pub(crate) async fn listen(self: &Arc<Self>) {
        let first = self.open_stream().await;
        let upstream = Arc::clone(self);
        tokio::spawn(async move { upstream.keep_listening(first).await });
    }

    async fn open_stream(&self) -> Option<Result<reqwest::Response, reqwest::Error>> {
        tokio::select! {
            () = self.closed.cancelled() => None,
            response = self.request(reqwest::Method::GET).header("accept", "text/event-stream").send() => Some(response),
        }
    }

    async fn keep_listening(&self, mut opened: Option<Result<reqwest::Response, reqwest::Error>>) {
        let mut backoff = Duration::from_millis(250);
        loop {
            match opened {
                None => return,
                Some(Ok(response)) if response.status().is_success() => {
                    backoff = Duration::from_millis(250);
                    let mut events = sse_stream::SseStream::from_bytes_stream(response.bytes_stream());
                    loop {
                        let event = tokio::select! {
                            () = self.closed.cancelled() => return,
                            event = events.next() => event,
                        };
                        match event {
                            Some(Ok(event)) => {
                                if let Some(data) = event.data.filter(|d| !d.trim().is_empty()) {
                                    self.pass_on(&data, false, &mut Sink::Agent).await;
                                }
                            }
                            Some(Err(_)) | None => break,
                        }
                    }
                }
                Some(Ok(response)) if response.status() == reqwest::StatusCode::NOT_FOUND => {
                    self.lost.cancel();
                    return;
                }
                Some(Ok(response)) if response.status().is_client_error() => {
                    tracing::debug!(status = %response.status(), "muster offers no standalone stream for this session");
                    return;
                }
                Some(Ok(_) | Err(_)) => {}
            }
            tokio::select! {
                () = self.closed.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
            opened = self.open_stream().await;
        }
    }

    /// Resolves when the standalone stream finds the session gone (muster restarted, or it timed
    /// out), so the bridge can open a new one before the agent's next message.
    pub(crate) fn lost(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.lost.clone().cancelled_owned()
    }

    /// Ends the standalone stream and, best effort, the session at muster (DELETE).
    pub(crate) async fn close(&self) {
        self.closed.cancel();
        if lock(&self.session).is_some() {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.request(reqwest::Method::DELETE).send()).await;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
