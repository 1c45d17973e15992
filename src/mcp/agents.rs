//! The live agent sessions, so catalog changes reach them as `notifications/*/list_changed`.
//!
//! `watch_catalog` follows the router's snapshots and notifies every session whose view changed.
//! Closed sessions are pruned as they are found.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::Peer;
use rmcp::service::RoleServer;
use tokio::sync::watch;

use crate::routing::Snapshot;

#[derive(Default)]
pub struct Agents {
    peers: Mutex<HashMap<u64, Peer<RoleServer>>>,
}

impl Agents {
    pub fn register(&self, agent_id: u64, peer: Peer<RoleServer>) {
        if let Ok(mut peers) = self.peers.lock() {
            peers.retain(|_, p| !p.is_transport_closed());
            peers.insert(agent_id, peer);
        }
    }

    fn live(&self) -> Vec<Peer<RoleServer>> {
        match self.peers.lock() {
            Ok(mut peers) => {
                peers.retain(|_, p| !p.is_transport_closed());
                peers.values().cloned().collect()
            }
            Err(_) => Vec::new(),
        }
    }
}

/// What an agent can see of the catalog; a change in one part sends that part's `list_changed`.
#[derive(PartialEq, Default)]
struct Fingerprint {
    tools: String,
    resources: String,
    prompts: String,
}

fn fingerprint(snapshot: &Snapshot) -> Fingerprint {
    let catalog = &snapshot.catalog;
    Fingerprint {
        tools: serde_json::to_string(&catalog.tools).unwrap_or_default(),
        resources: serde_json::to_string(&(&catalog.resources, &catalog.resource_templates)).unwrap_or_default(),
        prompts: serde_json::to_string(&catalog.prompts).unwrap_or_default(),
    }
}

pub async fn watch_catalog(agents: Arc<Agents>, mut snapshots: watch::Receiver<Arc<Snapshot>>) {
    let mut last = fingerprint(&snapshots.borrow_and_update());
    while snapshots.changed().await.is_ok() {
        let next = fingerprint(&snapshots.borrow_and_update());
        if next == last {
            continue;
        }
        let peers = agents.live();
        for peer in peers {
            if next.tools != last.tools {
                let _ = peer.notify_tool_list_changed().await;
            }
            if next.resources != last.resources {
                let _ = peer.notify_resource_list_changed().await;
            }
            if next.prompts != last.prompts {
                let _ = peer.notify_prompt_list_changed().await;
            }
        }
        last = next;
    }
}
