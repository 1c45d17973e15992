//! `muster agent --mcp-server` and `muster standalone`, driven over stdio by the Python SDK's
//! stdio client (`tests/peers/py_stdio_client.py`): forwarding to a muster without sign-in
//! (tools, a family call, `list_changed` from the standalone stream), signing in through the
//! `authenticate_muster` tool against the real central IdP (`sso.rs`'s fleet), and serving a
//! fleet folder in one process.

use std::ffi::OsStr;
use std::io::{BufRead as _, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::sso::{fleet, start_idp, upstream_answered};
use crate::support::mock_upstream::MockUpstream;
use crate::support::{
    Fleet, Muster, Peers, Process, config, eventually, free_port, http_server, mock_family, run, wait_port,
};

const WAIT: Duration = Duration::from_secs(60);

/// The Python stdio client, running `muster ARGS` as its MCP server.
struct StdioClient {
    child: Child,
    stdin: ChildStdin,
    lines: tokio::sync::mpsc::Receiver<String>,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl StdioClient {
    async fn start(peers: &Peers, muster_args: &[&str], env: &[(&str, &OsStr)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("stderr.log");
        let mut child = peers
            .python("py_stdio_client.py")
            .arg(env!("CARGO_BIN_EXE_muster"))
            .args(muster_args)
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start py_stdio_client.py");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = tokio::sync::mpsc::channel(16);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.blocking_send(line).is_err() {
                    return;
                }
            }
        });
        let mut client = Self { child, stdin, lines, log, _dir: dir };
        let ready = client.next().await;
        assert_eq!(ready, json!({"ready": true}), "{}", client.log_text());
        client
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The bridge's log (written by a thread of its own) comes to say `text`.
    async fn wait_for_log(&self, text: &str) {
        eventually(WAIT, text, async || self.log_text().contains(text).then_some(())).await;
    }

    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.recv()).await;
        let Ok(Some(line)) = line else { panic!("no answer from the stdio client:\n{}", self.log_text()) };
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    async fn ask(&mut self, command: Value) -> Value {
        writeln!(self.stdin, "{command}").expect("write command");
        let answer = self.next().await;
        assert!(answer.get("error").is_none(), "{command}: {answer}\n{}", self.log_text());
        answer
    }

    async fn tools(&mut self) -> Vec<String> {
        serde_json::from_value(self.ask(json!({"op": "list"})).await["tools"].clone()).expect("names")
    }

    async fn call(&mut self, tool: &str, args: Value) -> Value {
        self.ask(json!({"op": "call", "tool": tool, "args": args})).await
    }

    async fn wait_for(&mut self, method: &str) {
        let answer = self.ask(json!({"op": "wait", "method": method})).await;
        assert_eq!(answer["notified"], method);
    }
}

impl Drop for StdioClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Without sign-in the bridge only forwards: muster's tools, a family call routed by
/// `management_cluster`, and `list_changed` (from muster's standalone stream) when the fleet grows.
#[actix_web::test]
async fn the_bridge_forwards_tools_calls_and_list_changed_without_sign_in() {
    let peers = Peers::load();
    let (fleet, _upstreams, muster) = mock_family(|port| config(port, "  toolExposure: direct\n"), &["a", "b"]).await;
    let home = tempfile::tempdir().expect("tempdir");
    let endpoint = muster.mcp_url();
    let mut client = StdioClient::start(
        &peers,
        &["agent", "--mcp-server", "--endpoint", &endpoint, "--no-browser"],
        &[("MUSTER_CONFIG_PATH", home.path().as_os_str())],
    )
    .await;

    let tools = client.tools().await;
    assert!(tools.contains(&"x_kubernetes_whoami".to_owned()), "{tools:?}");
    assert!(!tools.contains(&"authenticate_muster".to_owned()), "no sign-in, no sign-in tool: {tools:?}");
    let b = client.call("x_kubernetes_whoami", json!({"management_cluster": "cluster-b"})).await;
    assert_eq!(b["text"], "b", "{b}");
    let echo = client.call("x_kubernetes_echo", json!({"management_cluster": "cluster-a", "text": "hi"})).await;
    assert_eq!(echo["text"], "a:hi", "{echo}");
    // A muster error reaches the agent as muster sent it.
    let missing = client.call("x_kubernetes_whoami", json!({})).await;
    assert_eq!(missing["isError"], true, "{missing}");

    let extra = MockUpstream::start("extra", free_port()).await;
    fleet.write_server("extra.yaml", &http_server("extra", &extra.url(), ""));
    client.wait_for("notifications/tools/list_changed").await;
    let tools = client.tools().await;
    assert!(tools.contains(&"x_extra_whoami".to_owned()), "{tools:?}");
    let whoami = client.call("x_extra_whoami", json!({})).await;
    assert_eq!(whoami["text"], "extra", "{whoami}");

    // muster restarts and forgets the session: the bridge's standalone stream finds it gone, and
    // the bridge opens a new one (replaying the agent's initialize) and listens there, before the
    // agent says anything.
    let port = muster.port;
    drop(muster);
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    fleet.remove_server("extra.yaml");
    // Until the list no longer has it: the new muster may announce its members connecting too.
    loop {
        client.wait_for("notifications/tools/list_changed").await;
        if !client.tools().await.contains(&"x_extra_whoami".to_owned()) {
            break;
        }
    }
    client.wait_for_log("opening a new one").await;
    let again = client.call("x_kubernetes_whoami", json!({"management_cluster": "cluster-a"})).await;
    assert_eq!(again["text"], "a", "{again}");
    drop(client);
    drop(muster);
}

/// With sign-in the bridge offers only `authenticate_muster`; its URL leads through the central
/// IdP (headless, as `sso.rs` does for `auth login`) back to the bridge's loopback callback, and
/// then the agent is told the tools changed, sees muster's, and reaches a cluster whose server
/// accepts only that cluster's exchanged token.
#[actix_web::test]
async fn the_bridge_signs_in_through_authenticate_muster_and_then_forwards() {
    let peers = Peers::load();
    let (_central, central) = start_idp(&peers, &["central", &free_port().to_string()], &[]).await;
    let (_fleet, _clusters, _probes, muster) = fleet(&peers, &central, None, &[]).await;
    let home = tempfile::tempdir().expect("tempdir");
    let endpoint = muster.mcp_url();
    // A stored token muster refuses (revoked, or signed by a key it no longer trusts): the bridge
    // forwards with it, gets 401, and falls back to the sign-in tool.
    write_token(home.path(), &endpoint, "not-a-token-muster-accepts");
    let mut client = StdioClient::start(
        &peers,
        &["agent", "--mcp-server", "--endpoint", &endpoint, "--no-browser"],
        &[("MUSTER_CONFIG_PATH", home.path().as_os_str())],
    )
    .await;

    assert_eq!(client.tools().await, ["authenticate_muster"]);
    client.wait_for_log("refused the sign-in").await;
    let refused = client.call("x_kubernetes_configuration_view", json!({"management_cluster": "cluster-a"})).await;
    assert_eq!(refused["isError"], true, "{refused}");
    let started = client.call("authenticate_muster", json!({})).await;
    assert_eq!(started["isError"], false, "{started}");
    let text = started["text"].as_str().expect("text");
    let url = text.split_whitespace().find(|w| w.starts_with("http")).expect("a URL").to_owned();
    assert!(url.starts_with(&central), "the central IdP's authorize URL: {url}");
    // Asking again while the sign-in waits gives the same URL, not a second listener.
    let again = client.call("authenticate_muster", json!({})).await;
    assert!(again["text"].as_str().expect("text").contains(&url), "{again}");

    browse(&central, "alice", &url).await;
    client.wait_for("notifications/tools/list_changed").await;
    let tools = client.tools().await;
    assert!(tools.contains(&"x_kubernetes_configuration_view".to_owned()), "{tools:?}");
    assert!(!tools.contains(&"authenticate_muster".to_owned()), "{tools:?}");
    let view = client.call("x_kubernetes_configuration_view", json!({"management_cluster": "cluster-a"})).await;
    assert!(upstream_answered(&view), "{view}");
    let probe = client.call("x_probe_bearer", json!({})).await;
    assert!(probe["text"].as_str().is_some_and(|t| t.starts_with("alice ")), "{probe}");

    // The token is stored where `muster auth` finds it, privately.
    let tokens: Vec<_> = std::fs::read_dir(home.path().join("tokens")).expect("tokens").flatten().collect();
    assert_eq!(tokens.len(), 1);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(tokens[0].metadata().expect("meta").permissions().mode() & 0o777, 0o600);
    drop(client);
    drop(muster);
}

/// The bridge in front of muster's own authorization server: `authenticate_muster`'s URL is
/// muster's `/oauth/authorize`, the browser goes on to the central IdP and back through muster's
/// callback to the bridge's loopback, and the bridge then reaches a cluster with the exchanged token.
#[actix_web::test]
async fn the_bridge_signs_in_at_musters_own_authorization_server() {
    let peers = Peers::load();
    let setup = crate::oauth_server::setup(&peers, 1, &[], &[]).await;
    let home = tempfile::tempdir().expect("tempdir");
    let endpoint = setup.muster.mcp_url();
    let mut client = StdioClient::start(
        &peers,
        &["agent", "--mcp-server", "--endpoint", &endpoint, "--no-browser"],
        &[("MUSTER_CONFIG_PATH", home.path().as_os_str())],
    )
    .await;
    assert_eq!(client.tools().await, ["authenticate_muster"]);
    let started = client.call("authenticate_muster", json!({})).await;
    let text = started["text"].as_str().expect("text");
    let url = text.split_whitespace().find(|w| w.starts_with("http")).expect("a URL").to_owned();
    assert!(url.starts_with(&setup.muster.url("/oauth/authorize?")), "muster's own authorize URL: {url}");
    browse(&setup.central, "alice", &url).await;
    client.wait_for("notifications/tools/list_changed").await;
    let view = client.call("x_kubernetes_configuration_view", json!({"management_cluster": "cluster-a"})).await;
    assert!(upstream_answered(&view), "{view}");
    drop(client);
}

/// A server-to-client request crosses the bridge both ways: the conformance fixture's
/// `test_sampling` asks for a completion during the call, muster relays it on the call's reply,
/// the bridge writes it to stdout, and the agent's answer (a line on stdin) goes back to muster.
#[actix_web::test]
async fn sampling_requests_cross_the_bridge_and_their_answers_come_back() {
    let peers = Peers::load();
    let fixture_port = free_port();
    let _fixture = Process::spawn(
        peers.python("conformance_fixture.py").args([&fixture_port.to_string(), "--quiet"]),
        "the conformance fixture",
    );
    wait_port(fixture_port).await;
    let port = free_port();
    let fleet = Fleet::new(&config(port, "  toolExposure: direct\n"));
    fleet.write_server("fixture.yaml", &http_server("fixture", &format!("http://127.0.0.1:{fixture_port}/mcp"), ""));
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    let home = tempfile::tempdir().expect("tempdir");
    let endpoint = muster.mcp_url();
    let mut client = StdioClient::start(
        &peers,
        &["agent", "--mcp-server", "--endpoint", &endpoint, "--no-browser"],
        &[("MUSTER_CONFIG_PATH", home.path().as_os_str())],
    )
    .await;
    let sampled = client.call("x_fixture_test_sampling", json!({"prompt": "which cluster?"})).await;
    assert_eq!(sampled["text"], "LLM response: sampled: which cluster?", "{sampled}");
    drop(client);
    drop(muster);
}

/// The headless browser stand-in signs `user` in at `central` for `url`, landing on the bridge's callback.
async fn browse(central: &str, user: &str, url: &str) {
    let peers = Peers::load();
    let mut browser = Command::new(format!("{}/node", peers.get("MUSTER_NODE22")));
    browser
        .arg(Peers::repo_file("tests/peers/idp_login.mjs"))
        .args([central, user, "--follow-url", url])
        .env("MUSTER_NODE_MODULES", peers.get("MUSTER_NODE_MODULES"));
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || run(&mut browser)).await.expect("join");
    assert_eq!(code, 0, "browser stand-in: {stdout} {stderr}");
}

/// Starts the bridge's sign-in and completes it in the stand-in browser; returns once the agent
/// was told the tools changed.
async fn sign_in(client: &mut StdioClient, central: &str, user: &str) {
    let started = client.call("authenticate_muster", json!({})).await;
    let text = started["text"].as_str().expect("text");
    let url = text.split_whitespace().find(|w| w.starts_with("http")).expect("a URL").to_owned();
    browse(central, user, &url).await;
    client.wait_for("notifications/tools/list_changed").await;
}

/// Stores `bearer` for `endpoint` as `muster auth login` would (valid for an hour, no refresh).
fn write_token(home: &std::path::Path, endpoint: &str, bearer: &str) {
    use sha2::Digest as _;
    let dir = home.join("tokens");
    std::fs::create_dir_all(&dir).expect("tokens dir");
    let name = hex::encode(&sha2::Sha256::digest(endpoint.as_bytes())[..16]);
    let expires_at =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 3600;
    let stored = json!({"endpoint": endpoint, "issuer": "x", "id_token": bearer, "expires_at": expires_at});
    std::fs::write(dir.join(format!("{name}.json")), stored.to_string()).expect("token file");
}

fn stored_bearer(home: &std::path::Path) -> Option<String> {
    let file = std::fs::read_dir(home.join("tokens")).ok()?.flatten().next()?;
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(file.path()).ok()?).ok()?;
    stored["id_token"].as_str().map(str::to_owned)
}

/// A short-lived ID token (16 s here; the rule is five minutes before expiry, or halfway for
/// shorter lives) is refreshed by the bridge with the refresh token, and calls keep working on
/// the same session with the new token.
#[actix_web::test]
async fn the_bridge_refreshes_the_sign_in_before_it_expires() {
    let peers = Peers::load();
    let (_central, central) =
        start_idp(&peers, &["central", &free_port().to_string()], &[("ID_TOKEN_TTL", "16")]).await;
    let (_fleet, _clusters, _probes, muster) = fleet(&peers, &central, None, &[]).await;
    let home = tempfile::tempdir().expect("tempdir");
    let endpoint = muster.mcp_url();
    let mut client = StdioClient::start(
        &peers,
        &["agent", "--mcp-server", "--endpoint", &endpoint, "--no-browser"],
        &[("MUSTER_CONFIG_PATH", home.path().as_os_str())],
    )
    .await;
    sign_in(&mut client, &central, "alice").await;
    let first = stored_bearer(home.path()).expect("a stored token");
    eventually(WAIT, "the refreshed token", async || stored_bearer(home.path()).filter(|t| *t != first)).await;
    let probe = client.call("x_probe_bearer", json!({})).await;
    assert!(probe["text"].as_str().is_some_and(|t| t.starts_with("alice ")), "{probe}");
    let log = client.log_text();
    assert!(!log.contains("opening a new one") && !log.contains("refused the sign-in"), "{log}");
    drop(client);
    drop(muster);
}

/// `muster standalone` serves a fleet folder and answers over stdio, and writes nothing but
/// JSON-RPC to stdout (the client would fail on anything else).
#[actix_web::test]
async fn standalone_serves_a_fleet_folder_over_stdio() {
    let peers = Peers::load();
    let port = free_port();
    let fleet = Fleet::new(&config(port, "  toolExposure: direct\n"));
    let upstream = MockUpstream::start("solo", free_port()).await;
    fleet.write_server("solo.yaml", &http_server("solo", &upstream.url(), ""));
    let mut client = StdioClient::start(
        &peers,
        &["standalone", "--config-path", fleet.dir.path().to_str().expect("utf-8"), "--no-browser"],
        &[("RUST_LOG", OsStr::new("debug"))],
    )
    .await;
    // The folder's server may connect after the first list: wait for it through the catalog.
    let mut tools = client.tools().await;
    if !tools.contains(&"x_solo_whoami".to_owned()) {
        client.wait_for("notifications/tools/list_changed").await;
        tools = client.tools().await;
    }
    assert!(tools.contains(&"x_solo_whoami".to_owned()), "{tools:?}");
    let whoami = client.call("x_solo_whoami", json!({})).await;
    assert_eq!(whoami["text"], "solo", "{whoami}");
    assert!(!client.log_text().contains("DEBUG"), "serve's logging is silenced:\n{}", client.log_text());
}
