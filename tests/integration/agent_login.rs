//! `muster auth login` (the login code the agent bridge shares) against an authorization server
//! that is muster itself: the RFC 9728 document names muster's own origin, whose RFC 8414
//! metadata offers registration. The CLI must register (RFC 7591, loopback redirect), send PKCE
//! S256 and the RFC 8707 `resource`, and keep the access token (not an ID token) as its bearer.
//! The first test runs against a stand-in with exactly those documents and checks (test-only),
//! so each request can be inspected; the second against muster's real authorization server in
//! front of the central IdP, through to a call on a cluster with the exchanged token.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::support::{Peers, PendingLogin, free_port, run};

const WAIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Seen {
    /// (client id, redirect URIs) of each registration.
    registrations: Vec<(String, Vec<String>)>,
    /// The authorize request's query.
    authorize: Option<web::Query<std::collections::HashMap<String, String>>>,
    /// The token request's form.
    token: Option<web::Form<std::collections::HashMap<String, String>>>,
}

type Shared = web::Data<(String, Arc<Mutex<Seen>>)>;

/// The stand-in: muster's origin serving the RFC 9728 and RFC 8414 documents, `/oauth/register`,
/// `/oauth/authorize` (straight back to the redirect URI with a code) and `/oauth/token`.
fn start(port: u16, seen: Arc<Mutex<Seen>>) -> actix_web::dev::ServerHandle {
    let base = format!("http://127.0.0.1:{port}");
    let data: Shared = web::Data::new((base, seen));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route(
                "/.well-known/oauth-protected-resource/mcp",
                web::get().to(|data: Shared| async move {
                    let base = &data.0;
                    HttpResponse::Ok().json(json!({"resource": format!("{base}/mcp"), "authorization_servers": [base]}))
                }),
            )
            .route(
                "/.well-known/oauth-authorization-server",
                web::get().to(|data: Shared| async move {
                    let base = &data.0;
                    HttpResponse::Ok().json(json!({
                        "issuer": base,
                        "authorization_endpoint": format!("{base}/oauth/authorize"),
                        "token_endpoint": format!("{base}/oauth/token"),
                        "registration_endpoint": format!("{base}/oauth/register"),
                        "code_challenge_methods_supported": ["S256"],
                        "scopes_supported": ["openid", "profile", "email", "groups", "offline_access"],
                    }))
                }),
            )
            .route(
                "/oauth/register",
                web::post().to(|data: Shared, body: web::Json<Value>| async move {
                    let uris: Vec<String> = serde_json::from_value(body["redirect_uris"].clone()).unwrap_or_default();
                    let mut seen = data.1.lock().expect("lock");
                    let id = format!("registered-{}", seen.registrations.len() + 1);
                    seen.registrations.push((id.clone(), uris.clone()));
                    HttpResponse::Created().json(json!({"client_id": id, "redirect_uris": uris}))
                }),
            )
            .route(
                "/oauth/authorize",
                web::get().to(
                    |data: Shared, query: web::Query<std::collections::HashMap<String, String>>| async move {
                        let location = format!("{}?code=the-code&state={}", query["redirect_uri"], query["state"]);
                        data.1.lock().expect("lock").authorize = Some(query);
                        HttpResponse::Found().insert_header(("location", location)).finish()
                    },
                ),
            )
            .route(
                "/oauth/token",
                web::post().to(|data: Shared, form: web::Form<std::collections::HashMap<String, String>>| async move {
                    data.1.lock().expect("lock").token = Some(form);
                    HttpResponse::Ok().json(json!({
                        "access_token": "muster-access-token",
                        "token_type": "Bearer",
                        "expires_in": 1800,
                        "refresh_token": "muster-refresh-token",
                    }))
                }),
            )
    })
    .workers(1)
    .shutdown_timeout(0)
    .bind(("127.0.0.1", port))
    .expect("bind")
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    handle
}

#[actix_web::test]
async fn auth_login_registers_at_musters_own_authorization_server_and_keeps_its_access_token() {
    let port = free_port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let _server = start(port, seen.clone());
    let endpoint = format!("http://127.0.0.1:{port}/mcp");
    let home = tempfile::tempdir().expect("tempdir");
    let mut login = PendingLogin::spawn(
        Command::new(env!("CARGO_BIN_EXE_muster"))
            .args(["auth", "login", "--no-browser", "--endpoint", &endpoint])
            .env("MUSTER_CONFIG_PATH", home.path())
            .env_remove("MUSTER_OAUTH_CLIENT_ID"),
    );
    let authorize = login.authorize_url(WAIT).await;
    assert!(authorize.starts_with(&format!("http://127.0.0.1:{port}/oauth/authorize?")), "{authorize}");

    // The browser: the authorize endpoint redirects to the CLI's loopback callback.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let redirect = http.get(&authorize).send().await.expect("authorize");
    let callback = redirect.headers()["location"].to_str().expect("ascii").to_owned();
    let landed = http.get(&callback).send().await.expect("callback");
    assert_eq!(landed.status(), 200);
    let (succeeded, output) = login.finish().await;
    assert!(succeeded, "login failed:\n{output}");

    let seen = seen.lock().expect("lock");
    let [(client_id, redirect_uris)] = seen.registrations.as_slice() else {
        panic!("one registration: {:?}", seen.registrations)
    };
    assert_eq!(redirect_uris.len(), 1);
    assert!(redirect_uris[0].starts_with("http://127.0.0.1:") && redirect_uris[0].ends_with("/callback"));
    let query = seen.authorize.as_ref().expect("authorize request");
    assert_eq!(&query["client_id"], client_id);
    assert_eq!(&query["redirect_uri"], &redirect_uris[0]);
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["resource"], endpoint, "RFC 8707 resource: muster's /mcp");
    assert!(query["scope"].contains("offline_access"), "{}", query["scope"]);
    let form = seen.token.as_ref().expect("token request");
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["code"], "the-code");
    assert_eq!(&form["client_id"], client_id);
    assert_eq!(form["resource"], endpoint);
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&form["code_verifier"]));
    assert_eq!(query["code_challenge"], challenge, "PKCE S256");

    // The stored bearer is the access token; the refresh token and where to use it are kept.
    let files: Vec<_> = std::fs::read_dir(home.path().join("tokens")).expect("tokens").flatten().collect();
    assert_eq!(files.len(), 1);
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(files[0].path()).expect("read")).expect("json");
    assert_eq!(stored["id_token"], "muster-access-token", "{stored}");
    assert_eq!(stored["access_token_bearer"], true);
    assert_eq!(stored["refresh_token"], "muster-refresh-token");
    assert_eq!(&stored["client_id"], client_id);
}

/// The same login against muster's real authorization server: the browser goes muster →
/// central IdP (login form) → muster's `/oauth/callback` → the CLI's loopback. The CLI then
/// reaches a cluster whose server accepts only its own exchanged token, with no client
/// registered by hand.
#[actix_web::test]
async fn auth_login_signs_in_through_musters_real_authorization_server_and_reaches_a_cluster() {
    let peers = Peers::load();
    let setup = crate::oauth_server::setup(&peers, 1, &[], &[]).await;
    let home = tempfile::tempdir().expect("tempdir");
    let muster_cli = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_muster"));
        cmd.args(args)
            .env("MUSTER_ENDPOINT", setup.muster.mcp_url())
            .env("MUSTER_CONFIG_PATH", home.path())
            .env("NO_COLOR", "1")
            .env_remove("MUSTER_OAUTH_CLIENT_ID");
        cmd
    };
    let mut login = PendingLogin::spawn(&mut muster_cli(&["auth", "login", "--no-browser"]));
    let authorize = login.authorize_url(WAIT).await;
    assert!(authorize.starts_with(&setup.muster.url("/oauth/authorize?")), "{authorize}");
    let (code, stdout, stderr) = run(Command::new(format!("{}/node", peers.get("MUSTER_NODE22")))
        .arg(Peers::repo_file("tests/peers/idp_login.mjs"))
        .args([setup.central.as_str(), "alice", "--follow-url", &authorize])
        .env("MUSTER_NODE_MODULES", peers.get("MUSTER_NODE_MODULES")));
    assert_eq!(code, 0, "browser stand-in: {stdout} {stderr}");
    let (succeeded, output) = login.finish().await;
    assert!(succeeded, "login failed:\n{output}");

    // The stored bearer is muster's own access token, not the IdP's ID token.
    let files: Vec<_> = std::fs::read_dir(home.path().join("tokens")).expect("tokens").flatten().collect();
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(files[0].path()).expect("read")).expect("json");
    assert_eq!(stored["access_token_bearer"], true, "{stored}");

    let (code, stdout, stderr) = run(&mut muster_cli(&["auth", "status"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let line = stdout.lines().find(|l| l.trim_start().starts_with("cluster-a-mcp-kubernetes")).unwrap_or_default();
    assert_eq!(line.trim(), "cluster-a-mcp-kubernetes   Connected [SSO: Exchanged]", "{stdout}");
    let (code, stdout, stderr) = run(&mut muster_cli(&[
        "call",
        "x_kubernetes_configuration_view",
        "--management_cluster=cluster-a",
        "--minified=false",
    ]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("apiVersion"), "{stdout}");
}
