//! `UpstreamClient`: reqwest for rmcp's streamable-HTTP transport, with two additions.
//!
//! - **Trace context.** Each request's HTTP `traceparent` header comes from the message's `_meta`,
//!   so upstreams that only read headers join the trace too.
//! - **Connection reuse.** An HTTP/1.1 connection goes back to the pool only once its response
//!   body has been read to the end, and rmcp stops reading a POST's SSE reply once the answer has
//!   arrived. Here such a reply is read to its end in the background (`http::drain`), so its
//!   connection is reused (the closed connections this saves: loadtests/README.md, "Design
//!   figures").

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt as _};
use http::{HeaderName, HeaderValue};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse, StreamableHttpResponseLimits,
};
use sse_stream::{Error as SseError, Sse};

/// reqwest, and the `DirectPost` of the session, which learns the session id and headers rmcp uses.
#[derive(Clone)]
pub(super) struct UpstreamClient(pub(super) reqwest::Client, pub(super) Option<Arc<super::direct_post::DirectPost>>);

impl UpstreamClient {
    /// What every POST rmcp makes goes through first: the `DirectPost` learns the session, and the
    /// headers gain the message's `traceparent`.
    fn outgoing(
        &self,
        message: &ClientJsonRpcMessage,
        session_id: Option<&Arc<str>>,
        auth: Option<&str>,
        mut headers: HashMap<HeaderName, HeaderValue>,
    ) -> HashMap<HeaderName, HeaderValue> {
        if let Some(direct) = &self.1 {
            direct.learn(session_id, &headers, auth, message);
        }
        headers.extend(super::http::traceparent_header(message));
        headers
    }
}

type SseStream = BoxStream<'static, Result<Sse, SseError>>;

/// An SSE reply that, dropped before its end, is read to its end in the background.
struct DrainOnDrop {
    inner: Option<SseStream>,
}

impl Stream for DrainOnDrop {
    type Item = Result<Sse, SseError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        let next = inner.poll_next_unpin(cx);
        if let Poll::Ready(None) = next {
            self.inner = None;
        }
        next
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        if let Some(rest) = self.inner.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(super::http::drain(rest));
        }
    }
}

fn reusable(response: StreamableHttpPostResponse) -> StreamableHttpPostResponse {
    match response {
        StreamableHttpPostResponse::Sse(stream, session) => {
            StreamableHttpPostResponse::Sse(DrainOnDrop { inner: Some(stream) }.boxed(), session)
        }
        other => other,
    }
}

impl StreamableHttpClient for UpstreamClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        let headers = self.outgoing(&message, session_id.as_ref(), auth_header.as_deref(), custom_headers);
        self.0.post_message(uri, message, session_id, auth_header, headers).await.map(reusable)
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        let headers = self.outgoing(&message, session_id.as_ref(), auth_header.as_deref(), custom_headers);
        self.0
            .post_message_with_response_limits(uri, message, session_id, auth_header, headers, limits)
            .await
            .map(reusable)
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        // Ending a session is a courtesy to the upstream. When it is already gone (it was stopped
        // together with muster), there is nothing to end; rmcp would log that as an error, so it
        // is said here at debug and rmcp hears the close went through.
        if let Err(e) = self.0.delete_session(uri.clone(), session_id, auth_header, custom_headers).await {
            tracing::debug!(%uri, error = %e, "could not end the upstream session; the upstream expires it");
        }
        Ok(())
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<SseStream, StreamableHttpError<Self::Error>> {
        self.0.get_stream(uri, session_id, last_event_id, auth_header, custom_headers).await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<SseStream, StreamableHttpError<Self::Error>> {
        self.0
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn a_reply_dropped_before_its_end_is_read_to_the_end() {
        let ended = Arc::new(AtomicBool::new(false));
        let flag = ended.clone();
        let events = futures::stream::iter([Ok(Sse::default()), Ok(Sse::default())]);
        let tail = futures::stream::once(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            flag.store(true, Ordering::SeqCst);
            Ok(Sse::default())
        });
        let mut reply = DrainOnDrop { inner: Some(events.chain(tail).boxed()) };
        assert!(reply.next().await.is_some(), "the answer is read");
        drop(reply);
        tokio::time::timeout(Duration::from_secs(5), async {
            while !ended.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the rest of the reply was read after the drop");
    }
}
