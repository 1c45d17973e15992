//! Where muster may connect: one rule for upstream MCP servers and token endpoints.
//!
//! - Loopback is always allowed (upstreams beside muster, tests, the example fleet).
//! - Link-local and cloud-metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254,
//!   100.100.100.200, 168.63.129.16), unspecified, broadcast and multicast addresses are always
//!   refused: nothing an MCPServer or a token endpoint needs lives there, and a metadata service
//!   answers with the pod's cloud credentials.
//! - Private networks (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7) are allowed where the
//!   caller's `Policy` says so: `aggregator.upstreams.allowPrivateNetworks` (default true: in-cluster
//!   servers live there) for MCPServer URLs, `aggregator.oauth.allowPrivateNetworks` (default false)
//!   for token endpoints.
//!
//! An address literal in a URL is checked where the URL is validated or used (`check_url`); a host
//! name is checked against what it resolves to, every time it is resolved (`Resolver`, the DNS
//! resolver of every backend HTTP client), and so are redirect targets (`redirect_policy`).
//! Through an HTTP proxy (`HTTP_PROXY`), only the proxy's address is resolved here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

/// Whether private-network addresses may be reached; the rest of the rule is fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub allow_private_networks: bool,
}

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0} is a link-local or cloud metadata address, which muster never connects to")]
    Metadata(IpAddr),
    #[error("{0} is not a unicast address")]
    NotUnicast(IpAddr),
    #[error("{0} is a private network address")]
    Private(IpAddr),
}

/// What kind of address an IP is, for this rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Loopback,
    Private,
    Public,
    /// Refused whatever the policy (see `Refused`).
    Never(Refused),
}

impl Policy {
    /// Where MCPServer URLs may point when `config.yaml` says nothing.
    pub const UPSTREAM_DEFAULT: Self = Self { allow_private_networks: true };

    pub fn check(self, ip: IpAddr) -> Result<(), Refused> {
        match classify(ip) {
            Class::Never(refused) => Err(refused),
            Class::Private if !self.allow_private_networks => Err(Refused::Private(ip)),
            Class::Loopback | Class::Private | Class::Public => Ok(()),
        }
    }

    /// Checks a URL whose host is an address literal; a host name passes (its addresses are
    /// checked when it is resolved). An unparsable URL passes too: validation reports it.
    pub fn check_url(self, url: &str) -> Result<(), Refused> {
        match reqwest::Url::parse(url).ok().and_then(|u| literal(&u)) {
            Some(ip) => self.check(ip),
            None => Ok(()),
        }
    }
}

/// The rule for identity-provider and token-endpoint URLs: https, or http on a loopback host.
pub fn is_https_or_loopback(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else { return false };
    match parsed.scheme() {
        "https" => true,
        "http" => matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")),
        _ => false,
    }
}

/// The address a URL names literally, if it does.
pub fn literal(url: &reqwest::Url) -> Option<IpAddr> {
    // `Url` has already turned odd IPv4 spellings (`0xa9fea9fe`, `2852039166`) into dotted form.
    url.host_str()?.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

pub fn classify(ip: IpAddr) -> Class {
    match ip.to_canonical() {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(v4: Ipv4Addr) -> Class {
    const ALIBABA_METADATA: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
    const AZURE_WIRESERVER: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);
    let ip = IpAddr::V4(v4);
    let [a, b, ..] = v4.octets();
    if v4.is_link_local() || v4 == ALIBABA_METADATA || v4 == AZURE_WIRESERVER {
        Class::Never(Refused::Metadata(ip))
    } else if a == 0 || v4.is_broadcast() || v4.is_multicast() {
        Class::Never(Refused::NotUnicast(ip))
    } else if v4.is_loopback() {
        Class::Loopback
    } else if v4.is_private() || (a == 100 && (b & 0xc0) == 64) {
        // 100.64.0.0/10 is carrier-grade NAT space, used for pod and service networks too.
        Class::Private
    } else {
        Class::Public
    }
}

fn classify_v6(v6: Ipv6Addr) -> Class {
    const AWS_METADATA: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    let ip = IpAddr::V6(v6);
    let first = v6.segments()[0];
    // NAT64 (64:ff9b::/96) carries an IPv4 address: judge that one.
    if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., a, b, c, d] = v6.octets();
        return classify_v4(Ipv4Addr::new(a, b, c, d));
    }
    if (first & 0xffc0) == 0xfe80 || v6 == AWS_METADATA {
        Class::Never(Refused::Metadata(ip))
    } else if v6.is_unspecified() || v6.is_multicast() {
        Class::Never(Refused::NotUnicast(ip))
    } else if v6.is_loopback() {
        Class::Loopback
    } else if (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfec0 {
        // Unique local (fc00::/7) and the deprecated site-local (fec0::/10).
        Class::Private
    } else {
        Class::Public
    }
}

/// The policy for MCPServer URLs, set once at startup from `aggregator.upstreams`.
static UPSTREAM_POLICY: OnceLock<Policy> = OnceLock::new();

/// Sets the policy backend HTTP clients enforce (`app::run`, once; later calls are ignored).
pub fn set_upstream_policy(policy: Policy) {
    let _ = UPSTREAM_POLICY.set(policy);
}

/// The policy for MCPServer URLs: what `set_upstream_policy` set, else `Policy::UPSTREAM_DEFAULT`.
pub fn upstream_policy() -> Policy {
    UPSTREAM_POLICY.get().copied().unwrap_or(Policy::UPSTREAM_DEFAULT)
}

/// A DNS resolver that drops refused addresses, and fails when none is left, so a host name that
/// points at a metadata service is refused at every connection, not just when it was validated.
#[derive(Debug, Clone, Copy)]
pub struct Resolver {
    pub policy: Policy,
}

/// A host name that resolves to refused addresses only.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to refused addresses: {refused}")]
pub struct RefusedName {
    pub host: String,
    pub refused: Refused,
}

impl Resolver {
    /// Keeps the allowed addresses of `host`; an error names the first refused one when none is.
    pub fn filter(self, host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, RefusedName> {
        let mut first_refused = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|addr| match self.policy.check(addr.ip()) {
                Ok(()) => true,
                Err(refused) => {
                    first_refused.get_or_insert(refused);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), first_refused) {
            (true, Some(refused)) => Err(RefusedName { host: host.to_owned(), refused }),
            _ => Ok(allowed),
        }
    }
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = *self;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = resolver.filter(&host, addrs).inspect_err(|refused| {
                // Said here, where it is decided: the transport's error may not carry the reason.
                tracing::warn!(host, "refusing to connect: {refused}");
            })?;
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Follows at most 10 redirects, and none to a refused address literal (a redirect to a host name
/// goes through `Resolver`).
pub fn redirect_policy(policy: Policy) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 10 {
            return attempt.error("too many redirects");
        }
        match literal(attempt.url()).map(|ip| policy.check(ip)) {
            Some(Err(refused)) => {
                tracing::warn!("refusing to follow a redirect: {refused}");
                attempt.error(refused)
            }
            _ => attempt.follow(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(ip: &str) -> Class {
        classify(ip.parse().expect("ip"))
    }

    #[test]
    fn metadata_and_link_local_addresses_are_never_allowed() {
        for ip in [
            "169.254.169.254",
            "169.254.1.1",
            "::ffff:169.254.169.254",
            "fe80::1",
            "fd00:ec2::254",
            "100.100.100.200",
            "168.63.129.16",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(matches!(class(ip), Class::Never(Refused::Metadata(_))), "{ip}: {:?}", class(ip));
            let open = Policy { allow_private_networks: true };
            assert!(open.check(ip.parse().expect("ip")).is_err(), "{ip}");
        }
        for ip in ["0.0.0.0", "::", "255.255.255.255", "224.0.0.1", "ff02::1"] {
            assert!(matches!(class(ip), Class::Never(Refused::NotUnicast(_))), "{ip}");
        }
    }

    #[test]
    fn private_networks_need_the_policy_and_loopback_never_does() {
        let closed = Policy { allow_private_networks: false };
        for ip in ["10.1.2.3", "192.168.0.1", "172.16.5.4", "fd00::1", "::ffff:10.0.0.1", "100.64.0.1"] {
            assert_eq!(class(ip), Class::Private, "{ip}");
            assert!(matches!(closed.check(ip.parse().expect("ip")), Err(Refused::Private(_))), "{ip}");
            assert_eq!(Policy::UPSTREAM_DEFAULT.check(ip.parse().expect("ip")), Ok(()), "{ip}");
        }
        for ip in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(class(ip), Class::Loopback, "{ip}");
            assert_eq!(closed.check(ip.parse().expect("ip")), Ok(()), "{ip}");
        }
        for ip in ["8.8.8.8", "2001:db8::1", "100.128.0.1"] {
            assert_eq!(class(ip), Class::Public, "{ip}");
        }
    }

    #[test]
    fn urls_are_judged_by_their_address_literal() {
        let open = Policy::UPSTREAM_DEFAULT;
        assert!(open.check_url("http://169.254.169.254/latest/meta-data/").is_err());
        assert!(open.check_url("http://[fd00:ec2::254]/latest").is_err());
        assert!(open.check_url("http://[::ffff:a9fe:a9fe]:80/").is_err());
        assert_eq!(open.check_url("http://127.0.0.1:8080/mcp"), Ok(()));
        assert_eq!(open.check_url("https://metadata.example.com/mcp"), Ok(()), "names are checked when resolved");
        // `url` normalises odd spellings of an IPv4 address before we see them.
        assert!(open.check_url("http://0xa9fea9fe/").is_err());
        assert!(open.check_url("http://2852039166/").is_err());
    }

    #[test]
    fn the_resolver_drops_refused_addresses_and_fails_when_none_is_left() {
        let resolver = Resolver { policy: Policy { allow_private_networks: false } };
        let addr = |s: &str| SocketAddr::new(s.parse().expect("ip"), 0);
        let mixed = vec![addr("169.254.169.254"), addr("10.0.0.1"), addr("93.184.216.34")];
        assert_eq!(resolver.filter("x", mixed).expect("one left"), [addr("93.184.216.34")]);
        let err = resolver.filter("metadata.test", vec![addr("169.254.169.254")]).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "metadata.test resolves only to refused addresses: 169.254.169.254 is a link-local or cloud metadata address, which muster never connects to"
        );
        assert_eq!(resolver.filter("nothing", Vec::new()).expect("empty is the lookup's business"), []);
    }
}
