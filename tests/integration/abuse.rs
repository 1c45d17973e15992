//! muster under abuse (issue 11, the frontend): bodies and connections it refuses before
//! reading, sessions it will not hold, agents that hang up or stop reading. Each test states
//! what it measured in its log (`--nocapture`); loadtests/README.md records the figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::client::{Client, text};
use crate::support::mock_upstream::MockUpstream;
use crate::support::{Fleet, Muster, config, eventually, free_port, http_server, post_rpc};

const WAIT: Duration = Duration::from_secs(20);
const BODY: usize = (4 << 20) - 1;
const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;

/// muster's resident memory in KiB.
fn rss_kib(muster: &Muster) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", muster.child.id())).expect("proc status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a number")
}

/// A POST head to `/mcp` announcing `length` bytes of JSON.
fn post_head(port: u16, length: usize, extra: &str) -> String {
    format!(
        "POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\ncontent-length: {length}\r\n{extra}\r\n"
    )
}

/// Reads a response head; its status and the head's text.
async fn read_head(stream: &mut TcpStream, within: Duration) -> Option<(u16, String)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
            match stream.read(&mut byte).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&byte[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok()?;
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

/// Whether the server closed the connection (EOF or reset) within `within`.
async fn closed(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let drained = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, drained).await.is_ok()
}

async fn one_upstream(extra: &str) -> (Fleet, MockUpstream, Muster) {
    let port = free_port();
    let fleet = Fleet::new(&config(port, &format!("  toolExposure: direct\n{extra}")));
    let upstream = MockUpstream::start("a", free_port()).await;
    fleet.write_server("a.yaml", &http_server("a", &upstream.url(), ""));
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    (fleet, upstream, muster)
}

async fn open_session(muster: &Muster) -> String {
    let http = reqwest::Client::new();
    let opened = post_rpc(&http, &muster.mcp_url(), None, INIT).send().await.expect("initialize");
    assert_eq!(opened.status(), 200);
    opened.headers()["mcp-session-id"].to_str().expect("ascii").to_owned()
}

#[actix_web::test]
async fn unauthenticated_bodies_get_401_before_they_are_read_and_memory_stays_bounded() {
    let port = free_port();
    let dead_idp = free_port();
    let fleet = Fleet::new(&config(
        port,
        &format!(
            "  oauth:\n    server:\n      enabled: true\n      baseUrl: http://127.0.0.1:{port}\n      dex: {{issuerUrl: \"http://127.0.0.1:{dead_idp}\", clientId: muster}}\n"
        ),
    ));
    let muster = Muster::start(&fleet, port).await;
    let baseline = rss_kib(&muster);

    // 200 agents without a token announce 4 MiB each and send 1 KiB: each gets 401 at once.
    let started = Instant::now();
    let slow: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
                stream.write_all(post_head(port, BODY, "").as_bytes()).await.expect("head");
                stream.write_all(&[b' '; 1024]).await.expect("first KiB");
                let (status, _) = read_head(&mut stream, WAIT).await.expect("an answer before the body");
                (status, started.elapsed())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for task in slow {
        let (status, after) = task.await.expect("join");
        assert_eq!(status, 401);
        slowest = slowest.max(after);
    }
    eprintln!("200 slow unauthenticated bodies: every 401 within {slowest:?}");

    // 200 more send their 4 MiB − 1 as fast as they can; muster's memory does not follow.
    let peak = Arc::new(AtomicUsize::new(0));
    let sampling = {
        let (peak, pid) = (peak.clone(), muster.child.id());
        tokio::spawn(async move {
            loop {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let rss = status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                    .unwrap_or(0);
                peak.fetch_max(rss, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let fast: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(async move {
                let stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
                let (mut reader, mut writer) = stream.into_split();
                let send = async move {
                    let _ = writer.write_all(post_head(port, BODY, "").as_bytes()).await;
                    let chunk = vec![b' '; 64 * 1024];
                    let mut sent = 0;
                    while sent < BODY {
                        let n = chunk.len().min(BODY - sent);
                        if writer.write_all(&chunk[..n]).await.is_err() {
                            break;
                        }
                        sent += n;
                    }
                    writer
                };
                let sender = tokio::spawn(send);
                let mut head = [0u8; 12];
                let answered = tokio::time::timeout(WAIT, reader.read_exact(&mut head)).await;
                sender.abort();
                answered.is_ok_and(|r| r.is_ok()) && &head[9..12] == b"401"
            })
        })
        .collect();
    for task in fast {
        assert!(task.await.expect("join"), "every flooding agent got 401");
    }
    sampling.abort();
    let peak = peak.load(Ordering::SeqCst) as u64;
    eprintln!("RSS: {baseline} KiB before, {peak} KiB at most during 200 × 4 MiB unauthenticated bodies");
    assert!(peak < baseline + 200 * 1024, "muster held the bodies: {baseline} KiB → {peak} KiB");

    let health = reqwest::get(muster.url("/health")).await.expect("health");
    assert_eq!(health.status(), 200, "muster still answers");
}

#[actix_web::test]
async fn slow_bodies_time_out_and_past_max_connections_muster_refuses_fast_but_serves_its_agents() {
    let (_fleet, _upstream, muster) = one_upstream("  maxConnections: 40\n  bodyTimeoutMs: 1000\n").await;
    let port = muster.port;

    // A body that trickles: 408 once bodyTimeoutMs has passed, and the connection closes.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    slow.write_all(post_head(port, 1000, "").as_bytes()).await.expect("head");
    slow.write_all(b"{\"jsonrpc\"").await.expect("a few bytes");
    let started = Instant::now();
    let (status, head) = read_head(&mut slow, WAIT).await.expect("an answer to a slow body");
    eprintln!("a trickling body: {status} after {:?}", started.elapsed());
    assert_eq!(status, 408, "{head}");
    assert!(head.contains("connection: close"), "{head}");

    // An agent connected before the flood (its session, and a keep-alive connection).
    let session = open_session(&muster).await;
    let mut agent = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let echo = |text: &str| {
        let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "x_a_echo", "arguments": {"text": text}}})
        .to_string();
        let head =
            post_head(port, call.len(), &format!("mcp-protocol-version: 2025-06-18\r\nmcp-session-id: {session}\r\n"));
        format!("{head}{call}")
    };
    agent.write_all(echo("before").as_bytes()).await.expect("call");
    assert_eq!(read_head(&mut agent, WAIT).await.map(|(status, _)| status), Some(200));
    let mut answer = [0u8; 256];
    let _ = tokio::time::timeout(Duration::from_millis(500), agent.read(&mut answer)).await;

    // 60 idle connections take muster past its 40.
    let mut idle = Vec::new();
    for _ in 0..60 {
        idle.push(TcpStream::connect(("127.0.0.1", port)).await.expect("connect"));
    }
    // A new client is refused at once rather than queued.
    let refused = eventually(WAIT, "a refusal past maxConnections", async || {
        let mut late = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        late.write_all(format!("GET /health HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n").as_bytes()).await.ok()?;
        let started = Instant::now();
        let (status, head) = read_head(&mut late, Duration::from_secs(5)).await?;
        (status == 503).then_some((head, started.elapsed(), late))
    })
    .await;
    let (head, after, mut late) = refused;
    eprintln!("past maxConnections (40, with 60 idle connections held): 503 after {after:?}");
    assert!(head.contains("connection: close") && head.contains("retry-after"), "{head}");
    assert!(closed(&mut late, WAIT).await, "the refused connection is closed");

    // The agent already connected still gets through.
    agent.write_all(echo("during").as_bytes()).await.expect("call");
    let (status, head) = read_head(&mut agent, WAIT).await.expect("an answer to the connected agent");
    assert_eq!(status, 200, "{head}");
    eprintln!("the agent connected before the flood got through during it");

    // Idle connections that never send a request are closed, and new agents get in again.
    let started = Instant::now();
    for stream in &mut idle {
        assert!(closed(stream, WAIT).await, "an idle connection was closed");
    }
    eprintln!("the 60 idle connections were closed within {:?}", started.elapsed());
    let newcomer = tokio::time::timeout(WAIT, Client::connect(&muster.mcp_url())).await.expect("connect in time");
    let after = tokio::time::timeout(WAIT, newcomer.call("x_a_echo", json!({"text": "after"}))).await;
    assert_eq!(text(&after.expect("the newcomer's call in time")), "a:after");
    eprintln!("RSS after the connection flood: {} KiB", rss_kib(&muster));
}

#[actix_web::test]
async fn a_request_without_a_session_or_the_2026_revision_gets_400() {
    let (_fleet, _upstream, muster) = one_upstream("").await;
    let http = reqwest::Client::new();
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let bare = http
        .post(muster.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(list)
        .send()
        .await
        .expect("tools/list");
    assert_eq!(bare.status(), 400, "no session, no version");
    let body: Value = bare.json().await.expect("a JSON-RPC error");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("Mcp-Session-Id")), "{body}");

    // The 2026-07-28 revision has no sessions: served.
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"}});
    let discover = json!({"jsonrpc": "2.0", "id": 3, "method": "server/discover", "params": {"_meta": meta}});
    let stateless = http
        .post(muster.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "server/discover")
        .body(discover.to_string())
        .send()
        .await
        .expect("server/discover");
    let status = stateless.status();
    let body: Value = stateless.json().await.expect("JSON");
    assert_eq!(status, 200, "{body}");
    assert!(body.get("result").is_some(), "{body}");
}

#[actix_web::test]
async fn metrics_and_readyz_answer_only_allowed_hosts() {
    let (_fleet, _upstream, muster) = one_upstream("").await;
    let http = reqwest::Client::new();
    for path in ["/metrics", "/readyz"] {
        let foreign = http.get(muster.url(path)).header("host", "evil.example.com").send().await.expect(path);
        assert_eq!(foreign.status(), 403, "{path} with a foreign Host");
        let local = http.get(muster.url(path)).send().await.expect(path);
        assert_eq!(local.status(), 200, "{path} by the address muster listens on");
    }
    let health = http.get(muster.url("/health")).header("host", "evil.example.com").send().await.expect("health");
    assert_eq!(health.status(), 200, "/health (liveness) tells nothing and stays open");
}

#[actix_web::test]
async fn sessions_past_the_limit_are_refused_with_a_clear_error() {
    let (_fleet, _upstream, muster) = one_upstream("  maxSessions: 2\n").await;
    open_session(&muster).await;
    open_session(&muster).await;
    let http = reqwest::Client::new();
    let refused = post_rpc(&http, &muster.mcp_url(), None, INIT).send().await.expect("initialize");
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.expect("a JSON-RPC error");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("2 open MCP sessions"), "{body}");
}

#[actix_web::test]
async fn a_json_reply_agent_that_hangs_up_cancels_its_call() {
    let (_fleet, upstream, muster) = one_upstream("").await;
    let session = open_session(&muster).await;
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "x_a_block"}}).to_string();
    let mut stream = TcpStream::connect(("127.0.0.1", muster.port)).await.expect("connect");
    let head = post_head(
        muster.port,
        call.len(),
        &format!("mcp-protocol-version: 2025-06-18\r\nmcp-session-id: {session}\r\n"),
    )
    .replace("accept: application/json, text/event-stream", "accept: application/json");
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(call.as_bytes()).await.expect("body");
    let shared = upstream.shared.clone();
    eventually(WAIT, "the call to reach the upstream", async || {
        (shared.blocked.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    drop(stream);
    let started = Instant::now();
    eventually(WAIT, "the upstream call to be cancelled", async || {
        (shared.cancelled.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    eprintln!("a JSON-reply agent hung up: its call was cancelled upstream after {:?}", started.elapsed());
}

#[actix_web::test]
async fn an_agent_that_does_not_read_its_reply_loses_the_call_and_muster_keeps_its_memory() {
    let (_fleet, upstream, muster) = one_upstream("").await;
    let session = open_session(&muster).await;
    let baseline = rss_kib(&muster);
    let call = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call",
        "params": {"name": "x_a_flood", "_meta": {"progressToken": "f"}}})
    .to_string();
    // A small receive buffer, and no reading at all.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stream = socket.connect(([127, 0, 0, 1], muster.port).into()).await.expect("connect");
    let head = post_head(
        muster.port,
        call.len(),
        &format!("mcp-protocol-version: 2025-06-18\r\nmcp-session-id: {session}\r\n"),
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(call.as_bytes()).await.expect("body");
    let shared = upstream.shared.clone();
    eventually(Duration::from_secs(60), "muster to give up on the agent that does not read", async || {
        (shared.cancelled.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    let rss = rss_kib(&muster);
    eprintln!("an agent that does not read its SSE reply: call cancelled; RSS {baseline} KiB → {rss} KiB");
    assert!(rss < baseline + 100 * 1024, "{baseline} KiB → {rss} KiB");
    drop(stream);
}
