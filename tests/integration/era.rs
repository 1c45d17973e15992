//! The 2026-07-28 revision on muster's own path, as a sessionless agent speaks it (raw HTTP, so
//! every header and `_meta` field is the test's): `subscriptions/listen` hears muster's catalog
//! and the resources it follows, and agents that are asked and never come back cannot take a
//! server from the others.
//! Multi round-trip calls run end to end in `conformance.rs` (the fixture asks mid-call) and
//! round by round in `src/mcp/rounds/tests.rs`.
//!
//! The four pairs of agent era and upstream era, end to end through muster with rmcp's own
//! clients: a tool that elicits and one that samples, each answered by the agent (a 2025 agent
//! mid-call, a 2026 agent by retrying with `inputResponses`), and the upstream's revision in the
//! server's status. Log messages reach each kind of agent at the level it asked for.

#![allow(deprecated, reason = "sampling and logging are deprecated by SEP-2577 and still what these agents use")]

use std::time::Duration;

use futures::StreamExt as _;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, CreateMessageRequestParams, CreateMessageResult,
    ElicitRequestParams, ElicitResult, ElicitationAction, Implementation, LoggingLevel,
    LoggingMessageNotificationParam, ProtocolVersion, Role, SamplingMessage, SamplingMessageContentBlock,
    SetLevelRequestParams,
};
use rmcp::service::{
    ClientLifecycleMode, ClientServiceExt as _, NotificationContext, RequestContext, RoleClient, RunningService,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, ErrorData, ServiceExt as _};
use serde_json::{Value, json};

use crate::support::client::text;
use crate::support::mock_upstream::MockUpstream;
use crate::support::{Fleet, Muster, config, eventually, free_port, http_server};

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

/// muster (tools exposed directly) in front of one mock upstream named `label`, of `era`
/// ("2026": it answers `server/discover`), in `LABEL.yaml`: ready.
async fn behind_muster(label: &str, era: &str) -> (Fleet, MockUpstream, Muster) {
    let port = free_port();
    let fleet = Fleet::new(&config(port, "  toolExposure: direct\n"));
    let upstream = if era == "2026" {
        MockUpstream::start_modern(label, free_port()).await
    } else {
        MockUpstream::start(label, free_port()).await
    };
    fleet.write_server(&format!("{label}.yaml"), &http_server(label, &upstream.url(), ""));
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    (fleet, upstream, muster)
}

/// `behind_muster` with a 2026 upstream, once its status says muster speaks 2026-07-28 to it.
async fn spoken_to_in_2026(label: &str) -> (Fleet, MockUpstream, Muster) {
    let (fleet, upstream, muster) = behind_muster(label, "2026").await;
    let file = format!("{label}.yaml");
    eventually(Duration::from_secs(20), "the upstream spoken to in 2026-07-28", async || {
        (fleet.status(&file)["protocolVersion"] == "2026-07-28").then_some(())
    })
    .await;
    (fleet, upstream, muster)
}

#[actix_web::test]
async fn a_listening_agent_hears_list_changes_and_resource_updates_it_asked_for_and_nothing_else() {
    let (fleet, one, muster) = behind_muster("one", "2025").await;
    let two = MockUpstream::start("two", free_port()).await;

    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "era-test", "version": "1"},
    });
    let listen = json!({
        "jsonrpc": "2.0", "id": "listen-1", "method": "subscriptions/listen",
        "params": {"_meta": meta, "notifications": {
            "toolsListChanged": true, "resourceSubscriptions": ["x://y", "mock://one/status"]}},
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
        json!({"toolsListChanged": true, "resourceSubscriptions": ["mock://one/status"]}),
        "what it asked for and muster has (no resource x://y): {ack}"
    );
    let recorded = |upstream: &MockUpstream, what: &str| {
        upstream.shared.subscriptions.lock().expect("lock").iter().any(|s| s == &format!("{what} mock://one/status"))
    };
    eventually(Duration::from_secs(10), "muster subscribed upstream", async || {
        recorded(&one, "subscribe").then_some(())
    })
    .await;
    let touched = call_sessionless(&muster, "x_one_touch", json!({})).await;
    assert_eq!(touched["result"]["content"][0]["text"], "touched mock://one/status", "{touched}");
    let updated = events.next().await;
    assert_eq!(updated["method"], "notifications/resources/updated", "{updated}");
    assert_eq!(updated["params"]["uri"], "mock://one/status", "{updated}");
    assert_eq!(updated["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], "listen-1", "{updated}");

    fleet.write_server("two.yaml", &http_server("two", &two.url(), ""));
    let changed = events.next().await;
    assert_eq!(changed["method"], "notifications/tools/list_changed", "{changed}");
    assert_eq!(changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], "listen-1", "{changed}");

    // The agent goes: its subscription upstream ends with it.
    drop(events);
    eventually(Duration::from_secs(10), "muster unsubscribed upstream", async || {
        recorded(&one, "unsubscribe").then_some(())
    })
    .await;
}

/// A sessionless `tools/call` of `tool` on `muster`, declaring `capabilities`: the JSON answer.
async fn call_sessionless(muster: &Muster, tool: &str, capabilities: Value) -> Value {
    let meta = json!({"io.modelcontextprotocol/clientCapabilities": capabilities});
    let mut messages = post_sessionless(muster, tool, meta).await;
    messages.pop().expect("an answer")
}

/// A sessionless `tools/call` of `tool` with `meta` added to the 2026 `_meta`: every message of
/// the reply, the answer last.
async fn post_sessionless(muster: &Muster, tool: &str, meta: Value) -> Vec<Value> {
    let mut body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": tool, "arguments": {"text": "hi"}, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "era-test", "version": "1"},
        }},
    });
    if let (Some(all), Some(more)) = (body["params"]["_meta"].as_object_mut(), meta.as_object()) {
        all.extend(more.clone());
    }
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
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| serde_json::from_str(d).expect("an event's data is JSON"))
        .collect();
    if events.is_empty() { vec![serde_json::from_str(&text).expect("a JSON-RPC answer")] } else { events }
}

/// The data of the log messages among `messages`.
fn logged(messages: &[Value]) -> Vec<String> {
    let logs = messages.iter().filter(|m| m["method"] == "notifications/message");
    logs.map(|m| m["params"]["data"].as_str().unwrap_or("?").to_owned()).collect()
}

/// A sessionless agent's level (`io.modelcontextprotocol/logLevel`) is asked of a 2026 upstream,
/// which then logs from that level up, and not at all without one. (Muster's own filtering for
/// such an agent, of a 2025 upstream's messages, is checked by the conformance suite's
/// `server-stateless` and `tools-call-with-logging` in front of the 2025 fixture.)
#[actix_web::test]
async fn a_2026_agents_log_level_is_asked_of_a_2026_upstream() {
    let (_fleet, _new, muster) = spoken_to_in_2026("new").await;

    let messages = post_sessionless(&muster, "x_new_log", json!({})).await;
    assert_eq!(logged(&messages), Vec::<String>::new(), "without a level: {messages:?}");
    let answer = messages.last().expect("an answer");
    assert_eq!(answer["result"]["content"][0]["text"], "no level", "{answer}");

    let warning = json!({"io.modelcontextprotocol/logLevel": "warning"});
    let messages = post_sessionless(&muster, "x_new_log", warning).await;
    assert_eq!(logged(&messages), ["trouble"], "at warning: {messages:?}");
    let answer = messages.last().expect("an answer");
    assert_eq!(answer["result"]["content"][0]["text"], "warning", "the agent's level, asked upstream: {answer}");
}

/// Agents that are asked a question and never come back hold upstream requests only up to a
/// bound: the server's other callers are served, and the oldest abandoned calls are cancelled.
#[actix_web::test]
async fn agents_that_never_answer_cannot_take_a_server_from_everyone_else() {
    let (_fleet, _one, muster) = behind_muster("one", "2025").await;

    // More abandoned questions than the server takes requests at once (6).
    for _ in 0..10 {
        let asked = call_sessionless(&muster, "x_one_roots", json!({"roots": {}})).await;
        assert_eq!(asked["result"]["resultType"], "input_required", "{asked}");
    }
    let answered = call_sessionless(&muster, "x_one_echo", json!({})).await;
    assert_eq!(answered["result"]["content"][0]["text"], "one:hi", "{answered}");
}

/// An agent whose user is called Ada and whose model says "all green".
#[derive(Clone)]
struct Answering(ProtocolVersion);

impl ClientHandler for Answering {
    fn get_info(&self) -> ClientConfig {
        let capabilities: ClientCapabilities =
            serde_json::from_value(json!({"sampling": {}, "elicitation": {"form": {}}})).expect("capabilities");
        ClientConfig::new(capabilities, Implementation::new("era-agent", "1")).with_protocol_version(self.0.clone())
    }

    async fn create_message(
        &self,
        _: CreateMessageRequestParams,
        _: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let said = SamplingMessage::new(Role::Assistant, SamplingMessageContentBlock::text("all green"));
        Ok(CreateMessageResult::new(said, "test-model".to_owned()))
    }

    async fn create_elicitation(
        &self,
        _: ElicitRequestParams,
        _: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        Ok(ElicitResult::new(ElicitationAction::Accept).with_content(json!({"name": "Ada"})))
    }
}

/// An agent of `era` on muster: 2025 opens a session with `initialize`, 2026 discovers and
/// sends each request on its own, retrying `input_required` answers itself (rmcp's `call_tool`).
async fn agent(url: &str, era: &str) -> RunningService<RoleClient, Answering> {
    let transport = StreamableHttpClientTransport::from_uri(url.to_owned());
    if era == "2026" {
        let modern = ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] };
        Answering(ProtocolVersion::V_2026_07_28).serve_with_lifecycle(transport, modern).await.expect("discover muster")
    } else {
        Answering(ProtocolVersion::V_2025_11_25).serve(transport).await.expect("initialize with muster")
    }
}

/// One agent era against one upstream era: the upstream's revision shows in status, and a tool
/// that elicits, one that samples and one that asks both at once get the agent's answers.
async fn agent_and_upstream(agent_era: &str, upstream_era: &str) {
    let (fleet, upstream, muster) = behind_muster("up", upstream_era).await;
    let revision = eventually(Duration::from_secs(20), "the revision in status", async || {
        fleet.status("up.yaml")["protocolVersion"].as_str().map(str::to_owned)
    })
    .await;
    assert_eq!(revision == "2026-07-28", upstream_era == "2026", "status says {revision}");
    assert!(upstream.shared.discovers.load(std::sync::atomic::Ordering::SeqCst) >= 1, "muster asked server/discover");

    let agent = agent(&muster.mcp_url(), agent_era).await;
    let tools = agent.peer().list_all_tools().await.expect("tools/list");
    let name_of = |tool: &str| {
        tools.iter().map(|t| t.name.to_string()).find(|n| n.ends_with(tool)).unwrap_or_else(|| panic!("{tool}"))
    };
    for (tool, expected) in [
        ("ask_name", "user_name=Ada"),
        ("summarize", "summary=all green"),
        ("ask_both", "user_name=Ada summary=all green"),
    ] {
        let result = agent.call_tool(CallToolRequestParams::new(name_of(tool))).await;
        let result = result.unwrap_or_else(|e| panic!("{tool} for a {agent_era} agent: {e}\n{}", muster.log_text()));
        assert_eq!(
            text(&result),
            format!("up ({upstream_era}): {expected}"),
            "{tool}: a {agent_era} agent through muster to a {upstream_era} upstream\n{}",
            muster.log_text()
        );
    }
    // Calls take muster's direct path in both upstream eras (its own request ids), and a 2026
    // upstream hears each call's routing headers.
    let ids = upstream.shared.call_ids_seen.lock().expect("lock").clone();
    assert!(ids.iter().all(|id| id.starts_with("muster-")), "calls went through rmcp's client: {ids:?}");
    if upstream_era == "2026" {
        let headers = upstream.shared.headers_seen.lock().expect("lock").clone();
        assert!(headers.iter().any(|h| h == "mcp-name"), "{headers:?}");
    }
    let _ = agent.cancel().await;
}

#[actix_web::test]
async fn a_2025_agent_answers_a_2025_upstream() {
    agent_and_upstream("2025", "2025").await;
}

#[actix_web::test]
async fn a_2025_agent_answers_a_2026_upstream_on_its_reply_stream() {
    agent_and_upstream("2025", "2026").await;
}

#[actix_web::test]
async fn a_2026_agent_answers_a_2025_upstream_in_rounds() {
    agent_and_upstream("2026", "2025").await;
}

#[actix_web::test]
async fn a_2026_agent_answers_a_2026_upstream_under_its_own_keys() {
    agent_and_upstream("2026", "2026").await;
}

/// A 2026-07-28 upstream has no GET stream: muster follows its list changes on
/// `subscriptions/listen`, and a tool it adds reaches the catalog.
#[actix_web::test]
async fn a_2026_upstreams_new_tool_reaches_the_catalog_through_its_subscription() {
    let (_fleet, _upstream, muster) = behind_muster("up", "2026").await;
    let agent = agent(&muster.mcp_url(), "2025").await;
    let tools = agent.peer().list_all_tools().await.expect("tools/list");
    let grow = tools.iter().map(|t| t.name.to_string()).find(|n| n.ends_with("grow")).expect("grow");
    let grown = agent.call_tool(CallToolRequestParams::new(grow)).await.expect("grow");
    assert_eq!(text(&grown), "grown_0");
    eventually(Duration::from_secs(20), "the new tool in muster's catalog", async || {
        let tools = agent.peer().list_all_tools().await.ok()?;
        tools.iter().any(|t| t.name.ends_with("grown_0")).then_some(())
    })
    .await;
    let _ = agent.cancel().await;
}

/// What a 2025 agent's client hears of log messages.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl ClientHandler for Logs {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(ClientCapabilities::default(), Implementation::new("log-agent", "1"))
            .with_protocol_version(ProtocolVersion::V_2025_11_25)
    }

    async fn on_logging_message(&self, params: LoggingMessageNotificationParam, _: NotificationContext<RoleClient>) {
        self.0.lock().expect("lock").push(params.data.as_str().unwrap_or("?").to_owned());
    }
}

/// A 2026 upstream logs only at a level asked for: a 2025 agent's session asks for the level it
/// set with `logging/setLevel`. (Muster's own filtering of a 2025 upstream's messages is
/// `caller.rs`'s unit test: rmcp's stateful server sends them on its GET stream, not the call's.)
#[actix_web::test]
async fn a_2025_agents_log_level_is_asked_of_a_2026_upstream() {
    let (_fleet, _new, muster) = spoken_to_in_2026("new").await;
    let logs = Logs::default();
    let transport = StreamableHttpClientTransport::from_uri(muster.mcp_url());
    let agent = logs.clone().serve(transport).await.expect("initialize with muster");
    let call = async |tool: &str| {
        let result = agent.call_tool(CallToolRequestParams::new(tool.to_owned())).await;
        text(&result.unwrap_or_else(|e| panic!("{tool}: {e}")))
    };
    let heard = async |count: usize| {
        eventually(Duration::from_secs(10), "the log messages", async || {
            let heard = logs.0.lock().expect("lock").clone();
            (heard.len() >= count).then_some(heard)
        })
        .await
    };

    assert_eq!(call("x_new_log").await, "no level", "no level set, none asked of a 2026 upstream");
    agent.peer().set_level(SetLevelRequestParams::new(LoggingLevel::Warning)).await.expect("logging/setLevel");
    assert_eq!(call("x_new_log").await, "warning", "the session's level, asked of a 2026 upstream");
    assert_eq!(heard(1).await, ["trouble"], "the warning, on the call's reply stream");
    let _ = agent.cancel().await;
}
