//! Inbound authentication: validates the agent's bearer JWT against the central identity provider
//! (and any extra trusted issuers): OIDC discovery, JWKS with key rotation, an algorithm
//! allowlist, `iss`, `aud` ∈ {clientId} ∪ trustedAudiences, `exp` and `nbf`.
//!
//! Keys are fetched on first use and again when a token names an unknown `kid` (at most every
//! `REFRESH_MIN_INTERVAL`), so a rotated key is picked up without a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use super::token::{Identity, Secret, unverified_claims};

/// Enterprise tokens with many group claims are large (the seed's ingress note).
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// Keys are refetched at most this often; a token naming an unknown key in between is refused.
const REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(2);
/// Tolerated clock difference with the identity provider.
const CLOCK_SKEW_SECS: u64 = 5;
const ALLOWED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why a bearer was refused. Messages go to the client in `WWW-Authenticate`; none holds the token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("no bearer token")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token algorithm {0} is not allowed")]
    Algorithm(String),
    #[error("token issuer {0:?} is not trusted")]
    UntrustedIssuer(String),
    #[error("token signing key {0:?} is not published by its issuer")]
    UnknownKey(String),
    #[error("token is invalid: {0}")]
    Invalid(String),
    #[error("identity provider {issuer} is unavailable: {reason}")]
    Unavailable { issuer: String, reason: String },
}

/// One issuer muster accepts tokens from.
#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    pub issuer: String,
    /// Defaults to the `jwks_uri` of the issuer's OIDC discovery document.
    pub jwks_url: Option<String>,
    pub audiences: Vec<String>,
}

struct IssuerKeys {
    trusted: TrustedIssuer,
    keys: RwLock<Arc<JwkSet>>,
    last_fetch: Mutex<Option<Instant>>,
}

pub struct Validator {
    http: reqwest::Client,
    issuers: Vec<IssuerKeys>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    exp: u64,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl Validator {
    pub fn new(http: reqwest::Client, issuers: Vec<TrustedIssuer>) -> Self {
        let issuers = issuers
            .into_iter()
            .map(|trusted| IssuerKeys {
                trusted,
                keys: RwLock::new(Arc::new(JwkSet { keys: Vec::new() })),
                last_fetch: Mutex::new(None),
            })
            .collect();
        Self { http, issuers }
    }

    /// Validates `token` and returns who it proves.
    pub async fn validate(&self, token: &str) -> Result<Identity, Error> {
        if token.is_empty() {
            return Err(Error::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Error::Malformed(format!("larger than {} KiB", MAX_TOKEN_BYTES / 1024)));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| Error::Malformed(e.to_string()))?;
        if !ALLOWED_ALGORITHMS.contains(&header.alg) {
            return Err(Error::Algorithm(format!("{:?}", header.alg)));
        }
        let issuer = unverified_claims(token)
            .and_then(|c| c.get("iss").and_then(|i| i.as_str()).map(str::to_owned))
            .ok_or_else(|| Error::Malformed("no iss claim".to_owned()))?;
        let keys = self.issuers.iter().find(|k| k.trusted.issuer == issuer).ok_or(Error::UntrustedIssuer(issuer))?;
        let kid = header.kid.clone().unwrap_or_default();
        let key = match keys.key(&kid).await {
            Some(key) => key,
            None => {
                self.refresh_for(keys, &kid).await?;
                keys.key(&kid).await.ok_or(Error::UnknownKey(kid))?
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&keys.trusted.issuer]);
        validation.set_audience(&keys.trusted.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = CLOCK_SKEW_SECS;
        let data =
            jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(Identity {
            subject: data.claims.sub,
            issuer: data.claims.iss,
            token: Secret::new(token),
            expires_at: data.claims.exp,
            groups: data.claims.groups,
        })
    }

    /// Fetches the issuer's keys now (at startup, to fail early and loudly).
    pub async fn prefetch(&self) -> Result<(), Error> {
        for keys in &self.issuers {
            self.refresh(keys).await?;
        }
        Ok(())
    }

    /// Refetches the keys because `kid` is unknown: once per `REFRESH_MIN_INTERVAL` at most (a
    /// caller within it is refused at once, `UnknownKey`), and not at all when another caller's
    /// refetch already brought the key (callers that arrive during a fetch wait for it).
    async fn refresh_for(&self, keys: &IssuerKeys, kid: &str) -> Result<(), Error> {
        let mut last = keys.last_fetch.lock().await;
        if keys.key(kid).await.is_some() {
            return Ok(());
        }
        // Fail fast rather than queue: tokens naming random key ids must not stall sign-in.
        if last.is_some_and(|t| t.elapsed() < REFRESH_MIN_INTERVAL) {
            return Err(Error::UnknownKey(kid.to_owned()));
        }
        *last = Some(Instant::now());
        // Held across the fetch: concurrent callers with the same new `kid` wait and find it.
        let fetched = self.fetch(keys).await;
        drop(last);
        fetched
    }

    async fn refresh(&self, keys: &IssuerKeys) -> Result<(), Error> {
        *keys.last_fetch.lock().await = Some(Instant::now());
        self.fetch(keys).await
    }

    async fn fetch(&self, keys: &IssuerKeys) -> Result<(), Error> {
        let issuer = &keys.trusted.issuer;
        let unavailable = |reason: String| Error::Unavailable { issuer: issuer.clone(), reason };
        let jwks_url = match &keys.trusted.jwks_url {
            Some(url) => url.clone(),
            None => {
                let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
                let discovery: Discovery = self.get_json(&url).await.map_err(unavailable)?;
                if discovery.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
                    return Err(unavailable(format!("its discovery document names issuer {:?}", discovery.issuer)));
                }
                discovery.jwks_uri
            }
        };
        // Keys must come over https: a plain-text JWKS lets anyone on the path mint accepted tokens.
        if !crate::egress::is_https_or_loopback(&jwks_url) {
            return Err(unavailable(format!("its key set {jwks_url} is not served over https")));
        }
        let set: JwkSet = self.get_json(&jwks_url).await.map_err(unavailable)?;
        *keys.keys.write().await = Arc::new(set);
        Ok(())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let response = self.http.get(url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
        let response = response.error_for_status().map_err(|e| format!("GET {url}: {e}"))?;
        response.json().await.map_err(|e| format!("GET {url}: {e}"))
    }
}

impl IssuerKeys {
    async fn key(&self, kid: &str) -> Option<DecodingKey> {
        let keys = self.keys.read().await;
        let jwk = if kid.is_empty() { (keys.keys.len() == 1).then(|| &keys.keys[0])? } else { keys.find(kid)? };
        DecodingKey::from_jwk(jwk).ok()
    }
}

/// `aud` values accepted for the central issuer: its client id plus the trusted audiences.
pub fn audiences(client_id: &str, trusted: &[String]) -> Vec<String> {
    let mut set: Vec<String> = Vec::new();
    for aud in std::iter::once(client_id.to_owned()).chain(trusted.iter().cloned()) {
        if !set.contains(&aud) {
            set.push(aud);
        }
    }
    set
}
