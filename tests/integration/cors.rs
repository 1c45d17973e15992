//! CORS for MCP clients in a browser page (MCP Inspector in a browser): the discovery documents
//! and the token, registration and revocation endpoints answer any origin's preflight; `/mcp`
//! answers only the origins its Host/Origin guard allows, and a page of any other origin cannot
//! read it. Checked on the wire and from pages in headless Chromium.

use reqwest::Method;
use serde_json::Value;

use crate::browser::{agent_listener, browser, chromium};
use crate::oauth_server::{Setup, setup};
use crate::support::Peers;

/// An origin the default `allowedOrigins` (`http://localhost:*`, …) admits, and one it does not.
const INSPECTOR: &str = "http://localhost:6274";
const FOREIGN: &str = "https://evil.example";

async fn preflight(setup: &Setup, path: &str, origin: &str, method: &str) -> reqwest::Response {
    setup
        .http
        .request(Method::OPTIONS, setup.muster.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", "authorization, content-type, mcp-protocol-version")
        .send()
        .await
        .expect("preflight")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().expect("ascii"))
}

#[actix_web::test]
async fn public_endpoints_answer_any_origin_and_mcp_only_the_allowed_ones() {
    let peers = Peers::load();
    let setup = setup(&peers, 0, &[], &[]).await;

    // The discovery documents and the token, registration and revocation endpoints: any origin.
    for (path, method) in [
        ("/.well-known/oauth-protected-resource/mcp", "GET"),
        ("/.well-known/oauth-authorization-server", "GET"),
        ("/.well-known/openid-configuration", "GET"),
        ("/oauth/token", "POST"),
        ("/oauth/register", "POST"),
        ("/oauth/revoke", "POST"),
    ] {
        let answer = preflight(&setup, path, FOREIGN, method).await;
        assert_eq!(answer.status(), 204, "{path}");
        assert_eq!(header(&answer, "access-control-allow-origin"), Some("*"), "{path}");
        assert!(header(&answer, "access-control-allow-methods").is_some_and(|m| m.contains(method)), "{path}");
        let allowed = header(&answer, "access-control-allow-headers").expect("allow-headers").to_ascii_lowercase();
        for name in ["authorization", "content-type", "mcp-protocol-version"] {
            assert!(allowed.contains(name), "{path}: {name} in {allowed}");
        }
    }
    let metadata = setup
        .http
        .get(setup.muster.url("/.well-known/oauth-authorization-server"))
        .header("origin", FOREIGN)
        .send()
        .await
        .expect("metadata");
    assert_eq!((metadata.status().as_u16(), header(&metadata, "access-control-allow-origin")), (200, Some("*")));
    // A token error is readable too, with its headers.
    let refused = setup
        .http
        .post(setup.muster.url("/oauth/token"))
        .header("origin", FOREIGN)
        .form(&[("grant_type", "password")])
        .send()
        .await
        .expect("token");
    assert_eq!(refused.status(), 401);
    assert_eq!(header(&refused, "access-control-allow-origin"), Some("*"));
    assert!(header(&refused, "access-control-expose-headers").is_some_and(|e| e.contains("WWW-Authenticate")));
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"], "invalid_client", "{body}");
    // The sign-in pages are navigated to, never fetched: no CORS.
    let authorize = preflight(&setup, "/oauth/authorize", FOREIGN, "GET").await;
    assert_eq!(header(&authorize, "access-control-allow-origin"), None);

    // /mcp: an allowed origin gets its own origin back, and may read the sign-in challenge.
    let answer = preflight(&setup, "/mcp", INSPECTOR, "POST").await;
    assert_eq!(answer.status(), 204);
    assert_eq!(header(&answer, "access-control-allow-origin"), Some(INSPECTOR));
    assert_eq!(header(&answer, "vary"), Some("Origin"));
    let allowed = header(&answer, "access-control-allow-headers").expect("allow-headers").to_ascii_lowercase();
    assert!(allowed.contains("mcp-session-id") && allowed.contains("authorization"), "{allowed}");
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let post = |origin: &'static str| {
        crate::support::post_rpc(&setup.http, &setup.muster.mcp_url(), None, ping).header("origin", origin).send()
    };
    let challenged = post(INSPECTOR).await.expect("mcp");
    assert_eq!(challenged.status(), 401);
    assert_eq!(header(&challenged, "access-control-allow-origin"), Some(INSPECTOR));
    let exposed = header(&challenged, "access-control-expose-headers").expect("expose").to_ascii_lowercase();
    assert!(exposed.contains("www-authenticate") && exposed.contains("mcp-session-id"), "{exposed}");

    // Any other origin: the guard's 403, and nothing that lets a browser read it.
    let answer = preflight(&setup, "/mcp", FOREIGN, "POST").await;
    assert_eq!(answer.status(), 403);
    assert_eq!(header(&answer, "access-control-allow-origin"), None);
    let body: Value = answer.json().await.expect("json");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("Origin")), "{body}");
    let refused = post(FOREIGN).await.expect("mcp");
    assert_eq!((refused.status().as_u16(), header(&refused, "access-control-allow-origin")), (403, None));
    // An allowed origin with a foreign Host (DNS rebinding) is refused as well.
    let rebound = setup
        .http
        .request(Method::OPTIONS, setup.muster.mcp_url())
        .header("host", "evil.example")
        .header("origin", INSPECTOR)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight");
    assert_eq!((rebound.status().as_u16(), header(&rebound, "access-control-allow-origin")), (403, None));
}

/// What a page's own script gets from muster: the metadata's issuer, the registration's status,
/// and `/mcp`'s status and challenge, or the browser's refusal.
const PAGE_SCRIPT: &str = r#"(async () => {
  const out = {};
  const metadata = await fetch(MUSTER + '/.well-known/oauth-authorization-server', { headers: { 'MCP-Protocol-Version': '2025-06-18' } });
  out.issuer = (await metadata.json()).issuer;
  const registered = await fetch(MUSTER + '/oauth/register', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ redirect_uris: ['http://127.0.0.1/callback'], client_name: 'inspector in a page' }),
  });
  out.register = registered.status;
  try {
    const mcp = await fetch(MUSTER + '/mcp', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-06-18' },
      body: '{"jsonrpc":"2.0","id":1,"method":"ping"}',
    });
    out.mcp = { status: mcp.status, challenge: mcp.headers.get('www-authenticate') };
  } catch (e) {
    out.mcp = { refused: String(e) };
  }
  return out;
})()"#;

#[actix_web::test]
async fn a_page_in_chromium_reads_mcp_only_from_an_allowed_origin() {
    let peers = Peers::load();
    let Some(chromium) = chromium(&peers) else { return };
    let setup = setup(&peers, 0, &[], &[]).await;
    let script = PAGE_SCRIPT.replace("MUSTER", &format!("{:?}", setup.muster.url("")));
    let page = agent_listener().replace("/callback", "/");
    let allowed = page.replace("127.0.0.1", "localhost");
    let foreign = page.replace("127.0.0.1", "evil.test");

    let answer = browser(&peers, &chromium, &["script", &allowed, &script]);
    assert_eq!(answer["issuer"], setup.muster.url(""), "{answer}");
    assert_eq!(answer["register"], 201, "{answer}");
    assert_eq!(answer["mcp"]["status"], 401, "{answer}");
    assert!(answer["mcp"]["challenge"].as_str().is_some_and(|c| c.contains("resource_metadata")), "{answer}");

    let answer = browser(&peers, &chromium, &["script", &foreign, &script, "--map", "evil.test"]);
    assert_eq!(answer["issuer"], setup.muster.url(""), "discovery is public: {answer}");
    assert_eq!(answer["register"], 201, "{answer}");
    assert!(answer["mcp"]["refused"].as_str().is_some_and(|e| e.contains("Failed to fetch")), "{answer}");
}
