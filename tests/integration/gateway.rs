//! muster in front of in-process rmcp upstreams: routing, families, meta-tools, concurrency,
//! notifications, recovery, the folder watcher, and bad input.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::client::{Client, text};
use crate::support::mock_upstream::MockUpstream;
use crate::support::{Fleet, Muster, config, eventually, free_port, http_server, post_rpc, stdio_server};

const WAIT: Duration = Duration::from_secs(20);

async fn family_fleet(exposure: &str) -> (Fleet, Vec<MockUpstream>, Muster) {
    // Calls that the tests hold open (`block`) outlast the servers' 5 s timeout.
    let extra = format!("  toolExposure: {exposure}\n  calls:\n    timeoutMs: 60000\n");
    crate::support::mock_family(|port| config(port, &extra), &["a", "b", "c"]).await
}

#[actix_web::test]
async fn family_tools_route_by_instance_and_errors_are_structured() {
    let (_fleet, _upstreams, muster) = family_fleet("direct").await;
    let client = Client::connect(&muster.mcp_url()).await;
    let names = client.tool_names().await;
    assert!(names.contains(&"x_kubernetes_whoami".to_owned()), "{names:?}");
    assert_eq!(names.iter().filter(|n| n.ends_with("_whoami")).count(), 1, "one tool per family: {names:?}");

    let b = client.call("x_kubernetes_whoami", json!({"management_cluster": "cluster-b-mcp-kubernetes"})).await;
    assert_eq!(text(&b), "b");
    let bare = client.call("x_kubernetes_whoami", json!({"management_cluster": "cluster-c"})).await;
    assert_eq!(text(&bare), "c");
    // The instance argument is stripped before forwarding; the rest goes through.
    let echo = client.call("x_kubernetes_echo", json!({"management_cluster": "cluster-a", "text": "hi"})).await;
    assert_eq!(text(&echo), "a:hi");

    let missing = client.call("x_kubernetes_whoami", json!({})).await;
    assert_eq!(missing.is_error, Some(true));
    let structured = missing.structured_content.clone().expect("structuredContent");
    assert_eq!(structured["code"], "instance_required");
    assert_eq!(
        structured["validValues"],
        json!([
            "cluster-a-mcp-kubernetes",
            "cluster-b-mcp-kubernetes",
            "cluster-c-mcp-kubernetes",
            "cluster-a",
            "cluster-b",
            "cluster-c"
        ])
    );
    assert!(text(&missing).contains("the \"management_cluster\" parameter is required"), "{}", text(&missing));

    // One edit from every member: no member is suggested over the others.
    let wrong = client.call("x_kubernetes_whoami", json!({"management_cluster": "cluster-d-mcp-kubernetes"})).await;
    let structured = wrong.structured_content.clone().expect("structuredContent");
    assert_eq!(structured["code"], "instance_unknown");
    assert_eq!(structured.get("closest"), None, "{structured}");
    assert!(!text(&wrong).contains("Did you mean"), "{}", text(&wrong));
    let near = client.call("x_kubernetes_whoami", json!({"management_cluster": "cluster-bb"})).await;
    let structured = near.structured_content.clone().expect("structuredContent");
    assert_eq!(structured["closest"], "cluster-b", "{structured}");

    let unknown = client.call("x_kubernetes_whoam", json!({})).await;
    assert_eq!(unknown.is_error, Some(true));
    assert_eq!(unknown.structured_content.clone().expect("structured")["code"], "tool_not_found");
    assert!(text(&unknown).contains("Did you mean: x_kubernetes_whoami"), "{}", text(&unknown));
}

#[actix_web::test]
async fn meta_exposure_lists_meta_tools_and_call_tool_returns_an_envelope() {
    let (_fleet, _upstreams, muster) = family_fleet("meta").await;
    let client = Client::connect(&muster.mcp_url()).await;
    let names = client.tool_names().await;
    assert_eq!(
        names,
        [
            "list_tools",
            "list_core_tools",
            "describe_tool",
            "filter_tools",
            "call_tool",
            "list_resources",
            "get_resource",
            "list_prompts",
            "get_prompt"
        ]
    );
    let listed = client.call("list_tools", json!({"limit": 2})).await;
    let listed: Value = serde_json::from_str(&text(&listed)).expect("json");
    assert_eq!(listed["total"], 14, "the mock family's fourteen tools");
    assert_eq!(listed["tools"].as_array().map(Vec::len), Some(2));
    assert_eq!(listed["next_offset"], 2);

    let found = client.call("filter_tools", json!({"query": "echo text"})).await;
    let found: Value = serde_json::from_str(&text(&found)).expect("json");
    assert_eq!(found["tools"][0]["name"], "x_kubernetes_echo", "{found}");

    let described = client.call("describe_tool", json!({"name": "x_kubernetes_echo"})).await;
    let described: Value = serde_json::from_str(&text(&described)).expect("json");
    assert_eq!(described["inputSchema"]["required"], json!(["management_cluster"]));

    let called = client
        .call(
            "call_tool",
            json!({"name": "x_kubernetes_echo", "arguments": {"management_cluster": "cluster-b", "text": "yo"}}),
        )
        .await;
    assert_eq!(called.is_error, Some(false));
    let envelope: Value = serde_json::from_str(&text(&called)).expect("envelope");
    assert_eq!(envelope["isError"], false);
    assert_eq!(envelope["content"][0]["text"], "b:yo");
}

#[actix_web::test]
async fn a_familys_prompt_is_listed_once_and_routes_by_instance() {
    let (_fleet, _upstreams, muster) = family_fleet("direct").await;
    let client = Client::connect(&muster.mcp_url()).await;
    let peer = client.service.peer();
    let prompts = peer.list_all_prompts().await.expect("prompts/list");
    let names: Vec<&str> = prompts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["x_kubernetes_cluster-health-check"]);
    let arguments: Vec<&str> = prompts[0].arguments.iter().flatten().map(|a| a.name.as_str()).collect();
    assert_eq!(arguments, ["namespace", "management_cluster"]);

    let mut request = rmcp::model::GetPromptRequestParams::new("x_kubernetes_cluster-health-check");
    request.arguments = json!({"management_cluster": "cluster-b", "namespace": "kube-system"}).as_object().cloned();
    let got = peer.get_prompt(request).await.expect("prompts/get");
    let message = serde_json::to_value(&got.messages[0].content).expect("json");
    // Member b answered, under its own prompt name, without the instance argument.
    assert_eq!(message["text"], r#"b checks cluster-health-check with {"namespace":"kube-system"}"#);

    let mut unknown = rmcp::model::GetPromptRequestParams::new("x_kubernetes_cluster-health-check");
    unknown.arguments = json!({"management_cluster": "cluster-z"}).as_object().cloned();
    let error = peer.get_prompt(unknown).await.expect_err("an unknown instance");
    assert!(
        error.to_string().contains("prompt x_kubernetes_cluster-health-check is not available on server \"cluster-z\""),
        "{error}"
    );

    let prompt = rmcp::model::Reference::for_prompt("x_kubernetes_cluster-health-check");
    let instance = rmcp::model::CompleteRequestParams::new(
        prompt.clone(),
        rmcp::model::ArgumentInfo::new("management_cluster", "cluster-c"),
    );
    let completed = peer.complete(instance).await.expect("completion/complete");
    assert_eq!(completed.completion.values, ["cluster-c", "cluster-c-mcp-kubernetes"]);
    let mut namespace =
        rmcp::model::CompleteRequestParams::new(prompt, rmcp::model::ArgumentInfo::new("namespace", "kube"));
    namespace.context = Some(rmcp::model::CompletionContext::with_arguments(
        [("management_cluster".to_owned(), "cluster-a".to_owned())].into(),
    ));
    let completed = peer.complete(namespace).await.expect("completion/complete");
    assert_eq!(completed.completion.values, ["a-kube"], "member a completed it");
}

#[actix_web::test]
async fn a_slow_call_never_holds_up_other_calls_to_the_same_backend() {
    let (_fleet, upstreams, muster) = family_fleet("direct").await;
    let client = std::sync::Arc::new(Client::connect(&muster.mcp_url()).await);
    let slow_client = client.clone();
    let slow = actix_web::rt::spawn(async move {
        slow_client.call("x_kubernetes_block", json!({"management_cluster": "cluster-a"})).await
    });
    let a = &upstreams[0].shared;
    eventually(WAIT, "the slow call to reach the upstream", async || {
        (a.blocked.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    // The backend is busy with the slow call; these must still complete.
    for i in 0..5 {
        let fast =
            client.call("x_kubernetes_echo", json!({"management_cluster": "cluster-a", "text": i.to_string()})).await;
        assert_eq!(text(&fast), format!("a:{i}"));
    }
    assert!(!slow.is_finished(), "the slow call is still waiting");
    a.release.notify_one();
    let slow = slow.await.expect("join");
    assert_eq!(text(&slow), "released");
}

#[actix_web::test]
async fn calls_to_one_backend_go_direct_on_at_most_six_connections() {
    let (_fleet, upstreams, muster) = family_fleet("direct").await;
    let client = std::sync::Arc::new(Client::connect(&muster.mcp_url()).await);
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            actix_web::rt::spawn(async move {
                client.call("x_kubernetes_block", json!({"management_cluster": "cluster-a"})).await
            })
        })
        .collect();
    let a = &upstreams[0].shared;
    eventually(WAIT, "six calls on the wire", async || (a.blocked.load(Ordering::SeqCst) == 6).then_some(())).await;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let waiting: Vec<_> = calls
        .into_iter()
        .map(|call| {
            let done = done.clone();
            actix_web::rt::spawn(async move {
                let result = call.await.expect("join");
                done.fetch_add(1, Ordering::SeqCst);
                result
            })
        })
        .collect();
    eventually(WAIT, "all twenty calls released", async || {
        a.release.notify_one();
        (done.load(Ordering::SeqCst) == 20).then_some(())
    })
    .await;
    for call in waiting {
        assert_eq!(text(&call.await.expect("join")), "released");
    }
    // Released one at a time, each freeing a permit for the next: never a seventh on the wire.
    let most = a.most_blocked_at_once.load(Ordering::SeqCst);
    assert_eq!(most, 6, "the other 14 waited in muster, not on the upstream");
    let ids = a.call_ids_seen.lock().expect("lock").clone();
    assert!(ids.iter().all(|id| id.starts_with("muster-")), "calls went through rmcp's client, not direct: {ids:?}");
    let ports = a.call_ports_seen.lock().expect("lock").len();
    assert!((1..=6).contains(&ports), "tools/call came over {ports} connections");
}

#[actix_web::test]
async fn an_agent_session_ends_with_delete_and_a_gone_one_gets_404() {
    let (_fleet, _upstreams, muster) = family_fleet("direct").await;
    let http = reqwest::Client::new();
    let url = muster.mcp_url();
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
    let opened = post_rpc(&http, &url, None, init).send().await.expect("initialize");
    assert_eq!(opened.status(), 200);
    let session = opened.headers()["mcp-session-id"].to_str().expect("ascii").to_owned();
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let listed = post_rpc(&http, &url, None, list).header("mcp-session-id", &session).send().await.expect("list");
    assert_eq!(listed.status(), 200);
    assert!(listed.headers()["content-type"].to_str().is_ok_and(|t| t.starts_with("application/json")));
    let body: Value = listed.json().await.expect("json");
    assert_eq!(body["id"], 2, "{body}");
    assert!(body["result"]["tools"].as_array().is_some_and(|t| !t.is_empty()), "{body}");
    let deleted = http.delete(&url).header("mcp-session-id", &session).send().await.expect("delete");
    assert_eq!(deleted.status(), 200);
    let gone = post_rpc(&http, &url, None, list).header("mcp-session-id", &session).send().await.expect("list");
    assert_eq!(gone.status(), 404);
    let body: Value = gone.json().await.expect("a JSON-RPC error body");
    assert_eq!(body["error"]["code"], -32600, "{body}");
    let unknown = post_rpc(&http, &url, None, list).header("mcp-session-id", "no-such-session").send().await;
    assert_eq!(unknown.expect("list").status(), 404);
}

#[actix_web::test]
async fn a_2025_request_needs_its_session_and_a_json_only_agent_gets_json() {
    let (_fleet, upstreams, muster) = family_fleet("direct").await;
    let http = reqwest::Client::new();
    let url = muster.mcp_url();
    // MCP-Protocol-Version 2025-06-18 without Mcp-Session-Id: 400, not a sessionless answer.
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let refused = post_rpc(&http, &url, None, list).send().await.expect("list");
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.expect("a JSON-RPC error body");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("Mcp-Session-Id")), "{body}");

    // An agent that accepts only JSON gets the answer as JSON, even when the upstream sends
    // progress first (which SSE would have carried).
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
    let opened = post_rpc(&http, &url, None, init).send().await.expect("initialize");
    let session = opened.headers()["mcp-session-id"].to_str().expect("ascii").to_owned();
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "x_kubernetes_progress", "arguments": {"management_cluster": "cluster-c"},
        "_meta": {"progressToken": "p1"}}});
    // Accept: application/json alone (post_rpc accepts both).
    let json_only = |call: Value| {
        http.post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header("mcp-protocol-version", "2025-06-18")
            .header("mcp-session-id", &session)
            .body(call.to_string())
            .send()
    };
    let answered = json_only(call).await.expect("call");
    assert_eq!(answered.status(), 200);
    let content_type = answered.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert!(content_type.starts_with("application/json"), "{content_type}");
    let body: Value = answered.json().await.expect("one JSON answer");
    assert_eq!(body["id"], 3, "{body}");
    assert_eq!(body["result"]["content"][0]["text"], "done", "{body}");

    // Also when the call outlasts the 15 s after which an SSE reply would start.
    let call = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {
        "name": "x_kubernetes_block", "arguments": {"management_cluster": "cluster-c"}}});
    let slow = json_only(call);
    let c = upstreams[2].shared.clone();
    let release = async move {
        eventually(WAIT, "the call to reach the upstream", async || {
            (c.blocked.load(Ordering::SeqCst) == 1).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(16)).await;
        c.release.notify_waiters();
    };
    let (answered, ()) = tokio::join!(slow, release);
    let answered = answered.expect("call");
    let content_type = answered.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert!(content_type.starts_with("application/json"), "{content_type}");
    let body: Value = answered.json().await.expect("one JSON answer");
    assert_eq!(body["result"]["content"][0]["text"], "released", "{body}");
}

#[actix_web::test]
async fn a_cancelled_call_is_cancelled_upstream() {
    let (_fleet, upstreams, muster) = family_fleet("direct").await;
    let client = Client::connect(&muster.mcp_url()).await;
    let handle = client.start_call("x_kubernetes_block", json!({"management_cluster": "cluster-c"})).await;
    let c = &upstreams[2].shared;
    eventually(WAIT, "the call to reach the upstream", async || (c.blocked.load(Ordering::SeqCst) == 1).then_some(()))
        .await;
    handle.cancel(Some("the user changed their mind".into())).await.expect("cancel");
    eventually(WAIT, "the upstream to see the cancellation", async || {
        (c.cancelled.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn upstream_list_changed_reaches_clients_and_progress_is_forwarded() {
    let (_fleet, _upstreams, muster) = family_fleet("direct").await;
    let client = Client::connect(&muster.mcp_url()).await;
    assert!(!client.tool_names().await.iter().any(|n| n.contains("grown")));
    let grown = client.call("x_kubernetes_grow", json!({"management_cluster": "cluster-b"})).await;
    assert_eq!(text(&grown), "grown_0");
    eventually(WAIT, "tools/list_changed at the client", async || {
        (client.seen.tools_changed.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    let names = client.tool_names().await;
    assert!(names.contains(&"x_kubernetes_grown_0".to_owned()), "{names:?}");

    let done = client.call("x_kubernetes_progress", json!({"management_cluster": "cluster-c"})).await;
    assert_eq!(text(&done), "done");
    let progress = eventually(WAIT, "three progress notifications", async || {
        let seen = client.seen.progress.lock().expect("lock").clone();
        (seen.len() == 3).then_some(seen)
    })
    .await;
    assert_eq!(progress, [1.0, 2.0, 3.0]);
}

#[actix_web::test]
async fn a_restarted_http_upstream_recovers_without_operator_action() {
    let (fleet, mut upstreams, muster) = family_fleet("direct").await;
    let client = Client::connect(&muster.mcp_url()).await;
    assert_eq!(text(&client.call("x_kubernetes_whoami", json!({"management_cluster": "cluster-b"})).await), "b");

    // Redeploy cluster-b: the old upstream sessions are gone for good.
    let b = upstreams.remove(1);
    let port = b.port;
    let shared = b.stop().await;
    let down = client.call("x_kubernetes_whoami", json!({"management_cluster": "cluster-b"})).await;
    assert_eq!(down.is_error, Some(true), "{down:?}");
    // Other members are unaffected.
    assert_eq!(text(&client.call("x_kubernetes_whoami", json!({"management_cluster": "cluster-a"})).await), "a");
    eventually(WAIT, "cluster-b marked Failed in its status", async || {
        (fleet.status("cluster-b-mcp-kubernetes.yaml")["state"] == "Failed").then_some(())
    })
    .await;

    // Fail open per member: the family tool stays listed, and a call to the dead member gets a
    // precise error with its state.
    assert!(client.tool_names().await.contains(&"x_kubernetes_whoami".to_owned()));
    let unavailable = client.call("x_kubernetes_whoami", json!({"management_cluster": "cluster-b"})).await;
    let structured = unavailable.structured_content.clone().expect("structured");
    assert_eq!(structured["code"], "server_unavailable", "{structured}");
    assert_eq!(structured["server"], "cluster-b-mcp-kubernetes", "{structured}");
    assert!(
        text(&unavailable).starts_with("cluster-b-mcp-kubernetes is unreachable: connection refused; retrying in "),
        "{}",
        text(&unavailable)
    );
    assert_eq!(structured["reason"], "connection refused", "{structured}");
    assert!(structured["retryAfterMs"].as_u64().is_some_and(|ms| ms >= 1000), "{structured}");

    let _b = MockUpstream::start_with(shared, port).await;
    let answer = eventually(WAIT, "cluster-b to answer again", async || {
        let r = client.call("x_kubernetes_whoami", json!({"management_cluster": "cluster-b"})).await;
        (r.is_error != Some(true)).then(|| text(&r))
    })
    .await;
    assert_eq!(answer, "b");
    let status = fleet.status("cluster-b-mcp-kubernetes.yaml");
    assert_eq!(status["state"], "Connected", "{status}");
    assert!(status["restartCount"].as_u64() >= Some(1), "{status}");
    assert!(status["lastConnected"].is_string(), "{status}");
}

#[actix_web::test]
async fn an_upstream_that_forgot_its_sessions_is_reinitialized_and_the_call_retried() {
    let (_fleet, upstreams, muster) = family_fleet("direct").await;
    let client = Client::connect(&muster.mcp_url()).await;
    assert_eq!(text(&client.call("x_kubernetes_whoami", json!({"management_cluster": "cluster-a"})).await), "a");
    // Muster #999: the upstream answers 404 for the old session; the very next call must work.
    upstreams[0].forget_sessions().await;
    let again =
        client.call("x_kubernetes_echo", json!({"management_cluster": "cluster-a", "text": "still here"})).await;
    assert_eq!(text(&again), "a:still here", "{again:?}\n{}", muster.log_text());
}

#[actix_web::test]
async fn check_config_reports_every_problem_and_exits_non_zero() {
    let fleet = Fleet::new("aggregator:\n  transport: sse\n");
    fleet.write_server("ok.yaml", &stdio_server("ok", "/bin/true", &[], ""));
    fleet.write_server("bad.yaml", "apiVersion: muster.giantswarm.io/v1alpha1\nkind: MCPServer\nmetadata: {name: bad}\nspec: {type: streamable-http, args: [x]}\n");
    let (code, stdout, stderr) = crate::support::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_muster")).arg("check-config").arg(fleet.dir.path()),
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("ok  ok ("), "{stdout}");
    assert!(stderr.contains("aggregator.transport: \"sse\" is not supported"), "{stderr}");
    assert!(stderr.contains("bad.yaml: spec.url: is required when type is streamable-http"), "{stderr}");
    assert!(stderr.contains("bad.yaml: spec.args: is only allowed for stdio servers"), "{stderr}");
    assert!(stderr.contains("3 problem(s) found"), "{stderr}");
}

#[actix_web::test]
async fn folder_changes_start_restart_and_stop_backends() {
    let port = free_port();
    let fleet = Fleet::new(&config(port, "  toolExposure: direct\n"));
    let one = MockUpstream::start("one", free_port()).await;
    let two = MockUpstream::start("two", free_port()).await;
    fleet.write_server("one.yaml", &http_server("one", &one.url(), ""));
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    let client = Client::connect(&muster.mcp_url()).await;
    assert!(client.tool_names().await.contains(&"x_one_whoami".to_owned()));
    eventually(WAIT, "status Connected", async || (fleet.status("one.yaml")["state"] == "Connected").then_some(()))
        .await;

    // Add.
    fleet.write_server("two.yaml", &http_server("two", &two.url(), ""));
    eventually(WAIT, "x_two_whoami to appear", async || {
        client.tool_names().await.contains(&"x_two_whoami".to_owned()).then_some(())
    })
    .await;
    assert_eq!(text(&client.call("x_two_whoami", json!({})).await), "two");

    // Change: a new toolPrefix renames the tools.
    fleet.write_server("two.yaml", &http_server("two", &two.url(), "  toolPrefix: second\n"));
    eventually(WAIT, "x_second_whoami to replace x_two_whoami", async || {
        let names = client.tool_names().await;
        (names.contains(&"x_second_whoami".to_owned()) && !names.contains(&"x_two_whoami".to_owned())).then_some(())
    })
    .await;

    // Delete.
    fleet.remove_server("two.yaml");
    eventually(WAIT, "x_second_* to disappear", async || {
        (!client.tool_names().await.iter().any(|n| n.starts_with("x_second_"))).then_some(())
    })
    .await;

    // Status writes are not spec changes: `one` was started exactly once. Its status was written
    // (Connected, above) before this new file, so once `three` serves, the folder has been read
    // with that write-back in it.
    fleet.write_server("three.yaml", &http_server("three", &two.url(), ""));
    eventually(WAIT, "x_three_whoami to appear", async || {
        client.tool_names().await.contains(&"x_three_whoami".to_owned()).then_some(())
    })
    .await;
    let starts = muster.log_text().matches("starting backend server=\"one\"").count();
    assert_eq!(starts, 1, "status write-back must not restart the backend:\n{}", muster.log_text());
}

#[actix_web::test]
async fn bad_input_gets_clear_errors_and_harms_nobody_else() {
    let port = free_port();
    let fleet = Fleet::new(&config(port, "  toolExposure: direct\n  maxBodyBytes: 65536\n"));
    let good = MockUpstream::start("good", free_port()).await;
    fleet.write_server("good.yaml", &http_server("good", &good.url(), ""));
    fleet.write_server("missing.yaml", &stdio_server("missing", "/nonexistent/mcp-server", &[], ""));
    fleet.write_server(
        "invalid.yaml",
        "apiVersion: muster.giantswarm.io/v1alpha1\nkind: MCPServer\nmetadata: {name: invalid}\nspec: {type: stdio}\n",
    );
    fleet.write_server("garbage.yaml", "this: [is not: yaml\n");
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;

    // A missing stdio binary: Failed, with the exec error.
    let status = eventually(WAIT, "missing to be Failed", async || {
        let s = fleet.status("missing.yaml");
        (s["state"] == "Failed").then_some(s)
    })
    .await;
    assert_eq!(status["lastError"], "could not start \"/nonexistent/mcp-server\": not found", "{status}");
    let invalid = fleet.status("invalid.yaml");
    assert!(
        invalid["lastError"].as_str().is_some_and(|e| e.contains("spec.command: is required when type is stdio")),
        "{invalid}"
    );

    let http = reqwest::Client::new();
    let url = muster.mcp_url();
    let post = |body: String| post_rpc(&http, &url, None, &body);
    // Oversized body: 413.
    let big = post(format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{{\"pad\":\"{}\"}}}}",
        "x".repeat(100_000)
    ));
    assert_eq!(big.send().await.expect("send").status(), 413);
    // Malformed JSON-RPC: a JSON-RPC parse error, not a crash.
    let malformed = post("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":".to_owned()).send().await.expect("send");
    let status = malformed.status();
    let body = malformed.text().await.unwrap_or_default();
    assert_eq!(status, 400, "{body}");
    let body: Value = serde_json::from_str(&body).expect("a JSON-RPC error body");
    assert_eq!(body["error"]["code"], -32700, "{body}");
    // JSON, but not JSON-RPC: Invalid Request.
    let not_rpc = post("[1, 2]".to_owned()).send().await.expect("send");
    assert_eq!(not_rpc.status(), 400);
    let body: Value = not_rpc.json().await.expect("json");
    assert_eq!(body["error"]["code"], -32600, "{body}");
    // DNS rebinding: foreign Host or Origin is refused.
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
    let evil_host = post(init.to_owned()).header("host", "evil.example.com").send().await.expect("send");
    assert_eq!(evil_host.status(), 403);
    let evil_origin = post(init.to_owned()).header("origin", "https://evil.example.com").send().await.expect("send");
    assert_eq!(evil_origin.status(), 403);

    // Everyone else is fine, and a client's Authorization header never reaches an upstream.
    let transport = rmcp::transport::StreamableHttpClientTransport::with_client(
        reqwest::Client::new(),
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(muster.mcp_url())
            .auth_header("user-secret-token"),
    );
    let client = rmcp::ServiceExt::serve((), transport).await.expect("connect");
    let mut params = rmcp::model::CallToolRequestParams::new("x_good_whoami");
    params.arguments = Some(serde_json::Map::new());
    let result = client.peer().call_tool(params).await.expect("call");
    assert_eq!(text(&result), "good");
    let seen = good.shared.headers_seen.lock().expect("lock").clone();
    assert!(seen.iter().any(|h| h == "content-type"), "the upstream recorded headers: {seen:?}");
    assert!(!seen.iter().any(|h| h == "authorization"), "forwarded headers: {seen:?}");
    assert!(!muster.log_text().contains("user-secret-token"), "token in logs");
}
