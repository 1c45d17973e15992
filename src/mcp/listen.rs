//! `subscriptions/listen` (MCP 2026-07-28) for agents without a session: the list changes of
//! muster's catalog as notifications on the listen request's stream, each tagged with the
//! subscription's id by rmcp's `SubscriptionSink`.
//!
//! `follow_catalog` turns the router's snapshots into `ListVersions` once, however many agents
//! listen: a part's counter moves when what agents see of it changes (`fingerprint`, which the
//! 2025 sessions' `watch_catalog` uses too). Each listener follows that `watch`.
//!
//! Resource updates (`resourceSubscriptions`) are not accepted yet: the filter muster accepts
//! leaves them out, and rmcp acknowledges only what is accepted.

use std::sync::Arc;

use rmcp::model::SubscriptionFilter;
use rmcp::service::SubscriptionContext;
use tokio::sync::watch;

use crate::routing::CatalogSnapshot;

/// How many times each list has changed since muster started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListVersions {
    pub tools: u64,
    pub resources: u64,
    pub prompts: u64,
}

/// What an agent can see of the catalog; a change in one part sends that part's `list_changed`.
#[derive(PartialEq, Default)]
pub(crate) struct Fingerprint {
    pub(crate) tools: String,
    pub(crate) resources: String,
    pub(crate) prompts: String,
}

pub(crate) fn fingerprint(snapshot: &CatalogSnapshot) -> Fingerprint {
    let catalog = &snapshot.catalog;
    Fingerprint {
        tools: serde_json::to_string(&catalog.tools).unwrap_or_default(),
        resources: serde_json::to_string(&(&catalog.resources, &catalog.resource_templates)).unwrap_or_default(),
        prompts: serde_json::to_string(&catalog.prompts).unwrap_or_default(),
    }
}

/// Follows the router's snapshots and moves a part's counter when that part changed.
pub async fn follow_catalog(
    mut snapshots: watch::Receiver<Arc<CatalogSnapshot>>,
    versions: watch::Sender<ListVersions>,
) {
    let mut last = fingerprint(&snapshots.borrow_and_update());
    while snapshots.changed().await.is_ok() {
        let next = fingerprint(&snapshots.borrow_and_update());
        versions.send_if_modified(|v| {
            let before = *v;
            v.tools += u64::from(next.tools != last.tools);
            v.resources += u64::from(next.resources != last.resources);
            v.prompts += u64::from(next.prompts != last.prompts);
            *v != before
        });
        last = next;
    }
}

/// The part of a listen request's filter muster serves: the three list changes.
pub fn accepted(requested: &SubscriptionFilter) -> SubscriptionFilter {
    let mut accepted = SubscriptionFilter::new();
    accepted.tools_list_changed = requested.tools_list_changed;
    accepted.prompts_list_changed = requested.prompts_list_changed;
    accepted.resources_list_changed = requested.resources_list_changed;
    accepted
}

/// Runs one subscription until the agent cancels it, its stream goes, or muster stops.
pub async fn listen(mut versions: watch::Receiver<ListVersions>, subscription: SubscriptionContext) {
    let sink = subscription.sink();
    let accepted = sink.accepted().clone();
    let mut last = *versions.borrow_and_update();
    loop {
        tokio::select! {
            () = subscription.cancelled() => return,
            changed = versions.changed() => if changed.is_err() { return },
        }
        let next = *versions.borrow_and_update();
        // A send fails only when the stream is gone (the agent left); the subscription ends then.
        let sent = async {
            if next.tools != last.tools && accepted.tools_list_changed == Some(true) {
                sink.notify_tool_list_changed().await?;
            }
            if next.resources != last.resources && accepted.resources_list_changed == Some(true) {
                sink.notify_resource_list_changed().await?;
            }
            if next.prompts != last.prompts && accepted.prompts_list_changed == Some(true) {
                sink.notify_prompt_list_changed().await?;
            }
            Ok::<(), rmcp::service::SubscriptionSendError>(())
        };
        if sent.await.is_err() {
            return;
        }
        last = next;
    }
}
