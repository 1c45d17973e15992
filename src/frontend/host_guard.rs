//! DNS-rebinding protection for `/mcp`: the `Host` must be one of `allowedHosts`, and a browser's
//! `Origin`, when sent, one of `allowedOrigins` (the MCP transport spec's security warning). The
//! same rules as rmcp's service, which applies them to what it serves: an allowed host without a
//! port allows every port; an allowed origin ending in `:*` allows every port, and one without a
//! port allows the scheme's default port only. An empty list allows everything.
//!
//! `/metrics` and `/readyz` pass the same check (`check_scrape`), and also accept a `Host` that is
//! the IP address the connection arrived on: what kubelet probes and Prometheus send when they
//! reach a pod by its IP. DNS rebinding needs a name the attacker controls in `Host`, never a
//! bare address, so this opens nothing to it.

use std::net::IpAddr;

use actix_web::HttpRequest;
use http::uri::Authority;

/// The allow-lists, from the configuration.
#[derive(Clone, Default)]
pub(super) struct HostGuard {
    hosts: Vec<(String, Option<u16>)>,
    origins: Vec<AllowedOrigin>,
}

#[derive(Clone)]
struct AllowedOrigin {
    scheme: String,
    host: String,
    /// `None` is `:*`.
    port: Option<u16>,
}

/// Why a request was refused (403).
#[derive(Debug, thiserror::Error, PartialEq)]
pub(super) enum Refused {
    #[error("Forbidden: Host header is not allowed")]
    Host,
    #[error("Forbidden: Origin header is not allowed")]
    Origin,
}

fn normalize(host: &str) -> String {
    host.trim_matches(['[', ']']).to_ascii_lowercase()
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// `scheme://host[:port]` → (scheme, host, port or the scheme's default).
fn parse_origin(value: &str) -> Option<(String, String, Option<u16>)> {
    let uri = http::Uri::try_from(value.trim()).ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?;
    let port = authority.port_u16().or_else(|| default_port(&scheme));
    Some((scheme, normalize(authority.host()), port))
}

impl HostGuard {
    pub(super) fn new(allowed_hosts: &[String], allowed_origins: &[String]) -> Self {
        let hosts = allowed_hosts
            .iter()
            .map(|h| match Authority::try_from(h.trim()) {
                Ok(a) => (normalize(a.host()), a.port_u16()),
                Err(_) => (normalize(h.trim()), None),
            })
            .collect();
        let origins = allowed_origins
            .iter()
            .filter_map(|o| match o.trim().strip_suffix(":*") {
                Some(base) => {
                    let (scheme, host, _) = parse_origin(base)?;
                    Some(AllowedOrigin { scheme, host, port: None })
                }
                None => {
                    let (scheme, host, port) = parse_origin(o)?;
                    Some(AllowedOrigin { scheme, host, port })
                }
            })
            .collect();
        Self { hosts, origins }
    }

    pub(super) fn check(&self, req: &HttpRequest) -> Result<(), Refused> {
        self.check_from(req, None)
    }

    /// `check`, also accepting a `Host` that is `local`, the address the connection arrived on.
    pub(super) fn check_scrape(&self, req: &HttpRequest, local: Option<IpAddr>) -> Result<(), Refused> {
        self.check_from(req, local)
    }

    fn check_from(&self, req: &HttpRequest, local: Option<IpAddr>) -> Result<(), Refused> {
        let header = |name| req.headers().get(name).map(|v| v.to_str().map_err(|_| ()));
        if !self.hosts.is_empty() {
            let host = match header(actix_web::http::header::HOST) {
                Some(Ok(host)) => host.to_owned(),
                Some(Err(())) => return Err(Refused::Host),
                None => req.connection_info().host().to_owned(),
            };
            if !self.host_allowed(&host) && !is_address(&host, local) {
                tracing::warn!(host, "refused a request with a foreign Host header (possible DNS rebinding)");
                return Err(Refused::Host);
            }
        }
        if !self.origins.is_empty()
            && let Some(origin) = header(actix_web::http::header::ORIGIN)
        {
            let allowed = origin.ok().is_some_and(|o| self.origin_allowed(o));
            if !allowed {
                tracing::warn!("refused a request with a foreign Origin header");
                return Err(Refused::Origin);
            }
        }
        Ok(())
    }

    /// Whether `origin` is on a non-empty `allowedOrigins`: the origins a browser page may call
    /// `/mcp` from (`cors.rs`). An empty list turns the Origin check off but grants no page.
    pub(super) fn grants_origin(&self, origin: &str) -> bool {
        !self.origins.is_empty() && self.origin_allowed(origin)
    }

    fn host_allowed(&self, host: &str) -> bool {
        let Ok(authority) = Authority::try_from(host) else { return false };
        let (host, port) = (normalize(authority.host()), authority.port_u16());
        self.hosts.iter().any(|(h, p)| *h == host && p.is_none_or(|p| Some(p) == port))
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        let Some((scheme, host, port)) = parse_origin(origin) else { return false };
        self.origins.iter().any(|a| a.scheme == scheme && a.host == host && a.port.is_none_or(|p| Some(p) == port))
    }
}

/// Whether `host` (`Host` header) names the IP address `local`.
fn is_address(host: &str, local: Option<IpAddr>) -> bool {
    let Some(local) = local else { return false };
    let Ok(authority) = Authority::try_from(host) else { return false };
    authority.host().trim_matches(['[', ']']).parse::<IpAddr>().is_ok_and(|ip| ip == local)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> HostGuard {
        HostGuard::new(
            &["localhost".into(), "127.0.0.1".into(), "[::1]".into(), "muster.example.com:8443".into()],
            &["http://localhost:*".into(), "https://app.example.com".into()],
        )
    }

    #[test]
    fn hosts_match_by_name_and_by_port_only_when_one_is_given() {
        let g = guard();
        assert!(g.host_allowed("localhost:8090"));
        assert!(g.host_allowed("LOCALHOST"));
        assert!(g.host_allowed("[::1]:9000"));
        assert!(g.host_allowed("muster.example.com:8443"));
        assert!(!g.host_allowed("muster.example.com:8444"));
        assert!(!g.host_allowed("evil.example.com"));
        assert!(!g.host_allowed("localhost.evil.example.com"));
    }

    #[test]
    fn a_scrape_may_name_the_address_it_reached() {
        let local: IpAddr = "10.1.2.3".parse().expect("ip");
        assert!(is_address("10.1.2.3:8090", Some(local)));
        assert!(is_address("10.1.2.3", Some(local)));
        assert!(!is_address("10.1.2.4:8090", Some(local)));
        assert!(!is_address("evil.example.com", Some(local)));
        assert!(!is_address("10.1.2.3:8090", None));
        assert!(is_address("[::1]:8090", Some("::1".parse().expect("ip"))));
    }

    #[test]
    fn origins_match_scheme_host_and_port() {
        let g = guard();
        assert!(g.origin_allowed("http://localhost:3000"));
        assert!(g.origin_allowed("https://app.example.com"));
        assert!(g.origin_allowed("https://app.example.com:443"));
        assert!(!g.origin_allowed("https://app.example.com:8443"));
        assert!(!g.origin_allowed("https://localhost:3000"), "scheme differs");
        assert!(!g.origin_allowed("https://evil.example.com"));
        assert!(!g.origin_allowed("null"));
    }
}
