//! A real modern-era upstream: kubectl-mcp-server 2.0.0 (PyPI; FastMCP 4 on the Python SDK),
//! which serves 2026-07-28 without sessions over HTTP. In its confirm mode a destructive tool
//! answers `input_required` (an elicitation under its own key `confirm`, and its own sealed
//! `requestState`) before it runs `kubectl`; spoken to in the 2025 revisions it cannot ask and
//! refuses ("Blocked"). Two instances form a `kubernetes` family behind muster, each with a
//! kubeconfig naming a closed port of its own, so what `kubectl` says after the confirmation
//! names the member that ran it.
//!
//! A 2025 agent is asked on its reply stream (`elicitation/create`) and the call completes; a
//! 2026 agent gets the upstream's question and retries with its answer. The upstream itself runs a
//! replayed confirmation again (measured); muster refuses the replay, and a retry that names
//! another member of the family.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult, ElicitationAction,
    Implementation, ProtocolVersion,
};
use rmcp::service::RequestContext;
use rmcp::{ClientHandler, ErrorData, RoleClient, ServiceExt as _};
use serde_json::{Value, json};

use crate::support::client::text;
use crate::support::{Fleet, Muster, Peers, Process, config, eventually, family, free_port, http_server, wait_port};

/// A 2025 agent that confirms whatever it is asked to confirm, and remembers what it was asked.
#[derive(Clone, Default)]
struct Confirming(Arc<Mutex<Vec<String>>>);

impl ClientHandler for Confirming {
    fn get_info(&self) -> ClientConfig {
        let capabilities: ClientCapabilities =
            serde_json::from_value(json!({"elicitation": {"form": {}}})).expect("capabilities");
        ClientConfig::new(capabilities, Implementation::new("confirming-agent", "1"))
            .with_protocol_version(ProtocolVersion::V_2025_11_25)
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let asked = serde_json::to_value(&request).unwrap_or_default();
        self.0.lock().expect("asked").push(asked["message"].as_str().unwrap_or_default().to_owned());
        // Every boolean the form asks for, true.
        let properties = asked["requestedSchema"]["properties"].as_object().cloned().unwrap_or_default();
        let content: serde_json::Map<String, Value> = properties
            .iter()
            .filter(|(_, schema)| schema["type"] == "boolean")
            .map(|(name, _)| (name.clone(), Value::Bool(true)))
            .collect();
        Ok(ElicitResult::new(ElicitationAction::Accept).with_content(Value::Object(content)))
    }
}

/// kubectl-mcp-server in confirm mode on `port`, its kubectl aimed at `cluster_port` (closed).
fn kubectl_mcp(peers: &Peers, fleet: &Fleet, port: u16, cluster_port: u16) -> Process {
    let kubeconfig = fleet.dir.path().join(format!("kubeconfig-{port}"));
    let text = std::fs::read_to_string(Peers::repo_file("tests/peers/fake-kubeconfig.yaml")).expect("kubeconfig");
    std::fs::write(&kubeconfig, text.replace("127.0.0.1:6443", &format!("127.0.0.1:{cluster_port}"))).expect("write");
    let kubectl = std::path::Path::new(peers.get("MUSTER_KUBECTL")).parent().expect("kubectl's folder").to_owned();
    let path = std::env::join_paths(
        std::iter::once(kubectl).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .expect("PATH");
    let mut command = Command::new(peers.get("MUSTER_KUBECTL_MCP"));
    command
        .args(["--transport", "http", "--host", "127.0.0.1", "--port", &port.to_string(), "--confirm-destructive"])
        .env("KUBECONFIG", &kubeconfig)
        .env("PATH", path);
    Process::spawn(&mut command, "kubectl-mcp-server")
}

/// A sessionless (2026-07-28) `tools/call` on muster: the JSON-RPC answer.
async fn call_2026(muster: &Muster, arguments: Value, round: Option<(&str, Value)>) -> Value {
    let mut params = json!({
        "name": "x_kubernetes_delete_resource", "arguments": arguments,
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}},
            "io.modelcontextprotocol/clientInfo": {"name": "modern-agent", "version": "1"},
        },
    });
    if let Some((state, responses)) = round {
        params["requestState"] = json!(state);
        params["inputResponses"] = responses;
    }
    let response = reqwest::Client::new()
        .post(muster.mcp_url())
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "x_kubernetes_delete_resource")
        .timeout(Duration::from_secs(30))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}))
        .send()
        .await
        .expect("muster answers");
    let body = response.text().await.expect("a body");
    let data: String = body.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim).collect();
    serde_json::from_str(if data.is_empty() { &body } else { &data }).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[actix_web::test]
async fn a_family_of_kubectl_mcp_servers_confirms_a_delete_for_agents_of_both_eras() {
    let peers = Peers::load();
    let port = free_port();
    let fleet = Fleet::new(&config(port, "  toolExposure: direct\n"));
    let mut upstreams = Vec::new();
    let mut clusters = Vec::new();
    for cluster in ["a", "b"] {
        let (upstream_port, cluster_port) = (free_port(), free_port());
        upstreams.push((kubectl_mcp(&peers, &fleet, upstream_port, cluster_port), upstream_port));
        clusters.push(cluster_port);
        let name = format!("cluster-{cluster}-mcp-kubernetes");
        let url = format!("http://127.0.0.1:{upstream_port}/mcp");
        fleet.write_server(
            &format!("{name}.yaml"),
            &http_server(&name, &url, &family("kubernetes", "management_cluster")),
        );
    }
    for (_, upstream_port) in &upstreams {
        wait_port(*upstream_port).await;
    }
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    for cluster in ["a", "b"] {
        let file = format!("cluster-{cluster}-mcp-kubernetes.yaml");
        let revision = eventually(Duration::from_secs(30), "the revision in status", async || {
            fleet.status(&file)["protocolVersion"].as_str().map(str::to_owned)
        })
        .await;
        assert_eq!(revision, "2026-07-28", "{file}: spoken to in its newest revision");
    }
    let pod = |cluster: &str| json!({"management_cluster": format!("cluster-{cluster}"), "resource_type": "pod", "name": "nginx"});
    // What kubectl says once it runs: its cluster's (closed) address.
    let ran_on = |result: &str, cluster_port: u16| {
        assert!(result.contains(&format!("127.0.0.1:{cluster_port}")), "kubectl ran on its cluster: {result}");
        assert!(!result.contains("Blocked") && !result.contains("cancelled"), "confirmed: {result}");
    };

    // A 2025 agent: asked on its reply stream, mid-call.
    let confirming = Confirming::default();
    let agent = confirming
        .clone()
        .serve(rmcp::transport::StreamableHttpClientTransport::from_uri(muster.mcp_url()))
        .await
        .expect("a 2025 session");
    let arguments = pod("a").as_object().cloned();
    let result = agent
        .call_tool(CallToolRequestParams::new("x_kubernetes_delete_resource").with_arguments(arguments.expect("args")))
        .await
        .unwrap_or_else(|e| panic!("the 2025 agent's delete: {e}\n{}", muster.log_text()));
    ran_on(&text(&result), clusters[0]);
    let asked = confirming.0.lock().expect("asked").clone();
    assert!(asked.len() == 1 && asked[0].contains("pod/nginx"), "the upstream's question reached the agent: {asked:?}");
    let _ = agent.cancel().await;

    // A 2026 agent: the upstream's question under its own key, then a retry with the answer.
    let asked = call_2026(&muster, pod("b"), None).await;
    let result = &asked["result"];
    assert_eq!(result["resultType"], "input_required", "{asked}");
    assert_eq!(result["inputRequests"]["confirm"]["method"], "elicitation/create", "{asked}");
    let state = result["requestState"].as_str().expect("a state");
    let yes = json!({"confirm": {"action": "accept", "content": {"confirm": true}}});
    let done = call_2026(&muster, pod("b"), Some((state, yes.clone()))).await;
    let done_text = done["result"]["content"][0]["text"].as_str().unwrap_or_default();
    ran_on(done_text, clusters[1]);

    // The same confirmation again: the upstream would run it again; muster refuses.
    let replayed = call_2026(&muster, pod("b"), Some((state, yes.clone()))).await;
    assert_eq!(replayed["error"]["code"], -32602, "a replayed confirmation is refused: {replayed}");
    assert_eq!(replayed["error"]["data"]["code"], "request_state_refused", "{replayed}");
    // A confirmation asked by member b does not go to member a.
    let asked = call_2026(&muster, pod("b"), None).await;
    let state = asked["result"]["requestState"].as_str().expect("a state");
    let elsewhere = call_2026(&muster, pod("a"), Some((state, yes))).await;
    assert_eq!(elsewhere["error"]["data"]["code"], "request_state_refused", "{elsewhere}");
}
