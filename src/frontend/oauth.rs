//! The authorization server's HTTP side (issue 14): RFC 8414 / OIDC discovery, `/oauth/authorize`,
//! `/oauth/callback`, `/oauth/token`, `/oauth/register` and `/oauth/revoke`. The logic lives in
//! `auth::server`; here are the wire forms: OAuth JSON errors with their status codes, redirects,
//! and pages with their security headers. Every endpoint answers 404 unless muster is the
//! authorization server.
//!
//! Rate limits are counted from the headers, before a body is read; bodies are read through
//! `body.rs` with the server's small caps.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use super::FrontendState;
use crate::auth::server::{self, AuthorizationServer, OAuthError, Refusal, TokenRequest};

fn server(state: &FrontendState) -> Option<&AuthorizationServer> {
    state.auth.as_ref().and_then(|auth| auth.server.as_ref())
}

/// RFC 8414 metadata (also at the OIDC discovery path).
pub(super) async fn metadata(state: web::Data<FrontendState>) -> HttpResponse {
    match server(&state) {
        Some(server) => HttpResponse::Ok().json(server.metadata()),
        None => HttpResponse::NotFound().finish(),
    }
}

pub(super) async fn authorize(req: HttpRequest, state: web::Data<FrontendState>) -> HttpResponse {
    let Some(server) = server(&state) else { return HttpResponse::NotFound().finish() };
    let request = match web::Query::<server::AuthorizeRequest>::from_query(req.query_string()) {
        Ok(query) => query.into_inner(),
        Err(e) => return page(StatusCode::BAD_REQUEST, "Sign-in refused", &format!("the request is malformed: {e}")),
    };
    let client = request.client_id.as_deref().unwrap_or_default();
    let limited =
        server.check_address("authorize", &address(&req)).and_then(|()| server.check_client("authorize", client));
    if let Err(e) = limited {
        record("authorize", "rate_limited");
        return page(StatusCode::TOO_MANY_REQUESTS, "Too many sign-in attempts", &e.description);
    }
    match server.authorize(request).await {
        Ok(location) => {
            record("authorize", "ok");
            redirect(&location)
        }
        Err(refusal) => refused("authorize", refusal),
    }
}

pub(super) async fn callback(req: HttpRequest, state: web::Data<FrontendState>) -> HttpResponse {
    let Some(server) = server(&state) else { return HttpResponse::NotFound().finish() };
    let request = match web::Query::<server::CallbackRequest>::from_query(req.query_string()) {
        Ok(query) => query.into_inner(),
        Err(e) => return page(StatusCode::BAD_REQUEST, "Sign-in refused", &format!("the request is malformed: {e}")),
    };
    match server.callback(request).await {
        Ok(done) => {
            record("callback", "ok");
            // Single sign-on at sign-in: the user's exchanges and sessions start now.
            state.endpoint.gateway.warm_up(&Arc::new(done.identity));
            redirect(&done.redirect)
        }
        Err(refusal) => refused("callback", refusal),
    }
}

pub(super) async fn token(req: HttpRequest, payload: web::Payload, state: web::Data<FrontendState>) -> HttpResponse {
    let Some(server) = server(&state) else { return HttpResponse::NotFound().finish() };
    let request = match read_token_request(server, "token", &req, payload, &state).await {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let client = request.basic.as_ref().map(|(id, _)| id.clone()).or_else(|| request.form.get("client_id").cloned());
    if let Err(e) = server.check_client("token", client.as_deref().unwrap_or_default()) {
        return oauth_error("token", &e);
    }
    match server.token(request).await {
        Ok(tokens) => {
            record("token", "ok");
            no_store(HttpResponse::Ok()).json(tokens)
        }
        Err(e) => oauth_error("token", &e),
    }
}

pub(super) async fn revoke(req: HttpRequest, payload: web::Payload, state: web::Data<FrontendState>) -> HttpResponse {
    let Some(server) = server(&state) else { return HttpResponse::NotFound().finish() };
    let request = match read_token_request(server, "revoke", &req, payload, &state).await {
        Ok(request) => request,
        Err(response) => return *response,
    };
    match server.revoke(request).await {
        Ok(()) => {
            record("revoke", "ok");
            no_store(HttpResponse::Ok()).finish()
        }
        Err(e) => oauth_error("revoke", &e),
    }
}

pub(super) async fn register(req: HttpRequest, payload: web::Payload, state: web::Data<FrontendState>) -> HttpResponse {
    let Some(server) = server(&state) else { return HttpResponse::NotFound().finish() };
    if let Err(e) = server.check_address("register", &address(&req)) {
        return oauth_error("register", &e);
    }
    let body = match read_body(&req, payload, server::MAX_REGISTRATION_BYTES, &state).await {
        Ok(body) => body,
        Err(response) => return *response,
    };
    match server.register(&body, bearer(&req)).await {
        Ok(client) => {
            record("register", "ok");
            no_store(HttpResponse::Created()).json(client)
        }
        Err(e) => oauth_error("register", &e),
    }
}

/// The rate limit, the form and the client's HTTP Basic credentials of a token or revocation request.
async fn read_token_request(
    server: &AuthorizationServer,
    endpoint: &'static str,
    req: &HttpRequest,
    payload: web::Payload,
    state: &FrontendState,
) -> Result<TokenRequest, Box<HttpResponse>> {
    server.check_address(endpoint, &address(req)).map_err(|e| Box::new(oauth_error(endpoint, &e)))?;
    let body = read_body(req, payload, server::MAX_FORM_BYTES, state).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| Box::new(oauth_error(endpoint, &OAuthError::invalid_request("the form is not UTF-8"))))?;
    let form = web::Query::<HashMap<String, String>>::from_query(text)
        .map_err(|e| {
            Box::new(oauth_error(endpoint, &OAuthError::invalid_request(&format!("the form is malformed: {e}"))))
        })?
        .into_inner();
    let basic = basic_credentials(req).map_err(|e| Box::new(oauth_error(endpoint, &e)))?;
    Ok(TokenRequest { form, basic })
}

async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    state: &FrontendState,
) -> Result<web::Bytes, Box<HttpResponse>> {
    super::body::read(req, payload, limit, state.body_timeout, &state.body_budget).await.map_err(|e| {
        let status = match e {
            super::body::Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            super::body::Error::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
            super::body::Error::Incomplete => StatusCode::BAD_REQUEST,
            super::body::Error::Busy => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut response = no_store(HttpResponse::build(status))
            .json(serde_json::json!({"error": "invalid_request", "error_description": e.to_string()}));
        response.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
        Box::new(response)
    })
}

/// `Authorization: Basic` as RFC 6749 §2.3.1 has it: id and secret form-encoded.
fn basic_credentials(req: &HttpRequest) -> Result<Option<(String, String)>, OAuthError> {
    use base64::Engine as _;
    let Some(header) = req.headers().get(actix_web::http::header::AUTHORIZATION) else { return Ok(None) };
    let malformed = || OAuthError::invalid_client("the HTTP Basic credentials are malformed");
    let header = header.to_str().map_err(|_| malformed())?;
    let Some(encoded) = header.strip_prefix("Basic ").or_else(|| header.strip_prefix("basic ")) else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    let pairs = web::Query::<HashMap<String, String>>::from_query(&format!("id={id}&secret={secret}"))
        .map_err(|_| malformed())?
        .into_inner();
    Ok(Some((pairs.get("id").cloned().unwrap_or_default(), pairs.get("secret").cloned().unwrap_or_default())))
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    let header = req.headers().get(actix_web::http::header::AUTHORIZATION)?.to_str().ok()?;
    header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer ")).map(str::trim)
}

/// The client's address, as the connection shows it (forwarding headers can be forged).
fn address(req: &HttpRequest) -> String {
    req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default()
}

fn record(endpoint: &'static str, outcome: &'static str) {
    crate::telemetry::metrics::oauth_request(endpoint, outcome);
}

/// An OAuth error as JSON (RFC 6749 §5.2), with its status code.
fn oauth_error(endpoint: &'static str, error: &OAuthError) -> HttpResponse {
    record(endpoint, if error.retry_after.is_some() { "rate_limited" } else { error.error });
    let status = match error.error {
        "invalid_client" | "invalid_token" => StatusCode::UNAUTHORIZED,
        "temporarily_unavailable" if error.retry_after.is_some() => StatusCode::TOO_MANY_REQUESTS,
        "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut response = no_store(HttpResponse::build(status));
    if let Some(retry) = error.retry_after {
        response.insert_header((actix_web::http::header::RETRY_AFTER, retry.as_secs().max(1).to_string()));
    }
    response.json(serde_json::json!({"error": error.error, "error_description": error.description}))
}

fn refused(endpoint: &'static str, refusal: Refusal) -> HttpResponse {
    match refusal {
        Refusal::Redirect(location) => {
            record(endpoint, "redirected_error");
            redirect(&location)
        }
        Refusal::Page { status, title, message } => {
            record(endpoint, "page");
            page(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), title, &message)
        }
    }
}

fn redirect(location: &str) -> HttpResponse {
    no_store(HttpResponse::Found())
        .insert_header((actix_web::http::header::LOCATION, location))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .finish()
}

/// A page for the person at the browser, with headers that keep it from being framed, sniffed,
/// cached or leaking its URL.
fn page(status: StatusCode, title: &str, message: &str) -> HttpResponse {
    no_store(HttpResponse::build(status))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("Content-Security-Policy", server::pages::CONTENT_SECURITY_POLICY))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .content_type("text/html; charset=utf-8")
        .body(server::pages::render(title, message))
}

fn no_store(mut builder: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    builder.insert_header((actix_web::http::header::CACHE_CONTROL, "no-store")).insert_header(("Pragma", "no-cache"));
    builder
}
