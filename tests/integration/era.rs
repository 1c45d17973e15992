//! The 2026-07-28 revision on muster's own path, as a sessionless agent speaks it (raw HTTP, so
//! every header and `_meta` field is the test's): `subscriptions/listen` hears muster's catalog,
//! and agents that are asked and never come back cannot take a server from the others.
//! Multi round-trip calls run end to end in `conformance.rs` (the fixture asks mid-call) and
//! round by round in `src/mcp/rounds/tests.rs`.

use std::time::Duration;

use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::support::mock_upstream::MockUpstream;
use crate::support::{Fleet, Muster, config, free_port, http_server};

/// Bounds each wait for the next event on the stream (the event itself ends the wait).
const NEXT_EVENT: Duration = Duration::from_secs(20);

/// The `data:` lines of an SSE stream, as JSON, in order.
struct Events {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl Events {
    async fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: String = event.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim).collect();
                if !data.is_empty() {
                    return serde_json::from_str(&data).expect("an event's data is JSON");
                }
                continue;
            }
            let chunk = tokio::time::timeout(NEXT_EVENT, self.body.next()).await.expect("the next event in time");
            let chunk = chunk.expect("the stream stays open").expect("a chunk");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
        }
    }
}

#[actix_web::test]
async fn a_listening_agent_hears_that_the_tool_list_changed_and_nothing_it_did_not_ask_for() {
    let port = free_port();
    let fleet = Fleet::new(&config(port, "  toolExposure: direct\n"));
    let one = MockUpstream::start("one", free_port()).await;
    let two = MockUpstream::start("two", free_port()).await;
    fleet.write_server("one.yaml", &http_server("one", &one.url(), ""));
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;

    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "era-test", "version": "1"},
    });
    let listen = json!({
        "jsonrpc": "2.0", "id": "listen-1", "method": "subscriptions/listen",
        "params": {"_meta": meta, "notifications": {"toolsListChanged": true, "resourceSubscriptions": ["x://y"]}},
    });
    let response = reqwest::Client::new()
        .post(muster.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "subscriptions/listen")
        .json(&listen)
        .send()
        .await
        .expect("the listen request");
    assert_eq!(response.status(), 200, "{:?}", response.headers());
    let mut events = Events { body: response.bytes_stream().boxed(), buffer: String::new() };

    let ack = events.next().await;
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged", "{ack}");
    assert_eq!(
        ack["params"]["notifications"],
        json!({"toolsListChanged": true}),
        "resource updates are not served yet: {ack}"
    );

    fleet.write_server("two.yaml", &http_server("two", &two.url(), ""));
    let changed = events.next().await;
    assert_eq!(changed["method"], "notifications/tools/list_changed", "{changed}");
    assert_eq!(changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], "listen-1", "{changed}");
}

/// A sessionless `tools/call` of `tool` on `muster`, declaring `capabilities`: the JSON answer.
async fn call_sessionless(muster: &Muster, tool: &str, capabilities: Value) -> Value {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": tool, "arguments": {"text": "hi"}, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": capabilities,
            "io.modelcontextprotocol/clientInfo": {"name": "era-test", "version": "1"},
        }},
    });
    let response = reqwest::Client::new()
        .post(muster.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .timeout(Duration::from_secs(15))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{tool} answered in time: {e}"));
    let text = response.text().await.expect("a body");
    let data: String = text.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim).collect();
    serde_json::from_str(if data.is_empty() { &text } else { &data }).expect("a JSON-RPC answer")
}

/// Agents that are asked a question and never come back hold upstream requests only up to a
/// bound: the server's other callers are served, and the oldest abandoned calls are cancelled.
#[actix_web::test]
async fn agents_that_never_answer_cannot_take_a_server_from_everyone_else() {
    let port = free_port();
    let fleet = Fleet::new(&config(port, "  toolExposure: direct\n"));
    let one = MockUpstream::start("one", free_port()).await;
    fleet.write_server("one.yaml", &http_server("one", &one.url(), ""));
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;

    // More abandoned questions than the server takes requests at once (6).
    for _ in 0..10 {
        let asked = call_sessionless(&muster, "x_one_roots", json!({"roots": {}})).await;
        assert_eq!(asked["result"]["resultType"], "input_required", "{asked}");
    }
    let answered = call_sessionless(&muster, "x_one_echo", json!({})).await;
    assert_eq!(answered["result"]["content"][0]["text"], "one:hi", "{answered}");
}
