//! Unit tests of the token exchange: cache keys, expiry, the egress rule for token endpoints.

use super::*;
use crate::crd::{SecretRef as CrdSecretRef, TokenExchange};

fn spec(endpoint: &str) -> TokenExchange {
    TokenExchange {
        enabled: true,
        dex_token_endpoint: Some(endpoint.to_owned()),
        connector_id: Some("central-dex".to_owned()),
        client_credentials_secret_ref: Some(CrdSecretRef { name: "creds".to_owned(), ..CrdSecretRef::default() }),
        ..TokenExchange::default()
    }
}

#[test]
fn target_defaults_follow_muster() {
    let target = ExchangeTarget::from_spec("cluster-a", "muster", &spec("https://dex.cluster-a.example.com/token"))
        .expect("valid");
    assert_eq!(target.expected_issuer, "https://dex.cluster-a.example.com");
    assert_eq!(target.scopes, "openid profile email groups");
    let secret = target.secret.clone().expect("secret ref");
    assert_eq!(
        (secret.namespace.as_str(), secret.id_key.as_str(), secret.secret_key.as_str()),
        ("muster", "client-id", "client-secret")
    );
    let mut with_audiences = target;
    with_audiences.audiences = vec!["cluster-a-k8s".to_owned()];
    assert_eq!(with_audiences.scope_param(), "openid profile email groups audience:server:client_id:cluster-a-k8s");
}

#[test]
fn cache_key_separates_users_clusters_clients_and_scopes() {
    let a = ExchangeTarget::from_spec("a", "ns", &spec("https://dex.a/token")).expect("valid");
    let b = ExchangeTarget::from_spec("b", "ns", &spec("https://dex.b/token")).expect("valid");
    let base = cache_key(&a, Some("muster"), "alice");
    assert_eq!(base, cache_key(&a, Some("muster"), "alice"), "stable");
    assert_ne!(base, cache_key(&a, Some("muster"), "bob"), "per user");
    assert_ne!(base, cache_key(&b, Some("muster"), "alice"), "per cluster endpoint");
    assert_ne!(base, cache_key(&a, Some("other-client"), "alice"), "per client id");
    let mut narrower = a.clone();
    narrower.scopes = "openid".to_owned();
    assert_ne!(base, cache_key(&narrower, Some("muster"), "alice"), "per scopes");
    let mut audience = a.clone();
    audience.audiences = vec!["x".to_owned()];
    assert_ne!(base, cache_key(&audience, Some("muster"), "alice"), "per audience");
    // Scope order does not matter.
    let mut reordered = a.clone();
    reordered.scopes = "groups email profile openid".to_owned();
    assert_eq!(base, cache_key(&reordered, Some("muster"), "alice"));
}

#[test]
fn transport_failures_are_not_auth_failures() {
    let unreachable = Error::Unreachable { cluster: "a".into(), endpoint: "e".into(), reason: "refused".into() };
    let refused = Error::Rejected {
        cluster: "a".into(),
        endpoint: "e".into(),
        error: "invalid_client".into(),
        description: None,
    };
    assert!(!unreachable.is_auth_failure());
    assert!(refused.is_auth_failure());
    let backing_off = Error::BackingOff { error: Box::new(unreachable), retry_in: Duration::from_secs(2) };
    assert!(!backing_off.is_auth_failure());
    assert_eq!(refused.to_string(), "token exchange for a was refused by e: invalid_client");
}

#[test]
fn near_expiry_entries_refresh_in_the_background() {
    let ttl = Duration::from_secs(270); // a 300 s Dex token minus the skew
    assert!(!needs_refresh(Duration::from_secs(10), ttl));
    assert!(!needs_refresh(Duration::from_secs(200), ttl));
    assert!(needs_refresh(Duration::from_secs(203), ttl), "the last quarter");
    // Short-lived tokens refresh during their last 30 s.
    assert!(needs_refresh(Duration::from_secs(31), Duration::from_secs(60)));
    assert!(!needs_refresh(Duration::from_secs(29), Duration::from_secs(60)));
}

#[test]
fn a_target_expecting_another_issuer_never_shares_a_cached_token() {
    let a = ExchangeTarget::from_spec("a", "ns", &spec("https://dex.a/token")).expect("valid");
    let mut proxied = a.clone();
    proxied.expected_issuer = "https://dex.internal".to_owned();
    assert_ne!(cache_key(&a, Some("muster"), "alice"), cache_key(&proxied, Some("muster"), "alice"));
}

#[test]
fn a_refreshed_entry_gets_a_fresh_lifetime() {
    let entry =
        Arc::new(Exchanged { token: Secret::new("t"), ttl: Duration::from_secs(270), obtained: Instant::now() });
    let now = std::time::Instant::now();
    // Replaced with 10 s left of the old entry: the new one lives its whole ttl.
    let after_update = PerEntryTtl.expire_after_update(&"k".to_owned(), &entry, now, Some(Duration::from_secs(10)));
    assert_eq!(after_update, Some(Duration::from_secs(270)));
}

fn local() -> crate::store::Store {
    crate::store::Store::local()
}

use crate::store::Keyring;

#[tokio::test]
async fn token_endpoints_follow_the_egress_rule() {
    let secrets = SecretStore::new(std::path::Path::new("/nonexistent"));
    let endpoint = |url: &str| ExchangeTarget::from_spec("a", "muster", &spec(url)).expect("valid");
    let open =
        Exchanger::new(crate::auth::idp_client().expect("client"), secrets.clone(), true, &local(), Keyring::new(&[]));
    let metadata = open.check_endpoint(&endpoint("https://169.254.169.254/token")).await.expect_err("never");
    assert!(metadata.to_string().contains("link-local or cloud metadata"), "{metadata}");
    assert!(open.check_endpoint(&endpoint("https://10.0.0.1/token")).await.is_ok());
    let closed =
        Exchanger::new(crate::auth::idp_client().expect("client"), secrets, false, &local(), Keyring::new(&[]));
    let private = closed.check_endpoint(&endpoint("https://10.0.0.1/token")).await.expect_err("opt-in");
    assert!(private.to_string().contains("set aggregator.oauth.allowPrivateNetworks"), "{private}");
    assert!(closed.check_endpoint(&endpoint("http://127.0.0.1:5556/token")).await.is_ok());
}
