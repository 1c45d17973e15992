//! Authentication: who the agent is (inbound bearer JWTs validated against the central identity
//! provider) and what each upstream cluster gets (the user's token forwarded, or one exchanged
//! for it by RFC 8693 at that cluster's identity provider, cached per user and cluster).
//!
//! Tokens live in `token::Secret`, whose `Debug` and `Display` print `***`: no token reaches a log,
//! an error or a metric by accident.

pub mod exchange;
pub mod inbound;
pub mod secrets;
pub mod server;
pub mod token;

pub use token::{Identity, Secret};

use std::sync::Arc;
use std::time::Duration;

/// The HTTP client for identity providers (discovery, JWKS, token endpoints): short timeouts,
/// no redirects (a token request must not be replayed elsewhere), and never a link-local or
/// metadata address, whatever a name resolves to (`egress`; private networks are judged per
/// token endpoint by `exchange`).
pub fn idp_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .dns_resolver(crate::egress::Resolver { policy: crate::egress::Policy { allow_private_networks: true } })
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(8)
        .build()
}

/// Inbound sign-in as the frontend uses it: the validator, the RFC 9728 metadata and, with
/// `dex.clientSecret`, muster's own authorization server.
pub struct InboundAuth {
    pub validator: Arc<inbound::Validator>,
    /// `{baseUrl}/.well-known/oauth-protected-resource/mcp`, sent in `WWW-Authenticate`.
    pub resource_metadata_url: String,
    /// The RFC 9728 protected-resource metadata document.
    pub metadata: serde_json::Value,
    /// muster as the authorization server of `/mcp` (issue 14); `None`: the central IdP is.
    pub server: Option<server::AuthorizationServer>,
}

impl InboundAuth {
    /// `store`: where the authorization server keeps sign-ins (shared by the replicas, or not).
    pub fn new(
        config: &crate::config::OAuthServer,
        http: reqwest::Client,
        store: &crate::store::Store,
    ) -> reqwest::Result<Self> {
        let mut issuers = vec![inbound::TrustedIssuer {
            issuer: config.issuer.clone(),
            jwks_url: None,
            audiences: inbound::audiences(&config.client_id, &config.trusted_audiences),
        }];
        issuers.extend(config.trusted_issuers.iter().map(|t| inbound::TrustedIssuer {
            issuer: t.issuer.clone(),
            jwks_url: t.jwks_url.clone(),
            audiences: if t.allowed_audiences.is_empty() {
                vec![config.client_id.clone()]
            } else {
                t.allowed_audiences.clone()
            },
        }));
        let validator = Arc::new(inbound::Validator::new(http.clone(), issuers));
        let server = match &config.authorization_server {
            Some(server) => Some(server::AuthorizationServer::new(config, server, http, validator.clone(), store)?),
            None => None,
        };
        // Agents sign in where this names: muster itself when it is the authorization server.
        let authorization_server = if server.is_some() { &config.base_url } else { &config.issuer };
        let resource = format!("{}/mcp", config.base_url);
        Ok(Self {
            validator,
            resource_metadata_url: format!("{}/.well-known/oauth-protected-resource/mcp", config.base_url),
            metadata: serde_json::json!({
                "resource": resource,
                "authorization_servers": [authorization_server],
                "bearer_methods_supported": ["header"],
                "scopes_supported": ["openid", "profile", "email", "groups"],
                "resource_name": "muster",
            }),
            server,
        })
    }
}
