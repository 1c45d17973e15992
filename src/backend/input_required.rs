//! An upstream's `InputRequiredResult` (MCP 2026-07-28, SEP-2322) for a caller that cannot take
//! one: an agent on a 2025 revision. Each input request becomes a `sampling/createMessage`,
//! `elicitation/create` or `roots/list` request on the agent's reply stream (`ReplyPath::request`),
//! all at once; the answers go back upstream as `inputResponses` under the upstream's own keys,
//! with its `requestState` unchanged, and the call is sent again
//! ([ADR 0012](../../docs/adr/0012-upstreams-in-their-newest-revision.md)).
//!
//! A sessionless agent's caller carries input requests itself (`mcp/rounds.rs` relays them), so
//! the result goes up to it as it came.

#![allow(deprecated, reason = "sampling and roots are deprecated by SEP-2577 but still in use")]

use rmcp::model::{InputRequest, InputRequiredResult, InputResponses, ServerRequest};

use super::Error;
use crate::caller::Caller;

/// Rounds one call may take before muster gives up on an upstream that keeps asking.
pub(super) const MAX_ROUNDS: usize = 8;

/// Asks the agent every input request of `asked` and gives what the retry carries: the answers by
/// the upstream's keys and its `requestState`.
pub(super) async fn answer(
    server: &str,
    asked: InputRequiredResult,
    caller: &Caller,
) -> Result<(Option<InputResponses>, Option<String>), Error> {
    let requests = asked.input_requests.unwrap_or_default();
    let asking = requests.into_iter().map(|(key, request)| async move {
        let answer = match server_request(request) {
            Some(request) => caller.reply_path.request(request).await,
            None => Err(rmcp::ErrorData::invalid_request("muster does not know this kind of input request", None)),
        };
        (key, answer)
    });
    let mut responses = InputResponses::new();
    for (key, answer) in futures::future::join_all(asking).await {
        let answer = answer.map_err(|e| unanswered(server, &e.message))?;
        let value = serde_json::to_value(answer).map_err(|_| unanswered(server, "its answer could not be encoded"))?;
        responses.insert(key, value);
    }
    Ok(((!responses.is_empty()).then_some(responses), asked.request_state))
}

pub(super) fn unanswered(server: &str, reason: &str) -> Error {
    Error::Unanswered { server: server.to_owned(), reason: reason.to_owned() }
}

fn server_request(request: InputRequest) -> Option<ServerRequest> {
    match request {
        InputRequest::CreateMessage(r) => Some(ServerRequest::CreateMessageRequest(r)),
        InputRequest::Elicitation(r) => Some(ServerRequest::ElicitRequest(r)),
        InputRequest::ListRoots(r) => Some(ServerRequest::ListRootsRequest(r)),
        _ => None,
    }
}
