//! Token families: what one sign-in of one agent holds. A family keeps the user's IdP tokens
//! (sealed), the hash of its current refresh token, and when the session ends; muster's opaque
//! access and refresh tokens point at it by hash. Revoking the family (a reused code or a reused,
//! rotated refresh token, or the IdP refusing a refresh) ends every token it issued at once.
//!
//! `identity` is the `/mcp` side: an access token back to the user's `Identity`, refreshing the
//! IdP ID token through the IdP shortly before it expires (one refresh per family at a time).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ACCESS_TOKEN_PREFIX, AuthorizationServer, OAuthError, hash, now, random_token};
use crate::auth::inbound::Error as Refused;
use crate::auth::{Identity, Secret};

/// muster's access tokens live at most this long (and never past the IdP's token lifetime).
pub(super) const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(30 * 60);
pub(super) const REFRESH_TOKEN_PREFIX: &str = "mrt_";
/// The IdP ID token is refreshed this long before it expires (or a quarter of its life, if shorter).
const ID_TOKEN_MARGIN: u64 = 60;

#[derive(Clone, Serialize, Deserialize)]
pub(super) struct Family {
    pub client_id: String,
    pub subject: String,
    pub issuer: String,
    /// The IdP tokens (`IdpTokens`), sealed and bound to this family's id.
    pub sealed: String,
    pub id_issued_at: u64,
    pub id_expires_at: u64,
    /// `expires_in` of the IdP's tokens: muster's access tokens live no longer.
    pub idp_lifetime: Option<u64>,
    pub session_expires_at: u64,
    /// The hash of the one refresh token that may be used next.
    pub refresh_hash: Option<String>,
    pub scope: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct IdpTokens {
    id_token: String,
    refresh_token: Option<String>,
}

#[derive(Clone, Serialize, Deserialize)]
pub(super) struct AccessRecord {
    family: String,
    expires_at: u64,
}

#[derive(Serialize, Deserialize)]
pub(super) struct RefreshRecord {
    pub family: String,
}

/// The token endpoint's answer.
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl AuthorizationServer {
    /// A family for a user who just signed in at the IdP; it lives until its code is redeemed.
    pub(super) async fn new_family(
        &self,
        client_id: &str,
        identity: &Identity,
        tokens: &super::upstream::Tokens,
        scope: Option<String>,
        until_redeemed: Duration,
    ) -> Result<String, OAuthError> {
        let id = random_token();
        let mut family = Family {
            client_id: client_id.to_owned(),
            subject: identity.subject.clone(),
            issuer: identity.issuer.clone(),
            sealed: String::new(),
            id_issued_at: now(),
            id_expires_at: identity.expires_at,
            idp_lifetime: tokens.expires_in,
            session_expires_at: now() + self.session_duration.as_secs(),
            refresh_hash: None,
            scope,
        };
        family.sealed = self.seal(&id, &identity.token, tokens.refresh_token.as_ref())?;
        self.put(&format!("family:{id}"), &family, until_redeemed).await?;
        Ok(id)
    }

    /// New access and refresh tokens for a family; the refresh token before them stops working.
    /// Each refresh rolls the session on by `sessionDuration`.
    pub(super) async fn issue(&self, id: &str, mut family: Family) -> Result<TokenResponse, OAuthError> {
        let now = now();
        family.session_expires_at = now + self.session_duration.as_secs();
        let access_ttl = ACCESS_TOKEN_TTL.as_secs().min(family.idp_lifetime.unwrap_or(u64::MAX)).max(1);
        let access_token = format!("{ACCESS_TOKEN_PREFIX}{}", random_token());
        let refresh_token = format!("{REFRESH_TOKEN_PREFIX}{}", random_token());
        let session = Duration::from_secs(self.session_duration.as_secs());
        family.refresh_hash = Some(hash(&refresh_token));
        let scope = family.scope.clone();
        self.put(&format!("family:{id}"), &family, session).await?;
        self.put(&format!("refresh:{}", hash(&refresh_token)), &RefreshRecord { family: id.to_owned() }, session)
            .await?;
        let access = AccessRecord { family: id.to_owned(), expires_at: now + access_ttl };
        self.put(&format!("access:{}", hash(&access_token)), &access, Duration::from_secs(access_ttl)).await?;
        Ok(TokenResponse { access_token, token_type: "Bearer", expires_in: access_ttl, refresh_token, scope })
    }

    pub(super) async fn family(&self, id: &str) -> Result<Option<Family>, OAuthError> {
        self.get(&format!("family:{id}")).await
    }

    /// Ends a family: every access and refresh token it issued stops working, on every replica.
    pub(super) async fn revoke_family(&self, id: &str) -> Result<(), OAuthError> {
        tracing::info!("a token family was revoked");
        self.store.delete(&format!("family:{id}")).await?;
        self.recent.forget_all().await;
        Ok(())
    }

    /// Forgets one access token, on every replica.
    pub(super) async fn revoke_access(&self, token: &str) -> Result<(), OAuthError> {
        self.store.delete(&format!("access:{}", hash(token))).await?;
        self.recent.forget_all().await;
        Ok(())
    }

    /// Who a muster access token belongs to, with a fresh IdP ID token as its subject token.
    pub async fn identity(&self, token: &str) -> Result<Identity, Refused> {
        let gone = || Refused::Invalid("the access token is unknown, expired or revoked".to_owned());
        let unavailable = |e: OAuthError| Refused::Unavailable { issuer: self.base_url.clone(), reason: e.description };
        let key = hash(token);
        let known = self.recent.get(&key);
        let read = known.is_none();
        let (access, family) = match known {
            Some(known) => known,
            None => {
                let access: AccessRecord =
                    self.get(&format!("access:{key}")).await.map_err(unavailable)?.ok_or_else(gone)?;
                let family = self.family(&access.family).await.map_err(unavailable)?.ok_or_else(gone)?;
                (access, family)
            }
        };
        if access.expires_at <= now() {
            return Err(gone());
        }
        let refresh = needs_refresh(&family);
        let family = if refresh { self.refresh_idp(&access.family).await? } else { family };
        // Kept from when the store was read (a hit does not extend it), so what another replica
        // revoked stops here within `recent::FOR` even if its message was lost.
        if read || refresh {
            self.recent.remember(key, &access, &family);
        }
        let tokens = self.open(&access.family, &family).map_err(|_| gone())?;
        // The IdP's ID token came over TLS from the IdP itself: its groups claim is the user's.
        let groups = crate::auth::token::unverified_claims(&tokens.id_token)
            .and_then(|claims| serde_json::from_value(claims["groups"].clone()).ok())
            .unwrap_or_default();
        Ok(Identity {
            subject: family.subject,
            issuer: family.issuer,
            token: Secret::new(tokens.id_token),
            expires_at: access.expires_at,
            groups,
        })
    }

    /// Refreshes the family's IdP ID token (once, however many requests ask at the same time).
    async fn refresh_idp(&self, id: &str) -> Result<Family, Refused> {
        let gone = || Refused::Invalid("the sign-in has ended; sign in again".to_owned());
        let lock = self.refreshing.get_with(id.to_owned(), Default::default);
        let _held = lock.lock().await;
        let unavailable = |reason: String| Refused::Unavailable { issuer: self.upstream.issuer().to_owned(), reason };
        let mut family = self.family(id).await.map_err(|e| unavailable(e.description))?.ok_or_else(gone)?;
        if !needs_refresh(&family) {
            return Ok(family);
        }
        let stored = self.open(id, &family).map_err(|_| gone())?;
        let still_valid = family.id_expires_at > now();
        let Some(refresh_token) = stored.refresh_token.map(Secret::new) else {
            return if still_valid { Ok(family) } else { Err(gone()) };
        };
        let fresh = match self.upstream.refresh(&refresh_token).await {
            Ok(fresh) => fresh,
            Err(super::upstream::Error::Refused { .. }) => {
                // The IdP ended the user's session: so does muster.
                let _ = self.revoke_family(id).await;
                return Err(gone());
            }
            Err(e) if still_valid => {
                tracing::warn!(error = %e, "the ID token could not be refreshed yet; the current one is still valid");
                return Ok(family);
            }
            Err(e) => return Err(unavailable(e.to_string())),
        };
        let identity = self.validator.validate(fresh.id_token.expose()).await.map_err(|e| {
            tracing::warn!(error = %e, "the identity provider's refreshed ID token was refused");
            gone()
        })?;
        if identity.subject != family.subject {
            let _ = self.revoke_family(id).await;
            return Err(gone());
        }
        let refresh_token = fresh.refresh_token.unwrap_or(refresh_token);
        family.sealed = self.seal(id, &identity.token, Some(&refresh_token)).map_err(|e| unavailable(e.description))?;
        family.id_issued_at = now();
        family.id_expires_at = identity.expires_at;
        let remaining = family.session_expires_at.saturating_sub(now()).max(1);
        self.put(&format!("family:{id}"), &family, Duration::from_secs(remaining))
            .await
            .map_err(|e| unavailable(e.description))?;
        tracing::debug!(subject = %identity.subject_hash(), "refreshed a user's ID token at the identity provider");
        Ok(family)
    }

    fn seal(&self, id: &str, id_token: &Secret, refresh_token: Option<&Secret>) -> Result<String, OAuthError> {
        use base64::Engine as _;
        let tokens = IdpTokens {
            id_token: id_token.expose().to_owned(),
            refresh_token: refresh_token.map(|t| t.expose().to_owned()),
        };
        let plain = serde_json::to_vec(&tokens).map_err(|e| OAuthError::server_error(&e.to_string()))?;
        let sealed = self.sealer.seal(&plain, id).map_err(|e| OAuthError::server_error(&e.to_string()))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(sealed))
    }

    fn open(&self, id: &str, family: &Family) -> Result<IdpTokens, crate::store::seal::Error> {
        use base64::Engine as _;
        let sealed =
            base64::engine::general_purpose::STANDARD.decode(&family.sealed).map_err(|_| crate::store::seal::Error)?;
        let plain = self.sealer.open(&sealed, id)?;
        serde_json::from_slice(&plain).map_err(|_| crate::store::seal::Error)
    }
}

/// Whether the family's ID token is within its refresh margin.
fn needs_refresh(family: &Family) -> bool {
    let lifetime = family.id_expires_at.saturating_sub(family.id_issued_at);
    let margin = ID_TOKEN_MARGIN.min(lifetime / 4);
    family.id_expires_at <= now() + margin
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(issued: u64, expires: u64) -> Family {
        Family {
            client_id: String::new(),
            subject: String::new(),
            issuer: String::new(),
            sealed: String::new(),
            id_issued_at: issued,
            id_expires_at: expires,
            idp_lifetime: None,
            session_expires_at: 0,
            refresh_hash: None,
            scope: None,
        }
    }

    #[test]
    fn an_id_token_is_refreshed_within_a_minute_or_a_quarter_of_its_life_of_expiring() {
        let t = now();
        assert!(!needs_refresh(&family(t, t + 600)));
        assert!(needs_refresh(&family(t - 600, t + 59)));
        assert!(!needs_refresh(&family(t, t + 40)), "a 40 s token is refreshed in its last 10 s");
        assert!(needs_refresh(&family(t - 30, t + 9)));
        assert!(needs_refresh(&family(t - 600, t - 1)), "expired");
    }
}
