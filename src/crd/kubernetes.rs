//! Kubernetes mode: MCPServer and Workflow resources from the API server are the desired state.
//!
//! - `watch` runs a kube-rs watcher + reflector per namespace and kind and, once every one has
//!   finished its initial list (`InitDone`), publishes the whole desired set, exactly as the folder
//!   watcher does, so the supervisor has one code path. Errors before the first sync are retried a
//!   few times, then reported as fatal: muster never falls back to files (Muster #1143), and it is
//!   not ready until synced (#1147). After that, an unreachable API server leaves the last known
//!   state in place; the watcher relists when it returns (a `410 Gone` too). Workflows are read as
//!   untyped objects and parsed one by one, so one that muster cannot read is refused alone
//!   instead of failing the whole list.
//! - `StatusWriter` patches the status subresource of MCPServers and Workflows (merge patch,
//!   retried on conflict and server errors), one writer task so a resource's statuses land in
//!   order, while this replica leads (`leader.rs`); a new leader writes every resource's newest status.
//! - `EventRecorder` publishes Kubernetes Events with the reasons of reference §7, the leader only.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::mpsc;

use super::files::{DesiredSet, Source, WorkflowDefinition, desired_set_of, workflows};
use super::leader::Leadership;
use super::status::{Condition, State, Status};
use super::workflow::{self, WorkflowResource, WorkflowStatus};
use super::{API_VERSION, KIND, McpServerResource};

/// Failures before the first sync that make muster give up (and exit) rather than serve nothing.
const MAX_INITIAL_FAILURES: u32 = 5;
/// Each status write gets at most this long (kube's client has no read timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot build a Kubernetes client (kubeconfig or in-cluster config): {0}")]
    Client(String),
    #[error("cannot list {kind}s in namespace {namespace} after {attempts} attempts: {reason}")]
    InitialList { kind: &'static str, namespace: String, attempts: u32, reason: String },
}

/// A client from the kubeconfig (`KUBECONFIG`, `~/.kube/config`) or the in-cluster service account.
pub async fn client() -> Result<Client, Error> {
    Client::try_default().await.map_err(|e| Error::Client(e.to_string()))
}

/// What one watch event means for the desired set.
enum Signal {
    /// The initial list is complete.
    Synced,
    /// Part of an initial list: wait for `Synced`.
    Listing,
    Changed,
}

fn signal<K>(event: Result<watcher::Event<K>, watcher::Error>) -> Result<Signal, watcher::Error> {
    event.map(|event| match event {
        watcher::Event::InitDone => Signal::Synced,
        watcher::Event::Init | watcher::Event::InitApply(_) => Signal::Listing,
        watcher::Event::Apply(_) | watcher::Event::Delete(_) => Signal::Changed,
    })
}

/// Watches MCPServers and Workflows in `namespaces` and sends the desired set after every change.
/// Returns `Err` only when the initial sync cannot be done; the caller must then stop the process.
pub async fn watch(
    client: Client,
    namespaces: Vec<String>,
    out: mpsc::UnboundedSender<DesiredSet>,
) -> Result<(), Error> {
    let workflow_type = ApiResource::erase::<WorkflowResource>(&());
    let mut servers = Vec::new();
    let mut workflows = Vec::new();
    // Stream `2 i` watches the MCPServers of `namespaces[i]`, stream `2 i + 1` its Workflows.
    let mut streams = Vec::new();
    for (index, namespace) in namespaces.iter().enumerate() {
        let api: Api<McpServerResource> = Api::namespaced(client.clone(), namespace);
        let (reader, writer) = reflector::store();
        let stream = reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
        streams.push(stream.map(move |event| (2 * index, signal(event))).boxed());
        servers.push(reader);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &workflow_type);
        let writer = Writer::new(workflow_type.clone());
        workflows.push(writer.as_reader());
        let stream = reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
        streams.push(stream.map(move |event| (2 * index + 1, signal(event))).boxed());
    }
    let kind_of = |stream: usize| if stream.is_multiple_of(2) { KIND } else { workflow::KIND };
    let mut events = futures::stream::select_all(streams);
    let mut synced = vec![false; 2 * namespaces.len()];
    let mut failures = vec![0u32; 2 * namespaces.len()];
    let mut last: Option<DesiredSet> = None;
    while let Some((stream, event)) = events.next().await {
        match event {
            Ok(Signal::Synced) => {
                synced[stream] = true;
                failures[stream] = 0;
            }
            Ok(Signal::Listing) => continue,
            Ok(Signal::Changed) => {}
            Err(e) => {
                let (namespace, kind) = (&namespaces[stream / 2], kind_of(stream));
                if !synced[stream] {
                    failures[stream] += 1;
                    tracing::error!(namespace, attempt = failures[stream], error = %e, "listing {kind}s failed");
                    if failures[stream] >= MAX_INITIAL_FAILURES && last.is_none() {
                        return Err(Error::InitialList {
                            kind,
                            namespace: namespace.clone(),
                            attempts: failures[stream],
                            reason: e.to_string(),
                        });
                    }
                } else {
                    tracing::warn!(namespace, error = %e, "{kind} watch interrupted; serving the last known state");
                }
                continue;
            }
        }
        if !synced.iter().all(|s| *s) {
            continue;
        }
        let servers = servers
            .iter()
            .flat_map(|reader| reader.state())
            .map(|resource| {
                let server = resource.to_definition();
                let source = Source::Kubernetes {
                    kind: KIND,
                    namespace: server.metadata.namespace.clone().unwrap_or_default(),
                    name: server.metadata.name.clone(),
                };
                (server, source)
            })
            .collect();
        let workflows = workflows.iter().flat_map(|reader| reader.state()).map(|object| workflow_of(&object)).collect();
        let snapshot = desired_set_of(servers, workflows);
        // Muster's own status writes come back as changes; they change nothing desired.
        let desired = without_written(&snapshot);
        if last.as_ref() != Some(&desired) {
            last = Some(desired);
            if out.send(snapshot).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// One Workflow object, parsed; the status it carries is kept as `written`.
fn workflow_of(object: &DynamicObject) -> Result<WorkflowDefinition, super::files::Rejected> {
    let source = Source::Kubernetes {
        kind: workflow::KIND,
        namespace: object.metadata.namespace.clone().unwrap_or_default(),
        name: object.metadata.name.clone().unwrap_or_default(),
    };
    let value = serde_json::to_value(object).unwrap_or(Value::Null);
    workflows::from_resource(value, source)
}

/// The set with every workflow's `written` status cleared: what the set means, not what the
/// resources' status blocks say.
fn without_written(snapshot: &DesiredSet) -> DesiredSet {
    let mut desired = snapshot.clone();
    for definition in &mut desired.workflows {
        definition.written = None;
    }
    desired
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

/// The resource a status is for: its kind (`MCPServer` or `Workflow`), namespace and name.
type Target = (&'static str, String, String);

/// Writes status to the status subresource, in order, from one task, while this replica leads
/// (`leader.rs`). It keeps every resource's newest status whether it leads or not, so a replica
/// that becomes the leader writes them all at once and a takeover converges.
#[derive(Clone)]
pub struct StatusWriter {
    tx: mpsc::UnboundedSender<StatusChange>,
}

enum StatusChange {
    Write {
        target: Target,
        status: Value,
    },
    /// The resource was deleted: nothing to write, nothing to keep.
    Forget {
        target: Target,
    },
}

impl StatusWriter {
    pub fn start(client: Client, leadership: Leadership) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_statuses(client, leadership, rx));
        Self { tx }
    }

    /// An MCPServer's status, with the `Ready` condition first.
    pub fn write(&self, namespace: &str, name: &str, status: &Status) {
        let mut status = status.clone();
        status.conditions.insert(0, ready_condition(&status));
        self.send(KIND, namespace, name, serde_json::to_value(&status));
    }

    /// A Workflow's status (`valid`, `validationErrors`, `referencedTools`, `stepCount`).
    pub fn write_workflow(&self, namespace: &str, name: &str, status: &WorkflowStatus) {
        self.send(workflow::KIND, namespace, name, serde_json::to_value(status));
    }

    /// An MCPServer was deleted.
    pub fn forget(&self, namespace: &str, name: &str) {
        let _ = self.tx.send(StatusChange::Forget { target: (KIND, namespace.to_owned(), name.to_owned()) });
    }

    fn send(&self, kind: &'static str, namespace: &str, name: &str, status: serde_json::Result<Value>) {
        match status {
            Ok(status) => {
                let target = (kind, namespace.to_owned(), name.to_owned());
                let _ = self.tx.send(StatusChange::Write { target, status });
            }
            Err(e) => tracing::warn!(namespace, name, error = %e, "cannot encode the {kind} status"),
        }
    }
}

/// The writer task. `latest` holds one status per resource (bounded by the resources); `pending`
/// the ones not yet written. Coalesced: only the newest status of a resource is written.
async fn write_statuses(client: Client, mut leadership: Leadership, mut rx: mpsc::UnboundedReceiver<StatusChange>) {
    let mut latest: BTreeMap<Target, Value> = BTreeMap::new();
    let mut pending: BTreeSet<Target> = BTreeSet::new();
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
                    tracing::info!(resources = latest.len(), "writing every resource's status as the new leader");
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
            if patch_status(&client, &key, status).await == Patched::Gone {
                latest.remove(&key);
            }
        }
    }
}

fn apply(change: StatusChange, latest: &mut BTreeMap<Target, Value>, pending: &mut BTreeSet<Target>) {
    match change {
        StatusChange::Write { target, status } => {
            latest.insert(target.clone(), status);
            pending.insert(target);
        }
        StatusChange::Forget { target } => {
            latest.remove(&target);
            pending.remove(&target);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Patched {
    Done,
    /// The resource is gone (deleted meanwhile).
    Gone,
}

/// Patches through an untyped object, so that a resource muster could not parse still gets its
/// status (and the answer is never parsed).
async fn patch_status(client: &Client, (kind, namespace, name): &Target, status: &Value) -> Patched {
    let resource = if *kind == KIND {
        ApiResource::erase::<McpServerResource>(&())
    } else {
        ApiResource::erase::<WorkflowResource>(&())
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
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
                    tracing::warn!(namespace, name, error = %e, "cannot write {kind} status");
                    return Patched::Done;
                }
                e.to_string()
            }
            Err(_) => format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()),
        };
        if attempt == 4 {
            tracing::warn!(namespace, name, error, "cannot write {kind} status");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
    }
    Patched::Done
}

/// Kubernetes Events about MCPServers and Workflows, published by the leader only (`leader.rs`):
/// an Event tells what happened once, not once per replica. A follower's are not published.
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

    pub fn publish(&self, source: (&str, &str, &str), reason: &str, note: String, warning: bool) {
        if !self.leadership.is_leader() {
            return;
        }
        let (kind, namespace, name) = source;
        let reference = ObjectReference {
            api_version: Some(API_VERSION.to_owned()),
            kind: Some(kind.to_owned()),
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: reason.trim_start_matches(kind).to_owned(),
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
