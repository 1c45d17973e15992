//! A muster without sign-in (no `aggregator.oauth.server`): `muster auth status` shows each
//! server's state and exits 0, `muster auth login` says there is nothing to log in to, and
//! `auth://status` answers with the servers' states, without the sign-in fields.

use std::process::Command;
use std::time::Duration;

use crate::support::client::Client;
use crate::support::{eventually, free_port, http_server, mock_family, run};

const WAIT: Duration = Duration::from_secs(30);

/// `muster ARGS` against `endpoint`, with an empty config folder (no stored token).
async fn muster_cli(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let home = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_muster"));
    command.args(args).env("MUSTER_ENDPOINT", endpoint).env("MUSTER_CONFIG_PATH", home.path()).env("NO_COLOR", "1");
    // The mock upstreams live on this test's runtime: keep it free while the CLI runs.
    tokio::task::spawn_blocking(move || run(&mut command)).await.expect("join")
}

#[actix_web::test]
async fn auth_status_shows_each_servers_state_and_login_says_sign_in_is_off() {
    // Slow retries, so the failed member is seen failed (not mid-retry) when the CLI asks.
    let slow = |port| {
        format!(
            "aggregator:\n  port: {port}\n  toolExposure: direct\n  supervision:\n    initialBackoffMs: 20000\n    maxBackoffMs: 20000\n"
        )
    };
    let (fleet, _upstreams, muster) = mock_family(slow, &["a", "b"]).await;
    // A member nothing listens for: failed, with a retry time.
    let nowhere = format!("http://127.0.0.1:{}/mcp", free_port());
    fleet.write_server("down.yaml", &http_server("down", &nowhere, ""));
    eventually(WAIT, "down to fail", async || (fleet.status("down.yaml")["state"] == "Failed").then_some(())).await;

    let (code, stdout, stderr) = muster_cli(&muster.mcp_url(), &["auth", "status"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("Sign-in:   Not enabled on this muster"), "{stdout}");
    assert!(!stdout.contains("muster auth login"), "nothing to log in to:\n{stdout}");
    let line = |name: &str| {
        stdout.lines().find(|l| l.trim_start().starts_with(&format!("{name} "))).unwrap_or_default().trim().to_owned()
    };
    for member in ["cluster-a-mcp-kubernetes", "cluster-b-mcp-kubernetes"] {
        assert_eq!(line(member), format!("{member}   Connected"), "{stdout}");
    }
    let down = line("down");
    assert!(down.starts_with("down") && down.contains("Failed"), "{stdout}");
    assert!(down.contains("retrying in"), "a failed server says when it is retried:\n{stdout}");

    let (code, stdout, stderr) = muster_cli(&muster.mcp_url(), &["auth", "login", "--no-browser"]).await;
    assert_ne!(code, 0, "{stdout}{stderr}");
    assert!(stderr.contains("Sign-in is not enabled"), "{stderr}");
    assert!(!stderr.contains("404"), "no HTTP status for the user to decode:\n{stderr}");

    // The resource itself, through an MCP client.
    let client = Client::connect(&muster.mcp_url()).await;
    let resources = client.service.peer().list_all_resources().await.expect("resources/list");
    assert!(resources.iter().any(|r| r.uri == "auth://status"), "{resources:?}");
    let read = client
        .service
        .peer()
        .read_resource(rmcp::model::ReadResourceRequestParams::new("auth://status"))
        .await
        .expect("auth://status is served without sign-in");
    let text = match &read.contents[0] {
        rmcp::model::ResourceContents::TextResourceContents { text, .. } => text.clone(),
        other => panic!("not text: {other:?}"),
    };
    let status: serde_json::Value = serde_json::from_str(&text).expect("json");
    let servers = status["servers"].as_array().expect("servers");
    let state = |name: &str| servers.iter().find(|s| s["name"] == name).cloned().unwrap_or_default();
    assert_eq!(state("cluster-a-mcp-kubernetes")["status"], "connected", "{text}");
    assert_eq!(state("cluster-b-mcp-kubernetes")["status"], "connected", "{text}");
    assert_eq!(state("down")["status"], "failed", "{text}");
    assert!(state("down")["error"].is_string(), "{text}");
    assert!(
        servers.iter().all(|s| s.get("token_exchange_enabled").is_none() && s.get("sso_attempt_failed").is_none()),
        "no sign-in fields without sign-in: {text}"
    );
}
