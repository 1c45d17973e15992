//! muster as a confidential OAuth client of the central IdP (Dex): discovery, the authorize URL
//! with muster's own PKCE and `state`, the code exchange, and refreshing the user's ID token.
//! Client authentication is HTTP Basic (`client_secret_basic`), as Dex expects.

use serde::Deserialize;
use tokio::sync::RwLock;

use crate::auth::Secret;

/// Scopes muster asks the IdP for: an ID token with groups, and a refresh token.
const SCOPES: &str = "openid profile email groups offline_access";
/// The most of an IdP answer muster reads.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// What went wrong with the IdP; the messages name the IdP, never a token.
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum Error {
    #[error("the identity provider {issuer} is unreachable: {reason}")]
    Unreachable { issuer: String, reason: String },
    #[error("the identity provider {issuer} refused: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused { issuer: String, error: String, description: Option<String> },
}

/// The tokens the IdP returned.
pub(super) struct Tokens {
    pub(super) id_token: Secret,
    pub(super) refresh_token: Option<Secret>,
    /// `expires_in` of the IdP's tokens, seconds.
    pub(super) expires_in: Option<u64>,
}

pub(super) struct Upstream {
    http: reqwest::Client,
    issuer: String,
    client_id: String,
    client_secret: Secret,
    connector_id: Option<String>,
    redirect_uri: String,
    endpoints: RwLock<Option<Endpoints>>,
}

#[derive(Clone, Deserialize)]
struct Endpoints {
    authorization_endpoint: String,
    token_endpoint: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
    error_description: Option<String>,
}

/// The parts of an authorize request to the IdP.
pub(super) struct Authorize<'a> {
    pub(super) state: &'a str,
    pub(super) code_challenge: &'a str,
}

impl Upstream {
    pub(super) fn new(
        http: reqwest::Client,
        config: &crate::config::OAuthServer,
        server: &crate::config::AuthorizationServer,
    ) -> Self {
        Self {
            http,
            issuer: config.issuer.clone(),
            client_id: config.client_id.clone(),
            client_secret: Secret::new(server.client_secret.as_str()),
            connector_id: server.connector_id.clone(),
            redirect_uri: format!("{}/oauth/callback", config.base_url),
            endpoints: RwLock::new(None),
        }
    }

    pub(super) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Where the browser goes to sign in at the IdP.
    pub(super) async fn authorize_url(&self, request: Authorize<'_>) -> Result<String, Error> {
        let endpoints = self.endpoints().await?;
        let mut url = reqwest::Url::parse(&endpoints.authorization_endpoint).map_err(|e| self.unreachable(e))?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &self.client_id)
                .append_pair("redirect_uri", &self.redirect_uri)
                .append_pair("scope", SCOPES)
                .append_pair("state", request.state)
                .append_pair("code_challenge", request.code_challenge)
                .append_pair("code_challenge_method", "S256");
            if let Some(connector) = &self.connector_id {
                query.append_pair("connector_id", connector);
            }
        }
        Ok(url.into())
    }

    pub(super) async fn exchange_code(&self, code: &str, verifier: &str) -> Result<Tokens, Error> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", verifier),
        ];
        self.token_request(&form).await
    }

    pub(super) async fn refresh(&self, refresh_token: &Secret) -> Result<Tokens, Error> {
        self.token_request(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token.expose())]).await
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Result<Tokens, Error> {
        let endpoints = self.endpoints().await?;
        let response = self
            .http
            .post(&endpoints.token_endpoint)
            .basic_auth(form_encode(&self.client_id), Some(form_encode(self.client_secret.expose())))
            .form(form)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let body = read_bounded(response).await.map_err(|e| self.unreachable(e))?;
        if !status.is_success() {
            let refused: Option<ErrorAnswer> = serde_json::from_slice(&body).ok();
            return Err(Error::Refused {
                issuer: self.issuer.clone(),
                error: refused.as_ref().map_or_else(|| format!("HTTP {status}"), |r| r.error.clone()),
                description: refused.and_then(|r| r.error_description),
            });
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| self.unreachable(e))?;
        let id_token = answer.id_token.ok_or_else(|| Error::Refused {
            issuer: self.issuer.clone(),
            error: "no id_token in the answer".to_owned(),
            description: None,
        })?;
        Ok(Tokens {
            id_token: Secret::new(id_token),
            refresh_token: answer.refresh_token.map(Secret::new),
            expires_in: answer.expires_in,
        })
    }

    /// The IdP's endpoints, discovered once (a failed discovery is retried on the next sign-in).
    async fn endpoints(&self) -> Result<Endpoints, Error> {
        if let Some(endpoints) = self.endpoints.read().await.clone() {
            return Ok(endpoints);
        }
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let response = self.http.get(&url).send().await.map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return Err(self.unreachable(format!("discovery answered HTTP {}", response.status())));
        }
        let body = read_bounded(response).await.map_err(|e| self.unreachable(e))?;
        let endpoints: Endpoints = serde_json::from_slice(&body).map_err(|e| self.unreachable(e))?;
        *self.endpoints.write().await = Some(endpoints.clone());
        Ok(endpoints)
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> Error {
        Error::Unreachable { issuer: self.issuer.clone(), reason: reason.to_string() }
    }
}

/// RFC 6749 §2.3.1: the client id and secret are form-encoded before HTTP Basic.
fn form_encode(value: &str) -> String {
    url_encode(value)
}

/// Percent-encodes everything but unreserved characters.
pub(super) fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A body of at most `MAX_ANSWER_BYTES`.
pub(super) async fn read_bounded(response: reqwest::Response) -> Result<Vec<u8>, String> {
    read_limited(response, MAX_ANSWER_BYTES).await
}

pub(super) async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(format!("the answer is larger than {limit} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > limit {
            return Err(format!("the answer is larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
