//! `Caller`: what an agent's request carries down to a backend: who the agent is, its
//! cancellation and progress token, and `ReplyPath`, the way back to the agent while the request
//! runs. What an upstream sends during a call (progress, logs, and sampling, elicitation and roots
//! requests) goes on that request's own reply stream; resource updates go on the session's
//! standalone stream.
//!
//! A leaf below `backend`: `mcp` and `frontend` build callers, `backend` answers through them.
//! The agent's session is seen through `AgentChannel`, which `mcp::sessions::AgentSession`
//! implements, so this module knows nothing above it.
//!
//! A reply stream holds at most `REPLY_QUEUE` messages the agent has not read yet. An agent that
//! falls behind further loses the request: it is cancelled (upstream too) and its stream ends,
//! rather than muster's memory growing with what the upstream keeps sending.
//!
//! Two kinds of request exist: those on muster's own sessions (`mcp/sessions.rs`, the 2025
//! revisions), and those rmcp serves without a session (2026-07-28), where rmcp's peer is the
//! way back for notifications, and questions to the agent become `Question`s that `mcp/rounds.rs`
//! hands the agent inside an `InputRequiredResult` (the agent answers with its retry).
//!
//! Log messages reach the agent at the level it asked for: a session's `logging/setLevel`
//! (everything until it sets one, as before 2026-07-28), a sessionless request's
//! `io.modelcontextprotocol/logLevel` (nothing without one). `ReplyPath::log_level` is also what
//! a 2026-07-28 upstream is asked for on the agent's behalf.

#![allow(deprecated, reason = "sampling, roots and logging are deprecated by SEP-2577 but still in use")]

use std::sync::Arc;

use bytes::Bytes;
use rmcp::model::{ClientResult, LoggingLevel, RequestId, ServerJsonRpcMessage, ServerNotification, ServerRequest};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData, Peer};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::auth::Identity;

/// Messages a reply stream holds for the agent to read; past this, the request is cancelled.
pub const REPLY_QUEUE: usize = 64;

/// The agent session a request came from: where progress, logging, sampling, elicitation and
/// roots requests of the upstream go back to.
#[derive(Clone)]
pub struct Caller {
    /// Unique per agent session (assigned when the session starts).
    pub agent_id: u64,
    pub reply_path: ReplyPath,
    pub ct: CancellationToken,
    pub progress_token: Option<rmcp::model::ProgressToken>,
    /// Who the agent is, when inbound authentication is on.
    pub identity: Option<Arc<Identity>>,
    /// The request came over a loopback connection (who may manage muster with sign-in off).
    pub loopback: bool,
}

/// Questions one sessionless call may have waiting for the agent at once.
pub const QUESTIONS: usize = 16;

/// A question (sampling, elicitation, roots) an upstream asks during a sessionless call: it goes
/// to the agent inside an `InputRequiredResult`, and `answer` gets what the agent's retry brings.
pub struct Question {
    pub request: ServerRequest,
    pub answer: oneshot::Sender<AgentReply>,
}

/// Put into a request's extensions by `frontend` when its connection is a loopback one.
#[derive(Debug, Clone, Copy)]
pub struct Loopback;

impl Caller {
    /// A request rmcp serves (2026-07-28, or muster's own tools on any revision).
    pub fn from_context(agent_id: u64, context: &RequestContext<RoleServer>) -> Self {
        Self {
            agent_id,
            reply_path: ReplyPath::Rmcp {
                peer: context.peer.clone(),
                questions: None,
                log_level: context.meta.log_level(),
            },
            ct: context.ct.clone(),
            progress_token: context.meta.get_progress_token(),
            identity: identity_of(&context.extensions),
            loopback: context
                .extensions
                .get::<http::request::Parts>()
                .is_some_and(|parts| parts.extensions.get::<Loopback>().is_some()),
        }
    }
}

/// The signed-in user of a request rmcp serves: `frontend` puts the HTTP request's parts into
/// rmcp's extensions, and `auth` has put the `Identity` into those.
pub fn identity_of(extensions: &rmcp::model::Extensions) -> Option<Arc<Identity>> {
    extensions.get::<http::request::Parts>().and_then(|parts| parts.extensions.get::<Arc<Identity>>()).cloned()
}

/// The agent's reply to a server-to-client request (sampling, elicitation, roots).
pub type AgentReply = Result<ClientResult, ErrorData>;

/// An agent's session as a request sees it: its standalone stream, and the questions muster asks
/// the agent with the replies it gives. `mcp::sessions::AgentSession` is the implementation.
pub trait AgentChannel: Send + Sync {
    /// Sends a notification on the standalone stream; dropped when the agent holds none open.
    fn notify(&self, notification: ServerNotification);
    /// A fresh id for a server-to-client request, and where the agent's reply will arrive.
    fn expect_reply(&self) -> (RequestId, oneshot::Receiver<AgentReply>);
    /// Stops waiting for a reply (the request could not be sent, or its call ended).
    fn forget_reply(&self, id: &RequestId);
    /// The agent subscribed to the resource `uri` through this replica, as `identity`.
    fn subscribed(&self, uri: &str, identity: Option<Arc<Identity>>) {
        let _ = (uri, identity);
    }
    /// The agent unsubscribed from `uri` through this replica.
    fn unsubscribed(&self, uri: &str) {
        let _ = uri;
    }
    /// The least severe log messages the agent wants (`logging/setLevel`); `None`: all of them.
    fn log_level(&self) -> Option<LoggingLevel> {
        None
    }
}

/// The way back to the agent while one of its requests runs.
#[derive(Clone)]
pub enum ReplyPath {
    /// A request rmcp serves (2026-07-28): its peer for notifications, and where questions to
    /// the agent go (`None`: this request cannot ask, e.g. a list), and the request's log level
    /// (`None`: it wants no log messages).
    Rmcp { peer: Peer<RoleServer>, questions: Option<mpsc::Sender<Question>>, log_level: Option<LoggingLevel> },
    /// A request on one of muster's sessions, with its reply stream (`None` once only the
    /// session is wanted, e.g. for a subscription that outlives the request) and its
    /// cancellation (the agent cancelled, hung up, or ended the session).
    Session { session: Arc<dyn AgentChannel>, reply: Option<mpsc::Sender<Outgoing>>, ct: CancellationToken },
}

impl ReplyPath {
    /// The same agent without this request's stream: for notifications after the request ended.
    pub fn session_only(&self) -> Self {
        match self {
            Self::Rmcp { peer, log_level, .. } => {
                Self::Rmcp { peer: peer.clone(), questions: None, log_level: *log_level }
            }
            Self::Session { session, ct, .. } => {
                Self::Session { session: session.clone(), reply: None, ct: ct.clone() }
            }
        }
    }

    /// The request runs in rounds (a sessionless agent's call, `mcp/rounds.rs`): an upstream's
    /// `InputRequiredResult` goes up to it as it is, rather than being asked on a reply stream.
    pub fn takes_input_requests(&self) -> bool {
        matches!(self, Self::Rmcp { questions: Some(_), .. })
    }

    /// The level the agent asked for: its session's, or its request's (2026-07-28).
    pub fn log_level(&self) -> Option<LoggingLevel> {
        match self {
            Self::Rmcp { log_level, .. } => *log_level,
            Self::Session { session, .. } => session.log_level(),
        }
    }

    /// Whether the agent wants a log message of `level`.
    fn wants_log(&self, level: LoggingLevel) -> bool {
        match (self, self.log_level()) {
            (_, Some(least)) => level as u8 >= least as u8,
            (Self::Session { .. }, None) => true,
            (Self::Rmcp { .. }, None) => false,
        }
    }

    /// A notification about the request in flight (progress, logs), on its reply stream. A log
    /// message below the agent's level is dropped.
    pub async fn notify(&self, notification: ServerNotification) {
        if let ServerNotification::LoggingMessageNotification(log) = &notification
            && !self.wants_log(log.params.level)
        {
            return;
        }
        match self {
            Self::Rmcp { peer, .. } => {
                let _ = peer.send_notification(notification).await;
            }
            Self::Session { reply: Some(reply), ct, .. } => {
                if let Some(message) = Outgoing::message(&ServerJsonRpcMessage::notification(notification)) {
                    let _ = push(reply, ct, message);
                }
            }
            Self::Session { session, reply: None, .. } => session.notify(notification),
        }
    }

    /// A notification that belongs to the session (resource updates), on its standalone stream.
    pub async fn notify_session(&self, notification: ServerNotification) {
        match self {
            Self::Rmcp { peer, .. } => {
                let _ = peer.send_notification(notification).await;
            }
            Self::Session { session, .. } => session.notify(notification),
        }
    }

    /// Asks the agent (sampling, elicitation, roots) and waits for its answer: on a session, on
    /// the request's reply stream (the answer arrives as a POST to the session); without one, as a
    /// `Question` for `mcp/rounds.rs`.
    pub async fn request(&self, request: ServerRequest) -> Result<ClientResult, ErrorData> {
        match self {
            Self::Rmcp { questions: Some(questions), .. } => {
                let (answer, answered) = oneshot::channel();
                let gone = || ErrorData::internal_error("the agent's request ended without an answer", None);
                questions.send(Question { request, answer }).await.map_err(|_| gone())?;
                answered.await.map_err(|_| gone())?
            }
            Self::Rmcp { questions: None, .. } => {
                Err(ErrorData::invalid_request("this request of the agent cannot carry a question back to it", None))
            }
            Self::Session { session, reply: Some(reply), ct } => {
                let (id, answer) = session.expect_reply();
                let _forget = ForgetOnDrop { session: session.as_ref(), id: id.clone() };
                let asking = Outgoing::message(&ServerJsonRpcMessage::request(request, id)).ok_or_else(|| {
                    ErrorData::internal_error("muster could not encode its request to the agent", None)
                })?;
                if !push(reply, ct, asking) {
                    return Err(ErrorData::internal_error(
                        "the agent's request ended before muster could ask it",
                        None,
                    ));
                }
                let gone = || ErrorData::internal_error("the agent's request ended without an answer", None);
                tokio::select! {
                    answer = answer => answer.map_err(|_| gone())?,
                    () = ct.cancelled() => Err(gone()),
                }
            }
            Self::Session { reply: None, .. } => {
                Err(ErrorData::internal_error("no request of this agent is in flight to ask it", None))
            }
        }
    }
}

/// Queues `message` on a request's reply stream; false when the stream is gone. An agent that has
/// left `REPLY_QUEUE` messages unread loses the request (`ct`), which ends its stream.
pub fn push(reply: &mpsc::Sender<Outgoing>, ct: &CancellationToken, message: Outgoing) -> bool {
    match reply.try_send(message) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::debug!("the agent does not read its reply stream; cancelling the request");
            ct.cancel();
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// One message on a request's reply stream, encoded as JSON. The answer is the last one.
#[derive(Debug)]
pub struct Outgoing {
    pub json: Bytes,
    pub is_answer: bool,
}

impl Outgoing {
    /// `None` only if rmcp's type does not encode (which its types do not do).
    pub fn message(message: &ServerJsonRpcMessage) -> Option<Self> {
        let is_answer = matches!(message, ServerJsonRpcMessage::Response(_) | ServerJsonRpcMessage::Error(_));
        match serde_json::to_vec(message) {
            Ok(json) => Some(Self { json: Bytes::from(json), is_answer }),
            Err(e) => {
                tracing::error!(error = %e, "a message to an agent could not be encoded; dropped");
                None
            }
        }
    }
}

/// Stops waiting for an answer however the wait ends.
struct ForgetOnDrop<'a> {
    session: &'a dyn AgentChannel,
    id: rmcp::model::RequestId,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.session.forget_reply(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// An agent session that records what reaches it.
    #[derive(Default)]
    struct Recorder {
        notified: Mutex<usize>,
        waiting: Mutex<Vec<(RequestId, oneshot::Sender<AgentReply>)>>,
        log_level: Option<LoggingLevel>,
    }

    impl AgentChannel for Recorder {
        fn notify(&self, _: ServerNotification) {
            *self.notified.lock().expect("lock") += 1;
        }
        fn expect_reply(&self) -> (RequestId, oneshot::Receiver<AgentReply>) {
            let id = RequestId::Number(7);
            let (tx, rx) = oneshot::channel();
            self.waiting.lock().expect("lock").push((id.clone(), tx));
            (id, rx)
        }
        fn forget_reply(&self, id: &RequestId) {
            self.waiting.lock().expect("lock").retain(|(w, _)| w != id);
        }
        fn log_level(&self) -> Option<LoggingLevel> {
            self.log_level
        }
    }

    fn link(session: &Arc<Recorder>) -> (ReplyPath, mpsc::Receiver<Outgoing>, CancellationToken) {
        let (reply, replies) = mpsc::channel(REPLY_QUEUE);
        let ct = CancellationToken::new();
        let session: Arc<dyn AgentChannel> = session.clone();
        (ReplyPath::Session { session, reply: Some(reply), ct: ct.clone() }, replies, ct)
    }

    #[tokio::test]
    async fn a_question_to_the_agent_ends_when_its_request_does() {
        let session = Arc::new(Recorder::default());
        let (link, mut replies, ct) = link(&session);
        let asking = tokio::spawn(async move { link.request(ServerRequest::PingRequest(Default::default())).await });
        let asked = replies.recv().await.expect("the question went out on the reply stream");
        let asked: ServerJsonRpcMessage = serde_json::from_slice(&asked.json).expect("a JSON-RPC message");
        assert!(matches!(asked, ServerJsonRpcMessage::Request(_)), "{asked:?}");
        assert_eq!(session.waiting.lock().expect("lock").len(), 1, "the session waits for the reply");
        ct.cancel();
        let answer = tokio::time::timeout(std::time::Duration::from_secs(5), asking).await.expect("in time");
        assert!(answer.expect("join").is_err(), "no answer came, so the question failed");
        assert!(session.waiting.lock().expect("lock").is_empty(), "the session stopped waiting");
    }

    #[tokio::test]
    async fn an_agent_that_does_not_read_loses_its_request() {
        let session = Arc::new(Recorder::default());
        let (link, _unread, ct) = link(&session);
        for _ in 0..REPLY_QUEUE {
            link.notify(ServerNotification::ToolListChangedNotification(Default::default())).await;
        }
        assert!(!ct.is_cancelled(), "a full queue is still fine");
        link.notify(ServerNotification::ToolListChangedNotification(Default::default())).await;
        assert!(ct.is_cancelled(), "one more than the queue holds cancels the request");
    }

    #[tokio::test]
    async fn after_the_request_notifications_go_to_the_session() {
        let session = Arc::new(Recorder::default());
        let (link, _replies, _) = link(&session);
        link.session_only().notify(ServerNotification::ToolListChangedNotification(Default::default())).await;
        assert_eq!(*session.notified.lock().expect("lock"), 1);
    }

    /// Log messages the upstream sends during a call: all of them to a session without a level,
    /// from its level up to one that set it (`logging/setLevel`), and the level is what a 2026
    /// upstream is asked for.
    #[tokio::test]
    async fn log_messages_reach_a_session_from_the_level_it_set() {
        let log = |level| {
            let param = rmcp::model::LoggingMessageNotificationParam::new(level, serde_json::json!("x"));
            ServerNotification::LoggingMessageNotification(rmcp::model::LoggingMessageNotification::new(param))
        };
        let all = Arc::new(Recorder::default());
        let (to_all, _replies, _) = link(&all);
        let to_all = to_all.session_only();
        assert_eq!(to_all.log_level(), None);
        to_all.notify(log(LoggingLevel::Debug)).await;
        to_all.notify(log(LoggingLevel::Error)).await;
        assert_eq!(*all.notified.lock().expect("lock"), 2, "no level set: every message");

        let warnings = Arc::new(Recorder { log_level: Some(LoggingLevel::Warning), ..Recorder::default() });
        let (to_warnings, _replies, _) = link(&warnings);
        let link = to_warnings.session_only();
        assert_eq!(link.log_level(), Some(LoggingLevel::Warning));
        for level in [LoggingLevel::Debug, LoggingLevel::Info, LoggingLevel::Notice] {
            link.notify(log(level)).await;
        }
        assert_eq!(*warnings.notified.lock().expect("lock"), 0, "below warning: none");
        for level in [LoggingLevel::Warning, LoggingLevel::Error, LoggingLevel::Emergency] {
            link.notify(log(level)).await;
        }
        assert_eq!(*warnings.notified.lock().expect("lock"), 3, "warning and above");
        // Other notifications are not logs: never filtered.
        link.notify(ServerNotification::ToolListChangedNotification(Default::default())).await;
        assert_eq!(*warnings.notified.lock().expect("lock"), 4);
    }
}
