//! Client credentials for token exchange: from Kubernetes Secret manifests in `DIR/secrets/*.yaml`
//! (filesystem mode; `data` values are base64, `stringData` plain, `stringData` wins as in
//! Kubernetes), or from the Secret API (Kubernetes mode; `get` on the named secret only). Either is
//! read when a credential is needed (the exchanger keeps it 10 s), so a rotated secret takes effect
//! without a restart.

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
    #[error("secret {namespace}/{name} cannot be read from the Kubernetes API: {reason}")]
    Api { namespace: String, name: String, reason: String },
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

/// Where Secrets come from.
#[derive(Clone)]
pub enum SecretStore {
    /// Secret manifests in one folder.
    Files { dir: PathBuf },
    /// The Secret API.
    Kubernetes { client: kube::Client },
}

/// A client id and secret for a token endpoint.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: Secret,
}

impl SecretStore {
    pub fn new(config_dir: &Path) -> Self {
        Self::Files { dir: config_dir.join("secrets") }
    }

    /// The two keys of Secret `namespace/name`.
    pub async fn credentials(
        &self,
        namespace: &str,
        name: &str,
        id_key: &str,
        secret_key: &str,
    ) -> Result<ClientCredentials, Error> {
        let data = match self {
            Self::Files { dir } => find_file(dir, namespace, name)?,
            Self::Kubernetes { client } => fetch(client, namespace, name).await?,
        };
        let get = |key: &str| {
            data.get(key).cloned().ok_or_else(|| Error::MissingKey {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                key: key.to_owned(),
            })
        };
        Ok(ClientCredentials { client_id: get(id_key)?, client_secret: Secret::new(get(secret_key)?) })
    }
}

async fn fetch(client: &kube::Client, namespace: &str, name: &str) -> Result<BTreeMap<String, String>, Error> {
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(client.clone(), namespace);
    let secret = match api.get(name).await {
        Ok(secret) => secret,
        Err(kube::Error::Api(e)) if e.code == 404 => {
            return Err(Error::NotFound {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                dir: "the cluster".to_owned(),
            });
        }
        Err(e) => {
            return Err(Error::Api { namespace: namespace.to_owned(), name: name.to_owned(), reason: e.to_string() });
        }
    };
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for (key, bytes) in secret.data.unwrap_or_default() {
        values.insert(key, String::from_utf8_lossy(&bytes.0).into_owned());
    }
    values.extend(secret.string_data.unwrap_or_default());
    Ok(values)
}

fn find_file(dir: &Path, namespace: &str, name: &str) -> Result<BTreeMap<String, String>, Error> {
    let not_found =
        || Error::NotFound { namespace: namespace.to_owned(), name: name.to_owned(), dir: dir.display().to_string() };
    let entries = std::fs::read_dir(dir).map_err(|_| not_found())?;
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
        let creds = futures::executor::block_on(store.credentials("muster", "cluster-a", "client-id", "client-secret"))
            .expect("found");
        assert_eq!(creds.client_id, "muster");
        assert_eq!(creds.client_secret.expose(), "s3cr3t");
        let other = futures::executor::block_on(store.credentials("default", "cluster-a", "id", "secret"))
            .expect("default namespace");
        assert_eq!(other.client_id, "other");
        assert!(matches!(
            futures::executor::block_on(store.credentials("muster", "nope", "a", "b")),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            futures::executor::block_on(store.credentials("muster", "cluster-a", "id", "secret")),
            Err(Error::MissingKey { ref key, .. }) if key == "id"
        ));
    }
}
