//! `aggregator.storage` (where several replicas share state: `memory`, the default, shares
//! nothing; `valkey` shares it through a Valkey or Redis server) and `aggregator.sessions.keyFile`
//! (the keys that seal agent session ids, so that any replica can open them). ADR 0009.

use std::path::Path;

use serde::Deserialize;

/// Where the replicas' shared state lives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Storage {
    /// In this process only: one replica.
    #[default]
    Memory,
    Valkey(Valkey),
}

/// `aggregator.storage.valkey`. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Valkey {
    /// `redis://host:port` or `rediss://host:port` (TLS); `valkey://` and `valkeys://` too.
    pub url: String,
    pub password: Option<String>,
    /// TLS: a `rediss://` (or `valkeys://`) URL, or `tls: true`.
    pub tls: bool,
    /// The name the server's certificate is checked against (and sent as SNI) instead of the
    /// URL's host: for a server reached by IP or through an alias its certificate does not name.
    /// A DNS name; only with TLS.
    pub tls_server_name: Option<String>,
    /// PEM certificates (from `caFile`) the server's certificate must chain to, instead of the
    /// system's store; only with TLS.
    pub ca_certificates: Option<Vec<u8>>,
    /// Prefixed to every key and channel, so replicas of two deployments can share one server.
    pub key_prefix: String,
    pub db: i64,
}

impl std::fmt::Debug for Valkey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Valkey")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("tls_server_name", &self.tls_server_name)
            .field("ca_certificates", &self.ca_certificates.as_ref().map(|pem| format!("{} bytes", pem.len())))
            .field("key_prefix", &self.key_prefix)
            .field("db", &self.db)
            .finish()
    }
}

/// The AES-256-GCM keys that seal session ids: the first seals, every one opens (rotation: add
/// the new key first, keep the old until sessions sealed with it have expired). `Debug` hides them.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys(pub Vec<[u8; 32]>);

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionKeys({} keys)", self.0.len())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct StorageFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    valkey: Option<ValkeyFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ValkeyFile {
    url: Option<String>,
    password_file: Option<String>,
    tls: Option<bool>,
    tls_server_name: Option<String>,
    ca_file: Option<String>,
    key_prefix: Option<String>,
    db: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct SessionsFile {
    key_file: Option<String>,
}

pub(super) fn parse_storage(dir: &Path, file: &StorageFile, problems: &mut Vec<String>) -> Storage {
    match file.kind.as_deref() {
        None | Some("memory") => {
            if file.valkey.is_some() {
                tracing::warn!("aggregator.storage.valkey is ignored: storage.type is memory");
            }
            Storage::Memory
        }
        Some("valkey" | "redis") => {
            let valkey = file.valkey.as_ref();
            let url = valkey.and_then(|v| v.url.clone()).unwrap_or_default();
            let scheme = url.split_once("://").map(|(scheme, _)| scheme);
            if !matches!(scheme, Some("redis" | "rediss" | "valkey" | "valkeys")) {
                problems.push(format!(
                    "aggregator.storage.valkey.url: {url:?} must be redis://host:port or rediss://host:port (TLS)"
                ));
            }
            let password = valkey.and_then(|v| v.password_file.as_ref()).and_then(|path| {
                std::fs::read_to_string(dir.join(path))
                    .map(|text| text.trim().to_owned())
                    .map_err(|e| problems.push(format!("aggregator.storage.valkey.passwordFile: {path}: {e}")))
                    .ok()
            });
            let tls = valkey.and_then(|v| v.tls).unwrap_or(false) || matches!(scheme, Some("rediss" | "valkeys"));
            let tls_server_name = valkey.and_then(|v| v.tls_server_name.clone());
            if let Some(name) = &tls_server_name {
                check_tls_server_name(name, tls, problems);
            }
            let ca_certificates =
                valkey.and_then(|v| v.ca_file.as_ref()).and_then(|path| read_ca_file(dir, path, tls, problems));
            let key_prefix = valkey.and_then(|v| v.key_prefix.clone()).unwrap_or_else(|| "muster:".to_owned());
            let db = valkey.and_then(|v| v.db).unwrap_or(0);
            if db < 0 {
                problems.push(format!("aggregator.storage.valkey.db: {db} must be 0 or more"));
            }
            Storage::Valkey(Valkey { url, password, tls, tls_server_name, ca_certificates, key_prefix, db })
        }
        Some(other) => {
            problems.push(format!("aggregator.storage.type: {other:?} is not one of memory, valkey"));
            Storage::Memory
        }
    }
}

/// `tlsServerName` needs TLS and must be a DNS name (an IP address is checked as the URL's host).
fn check_tls_server_name(name: &str, tls: bool, problems: &mut Vec<String>) {
    if !tls {
        problems.push(format!(
            "aggregator.storage.valkey.tlsServerName: {name:?} needs TLS (a rediss:// url or tls: true)"
        ));
    }
    if name.parse::<std::net::IpAddr>().is_ok() || rustls::pki_types::DnsName::try_from(name).is_err() {
        problems.push(format!("aggregator.storage.valkey.tlsServerName: {name:?} is not a DNS name"));
    }
}

/// `caFile`, relative to the folder: the PEM certificates, when it holds at least one and TLS is on.
fn read_ca_file(dir: &Path, path: &str, tls: bool, problems: &mut Vec<String>) -> Option<Vec<u8>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    if !tls {
        problems.push(format!("aggregator.storage.valkey.caFile: {path} needs TLS (a rediss:// url or tls: true)"));
        return None;
    }
    let pem = std::fs::read(dir.join(path))
        .map_err(|e| problems.push(format!("aggregator.storage.valkey.caFile: {path}: {e}")))
        .ok()?;
    match CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
        Ok(certificates) if !certificates.is_empty() => {
            let mut roots = rustls::RootCertStore::empty();
            let (_, unusable) = roots.add_parsable_certificates(certificates);
            if unusable > 0 {
                problems.push(format!(
                    "aggregator.storage.valkey.caFile: {path}: {unusable} of its certificates cannot be parsed"
                ));
                return None;
            }
            Some(pem)
        }
        Ok(_) => {
            problems.push(format!("aggregator.storage.valkey.caFile: {path} holds no PEM certificate"));
            None
        }
        Err(e) => {
            problems.push(format!("aggregator.storage.valkey.caFile: {path}: {e}"));
            None
        }
    }
}

/// The session keys: one base64 32-byte key per line (`#` comments and blank lines skipped).
/// Several replicas must share them, so `valkey` storage needs a key file.
pub(super) fn parse_session_keys(
    dir: &Path,
    file: &SessionsFile,
    storage: &Storage,
    problems: &mut Vec<String>,
) -> Option<SessionKeys> {
    let Some(path) = &file.key_file else {
        if matches!(storage, Storage::Valkey(_)) {
            problems.push(
                "aggregator.sessions.keyFile: needed with storage type valkey (the replicas must share the keys that seal session ids)"
                    .to_owned(),
            );
        }
        return None;
    };
    let text = match std::fs::read_to_string(dir.join(path)) {
        Ok(text) => text,
        Err(e) => {
            problems.push(format!("aggregator.sessions.keyFile: {path}: {e}"));
            return None;
        }
    };
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate().map(|(n, l)| (n + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        use base64::Engine as _;
        match base64::engine::general_purpose::STANDARD.decode(line).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()) {
            Some(key) => keys.push(key),
            None => problems.push(format!(
                "aggregator.sessions.keyFile: {path} line {n}: not the base64 of 32 bytes (make one with: openssl rand -base64 32)"
            )),
        }
    }
    if keys.is_empty() {
        problems.push(format!("aggregator.sessions.keyFile: {path} holds no key"));
        return None;
    }
    Some(SessionKeys(keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<crate::config::Config, crate::config::Error> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("keys"),
            "# current\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n\nAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("password"), "s3cret\n").expect("write");
        std::fs::write(dir.path().join("ca.pem"), CA).expect("write");
        crate::config::Config::parse(dir.path(), yaml)
    }

    /// A self-signed certificate (a CA), for `caFile`.
    const CA: &str = "-----BEGIN CERTIFICATE-----
MIIBiTCCAS+gAwIBAgIUCwYOhP9fpT7HVavA8Bc9MPZWdZEwCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwObXVzdGVyLXRlc3QtY2EwIBcNMjYxMjA2MDIzNDUzWhgPMjEy
NjExMTIwMjM0NTNaMBkxFzAVBgNVBAMMDm11c3Rlci10ZXN0LWNhMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEjrHU1hqccU87Y3o3BDjFYVsWCab8+FrEs93oMomj
b3MjPQjjKFyaiOfutoHUgwTsMhn+uDmectip77U5iIbFxaNTMFEwHQYDVR0OBBYE
FIopx5we2dhGV7gJTVBo7EZb49rAMB8GA1UdIwQYMBaAFIopx5we2dhGV7gJTVBo
7EZb49rAMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgAI7hDEhq
jkE3qSfzUc8nNkGHpX3UcF4obbJHE6ptfTMCIQC97rYk0WXC0cwaVReSNS9k1lBe
XjBo4LQxQW7swQRW5g==
-----END CERTIFICATE-----
";

    /// The problems of `aggregator.storage.valkey: {keys}` (with the session key file).
    fn valkey_problems(keys: &str) -> String {
        parse(&format!(
            "aggregator:\n  storage:\n    type: valkey\n    valkey: {{{keys}}}\n  sessions: {{keyFile: keys}}\n"
        ))
        .expect_err("refused")
        .problems
        .join("\n")
    }

    #[test]
    fn tls_server_name_and_ca_file_need_tls_a_dns_name_and_a_certificate() {
        let config = parse(
            "aggregator:\n  storage:\n    type: valkey\n    valkey: {url: 'rediss://10.0.0.7:6380', tlsServerName: valkey.internal, caFile: ca.pem}\n  sessions: {keyFile: keys}\n",
        )
        .expect("config");
        let Storage::Valkey(valkey) = &config.storage else { panic!("valkey: {:?}", config.storage) };
        assert!(valkey.tls);
        assert_eq!(valkey.tls_server_name.as_deref(), Some("valkey.internal"));
        assert_eq!(valkey.ca_certificates.as_deref(), Some(CA.as_bytes()));

        let problems = valkey_problems("url: 'redis://10.0.0.7:6379', tlsServerName: valkey.internal, caFile: ca.pem");
        for expected in [
            "aggregator.storage.valkey.tlsServerName: \"valkey.internal\" needs TLS (a rediss:// url or tls: true)",
            "aggregator.storage.valkey.caFile: ca.pem needs TLS (a rediss:// url or tls: true)",
        ] {
            assert!(problems.contains(expected), "{expected}: {problems}");
        }
        for name in ["10.0.0.7", "not a name", "valkey..internal", "valkey.internal:6380"] {
            let problems = valkey_problems(&format!("url: 'rediss://10.0.0.7:6380', tlsServerName: '{name}'"));
            let expected = format!("aggregator.storage.valkey.tlsServerName: {name:?} is not a DNS name");
            assert!(problems.contains(&expected), "{expected}: {problems}");
        }
        let problems = valkey_problems("url: 'redis://10.0.0.7:6379', tls: true, caFile: password");
        assert!(problems.contains("aggregator.storage.valkey.caFile: password holds no PEM certificate"), "{problems}");
        let problems = valkey_problems("url: 'rediss://10.0.0.7:6380', caFile: missing.pem");
        assert!(problems.contains("aggregator.storage.valkey.caFile: missing.pem: "), "{problems}");
    }

    #[test]
    fn memory_is_the_default_and_needs_no_key() {
        let config = parse("").expect("config");
        assert_eq!(config.storage, Storage::Memory);
        assert_eq!(config.session_keys, None);
    }

    #[test]
    fn valkey_reads_its_password_and_the_session_keys() {
        let config = parse(
            "aggregator:\n  storage:\n    type: valkey\n    valkey: {url: 'rediss://valkey:6380', passwordFile: password, db: 2}\n  sessions: {keyFile: keys}\n",
        )
        .expect("config");
        let Storage::Valkey(valkey) = &config.storage else { panic!("valkey: {:?}", config.storage) };
        assert_eq!(valkey.password.as_deref(), Some("s3cret"));
        assert_eq!((valkey.key_prefix.as_str(), valkey.db), ("muster:", 2));
        assert!(!format!("{valkey:?}").contains("s3cret"));
        let keys = config.session_keys.expect("keys");
        assert_eq!(keys.0, vec![[1; 32], [2; 32]]);
        assert!(!format!("{keys:?}").contains('1'), "{keys:?}");
    }

    #[test]
    fn every_problem_is_named() {
        let problems =
            parse("aggregator:\n  storage:\n    type: valkey\n    valkey: {url: 'http://x', passwordFile: missing}\n")
                .expect_err("refused")
                .problems
                .join("\n");
        for expected in ["valkey.url: \"http://x\"", "passwordFile: missing", "sessions.keyFile: needed"] {
            assert!(problems.contains(expected), "{expected}: {problems}");
        }
        let sign_in = "  oauth:\n    server:\n      enabled: true\n      baseUrl: https://muster.example.com\n      dex: {issuerUrl: https://dex.example.com, clientId: muster, clientSecret: s3cret}\n";
        let replicated = "aggregator:\n  storage:\n    type: valkey\n    valkey: {url: 'redis://valkey:6379'}\n  sessions: {keyFile: keys}\n";
        let problems = parse(&format!("{replicated}{sign_in}")).expect_err("refused").problems.join("\n");
        assert!(problems.contains("encryptionKey (or encryptionKeyFile) is required"), "{problems}");
        let key = "      encryptionKey: AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n";
        parse(&format!("{replicated}{sign_in}{key}")).expect("with a shared key");
        let problems = parse("aggregator:\n  storage: {type: etcd}\n").expect_err("refused").problems.join("\n");
        assert!(problems.contains("\"etcd\" is not one of memory, valkey"), "{problems}");
    }
}
