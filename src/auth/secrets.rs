//! Client credentials for token exchange, from Kubernetes Secret manifests in `DIR/secrets/*.yaml`
//! (filesystem mode). `data` values are base64, `stringData` values are plain; `stringData` wins,
//! as in Kubernetes. Files are read when a credential is needed, so a rotated secret takes effect
//! on the next exchange without a restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::Secret;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("secret {namespace}/{name} was not found in {dir}")]
    NotFound { namespace: String, name: String, dir: String },
    #[error("secret {namespace}/{name} has no key {key:?}")]
    MissingKey { namespace: String, name: String, key: String },
    #[error("secret {namespace}/{name}: key {key:?} is not valid base64")]
    BadBase64 { namespace: String, name: String, key: String },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    data: BTreeMap<String, String>,
    #[serde(default)]
    string_data: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct Meta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

/// Reads Secret manifests from one folder.
#[derive(Debug, Clone)]
pub struct SecretStore {
    dir: PathBuf,
}

/// A client id and secret for a token endpoint.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: Secret,
}

impl SecretStore {
    pub fn new(config_dir: &Path) -> Self {
        Self { dir: config_dir.join("secrets") }
    }

    /// The two keys of Secret `namespace/name`.
    pub fn credentials(
        &self,
        namespace: &str,
        name: &str,
        id_key: &str,
        secret_key: &str,
    ) -> Result<ClientCredentials, Error> {
        let data = self.find(namespace, name)?;
        let get = |key: &str| {
            data.get(key).cloned().ok_or_else(|| Error::MissingKey {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                key: key.to_owned(),
            })
        };
        Ok(ClientCredentials { client_id: get(id_key)?, client_secret: Secret::new(get(secret_key)?) })
    }

    fn find(&self, namespace: &str, name: &str) -> Result<BTreeMap<String, String>, Error> {
        let not_found = || Error::NotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            dir: self.dir.display().to_string(),
        };
        let entries = std::fs::read_dir(&self.dir).map_err(|_| not_found())?;
        for entry in entries.flatten() {
            let path = entry.path();
            if !matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let Ok(manifest) = serde_saphyr::from_str::<Manifest>(&text) else { continue };
            let ns = manifest.metadata.namespace.as_deref().unwrap_or("default");
            if manifest.kind != "Secret" || manifest.metadata.name != name || ns != namespace {
                continue;
            }
            let mut values = BTreeMap::new();
            for (key, value) in manifest.data {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(value.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| Error::BadBase64 {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                        key: key.clone(),
                    })?;
                values.insert(key, decoded);
            }
            values.extend(manifest.string_data);
            return Ok(values);
        }
        Err(not_found())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_data_and_string_data_by_namespace_and_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("secrets")).expect("dir");
        std::fs::write(
            dir.path().join("secrets/a.yaml"),
            "apiVersion: v1\nkind: Secret\nmetadata: {name: cluster-a, namespace: muster}\ndata:\n  client-id: bXVzdGVy\n  client-secret: czNjcjN0\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("secrets/b.yaml"),
            "apiVersion: v1\nkind: Secret\nmetadata: {name: cluster-a}\nstringData: {id: other, secret: x}\n",
        )
        .expect("write");
        let store = SecretStore::new(dir.path());
        let creds = store.credentials("muster", "cluster-a", "client-id", "client-secret").expect("found");
        assert_eq!(creds.client_id, "muster");
        assert_eq!(creds.client_secret.expose(), "s3cr3t");
        let other = store.credentials("default", "cluster-a", "id", "secret").expect("default namespace");
        assert_eq!(other.client_id, "other");
        assert!(matches!(store.credentials("muster", "nope", "a", "b"), Err(Error::NotFound { .. })));
        assert!(matches!(
            store.credentials("muster", "cluster-a", "id", "secret"),
            Err(Error::MissingKey { ref key, .. }) if key == "id"
        ));
    }
}
