//! A plain stop (SIGTERM): muster closes its upstream sessions before the children and
//! connections go, logs no errors or warnings doing so, and writes no `Deleted` event or
//! `Stopped` status, because stopping muster deletes nothing. Twice: with the upstreams staying
//! up (Kubernetes stops one pod), and with them stopping at the same moment (Ctrl-C in a terminal
//! stops the whole process group, as with scripts/run-example.sh).

use std::process::Command;
use std::time::Duration;

use crate::support::client::Client;
use crate::support::mock_upstream::MockUpstream;
use crate::support::{
    Fleet, Muster, Peers, config, eventually, family, free_port, http_server, post_rpc, stdio_server,
};

const WAIT: Duration = Duration::from_secs(30);

#[actix_web::test]
async fn sigterm_closes_upstream_sessions_quietly_and_deletes_nothing() {
    stop_muster(false).await;
}

#[actix_web::test]
async fn sigterm_with_the_upstreams_stopping_too_is_quiet_and_deletes_nothing() {
    stop_muster(true).await;
}

/// Starts muster on three HTTP members and a stdio one, with an agent connected, sends SIGTERM
/// (then stops the HTTP upstreams at once when `upstreams_stop_too`), and checks the stop.
async fn stop_muster(upstreams_stop_too: bool) {
    let port = free_port();
    let fleet = Fleet::new(&config(port, "  toolExposure: direct\n"));
    let mut upstreams = Vec::new();
    let mut files = Vec::new();
    for cluster in ["a", "b", "c"] {
        let upstream = MockUpstream::start(cluster, free_port()).await;
        let name = format!("cluster-{cluster}-mcp-kubernetes");
        fleet.write_server(
            &format!("{name}.yaml"),
            &http_server(&name, &upstream.url(), &family("kubernetes", "management_cluster")),
        );
        files.push(format!("{name}.yaml"));
        upstreams.push(upstream);
    }
    // A stdio member too: its child must be gone when muster is.
    let peers = Peers::load();
    let kubeconfig = Peers::repo_file("tests/peers/fake-kubeconfig.yaml").display().to_string();
    fleet.write_server(
        "local.yaml",
        &stdio_server("local", peers.get("MUSTER_K8S_MCP"), &["--read-only", "--kubeconfig", &kubeconfig], ""),
    );
    files.push("local.yaml".to_owned());
    let mut muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    for file in &files {
        eventually(WAIT, &format!("{file} connected"), async || {
            matches!(fleet.status(file)["state"].as_str(), Some("Connected" | "Running")).then_some(())
        })
        .await;
    }
    let before: Vec<String> =
        files.iter().map(|f| std::fs::read_to_string(fleet.server_path(f)).expect("read")).collect();
    // An agent is connected while muster stops.
    let agent = Client::connect(&muster.mcp_url()).await;
    assert!(!agent.tool_names().await.is_empty());
    let log_before = muster.log_text().len();
    let children = muster.child_pids();
    assert!(!children.is_empty(), "the stdio member runs as muster's child");

    let pid = muster.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    // A script's cleanup removes the fleet while muster stops (scripts/run-example.sh does): that
    // deletes nothing either.
    let removed = files.remove(0);
    fleet.remove_server(&removed);
    let before = &before[1..];
    let mut survivors = Vec::new();
    for upstream in upstreams {
        if upstreams_stop_too {
            upstream.stop().await;
        } else {
            survivors.push(upstream);
        }
    }
    let child = &mut muster.child;
    let exited = eventually(WAIT, "muster to exit after SIGTERM", async || child.try_wait().expect("try_wait")).await;
    assert!(exited.success(), "muster exited with {exited}:\n{}", muster.log_text());

    let log = muster.log_text();
    let shutdown_log = &log[log_before..];
    // rmcp (silent unless asked: telemetry's `rmcp=off`) warns, truly, that an upstream's event
    // stream broke when the upstream stops first; muster itself says nothing, and nobody errs.
    let noisy: Vec<&str> = shutdown_log
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .filter(|l| !(upstreams_stop_too && l.contains(" WARN rmcp::transport::common::client_side_sse:")))
        .collect();
    assert!(noisy.is_empty(), "errors or warnings at shutdown:\n{}\n\nwhole log:\n{log}", noisy.join("\n"));
    assert!(!log.contains("MCPServerDeleted"), "a stop is not a deletion:\n{log}");
    if upstreams_stop_too {
        // The DELETEs found nobody; said at debug level.
        assert!(shutdown_log.contains("could not end the upstream session"), "{shutdown_log}");
    }
    for (file, before) in files.iter().zip(before) {
        let after = std::fs::read_to_string(fleet.server_path(file)).expect("read");
        assert_eq!(&after, before, "{file}'s status was rewritten at shutdown");
    }
    for pid in children {
        let alive = Command::new("kill").args(["-0", &pid.to_string()]).status().expect("kill -0").success();
        assert!(!alive, "stdio child {pid} outlived muster");
    }
    // Muster ended its sessions (DELETE) before it exited.
    for upstream in &survivors {
        let open = upstream.sessions.sessions.read().await.len();
        assert_eq!(open, 0, "{} still holds muster's session", upstream.url());
    }
    drop(agent);
}

/// Kubernetes mode: a pod stopping (SIGTERM) publishes no Event and patches no status, since the
/// MCPServer resources are all still there.
#[actix_web::test]
async fn sigterm_in_kubernetes_mode_publishes_no_events() {
    let api = crate::support::fake_kube::FakeKube::start(free_port()).await;
    let one = MockUpstream::start("one", free_port()).await;
    api.apply("muster", &http_server("one", &one.url(), ""));
    let port = free_port();
    let fleet = Fleet::new(&format!("{}kubernetes: true\nnamespace: muster\n", config(port, "")));
    let kubeconfig = api.kubeconfig(fleet.dir.path());
    let mut muster = Muster::start_with_env(&fleet, port, &[("KUBECONFIG", kubeconfig.as_os_str())]).await;
    muster.wait_ready().await;
    eventually(WAIT, "one Connected, and its Started event", async || {
        (api.status("muster", "one")["state"] == "Connected"
            && api.event_reasons("one").contains(&"MCPServerStarted".to_owned()))
        .then_some(())
    })
    .await;
    let (events, status) = (api.event_reasons("one"), api.status("muster", "one"));

    let pid = muster.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let child = &mut muster.child;
    let exited = eventually(WAIT, "muster to exit after SIGTERM", async || child.try_wait().expect("try_wait")).await;
    assert!(exited.success(), "muster exited with {exited}:\n{}", muster.log_text());
    assert_eq!(api.event_reasons("one"), events, "Events published at shutdown:\n{}", muster.log_text());
    assert_eq!(api.status("muster", "one"), status, "status patched at shutdown");
    assert_eq!(one.sessions.sessions.read().await.len(), 0, "muster's upstream session was not ended");
}

/// Kubernetes mode with replicas (issue 16 item 6): on SIGTERM `/readyz` turns 503 at once while
/// muster still serves (the endpoints drop the pod before it stops accepting), every answer closes
/// its connection, and standalone streams end, open ones and new ones alike, so agents reconnect
/// to another replica; then muster drains and exits.
#[actix_web::test]
async fn sigterm_turns_readyz_503_first_and_sends_agents_elsewhere() {
    const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
    const CALL: &str =
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x_one_whoami","arguments":{}}}"#;
    let api = crate::support::fake_kube::FakeKube::start(free_port()).await;
    let one = MockUpstream::start("one", free_port()).await;
    api.apply("muster", &http_server("one", &one.url(), ""));
    let port = free_port();
    let fleet =
        Fleet::new(&format!("{}kubernetes: true\nnamespace: muster\n", config(port, "  toolExposure: direct\n")));
    let kubeconfig = api.kubeconfig(fleet.dir.path());
    let mut muster = Muster::start_with_env(&fleet, port, &[("KUBECONFIG", kubeconfig.as_os_str())]).await;
    muster.wait_ready().await;
    let http = reqwest::Client::new();
    let url = muster.mcp_url();
    let opened = post_rpc(&http, &url, None, INIT).send().await.expect("initialize");
    let session = opened.headers()["mcp-session-id"].to_str().expect("session id").to_owned();
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    post_rpc(&http, &url, None, initialized).header("mcp-session-id", &session).send().await.expect("initialized");
    let standalone = || {
        http.get(&url)
            .header("accept", "text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .header("mcp-session-id", &session)
            .send()
    };
    let listening = standalone().await.expect("standalone stream");
    assert_eq!(listening.status(), 200);
    let call = || post_rpc(&http, &url, None, CALL).header("mcp-session-id", &session).send();
    let answered = call().await.expect("call");
    assert!(answered.headers().get("connection").is_none_or(|c| c != "close"), "{:?}", answered.headers());

    let pid = muster.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let stopped_at = std::time::Instant::now();
    let readyz = muster.url("/readyz");
    let body: serde_json::Value = eventually(WAIT, "/readyz to turn 503", async || {
        let answer = http.get(&readyz).send().await.ok()?;
        (answer.status() == 503).then_some(())?;
        answer.json().await.ok()
    })
    .await;
    assert_eq!((body["ready"].as_bool(), body["stopping"].as_bool()), (Some(false), Some(true)), "{body}");
    // The open standalone stream ends (its body completes), and a new one ends at once.
    let ended = tokio::time::timeout(Duration::from_secs(3), listening.bytes()).await;
    assert!(ended.is_ok_and(|b| b.is_ok()), "the open standalone stream did not end");
    let again = standalone().await.expect("a standalone stream while stopping");
    let ended = tokio::time::timeout(Duration::from_secs(3), again.bytes()).await;
    assert!(ended.is_ok_and(|b| b.is_ok()), "a new standalone stream stayed open while stopping");
    // Still serving: a call is answered, and its connection closes so the next one goes elsewhere.
    let answered = call().await.expect("a call while stopping");
    assert_eq!(answered.status(), 200);
    assert_eq!(answered.headers().get("connection").map(|c| c.as_bytes()), Some(&b"close"[..]));
    assert!(answered.text().await.expect("answer").contains("one"));
    assert!(stopped_at.elapsed() < Duration::from_secs(5), "the checks outlasted the stop delay");

    let child = &mut muster.child;
    let exited = eventually(WAIT, "muster to exit after SIGTERM", async || child.try_wait().expect("try_wait")).await;
    assert!(exited.success(), "muster exited with {exited}:\n{}", muster.log_text());
    assert!(stopped_at.elapsed() >= Duration::from_secs(5), "stopped accepting before the stop delay");
}
