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
    pub tls: bool,
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
            let key_prefix = valkey.and_then(|v| v.key_prefix.clone()).unwrap_or_else(|| "muster:".to_owned());
            let db = valkey.and_then(|v| v.db).unwrap_or(0);
            if db < 0 {
                problems.push(format!("aggregator.storage.valkey.db: {db} must be 0 or more"));
            }
            Storage::Valkey(Valkey { url, password, tls: valkey.and_then(|v| v.tls).unwrap_or(false), key_prefix, db })
        }
        Some(other) => {
            problems.push(format!("aggregator.storage.type: {other:?} is not one of memory, valkey"));
            Storage::Memory
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
        crate::config::Config::parse(dir.path(), yaml)
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
