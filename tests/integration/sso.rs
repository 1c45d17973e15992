//! One login for the whole fleet, against real identity providers: `oidc-provider` as the central
//! IdP, a Dex-compatible token-exchange IdP per cluster (`tests/peers/idp.mjs`), and
//! kubernetes-mcp-server with `require_oauth` validating each exchanged token's issuer and audience.

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::mock_upstream::MockUpstream;
use crate::support::{
    Fleet, Muster, Peers, PendingLogin, Process, config, family, free_port, http_server, post_rpc, run, wait_port,
};

pub(crate) const WAIT: Duration = Duration::from_secs(30);
pub(crate) const CONNECTOR: &str = "central-dex";
pub(crate) const EXCHANGE_CLIENT: &str = "muster-exchange";
pub(crate) const EXCHANGE_SECRET: &str = "exchange-secret";
const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

/// Starts `node idp.mjs ARGS` and waits for its `ready <issuer>` line.
pub(crate) async fn start_idp(peers: &Peers, args: &[&str], env: &[(&str, &str)]) -> (Process, String) {
    let mut child = Command::new(format!("{}/node", peers.get("MUSTER_NODE22")))
        .arg(Peers::repo_file("tests/peers/idp.mjs"))
        .args(args)
        .envs(env.iter().copied())
        .env("MUSTER_NODE_MODULES", peers.get("MUSTER_NODE_MODULES"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start idp.mjs");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::time::timeout(
        WAIT,
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            line
        }),
    )
    .await
    .expect("idp ready in time")
    .expect("join");
    let issuer =
        line.trim().strip_prefix("ready ").unwrap_or_else(|| panic!("unexpected idp output {line:?}")).to_owned();
    (Process(child), issuer)
}

/// Signs `user` in at the central IdP (authorization code + PKCE through its login forms).
pub(crate) fn login(peers: &Peers, central: &str, user: &str) -> String {
    let (code, stdout, stderr) = run(Command::new(format!("{}/node", peers.get("MUSTER_NODE22")))
        .arg(Peers::repo_file("tests/peers/idp_login.mjs"))
        .args([central, user])
        .env("MUSTER_NODE_MODULES", peers.get("MUSTER_NODE_MODULES")));
    assert_eq!(code, 0, "login failed: {stdout} {stderr}");
    let tokens: Value = serde_json::from_str(stdout.trim()).expect("login JSON");
    tokens["id_token"].as_str().expect("id_token").to_owned()
}

pub(crate) fn py_client(peers: &Peers, url: &str, token: &str, args: &[&str]) -> Value {
    let bearer = format!("Authorization: Bearer {token}");
    let mut args = args.to_vec();
    args.extend(["--header", bearer.as_str()]);
    peers.py_client(url, &args)
}

pub(crate) fn call(peers: &Peers, url: &str, token: &str, tool: &str, args: Value) -> Value {
    py_client(peers, url, token, &["call", tool, &args.to_string()])
}

/// The upstream itself answered (it accepted the token): no muster error code. With
/// `require_oauth`, kubernetes-mcp-server then reports that the fake kubeconfig has no such user,
/// which is a tool error of its own, after authentication.
pub(crate) fn upstream_answered(result: &Value) -> bool {
    result["structured"].get("code").is_none() && result["text"].as_str().is_some_and(|t| !t.is_empty())
}

pub(crate) async fn stats(issuer: &str) -> Value {
    reqwest::get(format!("{issuer}/test/stats")).await.expect("stats").json().await.expect("stats json")
}

pub(crate) struct Cluster {
    pub(crate) name: String,
    pub(crate) idp: Process,
    pub(crate) issuer: String,
    _k8s: Process,
}

/// A cluster: its IdP, and its kubernetes-mcp-server accepting only tokens of that IdP with `audience`.
pub(crate) async fn cluster(
    peers: &Peers,
    dir: &std::path::Path,
    name: &str,
    central: &str,
    audience: Option<&str>,
) -> (Cluster, u16) {
    cluster_with(peers, dir, name, central, audience, &[]).await
}

/// `cluster`, with more arguments for its `idp.mjs` (`--ttl S`).
pub(crate) async fn cluster_with(
    peers: &Peers,
    dir: &std::path::Path,
    name: &str,
    central: &str,
    audience: Option<&str>,
    idp_args: &[&str],
) -> (Cluster, u16) {
    let port = free_port().to_string();
    let client = format!("{EXCHANGE_CLIENT}:{EXCHANGE_SECRET}");
    let mut args = vec!["cluster", &port, "--trust", central, "--connector", CONNECTOR, "--client", &client];
    if let Some(audience) = audience {
        args.extend(["--audience", audience]);
    }
    args.extend(idp_args);
    let (idp, issuer) = start_idp(peers, &args, &[]).await;
    let k8s_port = free_port();
    let toml = dir.join(format!("{name}-k8s.toml"));
    std::fs::write(
        &toml,
        format!(
            "require_oauth = true\nauthorization_url = \"{issuer}\"\noauth_audience = \"{}\"\n",
            audience.unwrap_or(EXCHANGE_CLIENT)
        ),
    )
    .expect("toml");
    let k8s = Process::spawn(peers.kubernetes_mcp_server(k8s_port).arg("--config").arg(&toml), "kubernetes-mcp-server");
    wait_port(k8s_port).await;
    (Cluster { name: name.to_owned(), idp, issuer, _k8s: k8s }, k8s_port)
}

pub(crate) fn exchange_auth(issuer: &str, secret_name: &str, audiences: &[&str]) -> String {
    let audiences = if audiences.is_empty() {
        String::new()
    } else {
        format!("    requiredAudiences: {}\n", serde_json::to_string(audiences).expect("json"))
    };
    format!(
        "  auth:\n    type: oauth\n{audiences}    tokenExchange:\n      enabled: true\n      dexTokenEndpoint: \"{issuer}/token\"\n      connectorId: \"{CONNECTOR}\"\n      clientCredentialsSecretRef:\n        name: {secret_name}\n"
    )
}

pub(crate) fn write_secret(fleet: &Fleet, name: &str, secret: &str) {
    let dir = fleet.dir.path().join("secrets");
    std::fs::create_dir_all(&dir).expect("secrets dir");
    std::fs::write(
        dir.join(format!("{name}.yaml")),
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: muster\nstringData:\n  client-id: {EXCHANGE_CLIENT}\n  client-secret: {secret}\n"),
    )
    .expect("secret");
}

fn sso_config(port: u16, central: &str) -> String {
    config(
        port,
        &format!(
            "  toolExposure: direct\n  oauth:\n    server:\n      enabled: true\n      baseUrl: http://127.0.0.1:{port}\n      dex:\n        issuerUrl: {central}\n        clientId: muster\n"
        ),
    )
}

/// An extra in-process upstream: its name, and its `spec.auth` YAML given cluster-a's issuer.
pub type ExtraServer<'a> = (&'a str, &'a dyn Fn(&str) -> String);

/// The fleet: three clusters in the `kubernetes` family (cluster-c also demands an audience),
/// plus an in-process upstream behind cluster-a's IdP that reports whose token it received.
/// `extra`: more in-process upstreams, as (server name, `spec.auth` YAML from cluster-a's issuer).
pub async fn fleet(
    peers: &Peers,
    central: &str,
    wrong_secret_for: Option<&str>,
    extra: &[ExtraServer<'_>],
) -> (Fleet, Vec<Cluster>, Vec<MockUpstream>, Muster) {
    let port = free_port();
    let fleet = Fleet::new(&sso_config(port, central));
    let mut clusters = Vec::new();
    for (name, audience) in [("cluster-a", None), ("cluster-b", None), ("cluster-c", Some("cluster-c-k8s"))] {
        let (cluster, k8s_port) = cluster(peers, fleet.dir.path(), name, central, audience).await;
        let secret_name = format!("{name}-token-exchange-credentials");
        let secret = if wrong_secret_for == Some(name) { "not-the-secret" } else { EXCHANGE_SECRET };
        write_secret(&fleet, &secret_name, secret);
        let server = format!("{name}-mcp-kubernetes");
        let audiences: Vec<&str> = audience.into_iter().collect();
        fleet.write_server(
            &format!("{server}.yaml"),
            &format!(
                "{}{}",
                http_server(
                    &server,
                    &format!("http://127.0.0.1:{k8s_port}/mcp"),
                    &family("kubernetes", "management_cluster")
                ),
                exchange_auth(&cluster.issuer, &secret_name, &audiences)
            ),
        );
        clusters.push(cluster);
    }
    let probe = MockUpstream::start("probe", free_port()).await;
    fleet.write_server(
        "probe.yaml",
        &format!(
            "{}{}",
            http_server("probe", &probe.url(), ""),
            exchange_auth(&clusters[0].issuer, "cluster-a-token-exchange-credentials", &[])
        ),
    );
    let mut probes = vec![probe];
    for (name, auth) in extra {
        let upstream = MockUpstream::start(name, free_port()).await;
        fleet.write_server(
            &format!("{name}.yaml"),
            &format!("{}{}", http_server(name, &upstream.url(), ""), auth(&clusters[0].issuer)),
        );
        probes.push(upstream);
    }
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    (fleet, clusters, probes, muster)
}

#[actix_web::test]
async fn one_login_reaches_every_cluster_with_one_exchange_per_user_and_cluster() {
    let peers = Peers::load();
    // An enterprise user with many group claims: a bearer token of about 50 KiB.
    let groups: Vec<String> = (0..1500).map(|i| format!("team-platform-group-{i:05}")).collect();
    let big_user = format!("bigcorp={}", groups.join(","));
    let (_central, central) =
        start_idp(&peers, &["central", &free_port().to_string(), "--user-groups", &big_user], &[]).await;
    let (fleet, clusters, _probes, muster) = fleet(&peers, &central, None, &[]).await;
    let url = muster.mcp_url();

    // Without a token: 401 with RFC 9728 metadata.
    let http = reqwest::Client::new();
    let anonymous = post_rpc(&http, &url, None, PING).send().await.expect("send");
    assert_eq!(anonymous.status(), 401);
    let challenge = anonymous.headers()["www-authenticate"].to_str().expect("ascii").to_owned();
    assert!(
        challenge.contains(&format!("resource_metadata=\"{}", muster.url("/.well-known/oauth-protected-resource/mcp"))),
        "{challenge}"
    );
    let metadata: Value = http
        .get(muster.url("/.well-known/oauth-protected-resource/mcp"))
        .send()
        .await
        .expect("prm")
        .json()
        .await
        .expect("json");
    assert_eq!(metadata["authorization_servers"], json!([central]));
    assert_eq!(metadata["resource"], muster.url("/mcp"));

    let alice = login(&peers, &central, "alice");
    let names: Vec<String> = serde_json::from_value(py_client(&peers, &url, &alice, &["list"])).expect("names");
    assert!(names.contains(&"x_kubernetes_configuration_view".to_owned()), "{names:?}");

    // Every upstream accepts alice's token for its own cluster, many times over.
    for round in 0..4 {
        for cluster in &clusters {
            let view = call(
                &peers,
                &url,
                &alice,
                "x_kubernetes_configuration_view",
                json!({"management_cluster": cluster.name}),
            );
            assert!(upstream_answered(&view), "round {round}, {}: {view}", cluster.name);
        }
    }
    // ...with exactly one exchange per (user, cluster).
    for cluster in &clusters {
        let stats = stats(&cluster.issuer).await;
        assert_eq!(stats["by_sub"]["alice"], 1, "{}: {stats}", cluster.name);
    }

    // Two users at once: each upstream call carries its own user's token, exchanged at cluster-a.
    let bob = login(&peers, &central, "bob");
    let (a_url, b_url, a_tok, b_tok) = (url.clone(), url.clone(), alice.clone(), bob.clone());
    let peers_a = Peers::load();
    let peers_b = Peers::load();
    let alice_calls = tokio::task::spawn_blocking(move || {
        (0..6)
            .map(|_| {
                call(&peers_a, &a_url, &a_tok, "x_probe_bearer", json!({}))["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect::<Vec<_>>()
    });
    let bob_calls = tokio::task::spawn_blocking(move || {
        (0..6)
            .map(|_| {
                call(&peers_b, &b_url, &b_tok, "x_probe_bearer", json!({}))["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect::<Vec<_>>()
    });
    let (alice_seen, bob_seen) = (alice_calls.await.expect("join"), bob_calls.await.expect("join"));
    let a_issuer = &clusters[0].issuer;
    assert!(alice_seen.iter().all(|s| *s == format!("alice {a_issuer}")), "{alice_seen:?}");
    assert!(bob_seen.iter().all(|s| *s == format!("bob {a_issuer}")), "{bob_seen:?}");
    // cluster-a exchanged once for alice (shared by the kubernetes server and the probe) and once for bob.
    let a_stats = stats(a_issuer).await;
    assert_eq!(
        (a_stats["by_sub"]["alice"].clone(), a_stats["by_sub"]["bob"].clone()),
        (json!(1), json!(1)),
        "{a_stats}"
    );

    // A new user whose first calls arrive all at once: still exactly one exchange per cluster.
    let carol = login(&peers, &central, "carol");
    let first_calls: Vec<_> = (0..6)
        .map(|_| {
            let (peers, url, carol) = (Peers::load(), url.clone(), carol.clone());
            tokio::task::spawn_blocking(move || {
                call(
                    &peers,
                    &url,
                    &carol,
                    "x_kubernetes_configuration_view",
                    json!({"management_cluster": "cluster-b"}),
                )
            })
        })
        .collect();
    for first in first_calls {
        let view = first.await.expect("join");
        assert!(upstream_answered(&view), "{view}");
    }
    for cluster in &clusters {
        assert_eq!(stats(&cluster.issuer).await["by_sub"]["carol"], 1, "{}", cluster.name);
    }

    // An MCP session belongs to the user who opened it.
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
    let opened = post_rpc(&http, &url, Some(&alice), init).send().await.expect("initialize");
    let session = opened.headers()["mcp-session-id"].to_str().expect("ascii").to_owned();
    let hijack = post_rpc(&http, &url, Some(&bob), r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#)
        .header("mcp-session-id", &session)
        .send()
        .await
        .expect("send");
    assert_eq!(hijack.status(), 403, "another user's session");

    // Large tokens pass (the seed's ingress note): signed in, exchanged, accepted upstream.
    let big = login(&peers, &central, "bigcorp");
    assert!(big.len() > 40 * 1024, "the test token is large: {} bytes", big.len());
    let view = call(&peers, &url, &big, "x_kubernetes_configuration_view", json!({"management_cluster": "cluster-a"}));
    assert!(upstream_answered(&view), "{view}");

    // auth://status, for people and agents.
    let status = py_client(&peers, &url, &alice, &["read", "auth://status"]);
    let text = status["contents"][0]["text"].as_str().expect("text");
    let status: Value = serde_json::from_str(text).expect("status json");
    let servers = status["servers"].as_array().expect("servers");
    assert!(servers.iter().all(|s| s["status"] == "connected" && s["token_exchange_enabled"] == true), "{status}");

    // Metrics count exchanges and cache hits, and hold no token.
    let metrics = http.get(muster.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(
        metrics.contains(r#"muster_token_exchanges_total{cluster="cluster-a-mcp-kubernetes",outcome="ok"}"#),
        "{metrics}"
    );
    assert!(metrics.contains("muster_token_exchange_cache_hits_total"), "{metrics}");
    assert!(!metrics.contains(&alice) && !metrics.contains("eyJ"), "a token in the metrics");

    // Tokens never reach the logs.
    let log = muster.log_text();
    assert!(!log.contains(&alice) && !log.contains(&bob) && !log.contains(&big), "a user token is in the log");
    assert!(!log.contains("eyJ"), "something JWT-shaped is in the log:\n{log}");
    drop(fleet);
}

#[actix_web::test]
async fn identity_provider_failures_stay_with_their_cluster() {
    let peers = Peers::load();
    let (_central, central) =
        start_idp(&peers, &["central", &free_port().to_string()], &[("ID_TOKEN_TTL", "20")]).await;
    let forward = |_: &str| "  auth:\n    type: oauth\n    forwardToken: true\n".to_owned();
    let mismatch = |issuer: &str| {
        exchange_auth(issuer, "cluster-a-token-exchange-credentials", &[]).replace(
            "      connectorId:",
            "      expectedIssuer: \"https://dex.elsewhere.example.com\"\n      connectorId:",
        )
    };
    let extra: [ExtraServer<'_>; 2] = [("forwarded", &forward), ("mismatch", &mismatch)];
    let (_fleet, mut clusters, _probes, muster) = fleet(&peers, &central, Some("cluster-b"), &extra).await;
    let url = muster.mcp_url();
    // cluster-c's IdP is down before anyone signs in.
    let c_idp = clusters.remove(2);
    drop(c_idp.idp);
    let first = login(&peers, &central, "alice");
    let signed_in = std::time::Instant::now();
    // The calls take a fresh token once the last is 8 s old: on a loaded machine six client runs
    // can outlast the 20 s lifetime that the expiry check at the end waits out.
    let mut held = (first.clone(), signed_in);
    let mut alice = || {
        if held.1.elapsed() > Duration::from_secs(8) {
            held = (login(&peers, &central, "alice"), std::time::Instant::now());
        }
        held.0.clone()
    };

    let a = call(&peers, &url, &alice(), "x_kubernetes_configuration_view", json!({"management_cluster": "cluster-a"}));
    assert!(upstream_answered(&a), "{a}");

    // A wrong client secret: cluster-b's IdP refuses, and the error says who and why.
    let b = call(&peers, &url, &alice(), "x_kubernetes_configuration_view", json!({"management_cluster": "cluster-b"}));
    assert_eq!(b["isError"], true, "{b}");
    assert_eq!(b["structured"]["code"], "token_exchange_failed", "{b}");
    let text = b["text"].as_str().unwrap_or_default();
    assert!(text.contains("cluster-b-mcp-kubernetes") && text.contains("invalid_client"), "{text}");
    assert!(!text.contains(EXCHANGE_SECRET) && !text.contains("not-the-secret"), "{text}");

    // A stopped IdP: a transport failure, not an auth failure; the others keep working.
    let c = call(&peers, &url, &alice(), "x_kubernetes_configuration_view", json!({"management_cluster": "cluster-c"}));
    assert_eq!(c["structured"]["code"], "identity_provider_unreachable", "{c}");
    assert!(c["text"].as_str().unwrap_or_default().contains("unreachable"), "{c}");
    let a = call(&peers, &url, &alice(), "x_kubernetes_configuration_view", json!({"management_cluster": "cluster-a"}));
    assert!(upstream_answered(&a), "{a}");

    // forwardToken: the user's own (central) token, and only to that server.
    let forwarded = call(&peers, &url, &alice(), "x_forwarded_bearer", json!({}));
    assert_eq!(forwarded["text"], format!("alice {central}"), "{forwarded}");
    // The exchanged token's issuer must be the expected one.
    let mismatch = call(&peers, &url, &alice(), "x_mismatch_bearer", json!({}));
    assert_eq!(mismatch["structured"]["code"], "token_exchange_failed", "{mismatch}");
    assert!(mismatch["text"].as_str().unwrap_or_default().contains("issuer mismatch"), "{mismatch}");

    // An expired user token is refused at the door with a precise 401.
    // (20 s token lifetime plus muster's 5 s clock skew.)
    tokio::time::sleep(Duration::from_secs(20 + 6).saturating_sub(signed_in.elapsed())).await;
    let expired = post_rpc(&reqwest::Client::new(), &url, Some(&first), PING).send().await.expect("send");
    assert_eq!(expired.status(), 401);
    let challenge = expired.headers()["www-authenticate"].to_str().expect("ascii").to_owned();
    assert!(challenge.contains("invalid_token") && challenge.to_lowercase().contains("expired"), "{challenge}");
}

/// The CLI: `muster auth login` (PKCE with a loopback callback, driven here by the headless
/// browser stand-in), then `auth status`, `list tools` and `call` with the stored token.
#[actix_web::test]
async fn the_cli_signs_in_once_and_reaches_the_fleet() {
    let peers = Peers::load();
    let (_central, central) = start_idp(&peers, &["central", &free_port().to_string()], &[]).await;
    let (_fleet, _clusters, _probes, muster) = fleet(&peers, &central, Some("cluster-b"), &[]).await;
    let home = tempfile::tempdir().expect("tempdir");
    let muster_cli = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_muster"));
        cmd.args(args)
            .env("MUSTER_ENDPOINT", muster.mcp_url())
            .env("MUSTER_CONFIG_PATH", home.path())
            .env("NO_COLOR", "1");
        cmd
    };

    // Before login: exit 2, and the way out.
    let (code, stdout, _) = run(&mut muster_cli(&["auth", "status"]));
    assert_eq!(code, 2, "{stdout}");
    assert!(stdout.contains("Not authenticated") && stdout.contains("muster auth login"), "{stdout}");
    let (code, _, stderr) = run(&mut muster_cli(&["list", "tools"]));
    assert_eq!(code, 2, "{stderr}");

    // Login: the CLI prints the authorization URL and waits on its loopback callback.
    let mut login = PendingLogin::spawn(&mut muster_cli(&["auth", "login", "--no-browser"]));
    let authorize = login.authorize_url(WAIT).await;
    let (code, stdout, stderr) = run(Command::new(format!("{}/node", peers.get("MUSTER_NODE22")))
        .arg(Peers::repo_file("tests/peers/idp_login.mjs"))
        .args([central.as_str(), "alice", "--follow-url", &authorize]));
    assert_eq!(code, 0, "browser stand-in: {stdout} {stderr}");
    let (succeeded, login_output) = login.finish().await;
    assert!(succeeded, "login failed:\n{login_output}");
    assert!(login_output.contains("Logged in"), "{login_output}");

    // Status in the seed's layout; cluster-b's wrong secret shows as a failed SSO.
    let (code, stdout, stderr) = run(&mut muster_cli(&["auth", "status"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("Status:    Authenticated"), "{stdout}");
    let line = |name: &str| stdout.lines().find(|l| l.trim_start().starts_with(name)).unwrap_or_default().to_owned();
    assert_eq!(
        line("cluster-a-mcp-kubernetes").trim(),
        "cluster-a-mcp-kubernetes   Connected [SSO: Exchanged]",
        "{stdout}"
    );
    assert!(line("cluster-b-mcp-kubernetes").contains("Not authenticated [SSO: Failed]"), "{stdout}");
    assert!(line("cluster-b-mcp-kubernetes").contains("invalid_client"), "{stdout}");

    let (code, stdout, stderr) = run(&mut muster_cli(&["list", "tools"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("x_kubernetes_configuration_view"), "{stdout}");
    let (code, stdout, stderr) = run(&mut muster_cli(&["call", "x_probe_bearer"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("alice "), "{stdout}");
    let (code, _, stderr) =
        run(&mut muster_cli(&["call", "x_kubernetes_configuration_view", "--management_cluster=cluster-b"]));
    assert_eq!(code, 1, "an isError result exits 1");
    assert!(stderr.contains("token_exchange_failed"), "{stderr}");

    // The token file is private.
    let tokens: Vec<_> = std::fs::read_dir(home.path().join("tokens")).expect("tokens").flatten().collect();
    assert_eq!(tokens.len(), 1);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(tokens[0].metadata().expect("meta").permissions().mode() & 0o777, 0o600);
}

/// A token the upstream stops accepting (revoked, rotated key): muster drops it from the cache,
/// exchanges again, and retries the call once, with no error reaching the agent.
#[actix_web::test]
async fn an_upstream_401_drops_the_cached_token_and_the_call_is_retried_once() {
    let peers = Peers::load();
    let (_central, central) = start_idp(&peers, &["central", &free_port().to_string()], &[]).await;
    let (_fleet, clusters, probes, muster) = fleet(&peers, &central, None, &[]).await;
    let url = muster.mcp_url();
    let alice = login(&peers, &central, "alice");
    let first = call(&peers, &url, &alice, "x_probe_bearer", json!({}));
    assert!(first["text"].as_str().is_some_and(|t| t.starts_with("alice ")), "{first}");
    let probe = &probes[0].shared;
    let revoked = probe.bearers_seen.lock().expect("lock").clone();
    assert_eq!(revoked.len(), 1, "one exchanged token so far");
    probe.rejected_bearers.lock().expect("lock").extend(revoked.clone());

    let second = call(&peers, &url, &alice, "x_probe_bearer", json!({}));
    assert!(second["text"].as_str().is_some_and(|t| t.starts_with("alice ")), "the retry succeeded: {second}");
    let seen = probe.bearers_seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "a fresh token was used");
    assert_ne!(seen[1], revoked[0]);
    let a_stats = stats(&clusters[0].issuer).await;
    assert_eq!(a_stats["by_sub"]["alice"], 2, "one re-exchange: {a_stats}");
}

/// The central IdP rotates its signing key (here: restarts with a new one). New tokens validate
/// at once (muster refetches the keys on an unknown `kid`); an old token is refused with 401, and
/// the CLI says so with exit code 3.
#[actix_web::test]
async fn a_rotated_central_key_is_picked_up_and_old_tokens_are_refused() {
    let peers = Peers::load();
    let central_port = free_port().to_string();
    let (central_idp, central) = start_idp(&peers, &["central", &central_port], &[]).await;
    let (_fleet, _clusters, _probes, muster) = fleet(&peers, &central, None, &[]).await;
    let url = muster.mcp_url();
    let old = login(&peers, &central, "alice");
    assert!(
        call(&peers, &url, &old, "x_probe_bearer", json!({}))["text"].as_str().is_some_and(|t| t.starts_with("alice "))
    );

    drop(central_idp);
    let (_central_idp, again) = start_idp(&peers, &["central", &central_port], &[]).await;
    assert_eq!(again, central);
    let new = login(&peers, &central, "alice");
    let answered = call(&peers, &url, &new, "x_probe_bearer", json!({}));
    assert!(answered["text"].as_str().is_some_and(|t| t.starts_with("alice ")), "{answered}");

    // The old token is no longer signed by a published key.
    let refused = post_rpc(&reqwest::Client::new(), &url, Some(&old), PING).send().await.expect("send");
    assert_eq!(refused.status(), 401);

    // The CLI with that stale token: exit 3, "sign-in failed".
    let home = tempfile::tempdir().expect("tempdir");
    let endpoint = muster.mcp_url();
    let name = {
        use sha2::Digest as _;
        hex::encode(&sha2::Sha256::digest(endpoint.as_bytes())[..16])
    };
    std::fs::create_dir_all(home.path().join("tokens")).expect("dir");
    std::fs::write(
        home.path().join("tokens").join(format!("{name}.json")),
        json!({"endpoint": endpoint, "issuer": central, "id_token": old, "expires_at": u64::MAX / 2}).to_string(),
    )
    .expect("token file");
    let (code, stdout, stderr) = run(Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["auth", "status"])
        .env("MUSTER_ENDPOINT", &endpoint)
        .env("MUSTER_CONFIG_PATH", home.path()));
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(stdout.contains("Authentication failed"), "{stdout}");
}
