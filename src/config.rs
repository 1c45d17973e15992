//! `DIR/config.yaml`: the gateway's own settings, validated into strong types.
//!
//! The file is optional; every key has a default that matches Muster (`127.0.0.1:8090`, prefix
//! `x`, meta-tool exposure). `Config::load` collects every problem before failing, so
//! `muster check-config` can report them all at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod oauth;
mod storage;

use serde::Deserialize;

pub use oauth::{AuthorizationServer, OAuthServer, TrustedIssuer};
pub use storage::{SessionKeys, Storage, Valkey};

use oauth::{OAuthFile, parse_oauth};

/// How real tools reach `tools/list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolExposure {
    /// Only the meta-tools (`list_tools`, `call_tool`, ...): Muster's default, small context.
    Meta,
    /// The real tools, families collapsed.
    Direct,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub dir: PathBuf,
    pub host: String,
    pub port: u16,
    pub muster_prefix: String,
    pub tool_exposure: ToolExposure,
    /// `Host` header values accepted on `/mcp` (DNS-rebinding protection). Empty disables it.
    pub allowed_hosts: Vec<String>,
    /// Browser `Origin`s accepted on `/mcp`. A request with any other Origin gets 403.
    pub allowed_origins: Vec<String>,
    pub max_body_bytes: usize,
    /// What one agent, one user and all agents together may hold of the frontend.
    pub limits: Limits,
    pub supervision: Supervision,
    /// Limits of every upstream call.
    pub calls: Calls,
    /// Inbound sign-in (`aggregator.oauth.server`); `None` when disabled.
    pub oauth: Option<OAuthServer>,
    /// Token endpoints on private networks are refused unless this is set.
    pub allow_private_networks: bool,
    /// Where MCPServer URLs may point (`aggregator.upstreams.allowPrivateNetworks`, default
    /// true); link-local and metadata addresses are refused whatever it says.
    pub upstream_egress: crate::egress::Policy,
    /// Kubernetes mode: MCPServer resources in these namespaces are the desired state (instead of
    /// `DIR/mcpservers`). `None` is filesystem mode.
    pub kubernetes: Option<Kubernetes>,
    /// `aggregator.admin.groups`: group claims that may change muster through its `core_*` tools.
    /// Empty: no one with sign-in on; loopback callers with sign-in off.
    pub admin_groups: Vec<String>,
    /// Where the replicas share state (ADR 0009).
    pub storage: Storage,
    /// The keys that seal session ids; `None`: a key of this process (one replica).
    pub session_keys: Option<SessionKeys>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubernetes {
    /// Muster's own namespace (`namespace`, default `default`) first: its leader Lease and its
    /// WorkflowExecution records live there.
    pub namespaces: Vec<String>,
}

impl Kubernetes {
    /// Muster's own namespace (`namespace` in config.yaml).
    pub fn home(&self) -> &str {
        self.namespaces.first().map_or("default", String::as_str)
    }
}

/// The frontend's limits (issue 11: refuse before reading, bounded connections and sessions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request body must arrive within this (408 after it).
    pub body_timeout: Duration,
    /// Open HTTP connections served; more get 503 and are closed.
    pub max_connections: usize,
    /// How long an idle keep-alive connection stays open.
    pub keep_alive: Duration,
    /// Agent sessions (2025 revisions) of all users together.
    pub max_sessions: usize,
    /// Agent sessions of one signed-in user.
    pub max_sessions_per_user: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_timeout: Duration::from_secs(10),
            // 10,000 agent sessions, each with its standalone stream and a request in flight.
            max_connections: 20_000,
            keep_alive: Duration::from_secs(30),
            max_sessions: 20_000,
            max_sessions_per_user: 1_000,
        }
    }
}

/// Restart and health-probe policy of the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Supervision {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Uptime after which a backend's failure count resets (crash-loop protection).
    pub stable_after: Duration,
    pub health_interval: Duration,
    pub resync_interval: Duration,
}

/// `aggregator.calls`: what every upstream call may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calls {
    /// The deadline of a call; `None` is each server's `spec.timeout`.
    pub timeout: Option<Duration>,
    /// The largest reply to a call muster reads; a larger one fails the call.
    pub max_result_bytes: usize,
}

impl Default for Calls {
    fn default() -> Self {
        Self { timeout: None, max_result_bytes: 16 << 20 }
    }
}

impl Default for Supervision {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            health_interval: Duration::from_secs(15),
            resync_interval: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    #[serde(default)]
    aggregator: AggregatorFile,
    #[serde(default)]
    namespace: Option<String>,
    /// More namespaces to watch (muster extension; `namespace` is Muster's single one).
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    kubernetes: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AggregatorFile {
    host: Option<String>,
    port: Option<u16>,
    transport: Option<String>,
    muster_prefix: Option<String>,
    tool_exposure: Option<ToolExposure>,
    allowed_hosts: Option<Vec<String>>,
    allowed_origins: Option<Vec<String>>,
    max_body_bytes: Option<usize>,
    body_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    keep_alive_ms: Option<u64>,
    max_sessions: Option<usize>,
    max_sessions_per_user: Option<usize>,
    #[serde(default)]
    supervision: SupervisionFile,
    #[serde(default)]
    calls: CallsFile,
    #[serde(default)]
    oauth: OAuthFile,
    #[serde(default)]
    upstreams: UpstreamsFile,
    #[serde(default)]
    storage: storage::StorageFile,
    #[serde(default)]
    sessions: storage::SessionsFile,
    /// `groups` (ours): who may use the mutating `core_*` tools. Muster's read-only admin UI
    /// keys beside it are accepted for compatibility, not served.
    #[serde(default)]
    admin: Option<serde_json::Value>,
}

/// `aggregator.upstreams`: what MCPServer URLs may reach (muster extension).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpstreamsFile {
    allow_private_networks: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SupervisionFile {
    initial_backoff_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
    stable_after_ms: Option<u64>,
    health_interval_ms: Option<u64>,
    resync_interval_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CallsFile {
    timeout_ms: Option<u64>,
    max_result_bytes: Option<usize>,
}

/// Every problem found in `config.yaml`.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct Error {
    pub problems: Vec<String>,
}

impl Config {
    /// Reads `dir/config.yaml` (optional) and validates it.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let path = dir.join("config.yaml");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error { problems: vec![format!("{}: cannot be read: {e}", path.display())] }),
        };
        Self::parse(dir, &text).map_err(|mut e| {
            for p in &mut e.problems {
                *p = format!("{}: {p}", path.display());
            }
            e
        })
    }

    pub fn parse(dir: &Path, text: &str) -> Result<Self, Error> {
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| Error { problems: vec![format!("yaml: {e}")] })?
        };
        let mut problems = Vec::new();
        let a = file.aggregator;
        let limits = parse_limits(&a, &mut problems);
        if let Some(transport) = a.transport.as_deref()
            && transport != "streamable-http"
        {
            problems.push(format!("aggregator.transport: {transport:?} is not supported (only streamable-http)"));
        }
        let kubernetes = (file.kubernetes == Some(true)).then(|| {
            let mut namespaces = file.namespaces.clone();
            let first = file.namespace.clone().unwrap_or_else(|| "default".to_owned());
            namespaces.retain(|n| *n != first);
            namespaces.insert(0, first);
            Kubernetes { namespaces }
        });
        for namespace in kubernetes.iter().flat_map(|k| &k.namespaces) {
            if namespace.is_empty()
                || !namespace.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                problems.push(format!("namespace: {namespace:?} is not a valid namespace name"));
            }
        }
        let muster_prefix = a.muster_prefix.unwrap_or_else(|| "x".to_owned());
        if !muster_prefix.is_empty()
            && !muster_prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            problems
                .push(format!("aggregator.musterPrefix: {muster_prefix:?} may hold only letters, digits, '_' and '-'"));
        }
        let host = a.host.unwrap_or_else(|| "127.0.0.1".to_owned());
        let port = a.port.unwrap_or(8090);
        let max_body_bytes = a.max_body_bytes.unwrap_or(4 << 20);
        if max_body_bytes < 1024 {
            problems.push(format!("aggregator.maxBodyBytes: {max_body_bytes} is below the 1024-byte minimum"));
        }
        let ms = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_millis);
        let defaults = Supervision::default();
        let s = a.supervision;
        let supervision = Supervision {
            initial_backoff: ms(s.initial_backoff_ms, defaults.initial_backoff),
            max_backoff: ms(s.max_backoff_ms, defaults.max_backoff),
            stable_after: ms(s.stable_after_ms, defaults.stable_after),
            health_interval: ms(s.health_interval_ms, defaults.health_interval),
            resync_interval: ms(s.resync_interval_ms, defaults.resync_interval),
        };
        if supervision.initial_backoff.is_zero() || supervision.max_backoff < supervision.initial_backoff {
            problems.push("aggregator.supervision: need 0 < initialBackoffMs <= maxBackoffMs".to_owned());
        }
        if supervision.health_interval.is_zero() || supervision.resync_interval.is_zero() {
            problems.push("aggregator.supervision: healthIntervalMs and resyncIntervalMs must be positive".to_owned());
        }
        if supervision.max_backoff > Duration::from_secs(30) {
            problems.push(
                "aggregator.supervision.maxBackoffMs: at most 30000 (a failed server is re-probed at least every 30 s)"
                    .to_owned(),
            );
        }
        let calls = Calls {
            timeout: a.calls.timeout_ms.map(Duration::from_millis),
            max_result_bytes: a.calls.max_result_bytes.unwrap_or(Calls::default().max_result_bytes),
        };
        if calls.timeout.is_some_and(|t| t.is_zero()) {
            problems.push("aggregator.calls.timeoutMs: must be positive".to_owned());
        }
        if calls.max_result_bytes < 1024 {
            problems.push(format!(
                "aggregator.calls.maxResultBytes: {} is below the 1024-byte minimum",
                calls.max_result_bytes
            ));
        }
        let oauth = parse_oauth(dir, &a.oauth, &mut problems);
        let admin_groups = parse_admin_groups(a.admin.as_ref(), &mut problems);
        let storage = storage::parse_storage(dir, &a.storage, &mut problems);
        let session_keys = storage::parse_session_keys(dir, &a.sessions, &storage, &mut problems);
        let server = oauth.as_ref().and_then(|o| o.authorization_server.as_ref());
        if matches!(storage, Storage::Valkey(_)) && server.is_some_and(|s| s.encryption_key.is_none()) {
            problems.push(
                "aggregator.oauth.server.encryptionKey (or encryptionKeyFile) is required with aggregator.storage.type \
                 valkey: every replica must open the identity-provider tokens the others sealed"
                    .to_owned(),
            );
        }
        let allowed_hosts = a.allowed_hosts.unwrap_or_else(|| default_allowed_hosts(&host));
        let allowed_origins = a
            .allowed_origins
            .unwrap_or_else(|| vec!["http://localhost:*".into(), "http://127.0.0.1:*".into(), "http://[::1]:*".into()]);
        if !problems.is_empty() {
            return Err(Error { problems });
        }
        Ok(Self {
            dir: dir.to_owned(),
            host,
            port,
            muster_prefix,
            tool_exposure: a.tool_exposure.unwrap_or(ToolExposure::Meta),
            allowed_hosts,
            allowed_origins,
            max_body_bytes,
            limits,
            supervision,
            calls,
            oauth,
            allow_private_networks: a.oauth.allow_private_networks,
            upstream_egress: crate::egress::Policy {
                allow_private_networks: a
                    .upstreams
                    .allow_private_networks
                    .unwrap_or(crate::egress::Policy::UPSTREAM_DEFAULT.allow_private_networks),
            },
            kubernetes,
            admin_groups,
            storage,
            session_keys,
        })
    }
}

/// `aggregator.admin.groups`: a list of group names.
fn parse_admin_groups(admin: Option<&serde_json::Value>, problems: &mut Vec<String>) -> Vec<String> {
    let Some(groups) = admin.and_then(|a| a.get("groups")) else { return Vec::new() };
    match serde_json::from_value::<Vec<String>>(groups.clone()) {
        Ok(groups) if groups.iter().all(|g| !g.trim().is_empty()) => groups,
        _ => {
            problems.push("aggregator.admin.groups: must be a list of non-empty group names".to_owned());
            Vec::new()
        }
    }
}

fn parse_limits(a: &AggregatorFile, problems: &mut Vec<String>) -> Limits {
    let d = Limits::default();
    let ms = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_millis);
    let limits = Limits {
        body_timeout: ms(a.body_timeout_ms, d.body_timeout),
        max_connections: a.max_connections.unwrap_or(d.max_connections),
        keep_alive: ms(a.keep_alive_ms, d.keep_alive),
        max_sessions: a.max_sessions.unwrap_or(d.max_sessions),
        max_sessions_per_user: a.max_sessions_per_user.unwrap_or(d.max_sessions_per_user),
    };
    if limits.body_timeout.is_zero() {
        problems.push("aggregator.bodyTimeoutMs: must be positive".to_owned());
    }
    for (key, value) in [
        ("maxConnections", limits.max_connections),
        ("maxSessions", limits.max_sessions),
        ("maxSessionsPerUser", limits.max_sessions_per_user),
    ] {
        if value == 0 {
            problems.push(format!("aggregator.{key}: must be at least 1"));
        }
    }
    limits
}

fn default_allowed_hosts(host: &str) -> Vec<String> {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]"].map(str::to_owned).into();
    if !host.is_empty() && host != "0.0.0.0" && host != "::" && !hosts.iter().any(|h| h == host) {
        hosts.push(host.to_owned());
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_muster() {
        let config = Config::parse(Path::new("/x"), "").expect("empty config is valid");
        assert_eq!((config.host.as_str(), config.port), ("127.0.0.1", 8090));
        assert_eq!(config.muster_prefix, "x");
        assert_eq!(config.tool_exposure, ToolExposure::Meta);
        assert!(config.allowed_hosts.contains(&"localhost".to_owned()));
        assert!(config.upstream_egress.allow_private_networks, "in-cluster upstreams are on private networks");
        assert!(!config.allow_private_networks, "token endpoints are not");
        assert_eq!(config.limits, Limits::default());
    }

    #[test]
    fn upstreams_can_be_kept_off_private_networks() {
        let config = Config::parse(Path::new("/x"), "aggregator:\n  upstreams:\n    allowPrivateNetworks: false\n")
            .expect("valid");
        assert!(!config.upstream_egress.allow_private_networks);
    }

    #[test]
    fn reads_the_aggregator_block() {
        let config = Config::parse(
            Path::new("/x"),
            "aggregator:\n  port: 9000\n  musterPrefix: \"\"\n  toolExposure: direct\n  supervision: {initialBackoffMs: 50}\n",
        )
        .expect("valid");
        assert_eq!(config.port, 9000);
        assert_eq!(config.muster_prefix, "");
        assert_eq!(config.tool_exposure, ToolExposure::Direct);
        assert_eq!(config.supervision.initial_backoff, Duration::from_millis(50));
    }

    #[test]
    fn reads_the_admin_groups_beside_musters_admin_ui_keys() {
        let yaml = "aggregator:\n  admin: {enabled: false, port: 9999, groups: [platform-admins, sre]}\n";
        let config = Config::parse(Path::new("/x"), yaml).expect("valid");
        assert_eq!(config.admin_groups, ["platform-admins", "sre"]);
        assert!(Config::parse(Path::new("/x"), "").expect("valid").admin_groups.is_empty());
        let err = Config::parse(Path::new("/x"), "aggregator:\n  admin: {groups: admins}\n").expect_err("not a list");
        assert!(err.to_string().contains("aggregator.admin.groups"), "{err}");
    }

    #[test]
    fn reads_the_oauth_server_block_and_tolerates_musters_other_keys() {
        let config = Config::parse(
            Path::new("/x"),
            "aggregator:\n  oauth:\n    mcpClient: {enabled: false}\n    server:\n      enabled: true\n      baseUrl: https://muster.example.com/\n      dex: {issuerUrl: https://dex.example.com, clientId: muster, connectorId: github}\n      trustedAudiences: [cli]\n      storage: {type: memory}\n",
        )
        .expect("valid");
        let oauth = config.oauth.expect("enabled");
        assert_eq!(oauth.base_url, "https://muster.example.com");
        assert_eq!((oauth.issuer.as_str(), oauth.client_id.as_str()), ("https://dex.example.com", "muster"));
        assert_eq!(oauth.trusted_audiences, ["cli"]);
        let err = Config::parse(
            Path::new("/x"),
            "aggregator:\n  oauth:\n    server: {enabled: true, dex: {issuerUrl: http://dex.example.com}}\n",
        )
        .expect_err("incomplete");
        assert_eq!(err.problems.len(), 3, "{:?}", err.problems);
    }

    #[test]
    fn reports_every_problem() {
        let err = Config::parse(
            Path::new("/x"),
            "aggregator:\n  transport: sse\n  musterPrefix: \"a b\"\n  maxBodyBytes: 10\n  maxConnections: 0\n  bodyTimeoutMs: 0\n",
        )
        .expect_err("invalid");
        assert_eq!(err.problems.len(), 5, "{:?}", err.problems);
        let err = Config::parse(Path::new("/x"), "aggregator:\n  prot: 1\n").expect_err("typo");
        assert!(err.problems[0].contains("prot"), "{:?}", err.problems);
    }
}
