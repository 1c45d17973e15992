//! muster's sign-in in a real browser (issue 14): headless Chromium (Debian's `chromium`, driven
//! over the DevTools protocol by `tests/peers/browser.mjs`) loads muster's sign-in error pages and
//! checks their text and security headers, and signs a person in once for the Python SDK's OAuth
//! client, through the central IdP's own login pages, back through muster to the agent's loopback
//! listener; the agent then calls a family tool.
//!
//! Without Chromium these tests say so and pass, unless `MUSTER_REQUIRE_PEERS` is set (as
//! `scripts/test.sh` does): then a missing browser fails them.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::oauth_server::{REDIRECT, Setup, authorize_url, pkce, query, register, setup};
use crate::sso::upstream_answered;
use crate::support::{Peers, Process, run};

/// Chromium: `MUSTER_CHROMIUM` (the peers' env.sh sets it), else `chromium` on the PATH; see
/// [`Peers::system`].
pub(crate) fn chromium(peers: &Peers) -> Option<PathBuf> {
    peers.system("MUSTER_CHROMIUM", "chromium")
}

/// Runs `browser.mjs` with `args`; its JSON answer.
pub(crate) fn browser(peers: &Peers, chromium: &PathBuf, args: &[&str]) -> Value {
    let (code, stdout, stderr) = run(Command::new(format!("{}/node", peers.get("MUSTER_NODE22")))
        .arg(Peers::repo_file("tests/peers/browser.mjs"))
        .arg(chromium)
        .args(args));
    assert_eq!(code, 0, "browser.mjs {args:?}: {stdout} {stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("browser.mjs printed no JSON ({e}): {stdout}"))
}

/// An agent's loopback redirect URI that answers every request with a small page.
pub(crate) fn agent_listener() -> String {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://127.0.0.1:{}/callback", listener.local_addr().expect("addr").port());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let body = "<!doctype html><title>agent</title><p>the agent heard back</p>";
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
    });
    url
}

/// The IdP `state` of a fresh authorization request of `client_id` (what muster sends the browser to the IdP with).
async fn idp_state(setup: &Setup, client_id: &str, redirect: &str) -> String {
    let url = authorize_url(&setup.muster, client_id, redirect, Some(&pkce().1), "S256");
    let response = setup.http.get(url).send().await.expect("authorize");
    assert_eq!(response.status(), 302);
    query(response.headers()["location"].to_str().expect("ascii"))["state"].clone()
}

/// Asserts what Chromium saw of one of muster's pages: its status, its text, the headers that keep
/// it safe, and that it went nowhere else and offers nothing that could (no link, form, script,
/// frame or refresh).
fn assert_page(page: &Value, status: u16, texts: &[&str]) {
    assert_eq!(page["status"], status, "{page}");
    let headers = &page["headers"];
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(headers[name], value, "{name}: {page}");
    }
    let csp = headers["content-security-policy"].as_str().expect("a CSP");
    for directive in ["default-src 'none'", "frame-ancestors 'none'", "form-action 'none'", "base-uri 'none'"] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(headers["content-type"].as_str().is_some_and(|t| t.starts_with("text/html")), "{page}");
    assert_eq!(page["redirects"], json!([]), "a page never redirects: {page}");
    assert_eq!(page["finalUrl"], page["url"], "{page}");
    assert_eq!(page["active"], 0, "nothing on the page leads elsewhere or runs: {page}");
    let text = page["text"].as_str().expect("text");
    for expected in texts {
        assert!(text.contains(expected), "{expected:?} in {text:?}");
    }
}

#[actix_web::test]
async fn chromium_shows_the_sign_in_error_pages_with_their_security_headers() {
    let peers = Peers::load();
    let Some(chromium) = chromium(&peers) else { return };
    let mut setup = setup(&peers, 0, &[], &[]).await;
    let agent = agent_listener();
    let (status, client) = register(&setup, &[REDIRECT, &agent]).await;
    assert_eq!(status, 201, "{client}");
    let client_id = client["client_id"].as_str().expect("client_id").to_owned();
    let challenge = pkce().1;
    let muster = &setup.muster;

    let unknown = authorize_url(muster, "nobody", REDIRECT, Some(&challenge), "S256");
    let evil = "https://evil.example/callback";
    let unregistered = authorize_url(muster, &client_id, evil, Some(&challenge), "S256");
    let forged_state = muster.url("/oauth/callback?state=forged&code=x");
    let state = idp_state(&setup, &client_id, REDIRECT).await;
    let refused_code = muster.url(&format!("/oauth/callback?state={state}&code=forged"));
    let state = idp_state(&setup, &client_id, &agent).await;
    let cancelled = muster.url(&format!("/oauth/callback?state={state}&error=access_denied"));
    let pages =
        browser(&peers, &chromium, &["pages", &unknown, &unregistered, &forged_state, &refused_code, &cancelled]);
    let pages = pages.as_array().expect("pages");

    assert_page(&pages[0], 400, &["Unknown client", "not registered"]);
    assert_page(&pages[1], 400, &["Redirect URI not registered", evil, "muster does not send you there"]);
    assert!(!pages[1]["text"].as_str().expect("text").contains("<"), "the page shows text, not markup");
    assert_page(&pages[2], 400, &["Sign-in expired", "state mismatch"]);
    assert_page(&pages[3], 502, &["Identity provider error", "invalid_grant"]);
    // The person cancelled at the IdP: the browser goes to the agent's registered redirect URI
    // only, carrying access_denied and the agent's state.
    let redirects = pages[4]["redirects"].as_array().expect("redirects");
    assert_eq!(redirects.len(), 1, "{}", pages[4]);
    let landed = pages[4]["finalUrl"].as_str().expect("url");
    assert!(landed.starts_with(&format!("{agent}?")), "{landed}");
    let params = query(landed);
    assert_eq!((params["error"].as_str(), params["state"].as_str()), ("access_denied", "agent-state"), "{params:?}");
    assert_eq!(pages[4]["text"], "the agent heard back");

    // The IdP down when the browser comes back: a page naming it, never a 500 and never a redirect.
    let state = idp_state(&setup, &client_id, REDIRECT).await;
    drop(std::mem::replace(&mut setup.central_idp, Process(Command::new("true").spawn().expect("true"))));
    let down = setup.muster.url(&format!("/oauth/callback?state={state}&code=x"));
    let pages = browser(&peers, &chromium, &["pages", &down]);
    let unreachable = format!("{} is unreachable", setup.central);
    assert_page(&pages[0], 502, &["Identity provider error", &unreachable]);
}

#[actix_web::test]
async fn a_person_signs_in_once_in_chromium_and_the_agent_reaches_the_cluster() {
    let peers = Peers::load();
    let Some(chromium) = chromium(&peers) else { return };
    let setup = setup(&peers, 1, &[], &[]).await;
    let args = json!({"management_cluster": "cluster-a"}).to_string();
    let node = format!("{}/node", peers.get("MUSTER_NODE22"));
    let mcp_url = setup.muster.mcp_url();
    let (code, stdout, stderr) = run(peers
        .python("py_oauth_client.py")
        .args([&mcp_url, &setup.central, "frank", "x_kubernetes_configuration_view", &args, "--node", &node])
        .arg("--browser")
        .arg(Peers::repo_file("tests/peers/browser.mjs"))
        .arg("--chromium")
        .arg(&chromium));
    assert_eq!(code, 0, "{stdout} {stderr}");
    let result: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert!(upstream_answered(&result["first"]), "{result}");
    assert!(upstream_answered(&result["second"]), "refreshed: {result}");
    assert_eq!((result["refreshed"].as_bool(), result["logins"].as_u64()), (Some(true), Some(1)), "{result}");

    // The browser went muster → the IdP's login and consent pages → muster's callback → the agent.
    let browser = &result["browser"];
    let documents: Vec<&str> =
        browser["documents"].as_array().expect("documents").iter().map(|d| d.as_str().expect("url")).collect();
    let position = |prefix: &str| {
        documents.iter().position(|d| d.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix} in {documents:?}"))
    };
    let authorize = position(&setup.muster.url("/oauth/authorize?"));
    let idp = position(&setup.central);
    let callback = position(&setup.muster.url("/oauth/callback?"));
    let agent = documents.len() - 1;
    assert!(authorize < idp && idp < callback && callback < agent, "{documents:?}");
    let steps = browser["steps"].as_array().expect("steps");
    assert!(steps.len() >= 2, "the person filled in the IdP's form(s): {browser}");
    let landed = browser["finalUrl"].as_str().expect("url");
    assert!(landed.starts_with("http://127.0.0.1:") && landed.contains("/callback?code="), "{landed}");
    let params = query(landed);
    assert_eq!(params["iss"], setup.muster.url(""), "RFC 9207 iss: {params:?}");
    assert!(browser["text"].as_str().is_some_and(|t| t.contains("Signed in")), "{browser}");
}
