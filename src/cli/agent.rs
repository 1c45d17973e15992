//! `muster agent --mcp-server`: a stdio MCP server for IDEs that launch a command (Cursor, VS
//! Code, Claude Desktop), forwarding every message to muster's `/mcp` over streamable HTTP, and
//! signing the user in itself when muster requires it.
//!
//! **A message pump, not two rmcp services.** Each JSON-RPC line from stdin is POSTed as it came
//! (`agent/upstream.rs`), and every message muster sends (replies, SSE events, the standalone
//! stream's `list_changed`, sampling and elicitation requests) is written to stdout as it came;
//! the agent's answers to those requests go back the same way. Two rmcp services (a client to
//! muster, a server on stdio) would each negotiate their own `initialize`, re-encode every
//! message through rmcp's types (dropping what they do not model), and need a handler per
//! server-to-client request kind; the pump is shorter and forwards what it does not know. It also
//! reads the bearer per request, so a refreshed token keeps the session.
//!
//! While muster wants a sign-in the bridge has no token for, it answers the agent itself: its
//! `initialize` (muster's capabilities, kept for later), and `tools/list` with one tool,
//! `authenticate_muster`, which starts the login (`cli/login.rs`: PKCE, loopback callback) and
//! returns the URL. When the callback brings a token, the bridge stores it, replays the agent's
//! `initialize` to muster, and sends `notifications/tools/list_changed` (and resources, prompts).
//! Tokens are refreshed before they expire; a 401 (refresh failed, token revoked) falls back to the
//! signed-out tools. When muster forgets the session (a restart, the idle timeout), the bridge
//! opens a new one and sends the three `list_changed` again: what changed in between was
//! announced to the session that is gone. Only JSON-RPC goes to stdout; logs go to stderr.

mod upstream;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::login;
use super::tokens::{self, StoredToken};
use upstream::{Failure, Sink, Upstream};

/// The one tool offered while signed out.
pub(crate) const AUTHENTICATE_TOOL: &str = "authenticate_muster";
/// Protocol revisions the bridge can answer `initialize` with itself (muster speaks them all).
const VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// The id of the `initialize` the bridge replays to muster after sign-in.
const REPLAY_ID: &str = "muster-agent-initialize";

#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) endpoint: String,
    pub(crate) config_dir: PathBuf,
    pub(crate) settings: login::Settings,
    pub(crate) open_browser: bool,
}

/// What finished in the background, for the main loop.
enum Event {
    SignedIn(Result<StoredToken, String>),
    /// muster refused the bearer while forwarding this message.
    Unauthorized(Value),
    /// muster forgot the session (idle timeout, restart) while forwarding this message.
    SessionGone(Value, Arc<Upstream>),
    /// The standalone stream of this session found it gone.
    StreamLost(Arc<Upstream>),
}

struct Bridge {
    options: Options,
    http: reqwest::Client,
    out: mpsc::Sender<Value>,
    events: mpsc::Sender<Event>,
    bearer: watch::Sender<Option<String>>,
    /// Forwarding to muster; `None` while signed out.
    upstream: Option<Arc<Upstream>>,
    /// The agent's `initialize` request, replayed to muster after a sign-in or a lost session.
    initialize: Option<Value>,
    initialized: bool,
    /// The session at muster was lost and could not be reopened yet.
    stale: bool,
    /// The URL of a sign-in that is waiting for the browser.
    pending: Option<String>,
    refresher: Option<tokio::task::JoinHandle<()>>,
}

/// Runs the bridge until stdin ends.
pub(crate) async fn run(options: Options) -> anyhow::Result<i32> {
    let (out, out_rx) = mpsc::channel(256);
    let writer = std::thread::spawn(move || write_stdout(out_rx));
    let mut lines = read_stdin();
    let (events, mut events_rx) = mpsc::channel(16);
    let http = login::http_without_timeout()?;
    let mut bridge = Bridge {
        options,
        http,
        out,
        events,
        bearer: watch::Sender::new(None),
        upstream: None,
        initialize: None,
        initialized: false,
        stale: false,
        pending: None,
        refresher: None,
    };
    bridge.start().await?;
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) if line.trim().is_empty() => {}
                Some(line) => bridge.on_agent(&line).await,
                None => break,
            },
            Some(event) = events_rx.recv() => bridge.on_event(event).await,
        }
    }
    if let Some(upstream) = bridge.upstream.take() {
        upstream.close().await;
    }
    if let Some(refresher) = bridge.refresher.take() {
        refresher.abort();
    }
    drop(bridge);
    // What is already on its way out gets two seconds; calls still running at muster (their tasks
    // hold the writer open) are given up: the agent that asked has gone.
    let _ = tokio::time::timeout(Duration::from_secs(2), tokio::task::spawn_blocking(move || writer.join())).await;
    Ok(0)
}

/// stdin's lines, read on a thread of their own (blocking reads, as tokio's own stdin does).
fn read_stdin() -> mpsc::Receiver<String> {
    let (lines, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            if lines.blocking_send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Writes each message as one line to stdout, the only thing that ever goes there.
fn write_stdout(mut messages: mpsc::Receiver<Value>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    while let Some(message) = messages.blocking_recv() {
        let mut line = message.to_string();
        line.push('\n');
        if stdout.write_all(line.as_bytes()).is_err() || stdout.flush().is_err() {
            return;
        }
    }
}

impl Bridge {
    /// Forward at once unless muster wants a sign-in the stored token cannot give.
    async fn start(&mut self) -> anyhow::Result<()> {
        let http = login::http()?;
        let endpoint = &self.options.endpoint;
        let sign_in = login::sign_in_enabled(&http, endpoint).await?;
        let stored = tokens::load(&self.options.config_dir, endpoint);
        let stored = match stored {
            Some(stored) if sign_in != Some(false) => {
                Some(login::refresh_if_due(&http, &self.options.config_dir, stored).await)
            }
            _ => None,
        };
        match stored {
            Some(stored) if stored.expires_at > login::now() => self.connect(stored),
            // An unreachable muster: forward, and let a 401 bring the sign-in.
            _ if sign_in != Some(true) => self.forward_without_sign_in(),
            _ => tracing::info!("muster at {endpoint} requires sign-in: offering {AUTHENTICATE_TOOL}"),
        }
        Ok(())
    }

    fn forward_without_sign_in(&mut self) {
        self.upstream = Some(self.new_upstream());
    }

    fn new_upstream(&self) -> Arc<Upstream> {
        Arc::new(Upstream::new(self.http.clone(), &self.options.endpoint, self.bearer.subscribe(), self.out.clone()))
    }

    /// Uses `stored` as the bearer from now on, refreshed before it expires.
    fn connect(&mut self, stored: StoredToken) {
        self.bearer.send_replace(Some(stored.id_token.clone()));
        self.upstream = Some(self.new_upstream());
        if let Some(old) = self.refresher.take() {
            old.abort();
        }
        let (http, config_dir, endpoint, bearer) =
            (self.http.clone(), self.options.config_dir.clone(), self.options.endpoint.clone(), self.bearer.clone());
        self.refresher = Some(tokio::spawn(async move {
            // The file is the truth: `muster auth login` in a terminal counts too, and a rotated
            // refresh token is never used twice.
            while let Some(stored) = tokens::load(&config_dir, &endpoint) {
                tokio::time::sleep(login::refresh_in(&stored)).await;
                let Some(stored) = tokens::load(&config_dir, &endpoint) else { return };
                let fresh = login::refresh_if_due(&http, &config_dir, stored).await;
                if fresh.expires_at <= login::now() {
                    return;
                }
                bearer.send_replace(Some(fresh.id_token));
            }
        }));
    }

    async fn on_agent(&mut self, line: &str) {
        let message: Value = match serde_json::from_str(line) {
            Ok(message) => message,
            Err(e) => {
                let error = json!({"code": -32700, "message": format!("not JSON: {e}")});
                self.send(json!({"jsonrpc": "2.0", "id": null, "error": error})).await;
                return;
            }
        };
        match message["method"].as_str() {
            Some("initialize") => self.initialize = Some(message.clone()),
            Some("notifications/initialized") => self.initialized = true,
            _ => {}
        }
        if self.stale && message["method"] != "initialize" && !self.renew_session().await {
            if let Some(error) = error_reply(&message, -32603, "muster does not answer; try again") {
                self.send(error).await;
            }
            return;
        }
        match self.upstream.clone() {
            Some(upstream) => self.forward(upstream, message).await,
            None => self.answer_signed_out(message).await,
        }
    }

    /// `initialize` and `notifications/initialized` are forwarded in order (the session id and
    /// the standalone stream depend on them); everything else in a task of its own, so a long
    /// call does not hold up the agent's next message (a cancellation, an elicitation answer).
    async fn forward(&mut self, upstream: Arc<Upstream>, message: Value) {
        let method = message["method"].as_str().unwrap_or_default().to_owned();
        if method == "initialize" || method == "notifications/initialized" {
            match upstream.post(&message, Sink::Agent).await {
                Ok(()) if method == "notifications/initialized" => self.listen(&upstream).await,
                Ok(()) => self.stale = false,
                Err(failure) => self.on_failure(failure, message, upstream).await,
            }
            return;
        }
        let (events, out) = (self.events.clone(), self.out.clone());
        tokio::spawn(async move {
            match upstream.post(&message, Sink::Agent).await {
                Ok(()) => {}
                Err(Failure::Unauthorized) => {
                    let _ = events.send(Event::Unauthorized(message)).await;
                }
                Err(Failure::SessionGone) => {
                    let _ = events.send(Event::SessionGone(message, upstream)).await;
                }
                Err(Failure::Other(reason)) => {
                    if let Some(error) = error_reply(&message, -32603, &reason) {
                        let _ = out.send(error).await;
                    }
                }
            }
        });
    }

    /// Opens the standalone stream, and reports when it finds the session gone.
    async fn listen(&self, upstream: &Arc<Upstream>) {
        upstream.listen().await;
        let (lost, events, upstream) = (upstream.lost(), self.events.clone(), Arc::clone(upstream));
        tokio::spawn(async move {
            lost.await;
            let _ = events.send(Event::StreamLost(upstream)).await;
        });
    }

    async fn on_failure(&mut self, failure: Failure, message: Value, upstream: Arc<Upstream>) {
        match failure {
            Failure::Unauthorized => self.on_event(Event::Unauthorized(message)).await,
            Failure::SessionGone => self.on_event(Event::SessionGone(message, upstream)).await,
            Failure::Other(reason) => {
                if let Some(error) = error_reply(&message, -32603, &reason) {
                    self.send(error).await;
                }
            }
        }
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::SignedIn(Ok(stored)) => {
                self.pending = None;
                if let Err(e) = tokens::save(&self.options.config_dir, &stored) {
                    tracing::warn!(error = %e, "cannot store the token");
                }
                self.connect(stored);
                if self.reopen().await {
                    tracing::info!("signed in to muster at {}", self.options.endpoint);
                    self.lists_changed().await;
                }
            }
            Event::SignedIn(Err(reason)) => {
                self.pending = None;
                tracing::warn!("sign-in to muster failed: {reason}");
            }
            Event::SessionGone(message, gone) => {
                // Renewed already (by the standalone stream, or another call)? Then just retry.
                let current = self.upstream.as_ref().is_some_and(|current| Arc::ptr_eq(current, &gone));
                let renewed = !current || self.renew_session().await;
                match self.upstream.clone() {
                    Some(upstream) if renewed => Box::pin(self.forward(upstream, message)).await,
                    Some(_) => {
                        if let Some(error) = error_reply(&message, -32603, "muster does not answer; try again") {
                            self.send(error).await;
                        }
                    }
                    None => Box::pin(self.answer_signed_out(message)).await,
                }
            }
            Event::StreamLost(lost) => {
                // Only if that is still the session in use (a failed call may have renewed it).
                if self.upstream.as_ref().is_some_and(|current| Arc::ptr_eq(current, &lost)) {
                    self.renew_session().await;
                }
            }
            Event::Unauthorized(message) => {
                tracing::warn!("muster refused the sign-in; offering {AUTHENTICATE_TOOL} again");
                self.sign_out().await;
                self.answer_signed_out(message).await;
            }
        }
    }

    /// Back to the sign-in tool (the agent is told its tools changed).
    async fn sign_out(&mut self) {
        if let Some(old) = self.upstream.take() {
            old.close().await;
        }
        if let Some(refresher) = self.refresher.take() {
            refresher.abort();
        }
        self.bearer.send_replace(None);
        self.stale = false;
        if self.initialized {
            self.send(json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})).await;
        }
    }

    async fn renew_session(&mut self) -> bool {
        tracing::info!("muster forgot the session; opening a new one");
        if let Some(old) = self.upstream.take() {
            old.close().await;
        }
        self.upstream = Some(self.new_upstream());
        let reopened = self.reopen().await;
        if reopened && self.initialized {
            // What changed while muster was away was announced to a session that is gone.
            self.lists_changed().await;
        }
        reopened
    }

    /// Tells the agent to list tools, resources and prompts again.
    async fn lists_changed(&self) {
        for kind in ["tools", "resources", "prompts"] {
            self.send(json!({"jsonrpc": "2.0", "method": format!("notifications/{kind}/list_changed")})).await;
        }
    }

    /// Replays the agent's `initialize` (and `initialized`) on a new session at muster, and opens
    /// its standalone stream. False (and signed out again) when muster would not take it.
    async fn reopen(&mut self) -> bool {
        let (Some(upstream), Some(initialize)) = (self.upstream.clone(), self.initialize.clone()) else {
            return true;
        };
        let mut replay = initialize;
        replay["id"] = json!(REPLAY_ID);
        let mut replies = Vec::new();
        let opened = match upstream.post(&replay, Sink::Collect(&mut replies)).await {
            Ok(()) if replies.iter().any(|r| r["id"] == REPLAY_ID && r.get("result").is_some()) => Ok(()),
            Ok(()) => Err(Failure::Other(format!("muster refused the initialize: {replies:?}"))),
            Err(failure) => Err(failure),
        };
        match opened {
            Ok(()) => self.stale = false,
            Err(Failure::Unauthorized) => {
                tracing::warn!("muster refused the sign-in; offering {AUTHENTICATE_TOOL} again");
                self.sign_out().await;
                return false;
            }
            Err(failure) => {
                // Kept, to be reopened before the agent's next message (muster may be restarting).
                tracing::warn!("cannot open a session at muster: {failure}");
                self.stale = true;
                return false;
            }
        }
        if self.initialized {
            let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
            if upstream.post(&initialized, Sink::Agent).await.is_ok() {
                self.listen(&upstream).await;
            }
        }
        true
    }

    /// Signed out: muster's capabilities, one tool, empty lists, and a clear error for the rest.
    async fn answer_signed_out(&mut self, message: Value) {
        let Some(method) = message["method"].as_str() else { return };
        if message.get("id").is_none() {
            return;
        }
        let result = match method {
            "initialize" => initialize_result(&message),
            "ping" | "logging/setLevel" => json!({}),
            "tools/list" => json!({"tools": [authenticate_tool()]}),
            "resources/list" => json!({"resources": []}),
            "resources/templates/list" => json!({"resourceTemplates": []}),
            "prompts/list" => json!({"prompts": []}),
            "tools/call" if message["params"]["name"] == AUTHENTICATE_TOOL => self.authenticate().await,
            "tools/call" => {
                tool_text(&format!("Not signed in to muster: call the {AUTHENTICATE_TOOL} tool first."), true)
            }
            _ => {
                let reason = format!("not signed in to muster: call the {AUTHENTICATE_TOOL} tool first");
                if let Some(error) = error_reply(&message, -32603, &reason) {
                    self.send(error).await;
                }
                return;
            }
        };
        self.send(json!({"jsonrpc": "2.0", "id": message["id"], "result": result})).await;
    }

    /// Starts a sign-in (or returns the one waiting) and returns its URL as a tool result.
    async fn authenticate(&mut self) -> Value {
        if let Some(url) = &self.pending {
            return sign_in_text(url);
        }
        let pending = match login::start(&self.http, &self.options.endpoint, &self.options.settings).await {
            Ok(pending) => pending,
            Err(e) => return tool_text(&format!("Cannot start the sign-in to muster: {e:#}"), true),
        };
        let url = pending.url.clone();
        self.pending = Some(url.clone());
        if self.options.open_browser {
            super::auth::open_browser(&url);
        }
        let (http, events) = (self.http.clone(), self.events.clone());
        tokio::spawn(async move {
            let result = pending.finish(&http).await.map_err(|e| format!("{e:#}"));
            let _ = events.send(Event::SignedIn(result)).await;
        });
        sign_in_text(&url)
    }

    async fn send(&self, message: Value) {
        let _ = self.out.send(message).await;
    }
}

fn sign_in_text(url: &str) -> Value {
    tool_text(
        &format!(
            "Open this URL in a browser to sign in to muster:\n{url}\n\nWhen the sign-in completes, muster's tools appear here (the tool list changes)."
        ),
        false,
    )
}

fn tool_text(text: &str, is_error: bool) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": is_error})
}

fn authenticate_tool() -> Value {
    json!({
        "name": AUTHENTICATE_TOOL,
        "description": "Sign in to muster (the MCP gateway of the Kubernetes fleet). Returns a URL to open in a browser; after the sign-in, muster's tools appear.",
        "inputSchema": {"type": "object", "properties": {}},
    })
}

/// The bridge's own `initialize` answer: the agent's revision when the bridge knows it, and
/// muster's capabilities, so nothing changes for the agent after the sign-in.
fn initialize_result(request: &Value) -> Value {
    let asked = request["params"]["protocolVersion"].as_str().unwrap_or_default();
    let version = VERSIONS.iter().find(|v| **v == asked).copied().unwrap_or(VERSIONS[1]);
    json!({
        "protocolVersion": version,
        "capabilities": {
            "tools": {"listChanged": true},
            "resources": {"subscribe": true, "listChanged": true},
            "prompts": {"listChanged": true},
            "logging": {},
            "completions": {},
        },
        "serverInfo": {"name": "muster-agent", "version": env!("CARGO_PKG_VERSION")},
        "instructions": format!("Not signed in to muster yet: call {AUTHENTICATE_TOOL} and open the URL it returns."),
    })
}

/// A JSON-RPC error answering `message`, when it is a request.
fn error_reply(message: &Value, code: i64, reason: &str) -> Option<Value> {
    let id = message.get("id").filter(|_| message.get("method").is_some())?;
    Some(json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": reason}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_out_initialize_keeps_a_known_revision_and_muster_capabilities() {
        let request =
            |v: &str| json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": v}});
        assert_eq!(initialize_result(&request("2025-03-26"))["protocolVersion"], "2025-03-26");
        assert_eq!(initialize_result(&request("1999-01-01"))["protocolVersion"], "2025-06-18");
        assert_eq!(initialize_result(&request("2025-06-18"))["capabilities"]["tools"]["listChanged"], true);
    }

    #[test]
    fn errors_answer_requests_only() {
        let request = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call"});
        assert_eq!(error_reply(&request, -32603, "x").expect("a reply")["id"], 7);
        assert!(error_reply(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}), -32603, "x").is_none());
        assert!(error_reply(&json!({"jsonrpc": "2.0", "id": 7, "result": {}}), -32603, "x").is_none());
    }
}
