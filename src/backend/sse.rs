//! The 2024-11-05 HTTP+SSE client transport, for upstreams with `type: sse`.
//!
//! rmcp 3 dropped its SSE client, so muster carries this small one: `GET url` opens the event
//! stream, whose first `endpoint` event names the URL to POST messages to; every later `message`
//! event carries one JSON-RPC message. The stream ending ends the session (and the backend
//! notices, as for any transport).

use std::time::Duration;

use futures::StreamExt as _;
use rmcp::service::{RoleClient, RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub(super) enum Error {
    #[error("opening the SSE stream failed: {0}")]
    Open(String),
    #[error("the SSE stream ended before announcing its message endpoint")]
    NoEndpoint,
    #[error("the SSE endpoint {0} is not a valid URL on the server's own origin")]
    BadEndpoint(String),
    #[error("posting a message failed: {0}")]
    Post(String),
}

pub(super) struct SseTransport {
    http: reqwest::Client,
    post_url: reqwest::Url,
    headers: reqwest::header::HeaderMap,
    incoming: mpsc::Receiver<RxJsonRpcMessage<RoleClient>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for SseTransport {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl SseTransport {
    /// Opens the stream and waits (up to `timeout`) for the `endpoint` event.
    pub(super) async fn connect(
        http: reqwest::Client,
        url: &str,
        headers: reqwest::header::HeaderMap,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let base = reqwest::Url::parse(url).map_err(|e| Error::Open(e.to_string()))?;
        let response = http
            .get(base.clone())
            .headers(headers.clone())
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| Error::Open(super::failure::describe(&e)))?;
        let mut events = sse_stream::SseStream::from_bytes_stream(response.bytes_stream());
        let endpoint = tokio::time::timeout(timeout, async {
            while let Some(Ok(event)) = events.next().await {
                if event.event.as_deref() == Some("endpoint") {
                    return event.data;
                }
            }
            None
        })
        .await
        .map_err(|_| Error::NoEndpoint)?
        .ok_or(Error::NoEndpoint)?;
        let bad_endpoint = || Error::BadEndpoint(super::failure::quote(&endpoint));
        let post_url = base.join(endpoint.trim()).map_err(|_| bad_endpoint())?;
        // Messages carry the upstream's credentials: never post them to another origin.
        if post_url.origin() != base.origin() {
            return Err(bad_endpoint());
        }
        let (tx, incoming) = mpsc::channel(64);
        let reader = tokio::spawn(async move {
            while let Some(Ok(event)) = events.next().await {
                if !matches!(event.event.as_deref(), None | Some("message")) {
                    continue;
                }
                let Some(data) = event.data else { continue };
                match serde_json::from_str::<RxJsonRpcMessage<RoleClient>>(&data) {
                    Ok(message) => {
                        if tx.send(message).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring an undecodable SSE message"),
                }
            }
        });
        Ok(Self { http, post_url, headers, incoming, reader })
    }
}

impl Transport<RoleClient> for SseTransport {
    type Error = Error;

    fn send(&mut self, item: TxJsonRpcMessage<RoleClient>) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let request = self.http.post(self.post_url.clone()).headers(self.headers.clone()).json(&item);
        async move {
            let response = request.send().await.map_err(|e| Error::Post(super::failure::describe(&e)))?;
            response.error_for_status().map(drop).map_err(|e| Error::Post(super::failure::describe(&e)))
        }
    }

    fn receive(&mut self) -> impl Future<Output = Option<RxJsonRpcMessage<RoleClient>>> + Send {
        self.incoming.recv()
    }

    async fn close(&mut self) -> Result<(), Error> {
        self.reader.abort();
        Ok(())
    }
}
