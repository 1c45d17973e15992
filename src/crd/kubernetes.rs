//! Kubernetes mode: MCPServer resources from the API server are the desired state.
//!
//! - `watch` runs a kube-rs watcher + reflector per namespace and, once every namespace has
//!   finished its initial list (`InitDone`), publishes the whole desired set, exactly as the folder
//!   watcher does, so the supervisor has one code path. Errors before the first sync are retried a
//!   few times, then reported as fatal: muster never falls back to files (Muster #1143), and it is
//!   not ready until synced (#1147). After that, an unreachable API server leaves the last known
//!   state in place; the watcher relists when it returns (a `410 Gone` too).
//! - `StatusWriter` patches the status subresource (merge patch, retried on conflict and server
//!   errors), one writer task so a server's statuses land in order.
//! - `EventRecorder` publishes Kubernetes Events with the reasons of reference §7.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;

use super::files::{DesiredSet, Source, desired_set_of};
use super::status::{Condition, State, Status};
use super::{API_VERSION, KIND, McpServerResource};

/// Failures before the first sync that make muster give up (and exit) rather than serve nothing.
const MAX_INITIAL_FAILURES: u32 = 5;

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

/// Writes status to the status subresource, in order, from one task.
#[derive(Clone)]
pub struct StatusWriter {
    tx: mpsc::UnboundedSender<(String, String, Status)>,
}

impl StatusWriter {
    pub fn start(client: Client) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, String, Status)>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Coalesce: only the newest status per server matters.
                let mut latest: BTreeMap<(String, String), Status> = BTreeMap::new();
                latest.insert((first.0, first.1), first.2);
                while let Ok((namespace, name, status)) = rx.try_recv() {
                    latest.insert((namespace, name), status);
                }
                for ((namespace, name), status) in latest {
                    patch_status(&client, &namespace, &name, &status).await;
                }
            }
        });
        Self { tx }
    }

    pub fn write(&self, namespace: &str, name: &str, status: &Status) {
        let mut status = status.clone();
        status.conditions.insert(0, ready_condition(&status));
        let _ = self.tx.send((namespace.to_owned(), name.to_owned(), status));
    }
}

async fn patch_status(client: &Client, namespace: &str, name: &str, status: &Status) {
    let api: Api<McpServerResource> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({ "status": status });
    let params = PatchParams::default();
    for attempt in 1..=4u32 {
        match api.patch_status(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => return,
            // Deleted meanwhile: nothing to write.
            Err(kube::Error::Api(e)) if e.code == 404 => return,
            Err(e) => {
                let retry = matches!(&e, kube::Error::Api(s) if s.code == 409 || s.code >= 500)
                    || !matches!(&e, kube::Error::Api(_));
                if !retry || attempt == 4 {
                    tracing::warn!(namespace, name, error = %e, "cannot write MCPServer status");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
        }
    }
}

/// Kubernetes Events about MCPServers.
#[derive(Clone)]
pub struct EventRecorder {
    recorder: Recorder,
}

impl EventRecorder {
    pub fn new(client: Client) -> Self {
        let reporter = Reporter { controller: "muster".to_owned(), instance: std::env::var("HOSTNAME").ok() };
        Self { recorder: Recorder::new(client, reporter) }
    }

    pub fn publish(&self, namespace: &str, name: &str, reason: &str, note: String, warning: bool) {
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
