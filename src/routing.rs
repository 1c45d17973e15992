//! RouterActor: owns the catalog. It rebuilds it eagerly whenever a server's membership, state or
//! capabilities change (never lazily on a list, Muster #1204) and publishes an immutable
//! `Arc<CatalogSnapshot>` that request tasks read without touching the mailbox.
//!
//! Accepts `ServerUpdated` (from backends), `ServerRemoved` and `InitialSetKnown` (from the
//! supervisor).

pub mod catalog;
pub mod resolve;
pub mod workflows;

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::watch;

use crate::backend::ServerCapabilities;
use crate::backend::{BackendHandle, ServerUpdated};
use crate::crd::status::State;
use catalog::Catalog;

/// Why a request could not be routed. The wire mapping lives in `mcp/error.rs`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("tool not found: {name}{}", did_you_mean(suggestions))]
    ToolNotFound { name: String, suggestions: Vec<String> },
    /// `kind` is "tool" or "prompt".
    #[error("{kind} {tool} is provided by a family on servers {}; the \"{instance_arg}\" parameter is required", valid.servers.join(", "))]
    InstanceMissing {
        kind: &'static str,
        tool: String,
        family: String,
        instance_arg: String,
        valid: Box<InstanceValues>,
    },
    /// `closest` is set only when one member is clearly meant (routing/resolve.rs).
    #[error("{kind} {tool} is not available on server \"{value}\" (available: {}){}", valid.servers.join(", "), closest.as_ref().map(|c| format!(". Did you mean \"{c}\"?")).unwrap_or_default())]
    InstanceUnknown {
        kind: &'static str,
        tool: String,
        value: String,
        valid: Box<InstanceValues>,
        closest: Option<String>,
    },
    #[error("resource not found: {uri}")]
    ResourceNotFound { uri: String },
    #[error("prompt not found: {name}{}", did_you_mean(suggestions))]
    PromptNotFound { name: String, suggestions: Vec<String> },
    #[error(transparent)]
    Backend(#[from] crate::backend::Error),
    /// A family member's failure, with the cluster the member serves.
    #[error("{error}")]
    OnCluster { cluster: String, error: Box<crate::backend::Error> },
}

impl Error {
    /// The backend's failure and the cluster it serves (for family members), if this is one.
    pub fn backend(&self) -> Option<(&crate::backend::Error, Option<&str>)> {
        match self {
            Self::Backend(error) => Some((error, None)),
            Self::OnCluster { cluster, error } => Some((error, Some(cluster))),
            _ => None,
        }
    }
}

/// What a family's instance argument accepts: the member servers' names, and the bare cluster
/// names that each map to exactly one of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceValues {
    pub servers: Vec<String>,
    pub clusters: Vec<String>,
}

fn did_you_mean(suggestions: &[String]) -> String {
    if suggestions.is_empty() { String::new() } else { format!(". Did you mean: {}?", suggestions.join(", ")) }
}

/// One server as the request path sees it.
#[derive(Clone)]
pub struct Server {
    pub handle: BackendHandle,
    pub capabilities: Option<ServerCapabilities>,
    /// Has finished its first connection attempt (either way).
    pub settled: bool,
}

/// What request tasks read: the catalog plus the backends it routes to.
#[derive(Clone, Default)]
pub struct CatalogSnapshot {
    pub catalog: Catalog,
    pub servers: BTreeMap<String, Server>,
    /// Every server of the initial desired state has settled once: `/readyz` answers 200.
    pub ready: bool,
    pub version: u64,
}

impl CatalogSnapshot {
    pub fn backend(&self, server: &str) -> Option<&BackendHandle> {
        self.servers.get(server).map(|s| &s.handle)
    }
}

/// Supervisor -> router: a backend was started (before it connects).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ServerAdded {
    pub handle: BackendHandle,
}

/// Supervisor -> router: a backend was stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ServerRemoved {
    pub name: String,
    pub instance: u64,
}

/// Supervisor -> router: the initial desired state is loaded and holds these auto-started servers.
#[derive(Message)]
#[rtype(result = "()")]
pub struct InitialSetKnown {
    pub auto_started: Vec<String>,
}

/// Supervisor -> router: the valid workflows of the desired state, each a tool.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkflowsChanged(pub Vec<crate::crd::workflow::Workflow>);

pub struct RouterActor {
    muster_prefix: String,
    workflows: Vec<Arc<crate::crd::workflow::Workflow>>,
    servers: BTreeMap<String, Server>,
    initial: Option<Vec<String>>,
    tx: watch::Sender<Arc<CatalogSnapshot>>,
}

/// How other modules read the catalog.
#[derive(Clone)]
pub struct RouterHandle {
    pub addr: Addr<RouterActor>,
    pub snapshot: watch::Receiver<Arc<CatalogSnapshot>>,
}

impl RouterHandle {
    pub fn start(muster_prefix: String) -> Self {
        let (tx, rx) = watch::channel(Arc::new(CatalogSnapshot::default()));
        let addr =
            RouterActor { muster_prefix, workflows: Vec::new(), servers: BTreeMap::new(), initial: None, tx }.start();
        Self { addr, snapshot: rx }
    }

    pub fn current(&self) -> Arc<CatalogSnapshot> {
        self.snapshot.borrow().clone()
    }
}

impl RouterActor {
    fn publish(&mut self) {
        // Servers that have not listed yet still count as family members (with no tools).
        let inputs: Vec<ServerCapabilities> = self
            .servers
            .values()
            .map(|s| s.capabilities.clone().unwrap_or_else(|| s.handle.placeholder_capabilities()))
            .collect();
        let mut catalog = catalog::build(&self.muster_prefix, &inputs);
        workflows::add(&mut catalog, &self.workflows);
        for conflict in &catalog.conflicts {
            tracing::warn!(conflict, "duplicate exposed name");
        }
        let ready = self
            .initial
            .as_ref()
            .is_some_and(|names| names.iter().all(|n| self.servers.get(n).is_none_or(|s| s.settled)));
        let version = self.tx.borrow().version + 1;
        self.tx.send_replace(Arc::new(CatalogSnapshot { catalog, servers: self.servers.clone(), ready, version }));
    }
}

impl Actor for RouterActor {
    type Context = Context<Self>;
}

impl Handler<ServerUpdated> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: ServerUpdated, _: &mut Self::Context) {
        let name = msg.handle.name.to_string();
        let connection = msg.handle.status();
        let settled = !matches!(connection.state, State::Starting | State::Connecting | State::Stopped);
        // Only the current backend of a server may update it (a replaced one's late messages and
        // a removed one's never re-create it).
        let Some(entry) = self.servers.get_mut(&name).filter(|e| e.handle.instance == msg.handle.instance) else {
            return;
        };
        entry.handle = msg.handle;
        entry.settled |= settled;
        // Fail open per member: a failed server keeps its last-known capabilities, so its
        // family siblings are unaffected and calls to it get a precise "not connected" error.
        if let Some(capabilities) = msg.capabilities {
            entry.capabilities = Some(capabilities);
        }
        self.publish();
    }
}

impl Handler<WorkflowsChanged> for RouterActor {
    type Result = ();

    fn handle(&mut self, WorkflowsChanged(workflows): WorkflowsChanged, _: &mut Self::Context) {
        let workflows: Vec<_> = workflows.into_iter().map(Arc::new).collect();
        if workflows != self.workflows {
            self.workflows = workflows;
            self.publish();
        }
    }
}

impl Handler<ServerAdded> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: ServerAdded, _: &mut Self::Context) {
        let name = msg.handle.name.to_string();
        self.servers.insert(name, Server { handle: msg.handle, capabilities: None, settled: false });
        self.publish();
    }
}

impl Handler<ServerRemoved> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: ServerRemoved, _: &mut Self::Context) {
        if self.servers.get(&msg.name).is_some_and(|s| s.handle.instance == msg.instance) {
            self.servers.remove(&msg.name);
            self.publish();
        }
    }
}

impl Handler<InitialSetKnown> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: InitialSetKnown, _: &mut Self::Context) {
        self.initial = Some(msg.auto_started);
        self.publish();
    }
}
