//! What other replicas publish about this replica's sessions (`session_ids::ENDED` and
//! `session_ids::RELAYED`), taken here: a session ended elsewhere is forgotten; an agent's answer
//! or cancellation reaches the call it is about; a standalone stream opened elsewhere is noted, and
//! a notification for a stream held here is sent on it; an unsubscribe posted elsewhere ends the
//! subscription this replica holds for the session, upstream too, as the agent who subscribed; a
//! log level set elsewhere applies here too.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use super::super::GatewayServer;
use super::super::session_ids::{self, Relayed};
use super::{AgentSession, Sessions};
use crate::caller::{Caller, ReplyPath};
use crate::store::Store;

/// Takes the store's session messages until the store's subscription closes. `gateway` carries
/// out relayed unsubscribes.
pub async fn follow_replicas(sessions: Arc<Sessions>, store: Store, gateway: GatewayServer) {
    let gateway = Arc::new(gateway);
    let mut events = store.subscribe();
    loop {
        match events.recv().await {
            Ok(message) if message.topic == session_ids::ENDED => {
                sessions.forget(&message.payload);
            }
            Ok(message) if message.topic == session_ids::RELAYED => {
                let Ok(envelope) = serde_json::from_str::<session_ids::Envelope>(&message.payload) else { continue };
                let Some(session) = sessions.by_id.get(&envelope.session) else { continue };
                match envelope.relayed {
                    Relayed::Reply { id, reply } => {
                        let _ = session.deliver_reply(&id, reply);
                    }
                    Relayed::Cancel { id } => {
                        session.cancel(&id);
                    }
                    Relayed::Listening => {
                        if let Some(elsewhere) = &session.elsewhere {
                            elsewhere.listening.store(true, Ordering::Relaxed);
                        }
                    }
                    // Only to a stream held here: never relayed on again.
                    Relayed::Notify { notification } => {
                        let _ = session.notify_here(notification);
                    }
                    Relayed::Unsubscribe { uri } => unsubscribe(&gateway, session, uri),
                    Relayed::LogLevel { level } => session.set_log_level(level),
                }
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "missed shared-store messages; some ended sessions linger until idle");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Ends the session's subscription to `uri` if this replica holds it, in a task of its own (the
/// upstream may be slow; the store's messages are not held up).
fn unsubscribe(gateway: &Arc<GatewayServer>, session: Arc<AgentSession>, uri: String) {
    let identity = match session.subscriptions.lock().ok().and_then(|s| s.get(&uri).cloned()) {
        Some(identity) => identity,
        None => return,
    };
    let gateway = gateway.clone();
    tokio::spawn(async move {
        let ct = CancellationToken::new();
        let caller = Caller {
            agent_id: session.agent_id,
            reply_path: ReplyPath::Session { session: session.clone(), reply: None, ct: ct.clone() },
            ct,
            progress_token: None,
            identity,
            loopback: false,
        };
        let request = rmcp::model::UnsubscribeRequestParams::new(uri);
        if let Err(e) = gateway.resource_unsubscribe(request, &caller).await {
            tracing::warn!(error = %e.message, "an unsubscribe relayed from another replica failed");
        }
    });
}
