//! Multi round-trip requests (MCP 2026-07-28, SEP-2322) for agents without a session
//! ([ADR 0011](../../docs/adr/0011-multi-round-trip-through-the-gateway.md)).
//!
//! A sessionless agent cannot be asked anything while its request runs: the upstream's question
//! (sampling, elicitation, roots, which a 2025 upstream sends mid-call) goes back as the answer
//! to the request, an `InputRequiredResult` whose `inputRequests` hold the questions and whose
//! `requestState` is sealed (`store::Keyring`). The upstream call stays open in its own task;
//! the agent's retry carries `inputResponses` and the state, which names the call and the round.
//!
//! The state is bound to the caller (issuer and subject) and the tool, so another user, or
//! another tool, cannot continue the call; a state is good for one retry only (its round), and a
//! call no agent comes back to is cancelled after `ROUND_TIMEOUT`. Questions that need a
//! capability the agent did not declare in `_meta` are refused to the upstream with -32021, and
//! a call that then fails answers the agent with -32021 too (`error::missing_capability`).
//!
//! Calls live in this process: a retry that reaches another replica is refused (it names a call
//! this replica does not hold).
//!
//! An upstream that speaks 2026-07-28 answers `input_required` itself: its input requests go to
//! the agent under its own keys, and its `requestState` travels sealed inside muster's
//! (`State::Relayed`), so the agent can neither read nor alter it; the retry opens it and sends
//! the request again with the agent's `inputResponses` and the upstream's state
//! ([ADR 0012](../../docs/adr/0012-upstreams-in-their-newest-revision.md)). Such a state is
//! good once on any replica: its first use marks it spent in the shared store (`spend`), so a
//! confirmation replayed later, here or elsewhere, is refused. With the store down it is not
//! marked (degraded, as sessions are). It goes back only to the server that issued it: a family
//! tool's retry naming another member is refused.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use rmcp::ErrorData;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientResult, CreateMessageResult, ElicitResult, GetPromptRequestParams,
    InputRequest, InputRequiredResult, InputResponses, ListRootsResult, ServerRequest, ServerResult,
};
use rmcp::service::{RequestContext, RoleServer};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::error;
use crate::backend::UpstreamResult;
use crate::caller::{AgentReply, QUESTIONS, Question};
use crate::store::{Keyring, Store};

/// How long a call waits for the agent's retry before it is cancelled.
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(300);
/// After a question, how long more questions of the same call may take to arrive and join it in
/// one `InputRequiredResult`: a 2025 upstream that asks several at once sends them one after the
/// other, and nothing says when it has finished asking (ADR 0012).
const GATHER: Duration = Duration::from_millis(50);
/// Calls waiting for their agents at once; past this the oldest idle one is cancelled.
const MAX_WAITING: u64 = 10_000;
/// Calls to one upstream server that may wait for their agents at once. Each holds one of the
/// server's few concurrent upstream requests (`backend::http::MAX_CONCURRENT_REQUESTS`, 6), so
/// past this the oldest waiting call to that server is cancelled (its agent's retry is refused):
/// agents that ask and never come back cannot take the server from everyone else.
pub const MAX_WAITING_PER_SERVER: usize = 3;

/// The sessionless calls waiting for their agents' answers.
pub struct Rounds {
    calls: moka::sync::Cache<u64, Arc<Waiting>>,
    /// The waiting calls of each upstream server (`Request::server`), oldest first.
    by_server: std::sync::Mutex<std::collections::HashMap<String, std::collections::VecDeque<u64>>>,
    keyring: Keyring,
    /// Where a relayed state is marked spent (`spend`).
    store: Store,
    next_call: AtomicU64,
}

/// What a sessionless request brings to a round: who asks, for which tool, what it declared,
/// and its retry (if it is one).
pub struct Request {
    /// The caller's `Identity::key`, empty without sign-in.
    pub owner: String,
    /// What the state is bound to besides the owner (the tool's name).
    pub subject: String,
    /// The capabilities in this request's `_meta`.
    pub declared: Option<ClientCapabilities>,
    /// The upstream server the request goes to (or, unresolved, its subject): whose concurrent
    /// requests a waiting call holds.
    pub server: String,
    pub request_state: Option<String>,
    pub input_responses: Option<InputResponses>,
}

/// What a retry of a relayed round sends upstream: the upstream's own state and the agent's
/// answers (both `None` for a first request).
#[derive(Default)]
pub struct Resume {
    pub request_state: Option<String>,
    pub input_responses: Option<InputResponses>,
}

impl Resume {
    /// Takes the upstream's state and the agent's answers out of a `tools/call`.
    pub fn take_from(request: &mut CallToolRequestParams) -> Self {
        Self { request_state: request.request_state.take(), input_responses: request.input_responses.take() }
    }
}

/// How a round ends for the agent.
pub enum Outcome {
    Complete(Box<UpstreamResult>),
    InputRequired(InputRequiredResult),
}

/// A call between rounds.
struct Waiting {
    /// Cancels the upstream call (eviction, or muster gives up).
    ct: CancellationToken,
    round: tokio::sync::Mutex<Round>,
}

struct Round {
    /// The round whose state the agent holds; a retry must name it.
    number: u64,
    call: JoinHandle<Result<UpstreamResult, ErrorData>>,
    questions: mpsc::Receiver<Question>,
    /// Questions the agent has been asked and not answered, by key.
    asked: BTreeMap<String, Asked>,
    next_key: u64,
    /// A question was refused for a capability the agent did not declare.
    missing: Option<&'static str>,
}

struct Asked {
    request: InputRequest,
    answer: oneshot::Sender<AgentReply>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
enum State {
    /// A call muster holds open (a 2025 upstream asked mid-call), and the round the agent is at.
    Held { call: u64, round: u64 },
    /// A 2026-07-28 upstream's own `requestState`, to send back with the answers to the
    /// `server` that issued it (a family tool's retry cannot name another member); good once
    /// (`once`, a random name to mark it spent by) until `expires` (seconds since the epoch).
    Relayed { upstream: Option<String>, server: String, expires: u64, once: String },
}

impl Rounds {
    pub fn new(keyring: Keyring, store: Store) -> Self {
        let calls = moka::sync::Cache::builder()
            .max_capacity(MAX_WAITING)
            .time_to_idle(ROUND_TIMEOUT)
            // A call put back after its next round replaces itself: that is not an eviction.
            .eviction_listener(|_, waiting: Arc<Waiting>, cause| {
                if cause != moka::notification::RemovalCause::Replaced {
                    waiting.ct.cancel();
                }
            })
            .build();
        Self { calls, by_server: std::sync::Mutex::default(), keyring, store, next_call: AtomicU64::new(1) }
    }

    /// Runs one round of a request: a first request starts `call` (given where its questions go
    /// and its cancellation), a retry continues the call its state names.
    pub async fn run<F>(
        &self,
        request: Request,
        call: impl FnOnce(Resume, mpsc::Sender<Question>, CancellationToken) -> F,
    ) -> Result<Outcome, ErrorData>
    where
        F: Future<Output = Result<UpstreamResult, ErrorData>> + Send + 'static,
    {
        let (call_id, number) = match request.request_state.as_deref().map(|state| self.open(state, &request)) {
            None => return self.start(Resume::default(), call, &request).await,
            Some(None) => return Err(error::request_state_refused()),
            Some(Some(State::Relayed { upstream, server, expires, once })) => {
                if expires < now() || server != request.server || !self.spend(&once, expires).await {
                    return Err(error::request_state_refused());
                }
                let resume = Resume { request_state: upstream, input_responses: request.input_responses.clone() };
                return self.start(resume, call, &request).await;
            }
            Some(Some(State::Held { call, round })) => (call, round),
        };
        let waiting = self.calls.get(&call_id).ok_or_else(error::request_state_refused)?;
        {
            let mut round = waiting.round.lock().await;
            if round.number != number {
                return Err(error::request_state_refused());
            }
            // This state is spent: a second use of it (a replay) is refused from here on.
            round.number += 1;
            round.deliver(request.input_responses.as_ref());
        }
        self.next(call_id, waiting, &request).await
    }

    /// Starts `call` in a task of its own and runs its first round.
    async fn start<F>(
        &self,
        resume: Resume,
        call: impl FnOnce(Resume, mpsc::Sender<Question>, CancellationToken) -> F,
        request: &Request,
    ) -> Result<Outcome, ErrorData>
    where
        F: Future<Output = Result<UpstreamResult, ErrorData>> + Send + 'static,
    {
        let (ask, questions) = mpsc::channel(QUESTIONS);
        let ct = CancellationToken::new();
        let call = tokio::spawn(call(resume, ask, ct.clone()));
        let round = Round { number: 0, call, questions, asked: BTreeMap::new(), next_key: 1, missing: None };
        let waiting = Arc::new(Waiting { ct, round: tokio::sync::Mutex::new(round) });
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        self.next(id, waiting, request).await
    }

    /// Waits for the call's end or its next questions, and answers the agent.
    async fn next(&self, id: u64, waiting: Arc<Waiting>, request: &Request) -> Result<Outcome, ErrorData> {
        // An agent that leaves while the call runs ends it: its state is spent or was never sent.
        let leaving = waiting.ct.clone().drop_guard();
        let mut round = waiting.round.lock().await;
        let finished = round.wait(request.declared.as_ref()).await;
        match finished {
            Some(Ok(UpstreamResult::Result(ServerResult::InputRequiredResult(asked)))) => {
                self.calls.invalidate(&id);
                self.stop_waiting(&request.server, id);
                self.relay(asked, request)
            }
            Some(result) => {
                self.calls.invalidate(&id);
                self.stop_waiting(&request.server, id);
                match round.missing {
                    Some(capability) if failed(&result) => Err(error::missing_capability(capability)),
                    _ => result.map(|result| Outcome::Complete(Box::new(result))),
                }
            }
            None => {
                let state = self.seal(&State::Held { call: id, round: round.number }, request)?;
                let asked = round.asked.iter().map(|(key, asked)| (key.clone(), asked.request.clone())).collect();
                drop(round);
                self.calls.insert(id, waiting);
                self.wait(&request.server, id);
                leaving.disarm();
                Ok(Outcome::InputRequired(InputRequiredResult::new(Some(asked), Some(state))))
            }
        }
    }

    /// Notes call `id` as waiting on `server`; cancels that server's oldest waiting calls past
    /// `MAX_WAITING_PER_SERVER`.
    fn wait(&self, server: &str, id: u64) {
        let evicted: Vec<u64> = {
            let Ok(mut by_server) = self.by_server.lock() else { return };
            let waiting = by_server.entry(server.to_owned()).or_default();
            waiting.retain(|w| *w != id && self.calls.contains_key(w));
            waiting.push_back(id);
            let over = waiting.len().saturating_sub(MAX_WAITING_PER_SERVER);
            waiting.drain(..over).collect()
        };
        for old in evicted {
            tracing::info!(
                server,
                "a call waiting for its agent's answer was cancelled: newer ones wait on the same server"
            );
            // Cancelled here, not by the cache's eviction listener, which may run later.
            if let Some(waiting) = self.calls.remove(&old) {
                waiting.ct.cancel();
            }
        }
    }

    /// Call `id` no longer waits on `server`.
    fn stop_waiting(&self, server: &str, id: u64) {
        if let Ok(mut by_server) = self.by_server.lock()
            && let Some(waiting) = by_server.get_mut(server)
        {
            waiting.retain(|w| *w != id);
            if waiting.is_empty() {
                by_server.remove(server);
            }
        }
    }

    /// A 2026-07-28 upstream's `input_required`, for the agent: its input requests as they are
    /// (each needs a capability the request declares, else -32021), its state sealed in muster's.
    fn relay(&self, asked: InputRequiredResult, request: &Request) -> Result<Outcome, ErrorData> {
        let requests = asked.input_requests.unwrap_or_default();
        for input in requests.values() {
            let capability = capability_of(input);
            if !declares(request.declared.as_ref(), capability) {
                return Err(error::missing_capability(capability));
            }
        }
        let expires = now() + ROUND_TIMEOUT.as_secs();
        let once = format!("{:032x}", rand::random::<u128>());
        let relayed = State::Relayed { upstream: asked.request_state, server: request.server.clone(), expires, once };
        let state = self.seal(&relayed, request)?;
        let requests = (!requests.is_empty()).then_some(requests);
        Ok(Outcome::InputRequired(InputRequiredResult::new(requests, Some(state))))
    }

    /// Marks the relayed state named `once` spent until it `expires`: false if it already was.
    async fn spend(&self, once: &str, expires: u64) -> bool {
        // Past `expires` by a margin: replicas' clocks differ, and a state is taken up to the second.
        let ttl = Duration::from_secs(expires.saturating_sub(now()) + 60);
        match self.store.set_if_absent(&format!("round-spent:{once}"), b"1", ttl).await {
            Ok(first) => first,
            Err(e) => {
                tracing::warn!(error = %e, "a relayed requestState could not be marked spent; it is accepted");
                true
            }
        }
    }

    fn seal(&self, state: &State, request: &Request) -> Result<String, ErrorData> {
        let plain = serde_json::to_vec(state).map_err(|_| error::request_state_unavailable())?;
        let sealed = self.keyring.seal(&plain, &bound_to(request)).map_err(|_| error::request_state_unavailable())?;
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed))
    }

    fn open(&self, state: &str, request: &Request) -> Option<State> {
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(state).ok()?;
        let plain = self.keyring.open(&sealed, &bound_to(request)).ok()?;
        serde_json::from_slice(&plain).ok()
    }
}

impl Round {
    /// Hands each answered question its answer; what is missing or unreadable stays asked.
    fn deliver(&mut self, responses: Option<&InputResponses>) {
        let Some(responses) = responses else { return };
        let keys: Vec<String> = self.asked.keys().filter(|key| responses.contains_key(*key)).cloned().collect();
        for key in keys {
            let Some(reply) = responses.get(&key).and_then(|value| decode_reply(&self.asked[&key].request, value))
            else {
                continue;
            };
            if let Some(asked) = self.asked.remove(&key) {
                let _ = asked.answer.send(Ok(reply));
            }
        }
    }

    /// The call's result, or `None` when it has questions for the agent. A question the agent's
    /// declared capabilities do not cover is refused to the upstream here, and remembered.
    async fn wait(&mut self, declared: Option<&ClientCapabilities>) -> Option<Result<UpstreamResult, ErrorData>> {
        loop {
            if !self.asked.is_empty() {
                // Questions still open (unanswered or unreadable): ask them again, with any new
                // ones, those asked at the same time included.
                while let Ok(Some(question)) = tokio::time::timeout(GATHER, self.questions.recv()).await {
                    self.take(question, declared);
                }
                if !self.asked.is_empty() {
                    return None;
                }
            }
            tokio::select! {
                result = &mut self.call => {
                    return Some(result.map_err(|_| error::call_lost()).and_then(|result| result));
                }
                Some(question) = self.questions.recv() => self.take(question, declared),
            }
        }
    }

    fn take(&mut self, question: Question, declared: Option<&ClientCapabilities>) {
        let Some((capability, request)) = input_request(question.request) else {
            let _ = question.answer.send(Err(ErrorData::invalid_request(
                "muster relays only sampling, elicitation and roots requests to a sessionless agent",
                None,
            )));
            return;
        };
        if !declares(declared, capability) {
            self.missing = Some(capability);
            let _ = question.answer.send(Err(error::missing_capability(capability)));
            return;
        }
        let key = format!("{capability}-{}", self.next_key);
        self.next_key += 1;
        self.asked.insert(key, Asked { request, answer: question.answer });
    }
}

impl super::GatewayServer {
    /// A sessionless `tools/call`, or its retry with `inputResponses`: one round.
    pub(super) async fn tool_call_in_rounds(
        &self,
        rounds: &Rounds,
        mut request: CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<Outcome, ErrorData> {
        let caller = self.caller(context);
        let headers = context.extensions.get::<http::request::Parts>().map(|p| p.headers.clone());
        let catalog = &self.snapshot().catalog;
        let server = crate::routing::resolve::resolve_tool(catalog, &request.name, request.arguments.clone())
            .map_or_else(|_| request.name.to_string(), |resolved| resolved.server);
        let round = Request {
            owner: caller.identity.as_ref().map(|i| i.key()).unwrap_or_default(),
            subject: format!("tools/call\n{}", request.name),
            declared: context.meta.client_capabilities(),
            server,
            request_state: request.request_state.take(),
            input_responses: request.input_responses.take(),
        };
        let gateway = self.clone();
        let call = move |resume: Resume, questions, ct| async move {
            let caller = asking(caller, questions, ct);
            (request.request_state, request.input_responses) = (resume.request_state, resume.input_responses);
            Ok(gateway.tool_call(request, &caller, headers.as_ref()).await)
        };
        tokio::select! {
            outcome = rounds.run(round, call) => outcome,
            () = context.ct.cancelled() => Err(ErrorData::internal_error("the agent's request was cancelled", None)),
        }
    }

    /// A sessionless `prompts/get`, or its retry: one round, as a tool call's.
    pub(super) async fn prompt_in_rounds(
        &self,
        rounds: &Rounds,
        mut request: GetPromptRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<Outcome, ErrorData> {
        let caller = self.caller(context);
        let round = Request {
            owner: caller.identity.as_ref().map(|i| i.key()).unwrap_or_default(),
            subject: format!("prompts/get\n{}", request.name),
            declared: context.meta.client_capabilities(),
            server: crate::routing::resolve::resolve_prompt(&self.snapshot().catalog, &request.name, None)
                .map_or_else(|_| request.name.clone(), |resolved| resolved.server),
            request_state: request.request_state.take(),
            input_responses: request.input_responses.take(),
        };
        let gateway = self.clone();
        let call = move |resume: Resume, questions, ct| async move {
            let caller = asking(caller, questions, ct);
            request.request_state = resume.request_state;
            request.input_responses = resume.input_responses;
            let prompt = gateway.prompt(request, &caller).await?;
            Ok(UpstreamResult::Result(rmcp::model::ServerResult::GetPromptResult(prompt)))
        };
        tokio::select! {
            outcome = rounds.run(round, call) => outcome,
            () = context.ct.cancelled() => Err(ErrorData::internal_error("the agent's request was cancelled", None)),
        }
    }
}

/// The caller of a call in rounds: its questions go to `questions`, and `ct` (not the first
/// request's) cancels it.
fn asking(
    mut caller: crate::caller::Caller,
    questions: mpsc::Sender<Question>,
    ct: CancellationToken,
) -> crate::caller::Caller {
    if let crate::caller::ReplyPath::Rmcp { questions: asks, .. } = &mut caller.reply_path {
        *asks = Some(questions);
    }
    caller.ct = ct;
    caller
}

/// The state is good only for this caller and this request (method and name).
fn bound_to(request: &Request) -> String {
    format!("request-state\n{}\n{}", request.owner, request.subject)
}

fn failed(result: &Result<UpstreamResult, ErrorData>) -> bool {
    result.as_ref().is_ok_and(UpstreamResult::is_tool_error) || result.is_err()
}

/// A question as an input request, with the capability it needs.
fn input_request(request: ServerRequest) -> Option<(&'static str, InputRequest)> {
    match request {
        ServerRequest::CreateMessageRequest(r) => Some(("sampling", InputRequest::CreateMessage(r))),
        ServerRequest::ElicitRequest(r) => Some(("elicitation", InputRequest::Elicitation(r))),
        ServerRequest::ListRootsRequest(r) => Some(("roots", InputRequest::ListRoots(r))),
        _ => None,
    }
}

/// The capability an input request needs.
fn capability_of(request: &InputRequest) -> &'static str {
    match request {
        InputRequest::CreateMessage(_) => "sampling",
        InputRequest::Elicitation(_) => "elicitation",
        InputRequest::ListRoots(_) => "roots",
        // A kind of input request this rmcp does not know: no declared capability covers it.
        _ => "unknown input request",
    }
}

/// Seconds since the epoch (a relayed state's expiry).
fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn declares(declared: Option<&ClientCapabilities>, capability: &str) -> bool {
    declared.is_some_and(|caps| match capability {
        "sampling" => caps.sampling.is_some(),
        "elicitation" => caps.elicitation.is_some(),
        "roots" => caps.roots.is_some(),
        _ => false,
    })
}

/// The agent's answer in the shape its question expects; `None` when it is not that shape.
fn decode_reply(request: &InputRequest, value: &serde_json::Value) -> Option<ClientResult> {
    let value = value.clone();
    match request {
        InputRequest::CreateMessage(_) => serde_json::from_value::<CreateMessageResult>(value)
            .ok()
            .map(|r| ClientResult::CreateMessageResult(Box::new(r))),
        InputRequest::Elicitation(_) => {
            serde_json::from_value::<ElicitResult>(value).ok().map(ClientResult::ElicitResult)
        }
        InputRequest::ListRoots(_) => {
            serde_json::from_value::<ListRootsResult>(value).ok().map(ClientResult::ListRootsResult)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
