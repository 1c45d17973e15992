//! Who may sign in through muster: clients registered by RFC 7591 (DCR) and clients named by a
//! Client ID Metadata Document URL (CIMD), and whether a redirect URI belongs to a client.
//!
//! Registration is open for loopback redirect URIs (RFC 8252, `allowLocalhostRedirectURIs`) and for
//! the trusted schemes and URIs; any other redirect URI needs the registration token (or
//! `allowPublicClientRegistration`). A CIMD document is fetched over https (http only on a loopback
//! host, the rule of every IdP URL in `config`), through the `egress` rule of token endpoints,
//! at most `CIMD_MAX_BYTES` within `CIMD_TIMEOUT`, without redirects, and cached for `CIMD_TTL`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::OAuthError;

/// A CIMD document larger than this is refused (they are a few hundred bytes).
pub(super) const CIMD_MAX_BYTES: usize = 5 * 1024;
pub(super) const CIMD_TIMEOUT: Duration = Duration::from_secs(5);
const CIMD_TTL: Duration = Duration::from_secs(300);
/// Redirect URIs one client may register.
const MAX_REDIRECT_URIS: usize = 16;

/// A client muster knows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Client {
    pub(super) client_id: String,
    pub(super) redirect_uris: Vec<String>,
    /// SHA-256 of the secret of a confidential client; `None` for a public one.
    pub(super) secret_hash: Option<String>,
    #[serde(default)]
    pub(super) client_name: Option<String>,
}

/// The RFC 7591 request fields muster reads.
#[derive(Debug, Deserialize)]
pub(super) struct Registration {
    #[serde(default)]
    pub(super) redirect_uris: Vec<String>,
    #[serde(default)]
    pub(super) client_name: Option<String>,
    #[serde(default)]
    pub(super) token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    pub(super) grant_types: Option<Vec<String>>,
    #[serde(default)]
    pub(super) response_types: Option<Vec<String>>,
}

/// What the registration rules allow.
pub(super) struct Policy {
    pub(super) allow_public: bool,
    pub(super) allow_loopback: bool,
    pub(super) trusted_schemes: Vec<String>,
    pub(super) trusted_redirect_uris: Vec<String>,
}

impl Policy {
    /// Checks a registration; `has_token`: the request carried the registration token.
    pub(super) fn check(&self, registration: &Registration, has_token: bool) -> Result<(), OAuthError> {
        if registration.redirect_uris.is_empty() {
            return Err(OAuthError::invalid_redirect_uri("redirect_uris must name at least one URI"));
        }
        if registration.redirect_uris.len() > MAX_REDIRECT_URIS {
            return Err(OAuthError::invalid_redirect_uri(&format!("at most {MAX_REDIRECT_URIS} redirect_uris")));
        }
        for uri in &registration.redirect_uris {
            let url = reqwest::Url::parse(uri)
                .map_err(|_| OAuthError::invalid_redirect_uri(&format!("{uri:?} is not an absolute URI")))?;
            if url.fragment().is_some() {
                return Err(OAuthError::invalid_redirect_uri(&format!("{uri:?} has a fragment")));
            }
            if matches!(url.scheme(), "javascript" | "data" | "file" | "vbscript") {
                return Err(OAuthError::invalid_redirect_uri(&format!("{uri:?} has a forbidden scheme")));
            }
            let open = (self.allow_loopback && is_loopback_redirect(&url))
                || self.trusted_schemes.iter().any(|s| *s == url.scheme())
                || self.trusted_redirect_uris.iter().any(|t| t == uri);
            if !(open || has_token || self.allow_public) {
                return Err(OAuthError::new(
                    "invalid_client_metadata",
                    &format!(
                        "redirect URI {uri:?} is neither loopback nor trusted: registering it needs the registration token"
                    ),
                ));
            }
        }
        for grant in registration.grant_types.iter().flatten() {
            if !matches!(grant.as_str(), "authorization_code" | "refresh_token") {
                return Err(OAuthError::new(
                    "invalid_client_metadata",
                    &format!("grant type {grant:?} is not supported"),
                ));
            }
        }
        for response_type in registration.response_types.iter().flatten() {
            if response_type != "code" {
                return Err(OAuthError::new(
                    "invalid_client_metadata",
                    &format!("response type {response_type:?} is not supported"),
                ));
            }
        }
        match registration.token_endpoint_auth_method.as_deref() {
            None | Some("none" | "client_secret_basic" | "client_secret_post") => Ok(()),
            Some(other) => Err(OAuthError::new(
                "invalid_client_metadata",
                &format!("token_endpoint_auth_method {other:?} is not supported"),
            )),
        }
    }
}

/// `http` on 127.0.0.1, [::1] or localhost (RFC 8252 §7.3; `localhost` as Muster allows it).
pub(super) fn is_loopback_redirect(url: &reqwest::Url) -> bool {
    url.scheme() == "http" && matches!(url.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"))
}

/// Whether `presented` is one of `registered`: exactly, or for loopback redirects with any port
/// (RFC 8252 §7.3: native apps listen on an ephemeral port).
pub(super) fn redirect_matches(registered: &[String], presented: &str) -> bool {
    if registered.iter().any(|r| r == presented) {
        return true;
    }
    let Ok(presented) = reqwest::Url::parse(presented) else { return false };
    if !is_loopback_redirect(&presented) {
        return false;
    }
    registered.iter().filter_map(|r| reqwest::Url::parse(r).ok()).any(|r| {
        is_loopback_redirect(&r)
            && r.host_str() == presented.host_str()
            && r.path() == presented.path()
            && r.query() == presented.query()
    })
}

/// Whether a `client_id` names a CIMD document (an https URL, or http on loopback).
pub(super) fn is_cimd(client_id: &str) -> bool {
    client_id.contains("://") && crate::egress::is_https_or_loopback(client_id)
}

/// The CIMD fetcher and its cache.
pub(super) struct Cimd {
    http: reqwest::Client,
    policy: crate::egress::Policy,
    cache: moka::future::Cache<String, Client>,
}

#[derive(Deserialize)]
struct Document {
    client_id: String,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    client_name: Option<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
}

impl Cimd {
    pub(super) fn new(allow_private_networks: bool) -> reqwest::Result<Self> {
        let policy = crate::egress::Policy { allow_private_networks };
        let http = reqwest::Client::builder()
            .dns_resolver(crate::egress::Resolver { policy })
            // The whole fetch is bounded by `CIMD_TIMEOUT` in `fetch`.
            .connect_timeout(CIMD_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            policy,
            cache: moka::future::Cache::builder().max_capacity(10_000).time_to_live(CIMD_TTL).build(),
        })
    }

    /// The client a CIMD URL describes.
    pub(super) async fn client(&self, url: &str) -> Result<Client, OAuthError> {
        if let Some(client) = self.cache.get(url).await {
            return Ok(client);
        }
        let client = self.fetch(url).await?;
        self.cache.insert(url.to_owned(), client.clone()).await;
        Ok(client)
    }

    async fn fetch(&self, url: &str) -> Result<Client, OAuthError> {
        let refused = |why: String| OAuthError::invalid_client(&format!("client metadata document {url}: {why}"));
        let parsed = reqwest::Url::parse(url).map_err(|_| refused("not a URL".to_owned()))?;
        if parsed.fragment().is_some() || !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(refused("must not carry a fragment or credentials".to_owned()));
        }
        self.policy.check_url(url).map_err(|e| refused(e.to_string()))?;
        let fetch = async {
            let response = self
                .http
                .get(parsed.clone())
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(|e| refused(format!("cannot be fetched ({})", fetch_reason(&e))))?;
            if !response.status().is_success() {
                return Err(refused(format!("answered HTTP {}", response.status().as_u16())));
            }
            super::upstream::read_limited(response, CIMD_MAX_BYTES).await.map_err(refused)
        };
        let body = tokio::time::timeout(CIMD_TIMEOUT, fetch)
            .await
            .map_err(|_| refused(format!("did not arrive within {} s", CIMD_TIMEOUT.as_secs())))??;
        let document: Document =
            serde_json::from_slice(&body).map_err(|e| refused(format!("is not a client metadata document: {e}")))?;
        if document.client_id != url {
            return Err(refused("its client_id is not its own URL".to_owned()));
        }
        if document.redirect_uris.is_empty() {
            return Err(refused("names no redirect_uris".to_owned()));
        }
        if document.token_endpoint_auth_method.as_deref().is_some_and(|m| m != "none") {
            return Err(refused("only public clients (token_endpoint_auth_method none) are supported".to_owned()));
        }
        Ok(Client {
            client_id: document.client_id,
            redirect_uris: document.redirect_uris,
            secret_hash: None,
            client_name: document.client_name,
        })
    }
}

/// Why a fetch failed, in words (reqwest's message names the URL, already in the error).
fn fetch_reason(error: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut source = error.source();
    let mut reason = if error.is_timeout() { "timed out".to_owned() } else { "connection failed".to_owned() };
    while let Some(inner) = source {
        reason = inner.to_string();
        source = inner.source();
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(uris: &[&str]) -> Registration {
        Registration {
            redirect_uris: uris.iter().map(|u| (*u).to_owned()).collect(),
            client_name: None,
            token_endpoint_auth_method: None,
            grant_types: None,
            response_types: None,
        }
    }

    #[test]
    fn loopback_redirects_match_on_any_port_and_others_exactly() {
        let registered = ["http://127.0.0.1/callback".to_owned(), "cursor://anysphere/cb".to_owned()];
        assert!(redirect_matches(&registered, "http://127.0.0.1:53121/callback"));
        assert!(redirect_matches(&registered, "cursor://anysphere/cb"));
        assert!(!redirect_matches(&registered, "http://127.0.0.1:53121/other"));
        assert!(!redirect_matches(&registered, "http://localhost:53121/callback"), "same loopback host");
        assert!(!redirect_matches(&registered, "cursor://anysphere/cb/x"));
        assert!(!redirect_matches(&["https://a.example/cb".to_owned()], "https://a.example:444/cb"));
    }

    #[test]
    fn registration_is_open_for_loopback_and_trusted_redirects_only() {
        let policy = Policy {
            allow_public: false,
            allow_loopback: true,
            trusted_schemes: vec!["cursor".to_owned()],
            trusted_redirect_uris: vec!["https://claude.ai/api/mcp/auth_callback".to_owned()],
        };
        assert!(policy.check(&registration(&["http://127.0.0.1:9/cb"]), false).is_ok());
        assert!(policy.check(&registration(&["cursor://x/cb"]), false).is_ok());
        assert!(policy.check(&registration(&["https://claude.ai/api/mcp/auth_callback"]), false).is_ok());
        let evil = registration(&["https://evil.example/cb"]);
        assert_eq!(policy.check(&evil, false).expect_err("needs a token").error, "invalid_client_metadata");
        assert!(policy.check(&evil, true).is_ok());
        assert_eq!(policy.check(&registration(&[]), true).expect_err("none").error, "invalid_redirect_uri");
        assert!(policy.check(&registration(&["javascript:alert(1)"]), true).is_err());
        assert!(policy.check(&registration(&["http://127.0.0.1/cb#x"]), true).is_err());
    }

    #[test]
    fn cimd_client_ids_are_https_urls_or_loopback_http() {
        assert!(is_cimd("https://giantswarm.github.io/muster/muster-agent.json"));
        assert!(is_cimd("http://127.0.0.1:8080/client.json"));
        assert!(!is_cimd("http://example.com/client.json"));
        assert!(!is_cimd("d2f0c0de"));
    }
}
