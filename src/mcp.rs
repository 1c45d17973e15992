//! The MCP server that agents talk to: `GatewayServer`. Requests on muster's own sessions arrive
//! decoded at `GatewayServer::handle` with their `Caller` (frontend/streamable.rs); requests rmcp
//! serves (2026-07-28, no session) arrive through the `ServerHandler` methods. Both end in the
//! same methods. It knows no HTTP server or client (actix, reqwest): only `http` types, for the
//! trace context in headers and the request parts rmcp hands over. It reads the router's catalog
//! snapshot and calls backends through their handles.
//!
//! The phases of a tool call, in order: decode (frontend) → `handle` → `tool_call` (its span) →
//! `resolve_tool` (routing/resolve.rs) → `BackendHandle::call_tool` (backend.rs) → encode
//! (mcp/error.rs for failures).

#![allow(deprecated, reason = "logging/setLevel is deprecated by SEP-2577 but 2025-era agents send it")]

pub mod auth_status;
pub mod core;
pub mod error;
pub mod listen;
mod lookup;
pub mod meta;
pub mod rounds;
pub mod search;
pub mod session_ids;
pub mod sessions;
mod workflows;

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ClientRequest, CompleteRequestParams, CompleteResult,
    GetPromptRequestParams, GetPromptResponse, GetPromptResult, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Reference, ServerConfig, ServerResult,
    SetLevelRequestParams, SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData, ServerHandler};

use self::lookup::{instance_completion, prompt_backend, resource_backend};
use crate::backend::UpstreamResult;
use crate::caller::{Caller, ReplyPath};
use crate::config::ToolExposure;
use crate::routing::resolve::resolve_tool;
use crate::routing::{self, CatalogSnapshot, RouterHandle};

/// How long a list waits for a user's sessions to auth servers that have not listed yet.
/// Failures are remembered (exchange and session backoff), so a dead cluster costs this once.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The gateway as agents see it. One serves all of muster's own sessions (each request
/// carries its `Caller`); rmcp makes one per request it serves, with that request's `agent_id`.
#[derive(Clone)]
pub struct GatewayServer {
    agent_id: u64,
    router: RouterHandle,
    exposure: ToolExposure,
    /// Inbound sign-in is on: `auth://status` shows each user's sign-in state, not only each server's.
    sign_in: bool,
    /// The `core_*` tools' state (mcp/core.rs).
    core: Option<Arc<core::Core>>,
    /// What only sessionless (2026-07-28) agents use.
    sessionless: Option<Sessionless>,
}

/// What the sessionless (2026-07-28) requests of every agent share.
#[derive(Clone)]
pub struct Sessionless {
    /// Calls waiting for their agents' input (mcp/rounds.rs).
    pub rounds: Arc<rounds::Rounds>,
    /// The catalog's list changes, for `subscriptions/listen` (mcp/listen.rs).
    pub lists: tokio::sync::watch::Receiver<listen::ListVersions>,
}

impl GatewayServer {
    pub fn new(agent_id: u64, router: RouterHandle, exposure: ToolExposure, sign_in: bool) -> Self {
        Self { agent_id, router, exposure, sign_in, core: None, sessionless: None }
    }

    /// Serving sessionless agents: tool calls ask through `InputRequiredResult`s
    /// (mcp/rounds.rs), and `subscriptions/listen` follows the catalog (mcp/listen.rs).
    #[must_use]
    pub fn with_sessionless(mut self, sessionless: Sessionless) -> Self {
        self.sessionless = Some(sessionless);
        self
    }

    /// With the `core_*` management tools.
    #[must_use]
    pub fn with_core(mut self, core: Arc<core::Core>) -> Self {
        self.core = Some(core);
        self
    }

    fn snapshot(&self) -> Arc<CatalogSnapshot> {
        self.router.current()
    }

    /// Servers with `spec.auth` only list their capabilities to a signed-in user. Before the
    /// first list or call of a user, open that user's sessions to the ones not yet listed, so the
    /// catalog is complete on the first answer (Muster #1204: never lazily incomplete).
    pub(crate) async fn discover_for(&self, identity: Option<&Arc<crate::auth::Identity>>) {
        let Some(identity) = identity else { return };
        let snapshot = self.snapshot();
        let missing: Vec<_> = snapshot
            .servers
            .values()
            .filter(|s| s.handle.auth().is_some() && s.capabilities.is_none())
            .map(|s| s.handle.clone())
            .collect();
        if missing.is_empty() {
            return;
        }
        let warmed = futures::future::join_all(missing.iter().map(|h| h.warm_up(identity)));
        let Ok(results) = tokio::time::timeout(DISCOVERY_TIMEOUT, warmed).await else { return };
        let listed: Vec<String> =
            missing.iter().zip(results).filter(|(_, ok)| *ok).map(|(h, _)| h.name.to_string()).collect();
        let mut snapshots = self.router.snapshot.clone();
        let published =
            snapshots.wait_for(|s| listed.iter().all(|n| s.servers.get(n).is_none_or(|x| x.capabilities.is_some())));
        let _ = tokio::time::timeout(Duration::from_secs(2), published).await;
    }

    /// `resolve_tool` then `call_upstream`, then `record` (metrics and the one log line per call).
    /// `resume` carries an upstream's `requestState` and the agent's `inputResponses` (`rounds.rs`).
    pub(crate) async fn dispatch(
        &self,
        name: &str,
        arguments: Option<rmcp::model::JsonObject>,
        resume: rounds::Resume,
        caller: &Caller,
    ) -> Result<UpstreamResult, routing::Error> {
        if core::is_core_tool(name) {
            return Ok(core::call(self, name, arguments.unwrap_or_default(), caller).await.into());
        }
        let started = std::time::Instant::now();
        let snapshot = self.snapshot();
        if let Some(route) = workflows::route(&snapshot.catalog, name) {
            return Ok(Box::pin(workflows::call(self, route, arguments, caller)).await);
        }
        let resolved = resolve_tool(&snapshot.catalog, name, arguments)?;
        let span = tracing::Span::current();
        span.record("mcp.server", resolved.server.as_str());
        span.record("gen_ai.tool.name", resolved.tool.as_str());
        let backend = snapshot
            .backend(&resolved.server)
            .ok_or_else(|| routing::Error::ToolNotFound { name: name.to_owned(), suggestions: Vec::new() })?;
        let mut params = CallToolRequestParams::new(resolved.tool.clone());
        params.arguments = resolved.arguments;
        params.request_state = resume.request_state;
        params.input_responses = resume.input_responses;
        let result = backend.call_tool(params, caller).await.map_err(|error| {
            match snapshot.catalog.cluster_of(&resolved.server) {
                Some(cluster) => routing::Error::OnCluster { cluster, error: Box::new(error) },
                None => routing::Error::Backend(error),
            }
        });
        let outcome = match &result {
            Ok(answer) if answer.is_tool_error() => "error",
            Ok(_) => "ok",
            Err(_) => "failed",
        };
        let elapsed = started.elapsed();
        crate::telemetry::metrics::tool_call(&resolved.tool, &resolved.server, outcome, elapsed);
        tracing::info!(
            tool = %resolved.tool,
            server = %resolved.server,
            outcome,
            duration_ms = elapsed.as_secs_f64() * 1e3,
            user = caller.identity.as_ref().map(|i| i.subject_hash()).unwrap_or_default(),
            agent = caller.agent_id,
            "tool call"
        );
        result
    }
}

fn server_config() -> ServerConfig {
    let capabilities = serde_json::from_value(serde_json::json!({
        "tools": {"listChanged": true},
        "resources": {"subscribe": true, "listChanged": true},
        "prompts": {"listChanged": true},
        "logging": {},
        "completions": {},
    }))
    .unwrap_or_default();
    let mut config = ServerConfig::new(capabilities);
    config.server_info = Implementation::new("muster", env!("CARGO_PKG_VERSION"));
    config.instructions = Some(
        "muster aggregates the MCP servers of a Kubernetes fleet. Family tools take an instance argument \
         (e.g. management_cluster) naming the target server; use list_tools/filter_tools to discover tools."
            .to_owned(),
    );
    config
}

impl ServerHandler for GatewayServer {
    fn get_info(&self) -> ServerConfig {
        server_config()
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(self.tools(&self.caller(&context)).await)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let unreadable = || ErrorData::internal_error("the upstream's tool result could not be read", None);
        let Some(rounds) = self.sessionless.as_ref().map(|s| s.rounds.clone()) else {
            let headers = context.extensions.get::<http::request::Parts>().map(|p| &p.headers);
            return self
                .tool_call(request, &self.caller(&context), headers)
                .await
                .into_call_tool_response()
                .ok_or_else(unreadable);
        };
        match self.tool_call_in_rounds(&rounds, request, &context).await? {
            rounds::Outcome::Complete(result) => (*result).into_call_tool_response().ok_or_else(unreadable),
            rounds::Outcome::InputRequired(asked) => Ok(CallToolResponse::InputRequired(asked)),
        }
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(self.resources())
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(self.resource_templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.resource_read(request, &self.caller(&context)).await.map(Into::into)
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.resource_subscribe(request, &self.caller(&context)).await
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.resource_unsubscribe(request, &self.caller(&context)).await
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(self.prompts())
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let Some(rounds) = self.sessionless.as_ref().map(|s| s.rounds.clone()) else {
            return self.prompt(request, &self.caller(&context)).await.map(Into::into);
        };
        match self.prompt_in_rounds(&rounds, request, &context).await? {
            rounds::Outcome::Complete(result) => match *result {
                UpstreamResult::Result(ServerResult::GetPromptResult(prompt)) => Ok(prompt.into()),
                _ => Err(ErrorData::internal_error("the upstream's prompt could not be read", None)),
            },
            rounds::Outcome::InputRequired(asked) => Ok(GetPromptResponse::InputRequired(asked)),
        }
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        self.completion(request, &self.caller(&context)).await
    }

    fn accepted_subscription_filter(
        &self,
        requested: &rmcp::model::SubscriptionFilter,
    ) -> Option<rmcp::model::SubscriptionFilter> {
        self.sessionless.as_ref().map(|_| listen::accepted(requested, &self.snapshot()))
    }

    async fn listen(&self, subscription: rmcp::service::SubscriptionContext) -> Result<(), ErrorData> {
        if let Some(sessionless) = &self.sessionless {
            self.listen_to(sessionless.lists.clone(), subscription).await;
        }
        Ok(())
    }

    async fn set_level(
        &self,
        _request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        // Upstream log messages are relayed as they come; the level is accepted for the session.
        Ok(())
    }
}

/// The requests themselves, whoever decoded them: `handle` for muster's own sessions, the
/// `ServerHandler` methods above for what rmcp serves.
impl GatewayServer {
    fn caller(&self, context: &RequestContext<RoleServer>) -> Caller {
        Caller::from_context(self.agent_id, context)
    }

    /// One request of an agent session (the 2025 revisions; `initialize` is the frontend's).
    /// `headers` are the HTTP request's, for the W3C trace context.
    pub async fn handle(
        &self,
        request: ClientRequest,
        caller: &Caller,
        headers: Option<&http::HeaderMap>,
    ) -> Result<UpstreamResult, ErrorData> {
        let mut result = match self.route_request(request, caller, headers).await? {
            // Only plain tool results stay raw, and they have the legacy shape already.
            raw @ UpstreamResult::ToolResult(_) => return Ok(raw),
            UpstreamResult::Result(result) => result,
        };
        // These sessions negotiated a 2025 revision: the legacy result shape, as rmcp gives it.
        if matches!(result, ServerResult::InputRequiredResult(_)) {
            return Err(ErrorData::invalid_request(
                "the upstream asked for more input (InputRequiredResult), which needs protocol 2026-07-28",
                None,
            ));
        }
        result.strip_result_type_for_legacy_peer();
        result.strip_non_object_output_for_legacy_peer();
        Ok(UpstreamResult::Result(result))
    }

    /// A tool call keeps a raw result; every other request is decoded (`decoded_request`).
    async fn route_request(
        &self,
        request: ClientRequest,
        caller: &Caller,
        headers: Option<&http::HeaderMap>,
    ) -> Result<UpstreamResult, ErrorData> {
        if let ClientRequest::CallToolRequest(request) = request {
            return Ok(self.tool_call(request.params, caller, headers).await);
        }
        self.decoded_request(request, caller).await.map(UpstreamResult::Result)
    }

    async fn decoded_request(&self, request: ClientRequest, caller: &Caller) -> Result<ServerResult, ErrorData> {
        match request {
            ClientRequest::PingRequest(_) | ClientRequest::SetLevelRequest(_) => Ok(ServerResult::empty(())),
            ClientRequest::ListToolsRequest(_) => Ok(ServerResult::ListToolsResult(self.tools(caller).await)),
            ClientRequest::ListResourcesRequest(_) => Ok(ServerResult::ListResourcesResult(self.resources())),
            ClientRequest::ListResourceTemplatesRequest(_) => {
                Ok(ServerResult::ListResourceTemplatesResult(self.resource_templates()))
            }
            ClientRequest::ReadResourceRequest(request) => {
                self.resource_read(request.params, caller).await.map(ServerResult::ReadResourceResult)
            }
            ClientRequest::SubscribeRequest(request) => {
                self.resource_subscribe(request.params, caller).await.map(ServerResult::empty)
            }
            ClientRequest::UnsubscribeRequest(request) => {
                self.resource_unsubscribe(request.params, caller).await.map(ServerResult::empty)
            }
            ClientRequest::ListPromptsRequest(_) => Ok(ServerResult::ListPromptsResult(self.prompts())),
            ClientRequest::GetPromptRequest(request) => {
                self.prompt(request.params, caller).await.map(ServerResult::GetPromptResult)
            }
            ClientRequest::CompleteRequest(request) => {
                self.completion(request.params, caller).await.map(ServerResult::CompleteResult)
            }
            ClientRequest::InitializeRequest(_) => {
                Err(ErrorData::invalid_request("this session is already initialized", None))
            }
            other => Err(error::not_served(&other)),
        }
    }

    /// Single sign-on at `notifications/initialized`: exchange (or forward) this user's token
    /// for every cluster now, so the first call does not wait and `auth://status` shows it.
    pub fn warm_up(&self, identity: &Arc<crate::auth::Identity>) {
        let snapshot = self.snapshot();
        for server in snapshot.servers.values().filter(|s| s.handle.auth().is_some()) {
            let (handle, identity) = (server.handle.clone(), identity.clone());
            tokio::spawn(async move { handle.warm_up(&identity).await });
        }
    }

    async fn tools(&self, caller: &Caller) -> ListToolsResult {
        self.discover_for(caller.identity.as_ref()).await;
        let tools = match (self.exposure, &self.core) {
            (ToolExposure::Direct, Some(core)) => {
                let mut tools = self.snapshot().catalog.tools.clone();
                tools.extend(core::tools(core.is_admin(caller)));
                tools
            }
            (ToolExposure::Direct, None) => self.snapshot().catalog.tools.clone(),
            (ToolExposure::Meta, _) => meta::tools(),
        };
        ListToolsResult::with_all_items(tools)
    }

    /// `tools/call` in its `mcp.tool_call` span, a child of the agent's trace if it sent one.
    async fn tool_call(
        &self,
        request: CallToolRequestParams,
        caller: &Caller,
        headers: Option<&http::HeaderMap>,
    ) -> UpstreamResult {
        let span = tracing::info_span!(
            "mcp.tool_call",
            "mcp.method.name" = "tools/call",
            "gen_ai.tool.name" = %request.name,
            "mcp.exposed_tool" = %request.name,
            "mcp.server" = tracing::field::Empty,
            "enduser.hash" = tracing::field::Empty,
            "otel.kind" = "server",
        );
        crate::telemetry::propagation::adopt_remote_parent(&span, headers, request.meta.as_ref());
        tracing::Instrument::instrument(self.tool_call_in_span(request, caller), span).await
    }

    async fn tool_call_in_span(&self, mut request: CallToolRequestParams, caller: &Caller) -> UpstreamResult {
        if let Some(identity) = &caller.identity {
            tracing::Span::current().record("enduser.hash", identity.subject_hash().as_str());
        }
        if self.exposure == ToolExposure::Meta && meta::is_meta_tool(&request.name) {
            if request.name != "call_tool" {
                self.discover_for(caller.identity.as_ref()).await;
            }
            return meta::call(self, &request.name, request.arguments.unwrap_or_default(), caller).await.into();
        }
        let resume = rounds::Resume::take_from(&mut request);
        let mut result = self.dispatch(&request.name, request.arguments.clone(), resume, caller).await;
        // A tool of an auth server that has not listed for anyone yet: list it as this user, once.
        if matches!(result, Err(routing::Error::ToolNotFound { .. })) && caller.identity.is_some() {
            self.discover_for(caller.identity.as_ref()).await;
            result = self.dispatch(&request.name, request.arguments, rounds::Resume::default(), caller).await;
        }
        match result {
            Ok(response) => response,
            Err(e) => error::tool_error(&e).into(),
        }
    }

    fn resources(&self) -> ListResourcesResult {
        let mut resources = self.snapshot().catalog.resources.clone();
        let description = if self.sign_in {
            "Your sign-in state at each server (SSO: exchanged, forwarded, failed)"
        } else {
            "Each server's state (sign-in is not enabled on this muster)"
        };
        resources.push(
            rmcp::model::Resource::new(auth_status::URI, "auth-status")
                .with_description(description)
                .with_mime_type("application/json"),
        );
        ListResourcesResult::with_all_items(resources)
    }

    fn resource_templates(&self) -> ListResourceTemplatesResult {
        ListResourceTemplatesResult::with_all_items(self.snapshot().catalog.resource_templates.clone())
    }

    async fn resource_read(
        &self,
        request: ReadResourceRequestParams,
        caller: &Caller,
    ) -> Result<ReadResourceResult, ErrorData> {
        let snapshot = self.snapshot();
        if request.uri == auth_status::URI {
            let text = if self.sign_in {
                serde_json::to_string(&auth_status::compute(&snapshot, caller.identity.as_deref()).await)
            } else {
                serde_json::to_string(&auth_status::compute_without_sign_in(&snapshot))
            }
            .unwrap_or_default();
            let contents =
                rmcp::model::ResourceContents::text(text, auth_status::URI).with_mime_type("application/json");
            return Ok(ReadResourceResult::new(vec![contents]));
        }
        let (backend, uri) = resource_backend(&snapshot, &request.uri).map_err(|e| error::protocol_error(&e))?;
        let mut params = request;
        params.uri = uri;
        backend.read_resource(params, caller).await.map_err(|e| error::protocol_error(&e.into()))
    }

    /// Subscribes upstream (once for all agents), and notes the subscription in the agent's
    /// session, so an unsubscribe posted to another replica finds it here.
    async fn resource_subscribe(&self, request: SubscribeRequestParams, caller: &Caller) -> Result<(), ErrorData> {
        let snapshot = self.snapshot();
        let agents_uri = request.uri.clone();
        let (backend, uri) = resource_backend(&snapshot, &request.uri).map_err(|e| error::protocol_error(&e))?;
        let mut params = request;
        params.uri = uri;
        backend.subscribe(params, caller).await.map_err(|e| error::protocol_error(&e.into()))?;
        if let ReplyPath::Session { session, .. } = &caller.reply_path {
            session.subscribed(&agents_uri, caller.identity.clone());
        }
        Ok(())
    }

    async fn resource_unsubscribe(&self, request: UnsubscribeRequestParams, caller: &Caller) -> Result<(), ErrorData> {
        let snapshot = self.snapshot();
        if let ReplyPath::Session { session, .. } = &caller.reply_path {
            session.unsubscribed(&request.uri);
        }
        let (backend, uri) = resource_backend(&snapshot, &request.uri).map_err(|e| error::protocol_error(&e))?;
        let mut params = request;
        params.uri = uri;
        backend.unsubscribe(params, caller).await.map_err(|e| error::protocol_error(&e.into()))
    }

    fn prompts(&self) -> ListPromptsResult {
        ListPromptsResult::with_all_items(self.snapshot().catalog.prompts.clone())
    }

    async fn prompt(&self, request: GetPromptRequestParams, caller: &Caller) -> Result<GetPromptResult, ErrorData> {
        let snapshot = self.snapshot();
        let mut params = request;
        let (backend, resolved) =
            prompt_backend(&snapshot, &params.name, params.arguments.take()).map_err(|e| error::protocol_error(&e))?;
        params.name = resolved.tool;
        params.arguments = resolved.arguments;
        backend.get_prompt(params, caller).await.map_err(|e| error::protocol_error(&e.into()))
    }

    async fn completion(&self, request: CompleteRequestParams, caller: &Caller) -> Result<CompleteResult, ErrorData> {
        let snapshot = self.snapshot();
        let mut params = request;
        let backend = match &mut params.r#ref {
            Reference::Prompt(prompt) => {
                if let Some(values) = instance_completion(&snapshot, &prompt.name, &params.argument) {
                    return Ok(CompleteResult::new(values));
                }
                // A family prompt's other arguments complete at the member the context names.
                let arguments = params.context.as_mut().and_then(|c| c.arguments.take()).map(|map| {
                    map.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect::<rmcp::model::JsonObject>()
                });
                let (backend, resolved) = match prompt_backend(&snapshot, &prompt.name, arguments) {
                    Ok(found) => found,
                    // No member chosen yet: nothing to suggest until the instance is set.
                    Err(routing::Error::InstanceMissing { .. }) => return Ok(CompleteResult::default()),
                    Err(e) => return Err(error::protocol_error(&e)),
                };
                if let Some(context) = params.context.as_mut() {
                    context.arguments = resolved.arguments.map(|map| {
                        map.into_iter()
                            .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                            .collect()
                    });
                }
                prompt.name = resolved.tool;
                backend
            }
            Reference::Resource(resource) => {
                let (backend, uri) =
                    resource_backend(&snapshot, &resource.uri).map_err(|e| error::protocol_error(&e))?;
                resource.uri = uri;
                backend
            }
            _ => return Err(ErrorData::invalid_params("unsupported completion reference", None)),
        };
        backend.complete(params, caller).await.map_err(|e| error::protocol_error(&e.into()))
    }
}
