//! The one integration test binary: muster as a real process, in front of in-process rmcp
//! upstreams (`support/mock_upstream.rs`) and real third-party peers (`peers.rs`), driven by
//! real MCP clients (rmcp's, the Python SDK's, and the official conformance suite).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stderr,
    clippy::disallowed_methods,
    unreachable_pub,
    reason = "a test harness fails loudly, prints peer output and builds plain clients"
)]

mod support;

mod abuse;
mod agent_bridge;
mod agent_login;
mod browser;
mod conformance;
mod cors;
mod deploy;
mod desired_state;
mod era;
mod executions;
mod faults;
mod gateway;
mod kubectl_mcp;
mod kubernetes;
mod management;
mod oauth_server;
mod peers;
mod readme;
mod replicas;
mod replicas_tls;
mod shutdown;
mod sso;
mod sso_example;
mod telemetry;
mod tidy;
mod without_sign_in;
mod workflows;
