//! SupervisorActor: turns desired state (MCPServer resources, from files or from Kubernetes) into
//! one BackendActor each, and restarts failed backends with capped exponential backoff, stdio and
//! remote alike.
//!
//! Accepts `DesiredState` (from `crd/files.rs` or `crd/kubernetes.rs`: one code path) and
//! `BackendStateChanged` (from backends), and `Stopping` then `CloseBackends` (from `app.rs`, when
//! muster is told to stop). Tells backends `Connect`/`Shutdown`, tells the router
//! `ServerAdded`, `ServerRemoved` and `InitialSetKnown`, and writes each server's status and
//! events through `crd::sink::Sink` (into the file, or the status subresource and Kubernetes Events).
//! What a new desired state means (start, replace, stop, keep a version whose update was
//! refused) is decided by `plan::plan`, a pure function; the handler carries the plan out.
//! Workflows in the desired state get their status (valid, validationErrors, referencedTools,
//! stepCount) written through the same `Sink`, and the valid ones go to the router as tools.
//!
//! Backoff: `initial × 2^(failures−1)`, capped at `max` (at most 30 s, so an idle failed member
//! is re-probed at least that often; a call to it starts an attempt at once, see
//! `BackendHandle::ready_session`). The failure count resets only when the backend had stayed
//! connected for `stable_after` (crash-loop protection). The backend learns when its retry is
//! (`RetryScheduled`), so an agent's error says when to call again.
//!
//! Stopping muster is not deleting its servers: from `Stopping` on, desired state and backend
//! state changes are ignored and nothing is written, so no `Deleted` event or `Stopped` status
//! claims the servers went away (in Kubernetes mode such Events would be false for every pod
//! restart). `CloseBackends` then closes each upstream session and waits for it.

pub mod events;
mod plan;
mod service;
mod workflows;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::auth::exchange::{ExchangeTarget, Exchanger};
use crate::backend::{
    BackendActor, BackendHandle, BackendStateChanged, Connect, Draining, RetryScheduled, Shutdown, UpstreamAuth,
};
use crate::config::{Calls, Supervision};
use crate::crd::McpServer;
use crate::crd::files::{Definition, DesiredSet, Source};
use crate::crd::sink::Sink;
use crate::crd::status::{Condition, Reason, State, Status};
use crate::routing::{InitialSetKnown, RouterHandle, ServerAdded, ServerRemoved};
use events::{Event, EventLog};
use plan::{Action, Running};
pub use service::{ServiceAction, ServiceControl, ServiceHandle};
use workflows::WorkflowLedger;

/// The desired set: the folder's content, or the MCPServer resources in the watched namespaces.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DesiredState(pub DesiredSet);

struct Supervised {
    definition: Arc<McpServer>,
    source: Source,
    handle: BackendHandle,
    /// Bumped when the backend is replaced, so stale retry timers do nothing.
    epoch: u64,
    state: State,
    last_error: Option<String>,
    connected_at: Option<Instant>,
    last_connected: Option<String>,
    restart_count: u32,
    consecutive_failures: u32,
    next_retry: Option<chrono::DateTime<chrono::Utc>>,
    /// Bumped by every failure, so only the latest failure's retry timer connects.
    failure_seq: u64,
    /// Since when calls time out while the session is up (`Degraded` condition).
    degraded_since: Option<chrono::DateTime<chrono::Utc>>,
    /// A newer version of the definition was rejected; we keep running this one.
    rejected_update: Option<String>,
    /// The revision the backend's session speaks (`BackendStateChanged`).
    protocol_version: Option<String>,
}

pub struct SupervisorActor {
    policy: Supervision,
    calls: Calls,
    exchanger: Option<Arc<Exchanger>>,
    router: RouterHandle,
    sink: Sink,
    servers: BTreeMap<String, Supervised>,
    initial_done: bool,
    next_epoch: u64,
    /// Muster is stopping: the desired state no longer changes anything, and nothing is written.
    stopping: bool,
    /// Every event published, for `core_events`.
    events: EventLog,
    /// Servers stopped by `core_service_stop`: kept out of the desired state until started again
    /// or their definition changes.
    stopped: BTreeMap<String, (Arc<McpServer>, Source)>,
    /// The workflows of the last desired set, for their status and lifecycle events.
    workflows: WorkflowLedger,
}

/// `app.rs` -> supervisor: muster was told to stop (SIGTERM, Ctrl-C). The servers keep running
/// while the frontend drains, but nothing about them changes or is written from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stopping;

/// `app.rs` -> supervisor, after the frontend has drained: close every upstream session (stdio
/// children exit with theirs). Answers when all are closed or `CLOSE_TIMEOUT` has passed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseBackends;

/// How long `CloseBackends` waits for the upstream sessions to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(8);

impl SupervisorActor {
    pub fn new(
        policy: Supervision,
        calls: Calls,
        router: RouterHandle,
        exchanger: Option<Arc<Exchanger>>,
        sink: Sink,
        events: EventLog,
    ) -> Self {
        Self {
            events,
            stopped: BTreeMap::new(),
            workflows: WorkflowLedger::default(),
            policy,
            calls,
            exchanger,
            router,
            sink,
            servers: BTreeMap::new(),
            initial_done: false,
            next_epoch: 0,
            stopping: false,
        }
    }

    /// Starts a backend for `definition`; `Err` (with the reason) leaves nothing running.
    fn start_backend(
        &mut self,
        ctx: &mut Context<Self>,
        definition: McpServer,
        source: Source,
        auth: Option<Arc<UpstreamAuth>>,
    ) {
        let name = definition.name().to_owned();
        let definition = Arc::new(definition);
        let started = BackendActor::start(
            definition.clone(),
            self.policy.health_interval,
            self.calls,
            ctx.address().recipient(),
            self.router.addr.clone().recipient(),
            auth,
        );
        let handle = match started {
            Ok(handle) => handle,
            Err(e) => {
                tracing::error!(server = name, error = %e, "cannot start backend");
                self.fail_unstarted(&source, e.to_string());
                return;
            }
        };
        self.router.addr.do_send(ServerAdded { handle: handle.clone() });
        self.next_epoch += 1;
        let auto_start = definition.spec.auto_start;
        self.servers.insert(
            name.clone(),
            Supervised {
                definition,
                source: source.clone(),
                handle: handle.clone(),
                epoch: self.next_epoch,
                state: State::Stopped,
                last_error: None,
                connected_at: None,
                last_connected: None,
                restart_count: 0,
                consecutive_failures: 0,
                next_retry: None,
                failure_seq: 0,
                degraded_since: None,
                rejected_update: None,
                protocol_version: None,
            },
        );
        if auto_start {
            tracing::info!(server = name, "starting backend");
            self.publish(&source, &name, Reason::Starting, format!("starting {name}"), false);
            handle.tell(Connect);
        } else {
            self.write(&name);
        }
    }

    fn fail_unstarted(&self, source: &Source, error: String) {
        self.publish(source, &name_of(source), Reason::Failed, error.clone(), true);
        self.sink.write(
            source,
            &Status {
                state: State::Failed,
                last_error: Some(error),
                last_connected: None,
                restart_count: 0,
                consecutive_failures: 1,
                next_retry_after: None,
                protocol_version: None,
                conditions: Vec::new(),
            },
        );
    }

    fn stop_backend(&mut self, name: &str, deleted: bool) {
        if let Some(managed) = self.servers.remove(name) {
            tracing::info!(server = name, "stopping backend");
            managed.handle.tell(Shutdown);
            self.router.addr.do_send(ServerRemoved { name: name.to_owned(), instance: managed.handle.instance });
            if deleted {
                self.sink.forget(&managed.source);
            }
            let reason = if deleted { Reason::Deleted } else { Reason::Stopped };
            self.publish(&managed.source, name, reason, format!("{name} stopped"), false);
        }
    }

    /// An event: through the `Sink` (log, Kubernetes Event) and into `core_events`' ring.
    fn publish(&self, source: &Source, name: &str, reason: Reason, note: String, warning: bool) {
        let event = Event::new("MCPServer", name, namespace_of(source), reason.as_str(), note.clone());
        self.events.record(event.warning(warning));
        self.sink.event(source, reason.as_str(), note, warning);
    }

    fn write(&self, name: &str) {
        let Some(m) = self.servers.get(name) else { return };
        let last_error = match (&m.last_error, &m.rejected_update) {
            (_, Some(rejected)) => Some(format!(
                "the new version of this definition is invalid, still running the previous one: {rejected}"
            )),
            (error, None) => error.clone(),
        };
        self.sink.write(
            &m.source,
            &Status {
                state: m.state,
                last_error,
                last_connected: m.last_connected.clone(),
                restart_count: m.restart_count,
                consecutive_failures: m.consecutive_failures,
                next_retry_after: m.next_retry.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                protocol_version: m.protocol_version.clone(),
                conditions: m.degraded_since.iter().map(degraded_condition).collect(),
            },
        );
    }
}

/// The resource name an event is about when only its source is known: the Kubernetes name, or
/// the file's stem.
fn name_of(source: &Source) -> String {
    match source {
        Source::Kubernetes { name, .. } => name.clone(),
        Source::File(path) => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
    }
}

/// The namespace an event is about (`default` in filesystem mode, as Muster's events have it).
fn namespace_of(source: &Source) -> &str {
    match source {
        Source::Kubernetes { namespace, .. } => namespace,
        Source::File(_) => "default",
    }
}

/// How the backend authenticates upstream, from `spec.auth`.
fn upstream_auth(
    definition: &McpServer,
    exchanger: Option<&Arc<Exchanger>>,
) -> Result<Option<Arc<UpstreamAuth>>, String> {
    let Some(auth) = &definition.spec.auth else { return Ok(None) };
    if let Some(exchange) = auth.token_exchange.as_ref().filter(|t| t.enabled) {
        let exchanger =
            exchanger.ok_or("token exchange needs a signed-in user: enable aggregator.oauth.server in config.yaml")?;
        let namespace = definition.metadata.namespace.as_deref().unwrap_or("default");
        let mut target =
            ExchangeTarget::from_spec(definition.name(), namespace, exchange).map_err(|e| e.to_string())?;
        target.audiences.clone_from(&auth.required_audiences);
        return Ok(Some(Arc::new(UpstreamAuth::Exchange { target: Box::new(target), exchanger: exchanger.clone() })));
    }
    if auth.forward_token {
        return Ok(Some(Arc::new(UpstreamAuth::Forward)));
    }
    if auth.auth_type == crate::crd::AuthType::Oauth {
        return Err(
            "auth.type oauth without tokenExchange or forwardToken (per-server OAuth login) is not supported yet"
                .to_owned(),
        );
    }
    Ok(None)
}

impl Actor for SupervisorActor {
    type Context = Context<Self>;
}

impl Handler<DesiredState> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, DesiredState(mut snapshot): DesiredState, ctx: &mut Self::Context) {
        if self.stopping {
            return; // a folder removed while muster stops (a script's cleanup) deletes nothing
        }
        for rejected in &snapshot.rejected {
            tracing::error!(source = %rejected.source, "{rejected}");
        }
        let workflows = std::mem::take(&mut snapshot.workflows);
        self.workflows.update(&workflows, &snapshot.rejected_workflows, &self.sink, &self.events);
        let valid = workflows.into_iter().filter(|w| w.status.valid).map(|w| w.workflow).collect();
        self.router.addr.do_send(crate::routing::WorkflowsChanged(valid));
        self.keep_stopped(&mut snapshot);
        let actions = {
            let running = self
                .servers
                .iter()
                .map(|(name, m)| {
                    let current = Running {
                        definition: &m.definition,
                        source: &m.source,
                        rejected_update: m.rejected_update.as_deref(),
                    };
                    (name.as_str(), current)
                })
                .collect();
            plan::plan(snapshot, &running, self.exchanger.as_ref())
        };
        for action in actions {
            self.execute(ctx, action);
        }
        if !self.initial_done {
            self.initial_done = true;
            let auto_started =
                self.servers.iter().filter(|(_, m)| m.definition.spec.auto_start).map(|(n, _)| n.clone()).collect();
            self.router.addr.do_send(InitialSetKnown { auto_started });
        }
    }
}

impl SupervisorActor {
    /// Carries out one step of a plan.
    fn execute(&mut self, ctx: &mut Context<Self>, action: Action) {
        match action {
            Action::Stop { name } => self.stop_backend(&name, true),
            Action::KeepRejected { name, reasons } => {
                if let Some(managed) = self.servers.get_mut(&name) {
                    managed.rejected_update = Some(reasons);
                    self.write(&name);
                }
            }
            Action::ClearRejected { name } => {
                if let Some(managed) = self.servers.get_mut(&name) {
                    managed.rejected_update = None;
                    self.write(&name);
                }
            }
            Action::Fail { source, error } => self.fail_unstarted(&source, error),
            Action::Start { definition, auth } => self.announce_and_start(ctx, definition, auth, Reason::Created),
            Action::Replace { definition, auth } => {
                let name = definition.server.name().to_owned();
                tracing::info!(server = name, "definition changed; restarting backend");
                self.stop_backend(&name, false);
                self.announce_and_start(ctx, definition, auth, Reason::Updated);
            }
        }
    }

    fn announce_and_start(
        &mut self,
        ctx: &mut Context<Self>,
        definition: Definition,
        auth: Option<Arc<UpstreamAuth>>,
        reason: Reason,
    ) {
        let name = definition.server.name();
        self.publish(&definition.source, name, reason, format!("{name} {}", reason.verb()), false);
        self.start_backend(ctx, definition.server, definition.source, auth);
    }
}

impl Handler<BackendStateChanged> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, msg: BackendStateChanged, ctx: &mut Self::Context) {
        let policy = self.policy;
        if self.stopping {
            return; // upstreams that go down with muster did not fail
        }
        let Some(managed) = self.servers.get_mut(&msg.name) else { return };
        if managed.handle.instance != msg.instance {
            return; // from a backend this one replaced
        }
        let previous = managed.state;
        managed.state = msg.state;
        managed.protocol_version.clone_from(&msg.protocol_version);
        let degraded = msg.degraded && matches!(msg.state, State::Connected | State::Running);
        if degraded != managed.degraded_since.is_some() {
            managed.degraded_since = degraded.then(chrono::Utc::now);
        }
        let source = managed.source.clone();
        match msg.state {
            // Still up (a change of call health): the uptime counts on.
            State::Connected | State::Running if previous == msg.state => {}
            State::Connected | State::Running => {
                let recovered = managed.consecutive_failures > 0;
                managed.connected_at = Some(Instant::now());
                managed.last_connected = Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                managed.last_error = None;
                managed.next_retry = None;
                let reason = if recovered { Reason::RecoverySucceeded } else { Reason::Started };
                self.publish(&source, &msg.name, reason, format!("{} is {}", msg.name, msg.state), false);
            }
            State::Failed => {
                let uptime = managed.connected_at.take().map(|t| t.elapsed());
                managed.consecutive_failures =
                    failures_after(managed.consecutive_failures, uptime, policy.stable_after);
                let delay = backoff(&policy, managed.consecutive_failures);
                managed.last_error.clone_from(&msg.error);
                managed.next_retry = chrono::Duration::from_std(delay).ok().map(|d| chrono::Utc::now() + d);
                managed.failure_seq += 1;
                let (name, epoch, seq) = (msg.name.clone(), managed.epoch, managed.failure_seq);
                managed.handle.tell(RetryScheduled { at: Instant::now() + delay });
                tracing::info!(
                    server = name,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    failures = managed.consecutive_failures,
                    "scheduling restart"
                );
                let note = format!("{}; retrying in {} ms", msg.error.unwrap_or_default(), delay.as_millis());
                self.publish(&source, &msg.name, Reason::Failed, note, true);
                ctx.run_later(delay, move |actor, _| {
                    if actor.stopping {
                        return;
                    }
                    let Some(managed) = actor.servers.get_mut(&name) else { return };
                    if managed.epoch != epoch || managed.failure_seq != seq || managed.state != State::Failed {
                        return;
                    }
                    managed.restart_count += 1;
                    managed.next_retry = None;
                    managed.handle.tell(Connect);
                    let source = managed.source.clone();
                    actor.publish(&source, &name, Reason::RecoveryStarted, format!("restarting {name}"), false);
                });
            }
            State::AuthRequired if previous != State::AuthRequired => {
                self.publish(
                    &source,
                    &msg.name,
                    Reason::AuthRequired,
                    format!("{} serves signed-in users only", msg.name),
                    false,
                );
            }
            _ => {}
        }
        let name = msg.name;
        self.write(&name);
    }
}

impl Handler<Stopping> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, _: Stopping, _: &mut Self::Context) {
        tracing::info!("muster is stopping; the servers' desired state is no longer followed");
        self.stopping = true;
        for managed in self.servers.values() {
            managed.handle.tell(Draining);
        }
    }
}

impl Handler<CloseBackends> for SupervisorActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: CloseBackends, _: &mut Self::Context) -> Self::Result {
        self.stopping = true;
        let closing: Vec<_> = std::mem::take(&mut self.servers).into_values().map(|m| m.handle.close()).collect();
        Box::pin(async move {
            if tokio::time::timeout(CLOSE_TIMEOUT, futures::future::join_all(closing)).await.is_err() {
                tracing::info!(timeout_s = CLOSE_TIMEOUT.as_secs(), "not every upstream session closed in time");
            }
        })
    }
}

/// The consecutive-failure count after one more failure. It starts over only when the backend
/// had stayed up for `stable_after` (a crash loop keeps backing off).
fn failures_after(previous: u32, uptime: Option<Duration>, stable_after: Duration) -> u32 {
    if uptime.is_some_and(|up| up >= stable_after) { 1 } else { previous.saturating_add(1) }
}

/// `initial × 2^(failures−1)`, capped at `max` and at `MAX_IDLE_PROBE`.
fn backoff(policy: &Supervision, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    policy.initial_backoff.saturating_mul(1 << exp).min(policy.max_backoff).min(MAX_IDLE_PROBE)
}

/// The longest a failed member goes without a connection attempt, calls or not.
const MAX_IDLE_PROBE: Duration = Duration::from_secs(30);

/// The `Degraded` condition: the session is up (pings pass), but calls time out.
fn degraded_condition(since: &chrono::DateTime<chrono::Utc>) -> Condition {
    Condition {
        condition_type: "Degraded".to_owned(),
        status: "True".to_owned(),
        reason: "CallsTimingOut".to_owned(),
        message: "calls time out while the session answers pings".to_owned(),
        last_transition_time: since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_initial_and_is_capped() {
        let policy = Supervision {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            ..Supervision::default()
        };
        let delays: Vec<u64> = (1..=6).map(|n| backoff(&policy, n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff(&policy, 1000), Duration::from_secs(10));
    }

    #[test]
    fn failures_reset_only_after_sustained_uptime() {
        let stable = Duration::from_secs(60);
        // Never connected (failed to start): keeps counting.
        assert_eq!(failures_after(3, None, stable), 4);
        // Crash loop: connected briefly, still counting.
        assert_eq!(failures_after(3, Some(Duration::from_secs(5)), stable), 4);
        // Was healthy long enough: this failure is the first of a new series.
        assert_eq!(failures_after(3, Some(Duration::from_secs(61)), stable), 1);
    }

    #[test]
    fn backoff_never_exceeds_the_idle_probe_interval() {
        let policy = Supervision {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(600),
            ..Supervision::default()
        };
        let delays: Vec<u64> = (1..=7).map(|n| backoff(&policy, n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30], "a max above 30 s is cut to MAX_IDLE_PROBE");
        assert_eq!(backoff(&policy, u32::MAX), MAX_IDLE_PROBE, "no overflow on a huge count");
    }

    #[test]
    fn the_first_failure_waits_the_initial_backoff() {
        let policy = Supervision {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(300),
            ..Supervision::default()
        };
        // Zero (never happens: a failure is counted first) behaves like one.
        assert_eq!(backoff(&policy, 0), Duration::from_millis(50));
        assert_eq!(backoff(&policy, 1), Duration::from_millis(50));
        assert_eq!(backoff(&policy, 3), Duration::from_millis(200));
        assert_eq!(backoff(&policy, 4), Duration::from_millis(300));
    }

    #[test]
    fn uptime_of_exactly_stable_after_counts_as_stable() {
        let stable = Duration::from_secs(60);
        assert_eq!(failures_after(7, Some(stable), stable), 1);
        assert_eq!(failures_after(7, Some(stable - Duration::from_millis(1)), stable), 8);
        assert_eq!(failures_after(u32::MAX, None, stable), u32::MAX, "the count saturates");
    }
}
