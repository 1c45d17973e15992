//! The lean load client: MCP `tools/call`s against one or more targets (the echo upstream directly,
//! muster in front of it), taken in turn (A, B, A, B, …) so every target sees the same background
//! load, and the medians of the rounds compared at the end (loadtests/README.md).
//!
//!     cargo run --release --example loadgen -- [OPTIONS] LABEL=URL@TOOL...
//!     loadgen --stages "1 16 1000/500" --rounds 3 --seconds 10 --warmup 2 \
//!         --pid muster=1234 --pid echo=1233 direct=http://127.0.0.1:18200/mcp@echo \
//!         muster=http://127.0.0.1:18290/mcp@x_echo_echo
//!
//! A stage is `SESSIONS` (a closed loop: each session calls again as soon as it has its answer) or
//! `SESSIONS/THINK_MS` (each session waits THINK_MS after each answer, so 1,000 sessions thinking
//! 500 ms offer about 2,000 calls/s whatever the latency). Each session is one agent session on
//! its own keep-alive HTTP/1.1 connection (hyper's client connection, no pool), opened before the
//! run; a `LABEL=URL,URL@TOOL` target sends each session's calls to the URLs in turn (replicas
//! without sticky routing). All sessions share one thread, so the client costs less than the
//! servers: it reports its own CPU per call as `loadgen`.
//!
//! Each run: `--warmup` seconds of calls that are not counted, then `--seconds` of calls whose
//! latencies (request written to body read) give exact percentiles. CPU per call is utime+stime
//! from `/proc/PID/stat` of each `--pid` (several PIDs of one label are summed) over the counted
//! window, divided by the calls that finished in it. Errors are counted by kind.

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::expect_used, reason = "a load-test tool binary")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use tokio::net::TcpStream;

const VERSION: &str = "2025-06-18";
/// `/proc/PID/stat` counts CPU time in USER_HZ ticks, 100 per second on every Linux ABI.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Parser)]
#[command(about = "The lean MCP load client (loadtests/README.md)")]
struct Args {
    /// LABEL=URL[,URL…]@TOOL: a target; several URLs are replicas, called in turn.
    #[arg(required = true)]
    targets: Vec<String>,
    /// Stages in the order run: SESSIONS (closed loop) or SESSIONS/THINK_MS.
    #[arg(long, value_delimiter = ' ', default_value = "1 16 1000/500")]
    stages: Vec<String>,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Counted seconds per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of uncounted calls before each run's counted window.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// LABEL=PID[,PID…]: processes whose CPU per call and RSS are reported.
    #[arg(long = "pid")]
    pids: Vec<String>,
}

struct Target {
    label: String,
    hosts: Vec<Endpoint>,
    tool: String,
}

#[derive(Clone)]
struct Endpoint {
    address: String,
    path: String,
}

#[derive(Clone, Copy)]
struct Stage {
    sessions: usize,
    think: Duration,
}

/// What one run measured.
struct Run {
    calls: usize,
    window: Duration,
    latencies: Vec<Duration>,
    errors: BTreeMap<String, usize>,
    /// Seconds of CPU per label over the window, the client's own under `loadgen`.
    cpu: Vec<(String, f64)>,
}

fn main() {
    let args = Args::parse();
    let targets: Vec<Target> = args.targets.iter().map(|t| parse_target(t)).collect();
    let stages: Vec<Stage> = args.stages.iter().filter(|s| !s.is_empty()).map(|s| parse_stage(s)).collect();
    let pids: Vec<(String, Vec<u32>)> = args.pids.iter().map(|p| parse_pids(p)).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut results: BTreeMap<(usize, usize), Vec<Run>> = BTreeMap::new();
    for round in 1..=args.rounds {
        for (s, stage) in stages.iter().enumerate() {
            for (t, target) in targets.iter().enumerate() {
                let windows = (Duration::from_secs(args.warmup), Duration::from_secs(args.seconds));
                let run = runtime.block_on(run(target, *stage, windows, &pids));
                println!("round={round} {} {}", stage_name(*stage), line(&target.label, &run, &pids));
                results.entry((s, t)).or_default().push(run);
            }
        }
    }
    println!("== medians of {} rounds ({} s each)", args.rounds, args.seconds);
    for (s, stage) in stages.iter().enumerate() {
        let base = median(results[&(s, 0)].iter().map(|r| r.calls as f64 / r.window.as_secs_f64()));
        let base_p50 = median(results[&(s, 0)].iter().map(|r| quantile(&r.latencies, 0.50)));
        for (t, target) in targets.iter().enumerate() {
            let runs = &results[&(s, t)];
            let rate = median(runs.iter().map(|r| r.calls as f64 / r.window.as_secs_f64()));
            let q = |q: f64| median(runs.iter().map(|r| quantile(&r.latencies, q)));
            let mut text = format!(
                "{} {}: calls/s={rate:.0} ({:.2}x {}) p50={:.0}µs (+{:.0}µs) p90={:.0}µs p99={:.0}µs errors={}",
                stage_name(*stage),
                target.label,
                rate / base,
                targets[0].label,
                q(0.50),
                q(0.50) - base_p50,
                q(0.90),
                q(0.99),
                runs.iter().flat_map(|r| r.errors.values()).sum::<usize>(),
            );
            for (label, _) in runs[0].cpu.iter() {
                let per_call = median(runs.iter().map(|r| cpu_per_call(r, label)));
                text.push_str(&format!(" cpu/call[{label}]={per_call:.0}µs"));
            }
            println!("{text}");
        }
    }
}

async fn run(
    target: &Target,
    stage: Stage,
    (warmup, counted): (Duration, Duration),
    pids: &[(String, Vec<u32>)],
) -> Run {
    let mut sessions = Vec::with_capacity(stage.sessions);
    for i in 0..stage.sessions {
        sessions.push(Session::open(target, i).await);
    }
    let start = tokio::time::Instant::now() + warmup;
    let end = start + counted;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, session) in sessions.into_iter().enumerate() {
        // Thinking sessions start spread over one think time, not all at once.
        let offset = stage.think.mul_f64(i as f64 / stage.sessions as f64);
        tasks.spawn(session.call_until(offset, stage.think, start, end));
    }
    tokio::time::sleep_until(start).await;
    let before = cpu_seconds(pids);
    tokio::time::sleep_until(end).await;
    let after = cpu_seconds(pids);
    let mut run = Run {
        calls: 0,
        window: counted,
        latencies: Vec::new(),
        errors: BTreeMap::new(),
        cpu: before.iter().zip(&after).map(|((label, b), (_, a))| (label.clone(), a - b)).collect(),
    };
    while let Some(done) = tasks.join_next().await {
        let (latencies, errors) = done.expect("session task");
        run.latencies.extend(latencies);
        for (kind, n) in errors {
            *run.errors.entry(kind).or_default() += n;
        }
    }
    run.calls = run.latencies.len();
    run.latencies.sort_unstable();
    run
}

/// One agent session: its id and a connection to each of the target's URLs.
struct Session {
    id: String,
    connections: Vec<Connection>,
    call: Bytes,
}

struct Connection {
    endpoint: Endpoint,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Session {
    async fn open(target: &Target, i: usize) -> Session {
        let mut connections: Vec<Connection> =
            target.hosts.iter().map(|e| Connection { endpoint: e.clone(), sender: None }).collect();
        let first = i % connections.len();
        let init = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"{VERSION}","capabilities":{{}},"clientInfo":{{"name":"loadgen","version":"1"}}}}}}"#
        );
        let (head, _) = connections[first].post(None, Bytes::from(init)).await.expect("initialize");
        let id = head
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .expect("an mcp-session-id on the initialize reply")
            .to_owned();
        let initialized = Bytes::from_static(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        connections[first].post(Some(&id), initialized).await.expect("notifications/initialized");
        let call = format!(
            r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"{}","arguments":{{"text":"hello from loadgen"}}}}}}"#,
            target.tool
        );
        Session { id, connections, call: Bytes::from(call) }
    }

    async fn call_until(
        mut self,
        offset: Duration,
        think: Duration,
        start: tokio::time::Instant,
        end: tokio::time::Instant,
    ) -> (Vec<Duration>, BTreeMap<String, usize>) {
        let (mut latencies, mut errors) = (Vec::new(), BTreeMap::<String, usize>::new());
        tokio::time::sleep(offset).await;
        let mut next = 0;
        while tokio::time::Instant::now() < end {
            next += 1;
            let count = self.connections.len();
            let connection = &mut self.connections[next % count];
            let sent = Instant::now();
            let outcome = match connection.post(Some(&self.id), self.call.clone()).await {
                Ok((_, body)) => judge(&body),
                Err(kind) => Err(kind),
            };
            let done = tokio::time::Instant::now();
            if done >= start && done < end {
                match outcome {
                    Ok(()) => latencies.push(sent.elapsed()),
                    Err(kind) => *errors.entry(kind).or_default() += 1,
                }
            }
            if !think.is_zero() {
                tokio::time::sleep(think).await;
            }
        }
        (latencies, errors)
    }
}

impl Connection {
    /// One POST on this connection (opened, or reopened after a failure, here).
    async fn post(&mut self, session: Option<&str>, body: Bytes) -> Result<(http::response::Parts, Bytes), String> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.sender = Some(connect(&self.endpoint.address).await?);
        }
        let sender = self.sender.as_mut().expect("connected above");
        let mut request = http::Request::post(self.endpoint.path.as_str())
            .header("host", self.endpoint.address.as_str())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", VERSION);
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        let request = request.body(Full::new(body)).expect("a valid request");
        let outcome = async {
            sender.ready().await.map_err(|_| "connection-closed".to_owned())?;
            let response = sender.send_request(request).await.map_err(|e| format!("send: {}", kind_of(&e)))?;
            let (head, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| format!("body: {}", kind_of(&e)))?.to_bytes();
            if !head.status.is_success() {
                return Err(format!("http-{}", head.status.as_u16()));
            }
            Ok((head, body))
        }
        .await;
        if outcome.is_err() {
            self.sender = None;
        }
        outcome
    }
}

async fn connect(address: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(address).await.map_err(|e| format!("connect: {:?}", e.kind()))?;
    stream.set_nodelay(true).map_err(|e| format!("connect: {:?}", e.kind()))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {}", kind_of(&e)))?;
    tokio::spawn(connection);
    Ok(sender)
}

fn kind_of(error: &hyper::Error) -> &'static str {
    if error.is_incomplete_message() {
        "incomplete"
    } else if error.is_closed() || error.is_canceled() {
        "closed"
    } else if error.is_timeout() {
        "timeout"
    } else if error.is_parse() {
        "parse"
    } else {
        "io"
    }
}

/// Whether a reply (JSON, or SSE whose last `data:` line is the answer) is a tool result without
/// `isError`; else the kind of failure.
fn judge(body: &[u8]) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        result: Option<ToolResult>,
        error: Option<JsonRpcError>,
    }
    #[derive(serde::Deserialize)]
    struct ToolResult {
        #[serde(rename = "isError")]
        is_error: Option<bool>,
    }
    #[derive(serde::Deserialize)]
    struct JsonRpcError {
        code: i64,
    }
    let text = std::str::from_utf8(body).map_err(|_| "not-utf8".to_owned())?;
    let json = text.lines().filter_map(|l| l.strip_prefix("data:")).next_back().unwrap_or(text);
    let answer: Answer = serde_json::from_str(json.trim()).map_err(|_| "undecodable".to_owned())?;
    match answer {
        Answer { error: Some(e), .. } => Err(format!("jsonrpc-error-{}", e.code)),
        Answer { result: Some(ToolResult { is_error: Some(true) }), .. } => Err("tool-error".to_owned()),
        Answer { result: Some(_), .. } => Ok(()),
        Answer { result: None, .. } => Err("no-answer".to_owned()),
    }
}

/// CPU seconds (user + system) per label, `loadgen` (this process) last.
fn cpu_seconds(pids: &[(String, Vec<u32>)]) -> Vec<(String, f64)> {
    let ticks = |pid: &str| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|f| f.parse().ok()).collect();
        fields.iter().sum::<u64>() as f64 / TICKS_PER_SECOND
    };
    let mut cpu: Vec<(String, f64)> = pids
        .iter()
        .map(|(label, pids)| (label.clone(), pids.iter().map(|pid| ticks(&pid.to_string())).sum()))
        .collect();
    cpu.push(("loadgen".to_owned(), ticks("self")));
    cpu
}

fn rss_kib(pids: &[u32]) -> u64 {
    let rss = |pid: &u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or_default();
        line.split_whitespace().nth(1).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0)
    };
    pids.iter().map(rss).sum()
}

fn line(label: &str, run: &Run, pids: &[(String, Vec<u32>)]) -> String {
    let us = |d: f64| format!("{d:.0}µs");
    let mut text = format!(
        "target={label} calls={} calls/s={:.0} p50={} p90={} p99={} max={} errors={:?}",
        run.calls,
        run.calls as f64 / run.window.as_secs_f64(),
        us(quantile(&run.latencies, 0.50)),
        us(quantile(&run.latencies, 0.90)),
        us(quantile(&run.latencies, 0.99)),
        us(run.latencies.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)),
        run.errors,
    );
    for (label, _) in &run.cpu {
        text.push_str(&format!(" cpu/call[{label}]={}", us(cpu_per_call(run, label))));
    }
    for (label, pids) in pids {
        text.push_str(&format!(" rss[{label}]={}KiB", rss_kib(pids)));
    }
    text
}

fn cpu_per_call(run: &Run, label: &str) -> f64 {
    let seconds = run.cpu.iter().find(|(l, _)| l == label).map_or(0.0, |(_, s)| *s);
    seconds * 1e6 / run.calls.max(1) as f64
}

/// The exact `q` quantile (nearest rank) of sorted latencies, in µs.
fn quantile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e6
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn stage_name(stage: Stage) -> String {
    match stage.think.as_millis() {
        0 => format!("sessions={}", stage.sessions),
        think => format!("sessions={}/think={think}ms", stage.sessions),
    }
}

fn parse_target(text: &str) -> Target {
    let (label, rest) = text.split_once('=').expect("a target is LABEL=URL@TOOL");
    let (urls, tool) = rest.rsplit_once('@').expect("a target is LABEL=URL@TOOL");
    let hosts = urls
        .split(',')
        .map(|url| {
            let rest = url.strip_prefix("http://").expect("an http:// URL");
            let (address, path) = rest.split_once('/').unwrap_or((rest, ""));
            Endpoint { address: address.to_owned(), path: format!("/{path}") }
        })
        .collect();
    Target { label: label.to_owned(), hosts, tool: tool.to_owned() }
}

fn parse_stage(text: &str) -> Stage {
    let (sessions, think) = text.split_once('/').unwrap_or((text, "0"));
    Stage {
        sessions: sessions.parse().expect("a stage is SESSIONS or SESSIONS/THINK_MS"),
        think: Duration::from_millis(think.parse().expect("a stage is SESSIONS or SESSIONS/THINK_MS")),
    }
}

fn parse_pids(text: &str) -> (String, Vec<u32>) {
    let (label, pids) = text.split_once('=').expect("--pid LABEL=PID[,PID…]");
    (label.to_owned(), pids.split(',').map(|p| p.parse().expect("a process id")).collect())
}
