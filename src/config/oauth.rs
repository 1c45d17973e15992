//! `aggregator.oauth`: muster as a protected resource of the central IdP, and, with
//! `server.dex.clientSecret`, as the OAuth 2.1 authorization server for its own `/mcp` in front of
//! that IdP (Muster's keys, reference §2.5).
//!
//! Without a client secret muster cannot be a confidential client of the IdP, so it stays what it
//! was: a resource server whose RFC 9728 metadata names the central IdP, accepting the IdP's JWTs.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::egress::is_https_or_loopback;

/// `aggregator.oauth.server`: muster as an OAuth protected resource of the central IdP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthServer {
    /// muster's public URL (for `resource_metadata` and RFC 9728 metadata).
    pub base_url: String,
    pub issuer: String,
    pub client_id: String,
    pub trusted_audiences: Vec<String>,
    pub trusted_issuers: Vec<TrustedIssuer>,
    /// muster as the authorization server of `/mcp`; `None` without `dex.clientSecret`.
    pub authorization_server: Option<AuthorizationServer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustedIssuer {
    pub issuer: String,
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default)]
    pub allowed_audiences: Vec<String>,
}

/// The authorization-server half of `aggregator.oauth.server` (issue 14). `Debug` hides secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthorizationServer {
    /// muster's secret as a confidential client of the central IdP (`dex.clientSecret[File]`).
    pub client_secret: String,
    /// Sent to Dex as `connector_id`, to skip its connector choice.
    pub connector_id: Option<String>,
    /// Lets `/oauth/register` accept any redirect URI (`registrationToken[File]`).
    pub registration_token: Option<String>,
    /// Anyone may register any redirect URI (Muster's default: false).
    pub allow_public_client_registration: bool,
    pub trusted_schemes: Vec<String>,
    pub trusted_redirect_uris: Vec<String>,
    pub enable_cimd: bool,
    /// Loopback redirect URIs (RFC 8252) register without a token.
    pub allow_localhost_redirect_uris: bool,
    /// How long a sign-in lasts: refresh tokens roll within it.
    pub session_duration: Duration,
    /// AES-256-GCM key for the stored IdP tokens; `None` makes muster pick one per process.
    pub encryption_key: Option<[u8; 32]>,
    /// Where CIMD documents may be fetched from (`aggregator.oauth.allowPrivateNetworks`).
    pub allow_private_networks: bool,
}

impl std::fmt::Debug for AuthorizationServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationServer")
            .field("client_secret", &"***")
            .field("connector_id", &self.connector_id)
            .field("registration_token", &self.registration_token.as_ref().map(|_| "***"))
            .field("allow_public_client_registration", &self.allow_public_client_registration)
            .field("trusted_schemes", &self.trusted_schemes)
            .field("trusted_redirect_uris", &self.trusted_redirect_uris)
            .field("enable_cimd", &self.enable_cimd)
            .field("allow_localhost_redirect_uris", &self.allow_localhost_redirect_uris)
            .field("session_duration", &self.session_duration)
            .field("encryption_key", &self.encryption_key.map(|_| "***"))
            .finish()
    }
}

/// Muster's `aggregator.oauth`. `server` is acted on; Muster's other keys (`mcpClient`, ...) are
/// accepted so its config files load, and reported as ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OAuthFile {
    #[serde(default)]
    server: Option<OAuthServerFile>,
    #[serde(default)]
    pub(super) allow_private_networks: bool,
    #[serde(flatten)]
    ignored: std::collections::BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OAuthServerFile {
    #[serde(default)]
    enabled: bool,
    base_url: Option<String>,
    #[serde(default)]
    dex: DexFile,
    #[serde(default)]
    trusted_audiences: Vec<String>,
    #[serde(default)]
    trusted_issuers: Vec<TrustedIssuer>,
    registration_token: Option<String>,
    registration_token_file: Option<String>,
    #[serde(default)]
    allow_public_client_registration: bool,
    #[serde(default)]
    trusted_public_registration_schemes: Vec<String>,
    #[serde(default, rename = "trustedPublicRegistrationRedirectURIs")]
    trusted_public_registration_redirect_uris: Vec<String>,
    #[serde(default, rename = "enableCIMD")]
    enable_cimd: Option<bool>,
    #[serde(default, rename = "allowLocalhostRedirectURIs")]
    allow_localhost_redirect_uris: Option<bool>,
    session_duration: Option<String>,
    encryption_key: Option<String>,
    encryption_key_file: Option<String>,
    storage: Option<StorageFile>,
    #[serde(flatten)]
    ignored: std::collections::BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DexFile {
    issuer_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_secret_file: Option<String>,
    connector_id: Option<String>,
    #[serde(flatten)]
    ignored: std::collections::BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StorageFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(flatten)]
    ignored: std::collections::BTreeMap<String, serde_json::Value>,
}

pub(super) fn parse_oauth(dir: &Path, file: &OAuthFile, problems: &mut Vec<String>) -> Option<OAuthServer> {
    for key in file.ignored.keys() {
        tracing::warn!("aggregator.oauth.{key} is not supported by muster and is ignored");
    }
    let server = file.server.as_ref().filter(|s| s.enabled)?;
    for key in server.ignored.keys().chain(server.dex.ignored.keys()) {
        tracing::warn!("aggregator.oauth.server setting {key} is not supported by muster and is ignored");
    }
    let mut require = |value: &Option<String>, field: &str| -> String {
        match value.as_deref() {
            Some(v) if !v.is_empty() => v.trim_end_matches('/').to_owned(),
            _ => {
                problems.push(format!("aggregator.oauth.server.{field}: is required when oauth.server is enabled"));
                String::new()
            }
        }
    };
    let base_url = require(&server.base_url, "baseUrl");
    let issuer = require(&server.dex.issuer_url, "dex.issuerUrl");
    let client_id = require(&server.dex.client_id, "dex.clientId");
    for (field, url) in [("baseUrl", &base_url), ("dex.issuerUrl", &issuer)] {
        if !url.is_empty() && !is_https_or_loopback(url) {
            problems.push(format!("aggregator.oauth.server.{field}: {url:?} must be https (http only on loopback)"));
        }
    }
    for (i, trusted) in server.trusted_issuers.iter().enumerate() {
        for (field, url) in [("issuer", Some(&trusted.issuer)), ("jwksUrl", trusted.jwks_url.as_ref())] {
            if let Some(url) = url
                && !is_https_or_loopback(url)
            {
                problems.push(format!(
                    "aggregator.oauth.server.trustedIssuers[{i}].{field}: {url:?} must be https (http only on loopback)"
                ));
            }
        }
    }
    Some(OAuthServer {
        base_url,
        issuer,
        client_id,
        trusted_audiences: server.trusted_audiences.clone(),
        trusted_issuers: server.trusted_issuers.clone(),
        authorization_server: parse_authorization_server(dir, server, file.allow_private_networks, problems),
    })
}

/// The authorization server, when `dex.clientSecret[File]` is set.
fn parse_authorization_server(
    dir: &Path,
    server: &OAuthServerFile,
    allow_private_networks: bool,
    problems: &mut Vec<String>,
) -> Option<AuthorizationServer> {
    let field = |name: &str| format!("aggregator.oauth.server.{name}");
    let mut secret = |value: &Option<String>, file: &Option<String>, name: &str| -> Option<String> {
        match (value, file) {
            (Some(_), Some(_)) => {
                problems.push(format!("{}: set {name} or {name}File, not both", field(name)));
                None
            }
            (Some(value), None) => Some(value.trim().to_owned()).filter(|v| !v.is_empty()),
            (None, Some(path)) => match std::fs::read_to_string(dir.join(path)) {
                Ok(text) => Some(text.trim().to_owned()).filter(|v| !v.is_empty()),
                Err(e) => {
                    problems.push(format!("{}File: {path:?} cannot be read: {e}", field(name)));
                    None
                }
            },
            (None, None) => None,
        }
    };
    let client_secret = secret(&server.dex.client_secret, &server.dex.client_secret_file, "dex.clientSecret");
    let registration_token = secret(&server.registration_token, &server.registration_token_file, "registrationToken");
    let encryption_key = secret(&server.encryption_key, &server.encryption_key_file, "encryptionKey");
    let Some(client_secret) = client_secret else {
        tracing::info!(
            "aggregator.oauth.server.dex has no clientSecret: muster accepts the central IdP's tokens but is not an authorization server"
        );
        return None;
    };
    let encryption_key = encryption_key.and_then(|key| match decode_key(&key) {
        Some(key) => Some(key),
        None => {
            problems.push(format!("{}: must be 32 bytes, base64-encoded", field("encryptionKey")));
            None
        }
    });
    let session_duration = match server.session_duration.as_deref() {
        None => Duration::from_secs(720 * 3600),
        Some(text) => parse_go_duration(text).unwrap_or_else(|| {
            problems.push(format!("{}: {text:?} is not a duration like \"720h\"", field("sessionDuration")));
            Duration::ZERO
        }),
    };
    if let Some(kind) = server.storage.as_ref().and_then(|s| s.kind.as_deref())
        && kind != "memory"
    {
        problems.push(format!("{}: {kind:?} is not supported yet (only memory)", field("storage.type")));
    }
    for key in server.storage.iter().flat_map(|s| s.ignored.keys()) {
        tracing::warn!("aggregator.oauth.server.storage.{key} is ignored (memory storage)");
    }
    Some(AuthorizationServer {
        client_secret,
        connector_id: server.dex.connector_id.clone().filter(|c| !c.is_empty()),
        registration_token,
        allow_public_client_registration: server.allow_public_client_registration,
        trusted_schemes: server.trusted_public_registration_schemes.iter().map(|s| s.to_ascii_lowercase()).collect(),
        trusted_redirect_uris: server.trusted_public_registration_redirect_uris.clone(),
        enable_cimd: server.enable_cimd.unwrap_or(true),
        allow_localhost_redirect_uris: server.allow_localhost_redirect_uris.unwrap_or(true),
        session_duration,
        encryption_key,
        allow_private_networks,
    })
}

fn decode_key(text: &str) -> Option<[u8; 32]> {
    use base64::Engine as _;
    let engines = [base64::engine::general_purpose::STANDARD, base64::engine::general_purpose::URL_SAFE];
    engines.iter().find_map(|engine| engine.decode(text).ok()).and_then(|bytes| bytes.try_into().ok())
}

/// A Go duration (`720h`, `1h30m`, `90s`), as Muster writes `sessionDuration`.
fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total = total.checked_add(number.parse::<u64>().ok()?.checked_mul(unit)?)?;
        number.clear();
    }
    (number.is_empty() && total > 0).then(|| Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const AS: &str = "aggregator:\n  oauth:\n    server:\n      enabled: true\n      baseUrl: https://muster.example.com\n      dex: {issuerUrl: https://dex.example.com, clientId: muster, clientSecret: s3cret, connectorId: github}\n";

    #[test]
    fn a_client_secret_makes_muster_the_authorization_server_with_musters_defaults() {
        let config = Config::parse(Path::new("/x"), AS).expect("valid");
        let server = config.oauth.expect("on").authorization_server.expect("authorization server");
        assert_eq!(server.client_secret, "s3cret");
        assert_eq!(server.connector_id.as_deref(), Some("github"));
        assert!(server.enable_cimd && server.allow_localhost_redirect_uris && !server.allow_public_client_registration);
        assert_eq!(server.session_duration, Duration::from_secs(720 * 3600));
        assert!(!format!("{server:?}").contains("s3cret"));
    }

    #[test]
    fn reads_musters_keys_and_reports_bad_values() {
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let text = format!(
            "{AS}      registrationToken: t\n      trustedPublicRegistrationSchemes: [Cursor]\n      trustedPublicRegistrationRedirectURIs: [https://claude.ai/api/mcp/auth_callback]\n      enableCIMD: false\n      allowLocalhostRedirectURIs: false\n      sessionDuration: 1h30m\n      encryptionKey: {key}\n      storage: {{type: memory}}\n"
        );
        let server = Config::parse(Path::new("/x"), &text).expect("valid").oauth.expect("on").authorization_server;
        let server = server.expect("authorization server");
        assert_eq!(server.trusted_schemes, ["cursor"]);
        assert_eq!(server.session_duration, Duration::from_secs(5400));
        assert_eq!(server.encryption_key.expect("key")[31], 31);
        assert!(!server.enable_cimd && !server.allow_localhost_redirect_uris);
        let text = format!(
            "{AS}      sessionDuration: forever\n      encryptionKey: c2hvcnQ=\n      storage: {{type: valkey}}\n"
        );
        let err = Config::parse(Path::new("/x"), &text).expect_err("invalid");
        assert_eq!(err.problems.len(), 3, "{:?}", err.problems);
    }

    #[test]
    fn without_a_client_secret_muster_stays_a_resource_server() {
        let text = AS.replace(", clientSecret: s3cret", "");
        let oauth = Config::parse(Path::new("/x"), &text).expect("valid").oauth.expect("on");
        assert!(oauth.authorization_server.is_none());
    }
}
