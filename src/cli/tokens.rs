//! The CLI's token store: one file per endpoint under `CONFIG/tokens/`, directory 0700, files
//! 0600, named by a hash of the endpoint (so a listing reveals nothing).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct StoredToken {
    pub(crate) endpoint: String,
    pub(crate) issuer: String,
    /// The bearer muster accepts: the central IdP's ID token (audience: muster's client id), or
    /// the access token of muster's own authorization server (`access_token_bearer`).
    pub(crate) id_token: String,
    #[serde(default)]
    pub(crate) refresh_token: Option<String>,
    /// Seconds since the epoch.
    pub(crate) expires_at: u64,
    /// Where and as whom the refresh token is redeemed (absent in files of older versions).
    #[serde(default)]
    pub(crate) token_endpoint: Option<String>,
    #[serde(default)]
    pub(crate) client_id: Option<String>,
    /// The bearer is an access token (muster's own authorization server), not an ID token.
    #[serde(default)]
    pub(crate) access_token_bearer: bool,
}

impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredToken")
            .field("endpoint", &self.endpoint)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn path(config_dir: &Path, endpoint: &str) -> PathBuf {
    let name = hex::encode(&sha2::Sha256::digest(endpoint.as_bytes())[..16]);
    config_dir.join("tokens").join(format!("{name}.json"))
}

pub(crate) fn load(config_dir: &Path, endpoint: &str) -> Option<StoredToken> {
    let text = std::fs::read_to_string(path(config_dir, endpoint)).ok()?;
    serde_json::from_str(&text).ok()
}

pub(crate) fn save(config_dir: &Path, token: &StoredToken) -> std::io::Result<PathBuf> {
    let file = path(config_dir, &token.endpoint);
    let dir = file.parent().unwrap_or(config_dir);
    std::fs::create_dir_all(dir)?;
    set_mode(dir, 0o700)?;
    let tmp = file.with_extension("json.tmp");
    {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut out = options.open(&tmp)?;
        out.write_all(serde_json::to_string(token).unwrap_or_default().as_bytes())?;
    }
    set_mode(&tmp, 0o600)?;
    std::fs::rename(&tmp, &file)?;
    Ok(file)
}

pub(crate) fn remove(config_dir: &Path, endpoint: &str) -> bool {
    std::fs::remove_file(path(config_dir, endpoint)).is_ok()
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_tokens_privately_and_reads_them_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = StoredToken {
            endpoint: "http://127.0.0.1:8090/mcp".into(),
            issuer: "http://127.0.0.1:9400".into(),
            id_token: "secret-id-token".into(),
            refresh_token: None,
            expires_at: 1,
            token_endpoint: None,
            client_id: None,
            access_token_bearer: false,
        };
        let file = save(dir.path(), &token).expect("save");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777, 0o600);
            let parent = file.parent().expect("parent");
            assert_eq!(std::fs::metadata(parent).expect("meta").permissions().mode() & 0o777, 0o700);
        }
        assert!(!file.to_string_lossy().contains("8090"), "file names do not reveal the endpoint");
        let back = load(dir.path(), &token.endpoint).expect("load");
        assert_eq!(back.id_token, "secret-id-token");
        assert!(!format!("{back:?}").contains("secret-id-token"));
        assert!(remove(dir.path(), &token.endpoint));
        assert!(load(dir.path(), &token.endpoint).is_none());
    }
}
