//! Faults of upstreams, as an unlucky operator meets them: a member killed and restarted, calls
//! that hang, replies that are too large, and upstreams that answer with secrets or print them.
//! The bounds on time are generous multiples; what they assert is that muster does not wait out
//! `spec.timeout` (30 s here) or the backoff.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::client::{Client, text};
use crate::support::mock_upstream::MockUpstream;
use crate::support::{
    Fleet, Muster, Peers, Process, eventually, family, free_port, http_server, stdio_server, wait_port,
};

const WAIT: Duration = Duration::from_secs(20);

/// muster's defaults for restarts (1 s doubling, at most 30 s) and a 30 s server timeout: the
/// values under which a dead member used to hold calls for 30 s and a returned one stayed failed.
fn production_like(port: u16, extra: &str) -> String {
    format!("aggregator:\n  port: {port}\n  toolExposure: direct\n{extra}")
}

fn python_member(peers: &Peers, port: u16) -> Process {
    Process::spawn(peers.python("py_upstream.py").arg(port.to_string()), "the Python upstream")
}

#[actix_web::test]
async fn a_killed_member_fails_fast_and_serves_the_first_call_after_its_return() {
    let peers = Peers::load();
    let port = free_port();
    let fleet = Fleet::new(&production_like(port, ""));
    let (a_port, b_port) = (free_port(), free_port());
    let _a = python_member(&peers, a_port);
    let mut b = python_member(&peers, b_port);
    for (cluster, upstream_port) in [("a", a_port), ("b", b_port)] {
        wait_port(upstream_port).await;
        let name = format!("cluster-{cluster}-mcp-prometheus");
        let url = format!("http://127.0.0.1:{upstream_port}/mcp");
        let spec =
            http_server(&name, &url, &family("prometheus", "management_cluster")).replace("timeout: 5", "timeout: 30");
        fleet.write_server(&format!("{name}.yaml"), &spec);
    }
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    let client = Client::connect(&muster.mcp_url()).await;
    let echo = |cluster: &str| json!({"management_cluster": cluster, "text": "hi"});
    assert_eq!(text(&client.call("x_prometheus_echo", echo("cluster-b")).await), "hi");

    // Killed: the next call fails at once with a readable error that names the member.
    drop(b);
    let killed = Instant::now();
    let started = Instant::now();
    let down = client.call("x_prometheus_echo", echo("cluster-b")).await;
    let time_to_fail = started.elapsed();
    eprintln!("time to fail: {time_to_fail:?}");
    assert!(time_to_fail < Duration::from_secs(10), "took {time_to_fail:?}: {down:?}");
    assert_eq!(down.is_error, Some(true), "{down:?}");
    let structured = down.structured_content.clone().expect("structured");
    assert_eq!(structured["code"], "server_unavailable", "{structured}");
    assert_eq!(structured["server"], "cluster-b-mcp-prometheus", "{structured}");
    assert_eq!(structured["cluster"], "cluster-b", "{structured}");
    assert_eq!(structured["reason"], "connection refused", "{structured}");
    assert!(structured["retryAfterMs"].as_u64().is_some_and(|ms| (1000..=30_000).contains(&ms)), "{structured}");
    let message = text(&down);
    assert!(
        message.starts_with("cluster-b-mcp-prometheus is unreachable: connection refused; retrying in "),
        "{message}"
    );
    assert!(!message.contains("::") && !message.contains("rmcp"), "internals in {message}");
    // The other member is untouched.
    assert_eq!(text(&client.call("x_prometheus_echo", echo("cluster-a")).await), "hi");

    // A 20 s outage: the backoff has grown to 16 s by its end.
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(killed.elapsed())).await;
    let repeated = Instant::now();
    let again = client.call("x_prometheus_echo", echo("cluster-b")).await;
    assert_eq!(again.is_error, Some(true), "{again:?}");
    assert!(repeated.elapsed() < Duration::from_secs(10), "a repeated call took {:?}", repeated.elapsed());

    b = python_member(&peers, b_port);
    wait_port(b_port).await;
    let returned = Instant::now();
    let first = client.call("x_prometheus_echo", echo("cluster-b")).await;
    let time_to_return = returned.elapsed();
    eprintln!("time from the member's return to its first answer: {time_to_return:?}");
    assert_eq!(text(&first), "hi", "the first call after the return: {first:?}");
    assert!(time_to_return < Duration::from_secs(10), "took {time_to_return:?}");
    let status = eventually(WAIT, "cluster-b Connected in its status", async || {
        let status = fleet.status("cluster-b-mcp-prometheus.yaml");
        (status["state"] == "Connected").then_some(status)
    })
    .await;
    assert!(status.get("lastError").is_none(), "{status}");
    drop(b);
}

/// Two members, with `calls` as `aggregator.calls`.
async fn hanging_fleet(calls: &str) -> (Fleet, Vec<MockUpstream>, Muster) {
    crate::support::mock_family(|port| production_like(port, &format!("  calls:\n{calls}")), &["a", "b"]).await
}

#[actix_web::test]
async fn hung_calls_time_out_are_cancelled_upstream_and_free_the_server() {
    let (fleet, upstreams, muster) = hanging_fleet("    timeoutMs: 2000\n").await;
    let client = Client::connect(&muster.mcp_url()).await;
    let a = json!({"management_cluster": "cluster-a"});
    // Six calls that never answer take every place on the wire of cluster-a's session.
    let hung = (0..6).map(|_| client.call("x_kubernetes_block", a.clone()));
    let results = futures::future::join_all(hung).await;
    for result in &results {
        let structured = result.structured_content.clone().expect("structured");
        assert_eq!(structured["code"], "upstream_timeout", "{structured}");
        assert_eq!(structured["server"], "cluster-a-mcp-kubernetes", "{structured}");
        assert_eq!(text(result), "cluster-a-mcp-kubernetes did not answer within 2 s; muster cancelled the call");
    }
    // The upstream heard each cancellation, and a fast call gets through.
    let shared = upstreams[0].shared.clone();
    eventually(WAIT, "six cancellations upstream", async || {
        (shared.cancelled.load(Ordering::SeqCst) == 6).then_some(())
    })
    .await;
    // Calls time out while pings pass: Degraded, until a call answers in time again.
    let degraded = eventually(WAIT, "a Degraded condition", async || {
        let status = fleet.status("cluster-a-mcp-kubernetes.yaml");
        let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
        conditions.iter().find(|c| c["type"] == "Degraded").cloned()
    })
    .await;
    assert_eq!(degraded["status"], "True", "{degraded}");
    assert_eq!(fleet.status("cluster-a-mcp-kubernetes.yaml")["state"], "Connected");
    assert_eq!(text(&client.call("x_kubernetes_whoami", a.clone()).await), "a");
    eventually(WAIT, "the Degraded condition to clear", async || {
        fleet.status("cluster-a-mcp-kubernetes.yaml").get("conditions").is_none().then_some(())
    })
    .await;

    // Six hung calls again, and a seventh behind them: it waits for a place on the wire no longer
    // than its own deadline, and says why it failed.
    let hung = (0..6).map(|_| client.call("x_kubernetes_block", a.clone()));
    let blocked = shared.blocked.load(Ordering::SeqCst);
    let seventh = async {
        eventually(WAIT, "six calls on the wire", async || {
            (shared.blocked.load(Ordering::SeqCst) == blocked + 6).then_some(())
        })
        .await;
        client.call("x_kubernetes_whoami", a.clone()).await
    };
    let (_, seventh) = tokio::join!(futures::future::join_all(hung), seventh);
    let code = seventh.structured_content.clone().map(|s| s["code"].clone());
    // Either it found a place freed by a timed-out call, or it reports the busy server; on a
    // loaded machine the place may come so late that its own deadline passes on the wire.
    let named = [Some(json!("server_busy")), Some(json!("upstream_timeout"))];
    assert!(text(&seventh) == "a" || named.contains(&code), "{seventh:?}");
    // Other members never noticed.
    assert_eq!(text(&client.call("x_kubernetes_whoami", json!({"management_cluster": "cluster-b"})).await), "b");
}

#[actix_web::test]
async fn a_reply_past_the_result_limit_fails_the_call_and_muster_stays_small() {
    let (_fleet, _upstreams, muster) = hanging_fleet("    maxResultBytes: 1048576\n    timeoutMs: 60000\n").await;
    let client = Client::connect(&muster.mcp_url()).await;
    let big = |bytes: u64| json!({"management_cluster": "cluster-a", "bytes": bytes});
    let small = client.call("x_kubernetes_big", big(100_000)).await;
    assert_eq!(text(&small).len(), 100_000);
    let results = futures::future::join_all((0..6).map(|_| client.call("x_kubernetes_big", big(8 << 20)))).await;
    for result in &results {
        let structured = result.structured_content.clone().expect("structured");
        assert_eq!(structured["code"], "result_too_large", "{structured}");
        assert!(text(result).contains("larger than 1048576 bytes"), "{}", text(result));
    }
    let rss = rss_kib(muster.child.id());
    eprintln!("muster RSS after six 8 MiB replies refused: {rss} KiB");
    assert!(rss < 200 * 1024, "muster holds {rss} KiB");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// An HTTP server that answers every request 200 with a JSON document holding a secret (a cloud
/// metadata endpoint, as an MCPServer url might point at).
async fn secret_json_server(port: u16) -> actix_web::dev::ServerHandle {
    let server = actix_web::HttpServer::new(|| {
        actix_web::App::new().default_service(actix_web::web::to(|| async {
            actix_web::HttpResponse::Ok()
                .content_type("application/json")
                .body(r#"{"Code":"Success","AccessKeyId":"ASIA-FAKE","SecretAccessKey":"wJalr-SECRET-KEY"}"#)
        }))
    })
    .workers(1)
    .bind(("127.0.0.1", port))
    .expect("bind")
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    handle
}

#[actix_web::test]
async fn an_upstream_body_and_a_child_stderr_never_reach_status_or_the_log() {
    let port = free_port();
    let fleet = Fleet::new(&production_like(port, ""));
    let metadata_port = free_port();
    let metadata = secret_json_server(metadata_port).await;
    let url = format!("http://127.0.0.1:{metadata_port}/latest/meta-data/iam/security-credentials/role");
    fleet.write_server("metadata.yaml", &http_server("metadata", &url, ""));
    let script = "echo AWS_SECRET_ACCESS_KEY=hunter2-from-env >&2; exit 1";
    fleet.write_server("leaky.yaml", &stdio_server("leaky", "/bin/sh", &["-c", script], ""));
    // muster's own log filter, as an operator runs it.
    let muster = Muster::start_with_env(&fleet, port, &[("RUST_LOG", std::ffi::OsStr::new(""))]).await;
    muster.wait_ready().await;

    for (file, words) in [
        ("metadata.yaml", "answered with a body that is not JSON-RPC"),
        ("leaky.yaml", "the process exited or closed its output during the MCP handshake"),
    ] {
        let status = eventually(WAIT, &format!("{file} Failed"), async || {
            let status = fleet.status(file);
            (status["state"] == "Failed").then_some(status)
        })
        .await;
        let last_error = status["lastError"].as_str().unwrap_or_default().to_owned();
        assert!(last_error.contains(words), "{file}: {last_error}");
        for leak in ["SECRET", "hunter2", "ASIA-FAKE", "::", "rmcp"] {
            assert!(!last_error.contains(leak), "{file}: {leak} in {last_error}");
        }
    }
    let client = Client::connect(&muster.mcp_url()).await;
    let call = client.call("x_metadata_anything", json!({})).await;
    let seen = serde_json::to_string(&call).expect("json");
    assert!(!seen.contains("SECRET") && !seen.contains("ASIA-FAKE"), "{seen}");
    // What an operator reads at info level and above holds neither.
    let log = muster.log_text();
    for line in log.lines() {
        assert!(!line.contains("SECRET") && !line.contains("hunter2") && !line.contains("ASIA-FAKE"), "{line}");
    }
    assert!(log.contains("connect failed"), "the failures are logged:\n{log}");
    metadata.stop(true).await;
}
