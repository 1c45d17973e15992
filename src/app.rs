//! `run`: wires the gateway together in startup order and serves until stopped.

use std::sync::Arc;

use actix::Actor as _;
use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::crd::files;
use crate::frontend;
use crate::mcp::agents::{self, Agents};
use crate::routing::RouterHandle;
use crate::supervisor::{DesiredState, SupervisorActor};

pub async fn run(config: Config) -> anyhow::Result<()> {
    // 1. The router owns the catalog; the supervisor owns the backends.
    let router = RouterHandle::start(config.muster_prefix.clone());
    let supervisor = SupervisorActor::new(config.supervision, router.clone()).start();

    // 2. Desired state: the folder now, then every change.
    let initial = files::load(&config.dir);
    tracing::info!(
        servers = initial.definitions.len(),
        rejected = initial.rejected.len(),
        dir = %files::servers_dir(&config.dir).display(),
        "loaded MCPServer definitions"
    );
    supervisor.do_send(DesiredState(initial));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _watcher = files::watch(config.dir.clone(), config.supervision.resync_interval, tx)
        .context("watching the mcpservers folder")?;
    let forward = supervisor.clone();
    actix::spawn(async move {
        while let Some(snapshot) = rx.recv().await {
            forward.do_send(DesiredState(snapshot));
        }
    });

    // 3. Agents hear about catalog changes.
    let agents = Arc::new(Agents::default());
    actix::spawn(agents::watch_catalog(agents.clone(), router.snapshot.clone()));

    // 4. Serve.
    let cancel = CancellationToken::new();
    let mcp = frontend::mcp_service(&config, router.clone(), agents, cancel.clone());
    let served = frontend::serve(&config, mcp, router).await.context("serving HTTP");
    cancel.cancel();
    served
}
