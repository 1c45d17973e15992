//! Outbound RFC 8693 token exchange with a cluster's identity provider (Dex's dialect, reference
//! §4.4), and the exchanged-token cache keyed by user and cluster.
//!
//! - The cache key is (token endpoint, connector, client id, scopes + audiences, user `sub`), hashed.
//! - An entry lives `expires_in` minus a skew; concurrent misses on one key make one exchange
//!   (moka's `try_get_with`); a near-expiry hit refreshes in the background.
//! - Failures are remembered per key for seconds (doubling, capped), so an IdP outage costs one
//!   request per user and cluster per backoff step, and other clusters are untouched.
//! - Transport failures (`Unreachable`) and refusals (`Rejected`) stay distinct (Muster #1140).
//! - With a shared store (several replicas), a local miss asks the store first, and one replica
//!   exchanges while the others wait for its token (`shared.rs`).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::Expiry;
use serde::Deserialize;
use sha2::Digest as _;

use super::secrets::{ClientCredentials, SecretStore};
use super::token::{Identity, Secret, unverified_claims};
use crate::egress;

mod shared;

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const DEFAULT_SCOPES: &str = "openid profile email groups";
const SKEW: Duration = Duration::from_secs(30);
const MAX_RESPONSE_BYTES: usize = 1 << 20;
const FAILURE_BACKOFF_START: Duration = Duration::from_secs(1);
const FAILURE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why a token for a cluster could not be had. Never holds a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("token exchange for {cluster} was refused by {endpoint}: {error}{}", description.as_ref().map(|d| format!(" - {d}")).unwrap_or_default())]
    Rejected { cluster: String, endpoint: String, error: String, description: Option<String> },
    #[error("token exchange for {cluster}: {endpoint} is unreachable: {reason}")]
    Unreachable { cluster: String, endpoint: String, reason: String },
    #[error(
        "token exchange for {cluster}: issuer mismatch: expected {expected}, got {got}. Hint: if the identity provider is reached through a proxy, set tokenExchange.expectedIssuer"
    )]
    IssuerMismatch { cluster: String, expected: String, got: String },
    #[error("token exchange for {cluster}: {endpoint} answered with an invalid response: {reason}")]
    BadResponse { cluster: String, endpoint: String, reason: String },
    #[error("token exchange for {cluster}: {reason}")]
    Config { cluster: String, reason: String },
    #[error("{error} (retrying in {}s)", retry_in.as_secs().max(1))]
    BackingOff { error: Box<Error>, retry_in: Duration },
}

impl Error {
    /// True for refusals and configuration problems (the user or operator must act); false for
    /// transport failures, which are not auth failures.
    pub fn is_auth_failure(&self) -> bool {
        match self {
            Self::Rejected { .. } | Self::IssuerMismatch { .. } | Self::Config { .. } => true,
            Self::Unreachable { .. } | Self::BadResponse { .. } => false,
            Self::BackingOff { error, .. } => error.is_auth_failure(),
        }
    }
}

impl Error {
    fn config(cluster: &str, reason: impl Into<String>) -> Self {
        Self::Config { cluster: cluster.to_owned(), reason: reason.into() }
    }
}

/// Where and how to exchange for one MCPServer (its `spec.auth.tokenExchange`).
#[derive(Debug, Clone)]
pub struct ExchangeTarget {
    pub cluster: String,
    pub endpoint: reqwest::Url,
    pub expected_issuer: String,
    pub connector_id: String,
    pub scopes: String,
    pub audiences: Vec<String>,
    pub secret: Option<SecretRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
    pub id_key: String,
    pub secret_key: String,
}

impl ExchangeTarget {
    /// From a validated MCPServer spec; `namespace` is the MCPServer's.
    pub fn from_spec(cluster: &str, namespace: &str, spec: &crate::crd::TokenExchange) -> Result<Self, Error> {
        let endpoint_text = spec.dex_token_endpoint.clone().unwrap_or_default();
        let endpoint = reqwest::Url::parse(&endpoint_text)
            .map_err(|e| Error::config(cluster, format!("dexTokenEndpoint {endpoint_text:?}: {e}")))?;
        let expected_issuer = spec.expected_issuer.clone().unwrap_or_else(|| {
            endpoint_text.strip_suffix("/token").unwrap_or(&endpoint_text).trim_end_matches('/').to_owned()
        });
        let secret = spec.client_credentials_secret_ref.as_ref().map(|r| SecretRef {
            namespace: r.namespace.clone().unwrap_or_else(|| namespace.to_owned()),
            name: r.name.clone(),
            id_key: r.client_id_key.clone().unwrap_or_else(|| "client-id".to_owned()),
            secret_key: r.client_secret_key.clone().unwrap_or_else(|| "client-secret".to_owned()),
        });
        Ok(Self {
            cluster: cluster.to_owned(),
            endpoint,
            expected_issuer,
            connector_id: spec.connector_id.clone().unwrap_or_default(),
            scopes: spec.scopes.clone().unwrap_or_else(|| DEFAULT_SCOPES.to_owned()),
            audiences: Vec::new(),
            secret,
        })
    }

    /// The `scope` parameter: the scopes plus a Dex cross-client scope per required audience.
    pub fn scope_param(&self) -> String {
        let mut scope = self.scopes.clone();
        for aud in &self.audiences {
            scope.push_str(&format!(" audience:server:client_id:{aud}"));
        }
        scope
    }
}

#[derive(Debug)]
struct Exchanged {
    token: Secret,
    ttl: Duration,
    obtained: Instant,
}

impl Exchanged {
    fn needs_refresh(&self) -> bool {
        needs_refresh(self.obtained.elapsed(), self.ttl)
    }
}

/// Refresh in the last quarter of the cached lifetime, and at least in its last 30 s.
fn needs_refresh(age: Duration, ttl: Duration) -> bool {
    let margin = (ttl / 4).max(SKEW);
    age + margin >= ttl
}

struct PerEntryTtl;

impl Expiry<String, Arc<Exchanged>> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, value: &Arc<Exchanged>, _now: std::time::Instant) -> Option<Duration> {
        Some(value.ttl)
    }

    /// A background refresh replaces the entry: the new token's lifetime counts from now.
    fn expire_after_update(
        &self,
        _key: &String,
        value: &Arc<Exchanged>,
        _now: std::time::Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

#[derive(Debug, Clone)]
struct Failure {
    error: Error,
    until: Instant,
}

pub struct Exchanger {
    http: reqwest::Client,
    secrets: SecretStore,
    allow_private_networks: bool,
    cache: moka::future::Cache<String, Arc<Exchanged>>,
    credentials: moka::future::Cache<SecretRef, Arc<ClientCredentials>>,
    failures: moka::sync::Cache<String, Failure>,
    attempts: moka::sync::Cache<String, u32>,
    refreshing: Mutex<HashSet<String>>,
    /// With several replicas: the tokens they share.
    shared: Option<shared::Shared>,
}

impl Exchanger {
    /// With a shared `store`, tokens are shared sealed under `keyring` (the replicas' keys).
    pub fn new(
        http: reqwest::Client,
        secrets: SecretStore,
        allow_private_networks: bool,
        store: &crate::store::Store,
        keyring: crate::store::Keyring,
    ) -> Arc<Self> {
        Arc::new(Self {
            http,
            secrets,
            allow_private_networks,
            cache: moka::future::Cache::builder().max_capacity(100_000).expire_after(PerEntryTtl).build(),
            // A rotated secret takes effect within this TTL.
            credentials: moka::future::Cache::builder().time_to_live(Duration::from_secs(10)).build(),
            failures: moka::sync::Cache::builder().time_to_live(FAILURE_BACKOFF_MAX).build(),
            attempts: moka::sync::Cache::builder().time_to_idle(Duration::from_secs(300)).build(),
            refreshing: Mutex::default(),
            shared: store.is_shared().then(|| shared::Shared::new(store.clone(), keyring)),
        })
    }

    /// The token for `identity` at `target`'s cluster: from the cache, or exchanged now.
    pub async fn token(self: &Arc<Self>, target: &ExchangeTarget, identity: &Identity) -> Result<Secret, Error> {
        let (key, credentials) = self.key(target, identity).await?;
        if let Some(entry) = self.cache.get(&key).await {
            crate::telemetry::metrics::token_cache_hit(&target.cluster);
            if entry.needs_refresh() {
                self.refresh_in_background(key, target.clone(), identity.token.clone(), credentials);
            }
            return Ok(entry.token.clone());
        }
        if let Some(failure) = self.failures.get(&key)
            && failure.until > Instant::now()
        {
            return Err(Error::BackingOff {
                error: Box::new(failure.error),
                retry_in: failure.until.saturating_duration_since(Instant::now()),
            });
        }
        let exchange = self.obtain(&key, target, &identity.token, credentials.as_deref());
        match self.cache.try_get_with(key.clone(), exchange).await {
            Ok(entry) => {
                self.attempts.invalidate(&key);
                Ok(entry.token.clone())
            }
            Err(error) => {
                let error = (*error).clone();
                let attempts = self.attempts.get(&key).unwrap_or(0) + 1;
                self.attempts.insert(key.clone(), attempts);
                let delay = FAILURE_BACKOFF_START.saturating_mul(1 << (attempts - 1).min(10)).min(FAILURE_BACKOFF_MAX);
                self.failures.insert(key, Failure { error: error.clone(), until: Instant::now() + delay });
                Err(error)
            }
        }
    }

    /// A token from the other replicas, or exchanged here (by one replica at a time).
    async fn obtain(
        &self,
        key: &str,
        target: &ExchangeTarget,
        subject_token: &Secret,
        credentials: Option<&ClientCredentials>,
    ) -> Result<Arc<Exchanged>, Error> {
        let Some(shared) = &self.shared else { return self.exchange(target, subject_token, credentials).await };
        let deadline = Instant::now() + shared::WAIT;
        loop {
            match shared.lookup(key).await {
                shared::Lookup::Found(entry) => return Ok(entry),
                shared::Lookup::Unavailable => return self.exchange(target, subject_token, credentials).await,
                shared::Lookup::Missing => {}
            }
            match shared.lock(key).await {
                Some(true) => {
                    // The holder before us may have published and unlocked since our lookup.
                    if let shared::Lookup::Found(entry) = shared.lookup(key).await {
                        shared.unlock(key).await;
                        return Ok(entry);
                    }
                    let result = self.exchange(target, subject_token, credentials).await;
                    if let Ok(entry) = &result {
                        shared.publish(key, entry).await;
                    }
                    shared.unlock(key).await;
                    return result;
                }
                Some(false) if Instant::now() < deadline => tokio::time::sleep(shared::POLL).await,
                // The holder is slow or gone, or the store failed: exchange here.
                Some(false) | None => return self.exchange(target, subject_token, credentials).await,
            }
        }
    }

    /// Drops the cached token (after the upstream answered 401), here and for the other
    /// replicas, so the next call re-exchanges.
    pub async fn invalidate(&self, target: &ExchangeTarget, identity: &Identity) {
        if let Ok((key, _)) = self.key(target, identity).await {
            self.cache.invalidate(&key).await;
            if let Some(shared) = &self.shared {
                shared.forget(&key).await;
            }
        }
    }

    /// The last failure for this user at this cluster, if it is still being backed off.
    pub async fn last_failure(&self, target: &ExchangeTarget, identity: &Identity) -> Option<Error> {
        let (key, _) = self.key(target, identity).await.ok()?;
        self.failures.get(&key).filter(|f| f.until > Instant::now()).map(|f| f.error)
    }

    /// True when a token for this user and cluster is cached.
    pub async fn has_token(&self, target: &ExchangeTarget, identity: &Identity) -> bool {
        let Ok((key, _)) = self.key(target, identity).await else { return false };
        self.cache.contains_key(&key)
    }

    /// The cache key for this user at this target, and the client credentials it includes.
    async fn key(
        &self,
        target: &ExchangeTarget,
        identity: &Identity,
    ) -> Result<(String, Option<Arc<ClientCredentials>>), Error> {
        let credentials = self.credentials(target).await?;
        let key = cache_key(target, credentials.as_ref().map(|c| c.client_id.as_str()), &identity.key());
        Ok((key, credentials))
    }

    async fn credentials(&self, target: &ExchangeTarget) -> Result<Option<Arc<ClientCredentials>>, Error> {
        let Some(secret) = &target.secret else { return Ok(None) };
        let store = self.secrets.clone();
        let reference = secret.clone();
        self.credentials
            .try_get_with(secret.clone(), async move {
                store
                    .credentials(&reference.namespace, &reference.name, &reference.id_key, &reference.secret_key)
                    .await
                    .map(Arc::new)
            })
            .await
            .map(Some)
            .map_err(|e| Error::config(&target.cluster, e.to_string()))
    }

    fn refresh_in_background(
        self: &Arc<Self>,
        key: String,
        target: ExchangeTarget,
        subject_token: Secret,
        credentials: Option<Arc<ClientCredentials>>,
    ) {
        let Ok(mut refreshing) = self.refreshing.lock() else { return };
        if !refreshing.insert(key.clone()) {
            return;
        }
        drop(refreshing);
        let this = self.clone();
        tokio::spawn(async move {
            match this.refresh(&key, &target, &subject_token, credentials.as_deref()).await {
                Ok(Some(entry)) => this.cache.insert(key.clone(), entry).await,
                Ok(None) => {}
                Err(e) => tracing::warn!(cluster = target.cluster, error = %e, "background token refresh failed"),
            }
            if let Ok(mut refreshing) = this.refreshing.lock() {
                refreshing.remove(&key);
            }
        });
    }

    /// A fresher token for the background refresh: another replica's newer one, or exchanged
    /// here; `None` while another replica is refreshing it (this one's is still valid).
    async fn refresh(
        &self,
        key: &str,
        target: &ExchangeTarget,
        subject_token: &Secret,
        credentials: Option<&ClientCredentials>,
    ) -> Result<Option<Arc<Exchanged>>, Error> {
        let Some(shared) = &self.shared else {
            return self.exchange(target, subject_token, credentials).await.map(Some);
        };
        if let shared::Lookup::Found(entry) = shared.lookup(key).await
            && !entry.needs_refresh()
        {
            return Ok(Some(entry));
        }
        match shared.lock(key).await {
            Some(false) => Ok(None),
            taken => {
                // Another replica may have refreshed it and unlocked since our lookup.
                if taken == Some(true)
                    && let shared::Lookup::Found(entry) = shared.lookup(key).await
                    && !entry.needs_refresh()
                {
                    shared.unlock(key).await;
                    return Ok(Some(entry));
                }
                let result = self.exchange(target, subject_token, credentials).await;
                if let Ok(entry) = &result {
                    shared.publish(key, entry).await;
                }
                if taken == Some(true) {
                    shared.unlock(key).await;
                }
                result.map(Some)
            }
        }
    }

    async fn exchange(
        &self,
        target: &ExchangeTarget,
        subject_token: &Secret,
        credentials: Option<&ClientCredentials>,
    ) -> Result<Arc<Exchanged>, Error> {
        let span =
            tracing::info_span!("auth.token_exchange", "muster.cluster" = %target.cluster, "otel.kind" = "client");
        let result =
            tracing::Instrument::instrument(self.exchange_once(target, subject_token, credentials), span).await;
        crate::telemetry::metrics::token_exchange(&target.cluster, result.is_ok());
        match &result {
            Ok(_) => tracing::info!(cluster = target.cluster, "token exchanged"),
            Err(e) => tracing::warn!(cluster = target.cluster, error = %e, "token exchange failed"),
        }
        result
    }

    async fn exchange_once(
        &self,
        target: &ExchangeTarget,
        subject_token: &Secret,
        credentials: Option<&ClientCredentials>,
    ) -> Result<Arc<Exchanged>, Error> {
        let cluster = target.cluster.clone();
        let endpoint = target.endpoint.to_string();
        self.check_endpoint(target).await?;
        let scope = target.scope_param();
        let form = [
            ("grant_type", GRANT_TYPE),
            ("subject_token", subject_token.expose()),
            ("subject_token_type", ID_TOKEN_TYPE),
            ("requested_token_type", ID_TOKEN_TYPE),
            ("connector_id", target.connector_id.as_str()),
            ("scope", scope.as_str()),
        ];
        let mut request = self.http.post(target.endpoint.clone()).form(&form);
        if let Some(credentials) = credentials {
            request = request.basic_auth(&credentials.client_id, Some(credentials.client_secret.expose()));
        }
        let unreachable =
            |reason: String| Error::Unreachable { cluster: cluster.clone(), endpoint: endpoint.clone(), reason };
        let response = request.send().await.map_err(|e| unreachable(describe_reqwest(&e)))?;
        let status = response.status();
        let body = read_limited(response, MAX_RESPONSE_BYTES).await.map_err(unreachable)?;
        if !status.is_success() {
            let oauth: Option<OAuthError> = serde_json::from_slice(&body).ok();
            return Err(match oauth {
                Some(e) => Error::Rejected { cluster, endpoint, error: e.error, description: e.error_description },
                None => Error::Rejected { cluster, endpoint, error: format!("HTTP {status}"), description: None },
            });
        }
        let bad = |reason: String| Error::BadResponse { cluster: cluster.clone(), endpoint: endpoint.clone(), reason };
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
        if parsed.access_token.is_empty() {
            return Err(bad("empty access_token".to_owned()));
        }
        let claims = unverified_claims(&parsed.access_token);
        if let Some(got) = claims.as_ref().and_then(|c| c.get("iss")).and_then(|i| i.as_str())
            && got != target.expected_issuer
        {
            return Err(Error::IssuerMismatch {
                cluster,
                expected: target.expected_issuer.clone(),
                got: got.to_owned(),
            });
        }
        let lifetime = parsed.expires_in.map(Duration::from_secs).or_else(|| {
            let exp = claims.as_ref()?.get("exp")?.as_u64()?;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
            Some(Duration::from_secs(exp.saturating_sub(now)))
        });
        let ttl = lifetime.map_or(Duration::from_secs(60), |l| l.saturating_sub(SKEW)).max(Duration::from_secs(1));
        Ok(Arc::new(Exchanged { token: Secret::new(parsed.access_token), ttl, obtained: Instant::now() }))
    }

    /// https, or http on loopback; where `egress` allows (private networks only with opt-in).
    async fn check_endpoint(&self, target: &ExchangeTarget) -> Result<(), Error> {
        let url = &target.endpoint;
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| Error::Unreachable {
                    cluster: target.cluster.clone(),
                    endpoint: url.to_string(),
                    reason: format!("cannot resolve {host}: {e}"),
                })?
                .map(|a| a.ip())
                .collect(),
        };
        let loopback = !addrs.is_empty() && addrs.iter().all(|ip| egress::classify(*ip) == egress::Class::Loopback);
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            return Err(Error::config(
                &target.cluster,
                format!("token endpoint {url} must use https (http only on loopback)"),
            ));
        }
        let policy = egress::Policy { allow_private_networks: self.allow_private_networks };
        if let Some(refused) = addrs.iter().find_map(|ip| policy.check(*ip).err()) {
            let hint = match refused {
                egress::Refused::Private(_) => "; set aggregator.oauth.allowPrivateNetworks to allow it",
                egress::Refused::Metadata(_) | egress::Refused::NotUnicast(_) => "",
            };
            return Err(Error::config(
                &target.cluster,
                format!("token endpoint {url} resolves to a refused address: {refused}{hint}"),
            ));
        }
        Ok(())
    }
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    // reqwest's Display can include the URL; the URL is configuration, not a secret.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe_reqwest(&e))? {
        if body.len() + chunk.len() > limit {
            return Err(format!("response larger than {} KiB", limit / 1024));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    access_token: String,
    expires_in: Option<u64>,
}

/// The cache key: (endpoint, connector, client id, scopes + audiences sorted, subject), hashed,
/// plus the expected issuer, so a token checked against one target's issuer is never handed to a
/// target that expects another.
fn cache_key(target: &ExchangeTarget, client_id: Option<&str>, subject: &str) -> String {
    let mut scopes: Vec<&str> = target.scopes.split_whitespace().collect();
    let audiences: Vec<String> = target.audiences.iter().map(|a| format!("audience:{a}")).collect();
    scopes.extend(audiences.iter().map(String::as_str));
    scopes.sort_unstable();
    scopes.dedup();
    let mut hasher = sha2::Sha256::new();
    let scopes = scopes.join(" ");
    let parts = [
        target.endpoint.as_str(),
        &target.connector_id,
        client_id.unwrap_or_default(),
        &scopes,
        subject,
        &target.expected_issuer,
    ];
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests;
