//! An in-process rmcp upstream served over streamable HTTP (through muster's own actix bridge),
//! with tools that let tests steer it: `whoami`, `echo`, `block` (waits for the test to release
//! it), `grow` (adds a tool and announces list_changed), `progress`, `big` (a text of `bytes`
//! bytes), `roots` (asks the agent for its roots: a server-to-client request) and `flood`
//! (progress notifications of 4 KiB each, without end until cancelled), `ask_name`, `summarize`
//! and `ask_both` (elicit a name, sample a summary, or both: mid-call on a 2025 session, as an
//! `InputRequiredResult` with its own keys and a state it checks to a 2026-07-28 request); it is a
//! 2025 server unless started with `start_modern` (it refuses `server/discover` with HTTP 400); and
//! one prompt, `cluster-health-check`, whose text and `namespace` completions name the upstream;
//! one resource, `mock://<label>/status`, whose `resources/subscribe` and `unsubscribe` it records
//! and whose update `touch` announces (on the session's standalone stream).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpServer, web};
use muster::frontend::bridge;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams, CompleteResult, CompletionInfo,
    ContentBlock, GetPromptRequestParams, GetPromptResponse, GetPromptResult, ListPromptsResult, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, Prompt, PromptArgument, PromptMessage, Role, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler};
use serde_json::{Value, json};
use tokio::sync::Notify;

pub struct Shared {
    pub label: String,
    pub extra_tools: Mutex<Vec<String>>,
    pub release: Notify,
    /// `block` calls so far, and the most of them waiting at the same time.
    pub blocked: AtomicUsize,
    pub most_blocked_at_once: AtomicUsize,
    blocked_now: AtomicUsize,
    pub cancelled: AtomicUsize,
    pub calls: AtomicUsize,
    pub headers_seen: Mutex<Vec<String>>,
    /// JSON-RPC ids of the `tools/call` requests, and the client ports they came from.
    pub call_ids_seen: Mutex<Vec<String>>,
    pub call_ports_seen: Mutex<std::collections::HashSet<u16>>,
    /// Bearer tokens seen on any request, and those to answer with 401 (a revoked token).
    pub bearers_seen: Mutex<Vec<String>>,
    /// `subscribe <uri>` and `unsubscribe <uri>`, in the order they came.
    pub subscriptions: Mutex<Vec<String>>,
    pub rejected_bearers: Mutex<Vec<String>>,
    /// Answers `server/discover` (2026-07-28, sessionless); otherwise it refuses it as a 2025
    /// server does, with HTTP 400, and muster falls back to `initialize`.
    pub modern: std::sync::atomic::AtomicBool,
    /// `server/discover` requests it received.
    pub discovers: AtomicUsize,
    /// Bumped by `grow`: what `subscriptions/listen` (2026-07-28) announces.
    pub grown: tokio::sync::watch::Sender<u64>,
}

#[derive(Clone)]
struct Upstream(Arc<Shared>);

fn tool(name: &str, description: &str, properties: Value) -> Tool {
    let schema = json!({"type": "object", "properties": properties});
    Tool::new(name.to_owned(), description.to_owned(), Arc::new(serde_json::from_value(schema).expect("schema")))
}

fn text(s: impl Into<String>) -> CallToolResponse {
    CallToolResult::success(vec![ContentBlock::text(s.into())]).into()
}

impl ServerHandler for Upstream {
    fn get_info(&self) -> ServerConfig {
        let capabilities =
            json!({"tools": {"listChanged": true}, "prompts": {}, "completions": {}, "resources": {"subscribe": true}});
        ServerConfig::new(serde_json::from_value(capabilities).expect("caps"))
    }

    fn accepted_subscription_filter(
        &self,
        requested: &rmcp::model::SubscriptionFilter,
    ) -> Option<rmcp::model::SubscriptionFilter> {
        let mut accepted = rmcp::model::SubscriptionFilter::new();
        accepted.tools_list_changed = requested.tools_list_changed;
        Some(accepted)
    }

    /// A 2026-07-28 client hears `grow`'s list change here.
    async fn listen(&self, subscription: rmcp::service::SubscriptionContext) -> Result<(), ErrorData> {
        let mut grown = self.0.grown.subscribe();
        loop {
            tokio::select! {
                () = subscription.cancelled() => return Ok(()),
                changed = grown.changed() => if changed.is_err() { return Ok(()) },
            }
            if subscription.sink().notify_tool_list_changed().await.is_err() {
                return Ok(());
            }
        }
    }

    async fn list_resources(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourcesResult, ErrorData> {
        let status = rmcp::model::Resource::new(format!("mock://{}/status", self.0.label), "status");
        Ok(rmcp::model::ListResourcesResult::with_all_items(vec![status]))
    }

    #[allow(deprecated, reason = "resources/subscribe is what 2025-era clients (and muster upstream) send")]
    async fn subscribe(
        &self,
        request: rmcp::model::SubscribeRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.0.subscriptions.lock().expect("lock").push(format!("subscribe {}", request.uri));
        Ok(())
    }

    #[allow(deprecated, reason = "resources/unsubscribe is what 2025-era clients (and muster upstream) send")]
    async fn unsubscribe(
        &self,
        request: rmcp::model::UnsubscribeRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.0.subscriptions.lock().expect("lock").push(format!("unsubscribe {}", request.uri));
        Ok(())
    }

    async fn list_prompts(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let namespace = PromptArgument::new("namespace").with_description("the namespace to check");
        let prompt = Prompt::new("cluster-health-check", Some("Checks a cluster's health"), Some(vec![namespace]));
        Ok(ListPromptsResult::with_all_items(vec![prompt]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        // The text shows every argument that arrived, so tests see what was forwarded.
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        let text = format!("{} checks {} with {arguments}", self.0.label, request.name);
        Ok(GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)]).into())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let value = format!("{}-{}", self.0.label, request.argument.value);
        Ok(CompleteResult::new(CompletionInfo::new(vec![value]).unwrap_or_default()))
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut tools = vec![
            tool("whoami", "Says which upstream answered", json!({})),
            tool("echo", "Echoes text", json!({"text": {"type": "string"}})),
            tool("block", "Waits until the test releases it", json!({})),
            tool("grow", "Adds a tool", json!({})),
            tool("touch", "Announces that its status resource was updated", json!({})),
            tool("progress", "Sends progress", json!({})),
            tool("log", "Logs a debug and a warning message, at the level a 2026 request asks for", json!({})),
            tool("flood", "Sends progress until cancelled", json!({})),
            tool("bearer", "Says whose token (sub, iss) this call carried", json!({})),
            tool("big", "Answers with a text of `bytes` bytes", json!({"bytes": {"type": "integer"}})),
            tool("roots", "Asks the agent for its roots and answers with their URIs", json!({})),
            tool("ask_name", "Elicits the user's name and greets them", json!({})),
            tool("summarize", "Asks the agent's model for a summary (sampling)", json!({})),
            tool("ask_both", "Elicits a name and samples a summary at once", json!({})),
        ];
        for name in self.0.extra_tools.lock().expect("lock").iter() {
            tools.push(tool(name, "grown", json!({})));
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        self.0.call_ids_seen.lock().expect("lock").push(match &context.id {
            rmcp::model::NumberOrString::String(s) => s.to_string(),
            rmcp::model::NumberOrString::Number(n) => n.to_string(),
        });
        if let Some(parts) = context.extensions.get::<http::request::Parts>() {
            let mut seen = self.0.headers_seen.lock().expect("lock");
            for name in parts.headers.keys() {
                seen.push(name.as_str().to_owned());
            }
        }
        let args = request.arguments.clone().unwrap_or_default();
        match request.name.as_ref() {
            "whoami" => Ok(text(self.0.label.clone())),
            // Roots are deprecated by the newest draft (SEP-2577) and still part of 2025-06-18.
            #[allow(deprecated, reason = "a 2025-06-18 server-to-client request")]
            "roots" => match context.peer.list_roots().await {
                Ok(roots) => Ok(text(roots.roots.iter().map(|r| r.uri.as_str()).collect::<Vec<_>>().join(" "))),
                Err(e) => Ok(CallToolResult::error(vec![ContentBlock::text(format!("no roots: {e}"))]).into()),
            },
            "ask_name" => self.ask(&request, &context, &[USER_NAME]).await,
            "summarize" => self.ask(&request, &context, &[SUMMARY]).await,
            "ask_both" => self.ask(&request, &context, &[USER_NAME, SUMMARY]).await,
            "big" => {
                let bytes = args.get("bytes").and_then(Value::as_u64).unwrap_or(0);
                Ok(text("x".repeat(usize::try_from(bytes).unwrap_or(0))))
            }
            "bearer" => {
                let claims = context
                    .extensions
                    .get::<http::request::Parts>()
                    .and_then(|p| p.headers.get("authorization"))
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .and_then(muster::auth::token::unverified_claims)
                    .unwrap_or_default();
                Ok(text(format!("{} {}", claims["sub"].as_str().unwrap_or("-"), claims["iss"].as_str().unwrap_or("-"))))
            }
            "echo" => {
                Ok(text(format!("{}:{}", self.0.label, args.get("text").and_then(Value::as_str).unwrap_or_default())))
            }
            "block" => {
                let now = self.0.blocked_now.fetch_add(1, Ordering::SeqCst) + 1;
                self.0.most_blocked_at_once.fetch_max(now, Ordering::SeqCst);
                self.0.blocked.fetch_add(1, Ordering::SeqCst);
                let answer = tokio::select! {
                    () = self.0.release.notified() => Ok(text("released")),
                    () = context.ct.cancelled() => {
                        self.0.cancelled.fetch_add(1, Ordering::SeqCst);
                        Ok(text("cancelled"))
                    }
                };
                self.0.blocked_now.fetch_sub(1, Ordering::SeqCst);
                answer
            }
            "touch" => {
                let uri = format!("mock://{}/status", self.0.label);
                let updated = rmcp::model::ResourceUpdatedNotificationParam::new(uri.clone());
                let _ = context.peer.notify_resource_updated(updated).await;
                Ok(text(format!("touched {uri}")))
            }
            "grow" => {
                let name = {
                    let mut extra = self.0.extra_tools.lock().expect("lock");
                    let name = format!("grown_{}", extra.len());
                    extra.push(name.clone());
                    name
                };
                // 2026-07-28 announces it on `subscriptions/listen` only; 2025 on the session.
                if context.meta.protocol_version().is_none_or(|v| v.as_str() < "2026-07-28") {
                    let _ = context.peer.notify_tool_list_changed().await;
                }
                self.0.grown.send_modify(|n| *n += 1);
                Ok(text(name))
            }
            // A 2026-07-28 server logs only at the level the request asks for (SEP-2575), a 2025
            // one at its own; the text says which level arrived.
            #[allow(deprecated, reason = "logging is deprecated by SEP-2577 and still part of 2025-11-25")]
            "log" => {
                let asked = context.meta.log_level();
                let modern = context.meta.protocol_version().is_some_and(|v| v.as_str() >= "2026-07-28");
                let levels =
                    [(rmcp::model::LoggingLevel::Debug, "detail"), (rmcp::model::LoggingLevel::Warning, "trouble")];
                for (level, data) in levels {
                    if !modern || asked.is_some_and(|least| level as u8 >= least as u8) {
                        let message = rmcp::model::LoggingMessageNotificationParam::new(level, json!(data));
                        let _ = context.peer.notify_logging_message(message).await;
                    }
                }
                Ok(text(asked.map_or("no level".to_owned(), |l| json!(l).as_str().unwrap_or("?").to_owned())))
            }
            "progress" => {
                if let Some(token) = context.meta.get_progress_token() {
                    for i in 1..=3 {
                        let _ = context
                            .peer
                            .notify_progress(
                                ProgressNotificationParam::new(token.clone(), f64::from(i)).with_total(3.0),
                            )
                            .await;
                    }
                }
                Ok(text("done"))
            }
            "flood" => {
                let token = context
                    .meta
                    .get_progress_token()
                    .unwrap_or(rmcp::model::ProgressToken(rmcp::model::NumberOrString::String("flood".into())));
                let message = "x".repeat(4096);
                let peer = context.peer.clone();
                // Bounded: 100,000 × 4 KiB is far more than any queue of muster's may hold. Then
                // (or once muster stops reading) it waits a while for the cancellation.
                let flood = async move {
                    for i in 0..100_000u32 {
                        let progress =
                            ProgressNotificationParam::new(token.clone(), f64::from(i)).with_message(&message);
                        if peer.notify_progress(progress).await.is_err() {
                            break;
                        }
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                };
                tokio::select! {
                    () = context.ct.cancelled() => {
                        self.0.cancelled.fetch_add(1, Ordering::SeqCst);
                        Ok(text("cancelled"))
                    }
                    () = flood => Ok(text("flooded")),
                }
            }
            other => Ok(CallToolResult::error(vec![ContentBlock::text(format!("no tool {other}"))]).into()),
        }
    }
}

/// A question of `ask_name` or `summarize`: the key a 2026-07-28 answer carries, and the request.
type Asked = (&'static str, fn() -> Value);

const USER_NAME: Asked = ("user_name", || {
    json!({"method": "elicitation/create", "params": {"mode": "form", "message": "What is your name?",
        "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}})
});
const SUMMARY: Asked = ("summary", || {
    json!({"method": "sampling/createMessage", "params": {"maxTokens": 50,
        "messages": [{"role": "user", "content": {"type": "text", "text": "Summarize the cluster"}}]}})
});

/// What an answer says, for the tool's text: the elicited name, or the sampled text.
fn said(answer: &Value) -> String {
    let content = &answer["content"];
    content["name"].as_str().or_else(|| content["text"].as_str()).unwrap_or("?").to_owned()
}

impl Upstream {
    /// Asks `questions` and answers with what came back. A 2026-07-28 request gets an
    /// `InputRequiredResult` (the upstream's own keys and a `requestState` it checks on the
    /// retry); a 2025 one gets server-to-client requests mid-call, as a 2025 server sends them.
    async fn ask(
        &self,
        request: &CallToolRequestParams,
        context: &RequestContext<RoleServer>,
        questions: &[Asked],
    ) -> Result<CallToolResponse, ErrorData> {
        let modern = context.meta.protocol_version().is_some_and(|v| v.as_str() >= "2026-07-28");
        let mut answers = Vec::new();
        if modern {
            let state = format!("{}-state-{}", self.0.label, request.name);
            let responses = request.input_responses.clone().unwrap_or_default();
            if responses.is_empty() {
                let asked = questions
                    .iter()
                    .map(|(key, question)| (key.to_string(), serde_json::from_value(question()).expect("a question")))
                    .collect();
                return Ok(CallToolResponse::InputRequired(rmcp::model::InputRequiredResult::new(
                    Some(asked),
                    Some(state),
                )));
            }
            if request.request_state.as_deref() != Some(state.as_str()) {
                let got = request.request_state.clone().unwrap_or_default();
                return Ok(CallToolResult::error(vec![ContentBlock::text(format!("state lost: {got}"))]).into());
            }
            for (key, _) in questions {
                answers.push(format!("{key}={}", responses.get(*key).map(said).unwrap_or_else(|| "-".into())));
            }
        } else {
            for (key, question) in questions {
                let asked: rmcp::model::ServerRequest = serde_json::from_value(question()).expect("a question");
                let answer = match context.peer.send_request(asked).await {
                    Ok(answer) => serde_json::to_value(answer).unwrap_or_default(),
                    Err(e) => {
                        return Ok(CallToolResult::error(vec![ContentBlock::text(format!("no answer: {e}"))]).into());
                    }
                };
                answers.push(format!("{key}={}", said(&answer)));
            }
        }
        let era = if modern { "2026" } else { "2025" };
        Ok(text(format!("{} ({era}): {}", self.0.label, answers.join(" "))))
    }
}

pub struct MockUpstream {
    pub port: u16,
    pub shared: Arc<Shared>,
    pub sessions: Arc<LocalSessionManager>,
    server: actix_web::dev::ServerHandle,
}

impl MockUpstream {
    pub async fn start(label: &str, port: u16) -> Self {
        Self::start_with(
            Arc::new(Shared {
                label: label.to_owned(),
                extra_tools: Mutex::default(),
                release: Notify::new(),
                blocked: AtomicUsize::new(0),
                most_blocked_at_once: AtomicUsize::new(0),
                blocked_now: AtomicUsize::new(0),
                cancelled: AtomicUsize::new(0),
                calls: AtomicUsize::new(0),
                headers_seen: Mutex::default(),
                call_ids_seen: Mutex::default(),
                call_ports_seen: Mutex::default(),
                bearers_seen: Mutex::default(),
                rejected_bearers: Mutex::default(),
                subscriptions: Mutex::default(),
                modern: std::sync::atomic::AtomicBool::new(false),
                discovers: AtomicUsize::new(0),
                grown: tokio::sync::watch::Sender::new(0),
            }),
            port,
        )
        .await
    }

    /// Starts (again) with existing state, e.g. after `stop`, on the same port.
    pub async fn start_with(shared: Arc<Shared>, port: u16) -> Self {
        let factory_shared = shared.clone();
        let gate = web::Data::new(shared.clone());
        let sessions = Arc::new(LocalSessionManager::default());
        let service = web::Data::new(StreamableHttpService::new(
            move || Ok(Upstream(factory_shared.clone())),
            sessions.clone(),
            StreamableHttpServerConfig::default(),
        ));
        let server = HttpServer::new(move || {
            App::new().app_data(service.clone()).app_data(gate.clone()).route(
                "/mcp",
                web::route().to(
                    |req: HttpRequest,
                     body: web::Bytes,
                     svc: web::Data<StreamableHttpService<Upstream, LocalSessionManager>>,
                     gate: web::Data<Arc<Shared>>| async move {
                        let bearer = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("Bearer "))
                            .map(str::to_owned);
                        if body.windows(11).any(|w| w == b"\"tools/call")
                            && let Some(peer) = req.peer_addr()
                        {
                            gate.call_ports_seen.lock().expect("lock").insert(peer.port());
                        }
                        if body.windows(17).any(|w| w == b"\"server/discover\"") {
                            gate.discovers.fetch_add(1, Ordering::SeqCst);
                            if !gate.modern.load(Ordering::SeqCst) {
                                let refused = json!({"jsonrpc": "2.0", "id": "server-error",
                                    "error": {"code": -32600, "message": "Bad Request: No valid session ID provided"}});
                                return actix_web::HttpResponse::BadRequest().json(refused);
                            }
                        }
                        if let Some(bearer) = bearer {
                            if gate.rejected_bearers.lock().expect("lock").contains(&bearer) {
                                return actix_web::HttpResponse::Unauthorized()
                                    .insert_header(("www-authenticate", "Bearer error=\"invalid_token\""))
                                    .finish();
                            }
                            let mut seen = gate.bearers_seen.lock().expect("lock");
                            if !seen.contains(&bearer) {
                                seen.push(bearer);
                            }
                        }
                        bridge(&svc, &req, body).await
                    },
                ),
            )
        })
        .workers(1)
        .on_connect(muster::frontend::set_nodelay)
        .shutdown_timeout(0)
        .bind(("127.0.0.1", port))
        .expect("bind mock upstream")
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self { port, shared, sessions, server: handle }
    }

    /// A server of both eras: it answers `server/discover`, so muster speaks 2026-07-28 to it.
    pub async fn start_modern(label: &str, port: u16) -> Self {
        let upstream = Self::start(label, port).await;
        upstream.shared.modern.store(true, Ordering::SeqCst);
        upstream
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// Forgets every MCP session, as a redeployed server behind a stable address would.
    pub async fn forget_sessions(&self) {
        self.sessions.sessions.write().await.clear();
    }

    pub async fn stop(self) -> Arc<Shared> {
        self.server.stop(false).await;
        self.shared
    }
}
