//! The HTTP parts every upstream path shares (`connect.rs`, `direct_post.rs`, `upstream_client.rs`):
//! the reqwest client muster builds for an upstream, with its connection caps and egress rules;
//! the `traceparent` header of a message; and draining a reply so its connection is reused.

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
