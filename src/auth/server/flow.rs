//! The endpoints' logic: `/oauth/authorize` (client, exact redirect URI, PKCE S256, RFC 8707
//! `resource`; on to the IdP), `/oauth/callback` (the IdP's code for the user's tokens, then
//! muster's one-time code to the agent with `state` and `iss`, RFC 9207), `/oauth/token`
//! (`authorization_code` with PKCE; `refresh_token`, rotating) and `/oauth/revoke` (RFC 7009).
//!
//! Until the redirect URI is known to belong to the client, a refusal is a page (`Refusal::Page`),
//! never a redirect; after that it goes back to the agent (`Refusal::Redirect`), as RFC 6749
//! §4.1.2.1 says.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::clients::redirect_matches;
use super::tokens::{REFRESH_TOKEN_PREFIX, RefreshRecord, TokenResponse as Tokens};
use super::{ACCESS_TOKEN_PREFIX, AuthorizationServer, OAuthError, hash, random_token};
use crate::auth::Identity;

pub use super::tokens::TokenResponse;

/// A pending authorization lives this long (the user signs in at the IdP meanwhile).
const PENDING_TTL: Duration = Duration::from_secs(600);
/// muster's codes work once, within this.
const CODE_TTL: Duration = Duration::from_secs(60);
/// A redeemed code is remembered this long, so its reuse revokes what it gave.
const USED_CODE_TTL: Duration = Duration::from_secs(600);

/// `/oauth/authorize`'s query.
#[derive(Debug, Default, Deserialize)]
pub struct AuthorizeRequest {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub state: Option<String>,
    pub scope: Option<String>,
    pub resource: Option<String>,
}

/// `/oauth/callback`'s query, from the IdP.
#[derive(Debug, Default, Deserialize)]
pub struct CallbackRequest {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// `/oauth/token`'s form and the client's HTTP Basic credentials, if any.
#[derive(Debug, Default)]
pub struct TokenRequest {
    pub form: HashMap<String, String>,
    pub basic: Option<(String, String)>,
}

/// Why an authorization did not go on.
#[derive(Debug)]
pub enum Refusal {
    /// A page for the person at the browser: the redirect URI cannot be trusted (or there is none).
    Page { status: u16, title: &'static str, message: String },
    /// Back to the agent's (registered) redirect URI with `error`.
    Redirect(String),
}

/// A completed sign-in: where the browser goes, and who signed in (for SSO warm-up).
pub struct Callback {
    pub redirect: String,
    pub identity: Identity,
}

#[derive(Serialize, Deserialize)]
struct Pending {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    state: Option<String>,
    scope: Option<String>,
    idp_verifier: String,
}

#[derive(Serialize, Deserialize)]
struct Code {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    family: String,
}

impl AuthorizationServer {
    /// Checks an authorization request and keeps it; `Ok` is the IdP's authorize URL.
    pub async fn authorize(&self, request: AuthorizeRequest) -> Result<String, Refusal> {
        let page = |status, title, message: String| Refusal::Page { status, title, message };
        let client_id = request.client_id.as_deref().unwrap_or_default();
        let client = self.client(client_id).await.map_err(|e| page(400, "Unknown client", e.description))?;
        let redirect_uri = request
            .redirect_uri
            .clone()
            .ok_or_else(|| page(400, "Sign-in refused", "the request names no redirect_uri".to_owned()))?;
        if !redirect_matches(&client.redirect_uris, &redirect_uri) {
            return Err(page(
                400,
                "Redirect URI not registered",
                format!(
                    "{redirect_uri:?} is not a redirect URI of client {client_id:?}, so muster does not send you there"
                ),
            ));
        }
        let back =
            |error: OAuthError| Refusal::Redirect(self.error_redirect(&redirect_uri, &error, request.state.as_deref()));
        if request.response_type.as_deref() != Some("code") {
            return Err(back(OAuthError::new("unsupported_response_type", "response_type must be code")));
        }
        let challenge = request.code_challenge.clone().unwrap_or_default();
        if challenge.is_empty() {
            return Err(back(OAuthError::invalid_request("PKCE is required: code_challenge is missing")));
        }
        if request.code_challenge_method.as_deref() != Some("S256") {
            return Err(back(OAuthError::invalid_request("code_challenge_method must be S256 (plain is not allowed)")));
        }
        if challenge.len() != 43 || !challenge.bytes().all(is_base64url) {
            return Err(back(OAuthError::invalid_request("code_challenge is not a base64url SHA-256")));
        }
        self.check_resource(request.resource.as_deref()).map_err(back)?;
        let idp_verifier = random_token();
        let idp_state = random_token();
        let idp = self
            .upstream
            .authorize_url(super::upstream::Authorize { state: &idp_state, code_challenge: &s256(&idp_verifier) })
            .await
            .map_err(|e| page(502, "Identity provider unavailable", e.to_string()))?;
        let pending = Pending {
            client_id: client.client_id,
            redirect_uri,
            code_challenge: challenge,
            state: request.state,
            scope: request.scope,
            idp_verifier,
        };
        self.put(&format!("pending:{idp_state}"), &pending, PENDING_TTL)
            .await
            .map_err(|e| page(503, "Sign-in unavailable", e.description))?;
        Ok(idp)
    }

    /// The IdP sent the browser back: redeem its code, keep the user's tokens, and send the
    /// browser to the agent with muster's one-time code.
    pub async fn callback(&self, request: CallbackRequest) -> Result<Callback, Refusal> {
        let page = |status, title, message: String| Refusal::Page { status, title, message };
        let state = request.state.as_deref().unwrap_or_default();
        if state.is_empty() || state.len() > 256 {
            return Err(page(400, "Sign-in refused", "the identity provider's answer has no valid state".to_owned()));
        }
        let pending: Pending = self
            .take(&format!("pending:{state}"))
            .await
            .map_err(|e| page(503, "Sign-in unavailable", e.description))?
            .ok_or_else(|| {
                page(
                    400,
                    "Sign-in expired",
                    "this sign-in is unknown or expired (state mismatch); start again from your agent".to_owned(),
                )
            })?;
        let back = |error: OAuthError| {
            Refusal::Redirect(self.error_redirect(&pending.redirect_uri, &error, pending.state.as_deref()))
        };
        if let Some(error) = request.error.as_deref() {
            let description = if error == "access_denied" {
                "the sign-in was cancelled or denied at the identity provider".to_owned()
            } else {
                format!(
                    "the identity provider answered {error}: {}",
                    request.error_description.as_deref().unwrap_or("no description")
                )
            };
            return Err(back(OAuthError::new("access_denied", &description)));
        }
        let code = request.code.as_deref().unwrap_or_default();
        if code.is_empty() {
            return Err(back(OAuthError::invalid_request("the identity provider returned no code")));
        }
        let tokens = self
            .upstream
            .exchange_code(code, &pending.idp_verifier)
            .await
            .map_err(|e| page(502, "Identity provider error", e.to_string()))?;
        let identity = self
            .validator
            .validate(tokens.id_token.expose())
            .await
            .map_err(|e| page(502, "Identity provider error", format!("its ID token was not accepted: {e}")))?;
        let until_redeemed = CODE_TTL + Duration::from_secs(60);
        let family = self
            .new_family(&pending.client_id, &identity, &tokens, pending.scope.clone(), until_redeemed)
            .await
            .map_err(|e| page(503, "Sign-in unavailable", e.description))?;
        let code = format!("mac_{}", random_token());
        let record = Code {
            client_id: pending.client_id.clone(),
            redirect_uri: pending.redirect_uri.clone(),
            code_challenge: pending.code_challenge.clone(),
            family,
        };
        self.put(&format!("code:{}", hash(&code)), &record, CODE_TTL)
            .await
            .map_err(|e| page(503, "Sign-in unavailable", e.description))?;
        tracing::info!(subject = %identity.subject_hash(), client = %pending.client_id, "a user signed in through muster");
        let mut params = vec![("code", code.as_str())];
        params.extend(pending.state.as_deref().map(|s| ("state", s)));
        params.push(("iss", self.issuer()));
        Ok(Callback { redirect: with_query(&pending.redirect_uri, &params), identity })
    }

    /// `/oauth/token`.
    pub async fn token(&self, request: TokenRequest) -> Result<Tokens, OAuthError> {
        let form = &request.form;
        let client = self.authenticate_client(&request).await?;
        self.check_resource(form.get("resource").map(String::as_str))?;
        match form.get("grant_type").map(String::as_str) {
            Some("authorization_code") => self.redeem_code(&client, form).await,
            Some("refresh_token") => self.refresh(&client, form).await,
            Some(other) => {
                Err(OAuthError::new("unsupported_grant_type", &format!("grant_type {other:?} is not supported")))
            }
            None => Err(OAuthError::invalid_request("grant_type is missing")),
        }
    }

    async fn redeem_code(&self, client_id: &str, form: &HashMap<String, String>) -> Result<Tokens, OAuthError> {
        let code =
            form.get("code").filter(|c| !c.is_empty()).ok_or_else(|| OAuthError::invalid_request("code is missing"))?;
        let verifier = form.get("code_verifier").map(String::as_str).unwrap_or_default();
        let code_hash = hash(code);
        let Some(record) = self.take::<Code>(&format!("code:{code_hash}")).await? else {
            if let Some(family) = self.get::<String>(&format!("used:{code_hash}")).await? {
                self.revoke_family(&family).await?;
                return Err(OAuthError::invalid_grant("the code was used already; the tokens it gave are revoked"));
            }
            return Err(OAuthError::invalid_grant("the code is unknown or expired"));
        };
        self.put(&format!("used:{code_hash}"), &record.family, USED_CODE_TTL).await?;
        if record.client_id != client_id {
            return Err(OAuthError::invalid_grant("the code was issued to another client"));
        }
        if form.get("redirect_uri") != Some(&record.redirect_uri) {
            return Err(OAuthError::invalid_grant("redirect_uri does not match the authorization request"));
        }
        if verifier.is_empty() {
            return Err(OAuthError::invalid_request("code_verifier is missing (PKCE)"));
        }
        if !(43..=128).contains(&verifier.len())
            || !verifier.bytes().all(is_pkce_char)
            || s256(verifier) != record.code_challenge
        {
            return Err(OAuthError::invalid_grant("code_verifier does not match the code_challenge (PKCE)"));
        }
        let family = self
            .family(&record.family)
            .await?
            .ok_or_else(|| OAuthError::invalid_grant("the sign-in behind this code has ended"))?;
        self.issue(&record.family, family).await
    }

    async fn refresh(&self, client_id: &str, form: &HashMap<String, String>) -> Result<Tokens, OAuthError> {
        let token = form
            .get("refresh_token")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
        let token_hash = hash(token);
        let gone = || OAuthError::invalid_grant("the refresh token is unknown, expired or revoked");
        // A refresh token is taken (atomically, on every replica's store), so it rotates once; it is
        // kept as used for as long as its family may live, so a second use is seen as reuse.
        let record: RefreshRecord = match self.take(&format!("refresh:{token_hash}")).await? {
            Some(record) => {
                self.put(&format!("refresh-used:{token_hash}"), &record, self.session_duration).await?;
                record
            }
            None => {
                let used: RefreshRecord = self.get(&format!("refresh-used:{token_hash}")).await?.ok_or_else(gone)?;
                self.revoke_family(&used.family).await?;
                return Err(OAuthError::invalid_grant(
                    "the refresh token was used already; every token of this sign-in is revoked",
                ));
            }
        };
        // One change to a family at a time on this replica (the IdP refresh shares the lock).
        let lock = self.refreshing.get_with(record.family.clone(), Default::default);
        let _held = lock.lock().await;
        let family = self.family(&record.family).await?.ok_or_else(gone)?;
        if family.client_id != client_id {
            return Err(OAuthError::invalid_grant("the refresh token was issued to another client"));
        }
        if family.refresh_hash.as_deref() != Some(token_hash.as_str()) {
            self.revoke_family(&record.family).await?;
            return Err(OAuthError::invalid_grant(
                "the refresh token was used already; every token of this sign-in is revoked",
            ));
        }
        self.issue(&record.family, family).await
    }

    /// `/oauth/revoke` (RFC 7009): a refresh token ends its family, an access token itself.
    /// Unknown tokens are not an error.
    pub async fn revoke(&self, request: TokenRequest) -> Result<(), OAuthError> {
        let client_id = self.authenticate_client(&request).await?;
        let token = request.form.get("token").map(String::as_str).unwrap_or_default();
        if token.is_empty() {
            return Err(OAuthError::invalid_request("token is missing"));
        }
        if token.starts_with(ACCESS_TOKEN_PREFIX) {
            return self.revoke_access(token).await;
        }
        if token.starts_with(REFRESH_TOKEN_PREFIX)
            && let Some(record) = self.refresh_record(token).await?
            && let Some(family) = self.family(&record.family).await?
            && family.client_id == client_id
        {
            self.revoke_family(&record.family).await?;
        }
        Ok(())
    }

    /// The family a refresh token belongs to, current or already used.
    async fn refresh_record(&self, token: &str) -> Result<Option<RefreshRecord>, OAuthError> {
        let token_hash = hash(token);
        match self.get(&format!("refresh:{token_hash}")).await? {
            Some(record) => Ok(Some(record)),
            None => self.get(&format!("refresh-used:{token_hash}")).await,
        }
    }

    /// The client of a token request: its id, and its secret when it has one.
    async fn authenticate_client(&self, request: &TokenRequest) -> Result<String, OAuthError> {
        let form_id = request.form.get("client_id");
        let (client_id, secret) = match (&request.basic, form_id) {
            (Some((id, _)), Some(form)) if id != form => {
                return Err(OAuthError::invalid_client("client_id differs from the HTTP Basic credentials"));
            }
            (Some((id, secret)), _) => (id.clone(), Some(secret.clone())),
            (None, Some(id)) => (id.clone(), request.form.get("client_secret").cloned()),
            (None, None) => return Err(OAuthError::invalid_client("the request names no client (client_id)")),
        };
        let client = self.client(&client_id).await.map_err(|e| OAuthError::invalid_client(&e.description))?;
        if let Some(expected) = &client.secret_hash {
            let presented = secret.as_deref().map(hash);
            if presented.as_deref().is_none_or(|p| !super::constant_time_eq(p, expected)) {
                return Err(OAuthError::invalid_client("client authentication failed"));
            }
        }
        Ok(client.client_id)
    }

    /// RFC 8707: the only resource muster issues tokens for is its own `/mcp`.
    fn check_resource(&self, resource: Option<&str>) -> Result<(), OAuthError> {
        match resource {
            None => Ok(()),
            Some(r) if r.trim_end_matches('/') == self.resource || r.trim_end_matches('/') == self.base_url => Ok(()),
            Some(r) => Err(OAuthError::new(
                "invalid_target",
                &format!("muster issues tokens only for {} (not {r:?})", self.resource),
            )),
        }
    }

    fn error_redirect(&self, redirect_uri: &str, error: &OAuthError, state: Option<&str>) -> String {
        let mut params = vec![("error", error.error), ("error_description", error.description.as_str())];
        params.extend(state.map(|s| ("state", s)));
        params.push(("iss", self.issuer()));
        with_query(redirect_uri, &params)
    }
}

/// `uri` with `params` appended to its query.
fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let encoded: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", super::upstream::url_encode(v))).collect();
    let separator = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{separator}{}", encoded.join("&"))
}

/// PKCE S256: base64url(SHA-256(verifier)).
pub(super) fn s256(verifier: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// RFC 7636 §4.1: the verifier's characters.
fn is_pkce_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_is_rfc_7636s_example() {
        assert_eq!(s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert!("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".bytes().all(is_pkce_char));
        assert!(!"a b".bytes().all(is_pkce_char));
    }

    #[test]
    fn appends_encoded_parameters_to_the_redirect_uri() {
        assert_eq!(
            with_query("http://127.0.0.1:9/cb", &[("code", "a+b"), ("state", "x y&z")]),
            "http://127.0.0.1:9/cb?code=a%2Bb&state=x%20y%26z"
        );
        assert_eq!(with_query("cursor://cb?x=1", &[("code", "c")]), "cursor://cb?x=1&code=c");
    }
}
