//! SupervisorActor: turns desired state (MCPServer resources) into one BackendActor each, and
//! restarts failed backends with capped exponential backoff, stdio and remote alike.
//!
//! Accepts `DesiredState` (from the folder watcher in `crd/files.rs`) and `BackendStateChanged`
//! (from backends). Tells backends `Connect`/`Shutdown`, tells the router `ServerRemoved` and
//! `InitialSetKnown`, and writes each server's `status` block (through `crd/status.rs`).
//!
//! Backoff: `initial × 2^(failures−1)`, capped at `max`. The failure count resets only when the
//! backend had stayed connected for `stable_after` (crash-loop protection).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::backend::{BackendActor, BackendHandle, BackendStateChanged, Connect, Shutdown};
use crate::config::Supervision;
use crate::crd::McpServer;
use crate::crd::files::Snapshot as DesiredSnapshot;
use crate::crd::status::{self, State, Status};
use crate::routing::{InitialSetKnown, RouterHandle, ServerRemoved};

/// The folder's current content (filesystem mode).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DesiredState(pub DesiredSnapshot);

struct Managed {
    definition: Arc<McpServer>,
    path: PathBuf,
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
    /// A newer version of the file was rejected; we keep running this one.
    rejected_update: Option<String>,
}

pub struct SupervisorActor {
    policy: Supervision,
    router: RouterHandle,
    servers: BTreeMap<String, Managed>,
    initial_done: bool,
    next_epoch: u64,
}

impl SupervisorActor {
    pub fn new(policy: Supervision, router: RouterHandle) -> Self {
        Self { policy, router, servers: BTreeMap::new(), initial_done: false, next_epoch: 0 }
    }

    fn start_backend(&mut self, ctx: &mut Context<Self>, definition: McpServer, path: PathBuf) {
        let name = definition.name().to_owned();
        let definition = Arc::new(definition);
        let started = BackendActor::start(
            definition.clone(),
            self.policy.health_interval,
            ctx.address().recipient(),
            self.router.addr.clone().recipient(),
        );
        let handle = match started {
            Ok(handle) => handle,
            Err(e) => {
                tracing::error!(server = name, error = %e, "cannot start backend");
                write_status(
                    &path,
                    &Status {
                        state: State::Failed,
                        last_error: Some(e.to_string()),
                        last_connected: None,
                        restart_count: 0,
                        consecutive_failures: 1,
                        next_retry_after: None,
                    },
                );
                return;
            }
        };
        self.next_epoch += 1;
        let auto_start = definition.spec.auto_start;
        self.servers.insert(
            name.clone(),
            Managed {
                definition,
                path,
                handle: handle.clone(),
                epoch: self.next_epoch,
                state: State::Stopped,
                last_error: None,
                connected_at: None,
                last_connected: None,
                restart_count: 0,
                consecutive_failures: 0,
                next_retry: None,
                rejected_update: None,
            },
        );
        if auto_start {
            tracing::info!(server = name, "starting backend");
            handle_connect(&handle);
        } else {
            self.write(&name);
        }
    }

    fn stop_backend(&mut self, name: &str) {
        if let Some(managed) = self.servers.remove(name) {
            tracing::info!(server = name, "stopping backend");
            send_shutdown(&managed.handle);
            self.router.addr.do_send(ServerRemoved { name: name.to_owned() });
        }
    }

    fn write(&self, name: &str) {
        let Some(m) = self.servers.get(name) else { return };
        let last_error = match (&m.last_error, &m.rejected_update) {
            (_, Some(rejected)) => {
                Some(format!("the file's new version is invalid, still running the previous one: {rejected}"))
            }
            (error, None) => error.clone(),
        };
        write_status(
            &m.path,
            &Status {
                state: m.state,
                last_error,
                last_connected: m.last_connected.clone(),
                restart_count: m.restart_count,
                consecutive_failures: m.consecutive_failures,
                next_retry_after: m.next_retry.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            },
        );
    }

    fn backoff(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        self.policy.initial_backoff.saturating_mul(1 << exp).min(self.policy.max_backoff)
    }
}

fn handle_connect(handle: &BackendHandle) {
    handle.tell(Connect);
}

fn send_shutdown(handle: &BackendHandle) {
    handle.tell(Shutdown);
}

fn write_status(path: &std::path::Path, status: &Status) {
    if let Err(e) = status::write_to_file(path, status) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write status");
    }
}

impl Actor for SupervisorActor {
    type Context = Context<Self>;
}

impl Handler<DesiredState> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, DesiredState(snapshot): DesiredState, ctx: &mut Self::Context) {
        for rejected in &snapshot.rejected {
            tracing::error!(file = %rejected.path.display(), "{rejected}");
        }
        let desired: BTreeMap<String, _> =
            snapshot.definitions.into_iter().map(|d| (d.server.name().to_owned(), d)).collect();
        let rejected_names: BTreeMap<String, String> = snapshot
            .rejected
            .iter()
            .filter_map(|r| {
                let reasons = r.problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                r.name.clone().map(|n| (n, reasons))
            })
            .collect();
        // Removed (and not merely invalid now): stop.
        let gone: Vec<String> = self
            .servers
            .keys()
            .filter(|name| !desired.contains_key(*name) && !rejected_names.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            self.stop_backend(&name);
        }
        // Invalid new version of a running server: keep the old one, say so in status.
        for (name, reasons) in &rejected_names {
            if let Some(managed) = self.servers.get_mut(name) {
                if managed.rejected_update.as_ref() != Some(reasons) {
                    managed.rejected_update = Some(reasons.clone());
                    self.write(name);
                }
            } else if let Some(rejected) = snapshot.rejected.iter().find(|r| r.name.as_deref() == Some(name)) {
                write_status(
                    &rejected.path,
                    &Status {
                        state: State::Failed,
                        last_error: Some(format!("invalid: {reasons}")),
                        last_connected: None,
                        restart_count: 0,
                        consecutive_failures: 0,
                        next_retry_after: None,
                    },
                );
            }
        }
        for (name, definition) in desired {
            match self.servers.get_mut(&name) {
                Some(managed)
                    if managed.definition.spec == definition.server.spec && managed.path == definition.path =>
                {
                    if managed.rejected_update.take().is_some() {
                        self.write(&name);
                    }
                }
                Some(_) => {
                    tracing::info!(server = name, "definition changed; restarting backend");
                    self.stop_backend(&name);
                    self.start_backend(ctx, definition.server, definition.path);
                }
                None => self.start_backend(ctx, definition.server, definition.path),
            }
        }
        if !self.initial_done {
            self.initial_done = true;
            let auto_started =
                self.servers.iter().filter(|(_, m)| m.definition.spec.auto_start).map(|(n, _)| n.clone()).collect();
            self.router.addr.do_send(InitialSetKnown { auto_started });
        }
    }
}

impl Handler<BackendStateChanged> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, msg: BackendStateChanged, ctx: &mut Self::Context) {
        let policy = self.policy;
        let delay = {
            let Some(managed) = self.servers.get(&msg.name) else { return };
            let stable = managed.connected_at.is_some_and(|t| t.elapsed() >= policy.stable_after);
            let failures = if stable { 1 } else { managed.consecutive_failures + 1 };
            self.backoff(failures)
        };
        let Some(managed) = self.servers.get_mut(&msg.name) else { return };
        managed.state = msg.state;
        match msg.state {
            State::Connected | State::Running => {
                managed.connected_at = Some(Instant::now());
                managed.last_connected = Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                managed.last_error = None;
                managed.next_retry = None;
            }
            State::Failed => {
                if managed.connected_at.take().is_some_and(|t| t.elapsed() >= policy.stable_after) {
                    managed.consecutive_failures = 0;
                }
                managed.consecutive_failures += 1;
                managed.last_error = msg.error;
                managed.next_retry = chrono::Duration::from_std(delay).ok().map(|d| chrono::Utc::now() + d);
                let (name, epoch) = (msg.name.clone(), managed.epoch);
                tracing::info!(
                    server = name,
                    retry_in_ms = delay.as_millis() as u64,
                    failures = managed.consecutive_failures,
                    "scheduling restart"
                );
                ctx.run_later(delay, move |actor, _| {
                    let Some(managed) = actor.servers.get_mut(&name) else { return };
                    if managed.epoch != epoch || managed.state != State::Failed {
                        return;
                    }
                    managed.restart_count += 1;
                    managed.next_retry = None;
                    handle_connect(&managed.handle);
                });
            }
            _ => {}
        }
        let name = msg.name;
        self.write(&name);
    }
}
