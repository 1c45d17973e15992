//! CORS for MCP clients that run in a browser page (MCP Inspector in a browser): which paths a
//! page of another origin may call, the answer to its preflight, and the headers on the answer.
//!
//! The discovery documents and the token, registration and revocation endpoints are public and
//! carry no cookies: any origin may call them (`Access-Control-Allow-Origin: *`, as other MCP
//! authorization servers and gateways answer). `/mcp` admits only the origins the Host/Origin
//! guard admits (`host_guard.rs`, `allowedOrigins`): the origin is echoed back, with `Vary: Origin`;
//! an empty `allowedOrigins` turns the guard's Origin check off but grants no origin here. A
//! preflight for `/mcp` from another origin, or with a foreign `Host`, gets the guard's 403 and no
//! CORS headers, so the browser refuses the call. `/oauth/authorize` and `/oauth/callback` are
//! pages a browser navigates to, never fetched across origins: no CORS.

use actix_web::HttpResponse;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};

use super::host_guard::HostGuard;

/// Request headers a browser client may send.
const PUBLIC_REQUEST_HEADERS: &str = "Authorization, Content-Type, MCP-Protocol-Version";
const MCP_REQUEST_HEADERS: &str =
    "Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID";
/// Response headers a browser client may read.
const PUBLIC_EXPOSED: &str = "WWW-Authenticate, Retry-After";
const MCP_EXPOSED: &str = "Mcp-Session-Id, MCP-Protocol-Version, WWW-Authenticate, Retry-After";
/// How long a browser may keep a preflight's answer, in seconds.
const MAX_AGE: &str = "600";

/// What a path allows across origins.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Policy {
    /// Any origin, these methods.
    Public(&'static str),
    /// The guard's origins.
    Mcp,
}

fn policy(path: &str) -> Option<Policy> {
    match path {
        "/.well-known/oauth-protected-resource"
        | "/.well-known/oauth-protected-resource/mcp"
        | "/.well-known/oauth-authorization-server"
        | "/.well-known/oauth-authorization-server/mcp"
        | "/.well-known/openid-configuration" => Some(Policy::Public("GET, OPTIONS")),
        "/oauth/token" | "/oauth/register" | "/oauth/revoke" => Some(Policy::Public("POST, OPTIONS")),
        "/mcp" => Some(Policy::Mcp),
        _ => None,
    }
}

fn origin(req: &actix_web::HttpRequest) -> Option<&str> {
    req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

/// The answer to a CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
/// on a path that has a policy; `None` for every other request.
pub(super) fn preflight(req: &actix_web::HttpRequest, guard: &HostGuard) -> Option<HttpResponse> {
    let is_preflight = req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if !is_preflight {
        return None;
    }
    let answer = match policy(req.path())? {
        Policy::Public(methods) => HttpResponse::NoContent()
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, methods))
            .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, PUBLIC_REQUEST_HEADERS))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, MAX_AGE))
            .finish(),
        Policy::Mcp => match (guard.check(req), origin(req)) {
            (Ok(()), Some(origin)) if guard.grants_origin(origin) => HttpResponse::NoContent()
                .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
                .insert_header((header::VARY, "Origin"))
                .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, DELETE, OPTIONS"))
                .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, MCP_REQUEST_HEADERS))
                .insert_header((header::ACCESS_CONTROL_MAX_AGE, MAX_AGE))
                .finish(),
            (refused, _) => {
                let why = refused.err().map_or("Forbidden: Origin header is not allowed".to_owned(), |r| r.to_string());
                super::error::jsonrpc_error(StatusCode::FORBIDDEN, super::error::INVALID_REQUEST, &why)
            }
        },
    };
    Some(answer)
}

/// The CORS headers for the answer to `req` (not a preflight): empty unless it came from a page
/// (`Origin`) and its path admits that origin.
pub(super) fn headers(req: &actix_web::HttpRequest, guard: &HostGuard) -> Vec<(HeaderName, HeaderValue)> {
    let (Some(policy), Some(origin)) = (policy(req.path()), origin(req)) else { return Vec::new() };
    match policy {
        Policy::Public(_) => vec![
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")),
            (header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(PUBLIC_EXPOSED)),
        ],
        Policy::Mcp if guard.grants_origin(origin) => match HeaderValue::from_str(origin) {
            Ok(origin) => vec![
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin),
                (header::VARY, HeaderValue::from_static("Origin")),
                (header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(MCP_EXPOSED)),
            ],
            Err(_) => Vec::new(),
        },
        Policy::Mcp => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_public_endpoints_and_mcp_have_a_policy() {
        assert_eq!(policy("/oauth/token"), Some(Policy::Public("POST, OPTIONS")));
        assert_eq!(policy("/.well-known/oauth-authorization-server"), Some(Policy::Public("GET, OPTIONS")));
        assert_eq!(policy("/mcp"), Some(Policy::Mcp));
        for page in ["/oauth/authorize", "/oauth/callback", "/metrics", "/readyz", "/mcp/x"] {
            assert_eq!(policy(page), None, "{page}");
        }
    }
}
