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
use crate::crd::sink::Sink;
use crate::frontend::{self, Parts};
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
    // Workflow runs are recorded as WorkflowExecution resources in muster's own namespace (the
    // first watched one), or in DIR/workflow_executions.
    let (sink, secrets, executions) = match (&kube_client, &config.kubernetes) {
        (Some(client), Some(kubernetes)) => (
            Sink::Kubernetes {
                status: crate::crd::kubernetes::StatusWriter::start(client.clone()),
                events: crate::crd::kubernetes::EventRecorder::new(client.clone()),
            },
            SecretStore::Kubernetes { client: client.clone() },
            ExecutionStore::Kubernetes(Box::new(KubernetesStore::new(client.clone(), kubernetes.own_namespace()))),
        ),
        _ => (Sink::Files, SecretStore::new(&config.dir), ExecutionStore::Files(FileStore::new(&config.dir))),
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
    let watcher = match (&config.kubernetes, kube_client) {
        (Some(kubernetes), Some(client)) => {
            tracing::info!(namespaces = ?kubernetes.namespaces, "watching MCPServer resources");
            let namespaces = kubernetes.namespaces.clone();
            actix::spawn(async move {
                if let Err(e) = crate::crd::kubernetes::watch(client, namespaces, tx).await {
                    let _ = fatal_tx.send(anyhow::Error::new(e));
                }
            });
            None
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
            Some(
                files::watch(loader, initial, config.supervision.resync_interval, tx)
                    .context("watching the mcpservers folder")?,
            )
        }
    };
    let forward = supervisor.clone();
    actix::spawn(async move {
        while let Some(snapshot) = rx.recv().await {
            forward.do_send(DesiredState(snapshot));
        }
    });

    // 4. Agent sessions hear about catalog changes.
    let sessions = Arc::new(Sessions::shared(sessions::IDLE_TIMEOUT, config.limits.into(), keyring(&config), &store));
    actix::spawn(sessions::watch_catalog(sessions.clone(), router.snapshot.clone()));
    actix::spawn(sessions::follow_replicas(sessions.clone(), store.clone()));

    // On SIGTERM or Ctrl-C (actix-web hears them too and drains the frontend), stop following
    // the desired state at once: a script's cleanup may remove the folder while muster stops,
    // and that deletes nothing. Dropping the watcher now, while the folder is there, also spares
    // inotify's complaint about a watch on a removed folder. Agents' standalone streams end
    // too, so that an agent listening for list changes does not hold the drain up.
    let (stopping, listening) = (supervisor.clone(), sessions.clone());
    actix::spawn(async move {
        stop_signal().await;
        drop(watcher);
        stopping.do_send(Stopping);
        listening.end_standalone_streams();
    });

    // 5. Serve, until stopped or until the desired state cannot be had at all.
    let cancel = CancellationToken::new();
    let core = Arc::new(Core::new(&config, ServiceHandle::new(&supervisor), events, executions));
    let mcp = frontend::mcp_service(&config, router.clone(), sessions.clone(), cancel.clone(), core.clone());
    let served = tokio::select! {
        served = frontend::serve(&config, Parts { mcp, router, sessions, auth: inbound, metrics, core, store }) => served.context("serving HTTP"),
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

/// SIGTERM (Kubernetes, `kill`) or SIGINT (Ctrl-C), whichever comes first.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers, actix-web's own still stop the frontend.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
