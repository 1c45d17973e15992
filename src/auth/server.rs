//! muster as the OAuth 2.1 authorization server of its own `/mcp`, in front of the central IdP
//! (issue 14; Muster's `aggregator.oauth.server` with `dex.clientSecret`).
//!
//! An agent registers (`clients.rs`: DCR or a CIMD URL), sends the user to `/oauth/authorize`,
//! which sends the browser on to the IdP with muster's own PKCE and `state` (`upstream.rs`); the
//! IdP returns to `/oauth/callback`, where muster keeps the user's IdP tokens sealed
//! (`store::seal`) in a token family and gives the agent a one-time code, which `/oauth/token`
//! turns into muster's opaque access token and a rotating refresh token (`flow.rs`, ADR 0007).
//! On `/mcp`, `identity` turns an access token back into the user's `Identity`, whose token is
//! the user's IdP ID token, refreshed through the IdP before it expires, so RFC 8693 exchanges
//! keep working. All state lives behind `store::Store` (in memory for now).

mod clients;
mod flow;
mod limits;
pub mod pages;
mod recent;
mod store;
mod tokens;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

use sha2::Digest as _;

pub use flow::{AuthorizeRequest, Callback, CallbackRequest, Refusal, TokenRequest, TokenResponse};

/// Prefix of muster's access tokens: `/mcp` tells them from the IdP's JWTs by it.
pub const ACCESS_TOKEN_PREFIX: &str = "mat_";
/// The most a registration body may hold.
pub const MAX_REGISTRATION_BYTES: usize = 16 * 1024;
/// The most a token or revocation form may hold.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// An OAuth error as RFC 6749 §5.2 / RFC 7591 §3.2.2 put it on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, ...
    pub error: &'static str,
    pub description: String,
    /// Set for `temporarily_unavailable` from the rate limiter: when to try again.
    pub retry_after: Option<Duration>,
}

impl OAuthError {
    pub fn new(error: &'static str, description: &str) -> Self {
        Self { error, description: description.to_owned(), retry_after: None }
    }
    pub fn invalid_request(description: &str) -> Self {
        Self::new("invalid_request", description)
    }
    pub fn invalid_client(description: &str) -> Self {
        Self::new("invalid_client", description)
    }
    pub fn invalid_grant(description: &str) -> Self {
        Self::new("invalid_grant", description)
    }
    pub fn invalid_redirect_uri(description: &str) -> Self {
        Self::new("invalid_redirect_uri", description)
    }
    pub fn server_error(description: &str) -> Self {
        Self::new("server_error", description)
    }
    fn rate_limited(retry_after: Duration, what: &str) -> Self {
        Self {
            error: "temporarily_unavailable",
            description: format!("too many sign-in attempts {what}; try again in {} s", retry_after.as_secs().max(1)),
            retry_after: Some(retry_after),
        }
    }
}

impl From<store::Error> for OAuthError {
    fn from(e: store::Error) -> Self {
        Self::new("temporarily_unavailable", &e.to_string())
    }
}

/// Sign-in attempts allowed per client address, and per client id, per minute and endpoint.
const ATTEMPTS_PER_ADDRESS: u32 = 60;
const ATTEMPTS_PER_CLIENT: u32 = 30;

/// The authorization server.
pub struct AuthorizationServer {
    base_url: String,
    resource: String,
    session_duration: Duration,
    store: Arc<dyn store::Store>,
    /// Access tokens resolved a moment ago (no store round trip per call).
    recent: Arc<recent::Recent>,
    sealer: crate::store::seal::Sealer,
    upstream: upstream::Upstream,
    /// Validates the IdP's ID tokens at sign-in and refresh.
    validator: Arc<super::inbound::Validator>,
    registration: clients::Policy,
    registration_token: Option<super::Secret>,
    cimd: Option<clients::Cimd>,
    per_address: limits::Limiter,
    per_client: limits::Limiter,
    /// One change to a token family at a time (an IdP refresh, a rotation).
    refreshing: moka::sync::Cache<String, Arc<tokio::sync::Mutex<()>>>,
}

impl AuthorizationServer {
    pub fn new(
        config: &crate::config::OAuthServer,
        server: &crate::config::AuthorizationServer,
        http: reqwest::Client,
        validator: Arc<super::inbound::Validator>,
        shared: &crate::store::Store,
    ) -> reqwest::Result<Self> {
        let key = server.encryption_key.unwrap_or_else(|| {
            tracing::warn!(
                "aggregator.oauth.server.encryptionKey is not set: the stored IdP tokens are sealed with a key of this process"
            );
            rand::random()
        });
        let cimd = if server.enable_cimd { Some(clients::Cimd::new(server.allow_private_networks)?) } else { None };
        Ok(Self {
            base_url: config.base_url.clone(),
            resource: format!("{}/mcp", config.base_url),
            session_duration: server.session_duration,
            store: if shared.is_shared() {
                Arc::new(store::Shared(shared.clone()))
            } else {
                Arc::new(store::MemoryStore::default())
            },
            recent: recent::Recent::new(shared),
            sealer: crate::store::seal::Sealer::new(&key),
            upstream: upstream::Upstream::new(http, config, server),
            validator,
            registration: clients::Policy {
                allow_public: server.allow_public_client_registration,
                allow_loopback: server.allow_localhost_redirect_uris,
                trusted_schemes: server.trusted_schemes.clone(),
                trusted_redirect_uris: server.trusted_redirect_uris.clone(),
            },
            registration_token: server.registration_token.as_deref().map(super::Secret::new),
            cimd,
            per_address: limits::Limiter::new(ATTEMPTS_PER_ADDRESS, Duration::from_secs(60)),
            per_client: limits::Limiter::new(ATTEMPTS_PER_CLIENT, Duration::from_secs(60)),
            refreshing: moka::sync::Cache::builder().time_to_idle(Duration::from_secs(600)).build(),
        })
    }

    /// muster's issuer identifier (`baseUrl`).
    pub fn issuer(&self) -> &str {
        &self.base_url
    }

    /// RFC 8414 authorization-server metadata (also served as OIDC discovery).
    pub fn metadata(&self) -> serde_json::Value {
        let base = &self.base_url;
        serde_json::json!({
            "issuer": base,
            "authorization_endpoint": format!("{base}/oauth/authorize"),
            "token_endpoint": format!("{base}/oauth/token"),
            "registration_endpoint": format!("{base}/oauth/register"),
            "revocation_endpoint": format!("{base}/oauth/revoke"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            "scopes_supported": ["openid", "profile", "email", "groups", "offline_access"],
            "client_id_metadata_document_supported": self.cimd.is_some(),
            "authorization_response_iss_parameter_supported": true,
            "subject_types_supported": ["public"],
        })
    }

    /// Counts a sign-in attempt from `address` at `endpoint`.
    pub fn check_address(&self, endpoint: &str, address: &str) -> Result<(), OAuthError> {
        self.per_address
            .check(&format!("{endpoint}\n{address}"))
            .map_err(|retry| OAuthError::rate_limited(retry, "from this address"))
    }

    /// Counts a sign-in attempt by `client_id` at `endpoint`.
    pub fn check_client(&self, endpoint: &str, client_id: &str) -> Result<(), OAuthError> {
        self.per_client
            .check(&format!("{endpoint}\n{client_id}"))
            .map_err(|retry| OAuthError::rate_limited(retry, "for this client"))
    }

    /// RFC 7591 registration. `token`: the bearer the request carried, if any.
    pub async fn register(&self, body: &[u8], token: Option<&str>) -> Result<serde_json::Value, OAuthError> {
        let registration: clients::Registration = serde_json::from_slice(body)
            .map_err(|e| OAuthError::new("invalid_client_metadata", &format!("not a registration request: {e}")))?;
        let has_token = match (token, &self.registration_token) {
            (None, _) => false,
            (Some(presented), Some(expected)) if constant_time_eq(presented, expected.expose()) => true,
            (Some(_), _) => return Err(OAuthError::new("invalid_token", "the registration token is not valid")),
        };
        self.registration.check(&registration, has_token)?;
        let client_id = format!("mcl_{}", random_token());
        let confidential = matches!(
            registration.token_endpoint_auth_method.as_deref(),
            Some("client_secret_basic" | "client_secret_post")
        );
        let secret = confidential.then(random_token);
        let client = clients::Client {
            client_id: client_id.clone(),
            redirect_uris: registration.redirect_uris.clone(),
            secret_hash: secret.as_deref().map(hash),
            client_name: registration.client_name.clone(),
        };
        self.put(&format!("client:{client_id}"), &client, self.session_duration).await?;
        let mut answer = serde_json::json!({
            "client_id": client_id,
            "client_id_issued_at": now(),
            "redirect_uris": registration.redirect_uris,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": registration.token_endpoint_auth_method.as_deref().unwrap_or("none"),
        });
        if let Some(name) = registration.client_name {
            answer["client_name"] = name.into();
        }
        if let Some(secret) = secret {
            answer["client_secret"] = secret.into();
            answer["client_secret_expires_at"] = 0.into();
        }
        Ok(answer)
    }

    /// A client muster knows: registered, or described by its CIMD URL.
    async fn client(&self, client_id: &str) -> Result<clients::Client, OAuthError> {
        if client_id.is_empty() {
            return Err(OAuthError::invalid_request("client_id is missing"));
        }
        if clients::is_cimd(client_id) {
            return match &self.cimd {
                Some(cimd) => cimd.client(client_id).await,
                None => Err(OAuthError::invalid_client("client metadata documents are not enabled (enableCIMD)")),
            };
        }
        self.get(&format!("client:{client_id}"))
            .await?
            .ok_or_else(|| OAuthError::invalid_client(&format!("client {client_id:?} is not registered")))
    }

    async fn put<T: serde::Serialize>(&self, key: &str, value: &T, ttl: Duration) -> Result<(), OAuthError> {
        let bytes = serde_json::to_vec(value).map_err(|e| OAuthError::server_error(&e.to_string()))?;
        Ok(self.store.put(key, bytes, ttl).await?)
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, OAuthError> {
        decode(self.store.get(key).await?)
    }

    async fn take<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, OAuthError> {
        decode(self.store.take(key).await?)
    }
}

fn decode<T: serde::de::DeserializeOwned>(bytes: Option<Vec<u8>>) -> Result<Option<T>, OAuthError> {
    bytes.map(|b| serde_json::from_slice(&b)).transpose().map_err(|e| OAuthError::server_error(&e.to_string()))
}

/// 256 random bits, base64url.
fn random_token() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// What the store keeps of a token: its SHA-256, never the token.
fn hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (sha2::Sha256::digest(a.as_bytes()), sha2::Sha256::digest(b.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
