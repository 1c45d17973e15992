//! The agent sessions of the 2025 protocol revisions, held by muster itself: a few fields per
//! session in one map, and no task, worker or channel until the session has something in flight.
//!
//! rmcp's own session manager runs a worker task with its channels for every session, about
//! 71 KiB each while idle (loadtests/README.md). Here a session is an `AgentSession` (its agent
//! id, owner, and three empty maps) in a moka cache that forgets it after
//! `IDLE_TIMEOUT` without a request. What a session needs while a request runs (the request's
//! reply stream, its cancellation, the agent's answers to sampling and elicitation) lives only
//! as long as that request; the standalone `GET` stream lives only while the agent holds it.
//!
//! `watch_catalog` follows the router's snapshots and sends `notifications/*/list_changed` to
//! every session with an open standalone stream whose view changed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use rmcp::ErrorData;
use rmcp::model::{ClientResult, RequestId, ServerJsonRpcMessage, ServerNotification};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::routing::Snapshot;

/// A session without a request for this long is forgotten; its next request gets 404 and the
/// agent starts a new one (as the MCP spec asks). rmcp's default, kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The answer an agent gave to a server-to-client request (sampling, elicitation, roots).
pub type Answer = Result<ClientResult, ErrorData>;

/// One agent session.
pub struct AgentSession {
    /// Unique per session; the relay's "sole caller" rule compares these.
    pub agent_id: u64,
    /// With sign-in on, the user (issuer and subject) who opened the session. Nobody else may
    /// use it.
    pub owner: Option<String>,
    /// The open standalone (`GET`) stream, if any.
    standalone: Mutex<Option<mpsc::UnboundedSender<ServerJsonRpcMessage>>>,
    /// Requests in flight, by the agent's request id, for `notifications/cancelled`.
    in_flight: Mutex<HashMap<RequestId, CancellationToken>>,
    /// Server-to-client requests waiting for the agent's answer, by the id muster gave them.
    pending: Mutex<HashMap<RequestId, oneshot::Sender<Answer>>>,
    next_request: AtomicI64,
}

impl AgentSession {
    /// Tracks a request until the returned guard drops; `cancel` finds it by the agent's id.
    pub fn begin(self: &Arc<Self>, id: RequestId, ct: CancellationToken) -> InFlight {
        if let Ok(mut in_flight) = self.in_flight.lock() {
            in_flight.insert(id.clone(), ct.clone());
        }
        InFlight { session: self.clone(), id, ct }
    }

    /// `notifications/cancelled` from the agent.
    pub fn cancel(&self, id: &RequestId) {
        let ct = self.in_flight.lock().ok().and_then(|mut m| m.remove(id));
        if let Some(ct) = ct {
            ct.cancel();
        }
    }

    /// Opens the standalone stream, replacing an older one (the agent reconnected).
    pub fn open_standalone(&self) -> mpsc::UnboundedReceiver<ServerJsonRpcMessage> {
        let (tx, rx) = mpsc::unbounded();
        if let Ok(mut standalone) = self.standalone.lock() {
            *standalone = Some(tx);
        }
        rx
    }

    fn has_standalone(&self) -> bool {
        self.standalone.lock().is_ok_and(|s| s.as_ref().is_some_and(|tx| !tx.is_closed()))
    }

    /// Sends a notification on the standalone stream; dropped when the agent holds none open.
    pub fn notify(&self, notification: ServerNotification) {
        if let Ok(standalone) = self.standalone.lock()
            && let Some(tx) = standalone.as_ref()
        {
            let _ = tx.unbounded_send(ServerJsonRpcMessage::notification(notification));
        }
    }

    /// A fresh id for a server-to-client request, and where the agent's answer will arrive.
    pub fn expect_answer(&self) -> (RequestId, oneshot::Receiver<Answer>) {
        let id = RequestId::Number(self.next_request.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(id.clone(), tx);
        }
        (id, rx)
    }

    /// Ends what the session has going: requests in flight are cancelled, waits for answers end,
    /// the standalone stream closes. On `DELETE` and when the session expires.
    fn end(&self) {
        let in_flight: Vec<CancellationToken> =
            self.in_flight.lock().map(|mut m| m.drain().map(|(_, ct)| ct).collect()).unwrap_or_default();
        for ct in in_flight {
            ct.cancel();
        }
        if let Ok(mut pending) = self.pending.lock() {
            pending.clear();
        }
        if let Ok(mut standalone) = self.standalone.lock() {
            standalone.take();
        }
    }

    /// Stops waiting for an answer (the request could not be sent, or its call ended).
    pub fn forget_answer(&self, id: &RequestId) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(id);
        }
    }

    /// The agent answered a server-to-client request; false when nobody asked under that id.
    pub fn answer(&self, id: &RequestId, answer: Answer) -> bool {
        let waiting = self.pending.lock().ok().and_then(|mut p| p.remove(id));
        waiting.is_some_and(|tx| tx.send(answer).is_ok())
    }
}

/// A request in flight on a session; removed from it on drop (unless the agent has reused its
/// id for a newer request meanwhile).
pub struct InFlight {
    session: Arc<AgentSession>,
    id: RequestId,
    ct: CancellationToken,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut in_flight) = self.session.in_flight.lock()
            && in_flight.get(&self.id).is_some_and(|ct| ct == &self.ct)
        {
            in_flight.remove(&self.id);
        }
    }
}

/// Every agent session of this process, by session id.
pub struct Sessions {
    by_id: moka::sync::Cache<Arc<str>, Arc<AgentSession>>,
    next_agent: AtomicU64,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(IDLE_TIMEOUT)
    }
}

impl Sessions {
    pub fn new(idle_timeout: Duration) -> Self {
        let by_id = moka::sync::Cache::builder()
            .time_to_idle(idle_timeout)
            .eviction_listener(|_, session: Arc<AgentSession>, _| session.end())
            .build();
        Self { by_id, next_agent: AtomicU64::new(1) }
    }

    /// A unique agent id, also for requests served without a session (2026-07-28).
    pub fn next_agent_id(&self) -> u64 {
        self.next_agent.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts a session; returns its id (128 random bits, hex) and the session.
    pub fn open(&self, owner: Option<String>) -> (Arc<str>, Arc<AgentSession>) {
        let id: Arc<str> = Arc::from(hex::encode(rand::random::<[u8; 16]>()));
        let session = Arc::new(AgentSession {
            agent_id: self.next_agent_id(),
            owner,
            standalone: Mutex::default(),
            in_flight: Mutex::default(),
            pending: Mutex::default(),
            next_request: AtomicI64::new(0),
        });
        self.by_id.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The session, refreshing its idle timer.
    pub fn get(&self, id: &str) -> Option<Arc<AgentSession>> {
        self.by_id.get(id)
    }

    /// Ends a session (`DELETE`): its requests in flight are cancelled.
    pub fn close(&self, id: &str) -> bool {
        // The eviction listener ends it (moka calls it on removal too).
        self.by_id.remove(id).is_some()
    }

    pub fn len(&self) -> u64 {
        self.by_id.run_pending_tasks();
        self.by_id.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn listening(&self) -> Vec<Arc<AgentSession>> {
        self.by_id.iter().map(|(_, s)| s).filter(|s| s.has_standalone()).collect()
    }
}

/// What an agent can see of the catalog; a change in one part sends that part's `list_changed`.
#[derive(PartialEq, Default)]
struct Fingerprint {
    tools: String,
    resources: String,
    prompts: String,
}

fn fingerprint(snapshot: &Snapshot) -> Fingerprint {
    let catalog = &snapshot.catalog;
    Fingerprint {
        tools: serde_json::to_string(&catalog.tools).unwrap_or_default(),
        resources: serde_json::to_string(&(&catalog.resources, &catalog.resource_templates)).unwrap_or_default(),
        prompts: serde_json::to_string(&catalog.prompts).unwrap_or_default(),
    }
}

pub async fn watch_catalog(sessions: Arc<Sessions>, mut snapshots: watch::Receiver<Arc<Snapshot>>) {
    use rmcp::model::{PromptListChangedNotification, ResourceListChangedNotification, ToolListChangedNotification};
    let mut last = fingerprint(&snapshots.borrow_and_update());
    while snapshots.changed().await.is_ok() {
        let next = fingerprint(&snapshots.borrow_and_update());
        if next == last {
            continue;
        }
        for session in sessions.listening() {
            if next.tools != last.tools {
                session.notify(ServerNotification::ToolListChangedNotification(ToolListChangedNotification::default()));
            }
            if next.resources != last.resources {
                session.notify(ServerNotification::ResourceListChangedNotification(
                    ResourceListChangedNotification::default(),
                ));
            }
            if next.prompts != last.prompts {
                session.notify(ServerNotification::PromptListChangedNotification(
                    PromptListChangedNotification::default(),
                ));
            }
        }
        last = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_reach_only_the_request_that_asked() {
        let sessions = Sessions::default();
        let (_, session) = sessions.open(None);
        let (first, mut first_rx) = session.expect_answer();
        let (second, mut second_rx) = session.expect_answer();
        assert_ne!(first, second);
        assert!(session.answer(&second, Ok(ClientResult::empty(()))));
        assert!(second_rx.try_recv().is_ok());
        assert!(first_rx.try_recv().is_err(), "the first request is still waiting");
        assert!(!session.answer(&second, Ok(ClientResult::empty(()))), "an id is answered once");
    }

    #[test]
    fn cancel_and_close_cancel_requests_in_flight() {
        let sessions = Sessions::default();
        let (id, session) = sessions.open(Some("user".into()));
        let (a, b) = (CancellationToken::new(), CancellationToken::new());
        let _a = session.begin(RequestId::Number(1), a.clone());
        let _b = session.begin(RequestId::Number(2), b.clone());
        session.cancel(&RequestId::Number(1));
        assert!(a.is_cancelled() && !b.is_cancelled());
        assert!(sessions.close(&id));
        assert!(b.is_cancelled());
        assert!(sessions.get(&id).is_none());
        assert!(!sessions.close(&id));
    }

    #[tokio::test]
    async fn an_ended_session_stops_every_wait_and_request() {
        let sessions = Sessions::new(Duration::from_millis(50));
        let (id, session) = sessions.open(None);
        let (_, mut answer) = session.expect_answer();
        sessions.close(&id);
        assert!(answer.try_recv().is_err(), "nobody is left to answer");
        assert!(session.pending.lock().is_ok_and(|p| p.is_empty()));

        let (_, idle) = sessions.open(None);
        let running = CancellationToken::new();
        let _running = idle.begin(RequestId::Number(7), running.clone());
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(sessions.len(), 0, "the idle session expired");
        assert!(running.is_cancelled(), "its request was cancelled when it expired");
    }

    #[test]
    fn a_reused_request_id_keeps_the_newer_request_cancellable() {
        let sessions = Sessions::default();
        let (_, session) = sessions.open(None);
        let (old, new) = (CancellationToken::new(), CancellationToken::new());
        let first = session.begin(RequestId::Number(1), old);
        let _second = session.begin(RequestId::Number(1), new.clone());
        drop(first);
        session.cancel(&RequestId::Number(1));
        assert!(new.is_cancelled());
    }

    #[test]
    fn notifications_reach_only_an_open_standalone_stream() {
        let sessions = Sessions::default();
        let (_, session) = sessions.open(None);
        session.notify(ServerNotification::ToolListChangedNotification(Default::default()));
        assert!(sessions.listening().is_empty());
        let mut rx = session.open_standalone();
        assert_eq!(sessions.listening().len(), 1);
        session.notify(ServerNotification::ToolListChangedNotification(Default::default()));
        assert!(rx.try_recv().is_ok());
        drop(rx);
        assert!(sessions.listening().is_empty());
    }
}
