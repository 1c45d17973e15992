//! The `status` block of an MCPServer, and writing it back into the resource's YAML file.
//!
//! `sink.rs` decides where status goes; in filesystem mode it comes here. The write replaces
//! the top-level `status:` block and leaves everything else (comments included) byte for byte, and it is skipped when
//! nothing changed, so the folder watcher never sees a status-only change as a new spec.

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The CRD's `status.state` values (reference §2.1), one closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum State {
    Starting,
    Running,
    Connecting,
    Connected,
    Disconnected,
    Stopped,
    Failed,
    #[serde(rename = "Auth Required")]
    AuthRequired,
}

impl State {
    pub const ALL: [Self; 8] = [
        Self::Starting,
        Self::Running,
        Self::Connecting,
        Self::Connected,
        Self::Disconnected,
        Self::Stopped,
        Self::Failed,
        Self::AuthRequired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "Starting",
            Self::Running => "Running",
            Self::Connecting => "Connecting",
            Self::Connected => "Connected",
            Self::Disconnected => "Disconnected",
            Self::Stopped => "Stopped",
            Self::Failed => "Failed",
            Self::AuthRequired => "Auth Required",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `status` block: written into the file (filesystem mode) or the status subresource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_connected: Option<String>,
    pub restart_count: u32,
    pub consecutive_failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_retry_after: Option<String>,
    /// The MCP revision muster speaks with the server (`2026-07-28` when it answered
    /// `server/discover`, else what `initialize` agreed on); absent without a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// `Ready`, in Kubernetes mode (files keep the flat fields only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A Kubernetes condition (`type: Ready`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub condition_type: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub last_transition_time: String,
}

/// Event reasons (reference §7), as Kubernetes Events or, in filesystem mode, log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Created,
    Updated,
    Deleted,
    Starting,
    Started,
    Stopped,
    Failed,
    RecoveryStarted,
    RecoverySucceeded,
    AuthRequired,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "MCPServerCreated",
            Self::Updated => "MCPServerUpdated",
            Self::Deleted => "MCPServerDeleted",
            Self::Starting => "MCPServerStarting",
            Self::Started => "MCPServerStarted",
            Self::Stopped => "MCPServerStopped",
            Self::Failed => "MCPServerFailed",
            Self::RecoveryStarted => "MCPServerRecoveryStarted",
            Self::RecoverySucceeded => "MCPServerRecoverySucceeded",
            Self::AuthRequired => "MCPServerAuthRequired",
        }
    }

    pub fn verb(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
            Self::Starting => "starting",
            Self::Started => "started",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::RecoveryStarted => "recovering",
            Self::RecoverySucceeded => "recovered",
            Self::AuthRequired => "needs sign-in",
        }
    }
}

/// Replaces (or appends) the `status:` block of the YAML file at `path`: an MCPServer's `Status`
/// or a Workflow's `WorkflowStatus`.
/// Returns `false` when the file already held exactly this status.
///
/// A symlinked file stays a link: the status goes into the file it points to (wherever that is).
/// A FIFO, device or oversized file is refused without blocking, as `files::read_file` refuses it.
pub fn write_to_file(path: &Path, status: &impl Serialize) -> std::io::Result<bool> {
    let target = std::fs::canonicalize(path)?;
    let text = super::files::read_file(&target)
        .map_err(|reason| std::io::Error::other(format!("{}: {reason}", target.display())))?;
    let updated = replace_status_block(&text, status);
    if updated == text {
        return Ok(false);
    }
    // Write to a temporary file beside the target and rename, so readers never see half a file.
    let tmp = target.with_extension("yaml.muster-tmp");
    std::fs::write(&tmp, &updated)?;
    if let Ok(metadata) = std::fs::metadata(&target) {
        let _ = std::fs::set_permissions(&tmp, metadata.permissions());
    }
    std::fs::rename(&tmp, &target)?;
    Ok(true)
}

fn render(status: &impl Serialize) -> String {
    let mut out = String::from("status:\n");
    let value = serde_json::to_value(status).unwrap_or_default();
    if let Some(map) = value.as_object() {
        for (key, value) in map {
            let scalar = match value {
                serde_json::Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
                other => other.to_string(),
            };
            out.push_str(&format!("  {key}: {scalar}\n"));
        }
    }
    out
}

fn replace_status_block(text: &str, status: &impl Serialize) -> String {
    let mut kept = Vec::new();
    let mut in_status = false;
    for line in text.lines() {
        let top_level = !line.is_empty() && !line.starts_with([' ', '\t', '#']);
        if top_level {
            in_status = line.starts_with("status:");
        }
        if !in_status {
            kept.push(line);
        }
    }
    while kept.last().is_some_and(|l| l.trim().is_empty()) {
        kept.pop();
    }
    let mut out = kept.join("\n");
    out.push('\n');
    out.push_str(&render(status));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            state: State::Failed,
            last_error: Some("exec \"nope\": not found".into()),
            last_connected: None,
            restart_count: 2,
            consecutive_failures: 3,
            next_retry_after: Some("2026-11-24T08:00:00Z".into()),
            protocol_version: None,
            conditions: Vec::new(),
        }
    }

    #[test]
    fn replaces_only_the_status_block() {
        let text = "# keep me\napiVersion: v\nstatus:\n  state: Running\n  old: 1\nspec:\n  type: stdio\n";
        let out = replace_status_block(text, &status());
        assert!(out.starts_with("# keep me\napiVersion: v\nspec:\n  type: stdio\nstatus:\n"), "{out}");
        assert!(out.contains("  state: \"Failed\"\n"));
        assert!(out.contains("  lastError: \"exec \\\"nope\\\": not found\"\n"));
        assert!(!out.contains("old: 1"));
        // Idempotent: a second write of the same status changes nothing.
        assert_eq!(replace_status_block(&out, &status()), out);
    }

    #[test]
    fn a_symlinked_file_stays_a_link_and_its_target_gets_the_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("elsewhere.yaml");
        std::fs::write(&target, "apiVersion: v\nspec:\n  type: stdio\n").expect("write");
        let link = dir.path().join("link.yaml");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(write_to_file(&link, &status()).expect("written"));
        assert!(std::fs::symlink_metadata(&link).expect("link").is_symlink(), "the link was replaced");
        assert!(std::fs::read_to_string(&target).expect("target").contains("state: \"Failed\""));
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo.yaml");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
        assert!(made.success());
        let err = write_to_file(&fifo, &status()).expect_err("refused");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn written_status_parses_back_as_yaml() {
        let text = "apiVersion: muster.giantswarm.io/v1alpha1\nkind: MCPServer\nmetadata:\n  name: a\nspec:\n  type: stdio\n  command: x\n";
        let out = replace_status_block(text, &status());
        let value: serde_json::Value = serde_saphyr::from_str(&out).expect("valid yaml");
        assert_eq!(value["status"]["state"], "Failed");
        assert_eq!(value["status"]["consecutiveFailures"], 3);
        assert_eq!(value["spec"]["command"], "x");
    }
}
