//! Token values and the identity they prove. `Secret` never prints its content.

use std::sync::Arc;

use base64::Engine as _;
use sha2::Digest as _;

/// A credential. `Debug`/`Display` print `***`; only `expose` gives the value, at the point of use.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// The raw value: only for an `Authorization` header or a token request body.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A short, stable, non-reversible name for this value (for cache keys, never for logs).
    pub fn fingerprint(&self) -> String {
        hex::encode(&sha2::Sha256::digest(self.0.as_bytes())[..12])
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A validated agent identity, attached to each authenticated request.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The `sub` claim.
    pub subject: String,
    pub issuer: String,
    /// The bearer token the agent presented (a JWT from the central IdP).
    pub token: Secret,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// The `groups` claim (empty without one): `aggregator.admin.groups` is checked against it.
    pub groups: Vec<String>,
}

impl Identity {
    /// Who this is across issuers: `sub` is only unique per issuer, so every per-user key
    /// (exchanged tokens, upstream sessions) uses (issuer, subject).
    pub fn key(&self) -> String {
        format!("{}\n{}", self.issuer, self.subject)
    }

    /// A short hash of the subject, for logs and metrics.
    pub fn subject_hash(&self) -> String {
        hex::encode(&sha2::Sha256::digest(self.subject.as_bytes())[..4])
    }
}

/// The claims of a JWT, read WITHOUT verifying its signature. Only for tokens muster itself
/// obtained from a trusted endpoint over TLS (an exchanged token's `iss`, `exp`).
pub fn unverified_claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("eyJhbGciOi.secret.value");
        assert_eq!(format!("{secret} {secret:?}"), "*** ***");
        let identity =
            Identity { subject: "alice".into(), issuer: "i".into(), token: secret, expires_at: 0, groups: vec![] };
        assert!(!format!("{identity:?}").contains("secret.value"));
    }

    #[test]
    fn reads_claims_of_a_jwt_without_verifying() {
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"iss":"https://dex.a","sub":"alice"}"#);
        let claims = unverified_claims(&format!("e30.{payload}.sig")).expect("claims");
        assert_eq!(claims["iss"], "https://dex.a");
        assert_eq!(unverified_claims("opaque-token"), None);
    }
}
