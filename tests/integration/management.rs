//! Managing muster through its `core_*` tools: an admin creates, restarts and deletes a server
//! (file written, tools appear, events recorded, file and tools gone); bad input is refused with
//! precise errors and writes nothing; a signed-in user outside `aggregator.admin.groups` is refused;
//! `core_events` with `follow` sends each new event as it happens.

use std::time::Duration;

use serde_json::{Value, json};

use crate::sso::{call, login, start_idp};
use crate::support::client::{Client, text};
use crate::support::mock_upstream::MockUpstream;
use crate::support::{Fleet, Muster, Peers, config, eventually, free_port};

const WAIT: Duration = Duration::from_secs(20);

fn body(result: &rmcp::model::CallToolResult) -> Value {
    serde_json::from_str(&text(result)).unwrap_or(Value::Null)
}

fn server_files(fleet: &Fleet) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fleet.dir.path().join("mcpservers"))
        .expect("mcpservers")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names
}

#[actix_web::test]
async fn core_events_follow_sends_each_new_event_until_cancelled_or_its_time_is_up() {
    let upstream = MockUpstream::start("alpha", free_port()).await;
    let port = free_port();
    let fleet = Fleet::new(&config(port, ""));
    fleet.write_server("alpha.yaml", &crate::support::http_server("alpha", &upstream.url(), ""));
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    let admin = Client::connect(&muster.mcp_url()).await;
    let follower = Client::connect(&muster.mcp_url()).await;
    let filter = json!({"resourceType": "MCPServer", "resourceName": "alpha", "eventType": "Normal"});
    let mut args = filter.clone();
    args["follow"] = json!(true);
    let handle = follower.start_call("core_events", args).await;
    // Each restart is new events; once the follower has heard one, it is following. Each is
    // sent once: the progress counts 1, 2, 3, ... with no gap or repeat.
    let heard = eventually(WAIT, "a followed event", async || {
        let restarted = admin.call("core_service_restart", json!({"name": "alpha"})).await;
        assert_ne!(restarted.is_error, Some(true), "{}", text(&restarted));
        // rmcp's client sends a progressToken with every request: each event is a progress message.
        let notes = follower.seen.progress_notes.lock().expect("lock").clone();
        let heard: Vec<Value> = notes.iter().filter_map(|(_, _, m)| serde_json::from_str(m.as_deref()?).ok()).collect();
        (!heard.is_empty()).then_some(heard)
    })
    .await;
    assert_eq!(heard[0]["resourceName"], "alpha", "{heard:?}");
    assert!(heard.iter().all(|e| e["type"] == "Normal" && e["resourceType"] == "MCPServer"), "{heard:?}");
    let reasons: Vec<&str> = heard.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert!(reasons.contains(&"MCPServerStopped") || reasons.contains(&"MCPServerStarting"), "{reasons:?}");
    let counts: Vec<f64> = follower.seen.progress_notes.lock().expect("lock").iter().map(|n| n.0).collect();
    assert!(counts.iter().enumerate().all(|(i, c)| (*c - (i + 1) as f64).abs() < f64::EPSILON), "{counts:?}");
    handle.cancel(Some("enough".into())).await.expect("cancel");

    // With followSeconds the call ends by itself and says how many it sent.
    let mut args = filter;
    args["follow"] = json!(true);
    args["followSeconds"] = json!(1);
    let ended = body(&admin.call("core_events", args).await);
    assert_eq!(ended["ended"], "followSeconds passed", "{ended}");
    assert!(ended["followed"].is_u64() && ended["total"].as_u64() > Some(0), "{ended}");
}

#[actix_web::test]
async fn an_admin_creates_restarts_and_deletes_a_server_through_core_tools() {
    let upstream = MockUpstream::start("alpha", free_port()).await;
    let port = free_port();
    let fleet = Fleet::new(&config(port, ""));
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    // Sign-in is off and the client is on loopback: an admin.
    let client = Client::connect(&muster.mcp_url()).await;
    assert!(client.tool_names().await.contains(&"list_core_tools".to_owned()), "meta exposure lists list_core_tools");
    let core = client.call("list_core_tools", json!({})).await;
    assert!(text(&core).contains("core_mcpserver_create"), "{}", text(&core));
    let found = client.call("filter_tools", json!({"pattern": "core_service_*", "limit": 10})).await;
    assert!(text(&found).contains("core_service_restart"), "{}", text(&found));

    let created = client
        .call(
            "core_mcpserver_create",
            json!({"name": "alpha", "type": "streamable-http", "url": upstream.url(), "autoStart": true, "timeout": 5}),
        )
        .await;
    assert_ne!(created.is_error, Some(true), "{}", text(&created));
    assert_eq!(server_files(&fleet), ["alpha.yaml"]);
    let on_disk = std::fs::read_to_string(fleet.server_path("alpha.yaml")).expect("written");
    assert!(on_disk.contains("kind: MCPServer") && on_disk.contains(&upstream.url()), "{on_disk}");
    // Its tools appear, reachable through call_tool.
    eventually(WAIT, "alpha's tools", async || {
        let listed = client.call("list_tools", json!({"limit": 500})).await;
        text(&listed).contains("x_alpha_echo").then_some(())
    })
    .await;
    let echoed = client.call("call_tool", json!({"name": "x_alpha_echo", "arguments": {"text": "hi"}})).await;
    assert_ne!(echoed.is_error, Some(true), "{}", text(&echoed));
    // A second create of the same name is refused.
    let again = client.call("core_mcpserver_create", json!({"name": "alpha", "type": "stdio", "command": "x"})).await;
    assert_eq!(again.is_error, Some(true));
    assert!(text(&again).contains("exists already"), "{}", text(&again));

    let restarted =
        client.call("call_tool", json!({"name": "core_service_restart", "arguments": {"name": "alpha"}})).await;
    assert_ne!(restarted.is_error, Some(true), "{}", text(&restarted));
    let reasons = eventually(WAIT, "the lifecycle in core_events", async || {
        let events = body(&client.call("core_events", json!({"resourceName": "alpha", "limit": 100})).await);
        let reasons: Vec<String> = events["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["reason"].as_str().map(str::to_owned))
            .collect();
        let started = reasons.iter().filter(|r| *r == "MCPServerStarted").count();
        (started >= 2).then_some(reasons)
    })
    .await;
    for wanted in ["MCPServerCreated", "MCPServerStarting", "MCPServerStarted", "MCPServerStopped"] {
        assert!(reasons.iter().any(|r| r == wanted), "{wanted} missing from {reasons:?}");
    }

    let deleted = client.call("core_mcpserver_delete", json!({"name": "alpha"})).await;
    assert_ne!(deleted.is_error, Some(true), "{}", text(&deleted));
    assert!(server_files(&fleet).is_empty(), "the file is gone");
    let listed = client.call("list_tools", json!({"limit": 500})).await;
    assert!(!text(&listed).contains("x_alpha_echo"), "tools gone: {}", text(&listed));
    let gone = client.call("core_mcpserver_get", json!({"name": "alpha"})).await;
    assert_eq!(gone.is_error, Some(true), "{}", text(&gone));
}

#[actix_web::test]
async fn bad_server_definitions_get_every_problem_and_write_nothing() {
    let port = free_port();
    let fleet = Fleet::new(&config(port, ""));
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    let client = Client::connect(&muster.mcp_url()).await;
    let refused = |args: Value, wanted: &'static [&'static str]| {
        let client = &client;
        async move {
            let result = client.call("core_mcpserver_create", args).await;
            assert_eq!(result.is_error, Some(true), "{}", text(&result));
            for want in wanted {
                assert!(text(&result).contains(want), "{want:?} not in {}", text(&result));
            }
        }
    };
    refused(json!({"type": "stdio", "command": "x"}), &["name: is required"]).await;
    refused(json!({"name": "b", "type": "carrier-pigeon"}), &["unknown variant", "carrier-pigeon"]).await;
    refused(
        json!({"name": "c", "type": "streamable-http", "url": "http://169.254.169.254/mcp", "timeout": 900}),
        &["url", "169.254.169.254", "timeout", "900"],
    )
    .await;
    refused(json!({"name": "Bad_Name", "type": "stdio"}), &["name", "Bad_Name", "command: is required"]).await;
    assert!(server_files(&fleet).is_empty(), "nothing written: {:?}", server_files(&fleet));
    let checked = body(&client.call("core_mcpserver_validate", json!({"name": "d", "type": "sse"})).await);
    assert_eq!(checked["valid"], false);
    assert!(checked["errors"].to_string().contains("url"), "{checked}");
    let unknown = client.call("core_service_stop", json!({"name": "nope"})).await;
    assert_eq!(unknown.is_error, Some(true));
    assert!(text(&unknown).contains("no MCP server named \"nope\""), "{}", text(&unknown));
}

#[actix_web::test]
async fn only_members_of_the_admin_groups_may_change_servers() {
    let peers = Peers::load();
    let groups = "bob=platform-admins,sre";
    let (_idp, central) = start_idp(&peers, &["central", &free_port().to_string(), "--user-groups", groups], &[]).await;
    let port = free_port();
    let extra = format!(
        "  toolExposure: direct\n  admin:\n    groups: [platform-admins]\n  oauth:\n    server:\n      enabled: true\n      baseUrl: http://127.0.0.1:{port}\n      dex:\n        issuerUrl: {central}\n        clientId: muster\n"
    );
    let fleet = Fleet::new(&config(port, &extra));
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    let url = muster.mcp_url();
    let spec = json!({"name": "beta", "type": "stdio", "command": "true"});

    // alice (groups sre, team-alice) is signed in but no admin: refused, nothing written.
    let alice = login(&peers, &central, "alice");
    let refused = call(&peers, &url, &alice, "core_mcpserver_create", spec.clone());
    assert!(refused["text"].as_str().is_some_and(|t| t.contains("needs an administrator")), "{refused}");
    assert!(server_files(&fleet).is_empty());
    let tools = peers.py_client(&url, &["list", "--header", &format!("Authorization: Bearer {alice}")]);
    let listed = tools.to_string();
    assert!(listed.contains("core_mcpserver_list") && !listed.contains("core_mcpserver_create"), "{listed}");
    // Reading is for everyone.
    let read = call(&peers, &url, &alice, "core_mcpserver_list", json!({}));
    assert!(read["text"].as_str().is_some_and(|t| t.contains("mcpServers")), "{read}");

    // The CLI without a stored sign-in: exit code 2.
    let home = tempfile::tempdir().expect("tempdir");
    assert_eq!(cli(&url, home.path(), &["list", "mcpservers"]).0, 2);

    // bob is in platform-admins.
    let bob = login(&peers, &central, "bob");
    let created = call(&peers, &url, &bob, "core_mcpserver_create", spec);
    assert!(created["text"].as_str().is_some_and(|t| t.contains("\"path\"")), "{created}");
    assert_eq!(server_files(&fleet), ["beta.yaml"]);
}

/// `muster <verb> … --endpoint URL`: (exit code, stdout, stderr).
fn cli(url: &str, config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_muster"));
    command.args(args).args(["--endpoint", url, "--config-path"]).arg(config);
    crate::support::run(&mut command)
}

#[actix_web::test]
async fn cli_verbs_manage_a_running_muster_with_musters_exit_codes() {
    let upstream = MockUpstream::start("gamma", free_port()).await;
    let port = free_port();
    let fleet = Fleet::new(&config(port, ""));
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    let url = muster.mcp_url();
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let server_url = upstream.url();
    let args = ["create", "mcpserver", "gamma", "--type", "streamable-http", "--url", &server_url, "--autoStart"];
    let (code, out, err) = cli(&url, home, &args);
    assert_eq!(code, 0, "{out} {err}");
    assert!(fleet.server_path("gamma.yaml").exists());
    let (code, out, err) = cli(&url, home, &["list", "mcpservers"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("NAME") && out.contains("gamma"), "{out}");
    let (code, out, _) = cli(&url, home, &["get", "mcpserver", "gamma", "-o", "json"]);
    assert_eq!(code, 0);
    let got: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(got["name"], "gamma");
    eventually(WAIT, "gamma available", async || {
        (cli(&url, home, &["check", "mcpserver", "gamma"]).0 == 0).then_some(())
    })
    .await;
    let (code, _, err) = cli(&url, home, &["stop", "service", "gamma"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(cli(&url, home, &["check", "mcpserver", "gamma"]).0, 1, "stopped: not available");
    let (code, _, err) = cli(&url, home, &["start", "service", "gamma"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = cli(&url, home, &["events", "--resource-name", "gamma", "-o", "yaml"]);
    assert_eq!(code, 0);
    assert!(out.contains("MCPServerCreated") && out.contains("MCPServerStopped"), "{out}");
    // Errors: a tool error, an unknown type, and an unreachable muster all exit 1.
    let (code, _, err) = cli(&url, home, &["get", "mcpserver", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no MCP server named"), "{err}");
    assert_eq!(cli(&url, home, &["list", "gizmos"]).0, 1);
    let closed = format!("http://127.0.0.1:{}/mcp", free_port());
    assert_eq!(cli(&closed, home, &["list", "services"]).0, 1);
}

#[actix_web::test]
async fn workflows_are_created_checked_for_availability_and_deleted() {
    let upstream = MockUpstream::start("delta", free_port()).await;
    let port = free_port();
    let fleet = Fleet::new(&config(port, ""));
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    let client = Client::connect(&muster.mcp_url()).await;
    let steps = json!([{"id": "say", "tool": "x_delta_echo", "args": {"text": "{{ .input.text }}"}}]);
    let spec =
        json!({"name": "greet", "description": "Says hello", "args": {"text": {"type": "string"}}, "steps": steps});

    // Bad input: every problem, nothing written.
    let bad = client
        .call(
            "core_workflow_create",
            json!({"name": "bad", "steps": [{"id": "a", "tool": "t", "forEach": {"items": "x", "steps": []}}]}),
        )
        .await;
    assert_eq!(bad.is_error, Some(true), "{}", text(&bad));
    assert!(text(&bad).contains("spec.steps[a]"), "{}", text(&bad));
    assert!(!fleet.dir.path().join("workflows/bad.yaml").exists());

    let created = client.call("core_workflow_create", spec).await;
    assert_ne!(created.is_error, Some(true), "{}", text(&created));
    let on_disk = std::fs::read_to_string(fleet.dir.path().join("workflows/greet.yaml")).expect("written");
    assert!(on_disk.contains("kind: Workflow") && on_disk.contains("x_delta_echo"), "{on_disk}");
    // Its tool is not served yet: listed, unavailable, with the missing tool named.
    let available = body(&client.call("core_workflow_available", json!({"name": "greet"})).await);
    assert_eq!(available["available"], false, "{available}");
    assert_eq!(available["missing_tools"], json!(["x_delta_echo"]));

    let server = json!({"name": "delta", "type": "streamable-http", "url": upstream.url(), "autoStart": true});
    let made = client.call("core_mcpserver_create", server).await;
    assert_ne!(made.is_error, Some(true), "{}", text(&made));
    eventually(WAIT, "greet available", async || {
        let listed = body(&client.call("core_workflow_list", json!({})).await);
        (listed["workflows"][0]["available"] == true).then_some(())
    })
    .await;
    let home = tempfile::tempdir().expect("tempdir");
    assert_eq!(cli(&muster.mcp_url(), home.path(), &["check", "workflow", "greet"]).0, 0);

    let deleted = client.call("core_workflow_delete", json!({"name": "greet"})).await;
    assert_ne!(deleted.is_error, Some(true), "{}", text(&deleted));
    assert!(!fleet.dir.path().join("workflows/greet.yaml").exists());
    // The refused input is recorded by the tool; the rest once the watcher delivers each change.
    let reasons = eventually(WAIT, "the workflow's lifecycle events", async || {
        let events = body(&client.call("core_events", json!({"resourceType": "Workflow"})).await);
        let reasons = events["events"].to_string();
        reasons.contains("WorkflowDeleted").then_some(reasons)
    })
    .await;
    assert!(reasons.contains("WorkflowValidationFailed") && reasons.contains("WorkflowCreated"), "{reasons}");
}
