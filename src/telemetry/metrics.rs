//! Every metric muster exports, in one place, and the Prometheus exposition at `/metrics`.
//!
//! Counters and histograms are recorded where things happen (the call path, the exchanger);
//! gauges (backend states, sessions, connections) are set at scrape time by `/metrics`
//! (`frontend.rs`) from the router's snapshot, so they are never stale.

use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Tool calls per real tool and server. Labels: `tool`, `server`, `outcome` (`ok`, `error` for a
/// result with `isError`, `failed` when muster could not get a result).
pub const TOOL_CALLS: &str = "muster_tool_calls_total";
/// Duration of a tool call in seconds. Labels: `tool`, `server`, `outcome`.
pub const TOOL_CALL_DURATION: &str = "muster_tool_call_duration_seconds";
/// RFC 8693 exchanges. Labels: `cluster`, `outcome` (`ok`, `failed`).
pub const TOKEN_EXCHANGES: &str = "muster_token_exchanges_total";
/// Exchanged-token cache hits. Labels: `cluster`.
pub const TOKEN_CACHE_HITS: &str = "muster_token_exchange_cache_hits_total";
/// Requests to muster's authorization server. Labels: `endpoint` (`authorize`, `callback`,
/// `token`, `register`, `revoke`), `outcome` (`ok`, an OAuth error code, `redirected_error`,
/// `page` for a refusal shown to a person, `rate_limited`).
pub const OAUTH_REQUESTS: &str = "muster_oauth_requests_total";
/// 1 for each server's current state. Labels: `server`, `state`.
pub const BACKEND_STATE: &str = "muster_backend_state";
/// Agent sessions open at muster's `/mcp`.
pub const AGENT_SESSIONS: &str = "muster_agent_sessions";
/// HTTP connections open at muster's listener (agents, probes, scrapers).
pub const AGENT_CONNECTIONS: &str = "muster_agent_connections";
/// Upstream MCP sessions (shared plus per-user). Labels: `server`.
pub const UPSTREAM_SESSIONS: &str = "muster_upstream_sessions";
/// Established TCP connections to each HTTP upstream. Labels: `server`.
pub const UPSTREAM_CONNECTIONS: &str = "muster_upstream_connections";
/// Files of `mcpservers/` (or the folder itself) that could not be read at the last read; what
/// they held before is kept.
pub const UNREADABLE_SOURCES: &str = "muster_desired_state_unreadable";
/// 1 while the shared store (Valkey) answers, 0 from a failed operation until one succeeds.
pub const STORE_UP: &str = "muster_store_up";

const DURATION_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Installs the process-wide recorder (once); later calls return the same handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(TOOL_CALL_DURATION.to_owned()),
                    DURATION_BUCKETS,
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Folds recorded histogram samples into their buckets every few seconds. The exporter keeps every
/// sample until then (its own listener would do this; muster serves `/metrics` itself), so without
/// it memory grows with every call (seen in the soak test as ~26 bytes per call).
pub async fn upkeep(handle: PrometheusHandle) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        ticker.tick().await;
        handle.run_upkeep();
    }
}

pub fn tool_call(tool: &str, server: &str, outcome: &'static str, elapsed: Duration) {
    let labels = [("tool", tool.to_owned()), ("server", server.to_owned()), ("outcome", outcome.to_owned())];
    metrics::counter!(TOOL_CALLS, &labels).increment(1);
    metrics::histogram!(TOOL_CALL_DURATION, &labels).record(elapsed.as_secs_f64());
}

pub fn token_exchange(cluster: &str, ok: bool) {
    let outcome = if ok { "ok" } else { "failed" };
    metrics::counter!(TOKEN_EXCHANGES, "cluster" => cluster.to_owned(), "outcome" => outcome).increment(1);
}

pub fn oauth_request(endpoint: &'static str, outcome: &'static str) {
    metrics::counter!(OAUTH_REQUESTS, "endpoint" => endpoint, "outcome" => outcome).increment(1);
}

pub fn token_cache_hit(cluster: &str) {
    metrics::counter!(TOKEN_CACHE_HITS, "cluster" => cluster.to_owned()).increment(1);
}
