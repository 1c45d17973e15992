//! A light load generator for the tail at many sessions: N agent sessions, each opened once,
//! call one tool, then think THINK_MS, for SECONDS. All sessions share one thread, so the
//! generator costs a fraction of what k6 spends on 1,000 VUs and the tail it reports is the
//! servers', not the generator's queueing (loadtests/README.md).
//!
//!     cargo run --release --example loadgen -- URL TOOL SESSIONS THINK_MS SECONDS
//!
//! URL may be several, comma-separated (replicas sharing a store): each session opens on one and
//! sends its calls to each in turn, as a round-robin load balancer without sticky routing would.
//!
//! Prints calls, failures, calls/s and the latency percentiles of the `tools/call`s that
//! succeeded (request sent to body read).

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::expect_used, reason = "a load-test tool binary")]

use std::time::{Duration, Instant};

use serde_json::{Value, json};

const VERSION: &str = "2025-06-18";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, tool, sessions, think_ms, seconds] = args.as_slice() else {
        eprintln!("usage: loadgen URL TOOL SESSIONS THINK_MS SECONDS");
        std::process::exit(2);
    };
    let sessions: usize = sessions.parse().expect("SESSIONS");
    let think = Duration::from_millis(think_ms.parse().expect("THINK_MS"));
    let run_for = Duration::from_secs(seconds.parse().expect("SECONDS"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (latencies, failed, wall) = runtime.block_on(run(url, tool, sessions, think, run_for));
    report(&latencies, failed, wall);
}

async fn run(
    url: &str,
    tool: &str,
    sessions: usize,
    think: Duration,
    run_for: Duration,
) -> (Vec<Duration>, usize, Duration) {
    let http = reqwest::Client::builder().pool_max_idle_per_host(sessions).build().expect("client");
    let mut opened = Vec::with_capacity(sessions);
    let urls: Vec<String> = url.split(',').map(str::to_owned).collect();
    for i in 0..sessions {
        opened.push(open(&http, &urls[i % urls.len()]).await.expect("open a session"));
    }
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + run_for;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, session) in opened.into_iter().enumerate() {
        let (http, urls, tool) = (http.clone(), urls.clone(), tool.to_owned());
        // Sessions start spread over one think time, not all at once.
        let offset = think.mul_f64(i as f64 / sessions as f64);
        tasks.spawn(async move {
            tokio::time::sleep(offset).await;
            let (mut latencies, mut failed) = (Vec::new(), 0);
            let body = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                "params": {"name": tool, "arguments": {"text": "hello from loadgen"}}})
            .to_string();
            let mut next = i;
            while tokio::time::Instant::now() < deadline {
                next += 1;
                let url = &urls[next % urls.len()];
                let sent = Instant::now();
                if call(&http, url, &session, body.clone()).await {
                    latencies.push(sent.elapsed());
                } else {
                    failed += 1;
                }
                // A zero think time is a closed loop: `sleep(0)` would still wait for the next
                // timer tick (1 ms).
                if think.is_zero() {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(think).await;
                }
            }
            (latencies, failed)
        });
    }
    let (mut all, mut failed) = (Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        let (latencies, f) = done.expect("session task");
        all.extend(latencies);
        failed += f;
    }
    (all, failed, started.elapsed())
}

fn post(http: &reqwest::Client, url: &str, session: Option<&str>, body: String) -> reqwest::RequestBuilder {
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", VERSION)
        .body(body);
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    request
}

async fn open(http: &reqwest::Client, url: &str) -> Option<String> {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "loadgen", "version": "1"}}});
    let response = post(http, url, None, init.to_string()).send().await.ok()?;
    let session = response.headers().get("mcp-session-id")?.to_str().ok()?.to_owned();
    let _ = response.bytes().await;
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let _ = post(http, url, Some(&session), initialized.to_string()).send().await.ok()?.bytes().await;
    Some(session)
}

/// One call; true when its answer is a result without `isError` (JSON or SSE reply).
async fn call(http: &reqwest::Client, url: &str, session: &str, body: String) -> bool {
    let Ok(response) = post(http, url, Some(session), body).send().await else { return false };
    let Ok(text) = response.text().await else { return false };
    let json = text.lines().filter_map(|l| l.strip_prefix("data:")).next_back().unwrap_or(&text);
    serde_json::from_str::<Value>(json.trim())
        .is_ok_and(|m| m["id"] == 3 && m["result"].is_object() && m["result"]["isError"] != true)
}

fn report(latencies: &[Duration], failed: usize, wall: Duration) {
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    let at = |q: f64| sorted.get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1))).copied();
    let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    println!(
        "calls={} failed={} calls/s={:.0} p50={:.3}ms p90={:.3}ms p99={:.3}ms max={:.3}ms",
        sorted.len(),
        failed,
        sorted.len() as f64 / wall.as_secs_f64(),
        ms(at(0.50)),
        ms(at(0.90)),
        ms(at(0.99)),
        ms(sorted.last().copied()),
    );
}
