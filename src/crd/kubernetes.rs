//! Kubernetes mode: MCPServer resources from the API server are the desired state.
//!
//! - `watch` runs a kube-rs watcher + reflector per namespace and, once every namespace has
//!   finished its initial list (`InitDone`), publishes the whole desired set, exactly as the folder
//!   watcher does, so the supervisor has one code path. Errors before the first sync are retried a
//!   few times, then reported as fatal: muster never falls back to files (Muster #1143), and it is
//!   not ready until synced (#1147). After that, an unreachable API server leaves the last known
//!   state in place; the watcher relists when it returns (a `410 Gone` too).
//! - `StatusWriter` patches the status subresource (merge patch, retried on conflict and server
//!   errors), one writer task so a server's statuses land in order, while this replica leads
//!   (`leader.rs`); a new leader writes every server's newest status.
//! - `EventRecorder` publishes Kubernetes Events with the reasons of reference §7, the leader only.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;

use super::files::{DesiredSet, Source, desired_set_of};
use super::leader::Leadership;
use super::status::{Condition, State, Status};
use super::{API_VERSION, KIND, McpServerResource};

/// Failures before the first sync that make muster give up (and exit) rather than serve nothing.
const MAX_INITIAL_FAILURES: u32 = 5;
/// Each status write gets at most this long (kube's client has no read timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot build a Kubernetes client (kubeconfig or in-cluster config): {0}")]
    Client(String),
    #[error("cannot list MCPServers in namespace {namespace} after {attempts} attempts: {reason}")]
    InitialList { namespace: String, attempts: u32, reason: String },
}

/// A client from the kubeconfig (`KUBECONFIG`, `~/.kube/config`) or the in-cluster service account.
pub async fn client() -> Result<Client, Error> {
    Client::try_default().await.map_err(|e| Error::Client(e.to_string()))
}

/// Watches MCPServers in `namespaces` and sends the desired set after every change. Returns
/// `Err` only when the initial sync cannot be done; the caller must then stop the process.
pub async fn watch(
    client: Client,
    namespaces: Vec<String>,
    out: mpsc::UnboundedSender<DesiredSet>,
) -> Result<(), Error> {
    let mut readers = Vec::new();
    let mut streams = Vec::new();
    for (index, namespace) in namespaces.iter().enumerate() {
        let api: Api<McpServerResource> = Api::namespaced(client.clone(), namespace);
        let (reader, writer) = reflector::store();
        let stream = reflector(writer, watcher(api, watcher::Config::default()).default_backoff())
            .map(move |event| (index, event))
            .boxed();
        readers.push(reader);
        streams.push(stream);
    }
    let mut events = futures::stream::select_all(streams);
    let mut synced = vec![false; namespaces.len()];
    let mut failures = vec![0u32; namespaces.len()];
    let mut last: Option<DesiredSet> = None;
    while let Some((index, event)) = events.next().await {
        match event {
            Ok(watcher::Event::InitDone) => {
                synced[index] = true;
                failures[index] = 0;
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {}
            Err(e) => {
                let namespace = &namespaces[index];
                if !synced[index] {
                    failures[index] += 1;
                    tracing::error!(namespace, attempt = failures[index], error = %e, "listing MCPServers failed");
                    if failures[index] >= MAX_INITIAL_FAILURES && last.is_none() {
                        return Err(Error::InitialList {
                            namespace: namespace.clone(),
                            attempts: failures[index],
                            reason: e.to_string(),
                        });
                    }
                } else {
                    tracing::warn!(namespace, error = %e, "MCPServer watch interrupted; serving the last known state");
                }
                continue;
            }
        }
        if !synced.iter().all(|s| *s) {
            continue;
        }
        let resources = readers
            .iter()
            .flat_map(|reader| reader.state())
            .map(|resource| {
                let server = resource.to_definition();
                let source = Source::Kubernetes {
                    namespace: server.metadata.namespace.clone().unwrap_or_default(),
                    name: server.metadata.name.clone(),
                };
                (server, source)
            })
            .collect();
        let snapshot = desired_set_of(resources);
        if last.as_ref() != Some(&snapshot) {
            last = Some(snapshot.clone());
            if out.send(snapshot).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The `Ready` condition for a state.
fn ready_condition(status: &Status) -> Condition {
    let ready = matches!(status.state, State::Connected | State::Running);
    Condition {
        condition_type: "Ready".to_owned(),
        status: if ready { "True" } else { "False" }.to_owned(),
        reason: status.state.as_str().replace(' ', ""),
        message: status.last_error.clone().unwrap_or_default(),
        last_transition_time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

/// Writes status to the status subresource, in order, from one task, while this replica leads
/// (`leader.rs`). It keeps every server's newest status whether it leads or not, so a replica
/// that becomes the leader writes them all at once and a takeover converges.
#[derive(Clone)]
pub struct StatusWriter {
    tx: mpsc::UnboundedSender<StatusChange>,
}

enum StatusChange {
    Write {
        namespace: String,
        name: String,
        status: Box<Status>,
    },
    /// The server was deleted: nothing to write, nothing to keep.
    Forget {
        namespace: String,
        name: String,
    },
}

impl StatusWriter {
    pub fn start(client: Client, leadership: Leadership) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_statuses(client, leadership, rx));
        Self { tx }
    }

    pub fn write(&self, namespace: &str, name: &str, status: &Status) {
        let mut status = status.clone();
        status.conditions.insert(0, ready_condition(&status));
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        let _ = self.tx.send(StatusChange::Write { namespace, name, status: Box::new(status) });
    }

    pub fn forget(&self, namespace: &str, name: &str) {
        let _ = self.tx.send(StatusChange::Forget { namespace: namespace.to_owned(), name: name.to_owned() });
    }
}

/// The writer task. `latest` holds one status per server (bounded by the servers); `pending`
/// the ones not yet written. Coalesced: only the newest status of a server is written.
async fn write_statuses(client: Client, mut leadership: Leadership, mut rx: mpsc::UnboundedReceiver<StatusChange>) {
    let mut latest: BTreeMap<(String, String), Status> = BTreeMap::new();
    let mut pending: BTreeSet<(String, String)> = BTreeSet::new();
    let mut leading = leadership.is_leader();
    loop {
        tokio::select! {
            change = rx.recv() => {
                let Some(change) = change else { return };
                apply(change, &mut latest, &mut pending);
                while let Ok(change) = rx.try_recv() {
                    apply(change, &mut latest, &mut pending);
                }
            }
            now_leading = leadership.changed() => {
                if now_leading && !leading {
                    tracing::info!(servers = latest.len(), "writing every server's status as the new leader");
                    pending.extend(latest.keys().cloned());
                }
                leading = now_leading;
            }
        }
        if !leading {
            pending.clear();
            continue;
        }
        for key in std::mem::take(&mut pending) {
            // Leadership may end while writing: stop at once.
            if !leadership.is_leader() {
                break;
            }
            let Some(status) = latest.get(&key) else { continue };
            if patch_status(&client, &key.0, &key.1, status).await == Patched::Gone {
                latest.remove(&key);
            }
        }
    }
}

fn apply(
    change: StatusChange,
    latest: &mut BTreeMap<(String, String), Status>,
    pending: &mut BTreeSet<(String, String)>,
) {
    match change {
        StatusChange::Write { namespace, name, status } => {
            latest.insert((namespace.clone(), name.clone()), *status);
            pending.insert((namespace, name));
        }
        StatusChange::Forget { namespace, name } => {
            let key = (namespace, name);
            latest.remove(&key);
            pending.remove(&key);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Patched {
    Done,
    /// The resource is gone (deleted meanwhile).
    Gone,
}

async fn patch_status(client: &Client, namespace: &str, name: &str, status: &Status) -> Patched {
    let api: Api<McpServerResource> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({ "status": status });
    let params = PatchParams::default();
    for attempt in 1..=4u32 {
        let outcome =
            tokio::time::timeout(REQUEST_TIMEOUT, api.patch_status(name, &params, &Patch::Merge(&patch))).await;
        let error = match outcome {
            Ok(Ok(_)) => return Patched::Done,
            // Deleted meanwhile: nothing to write.
            Ok(Err(kube::Error::Api(e))) if e.code == 404 => return Patched::Gone,
            Ok(Err(e)) => {
                let retry = matches!(&e, kube::Error::Api(s) if s.code == 409 || s.code >= 500)
                    || !matches!(&e, kube::Error::Api(_));
                if !retry {
                    tracing::warn!(namespace, name, error = %e, "cannot write MCPServer status");
                    return Patched::Done;
                }
                e.to_string()
            }
            Err(_) => format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()),
        };
        if attempt == 4 {
            tracing::warn!(namespace, name, error, "cannot write MCPServer status");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
    }
    Patched::Done
}

/// Kubernetes Events about MCPServers, published by the leader only (`leader.rs`): an Event
/// tells what happened once, not once per replica. A follower's are logged, not published.
#[derive(Clone)]
pub struct EventRecorder {
    recorder: Recorder,
    leadership: Leadership,
}

impl EventRecorder {
    pub fn new(client: Client, identity: String, leadership: Leadership) -> Self {
        let reporter = Reporter { controller: "muster".to_owned(), instance: Some(identity) };
        Self { recorder: Recorder::new(client, reporter), leadership }
    }

    pub fn publish(&self, namespace: &str, name: &str, reason: &str, note: String, warning: bool) {
        if !self.leadership.is_leader() {
            return;
        }
        let reference = ObjectReference {
            api_version: Some(API_VERSION.to_owned()),
            kind: Some(KIND.to_owned()),
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: reason.trim_start_matches("MCPServer").to_owned(),
            secondary: None,
        };
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!(error = %e, "cannot publish event");
            }
        });
    }
}
