//! `run`: wires the gateway together in startup order and serves until stopped.

use std::sync::Arc;

use actix::Actor as _;
use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::auth::InboundAuth;
use crate::auth::exchange::Exchanger;
use crate::auth::secrets::SecretStore;
use crate::config::Config;
use crate::crd::execution::{ExecutionStore, FileStore, KubernetesStore};
use crate::crd::files;
use crate::crd::leader::Election;
use crate::crd::resources::Resources;
use crate::crd::sink::Sink;
use crate::frontend::{self, Parts};
use crate::mcp::GatewayServer;
use crate::mcp::core::Core;
use crate::mcp::sessions::{self, Sessions};
use crate::routing::RouterHandle;
use crate::supervisor::{CloseBackends, DesiredState, ServiceHandle, Stopping, SupervisorActor};

pub async fn run(config: Config) -> anyhow::Result<()> {
    // 0. Metrics first, so every component records from the start.
    let metrics = crate::telemetry::metrics::install();
    actix::spawn(crate::telemetry::metrics::upkeep(metrics.clone()));
    // Where MCPServer URLs may point, for every backend HTTP client from now on.
    crate::egress::set_upstream_policy(config.upstream_egress);
    // 1. Where desired state, status, events and secrets live: the folder, or the Kubernetes API.
    //    Kubernetes mode never falls back to the folder (Muster #1143).
    let kube_client = match &config.kubernetes {
        Some(_) => Some(crate::crd::kubernetes::client().await.context("Kubernetes mode")?),
        None => None,
    };
    //    Of several replicas, only the holder of the leader Lease writes status and events
    //    (ADR 0010); filesystem mode has no election: one muster writes one folder. Workflow runs
    //    are recorded as WorkflowExecution resources in muster's own namespace, or in
    //    DIR/workflow_executions.
    let (sink, secrets, election, executions) = match (&kube_client, &config.kubernetes) {
        (Some(client), Some(kubernetes)) => {
            let identity = crate::crd::leader::identity();
            let election = Election::start(client.clone(), kubernetes.home(), identity.clone()).await;
            let sink = Sink::Kubernetes {
                status: crate::crd::kubernetes::StatusWriter::start(client.clone(), election.leadership()),
                events: crate::crd::kubernetes::EventRecorder::new(client.clone(), identity, election.leadership()),
            };
            let executions =
                ExecutionStore::Kubernetes(Box::new(KubernetesStore::new(client.clone(), kubernetes.home())));
            (sink, SecretStore::Kubernetes { client: client.clone() }, Some(election), executions)
        }
        _ => (Sink::Files, SecretStore::new(&config.dir), None, ExecutionStore::Files(FileStore::new(&config.dir))),
    };

    // What the replicas share (ADR 0009). A configured Valkey that cannot be reached stops muster
    // here: never a silent fallback to memory (Muster #1229).
    let store = crate::store::Store::connect(&config.storage)
        .await
        .context("connecting to the shared store (aggregator.storage.valkey)")?;
    if store.is_shared() {
        tracing::info!("sharing sessions and exchanged tokens through the store");
    }

    // 2. The router owns the catalog; the supervisor owns the backends (and records their events).
    let events = crate::supervisor::events::EventLog::default();
    let router = RouterHandle::start(config.muster_prefix.clone());
    let (inbound, exchanger) = match &config.oauth {
        Some(oauth) => {
            let http = crate::auth::idp_client().context("building the identity-provider HTTP client")?;
            let inbound =
                Arc::new(InboundAuth::new(oauth, http.clone(), &store).context("building the authorization server")?);
            if let Err(e) = inbound.validator.prefetch().await {
                // Keep serving: requests get a precise 503 until the IdP is back.
                tracing::error!(error = %e, "cannot fetch the central identity provider's keys yet");
            }
            (
                Some(inbound),
                Some(Exchanger::new(http, secrets, config.allow_private_networks, &store, keyring(&config))),
            )
        }
        None => (None, None),
    };
    let supervisor =
        SupervisorActor::new(config.supervision, config.calls, router.clone(), exchanger, sink, events.clone()).start();

    // 3. Desired state, then every change, through one path (`DesiredState`).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (fatal_tx, fatal_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    //    The management tools read the latest set (Kubernetes mode) and write where it lives.
    let (latest_tx, latest) = tokio::sync::watch::channel(Arc::default());
    let (watcher, resources) = match (&config.kubernetes, kube_client) {
        (Some(kubernetes), Some(client)) => {
            tracing::info!(namespaces = ?kubernetes.namespaces, "watching MCPServer resources");
            let namespaces = kubernetes.namespaces.clone();
            let resources = Resources::Kubernetes {
                client: client.clone(),
                namespace: kubernetes.home().to_owned(),
                desired: latest,
            };
            actix::spawn(async move {
                if let Err(e) = crate::crd::kubernetes::watch(client, namespaces, tx).await {
                    let _ = fatal_tx.send(anyhow::Error::new(e));
                }
            });
            (None, resources)
        }
        _ => {
            let mut loader = files::Loader::new(&config.dir);
            let initial = loader.read();
            tracing::info!(
                servers = initial.definitions.len(),
                rejected = initial.rejected.len(),
                workflows = initial.workflows.len(),
                dir = %files::servers_dir(&config.dir).display(),
                "loaded MCPServer definitions"
            );
            for unreadable in &initial.unreadable {
                tracing::warn!(path = %unreadable.path.display(), "{unreadable}");
            }
            supervisor.do_send(DesiredState(initial.clone()));
            drop(fatal_tx);
            let watcher = files::watch(loader, initial, config.supervision.resync_interval, tx)
                .context("watching the mcpservers folder")?;
            (Some(watcher), Resources::Files(config.dir.clone()))
        }
    };
    let forward = supervisor.clone();
    actix::spawn(async move {
        while let Some(snapshot) = rx.recv().await {
            latest_tx.send_replace(Arc::new(snapshot.clone()));
            forward.do_send(DesiredState(snapshot));
        }
    });

    // 4. Agent sessions hear about catalog changes.
    let sessions = Arc::new(Sessions::shared(sessions::IDLE_TIMEOUT, config.limits.into(), keyring(&config), &store));
    actix::spawn(sessions::watch_catalog(sessions.clone(), router.snapshot.clone()));
    let relayed =
        GatewayServer::new(sessions.next_agent_id(), router.clone(), config.tool_exposure, config.oauth.is_some());
    actix::spawn(sessions::follow_replicas(sessions.clone(), store.clone(), relayed));

    // On SIGTERM or Ctrl-C the frontend stops (`frontend::Stop`: `/readyz` 503 at once, every
    // answer closing its connection, no new connections after the delay, then the drain), and
    // muster stops following the desired state at once: a script's cleanup may remove the folder
    // while muster stops, and that deletes nothing. Dropping the watcher now, while the folder is
    // there, also spares inotify's complaint about a watch on a removed folder. Agents' standalone
    // streams end too, so that an agent listening for list changes does not hold the drain up
    // and listens on another replica. The leader hands its Lease back, so another replica writes
    // status from now on.
    let signals = StopSignals::install().context("installing the SIGTERM and SIGINT handlers")?;
    let stop = frontend::Stop { signal: CancellationToken::new(), delay: stop_delay(&config) };
    let (stopping, listening, stop_frontend) = (supervisor.clone(), sessions.clone(), stop.signal.clone());
    actix::spawn(async move {
        signals.received().await;
        stop_frontend.cancel();
        drop(watcher);
        stopping.do_send(Stopping);
        listening.end_standalone_streams();
        if let Some(election) = election {
            election.release().await;
        }
    });

    // 5. Serve, until stopped or until the desired state cannot be had at all.
    let cancel = CancellationToken::new();
    let core = Arc::new(Core::new(&config, resources, ServiceHandle::new(&supervisor), events, executions));
    let (lists, list_changes) = tokio::sync::watch::channel(crate::mcp::listen::ListVersions::default());
    actix::spawn(crate::mcp::listen::follow_catalog(router.snapshot.clone(), lists));
    let sessionless = crate::mcp::Sessionless {
        rounds: Arc::new(crate::mcp::rounds::Rounds::new(keyring(&config), store.clone())),
        lists: list_changes,
    };
    let mcp =
        frontend::mcp_service(&config, router.clone(), sessions.clone(), cancel.clone(), core.clone(), sessionless);
    let served = tokio::select! {
        served = frontend::serve(&config, Parts { mcp, router, sessions, auth: inbound, metrics, core, store, stop }) => served.context("serving HTTP"),
        Ok(fatal) = fatal_rx => Err(fatal.context("Kubernetes mode cannot start")),
    };
    cancel.cancel();
    // 6. The frontend has drained: close the upstream sessions while the upstreams (and muster's
    //    stdio children) are still there, then exit.
    let _ = supervisor.send(CloseBackends).await;
    served
}

/// The keys the replicas share (`aggregator.sessions.keyFile`), or one of this process.
fn keyring(config: &Config) -> crate::store::Keyring {
    crate::store::Keyring::new(config.session_keys.as_ref().map_or(&[][..], |keys| &keys.0))
}

/// How long muster keeps serving, with `/readyz` at 503, between SIGTERM and no longer accepting:
/// in Kubernetes mode long enough for the endpoints to drop the pod (the kubelet sends SIGTERM
/// while they are updated); elsewhere nobody routes by readiness, so none.
fn stop_delay(config: &Config) -> std::time::Duration {
    if config.kubernetes.is_some() { STOP_DELAY_KUBERNETES } else { std::time::Duration::ZERO }
}

const STOP_DELAY_KUBERNETES: std::time::Duration = std::time::Duration::from_secs(5);

/// SIGTERM (Kubernetes, `kill`) and SIGINT (Ctrl-C): the frontend leaves them to `app::run`.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// Whichever comes first.
    async fn received(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
