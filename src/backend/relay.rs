//! The upstream side of a backend's session: an rmcp `ClientHandler` that relays what the
//! upstream sends during calls back to the agent session that made the call. On streamable-HTTP
//! sessions, what comes on a call's own reply goes to its caller in `direct_post.rs`; this handler
//! sees what comes on the session's GET stream (and everything, on stdio and `sse` sessions).
//!
//! - Progress notifications carry the token muster or rmcp put on the upstream request (for a
//!   direct call, its request id); `Relay` maps it back to the calling agent and the agent's own
//!   token.
//! - Sampling, elicitation and roots requests, and log messages, have no such token. They go to
//!   the calling agent when every call in flight on this backend comes from one agent session;
//!   otherwise they are refused (requests) or dropped (logs) rather than sent to the wrong user.
//! - `list_changed` notifications re-list the backend (through its actor).
//! - Resource updates go to the agents that subscribed to that URI.

#![allow(deprecated)] // sampling, roots and logging are deprecated by SEP-2577 but still in use

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rmcp::model::{
    ClientCapabilities, ClientConfig, ClientResult, CreateMessageRequestParams, CreateMessageResult,
    ElicitRequestParams, ElicitResult, Implementation, ListRootsResult, LoggingMessageNotification,
    LoggingMessageNotificationParam, ProgressNotification, ProgressNotificationParam, ProgressToken, Request,
    RequestNoParam, ResourceUpdatedNotification, ResourceUpdatedNotificationParam, ServerNotification, ServerRequest,
};
use rmcp::service::{NotificationContext, RequestContext, RoleClient};
use rmcp::{ClientHandler, ErrorData};
use std::sync::Arc;

use super::ListChanged;
use crate::caller::Caller;
use crate::caller::ReplyPath;

/// Per-backend routing state shared by its calls and its upstream handler.
pub struct Relay {
    server: String,
    next_call: AtomicU64,
    calls: Mutex<HashMap<u64, RelayedCall>>,
    /// URI -> (agent id, agent session) of the agents subscribed to it.
    subscriptions: Mutex<HashMap<String, Vec<Subscriber>>>,
}

type Subscriber = (u64, ReplyPath);

struct RelayedCall {
    upstream_token: ProgressToken,
    agent_id: u64,
    reply_path: ReplyPath,
    agent_token: Option<ProgressToken>,
}

/// Removes its call from the relay when the call ends.
pub struct CallGuard<'a> {
    relay: &'a Relay,
    id: u64,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut calls) = self.relay.calls.lock() {
            calls.remove(&self.id);
        }
    }
}

impl Relay {
    pub fn new(server: String) -> Self {
        Self { server, next_call: AtomicU64::new(0), calls: Mutex::default(), subscriptions: Mutex::default() }
    }

    pub fn begin_call(&self, upstream_token: &ProgressToken, caller: &Caller) -> CallGuard<'_> {
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        let entry = RelayedCall {
            upstream_token: upstream_token.clone(),
            agent_id: caller.agent_id,
            reply_path: caller.reply_path.clone(),
            agent_token: caller.progress_token.clone(),
        };
        if let Ok(mut calls) = self.calls.lock() {
            calls.insert(id, entry);
        }
        CallGuard { relay: self, id }
    }

    /// Records `caller` as subscribed to `uri`; true when it is the first subscriber (so the
    /// upstream subscription must be made).
    pub fn subscribe(&self, uri: &str, caller: &Caller) -> bool {
        let Ok(mut subs) = self.subscriptions.lock() else { return true };
        let list = subs.entry(uri.to_owned()).or_default();
        let first = list.is_empty();
        if !list.iter().any(|(id, _)| *id == caller.agent_id) {
            list.push((caller.agent_id, caller.reply_path.session_only()));
        }
        first
    }

    /// Removes `caller`'s subscription; true when nobody is left (so the upstream one can end).
    pub fn unsubscribe(&self, uri: &str, caller: &Caller) -> bool {
        let Ok(mut subs) = self.subscriptions.lock() else { return true };
        let Some(list) = subs.get_mut(uri) else { return false };
        list.retain(|(id, _)| *id != caller.agent_id);
        let last = list.is_empty();
        if last {
            subs.remove(uri);
        }
        last
    }

    /// The agent whose progress token rmcp replaced with `token`, and that agent's own token.
    fn progress_target(&self, token: &ProgressToken) -> Option<(ReplyPath, ProgressToken)> {
        let calls = self.calls.lock().ok()?;
        calls
            .values()
            .find(|c| &c.upstream_token == token)
            .and_then(|c| Some((c.reply_path.clone(), c.agent_token.clone()?)))
    }

    /// The one agent session with calls in flight, if there is exactly one.
    fn sole_caller(&self) -> Option<ReplyPath> {
        let calls = self.calls.lock().ok()?;
        let mut agents = calls.values();
        let first = agents.next()?;
        agents.all(|c| c.agent_id == first.agent_id).then(|| first.reply_path.clone())
    }

    fn route_request_error(&self, what: &str) -> ErrorData {
        ErrorData::internal_error(
            format!(
                "muster cannot route this {what} request from {}: no single agent session has a call in flight",
                self.server
            ),
            None,
        )
    }
}

/// The rmcp client handler of one upstream session.
#[derive(Clone)]
pub(super) struct UpstreamHandler {
    relay: Arc<Relay>,
    /// The backend actor, for the shared session; user sessions have none (see ARCHITECTURE.md).
    actor: Option<actix::WeakRecipient<ListChanged>>,
    generation: u64,
}

impl UpstreamHandler {
    pub(super) fn new(relay: Arc<Relay>, actor: Option<actix::WeakRecipient<ListChanged>>, generation: u64) -> Self {
        Self { relay, actor, generation }
    }

    fn list_changed(&self) {
        if let Some(actor) = self.actor.as_ref().and_then(actix::WeakRecipient::upgrade) {
            actor.do_send(ListChanged { generation: self.generation });
        }
    }
}

fn client_config() -> ClientConfig {
    let capabilities: ClientCapabilities = serde_json::from_value(serde_json::json!({
        "sampling": {},
        "elicitation": {"form": {}, "url": {}},
        "roots": {"listChanged": true},
    }))
    .unwrap_or_default();
    ClientConfig::new(capabilities, Implementation::new("muster", env!("CARGO_PKG_VERSION")))
}

impl UpstreamHandler {
    /// A 2026-07-28 session has no GET stream: list changes come on a `subscriptions/listen`
    /// request, which this keeps open until `ended` (or the session) ends, and each becomes
    /// `ListChanged`, as a 2025 session's notification does (ADR 0012).
    pub(super) async fn follow_list_changes(
        self,
        peer: rmcp::Peer<RoleClient>,
        ended: tokio_util::sync::CancellationToken,
    ) {
        if self.actor.is_none() {
            return; // a user's session: the shared one re-lists
        }
        let filter = rmcp::model::SubscriptionFilter::builder()
            .tools_list_changed()
            .prompts_list_changed()
            .resources_list_changed()
            .build();
        let mut subscription = match peer.listen(filter).await {
            Ok(subscription) => subscription,
            Err(e) => {
                tracing::debug!(server = %self.relay.server, error = %super::failure::describe(&e), "no subscriptions/listen upstream");
                return;
            }
        };
        loop {
            tokio::select! {
                next = subscription.next() => match next {
                    Ok(Some(_)) => self.list_changed(),
                    Ok(None) | Err(_) => return,
                },
                () = ended.cancelled() => {
                    let _ = subscription.cancel().await;
                    return;
                }
            }
        }
    }
}

impl ClientHandler for UpstreamHandler {
    fn get_info(&self) -> ClientConfig {
        client_config()
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let agent = self.relay.sole_caller().ok_or_else(|| self.relay.route_request_error("sampling"))?;
        match agent.request(ServerRequest::CreateMessageRequest(Request::new(params))).await? {
            ClientResult::CreateMessageResult(result) => Ok(*result),
            _ => Err(ErrorData::internal_error("the agent answered sampling with another result type", None)),
        }
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let agent = self.relay.sole_caller().ok_or_else(|| self.relay.route_request_error("elicitation"))?;
        match agent.request(ServerRequest::ElicitRequest(Request::new(params))).await? {
            ClientResult::ElicitResult(result) => Ok(result),
            _ => Err(ErrorData::internal_error("the agent answered elicitation with another result type", None)),
        }
    }

    async fn list_roots(&self, _context: RequestContext<RoleClient>) -> Result<ListRootsResult, ErrorData> {
        let agent = self.relay.sole_caller().ok_or_else(|| self.relay.route_request_error("roots"))?;
        match agent.request(ServerRequest::ListRootsRequest(RequestNoParam::default())).await? {
            ClientResult::ListRootsResult(result) => Ok(result),
            _ => Err(ErrorData::internal_error("the agent answered roots/list with another result type", None)),
        }
    }

    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        if let Some((agent, agent_token)) = self.relay.progress_target(&params.progress_token) {
            let mut params = params;
            params.progress_token = agent_token;
            agent.notify(ServerNotification::ProgressNotification(ProgressNotification::new(params))).await;
        }
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        if let Some(agent) = self.relay.sole_caller() {
            agent.notify(ServerNotification::LoggingMessageNotification(LoggingMessageNotification::new(params))).await;
        }
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let agents: Vec<ReplyPath> = match self.relay.subscriptions.lock() {
            Ok(subs) => subs.get(&params.uri).map(|l| l.iter().map(|(_, a)| a.clone()).collect()).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        for agent in agents {
            let update = ResourceUpdatedNotification::new(params.clone());
            agent.notify_session(ServerNotification::ResourceUpdatedNotification(update)).await;
        }
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.list_changed();
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.list_changed();
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.list_changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caller::{AgentChannel, AgentReply};
    use tokio_util::sync::CancellationToken;

    /// An agent session that is never asked anything here.
    struct Agent;

    impl AgentChannel for Agent {
        fn notify(&self, _: rmcp::model::ServerNotification) {}
        fn expect_reply(&self) -> (rmcp::model::RequestId, tokio::sync::oneshot::Receiver<AgentReply>) {
            (rmcp::model::RequestId::Number(0), tokio::sync::oneshot::channel().1)
        }
        fn forget_reply(&self, _: &rmcp::model::RequestId) {}
    }

    /// A caller on a fresh agent session with its own `agent_id`.
    fn caller(agent_id: u64) -> Caller {
        let ct = CancellationToken::new();
        let reply_path = ReplyPath::Session { session: Arc::new(Agent), reply: None, ct: ct.clone() };
        Caller { agent_id, reply_path, ct, progress_token: None, identity: None, loopback: false }
    }

    /// Which of `callers` a server-to-client request would go to.
    fn sole_agent(relay: &Relay, callers: &[&Caller]) -> Option<u64> {
        let ReplyPath::Session { session, .. } = relay.sole_caller()? else { return None };
        callers
            .iter()
            .find(|c| matches!(&c.reply_path, ReplyPath::Session { session: theirs, .. } if Arc::ptr_eq(theirs, &session)))
            .map(|c| c.agent_id)
    }

    fn token(n: i64) -> ProgressToken {
        ProgressToken(rmcp::model::NumberOrString::Number(n))
    }

    #[test]
    fn one_agent_with_two_calls_gets_the_request() {
        let relay = Relay::new("up".to_owned());
        let (agent, other) = (caller(1), caller(2));
        let _first = relay.begin_call(&token(1), &agent);
        let _second = relay.begin_call(&token(2), &agent);
        assert_eq!(sole_agent(&relay, &[&agent, &other]), Some(agent.agent_id));
    }

    #[test]
    fn two_agents_with_calls_in_flight_get_nothing() {
        let relay = Relay::new("up".to_owned());
        let (alice, bob) = (caller(1), caller(2));
        let _alice = relay.begin_call(&token(1), &alice);
        let bobs = relay.begin_call(&token(2), &bob);
        assert_eq!(
            sole_agent(&relay, &[&alice, &bob]),
            None,
            "neither agent may see a request that may be the other's"
        );
        drop(bobs);
        assert_eq!(
            sole_agent(&relay, &[&alice, &bob]),
            Some(alice.agent_id),
            "once bob's call ends, alice is the sole caller"
        );
    }

    #[test]
    fn no_call_in_flight_means_no_agent() {
        let relay = Relay::new("up".to_owned());
        assert!(relay.sole_caller().is_none());
        let agent = caller(1);
        drop(relay.begin_call(&token(1), &agent));
        assert!(relay.sole_caller().is_none(), "an ended call leaves no caller behind");
    }
}
