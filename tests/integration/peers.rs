//! Real third-party peers: kubernetes-mcp-server (npm) as a `kubernetes` family over streamable
//! HTTP and over stdio, and a Python `mcp` SDK server, driven by the Python SDK's own client.
//! Killing the stdio child and restarting an HTTP upstream must heal with no operator action.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    Fleet, Muster, Peers, Process, config, eventually, family, free_port, http_server, stdio_server, wait_port,
};

const WAIT: Duration = Duration::from_secs(30);

fn k8s_http(peers: &Peers, port: u16) -> Process {
    Process::spawn(&mut peers.kubernetes_mcp_server(port), "kubernetes-mcp-server")
}

fn python_upstream(peers: &Peers, port: u16, extra: &[&str]) -> Process {
    Process::spawn(peers.python("py_upstream.py").arg(port.to_string()).args(extra), "the Python upstream")
}

fn call(peers: &Peers, url: &str, tool: &str, args: Value) -> Value {
    peers.py_client(url, &["call", tool, &args.to_string()])
}

#[actix_web::test]
async fn real_kubernetes_family_and_python_server_through_the_python_client() {
    let peers = Peers::load();
    let port = free_port();
    let fleet = Fleet::new(&config(port, "  toolExposure: direct\n"));
    let mut k8s = Vec::new();
    let mut ports = Vec::new();
    for cluster in ["a", "b", "c"] {
        let p = free_port();
        k8s.push(k8s_http(&peers, p));
        ports.push(p);
        let name = format!("cluster-{cluster}-mcp-kubernetes");
        fleet.write_server(
            &format!("{name}.yaml"),
            &http_server(&name, &format!("http://127.0.0.1:{p}/mcp"), &family("kubernetes", "management_cluster")),
        );
    }
    let kubeconfig = Peers::repo_file("tests/peers/fake-kubeconfig.yaml").display().to_string();
    fleet.write_server(
        "cluster-d-mcp-kubernetes.yaml",
        &stdio_server(
            "cluster-d-mcp-kubernetes",
            peers.get("MUSTER_K8S_MCP"),
            &["--read-only", "--kubeconfig", &kubeconfig],
            &family("kubernetes", "management_cluster"),
        ),
    );
    let py_port = free_port();
    let _py = python_upstream(&peers, py_port, &[]);
    fleet.write_server("py.yaml", &http_server("py", &format!("http://127.0.0.1:{py_port}/mcp"), ""));
    // The same SDK's legacy HTTP+SSE transport, as `type: sse`.
    let legacy_port = free_port();
    let _legacy = python_upstream(&peers, legacy_port, &["--sse"]);
    let legacy =
        http_server("legacy", &format!("http://127.0.0.1:{legacy_port}/sse"), "").replace("streamable-http", "sse");
    fleet.write_server("legacy.yaml", &legacy);
    for p in &ports {
        wait_port(*p).await;
    }
    wait_port(py_port).await;
    wait_port(legacy_port).await;
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    let url = muster.mcp_url();

    let names = peers.py_client(&url, &["list"]);
    let names: Vec<String> = serde_json::from_value(names).expect("names");
    assert!(names.contains(&"x_kubernetes_configuration_view".to_owned()), "{names:?}");
    assert!(names.contains(&"x_py_add".to_owned()), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("cluster-a")), "family tools collapse: {names:?}");

    // Every member answers, stdio and HTTP alike, with its own kubeconfig view.
    for cluster in ["cluster-a-mcp-kubernetes", "cluster-b", "cluster-d-mcp-kubernetes"] {
        let view = call(&peers, &url, "x_kubernetes_configuration_view", json!({"management_cluster": cluster}));
        assert_eq!(view["isError"], false, "{cluster}: {view}");
        assert!(view["text"].as_str().is_some_and(|t| t.contains("127.0.0.1:6443")), "{cluster}: {view}");
    }
    let sum = call(&peers, &url, "x_py_add", json!({"a": 2, "b": 3}));
    assert_eq!(sum["text"], "5", "{sum}");
    // The Python SDK 2.3.0 server answers `server/discover`: muster speaks 2026-07-28 to it, and
    // 2025 to the Go server, whose discovery offers only 2025 revisions.
    for (file, era) in [("py.yaml", "2026-07-28"), ("cluster-a-mcp-kubernetes.yaml", "2025-")] {
        let revision =
            eventually(WAIT, file, async || fleet.status(file)["protocolVersion"].as_str().map(str::to_owned));
        assert!(revision.await.starts_with(era), "{file} speaks {era}");
    }
    let legacy_sum = call(&peers, &url, "x_legacy_add", json!({"a": 20, "b": 3}));
    assert_eq!(legacy_sum["text"], "23", "over type sse: {legacy_sum}");
    // The 2026-07-28 stateless protocol (server/discover, no session) works as well.
    let info = peers.py_client(&url, &["info", "--mode", "auto"]);
    assert_eq!(info["protocolVersion"], "2026-07-28", "{info}");
    let stateless = peers.py_client(&url, &["call", "x_py_add", r#"{"a": 40, "b": 2}"#, "--mode", "auto"]);
    assert_eq!(stateless["text"], "42", "{stateless}");
    let wrong = call(&peers, &url, "x_kubernetes_configuration_view", json!({"management_cluster": "cluster-z"}));
    assert_eq!(wrong["isError"], true);
    assert_eq!(wrong["structured"]["code"], "instance_unknown", "{wrong}");

    // Kill the stdio child: muster notices at once and starts a new one.
    let children = muster.child_pids();
    assert_eq!(children.len(), 1, "one stdio child: {children:?}");
    let _ = Command::new("kill").arg("-9").arg(children[0].to_string()).status();
    eventually(WAIT, "a new stdio child", async || {
        let now = muster.child_pids();
        (now.len() == 1 && now[0] != children[0]).then_some(())
    })
    .await;
    eventually(WAIT, "cluster-d to answer again", async || {
        let view = call(&peers, &url, "x_kubernetes_configuration_view", json!({"management_cluster": "cluster-d"}));
        (view["isError"] == false).then_some(())
    })
    .await;
    let status = fleet.status("cluster-d-mcp-kubernetes.yaml");
    assert!(status["restartCount"].as_u64() >= Some(1), "{status}");
    let log = muster.log_text();
    assert!(
        log.lines().any(|l| l.contains("upstream connection lost") && l.contains("cluster-d-mcp-kubernetes")),
        "the exit was noticed:\n{log}"
    );

    // Restart cluster-b's HTTP server (a redeploy): calls recover without operator action.
    drop(k8s.remove(1));
    let _b = k8s_http(&peers, ports[1]);
    wait_port(ports[1]).await;
    eventually(WAIT, "cluster-b to answer after its restart", async || {
        let view = call(&peers, &url, "x_kubernetes_configuration_view", json!({"management_cluster": "cluster-b"}));
        (view["isError"] == false).then_some(())
    })
    .await;
}
