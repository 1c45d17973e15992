//! The HTTP parts every upstream path shares (`connect.rs`, `direct_post.rs`, `upstream_client.rs`):
//! the reqwest client muster builds for an upstream, with its connection caps and egress rules;
//! the `traceparent` header of a message, and the routing headers of a 2026-07-28 request; and
//! draining a reply so its connection is reused.

use std::time::Duration;

use futures::{Stream, StreamExt as _};
use http::{HeaderName, HeaderValue};
use rmcp::model::{ClientJsonRpcMessage, GetMeta as _};

/// TCP connections per upstream session, at most (in steady state): its standalone GET stream,
/// one for the session's own traffic (handshake, pings, re-lists), and one per call on the wire.
pub(super) const MAX_CONNECTIONS: usize = 8;
/// Calls an upstream session has on the wire at most (`direct_post::DirectPost`'s permits; rmcp's own
/// limit for what it sends), and so the idle connections each HTTP client keeps.
pub(super) const MAX_CONCURRENT_REQUESTS: usize = MAX_CONNECTIONS - 2;

/// The longest a TCP (and TLS) connect may take, whatever `spec.timeout` says: a black-holed
/// address fails an attempt within seconds, and a call waiting for that attempt with it.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP client of a backend: connect timeout (at most `CONNECT_TIMEOUT`), at most `max_idle`
/// idle connections kept per host, and only addresses `egress` allows (host names as resolved,
/// redirect targets).
pub(super) fn http_client(connect_timeout: Duration, max_idle: usize) -> Result<reqwest::Client, reqwest::Error> {
    let policy = crate::egress::upstream_policy();
    reqwest::Client::builder()
        .dns_resolver(crate::egress::Resolver { policy })
        .redirect(crate::egress::redirect_policy(policy))
        .connect_timeout(connect_timeout.min(CONNECT_TIMEOUT))
        .pool_max_idle_per_host(max_idle)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()
}

/// How long a reply may go on after it was dropped (or answered) before its connection is given up.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// Reads what is left of a reply to its end (at most `DRAIN_LIMIT`), so its HTTP/1.1 connection
/// goes back to the pool instead of being closed.
pub(super) async fn drain<S: Stream + Unpin>(mut rest: S) {
    let _ = tokio::time::timeout(DRAIN_LIMIT, async { while rest.next().await.is_some() {} }).await;
}

/// The HTTP `traceparent` header for a request whose `_meta` carries one.
pub(super) fn traceparent_header(message: &ClientJsonRpcMessage) -> Option<(HeaderName, HeaderValue)> {
    let ClientJsonRpcMessage::Request(request) = message else { return None };
    let value = HeaderValue::from_str(request.request.get_meta().get_traceparent()?).ok()?;
    Some((HeaderName::from_static("traceparent"), value))
}

/// The SEP-2243 headers of a 2026-07-28 request: `Mcp-Method`, and `Mcp-Name` (the tool's or
/// prompt's name, the resource's URI), Base64-wrapped as rmcp does when it is not plain ASCII.
/// Tools whose arguments are annotated `x-mcp-header` are called through rmcp, which writes
/// `Mcp-Param-*` (`connect.rs`).
pub(super) fn standard_headers(
    request: &rmcp::model::ClientRequest,
) -> impl Iterator<Item = (HeaderName, HeaderValue)> {
    let name = match request {
        rmcp::model::ClientRequest::CallToolRequest(r) => Some(r.params.name.as_ref()),
        rmcp::model::ClientRequest::GetPromptRequest(r) => Some(r.params.name.as_str()),
        rmcp::model::ClientRequest::ReadResourceRequest(r) => Some(r.params.uri.as_str()),
        _ => None,
    };
    let plain = |v: &str| {
        v.bytes().all(|b| (0x20..=0x7e).contains(&b)) && !v.starts_with([' ', '\t']) && !v.ends_with([' ', '\t'])
    };
    let encoded = name.map(|name| {
        if plain(name) {
            name.to_owned()
        } else {
            use base64::Engine as _;
            format!("=?base64?{}?=", base64::engine::general_purpose::STANDARD.encode(name))
        }
    });
    let method = HeaderValue::from_str(request.method()).ok().map(|v| (HeaderName::from_static("mcp-method"), v));
    let name = encoded.and_then(|n| HeaderValue::from_str(&n).ok()).map(|v| (HeaderName::from_static("mcp-name"), v));
    method.into_iter().chain(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_of(request: serde_json::Value) -> Vec<(String, String)> {
        let request: rmcp::model::ClientRequest = serde_json::from_value(request).expect("a request");
        standard_headers(&request).map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned())).collect()
    }

    #[test]
    fn a_2026_request_names_its_method_and_target_and_wraps_what_is_not_plain_ascii() {
        let call = serde_json::json!({"method": "tools/call", "params": {"name": "x_kubernetes_pods_list"}});
        assert_eq!(
            headers_of(call),
            [("mcp-method".into(), "tools/call".into()), ("mcp-name".into(), "x_kubernetes_pods_list".into())]
        );
        let read = serde_json::json!({"method": "resources/read", "params": {"uri": "mock://a/status"}});
        assert_eq!(headers_of(read)[1], ("mcp-name".into(), "mock://a/status".into()));
        let prompt = serde_json::json!({"method": "prompts/get", "params": {"name": "grüße"}});
        assert_eq!(headers_of(prompt)[1], ("mcp-name".into(), "=?base64?Z3LDvMOfZQ==?=".into()));
        let list = serde_json::json!({"method": "tools/list"});
        assert_eq!(headers_of(list), [("mcp-method".into(), "tools/list".into())]);
    }
}
