//! The agent sessions of the 2025 protocol revisions, held by muster itself: a few fields per
//! session in one map, and no task, worker or channel until the session has something in flight.
//!
//! rmcp's own session manager runs a worker task with its channels for every session (its memory:
//! loadtests/README.md, "Design figures"). Here a session is an `AgentSession` (its agent
//! id, owner, and three empty maps) in a moka cache that forgets it after
//! `IDLE_TIMEOUT` without a request. What a session needs while a request runs (the request's
//! reply stream, its cancellation, the agent's answers to sampling and elicitation) lives only
//! as long as that request; the standalone `GET` stream lives only while the agent holds it.
//!
//! A user holds at most `Limits::max_sessions_per_user` sessions and all users together
//! `Limits::max_sessions`: `open` refuses past either, so one token cannot fill the memory with
//! sessions it never ends. The standalone stream's queue is bounded too (`STANDALONE_QUEUE`): an
//! agent that does not read it loses it, and muster's memory does not grow.
//!
//! `watch_catalog` follows the router's snapshots and sends `notifications/*/list_changed` to
//! every session with an open standalone stream whose view changed.
//!
//! Ids are sealed records (`session_ids`): with a shared store, `find` resumes on this replica a
//! session another replica opened, `end` ends it on all of them, and `relay` passes an agent's
//! answer or cancellation to the replica running the call it is about (`follow_replicas`), as
//! `notify` does with a notification whose standalone stream is on another replica, and an
//! unsubscribe to the replica that holds the subscription. A session's
//! server-to-client request ids then start at a random number, so two replicas serving one
//! session do not hand the agent the same id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{LoggingLevel, RequestId, ServerJsonRpcMessage, ServerNotification};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::listen::fingerprint;
use super::session_ids::{self, Liveness, Relayed, SessionIds};
use crate::auth::Identity;
use crate::caller::{AgentChannel, AgentReply};
use crate::routing::CatalogSnapshot;
use crate::store::{Keyring, Store};

/// A session without a request for this long is forgotten; its next request gets 404 and the
/// agent starts a new one (as the MCP spec asks). rmcp's default, kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Messages waiting on a standalone stream for the agent to read them; past this the stream is
/// closed (the agent opens a new one).
pub const STANDALONE_QUEUE: usize = 64;
/// Messages waiting to be published for other replicas (all sessions together): notifications
/// for their standalone streams, and the agents' answers and cancellations for their calls.
const RELAY_QUEUE: usize = 1024;
/// Resource subscriptions a session's record keeps on one replica (for `Relayed::Unsubscribe`).
const MAX_SUBSCRIPTIONS: usize = 256;
/// `AgentSession::touched` of a session the shared store has not heard of yet.
const NOT_SHARED: u64 = 0;

/// How many sessions may be open.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_sessions: usize,
    pub max_sessions_per_user: usize,
}

impl From<crate::config::Limits> for Limits {
    fn from(limits: crate::config::Limits) -> Self {
        Self { max_sessions: limits.max_sessions, max_sessions_per_user: limits.max_sessions_per_user }
    }
}

impl Default for Limits {
    fn default() -> Self {
        crate::config::Limits::default().into()
    }
}

/// Why `open` refused a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "this user already holds {limit} open MCP sessions, the most muster allows; end unused ones (HTTP DELETE) or let them expire after 5 minutes idle"
    )]
    UserLimit { limit: usize },
    #[error("muster holds {limit} open MCP sessions, the most it allows; try again later")]
    TotalLimit { limit: usize },
}

/// One agent session.
pub struct AgentSession {
    /// Unique per session; the relay's "sole caller" rule compares these.
    pub agent_id: u64,
    /// With sign-in on, the user (issuer and subject) who opened the session. Nobody else may
    /// use it.
    pub owner: Option<String>,
    /// The open standalone (`GET`) stream, if any.
    standalone: Mutex<Option<mpsc::Sender<ServerJsonRpcMessage>>>,
    /// Requests in flight, by the agent's request id, for `notifications/cancelled`.
    in_flight: Mutex<HashMap<RequestId, CancellationToken>>,
    /// Server-to-client requests waiting for the agent's answer, by the id muster gave them.
    pending: Mutex<HashMap<RequestId, oneshot::Sender<AgentReply>>>,
    next_request: AtomicI64,
    /// When this replica last refreshed the session's liveness in the shared store (Unix s);
    /// `NOT_SHARED` while the store has not heard of the session (it was down at `initialize`).
    touched: AtomicU64,
    /// With a shared store: where notifications go when the standalone stream is elsewhere.
    elsewhere: Option<Elsewhere>,
    /// With a shared store: the resources the agent subscribed to through this replica, and as
    /// whom, so that an unsubscribe posted to another replica is carried out here
    /// (`Relayed::Unsubscribe`). At most `MAX_SUBSCRIPTIONS`.
    subscriptions: Mutex<HashMap<String, Option<Arc<Identity>>>>,
    /// The agent's `logging/setLevel` (on every replica holding the session: `Relayed::LogLevel`).
    log_level: Mutex<Option<LoggingLevel>>,
}

/// A session's way to its standalone stream on another replica.
struct Elsewhere {
    key: Arc<str>,
    /// Some replica announced the agent's standalone stream (`Relayed::Listening`).
    listening: AtomicBool,
    relays: mpsc::Sender<(Arc<str>, Relayed)>,
}

impl AgentSession {
    /// Tracks a request until the returned guard drops; `cancel` finds it by the agent's id.
    pub fn begin(self: &Arc<Self>, id: RequestId, ct: CancellationToken) -> TrackedRequest {
        if let Ok(mut in_flight) = self.in_flight.lock() {
            in_flight.insert(id.clone(), ct.clone());
        }
        TrackedRequest { session: self.clone(), id, ct }
    }

    /// The agent's `logging/setLevel`: log messages below `level` are no longer sent to it.
    pub fn set_log_level(&self, level: LoggingLevel) {
        if let Ok(mut log_level) = self.log_level.lock() {
            *log_level = Some(level);
        }
    }

    /// `notifications/cancelled` from the agent; false when no such request runs here.
    pub fn cancel(&self, id: &RequestId) -> bool {
        let ct = self.in_flight.lock().ok().and_then(|mut m| m.remove(id));
        ct.map(|ct| ct.cancel()).is_some()
    }

    /// Opens the standalone stream, replacing an older one (the agent reconnected).
    pub fn open_standalone(&self) -> mpsc::Receiver<ServerJsonRpcMessage> {
        let (tx, rx) = mpsc::channel(STANDALONE_QUEUE);
        if let Ok(mut standalone) = self.standalone.lock() {
            *standalone = Some(tx);
        }
        rx
    }

    fn has_standalone(&self) -> bool {
        self.standalone.lock().is_ok_and(|s| s.as_ref().is_some_and(|tx| !tx.is_closed()))
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

    /// The agent replied to a server-to-client request: handed to the call that asked, here.
    /// The reply comes back when nothing here asked under that id (another replica may have).
    pub fn deliver_reply(&self, id: &RequestId, reply: AgentReply) -> Result<(), AgentReply> {
        let waiting = self.pending.lock().ok().and_then(|mut p| p.remove(id));
        match waiting {
            // A call that ended meanwhile drops the answer.
            Some(tx) => {
                let _ = tx.send(reply);
                Ok(())
            }
            None => Err(reply),
        }
    }

    /// Sends a notification on the standalone stream this replica holds; gives it back when it
    /// holds none (`Some`). An agent that leaves `STANDALONE_QUEUE` messages unread loses the
    /// stream: it ends once the agent reads what is queued.
    pub fn notify_here(&self, notification: ServerNotification) -> Option<ServerNotification> {
        let Ok(mut standalone) = self.standalone.lock() else { return None };
        let Some(tx) = standalone.as_ref().filter(|tx| !tx.is_closed()) else { return Some(notification) };
        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(ServerJsonRpcMessage::notification(notification)) {
            tracing::debug!(agent = self.agent_id, "the agent does not read its standalone stream; closing it");
            standalone.take();
        }
        None
    }
}

impl AgentChannel for AgentSession {
    /// Sends a notification on the standalone stream; with a shared store and the stream on
    /// another replica, through the store to it; else dropped (the agent holds none open).
    fn notify(&self, notification: ServerNotification) {
        let Some(notification) = self.notify_here(notification) else { return };
        if let Some(elsewhere) = &self.elsewhere
            && elsewhere.listening.load(Ordering::Relaxed)
        {
            // Bounded: past `RELAY_QUEUE` waiting, notifications are dropped as for a slow stream.
            let _ = elsewhere.relays.try_send((elsewhere.key.clone(), Relayed::Notify { notification }));
        }
    }

    /// A fresh id for a server-to-client request, and where the agent's answer will arrive.
    fn expect_reply(&self) -> (RequestId, oneshot::Receiver<AgentReply>) {
        let id = RequestId::Number(self.next_request.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(id.clone(), tx);
        }
        (id, rx)
    }

    /// Stops waiting for an answer (the request could not be sent, or its call ended).
    fn forget_reply(&self, id: &RequestId) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(id);
        }
    }

    fn subscribed(&self, uri: &str, identity: Option<Arc<Identity>>) {
        if self.elsewhere.is_none() {
            return; // one replica: the unsubscribe comes here
        }
        if let Ok(mut subscriptions) = self.subscriptions.lock()
            && (subscriptions.len() < MAX_SUBSCRIPTIONS || subscriptions.contains_key(uri))
        {
            subscriptions.insert(uri.to_owned(), identity);
        }
    }

    fn unsubscribed(&self, uri: &str) {
        if let Ok(mut subscriptions) = self.subscriptions.lock() {
            subscriptions.remove(uri);
        }
    }

    fn log_level(&self) -> Option<LoggingLevel> {
        self.log_level.lock().ok().and_then(|level| *level)
    }
}

/// A request in flight on a session; removed from it on drop (unless the agent has reused its
/// id for a newer request meanwhile).
pub struct TrackedRequest {
    session: Arc<AgentSession>,
    id: RequestId,
    ct: CancellationToken,
}

impl Drop for TrackedRequest {
    fn drop(&mut self) {
        if let Ok(mut in_flight) = self.session.in_flight.lock()
            && in_flight.get(&self.id).is_some_and(|ct| ct == &self.ct)
        {
            in_flight.remove(&self.id);
        }
    }
}

/// Every agent session of this process, by the key of its id (`session_ids::key_of`).
pub struct Sessions {
    by_id: moka::sync::Cache<String, Arc<AgentSession>>,
    next_agent: AtomicU64,
    limits: Limits,
    /// Open sessions, in all and per owner; the eviction listener counts them down.
    counts: Arc<Mutex<Counts>>,
    ids: SessionIds,
    /// With a shared store: which sessions are alive on any replica.
    shared: Option<Liveness>,
    /// With a shared store: what goes to other replicas (`RELAY_QUEUE`).
    relays: Option<mpsc::Sender<(Arc<str>, Relayed)>>,
    /// Set by `end_standalone_streams`.
    stopping: AtomicBool,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_owner: HashMap<String, usize>,
}

impl Counts {
    /// A session another replica admitted, now served here too: counted, never refused.
    fn resume(&mut self, owner: Option<&String>) {
        self.total += 1;
        if let Some(owner) = owner {
            *self.by_owner.entry(owner.clone()).or_default() += 1;
        }
    }

    fn admit(&mut self, owner: Option<&String>, limits: Limits) -> Result<(), Refused> {
        let of_owner = owner.map_or(0, |o| self.by_owner.get(o).copied().unwrap_or(0));
        if owner.is_some() && of_owner >= limits.max_sessions_per_user {
            return Err(Refused::UserLimit { limit: limits.max_sessions_per_user });
        }
        if self.total >= limits.max_sessions {
            return Err(Refused::TotalLimit { limit: limits.max_sessions });
        }
        self.total += 1;
        if let Some(owner) = owner {
            self.by_owner.insert(owner.clone(), of_owner + 1);
        }
        Ok(())
    }

    fn release(&mut self, owner: Option<&String>) {
        self.total = self.total.saturating_sub(1);
        if let Some(owner) = owner
            && let Some(n) = self.by_owner.get_mut(owner)
        {
            *n -= 1;
            if *n == 0 {
                self.by_owner.remove(owner);
            }
        }
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(IDLE_TIMEOUT, Limits::default())
    }
}

impl Sessions {
    /// Sessions of this replica alone, with ids sealed by a key of this process.
    pub fn new(idle_timeout: Duration, limits: Limits) -> Self {
        Self::shared(idle_timeout, limits, Keyring::new(&[]), &Store::local())
    }

    /// Sessions whose ids `keyring` seals; with a shared `store`, any replica serves them.
    pub fn shared(idle_timeout: Duration, limits: Limits, keyring: Keyring, store: &Store) -> Self {
        let counts = Arc::new(Mutex::new(Counts::default()));
        let released = counts.clone();
        let by_id = moka::sync::Cache::builder()
            .time_to_idle(idle_timeout)
            .eviction_listener(move |_, session: Arc<AgentSession>, _| {
                if let Ok(mut counts) = released.lock() {
                    counts.release(session.owner.as_ref());
                }
                session.end();
            })
            .build();
        let shared = store.is_shared().then(|| Liveness::new(store.clone(), idle_timeout));
        // What goes to other replicas (notifications, answers, cancellations), published in order
        // by one task.
        let relays = shared.clone().map(|liveness| {
            let (relays, mut queued) = mpsc::channel::<(Arc<str>, Relayed)>(RELAY_QUEUE);
            tokio::spawn(async move {
                while let Some((key, relayed)) = queued.recv().await {
                    liveness.relay(&key, relayed).await;
                }
            });
            relays
        });
        Self {
            by_id,
            next_agent: AtomicU64::new(1),
            limits,
            counts,
            ids: SessionIds::new(keyring),
            shared,
            relays,
            stopping: AtomicBool::new(false),
        }
    }

    /// A unique agent id, also for requests served without a session (2026-07-28).
    pub fn next_agent_id(&self) -> u64 {
        self.next_agent.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts a session; returns its id (its sealed record) and the session, or why not. With a
    /// shared store, `announce` the id before the agent learns it.
    pub fn open(&self, owner: Option<String>) -> Result<(Arc<str>, Arc<AgentSession>), Refused> {
        let admitted = self.admit(owner.as_ref());
        if admitted.is_err() {
            // Expired sessions still count until moka's housekeeping evicts them: evict, retry.
            self.by_id.run_pending_tasks();
            self.admit(owner.as_ref())?;
        }
        let id: Arc<str> = Arc::from(self.ids.mint(owner.as_deref()));
        let session = self.insert(session_ids::key_of(&id), owner);
        Ok((id, session))
    }

    fn insert(&self, key: String, owner: Option<String>) -> Arc<AgentSession> {
        let session = self.new_session(&key, owner);
        self.by_id.insert(key, session.clone());
        session
    }

    fn new_session(&self, key: &str, owner: Option<String>) -> Arc<AgentSession> {
        Arc::new(AgentSession {
            agent_id: self.next_agent_id(),
            owner,
            standalone: Mutex::default(),
            in_flight: Mutex::default(),
            pending: Mutex::default(),
            // Below 2^52, so ids stay exact in any agent's JSON numbers.
            next_request: AtomicI64::new(if self.shared.is_some() {
                rand::random::<i64>() & ((1 << 52) - 1)
            } else {
                0
            }),
            touched: AtomicU64::new(session_ids::now()),
            elsewhere: self.relays.as_ref().map(|relays| Elsewhere {
                key: Arc::from(key),
                listening: AtomicBool::new(false),
                relays: relays.clone(),
            }),
            subscriptions: Mutex::default(),
            log_level: Mutex::default(),
        })
    }

    /// Passes what the agent posted about a call this replica does not run to the replica that
    /// runs it (nothing without a shared store: the call is not anywhere). It joins the one
    /// ordered queue the notifications take, waiting for room rather than dropping it.
    pub async fn relay(&self, id: &str, relayed: Relayed) {
        if let Some(relays) = &self.relays {
            let _ = relays.send((Arc::from(session_ids::key_of(id)), relayed)).await;
        }
    }

    /// Tells the other replicas that this session's standalone stream is here, so they send its
    /// notifications over (nothing without a shared store).
    pub fn announce_listening(&self, id: &str) {
        if let Some(relays) = &self.relays {
            let _ = relays.try_send((Arc::from(session_ids::key_of(id)), Relayed::Listening));
        }
    }

    /// Makes a new session known to every replica (one store write; nothing without a store).
    /// With the store down, the session's first request after it answers again does it.
    pub async fn announce(&self, id: &str) {
        if let Some(shared) = &self.shared {
            let key = session_ids::key_of(id);
            // While the store is down, not waited for: the session's first request after it is
            // back shares it.
            if !(shared.store_is_up() && shared.begin(&key).await)
                && let Some(session) = self.by_id.get(&key)
            {
                session.touched.store(NOT_SHARED, Ordering::Relaxed);
            }
        }
    }

    /// The session with this id: this replica's, or, with a shared store, one another replica
    /// opened that is still alive (resumed here from its sealed record).
    pub async fn find(&self, id: &str) -> Option<Arc<AgentSession>> {
        let key = session_ids::key_of(id);
        if let Some(session) = self.by_id.get(&key) {
            if let Some(shared) = &self.shared {
                let now = session_ids::now();
                let last = session.touched.load(Ordering::Relaxed);
                if last == NOT_SHARED {
                    // Awaited, once the store is back: when this request is answered, every
                    // replica knows the session.
                    if shared.store_is_up() && shared.begin(&key).await {
                        session.touched.store(now, Ordering::Relaxed);
                    }
                } else if now.saturating_sub(last) >= session_ids::TOUCH_EVERY.as_secs()
                    && session.touched.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
                {
                    shared.touch(&key);
                }
            }
            return Some(session);
        }
        let shared = self.shared.as_ref()?;
        let record = self.ids.open(id)?;
        if !shared.alive(&key).await {
            return None;
        }
        if let Ok(mut counts) = self.counts.lock() {
            counts.resume(record.owner.as_ref());
        }
        // Two requests may resume it at once: the first one inserted wins.
        let session = self.by_id.entry(key.clone()).or_insert_with(|| self.new_session(&key, record.owner.clone()));
        if !session.is_fresh()
            && let Ok(mut counts) = self.counts.lock()
        {
            counts.release(record.owner.as_ref());
        }
        tracing::debug!(agent = session.value().agent_id, "resumed a session another replica opened");
        Some(session.into_value())
    }

    fn admit(&self, owner: Option<&String>) -> Result<(), Refused> {
        let mut counts = self.counts.lock().map_err(|_| Refused::TotalLimit { limit: self.limits.max_sessions })?;
        counts.admit(owner, self.limits)
    }

    /// This replica's session, refreshing its idle timer.
    pub fn get(&self, id: &str) -> Option<Arc<AgentSession>> {
        self.by_id.get(&session_ids::key_of(id))
    }

    /// Ends a session here: its requests in flight are cancelled.
    pub fn close(&self, id: &str) -> bool {
        self.forget(&session_ids::key_of(id))
    }

    /// Ends a session on every replica (`DELETE`).
    pub async fn end(&self, id: &str) {
        self.close(id);
        if let Some(shared) = &self.shared {
            shared.end(&session_ids::key_of(id)).await;
        }
    }

    /// Drops the session with this key (its id's hash): it ended on another replica.
    fn forget(&self, key: &str) -> bool {
        // The eviction listener ends it (moka calls it on removal too).
        self.by_id.remove(key).is_some()
    }

    /// Ends every standalone stream (muster is stopping): requests in flight still finish, but
    /// no agent's open `GET` holds the shutdown up until actix's drain timeout. Those opened from
    /// now on end at once, so agents listen on another replica.
    pub fn end_standalone_streams(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        for (_, session) in self.by_id.iter() {
            if let Ok(mut standalone) = session.standalone.lock() {
                standalone.take();
            }
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
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

pub async fn watch_catalog(sessions: Arc<Sessions>, mut snapshots: watch::Receiver<Arc<CatalogSnapshot>>) {
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

mod replicas;
#[cfg(test)]
mod tests;

pub use replicas::follow_replicas;
