//! `subscriptions/listen` (MCP 2026-07-28) for agents without a session: the list changes of
//! muster's catalog as notifications on the listen request's stream, each tagged with the
//! subscription's id by rmcp's `SubscriptionSink`.
//!
//! `follow_catalog` turns the router's snapshots into `ListVersions` once, however many agents
//! listen: a part's counter moves when what agents see of it changes (`fingerprint`, which the
//! 2025 sessions' `watch_catalog` uses too). Each listener follows that `watch`.
//!
//! Resource updates (`resourceSubscriptions`): muster accepts the URIs of its catalog (at most
//! `MAX_RESOURCES` per listener; rmcp acknowledges only what is accepted), subscribes to each
//! upstream as a 2025 session's `resources/subscribe` does (one upstream subscription for all
//! agents, `backend::relay`), and unsubscribes when the listener ends. The relay hands each
//! `notifications/resources/updated` to that resource's `Updates`, which names it as the agent
//! did (two servers' resources may share an upstream URI) on the listener's bounded queue (an
//! agent that does not read its stream loses updates, not muster's memory). Resources are
//! subscribed one after another before the first notification goes out.

use std::sync::Arc;

use rmcp::model::{
    RequestId, ServerNotification, SubscribeRequestParams, SubscriptionFilter, UnsubscribeRequestParams,
};
use rmcp::service::SubscriptionContext;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::caller::{AgentChannel, AgentReply, ReplyPath};
use crate::routing::CatalogSnapshot;

/// Resources one listener may follow.
pub const MAX_RESOURCES: usize = 256;
/// Resource updates waiting for one listener's stream; past this they are dropped.
const UPDATES_QUEUE: usize = 64;

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

/// The part of a listen request's filter muster serves: the three list changes, and updates of
/// the resources of `snapshot`'s catalog (the first `MAX_RESOURCES`).
pub fn accepted(requested: &SubscriptionFilter, snapshot: &CatalogSnapshot) -> SubscriptionFilter {
    let mut accepted = SubscriptionFilter::new();
    accepted.tools_list_changed = requested.tools_list_changed;
    accepted.prompts_list_changed = requested.prompts_list_changed;
    accepted.resources_list_changed = requested.resources_list_changed;
    accepted.resource_subscriptions = requested.resource_subscriptions.as_ref().and_then(|uris| {
        let known = uris.iter().filter(|uri| super::lookup::resource_backend(snapshot, uri).is_ok());
        let known: Vec<String> = known.take(MAX_RESOURCES).cloned().collect();
        (!known.is_empty()).then_some(known)
    });
    accepted
}

/// One followed resource's updates, as its backend's relay delivers them (`AgentChannel`): the
/// relay hands over the upstream's URI; the listener's queue gets the agent's.
struct Updates {
    queue: mpsc::Sender<String>,
    uri: String,
}

impl AgentChannel for Updates {
    fn notify(&self, notification: ServerNotification) {
        if let ServerNotification::ResourceUpdatedNotification(_) = notification {
            let _ = self.queue.try_send(self.uri.clone());
        }
    }

    // A listener is never asked anything (its reply path has no reply stream).
    fn expect_reply(&self) -> (RequestId, oneshot::Receiver<AgentReply>) {
        (RequestId::Number(0), oneshot::channel().1)
    }

    fn forget_reply(&self, _: &RequestId) {}
}

impl super::GatewayServer {
    /// Runs one listener: subscribes to the resources it follows, forwards the catalog's list
    /// changes and those resources' updates until it ends, then unsubscribes.
    pub(super) async fn listen_to(&self, versions: watch::Receiver<ListVersions>, subscription: SubscriptionContext) {
        let uris = subscription.accepted().resource_subscriptions.clone().unwrap_or_default();
        let (queue, updates) = mpsc::channel(UPDATES_QUEUE);
        let mut caller = self.caller(subscription.request_context());
        // The subscriptions outlive nothing of the listen request but are ended here, after it.
        caller.ct = CancellationToken::new();
        let mut followed = Vec::new();
        for uri in uris {
            let updates = Updates { queue: queue.clone(), uri: uri.clone() };
            let mut caller = caller.clone();
            caller.reply_path = ReplyPath::Session { session: Arc::new(updates), reply: None, ct: caller.ct.clone() };
            match self.resource_subscribe(SubscribeRequestParams::new(uri.clone()), &caller).await {
                Ok(()) => followed.push((uri, caller)),
                Err(e) => {
                    tracing::warn!(uri, error = %e.message, "a listener's resource could not be followed upstream")
                }
            }
        }
        drop(queue);
        listen(versions, &subscription, updates).await;
        for (uri, caller) in followed {
            let _ = self.resource_unsubscribe(UnsubscribeRequestParams::new(uri), &caller).await;
        }
    }
}

/// Runs one subscription until the agent cancels it, its stream goes, or muster stops.
async fn listen(
    mut versions: watch::Receiver<ListVersions>,
    subscription: &SubscriptionContext,
    mut updates: mpsc::Receiver<String>,
) {
    let sink = subscription.sink();
    let accepted = sink.accepted().clone();
    let mut last = *versions.borrow_and_update();
    loop {
        tokio::select! {
            () = subscription.cancelled() => return,
            changed = versions.changed() => if changed.is_err() { return },
            Some(uri) = updates.recv() => {
                if sink.notify_resource_updated(uri).await.is_err() {
                    return;
                }
                continue;
            }
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
