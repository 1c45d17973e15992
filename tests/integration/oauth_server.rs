//! muster as the OAuth 2.1 authorization server of its own `/mcp` (issue 14), end to end: a
//! Rust-driven OAuth client does discovery, registration (DCR, or a CIMD document this test
//! serves on loopback), authorize with PKCE, the headless login at the central IdP
//! (`tests/peers/idp_login.mjs`), the token request, and family tool calls on clusters whose
//! kubernetes-mcp-server accepts only that cluster's exchanged token; then the bad inputs.

use std::process::Command;

use serde_json::{Value, json};
use sha2::Digest as _;

use crate::sso::{
    Cluster, EXCHANGE_SECRET, call, cluster_with, exchange_auth, py_client, start_idp, stats, upstream_answered,
    write_secret,
};
use crate::support::{
    Fleet, Muster, Peers, Process, config, eventually, family, free_port, http_server, post_rpc, run,
};

const MUSTER_SECRET: &str = "muster-secret";
pub(crate) const REDIRECT: &str = "http://127.0.0.1/callback";

/// A form body: name and value pairs.
type Form<'a> = &'a [(&'a str, &'a str)];

/// muster, its central IdP (with muster as a confidential client) and `n_clusters` clusters.
pub(crate) struct Setup {
    pub(crate) central_idp: Process,
    pub(crate) central: String,
    pub(crate) clusters: Vec<Cluster>,
    pub(crate) fleet: Fleet,
    pub(crate) muster: Muster,
    pub(crate) http: reqwest::Client,
}

pub(crate) async fn setup(
    peers: &Peers,
    n_clusters: usize,
    central_env: &[(&str, &str)],
    cluster_args: &[&str],
) -> Setup {
    setup_with_env(peers, n_clusters, central_env, cluster_args, &[]).await
}

/// [`setup`], with muster started with `muster_env` on top of the test's environment.
async fn setup_with_env(
    peers: &Peers,
    n_clusters: usize,
    central_env: &[(&str, &str)],
    cluster_args: &[&str],
    muster_env: &[(&str, &std::ffi::OsStr)],
) -> Setup {
    setup_with_config(peers, n_clusters, central_env, cluster_args, muster_env, "", &[]).await
}

/// [`setup_with_env`], with `keys` (YAML lines, indented for where they go: six spaces under
/// `aggregator.oauth.server`, two under `aggregator`) appended to the config, and `files` written
/// into the fleet's folder before muster starts.
pub(crate) async fn setup_with_config(
    peers: &Peers,
    n_clusters: usize,
    central_env: &[(&str, &str)],
    cluster_args: &[&str],
    muster_env: &[(&str, &std::ffi::OsStr)],
    keys: &str,
    files: &[(&str, &str)],
) -> Setup {
    let port = free_port();
    let callback = format!("--redirect=http://127.0.0.1:{port}/oauth/callback");
    let client = format!("--client=muster:{MUSTER_SECRET}");
    let (central_idp, central) =
        start_idp(peers, &["central", &free_port().to_string(), &client, &callback], central_env).await;
    let fleet = Fleet::new(&config(
        port,
        &format!(
            "  toolExposure: direct\n  oauth:\n    server:\n      enabled: true\n      baseUrl: http://127.0.0.1:{port}\n      dex:\n        issuerUrl: {central}\n        clientId: muster\n        clientSecret: {MUSTER_SECRET}\n      storage: {{type: memory}}\n{keys}"
        ),
    ));
    for (name, text) in files {
        std::fs::write(fleet.dir.path().join(name), text).expect("write a fleet file");
    }
    let mut clusters = Vec::new();
    for name in ["cluster-a", "cluster-b"].into_iter().take(n_clusters) {
        let (cluster, k8s_port) = cluster_with(peers, fleet.dir.path(), name, &central, None, cluster_args).await;
        let secret_name = format!("{name}-token-exchange-credentials");
        write_secret(&fleet, &secret_name, EXCHANGE_SECRET);
        let server = format!("{name}-mcp-kubernetes");
        fleet.write_server(
            &format!("{server}.yaml"),
            &format!(
                "{}{}",
                http_server(
                    &server,
                    &format!("http://127.0.0.1:{k8s_port}/mcp"),
                    &family("kubernetes", "management_cluster")
                ),
                exchange_auth(&cluster.issuer, &secret_name, &[])
            ),
        );
        clusters.push(cluster);
    }
    let muster = Muster::start_with_env(&fleet, port, muster_env).await;
    muster.wait_ready().await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    Setup { central_idp, central, clusters, fleet, muster, http }
}

/// A PKCE verifier and its S256 challenge.
pub(crate) fn pkce() -> (String, String) {
    use base64::Engine as _;
    let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

pub(crate) fn authorize_url(
    muster: &Muster,
    client_id: &str,
    redirect: &str,
    challenge: Option<&str>,
    method: &str,
) -> String {
    let mut url = reqwest::Url::parse(&muster.url("/oauth/authorize")).expect("url");
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect)
        .append_pair("state", "agent-state")
        .append_pair("scope", "openid")
        .append_pair("resource", &muster.mcp_url());
    if let Some(challenge) = challenge {
        url.query_pairs_mut().append_pair("code_challenge", challenge).append_pair("code_challenge_method", method);
    }
    url.into()
}

pub(crate) fn query(location: &str) -> std::collections::HashMap<String, String> {
    reqwest::Url::parse(location).expect("location").query_pairs().into_owned().collect()
}

/// Signs `user` in through muster for `client_id`: returns the agent's redirect (code, state, iss).
pub(crate) fn sign_in(peers: &Peers, setup: &Setup, user: &str, client_id: &str, challenge: &str) -> String {
    let redirect = "http://127.0.0.1:53123/callback";
    let url = authorize_url(&setup.muster, client_id, redirect, Some(challenge), "S256");
    let (code, stdout, stderr) = run(Command::new(format!("{}/node", peers.get("MUSTER_NODE22")))
        .arg(Peers::repo_file("tests/peers/idp_login.mjs"))
        .args([&setup.central, user, "--follow-url", &url, "--location"])
        .env("MUSTER_NODE_MODULES", peers.get("MUSTER_NODE_MODULES")));
    assert_eq!(code, 0, "sign-in failed: {stdout} {stderr}");
    let answer: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert_eq!(answer["status"], 302, "{answer}");
    let location = answer["location"].as_str().expect("location").to_owned();
    assert!(location.starts_with(redirect), "{location}");
    location
}

async fn token(setup: &Setup, form: &[(&str, &str)]) -> (u16, Value) {
    let response = setup.http.post(setup.muster.url("/oauth/token")).form(form).send().await.expect("token");
    let status = response.status().as_u16();
    assert_eq!(response.headers()["cache-control"], "no-store");
    (status, response.json().await.expect("token json"))
}

async fn redeem(setup: &Setup, client_id: &str, location: &str, verifier: &str) -> (u16, Value) {
    let code = query(location)["code"].clone();
    let redirect = location.split('?').next().expect("uri");
    token(
        setup,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("client_id", client_id),
            ("code_verifier", verifier),
        ],
    )
    .await
}

pub(crate) async fn register(setup: &Setup, redirect_uris: &[&str]) -> (u16, Value) {
    let response = setup
        .http
        .post(setup.muster.url("/oauth/register"))
        .json(&json!({"redirect_uris": redirect_uris, "client_name": "test agent"}))
        .send()
        .await
        .expect("register");
    (response.status().as_u16(), response.json().await.expect("json"))
}

/// Whether `/mcp` lets the bearer in (a ping).
async fn admitted(setup: &Setup, token: &str) -> reqwest::Response {
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    post_rpc(&setup.http, &setup.muster.mcp_url(), Some(token), ping).send().await.expect("mcp")
}

fn view(peers: &Peers, setup: &Setup, token: &str, cluster: &str) -> Value {
    call(
        peers,
        &setup.muster.mcp_url(),
        token,
        "x_kubernetes_configuration_view",
        json!({"management_cluster": cluster}),
    )
}

#[actix_web::test]
async fn an_agent_registers_signs_in_once_and_reaches_every_cluster() {
    let peers = Peers::load();
    let setup = setup(&peers, 2, &[], &[]).await;
    let muster = &setup.muster;

    // Discovery: /mcp → 401 → RFC 9728 names muster → RFC 8414.
    let anonymous = admitted(&setup, "").await;
    assert_eq!(anonymous.status(), 401);
    let prm: Value = setup
        .http
        .get(muster.url("/.well-known/oauth-protected-resource/mcp"))
        .send()
        .await
        .expect("prm")
        .json()
        .await
        .expect("json");
    assert_eq!(prm["authorization_servers"], json!([muster.url("")]));
    let metadata: Value = setup
        .http
        .get(muster.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .expect("as")
        .json()
        .await
        .expect("json");
    assert_eq!(metadata["issuer"], muster.url(""));
    assert_eq!(metadata["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(metadata["client_id_metadata_document_supported"], true);
    assert_eq!(metadata["registration_endpoint"], muster.url("/oauth/register"));

    // DCR with a loopback redirect, no registration token needed.
    let (status, client) = register(&setup, &[REDIRECT]).await;
    assert_eq!(status, 201, "{client}");
    let client_id = client["client_id"].as_str().expect("client_id").to_owned();

    let (verifier, challenge) = pkce();
    let location = sign_in(&peers, &setup, "alice", &client_id, &challenge);
    let params = query(&location);
    assert_eq!((params["state"].as_str(), params["iss"].as_str()), ("agent-state", muster.url("").as_str()));
    let (status, tokens) = redeem(&setup, &client_id, &location, &verifier).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().expect("access").to_owned();
    let refresh = tokens["refresh_token"].as_str().expect("refresh").to_owned();
    assert!(tokens["expires_in"].as_u64().expect("expires_in") <= 1800);

    // Single sign-on at sign-in: every cluster's exchange ran before the first call.
    for cluster in &setup.clusters {
        let issuer = cluster.issuer.clone();
        eventually(std::time::Duration::from_secs(10), "the exchange at sign-in", async || {
            (stats(&issuer).await["by_sub"]["alice"] == 1).then_some(())
        })
        .await;
    }
    // ...so auth://status shows every cluster connected by exchange before any call.
    let status = py_client(&peers, &muster.mcp_url(), &access, &["read", "auth://status"]);
    let status: Value = serde_json::from_str(status["contents"][0]["text"].as_str().expect("text")).expect("json");
    let servers = status["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 2, "{status}");
    assert!(servers.iter().all(|s| s["status"] == "connected" && s["token_exchange_enabled"] == true), "{status}");
    // The token reaches every cluster, each with its own exchanged token, exchanged once.
    for cluster in &setup.clusters {
        for _ in 0..2 {
            let answer = view(&peers, &setup, &access, &cluster.name);
            assert!(upstream_answered(&answer), "{}: {answer}", cluster.name);
        }
        assert_eq!(stats(&cluster.issuer).await["by_sub"]["alice"], 1, "{}", cluster.name);
    }

    // A reused code fails and revokes what it gave.
    let (status, error) = redeem(&setup, &client_id, &location, &verifier).await;
    assert_eq!((status, error["error"].as_str()), (400, Some("invalid_grant")), "{error}");
    let revoked = admitted(&setup, &access).await;
    assert_eq!(revoked.status(), 401);
    assert!(revoked.headers()["www-authenticate"].to_str().expect("ascii").contains("invalid_token"));
    let (status, _) =
        token(&setup, &[("grant_type", "refresh_token"), ("refresh_token", &refresh), ("client_id", &client_id)]).await;
    assert_eq!(status, 400, "the refresh token of a reused code's family is revoked too");

    // Refresh rotates; reusing a rotated refresh token revokes the family.
    let (verifier, challenge) = pkce();
    let location = sign_in(&peers, &setup, "alice", &client_id, &challenge);
    let (_, first) = redeem(&setup, &client_id, &location, &verifier).await;
    let old_refresh = first["refresh_token"].as_str().expect("refresh").to_owned();
    let refreshed =
        [("grant_type", "refresh_token"), ("refresh_token", old_refresh.as_str()), ("client_id", client_id.as_str())];
    let (status, second) = token(&setup, &refreshed).await;
    assert_eq!(status, 200, "{second}");
    let access = second["access_token"].as_str().expect("access").to_owned();
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert!(upstream_answered(&view(&peers, &setup, &access, "cluster-a")));
    let (status, error) = token(&setup, &refreshed).await;
    assert_eq!((status, error["error"].as_str()), (400, Some("invalid_grant")), "{error}");
    assert_eq!(admitted(&setup, &access).await.status(), 401, "the whole family is revoked");
    let newest = [
        ("grant_type", "refresh_token"),
        ("refresh_token", second["refresh_token"].as_str().expect("rt")),
        ("client_id", client_id.as_str()),
    ];
    assert_eq!(token(&setup, &newest).await.0, 400);

    // Bearer JWTs from the central IdP keep working beside muster's tokens.
    let (code, stdout, stderr) = run(Command::new(format!("{}/node", peers.get("MUSTER_NODE22")))
        .arg(Peers::repo_file("tests/peers/idp_login.mjs"))
        .args([&setup.central, "bob", "--client", "muster", "--secret", MUSTER_SECRET])
        .env("MUSTER_NODE_MODULES", peers.get("MUSTER_NODE_MODULES")));
    assert_eq!(code, 0, "{stdout} {stderr}");
    let bob: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert!(upstream_answered(&view(&peers, &setup, bob["id_token"].as_str().expect("id"), "cluster-b")));
}

/// Asserts a page for a person: status, text, and the headers that keep it safe; never a redirect.
async fn assert_page(response: reqwest::Response, status: u16, text: &str) {
    assert_eq!(response.status().as_u16(), status);
    let headers = response.headers().clone();
    assert!(headers.get("location").is_none(), "a page never redirects");
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(headers[name], value, "{name}");
    }
    assert!(headers["content-security-policy"].to_str().expect("csp").contains("default-src 'none'"));
    let body = response.text().await.expect("page");
    assert!(body.contains(text), "{body}");
}

async fn get(setup: &Setup, url: &str) -> reqwest::Response {
    setup.http.get(url).send().await.expect("get")
}

#[actix_web::test]
async fn bad_input_gets_a_precise_oauth_error_and_pages_never_redirect_elsewhere() {
    let peers = Peers::load();
    let mut setup = setup(&peers, 0, &[], &[]).await;
    let muster = &setup.muster;
    let (_, client) = register(&setup, &[REDIRECT]).await;
    let client_id = client["client_id"].as_str().expect("client_id").to_owned();
    let (verifier, challenge) = pkce();

    // Unknown client, unregistered redirect URI: pages, no redirect.
    assert_page(
        get(&setup, &authorize_url(muster, "nobody", REDIRECT, Some(&challenge), "S256")).await,
        400,
        "not registered",
    )
    .await;
    let evil = "https://evil.example/callback";
    assert_page(
        get(&setup, &authorize_url(muster, &client_id, evil, Some(&challenge), "S256")).await,
        400,
        "Redirect URI not registered",
    )
    .await;
    // PKCE missing or plain, a foreign resource: back to the agent with the error.
    for (challenge, method, error) in
        [(None, "S256", "invalid_request"), (Some(challenge.as_str()), "plain", "invalid_request")]
    {
        let response = get(&setup, &authorize_url(muster, &client_id, REDIRECT, challenge, method)).await;
        assert_eq!(response.status(), 302);
        let params = query(response.headers()["location"].to_str().expect("ascii"));
        assert_eq!((params["error"].as_str(), params["state"].as_str()), (error, "agent-state"), "{params:?}");
        assert!(params["error_description"].contains("S256") || params["error_description"].contains("PKCE"));
    }
    let foreign = authorize_url(muster, &client_id, REDIRECT, Some(&challenge), "S256")
        .replace("resource=", "resource=https%3A%2F%2Fother.example&x=");
    let response = get(&setup, &foreign).await;
    assert_eq!(query(response.headers()["location"].to_str().expect("ascii"))["error"], "invalid_target");
    // A callback whose state muster never issued.
    assert_page(get(&setup, &muster.url("/oauth/callback?state=forged&code=x")).await, 400, "state mismatch").await;

    // The token endpoint.
    let cases: [(Form<'_>, u16, &str); 5] = [
        (&[("grant_type", "authorization_code"), ("code", "x"), ("client_id", "nobody")], 401, "invalid_client"),
        (&[("grant_type", "authorization_code"), ("code", "mac_x"), ("client_id", &client_id)], 400, "invalid_grant"),
        (&[("code", "x"), ("client_id", &client_id)], 400, "invalid_request"),
        (&[("grant_type", "password"), ("client_id", &client_id)], 400, "unsupported_grant_type"),
        (
            &[("grant_type", "refresh_token"), ("refresh_token", "mrt_x"), ("client_id", &client_id)],
            400,
            "invalid_grant",
        ),
    ];
    for (form, status, error) in cases {
        let (got, body) = token(&setup, form).await;
        assert_eq!((got, body["error"].as_str()), (status, Some(error)), "{form:?}: {body}");
    }
    // A confidential client must authenticate (HTTP Basic or the form).
    let response = setup
        .http
        .post(muster.url("/oauth/register"))
        .json(&json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_basic"}))
        .send()
        .await
        .expect("register");
    let confidential: Value = response.json().await.expect("json");
    let (id, secret) =
        (confidential["client_id"].as_str().expect("id"), confidential["client_secret"].as_str().expect("secret"));
    let code = [("grant_type", "authorization_code"), ("code", "mac_x"), ("redirect_uri", REDIRECT)];
    let without = token(&setup, &[code.as_slice(), &[("client_id", id)]].concat()).await;
    assert_eq!((without.0, without.1["error"].as_str()), (401, Some("invalid_client")), "{}", without.1);
    let wrong = setup
        .http
        .post(muster.url("/oauth/token"))
        .basic_auth(id, Some("nope"))
        .form(&code)
        .send()
        .await
        .expect("token");
    assert_eq!(wrong.status(), 401);
    let right = setup
        .http
        .post(muster.url("/oauth/token"))
        .basic_auth(id, Some(secret))
        .form(&code)
        .send()
        .await
        .expect("token");
    let right: Value = right.json().await.expect("json");
    assert_eq!(right["error"], "invalid_grant", "authenticated, then the code is checked: {right}");
    let posted = token(&setup, &[code.as_slice(), &[("client_id", id), ("client_secret", secret)]].concat()).await;
    assert_eq!(posted.1["error"], "invalid_grant", "{}", posted.1);
    // A wrong PKCE verifier, then the code is spent.
    let location = sign_in(&peers, &setup, "alice", &client_id, &challenge);
    let (status, body) = redeem(&setup, &client_id, &location, &pkce().0).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    assert_eq!(redeem(&setup, &client_id, &location, &verifier).await.0, 400);
    // Revocation ends an access token at once; an unknown one is refused on /mcp.
    let location = sign_in(&peers, &setup, "alice", &client_id, &challenge);
    let (_, tokens) = redeem(&setup, &client_id, &location, &verifier).await;
    let access = tokens["access_token"].as_str().expect("access");
    assert_ne!(admitted(&setup, access).await.status(), 401, "let in");
    let revoked = setup
        .http
        .post(muster.url("/oauth/revoke"))
        .form(&[("token", access), ("client_id", &client_id)])
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status(), 200);
    for token in [access, "mat_unknown"] {
        let refused = admitted(&setup, token).await;
        assert_eq!(refused.status(), 401);
        assert!(refused.headers()["www-authenticate"].to_str().expect("ascii").contains("error=\"invalid_token\""));
    }

    // Registration: an untrusted redirect needs the token; bodies are bounded and must be JSON.
    let (status, body) = register(&setup, &["https://evil.example/callback"]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_client_metadata")), "{body}");
    let huge = json!({"redirect_uris": [REDIRECT], "client_name": "x".repeat(40_000)});
    let response = setup.http.post(muster.url("/oauth/register")).json(&huge).send().await.expect("register");
    assert_eq!(response.status(), 413);
    let response = setup.http.post(muster.url("/oauth/register")).body("{").send().await.expect("register");
    assert_eq!(response.status(), 400);

    // The user cancels at the IdP: the agent hears access_denied at its own redirect URI.
    let response = get(&setup, &authorize_url(muster, &client_id, REDIRECT, Some(&challenge), "S256")).await;
    let idp_state = query(response.headers()["location"].to_str().expect("ascii"))["state"].clone();
    let cancelled = get(&setup, &muster.url(&format!("/oauth/callback?state={idp_state}&error=access_denied"))).await;
    let location = cancelled.headers()["location"].to_str().expect("ascii").to_owned();
    assert!(location.starts_with(REDIRECT), "{location}");
    let params = query(&location);
    assert_eq!((params["error"].as_str(), params["state"].as_str()), ("access_denied", "agent-state"));
    assert!(params["error_description"].contains("cancelled"), "{params:?}");
    // The IdP refusing its code at the callback: a page naming it and its error.
    let response = get(&setup, &authorize_url(muster, &client_id, REDIRECT, Some(&challenge), "S256")).await;
    let idp_state = query(response.headers()["location"].to_str().expect("ascii"))["state"].clone();
    let refused = get(&setup, &muster.url(&format!("/oauth/callback?state={idp_state}&code=forged"))).await;
    assert_page(refused, 502, "invalid_grant").await;
    // The IdP down at the callback: a page naming it, never a 500.
    let response = get(&setup, &authorize_url(muster, &client_id, REDIRECT, Some(&challenge), "S256")).await;
    let idp_state = query(response.headers()["location"].to_str().expect("ascii"))["state"].clone();
    drop(std::mem::replace(&mut setup.central_idp, Process(Command::new("true").spawn().expect("true"))));
    let callback = muster.url(&format!("/oauth/callback?state={idp_state}&code=x"));
    assert_page(get(&setup, &callback).await, 502, &setup.central).await;

    // Metrics count the outcomes, and hold no token.
    let metrics = get(&setup, &muster.url("/metrics")).await.text().await.expect("metrics");
    for line in [
        r#"muster_oauth_requests_total{endpoint="token",outcome="invalid_grant"}"#,
        r#"muster_oauth_requests_total{endpoint="authorize",outcome="page"}"#,
        r#"muster_oauth_requests_total{endpoint="authorize",outcome="redirected_error"}"#,
        r#"muster_oauth_requests_total{endpoint="callback",outcome="ok"}"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(!metrics.contains("mat_") && !metrics.contains("mrt_") && !metrics.contains("mac_"));
    // Sign-in attempts from one address are rate-limited, with a clear error.
    let mut limited = None;
    for _ in 0..70 {
        let response = setup.http.post(muster.url("/oauth/register")).body("{}").send().await.expect("register");
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.expect("rate-limited within 70 attempts");
    assert!(limited.headers().contains_key("retry-after"));
    let body: Value = limited.json().await.expect("json");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(body["error_description"].as_str().expect("text").contains("too many sign-in attempts"), "{body}");
}

/// Serves a CIMD document at `http://127.0.0.1:PORT/client.json` (after `delay`): one naming
/// its own URL as `client_id`, with `extra` fields on top. Returns the URL. It runs on threads of
/// its own, since the test blocks its runtime while a sign-in runs.
fn cimd_client(extra: Value, delay: std::time::Duration) -> String {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://127.0.0.1:{}/client.json", listener.local_addr().expect("addr").port());
    let mut document = json!({"client_id": url, "client_name": "cimd agent", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"});
    document.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
    let body = document.to_string();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let body = body.clone();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer);
                std::thread::sleep(delay);
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body.as_bytes());
            });
        }
    });
    url
}

#[actix_web::test]
async fn a_client_id_metadata_document_signs_in_and_bad_documents_are_refused() {
    let peers = Peers::load();
    let setup = setup(&peers, 1, &[], &[]).await;
    let muster = &setup.muster;
    let instant = std::time::Duration::ZERO;

    // A CIMD client, no registration: sign in and reach the cluster.
    let client_id = cimd_client(json!({}), instant);
    let (verifier, challenge) = pkce();
    let location = sign_in(&peers, &setup, "carol", &client_id, &challenge);
    let (status, tokens) = redeem(&setup, &client_id, &location, &verifier).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().expect("access");
    assert!(upstream_answered(&view(&peers, &setup, access, "cluster-a")));
    // Its redirect URIs are enforced.
    let elsewhere = authorize_url(muster, &client_id, "http://127.0.0.1/other", Some(&challenge), "S256");
    assert_page(get(&setup, &elsewhere).await, 400, "Redirect URI not registered").await;

    // Documents muster refuses, each with its reason on the page.
    let too_large = cimd_client(json!({"client_name": "x".repeat(6 * 1024)}), instant);
    let slow = cimd_client(json!({}), std::time::Duration::from_secs(8));
    let impostor = cimd_client(json!({"client_id": "https://someone.else/client.json"}), instant);
    let confidential = cimd_client(json!({"token_endpoint_auth_method": "private_key_jwt"}), instant);
    for (client_id, reason) in [
        (too_large.as_str(), "larger than 5120 bytes"),
        (slow.as_str(), "within 5 s"),
        (impostor.as_str(), "not its own URL"),
        (confidential.as_str(), "only public clients"),
        ("https://10.0.0.1/client.json", "private network"),
        ("https://169.254.169.254/latest/meta-data", "metadata"),
    ] {
        let url = authorize_url(muster, client_id, REDIRECT, Some(&challenge), "S256");
        assert_page(get(&setup, &url).await, 400, reason).await;
    }
}

#[actix_web::test]
async fn muster_refreshes_the_users_id_token_so_exchanges_outlive_it() {
    let peers = Peers::load();
    // ID tokens of 6 s; exchanged tokens of 2 s, so every call exchanges the current ID token.
    let setup = setup(&peers, 1, &[("ID_TOKEN_TTL", "6")], &["--ttl", "2"]).await;
    let (_, client) = register(&setup, &[REDIRECT]).await;
    let client_id = client["client_id"].as_str().expect("client_id").to_owned();
    let (verifier, challenge) = pkce();
    let location = sign_in(&peers, &setup, "dave", &client_id, &challenge);
    let (_, tokens) = redeem(&setup, &client_id, &location, &verifier).await;
    assert!(tokens["expires_in"].as_u64().expect("expires_in") <= 6, "never longer than the IdP's tokens: {tokens}");
    assert!(upstream_answered(&view(&peers, &setup, tokens["access_token"].as_str().expect("at"), "cluster-a")));

    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    // The access token expired with the IdP's; the agent refreshes it.
    assert_eq!(admitted(&setup, tokens["access_token"].as_str().expect("at")).await.status(), 401);
    let refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", tokens["refresh_token"].as_str().expect("rt")),
        ("client_id", client_id.as_str()),
    ];
    let (status, fresh) = token(&setup, &refresh).await;
    assert_eq!(status, 200, "{fresh}");
    // The user's ID token expired too: muster refreshed it at the IdP, and the exchange works.
    let answer = view(&peers, &setup, fresh["access_token"].as_str().expect("at"), "cluster-a");
    assert!(upstream_answered(&answer), "{answer}");
    let stats = stats(&setup.clusters[0].issuer).await;
    assert!(stats["by_sub"]["dave"].as_u64().expect("exchanges") >= 2, "{stats}");
    assert_eq!(stats["failures"], 0, "no exchange saw an expired ID token: {stats}");
}

/// The Python SDK's own OAuth client (`OAuthClientProvider`), as an IDE agent runs it: discovery,
/// registration (DCR, or with `cimd` the https Client ID Metadata Document at that URL), PKCE,
/// the login, a family call, then a refresh of its expired access token and a second call.
fn python_sdk_client(peers: &Peers, setup: &Setup, user: &str, cimd: Option<&str>) -> Value {
    let args = json!({"management_cluster": "cluster-a"}).to_string();
    let node = format!("{}/node", peers.get("MUSTER_NODE22"));
    let login = Peers::repo_file("tests/peers/idp_login.mjs");
    let mcp_url = setup.muster.mcp_url();
    let mut client = peers.python("py_oauth_client.py");
    client
        .args([&mcp_url, &setup.central, user, "x_kubernetes_configuration_view", &args, "--node", &node, "--login"])
        .arg(&login)
        .env("MUSTER_NODE_MODULES", peers.get("MUSTER_NODE_MODULES"));
    if let Some(url) = cimd {
        client.args(["--cimd", url]);
    }
    let (code, stdout, stderr) = run(&mut client);
    assert_eq!(code, 0, "{stdout} {stderr}");
    let result: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert!(upstream_answered(&result["first"]), "{result}");
    assert!(upstream_answered(&result["second"]), "{result}");
    assert_eq!((result["refreshed"].as_bool(), result["logins"].as_u64()), (Some(true), Some(1)), "{result}");
    result
}

#[actix_web::test]
async fn the_python_sdks_oauth_client_signs_in_through_muster_and_refreshes() {
    let peers = Peers::load();
    let setup = setup(&peers, 1, &[], &[]).await;
    let result = python_sdk_client(&peers, &setup, "erin", None);
    assert!(result["client_id"].as_str().is_some_and(|id| id.starts_with("mcl_")), "registered: {result}");
}

/// The same SDK client with a CIMD `client_id`: the SDK takes it only as an https URL, so the
/// document is served over TLS on loopback with a throwaway CA that muster trusts through
/// `SSL_CERT_FILE` (without it, muster refuses the document: "invalid peer certificate").
/// No registration happens.
#[actix_web::test]
async fn the_python_sdks_oauth_client_signs_in_with_a_client_id_metadata_document() {
    let peers = Peers::load();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = peers
        .python("https_cimd.py")
        .arg(dir.path())
        .arg("http://127.0.0.1:53124/callback")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("https_cimd.py");
    let url = {
        use std::io::BufRead as _;
        let stdout = server.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).expect("the document's URL");
        line.trim().to_owned()
    };
    let _server = Process(server);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca = dir.path().join("ca.pem");
    let setup = setup_with_env(&peers, 1, &[], &[], &[("SSL_CERT_FILE", ca.as_os_str())]).await;
    let result = python_sdk_client(&peers, &setup, "frank", Some(&url));
    assert_eq!(result["client_id"], url.as_str(), "the document's URL is the client_id: {result}");
}

#[actix_web::test]
async fn an_identity_provider_down_at_authorize_gets_a_page_naming_it() {
    let peers = Peers::load();
    let mut setup = setup(&peers, 0, &[], &[]).await;
    let (_, client) = register(&setup, &[REDIRECT]).await;
    let client_id = client["client_id"].as_str().expect("client_id").to_owned();
    drop(std::mem::replace(&mut setup.central_idp, Process(Command::new("true").spawn().expect("true"))));
    let url = authorize_url(&setup.muster, &client_id, REDIRECT, Some(&pkce().1), "S256");
    assert_page(get(&setup, &url).await, 502, &format!("{} is unreachable", setup.central)).await;
}
