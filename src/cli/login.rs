//! Signing in to muster as an OAuth client, shared by `muster auth login` and the agent bridge.
//!
//! The metadata leads: muster's RFC 9728 document names the authorization server; its RFC 8414
//! metadata (`/.well-known/oauth-authorization-server`, with OIDC discovery as the fallback) gives
//! the endpoints. With no client id configured and a `registration_endpoint` offered, the CLI
//! registers itself (RFC 7591, a public client with the loopback redirect URI). Then the
//! authorization code flow with PKCE S256 and a loopback callback on `127.0.0.1` (RFC 8252), and
//! `refresh` for the refresh token. So it works against a central IdP named directly (Dex,
//! oidc-provider: OIDC discovery, a pre-registered client, the ID token as the bearer) and against
//! muster's own authorization server (RFC 8414, DCR, RFC 8707 `resource`, the access token).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde::Deserialize;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::tokens::{self, StoredToken};

/// How long a started sign-in waits for the browser to come back.
pub(crate) const CALLBACK_TIMEOUT: Duration = Duration::from_secs(300);
/// Scopes asked for, of those the server lists (all of them when it lists none).
const SCOPES: [&str; 5] = ["openid", "profile", "email", "groups", "offline_access"];
/// The client id used when none is configured and the server offers no registration: the one
/// the central IdP has registered for muster.
const DEFAULT_CLIENT_ID: &str = "muster";

/// What the user configured for the client side of sign-in.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `--client-id` / `MUSTER_OAUTH_CLIENT_ID`; `None` registers (DCR) when the server allows it.
    pub(crate) client_id: Option<String>,
    /// `MUSTER_OAUTH_CALLBACK_PORT`; 0 picks a free port.
    pub(crate) callback_port: u16,
}

/// The authorization server, as its metadata describes it.
#[derive(Debug, Clone)]
pub(crate) struct AuthServer {
    pub(crate) issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    registration_endpoint: Option<String>,
    scopes_supported: Option<Vec<String>>,
    /// The protected resource (RFC 9728 `resource`), sent as RFC 8707 `resource` to muster's own
    /// authorization server, which binds its tokens to it. A central IdP is not told: it knows
    /// no such resource (oidc-provider answers `invalid_target`), and its ID token is the bearer.
    resource: Option<String>,
    /// The server is muster itself (the origin of the endpoint or of the RFC 9728 `resource`):
    /// its access token is the bearer.
    /// Otherwise it is the central IdP, whose ID token muster accepts.
    is_muster: bool,
}

#[derive(Deserialize)]
struct ProtectedResource {
    #[serde(default)]
    resource: Option<String>,
    authorization_servers: Vec<String>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    issuer: Option<String>,
    authorization_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    registration_endpoint: Option<String>,
    #[serde(default)]
    scopes_supported: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct Registration {
    client_id: String,
}

/// Why a sign-in did not produce a token.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The authorization server refused the code (or the refresh token).
    #[error("the authorization server answered {status}: {body}")]
    Refused { status: reqwest::StatusCode, body: String },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub(crate) fn http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(Duration::from_secs(15)).build()?)
}

/// For streams and long tool calls: only connecting is bounded.
pub(crate) fn http_without_timeout() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build()?)
}

pub(crate) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// RFC 9728 §3.1: the metadata URL inserts the well-known segment before the resource's path.
pub(crate) fn resource_metadata_url(endpoint: &str) -> anyhow::Result<String> {
    well_known(endpoint, "oauth-protected-resource")
}

fn well_known(url: &str, name: &str) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    let origin = parsed.origin().ascii_serialization();
    Ok(format!("{origin}/.well-known/{name}{}", parsed.path().trim_end_matches('/')))
}

/// Whether `endpoint`'s muster has sign-in on, or `None` when it cannot tell (unreachable).
///
/// The question goes to the OAuth protected-resource metadata (RFC 9728), which muster serves
/// exactly when sign-in is on and answers 404 otherwise (`frontend::protected_resource`). Probing
/// the MCP endpoint for a 401 instead would open a session just to ask, and a stored token would
/// hide the answer.
pub(crate) async fn sign_in_enabled(http: &reqwest::Client, endpoint: &str) -> anyhow::Result<Option<bool>> {
    let metadata_url = resource_metadata_url(endpoint)?;
    Ok(match http.get(&metadata_url).send().await {
        Ok(response) if response.status() == reqwest::StatusCode::NOT_FOUND => Some(false),
        Ok(response) if response.status().is_success() => Some(true),
        Ok(_) | Err(_) => None,
    })
}

/// RFC 9728 → the first authorization server → its RFC 8414 metadata, else its OIDC discovery.
pub(crate) async fn discover(http: &reqwest::Client, endpoint: &str) -> anyhow::Result<AuthServer> {
    let metadata_url = resource_metadata_url(endpoint)?;
    let resource: ProtectedResource = get_json(http, &metadata_url)
        .await
        .with_context(|| format!("reading {metadata_url} (is sign-in enabled on this muster?)"))?;
    let issuer = resource.authorization_servers.first().context("muster names no authorization server")?.clone();
    let trimmed = issuer.trim_end_matches('/');
    let metadata = match get_json::<Metadata>(http, &well_known(&issuer, "oauth-authorization-server")?).await {
        Ok(metadata) => metadata,
        Err(rfc8414) => {
            let oidc = format!("{trimmed}/.well-known/openid-configuration");
            get_json::<Metadata>(http, &oidc).await.with_context(|| {
                format!("reading {issuer}'s metadata (RFC 8414: {rfc8414:#}; OpenID configuration at {oidc})")
            })?
        }
    };
    if let Some(named) = &metadata.issuer
        && named.trim_end_matches('/') != trimmed
    {
        bail!("the metadata of {issuer} names another issuer, {named}");
    }
    let origin = |url: &str| reqwest::Url::parse(url).map(|u| u.origin().ascii_serialization()).ok();
    // muster names itself by its `baseUrl`, which is also the origin of its `resource`; the
    // endpoint the CLI was given may be another name for it (a port-forward, 127.0.0.1).
    let own_origins = [Some(endpoint), resource.resource.as_deref()].map(|url| url.and_then(origin));
    Ok(AuthServer {
        is_muster: origin(&issuer).is_some_and(|o| own_origins.contains(&Some(o))),
        issuer,
        authorization_endpoint: metadata.authorization_endpoint,
        token_endpoint: metadata.token_endpoint,
        registration_endpoint: metadata.registration_endpoint,
        scopes_supported: metadata.scopes_supported,
        resource: resource.resource,
    })
}

async fn get_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &str) -> anyhow::Result<T> {
    Ok(http.get(url).send().await.and_then(reqwest::Response::error_for_status)?.json().await?)
}

/// A sign-in waiting for the browser: `url` is where the user goes; `finish` waits for the
/// loopback callback and redeems the code.
pub(crate) struct Pending {
    pub(crate) url: String,
    endpoint: String,
    server: AuthServer,
    client_id: String,
    listener: tokio::net::TcpListener,
    redirect_uri: String,
    verifier: String,
    state: String,
}

/// Discovers, binds the callback listener, registers when needed, and builds the authorization URL.
pub(crate) async fn start(http: &reqwest::Client, endpoint: &str, settings: &Settings) -> anyhow::Result<Pending> {
    let server = discover(http, endpoint).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", settings.callback_port))
        .await
        .with_context(|| format!("binding the callback port {}", settings.callback_port))?;
    let redirect_uri = format!("http://127.0.0.1:{}/callback", listener.local_addr()?.port());
    let client_id = match (&settings.client_id, &server.registration_endpoint) {
        (Some(id), _) => id.clone(),
        (None, Some(registration)) => register(http, registration, &redirect_uri).await?,
        (None, None) => DEFAULT_CLIENT_ID.to_owned(),
    };
    let verifier = random_token();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let state = random_token();
    let mut url = reqwest::Url::parse(&server.authorization_endpoint).context("authorization_endpoint")?;
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &client_id)
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("scope", &scopes(server.scopes_supported.as_deref()))
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", &state);
        if let Some(resource) = server.resource.as_deref().filter(|_| server.is_muster) {
            query.append_pair("resource", resource);
        }
    }
    Ok(Pending {
        url: url.into(),
        endpoint: endpoint.to_owned(),
        server,
        client_id,
        listener,
        redirect_uri,
        verifier,
        state,
    })
}

fn scopes(supported: Option<&[String]>) -> String {
    let wanted = SCOPES.iter().filter(|s| supported.is_none_or(|list| list.iter().any(|x| x == *s)));
    let mut picked: Vec<&str> = wanted.copied().collect();
    if supported.is_none() {
        // Unlisted: ask for what every IdP muster fronts knows; refresh tokens come without it.
        picked.retain(|s| *s != "offline_access");
    }
    picked.join(" ")
}

/// RFC 7591: a public client (PKCE, no secret) with the loopback redirect URI.
async fn register(http: &reqwest::Client, registration: &str, redirect_uri: &str) -> anyhow::Result<String> {
    let body = serde_json::json!({
        "client_name": "muster CLI",
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "application_type": "native",
    });
    let response =
        http.post(registration).json(&body).send().await.context("registering at the authorization server")?;
    if !response.status().is_success() {
        let status = response.status();
        bail!(
            "client registration at {registration} was refused ({status}): {}",
            response.text().await.unwrap_or_default()
        );
    }
    Ok(response.json::<Registration>().await.context("parsing the client registration")?.client_id)
}

impl Pending {
    /// Waits (at most `CALLBACK_TIMEOUT`) for the callback, then redeems its code.
    pub(crate) async fn finish(self, http: &reqwest::Client) -> Result<StoredToken, Error> {
        let code = tokio::time::timeout(CALLBACK_TIMEOUT, receive_code(&self.listener, &self.state))
            .await
            .context("timed out waiting for the sign-in to finish")??;
        drop(self.listener);
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("client_id", self.client_id.as_str()),
            ("code_verifier", self.verifier.as_str()),
        ];
        if let Some(resource) = self.server.resource.as_deref().filter(|_| self.server.is_muster) {
            form.push(("resource", resource));
        }
        let token = redeem(http, &self.server.token_endpoint, &form).await?;
        stored(&self.endpoint, &self.server, &self.client_id, token, None)
    }
}

/// Uses the refresh token; the result keeps the old refresh token when the server sends none.
pub(crate) async fn refresh(http: &reqwest::Client, old: &StoredToken) -> Result<StoredToken, Error> {
    let (Some(refresh_token), Some(token_endpoint), Some(client_id)) =
        (&old.refresh_token, &old.token_endpoint, &old.client_id)
    else {
        return Err(Error::Other(anyhow::anyhow!("the stored sign-in cannot be refreshed")));
    };
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh_token.as_str()), ("client_id", client_id)];
    let token = redeem(http, token_endpoint, &form).await?;
    let server = AuthServer {
        issuer: old.issuer.clone(),
        authorization_endpoint: String::new(),
        token_endpoint: token_endpoint.clone(),
        registration_endpoint: None,
        scopes_supported: None,
        resource: None,
        is_muster: old.access_token_bearer,
    };
    stored(&old.endpoint, &server, client_id, token, old.refresh_token.clone())
}

/// Refreshes and stores `old` when it expires within five minutes (or half its remaining life,
/// for short-lived tokens); returns what is stored now.
pub(crate) async fn refresh_if_due(http: &reqwest::Client, config_dir: &Path, old: StoredToken) -> StoredToken {
    if old.expires_at > now() + 300 || old.refresh_token.is_none() {
        return old;
    }
    match refresh(http, &old).await {
        Ok(fresh) => {
            if let Err(e) = tokens::save(config_dir, &fresh) {
                tracing::warn!(error = %e, "cannot store the refreshed token");
            }
            fresh
        }
        Err(e) => {
            tracing::warn!(error = %e, "refreshing the sign-in failed");
            old
        }
    }
}

/// When the token in `stored` should be refreshed: five minutes before it expires, or halfway
/// through what is left when that is shorter (so a short-lived token is not refreshed in a loop).
pub(crate) fn refresh_in(stored: &StoredToken) -> Duration {
    let left = stored.expires_at.saturating_sub(now());
    Duration::from_secs(left.saturating_sub(300).max(left / 2).max(1))
}

async fn redeem(http: &reqwest::Client, token_endpoint: &str, form: &[(&str, &str)]) -> Result<TokenResponse, Error> {
    let response = http.post(token_endpoint).form(form).send().await.context("calling the token endpoint")?;
    if !response.status().is_success() {
        let status = response.status();
        return Err(Error::Refused { status, body: response.text().await.unwrap_or_default() });
    }
    Ok(response.json().await.context("parsing the token response")?)
}

fn stored(
    endpoint: &str,
    server: &AuthServer,
    client_id: &str,
    token: TokenResponse,
    old_refresh: Option<String>,
) -> Result<StoredToken, Error> {
    let (bearer, expires_at) = if server.is_muster {
        let bearer = token.access_token.context("the authorization server returned no access_token")?;
        (bearer, now() + token.expires_in.unwrap_or(300))
    } else {
        let id_token =
            token.id_token.context("the identity provider returned no id_token (is the openid scope allowed?)")?;
        let expires_at = crate::auth::token::unverified_claims(&id_token)
            .and_then(|c| c.get("exp").and_then(serde_json::Value::as_u64))
            .unwrap_or_else(|| now() + token.expires_in.unwrap_or(300));
        (id_token, expires_at)
    };
    Ok(StoredToken {
        endpoint: endpoint.to_owned(),
        issuer: server.issuer.clone(),
        id_token: bearer,
        refresh_token: token.refresh_token.or(old_refresh),
        expires_at,
        token_endpoint: Some(server.token_endpoint.clone()),
        client_id: Some(client_id.to_owned()),
        access_token_bearer: server.is_muster,
    })
}

/// Accepts one callback request and returns its `code` (after checking `state`).
async fn receive_code(listener: &tokio::net::TcpListener, state: &str) -> anyhow::Result<String> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        let mut buf = vec![0u8; 16 * 1024];
        let n = stream.read(&mut buf).await?;
        let request = String::from_utf8_lossy(&buf[..n]);
        let target = request.lines().next().and_then(|l| l.split_whitespace().nth(1)).unwrap_or_default().to_owned();
        let url = reqwest::Url::parse(&format!("http://127.0.0.1{target}"))?;
        if url.path() != "/callback" {
            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            continue;
        }
        let query: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        let (status, message, result) = match (query.get("code"), query.get("state"), query.get("error")) {
            (_, _, Some(error)) => (
                "400 Bad Request",
                "Sign-in failed. You can close this window.",
                Err(anyhow::anyhow!("sign-in failed: {error}")),
            ),
            (Some(code), Some(got), None) if got == state => {
                ("200 OK", "Signed in to muster. You can close this window.", Ok(code.clone()))
            }
            _ => (
                "400 Bad Request",
                "Unexpected callback. You can close this window.",
                Err(anyhow::anyhow!("callback without a matching state")),
            ),
        };
        let body = format!("<!doctype html><title>muster</title><p>{message}</p>");
        let reply = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncache-control: no-store\r\nx-content-type-options: nosniff\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(reply.as_bytes()).await;
        return result;
    }
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_urls_follow_path_insertion() {
        assert_eq!(
            resource_metadata_url("http://127.0.0.1:8090/mcp").expect("url"),
            "http://127.0.0.1:8090/.well-known/oauth-protected-resource/mcp"
        );
        // RFC 8414 §3.1: the issuer's path goes after the well-known segment.
        assert_eq!(
            well_known("https://idp.example/tenant/", "oauth-authorization-server").expect("url"),
            "https://idp.example/.well-known/oauth-authorization-server/tenant"
        );
        assert_eq!(
            well_known("http://127.0.0.1:8090", "oauth-authorization-server").expect("url"),
            "http://127.0.0.1:8090/.well-known/oauth-authorization-server"
        );
    }

    #[test]
    fn scopes_are_those_the_server_lists() {
        assert_eq!(scopes(None), "openid profile email groups");
        let listed = ["openid".to_owned(), "offline_access".to_owned(), "mcp".to_owned()];
        assert_eq!(scopes(Some(&listed)), "openid offline_access");
    }

    #[test]
    fn refresh_waits_until_five_minutes_before_expiry_or_half_of_a_short_life() {
        let token = |left: u64| StoredToken {
            endpoint: String::new(),
            issuer: String::new(),
            id_token: String::new(),
            refresh_token: None,
            expires_at: now() + left,
            token_endpoint: None,
            client_id: None,
            access_token_bearer: false,
        };
        let hour = refresh_in(&token(3600)).as_secs();
        assert!((3299..=3300).contains(&hour), "{hour}");
        let short = refresh_in(&token(120)).as_secs();
        assert!((59..=60).contains(&short), "{short}");
        assert_eq!(refresh_in(&token(0)).as_secs(), 1);
    }
}
