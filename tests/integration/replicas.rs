//! Several muster replicas sharing a real `redis-server` (Valkey's protocol; ADR 0009):
//! - one agent session served round-robin by three replicas and ended on all by one `DELETE`;
//! - exactly one token exchange per (user, cluster) for calls spread over the replicas, simultaneous
//!   first calls included;
//! - a sign-in at muster's authorization server made at one replica works at every one (codes and
//!   refresh tokens work once across them, a revocation reaches all, and it outlives that replica);
//! - an agent's answer to a server-to-client request, or its cancellation, posted to another replica
//!   reaches the call, and a call's notifications reach the agent's stream on another replica;
//! - a replica SIGKILLed under 16 sessions loses only its calls in flight;
//! - the store killed and restarted: serving degrades, then recovers; unreachable at start: muster
//!   stops, naming it.

use std::process::Command;

use serde_json::{Value, json};

use crate::sso::{login, start_idp, stats, upstream_answered};
use crate::support::mock_upstream::MockUpstream;
use crate::support::{Fleet, Muster, Peers, Process, config, eventually, family, free_port, http_server, wait_port};

/// A `redis-server` on a private loopback port, its data in a temporary folder (append-only
/// file, so a restart keeps what it held, as a Valkey with persistence does).
struct Valkey {
    server: std::path::PathBuf,
    dir: tempfile::TempDir,
    process: Option<Process>,
    port: u16,
}

impl Valkey {
    /// `None` when redis-server is not installed (see [`Peers::system`]).
    async fn start(peers: &Peers) -> Option<Self> {
        let server = peers.system("MUSTER_REDIS_SERVER", "redis-server")?;
        let mut valkey = Self { server, dir: tempfile::tempdir().expect("tempdir"), process: None, port: free_port() };
        valkey.restart().await;
        Some(valkey)
    }

    /// Kills the server (SIGKILL: no goodbye to its clients).
    fn stop(&mut self) {
        self.process = None;
    }

    /// Starts the server again on its port, with what it had written.
    async fn restart(&mut self) {
        let process = Process::spawn(
            Command::new(&self.server)
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
                .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                .arg(self.dir.path()),
            "redis-server (scripts/install-peers.sh installs it)",
        );
        wait_port(self.port).await;
        self.process = Some(process);
    }

    /// The `aggregator` keys that point a replica at this store, with the shared session key.
    fn config(&self) -> String {
        format!(
            "  storage:\n    type: valkey\n    valkey:\n      url: redis://127.0.0.1:{}\n  sessions:\n    keyFile: session-keys\n",
            self.port
        )
    }
}

/// `aggregator.oauth.server.encryptionKey`, the same on every replica.
const ENCRYPTION_KEY: &str = "ZW5jcnlwdGlvbi1rZXktb2YtdGhlLXJlcGxpY2FzLTE=";

pub(crate) const SESSION_KEY: &str = "c2Vzc2lvbi1rZXktb2YtdGhlLXRlc3QtcmVwbGljYXM=\n";

/// `replicas` copies of `fleet`'s folder, each on its own port, sharing `valkey`, started.
async fn replicate(fleet: &Fleet, valkey: &Valkey, replicas: usize) -> Vec<(Fleet, Muster)> {
    copies(fleet, &valkey.config(), replicas).await
}

/// `replicas` copies of `fleet`'s folder with `keys` appended to its config, each on its own port,
/// started.
pub(crate) async fn copies(fleet: &Fleet, keys: &str, replicas: usize) -> Vec<(Fleet, Muster)> {
    let text = std::fs::read_to_string(fleet.dir.path().join("config.yaml")).expect("config");
    let port_line = text.lines().find(|l| l.trim_start().starts_with("port:")).expect("port").to_owned();
    let mut started = Vec::new();
    for _ in 0..replicas {
        let port = free_port();
        let copy = Fleet::new(&format!("{}{keys}", text.replace(&port_line, &format!("  port: {port}"))));
        copy_tree(fleet.dir.path(), copy.dir.path());
        std::fs::write(copy.dir.path().join("session-keys"), SESSION_KEY).expect("keys");
        let muster = Muster::start(&copy, port).await;
        muster.wait_ready().await;
        started.push((copy, muster));
    }
    started
}

/// Copies everything but `config.yaml` and logs.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let name = entry.file_name();
        if name == "config.yaml" || name.to_string_lossy().ends_with(".log") {
            continue;
        }
        let target = to.join(&name);
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A POST of one JSON-RPC message to `url` on `session` (2025-06-18), accepting `accept`.
fn session_post(
    http: &reqwest::Client,
    url: &str,
    session: Option<&str>,
    accept: &str,
    body: &Value,
) -> reqwest::RequestBuilder {
    let request = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", accept)
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_string());
    match session {
        Some(session) => request.header("mcp-session-id", session),
        None => request,
    }
}

/// One JSON-RPC message to `muster` on `session`, answered as JSON: (status, body).
pub(crate) async fn send(muster: &Muster, session: Option<&str>, body: Value) -> (u16, Value) {
    let http = reqwest::Client::new();
    let response =
        session_post(&http, &muster.mcp_url(), session, "application/json", &body).send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub(crate) async fn open_session(muster: &Muster) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {"roots": {}}, "clientInfo": {"name": "replicas", "version": "1"}}});
    let response = reqwest::Client::new()
        .post(muster.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(init.to_string())
        .send()
        .await
        .expect("initialize");
    assert_eq!(response.status(), 200);
    response.headers()["mcp-session-id"].to_str().expect("ascii").to_owned()
}

#[actix_web::test]
async fn one_session_is_served_by_every_replica_and_ended_by_one_delete() {
    let Some(valkey) = Valkey::start(&Peers::load()).await else { return };
    let fleet = Fleet::new(&config(free_port(), "  toolExposure: direct\n"));
    let mut upstreams = Vec::new();
    for cluster in ["a", "b"] {
        let upstream = MockUpstream::start(cluster, free_port()).await;
        let name = format!("cluster-{cluster}-mcp-kubernetes");
        fleet.write_server(
            &format!("{name}.yaml"),
            &http_server(&name, &upstream.url(), &family("kubernetes", "management_cluster")),
        );
        upstreams.push(upstream);
    }
    let replicas = replicate(&fleet, &valkey, 3).await;
    let session = open_session(&replicas[0].1).await;
    let (status, _) =
        send(&replicas[1].1, Some(&session), json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
    assert_eq!(status, 202, "another replica accepts the session's notification");

    // Round robin: every replica serves the session's calls, to both clusters.
    for n in 0..12_u64 {
        let (_, muster) = &replicas[n as usize % 3];
        let cluster = if n % 2 == 0 { "cluster-a" } else { "cluster-b" };
        let call = json!({"jsonrpc": "2.0", "id": n + 1, "method": "tools/call", "params": {
            "name": "x_kubernetes_echo", "arguments": {"management_cluster": cluster, "text": format!("call {n}")}}});
        let (status, body) = send(muster, Some(&session), call).await;
        assert_eq!(status, 200, "replica {}: {body}", n % 3);
        let text = body["result"]["content"][0]["text"].as_str().unwrap_or_default();
        assert!(text.contains(&format!("call {n}")), "replica {}: {body}", n % 3);
    }

    // A forged id opens nowhere. One character of the middle changes (the last one may already be
    // `A`, or differ only in bits the decoding drops, and then the "forged" id was the real one).
    let middle = session.len() / 2;
    let other = if &session[middle..=middle] == "A" { "B" } else { "A" };
    let forged = format!("{}{other}{}", &session[..middle], &session[middle + 1..]);
    assert_ne!(forged, session);
    let ping = json!({"jsonrpc": "2.0", "id": 99, "method": "ping"});
    for (_, muster) in &replicas {
        assert_eq!(send(muster, Some(&forged), ping.clone()).await.0, 404);
    }

    // DELETE on one replica ends the session on all, those that served it included.
    let deleted = reqwest::Client::new()
        .delete(replicas[1].1.mcp_url())
        .header("mcp-session-id", &session)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);
    for (n, (_, muster)) in replicas.iter().enumerate() {
        let (status, body) = send(muster, Some(&session), ping.clone()).await;
        assert_eq!(status, 404, "replica {n} still serves the ended session: {body}");
    }
}

#[actix_web::test]
async fn a_user_and_cluster_are_exchanged_once_across_replicas() {
    let peers = Peers::load();
    let Some(valkey) = Valkey::start(&peers).await else { return };
    let (_central, central) = start_idp(&peers, &["central", &free_port().to_string()], &[]).await;
    let (fleet, clusters, _probes, first) = crate::sso::fleet(&peers, &central, None, &[]).await;
    drop(first);
    let replicas = replicate(&fleet, &valkey, 3).await;
    let urls: Vec<String> = replicas.iter().map(|(_, m)| m.mcp_url()).collect();
    let alice = login(&peers, &central, "alice");
    let bob = login(&peers, &central, "bob");

    // Simultaneous first calls on the three replicas, for two users.
    let mut first_calls = Vec::new();
    for url in &urls {
        for token in [&alice, &bob] {
            let (url, token) = (url.clone(), token.clone());
            first_calls.push(tokio::task::spawn_blocking(move || {
                crate::sso::call(
                    &Peers::load(),
                    &url,
                    &token,
                    "x_kubernetes_configuration_view",
                    json!({"management_cluster": "cluster-a"}),
                )
            }));
        }
    }
    for call in first_calls {
        let answer = call.await.expect("join");
        assert!(upstream_answered(&answer), "{answer}");
    }
    // Then more calls spread over the replicas.
    for url in urls.iter().cycle().take(6) {
        let answer = crate::sso::call(
            &peers,
            url,
            &alice,
            "x_kubernetes_configuration_view",
            json!({"management_cluster": "cluster-a"}),
        );
        assert!(upstream_answered(&answer), "{answer}");
    }
    let stats = stats(&clusters[0].issuer).await;
    assert_eq!(stats["by_sub"]["alice"], 1, "one exchange for alice at cluster-a across 3 replicas: {stats}");
    assert_eq!(stats["by_sub"]["bob"], 1, "one exchange for bob at cluster-a across 3 replicas: {stats}");
}

#[actix_web::test]
async fn a_store_that_cannot_be_reached_at_start_stops_muster_naming_it() {
    let closed = free_port();
    let fleet = Fleet::new(&config(
        free_port(),
        &format!(
            "  storage:\n    type: valkey\n    valkey:\n      url: redis://127.0.0.1:{closed}\n  sessions:\n    keyFile: session-keys\n"
        ),
    ));
    std::fs::write(fleet.dir.path().join("session-keys"), SESSION_KEY).expect("keys");
    let (mut child, log) = Muster::spawn(&fleet, &[]);
    let status = tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait");
    assert!(!status.success());
    let log = std::fs::read_to_string(log).expect("log");
    assert!(
        log.contains("shared store")
            && log.contains(&format!("127.0.0.1:{closed}"))
            && log.contains("connection refused"),
        "{log}"
    );
}

/// The token request that redeems the code of the agent's redirect `location`.
fn redeem_form(location: &str, client_id: &str, verifier: &str) -> [(&'static str, String); 5] {
    [
        ("grant_type", "authorization_code".to_owned()),
        ("code", crate::oauth_server::query(location)["code"].clone()),
        ("redirect_uri", location.split('?').next().expect("uri").to_owned()),
        ("client_id", client_id.to_owned()),
        ("code_verifier", verifier.to_owned()),
    ]
}

/// The token endpoint of `muster`: (status, JSON answer).
async fn token_at(muster: &Muster, form: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new().post(muster.url("/oauth/token")).form(form).send().await.expect("token");
    (response.status().as_u16(), response.json().await.expect("token json"))
}

/// The status of a ping without a session on `muster`'s `/mcp` with `token`: 401 when the token
/// is refused, 400 (no session) when it is let in.
async fn admitted_at(muster: &Muster, token: &str) -> u16 {
    let response = reqwest::Client::new()
        .post(muster.mcp_url())
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .expect("mcp");
    response.status().as_u16()
}

#[actix_web::test]
async fn a_sign_in_at_one_replica_works_at_every_replica_and_a_revocation_reaches_all() {
    use crate::oauth_server::{REDIRECT, pkce, register, setup_with_config, sign_in};
    let peers = Peers::load();
    let Some(valkey) = Valkey::start(&peers).await else { return };
    // Replica A is the setup's muster (its port is the baseUrl the IdP returns to); B and C copy it.
    let shared = format!("      encryptionKey: {ENCRYPTION_KEY}\n{}", valkey.config());
    let setup = setup_with_config(&peers, 1, &[], &[], &[], &shared, &[("session-keys", SESSION_KEY)]).await;
    let others = copies(&setup.fleet, "", 2).await;
    let (a, b, c) = (&setup.muster, &others[0].1, &others[1].1);

    // Registered at A; signed in through A (the browser's way back is A's callback).
    let (status, client) = register(&setup, &[REDIRECT]).await;
    assert_eq!(status, 201, "{client}");
    let client_id = client["client_id"].as_str().expect("client_id").to_owned();
    let (verifier, challenge) = pkce();
    let location = sign_in(&peers, &setup, "alice", &client_id, &challenge);
    // The code is redeemed at B, once.
    let redeem = redeem_form(&location, &client_id, &verifier);
    let redeem: Vec<(&str, &str)> = redeem.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, tokens) = token_at(b, &redeem).await;
    assert_eq!(status, 200, "B redeems a code A issued: {tokens}");
    assert_eq!(token_at(c, &redeem).await.0, 400, "a code works once across replicas");
    // The grant was revoked by the reused code; sign in again for the rest.
    let (verifier, challenge) = pkce();
    let location = sign_in(&peers, &setup, "alice", &client_id, &challenge);
    let redeem = redeem_form(&location, &client_id, &verifier);
    let redeem: Vec<(&str, &str)> = redeem.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, tokens) = token_at(c, &redeem).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().expect("access").to_owned();

    // The access token reaches the cluster through every replica (the exchange done once).
    for muster in [a, b, c] {
        let answer = crate::sso::call(
            &peers,
            &muster.mcp_url(),
            &access,
            "x_kubernetes_configuration_view",
            json!({"management_cluster": "cluster-a"}),
        );
        assert!(upstream_answered(&answer), "{answer}");
    }
    assert_eq!(stats(&setup.clusters[0].issuer).await["by_sub"]["alice"], 1, "one exchange for the deployment");

    // Refreshed at A; the rotated refresh token reused at B revokes the family everywhere, C
    // (which holds the newest access token from a moment ago) included.
    let refresh = tokens["refresh_token"].as_str().expect("refresh").to_owned();
    let rotate =
        [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str()), ("client_id", client_id.as_str())];
    let (status, newer) = token_at(a, &rotate).await;
    assert_eq!(status, 200, "{newer}");
    let newest = newer["access_token"].as_str().expect("access").to_owned();
    assert_eq!(admitted_at(c, &newest).await, 400, "let in (and told it has no session)");
    assert_eq!(token_at(b, &rotate).await.0, 400, "a rotated refresh token is refused on another replica");
    for muster in [a, b, c] {
        crate::support::eventually(std::time::Duration::from_secs(3), "the revocation on every replica", async || {
            (admitted_at(muster, &newest).await == 401).then_some(())
        })
        .await;
    }

    // One refresh token used at the same moment on two replicas rotates at most once.
    let (verifier, challenge) = pkce();
    let location = sign_in(&peers, &setup, "alice", &client_id, &challenge);
    let redeem = redeem_form(&location, &client_id, &verifier);
    let redeem: Vec<(&str, &str)> = redeem.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (_, tokens) = token_at(a, &redeem).await;
    let refresh = tokens["refresh_token"].as_str().expect("refresh").to_owned();
    let rotate =
        [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str()), ("client_id", client_id.as_str())];
    let (at_b, at_c) = tokio::join!(token_at(b, &rotate), token_at(c, &rotate));
    let mut statuses = [at_b.0, at_c.0];
    statuses.sort_unstable();
    // The loser sees a reuse and revokes the family; if that lands before the winner reads the
    // family, the winner fails too. Never do both rotate.
    assert_eq!(statuses[1], 400, "at most one replica rotates it: {at_b:?} {at_c:?}");

    // The replica that signed the user in is killed: the sign-in lives on at the others.
    let (verifier, challenge) = pkce();
    let location = sign_in(&peers, &setup, "alice", &client_id, &challenge);
    let redeem = redeem_form(&location, &client_id, &verifier);
    let redeem: Vec<(&str, &str)> = redeem.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (_, tokens) = token_at(a, &redeem).await;
    let mut setup = setup;
    setup.muster.child.kill().expect("SIGKILL replica A");
    let refresh = tokens["refresh_token"].as_str().expect("refresh").to_owned();
    let rotate =
        [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str()), ("client_id", client_id.as_str())];
    let (status, newer) = token_at(b, &rotate).await;
    assert_eq!(status, 200, "B refreshes a sign-in made at A, A gone: {newer}");
    let access = newer["access_token"].as_str().expect("access");
    let answer = crate::sso::call(
        &peers,
        &c.mcp_url(),
        access,
        "x_kubernetes_configuration_view",
        json!({"management_cluster": "cluster-a"}),
    );
    assert!(upstream_answered(&answer), "{answer}");
}

/// A fleet of one cluster, `cluster-a`, served by a mock upstream (direct tool exposure).
pub(crate) async fn one_cluster() -> (Fleet, MockUpstream) {
    let fleet = Fleet::new(&config(free_port(), "  toolExposure: direct\n"));
    let upstream = MockUpstream::start("a", free_port()).await;
    fleet.write_server(
        "cluster-a-mcp-kubernetes.yaml",
        &http_server("cluster-a-mcp-kubernetes", &upstream.url(), &family("kubernetes", "management_cluster")),
    );
    (fleet, upstream)
}

/// `/readyz`'s `store` field on `muster`.
pub(crate) async fn store_state(muster: &Muster) -> String {
    let body: Value = reqwest::get(muster.url("/readyz")).await.expect("readyz").json().await.expect("json");
    body["store"].as_str().unwrap_or_default().to_owned()
}

#[actix_web::test]
async fn a_store_that_goes_away_degrades_serving_and_recovers_when_it_returns() {
    let Some(mut valkey) = Valkey::start(&Peers::load()).await else { return };
    let (fleet, _upstream) = one_cluster().await;
    let replicas = replicate(&fleet, &valkey, 2).await;
    let (r0, r1) = (&replicas[0].1, &replicas[1].1);
    let mut n = 0_u64;
    let mut call = async |muster: &Muster, session: &str| {
        n += 1;
        let body = json!({"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {
            "name": "x_kubernetes_echo", "arguments": {"management_cluster": "cluster-a", "text": format!("call {n}")}}});
        let (status, answer) = send(muster, Some(session), body).await;
        let text = answer["result"]["content"][0]["text"].as_str().unwrap_or_default().to_owned();
        assert!(status == 200 && text.contains(&format!("call {n}")), "{status} {answer}");
    };
    let before = open_session(r0).await;
    call(r1, &before).await;
    assert_eq!(store_state(r0).await, "up");

    valkey.stop();
    // Both replicas keep serving the session; a session opened now is served by the other replica
    // too (from its sealed id alone), and /readyz says the store is down while muster stays ready.
    call(r0, &before).await;
    call(r1, &before).await;
    let during = open_session(r0).await;
    call(r1, &during).await;
    call(r0, &during).await;
    for muster in [r0, r1] {
        assert_eq!(reqwest::get(muster.url("/readyz")).await.expect("readyz").status(), 200);
    }
    assert_eq!(store_state(r0).await, "down");

    valkey.restart().await;
    for muster in [r0, r1] {
        eventually(std::time::Duration::from_secs(10), "the store is up again", async || {
            (store_state(muster).await == "up").then_some(())
        })
        .await;
    }
    call(r1, &before).await;
    // Writes resume: a DELETE on r1 ends the session r0 opened while the store was down, on r0 too
    // (the replicas subscribed again).
    let deleted =
        reqwest::Client::new().delete(r1.mcp_url()).header("mcp-session-id", &during).send().await.expect("delete");
    assert_eq!(deleted.status(), 200);
    let ping = json!({"jsonrpc": "2.0", "id": 0, "method": "ping"});
    eventually(std::time::Duration::from_secs(5), "the session ended on r0", async || {
        (send(r0, Some(&during), ping.clone()).await.0 == 404).then_some(())
    })
    .await;
    call(r0, &before).await;
}

#[actix_web::test]
async fn a_replica_killed_under_load_loses_only_its_calls_in_flight() {
    const SESSIONS: usize = 16;
    const CALLS: usize = 30;
    let Some(valkey) = Valkey::start(&Peers::load()).await else { return };
    let (fleet, _upstream) = one_cluster().await;
    let mut replicas = replicate(&fleet, &valkey, 3).await;
    let urls: Vec<String> = replicas.iter().map(|(_, m)| m.mcp_url()).collect();
    let mut sessions = Vec::new();
    for s in 0..SESSIONS {
        sessions.push(open_session(&replicas[s % 3].1).await);
    }
    // Replica 2 is killed once a third of the calls are done; a load balancer then stops sending it
    // calls (here: the next call of each session goes to another replica).
    let killed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut agents = Vec::new();
    for (s, session) in sessions.into_iter().enumerate() {
        let (urls, killed, done) = (urls.clone(), killed.clone(), done.clone());
        agents.push(actix_web::rt::spawn(async move {
            let http = reqwest::Client::new();
            let (mut ok, mut failed_on_killed, mut failed_elsewhere) = (0, 0, 0);
            for c in 0..CALLS {
                let mut replica = (s + c) % 3;
                if replica == 2 && killed.load(std::sync::atomic::Ordering::SeqCst) {
                    replica = c % 2;
                }
                let call = json!({"jsonrpc": "2.0", "id": c, "method": "tools/call", "params": {
                    "name": "x_kubernetes_echo",
                    "arguments": {"management_cluster": "cluster-a", "text": format!("{s}/{c}")}}});
                let answer =
                    session_post(&http, &urls[replica], Some(&session), "application/json", &call).send().await;
                let answered = match answer {
                    Ok(response) if response.status() == 200 => {
                        let body: Value = response.json().await.unwrap_or(Value::Null);
                        body["result"]["content"][0]["text"].as_str().is_some_and(|t| t.contains(&format!("{s}/{c}")))
                    }
                    _ => false,
                };
                match (answered, replica) {
                    (true, _) => ok += 1,
                    (false, 2) => failed_on_killed += 1,
                    (false, _) => failed_elsewhere += 1,
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            (ok, failed_on_killed, failed_elsewhere)
        }));
    }
    eventually(std::time::Duration::from_secs(60), "a third of the calls", async || {
        (done.load(std::sync::atomic::Ordering::SeqCst) >= SESSIONS * CALLS / 3).then_some(())
    })
    .await;
    replicas[2].1.child.kill().expect("SIGKILL replica 2");
    killed.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut ok, mut failed_on_killed, mut failed_elsewhere) = (0, 0, 0);
    for agent in agents {
        let (o, k, e) = agent.await.expect("agent");
        (ok, failed_on_killed, failed_elsewhere) = (ok + o, failed_on_killed + k, failed_elsewhere + e);
    }
    eprintln!("{ok} answered, {failed_on_killed} failed on the killed replica, {failed_elsewhere} elsewhere");
    assert_eq!(failed_elsewhere, 0, "no call to a surviving replica failed");
    assert!(failed_on_killed <= SESSIONS, "at most one call in flight per session was lost: {failed_on_killed}");
    assert_eq!(ok + failed_on_killed, SESSIONS * CALLS, "every call is counted");
}

/// The next JSON-RPC message on an SSE answer that `pick` accepts.
async fn next_event(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buffer: &mut String,
    pick: impl Fn(&Value) -> bool,
) -> Value {
    use futures::StreamExt as _;
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            for line in event.lines() {
                if let Some(data) = line.strip_prefix("data:")
                    && let Ok(message) = serde_json::from_str::<Value>(data.trim())
                    && pick(&message)
                {
                    return message;
                }
            }
        }
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream ended")
            .expect("a chunk");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[actix_web::test]
async fn an_answer_or_a_cancellation_posted_to_another_replica_reaches_the_call() {
    let Some(valkey) = Valkey::start(&Peers::load()).await else { return };
    let (fleet, upstream) = one_cluster().await;
    let replicas = replicate(&fleet, &valkey, 2).await;
    let (r0, r1) = (&replicas[0].1, &replicas[1].1);
    let session = open_session(r0).await;
    let http = reqwest::Client::new();
    let post = |muster: &Muster, body: Value| {
        session_post(&http, &muster.mcp_url(), Some(&session), "application/json, text/event-stream", &body).send()
    };

    // The upstream asks the agent for its roots during a call on r0; the agent answers on r1.
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "x_kubernetes_roots", "arguments": {"management_cluster": "cluster-a"}}});
    let response = post(r0, call).await.expect("call");
    assert_eq!(response.status(), 200);
    let (mut stream, mut buffer) = (Box::pin(response.bytes_stream()), String::new());
    let question = next_event(&mut stream, &mut buffer, |m| m["method"] == "roots/list").await;
    let answer = json!({"jsonrpc": "2.0", "id": question["id"], "result": {
        "roots": [{"uri": "file:///answered-at-r1", "name": "r1"}]}});
    assert_eq!(post(r1, answer).await.expect("answer").status(), 202);
    let result = next_event(&mut stream, &mut buffer, |m| m["id"] == 1).await;
    assert_eq!(result["result"]["content"][0]["text"], "file:///answered-at-r1", "{result}");

    // A call blocked on r0 is cancelled by a notifications/cancelled posted to r1.
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "x_kubernetes_block", "arguments": {"management_cluster": "cluster-a"}}});
    let blocked = post(r0, call);
    let blocked = actix_web::rt::spawn(async move { blocked.await.map(|r| r.status().as_u16()) });
    let shared = upstream.shared.clone();
    let wait = std::time::Duration::from_secs(10);
    eventually(wait, "the call to reach the upstream", async || {
        (shared.blocked.load(std::sync::atomic::Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 2}});
    assert_eq!(post(r1, cancel).await.expect("cancel").status(), 202);
    eventually(wait, "the upstream to see the cancellation", async || {
        (shared.cancelled.load(std::sync::atomic::Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    let _ = blocked.await;

    // The agent listens on r1; a call on r0 answered as plain JSON sends its progress to that
    // stream, across the replicas.
    let listening = http
        .get(r1.mcp_url())
        .header("accept", "text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .header("mcp-session-id", &session)
        .send()
        .await
        .expect("standalone stream");
    assert_eq!(listening.status(), 200);
    let (mut stream, mut buffer) = (Box::pin(listening.bytes_stream()), String::new());
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "x_kubernetes_progress", "arguments": {"management_cluster": "cluster-a"},
        "_meta": {"progressToken": "across"}}});
    // The announcement that r1 listens travels through the store: call until progress arrives.
    let progress = eventually(wait, "progress of a call on r0 on r1's stream", async || {
        let answered =
            session_post(&http, &r0.mcp_url(), Some(&session), "application/json", &call).send().await.expect("call");
        assert_eq!(answered.status(), 200);
        let seen = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            next_event(&mut stream, &mut buffer, |m| m["method"] == "notifications/progress"),
        )
        .await;
        seen.ok()
    })
    .await;
    assert_eq!(progress["params"]["progressToken"], "across", "{progress}");
}

#[actix_web::test]
async fn an_unsubscribe_posted_to_another_replica_ends_the_subscription_upstream() {
    let Some(valkey) = Valkey::start(&Peers::load()).await else { return };
    let (fleet, upstream) = one_cluster().await;
    let replicas = replicate(&fleet, &valkey, 2).await;
    let (r0, r1) = (&replicas[0].1, &replicas[1].1);
    let session = open_session(r0).await;
    let (_, listed) = send(r0, Some(&session), json!({"jsonrpc": "2.0", "id": 1, "method": "resources/list"})).await;
    let uri = listed["result"]["resources"]
        .as_array()
        .and_then(|all| all.iter().find_map(|r| r["uri"].as_str().filter(|u| u.contains("status"))))
        .unwrap_or_else(|| panic!("the upstream's resource is listed: {listed}"))
        .to_owned();
    let subscribe = json!({"jsonrpc": "2.0", "id": 2, "method": "resources/subscribe", "params": {"uri": uri}});
    let (status, answer) = send(r0, Some(&session), subscribe).await;
    assert_eq!((status, &answer["error"]), (200, &Value::Null), "{answer}");
    let seen = || upstream.shared.subscriptions.lock().expect("lock").clone();
    assert_eq!(seen(), ["subscribe mock://a/status"]);

    // The agent's next request goes to the other replica, which holds no subscription: it passes
    // the unsubscribe on, and the replica that holds it ends it upstream.
    let unsubscribe = json!({"jsonrpc": "2.0", "id": 3, "method": "resources/unsubscribe", "params": {"uri": uri}});
    let (status, answer) = send(r1, Some(&session), unsubscribe).await;
    assert_eq!((status, &answer["error"]), (200, &Value::Null), "{answer}");
    let seen = eventually(std::time::Duration::from_secs(10), "the upstream to hear the unsubscribe", async || {
        let seen = seen();
        (seen.len() == 2).then_some(seen)
    })
    .await;
    assert_eq!(seen, ["subscribe mock://a/status", "unsubscribe mock://a/status"]);
}
