//! Traces and metrics, checked end to end: muster and a real kubernetes-mcp-server both export
//! spans over OTLP to a real receiver (`tests/peers/otlp_sink.py`, on the official OTLP protos),
//! and the upstream's spans land in the same trace as muster's; `/metrics` counts real tools.

use std::time::Duration;

use serde_json::Value;

use crate::support::client::{Client, text};
use crate::support::mock_upstream::MockUpstream;
use crate::support::{Fleet, Muster, Peers, Process, config, eventually, family, free_port, http_server, wait_port};

const WAIT: Duration = Duration::from_secs(40);

#[actix_web::test]
async fn one_trace_spans_the_gateway_and_the_upstream() {
    let peers = Peers::load();
    let sink_port = free_port();
    let _sink =
        Process::spawn(peers.python("otlp_sink.py").args([sink_port.to_string(), "0".to_owned()]), "the OTLP sink");
    wait_port(sink_port).await;
    let endpoint = format!("http://127.0.0.1:{sink_port}");
    let k8s_port = free_port();
    let _k8s = Process::spawn(
        peers
            .kubernetes_mcp_server(k8s_port)
            .arg("--config")
            .arg(Peers::repo_file("tests/peers/k8s-mcp-telemetry.toml"))
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        "kubernetes-mcp-server",
    );
    wait_port(k8s_port).await;
    let port = free_port();
    let fleet = Fleet::new(&config(port, "  toolExposure: direct\n"));
    fleet.write_server(
        "cluster-a-mcp-kubernetes.yaml",
        &http_server(
            "cluster-a-mcp-kubernetes",
            &format!("http://127.0.0.1:{k8s_port}/mcp"),
            &family("kubernetes", "management_cluster"),
        ),
    );
    let muster = Muster::start_with_env(
        &fleet,
        port,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_ref()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".as_ref()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200".as_ref()),
        ],
    )
    .await;
    muster.wait_ready().await;

    // The agent starts the trace (W3C traceparent on its request).
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("traceparent: 00-{trace_id}-00f067aa0ba902b7-01");
    let view = peers.py_client(
        &muster.mcp_url(),
        &[
            "call",
            "x_kubernetes_configuration_view",
            r#"{"management_cluster": "cluster-a"}"#,
            "--header",
            &traceparent,
        ],
    );
    assert_eq!(view["isError"], false, "{view}");

    let http = reqwest::Client::new();
    let spans = eventually(WAIT, "gateway and upstream spans in one trace", async || {
        let spans: Vec<Value> = http.get(format!("{endpoint}/spans")).send().await.ok()?.json().await.ok()?;
        let in_trace: Vec<Value> = spans.into_iter().filter(|s| s["trace_id"] == trace_id).collect();
        let upstream_call = in_trace.iter().find(|s| s["service"] == "muster" && s["name"] == "mcp.upstream_call")?;
        // kubernetes-mcp-server's HTTP server span for our request, a child of muster's upstream call.
        let joined =
            in_trace.iter().any(|s| s["service"] != "muster" && s["parent_span_id"] == upstream_call["span_id"]);
        joined.then_some(in_trace)
    })
    .await;
    let call = spans.iter().find(|s| s["name"] == "mcp.tool_call").expect("tool call span");
    assert_eq!(call["attributes"]["mcp.method.name"], "tools/call");
    assert_eq!(call["attributes"]["gen_ai.tool.name"], "configuration_view");
    assert_eq!(call["attributes"]["mcp.server"], "cluster-a-mcp-kubernetes");
    assert_eq!(call["parent_span_id"], "00f067aa0ba902b7", "a child of the agent's span");
    let upstream_call = spans.iter().find(|s| s["name"] == "mcp.upstream_call").expect("upstream call span");
    assert_eq!(upstream_call["parent_span_id"], call["span_id"]);
    let upstream = spans.iter().find(|s| s["service"] != "muster").expect("upstream span");
    assert_eq!(upstream["service"], "kubernetes-mcp-server", "{upstream}");
}

#[actix_web::test]
async fn metrics_count_real_tools_sessions_and_connections() {
    let port = free_port();
    let fleet = Fleet::new(&config(port, "  toolExposure: meta\n"));
    let upstream = MockUpstream::start("a", free_port()).await;
    fleet.write_server(
        "cluster-a-mcp-kubernetes.yaml",
        &http_server("cluster-a-mcp-kubernetes", &upstream.url(), &family("kubernetes", "management_cluster")),
    );
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    let client = Client::connect(&muster.mcp_url()).await;
    for _ in 0..3 {
        let r = client
            .call("call_tool", serde_json::json!({"name": "x_kubernetes_echo", "arguments": {"management_cluster": "cluster-a", "text": "x"}}))
            .await;
        assert!(text(&r).contains("a:x"));
    }
    let _ = client.call("x_kubernetes_echo", serde_json::json!({"management_cluster": "nope"})).await;
    let body = reqwest::get(muster.url("/metrics")).await.expect("metrics").text().await.expect("text");
    let value = |needle: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {needle} in:\n{body}"))
    };
    // Per real tool (not per meta-tool: Muster's documented gap).
    assert_eq!(value(r#"muster_tool_calls_total{tool="echo",server="cluster-a-mcp-kubernetes",outcome="ok"}"#), 3.0);
    assert_eq!(
        value(r#"muster_tool_call_duration_seconds_count{tool="echo",server="cluster-a-mcp-kubernetes",outcome="ok"}"#),
        3.0
    );
    assert_eq!(value(r#"muster_backend_state{server="cluster-a-mcp-kubernetes",state="Connected"}"#), 1.0);
    assert!(value("muster_agent_sessions") >= 1.0);
    assert_eq!(value(r#"muster_upstream_sessions{server="cluster-a-mcp-kubernetes"}"#), 1.0);
    let connections = value(r#"muster_upstream_connections{server="cluster-a-mcp-kubernetes"}"#);
    assert!((1.0..=8.0).contains(&connections), "bounded pool: {connections}");
    // One structured log line per call.
    let log = muster.log_text();
    assert!(
        log.lines().any(|l| l.contains("tool call") && l.contains("tool=echo") && l.contains("outcome=\"ok\"")
            || l.contains("tool call") && l.contains("tool=echo") && l.contains("outcome=ok")),
        "{log}"
    );
}
