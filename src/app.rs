//! `run`: wires the gateway together in startup order and serves until stopped.

use std::sync::Arc;

use actix::Actor as _;
use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::auth::InboundAuth;
use crate::auth::exchange::Exchanger;
use crate::auth::secrets::SecretStore;
use crate::config::Config;
use crate::crd::files;
use crate::frontend;
use crate::mcp::agents::{self, Agents};
use crate::routing::RouterHandle;
use crate::supervisor::{DesiredState, SupervisorActor};

pub async fn run(config: Config) -> anyhow::Result<()> {
    // 1. The router owns the catalog; the supervisor owns the backends.
    let router = RouterHandle::start(config.muster_prefix.clone());
    let (inbound, exchanger) = match &config.oauth {
        Some(oauth) => {
            let http = crate::auth::idp_client().context("building the identity-provider HTTP client")?;
            let inbound = Arc::new(InboundAuth::new(oauth, http.clone()));
            if let Err(e) = inbound.validator.prefetch().await {
                // Keep serving: requests get a precise 503 until the IdP is back.
                tracing::error!(error = %e, "cannot fetch the central identity provider's keys yet");
            }
            let secrets = SecretStore::new(&config.dir);
            (Some(inbound), Some(Exchanger::new(http, secrets, config.allow_private_networks)))
        }
        None => (None, None),
    };
    let supervisor =
        SupervisorActor::new(config.supervision, router.clone(), exchanger, crate::crd::status::Sink::Files).start();

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
    let served = frontend::serve(&config, mcp, router, inbound).await.context("serving HTTP");
    cancel.cancel();
    served
}
