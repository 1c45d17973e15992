//! `muster check-config`: every problem of a config folder (or of manifest files), printed with
//! its file and field, and exit 1 when there is any. MCPServers and Workflows alike.
//!
//! Beyond what `serve` refuses (invalid resources, unreadable files), a folder check also reports
//! what would fail on this machine: a URL on a private network that `config.yaml` forbids, and a
//! stdio `command` that is not an executable file. `serve` does not refuse such a command: its
//! start fails with the reason in `status.lastError` and is retried with backoff, so a command
//! installed later starts without touching the file.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use super::EXIT_INVALID;
use crate::config::Config;
use crate::crd::files::WorkflowDefinition;
use crate::crd::workflow::{self, WorkflowStatus};
use crate::crd::{McpServer, Problem, ServerType, files, quoted, shortened};
use crate::egress;

/// A config folder: `config.yaml`, `mcpservers/` and `workflows/`.
#[allow(clippy::print_stdout, clippy::print_stderr, reason = "check-config reports to the terminal")]
pub(super) fn config(dir: &Path) -> i32 {
    let mut bad = 0;
    let policy = match Config::load(dir) {
        Ok(config) => config.upstream_egress,
        Err(e) => {
            for problem in &e.problems {
                eprintln!("{problem}");
            }
            bad += e.problems.len();
            egress::Policy::UPSTREAM_DEFAULT
        }
    };
    let snapshot = files::load(dir);
    for unreadable in &snapshot.unreadable {
        eprintln!("{unreadable}");
        bad += 1;
    }
    for rejected in &snapshot.rejected {
        eprintln!("{rejected}");
        bad += rejected.problems.len();
    }
    let path_var = std::env::var_os("PATH");
    for definition in &snapshot.definitions {
        let problems = on_this_machine(&definition.server, policy, path_var.as_deref());
        if problems.is_empty() {
            println!("ok  {} ({})", definition.server.name(), definition.source);
        }
        for problem in &problems {
            eprintln!("{}: {problem}", definition.source);
        }
        bad += problems.len();
    }
    for rejected in &snapshot.rejected_workflows {
        eprintln!("{rejected}");
        bad += rejected.problems.len();
    }
    for definition in &snapshot.workflows {
        bad += report_workflow(&definition.source.to_string(), definition.name(), &definition.status);
    }
    finish(bad)
}

/// One workflow's verdict: `ok  workflow NAME (where)`, or each problem naming the workflow.
/// Returns the number of problems.
#[allow(clippy::print_stdout, clippy::print_stderr, reason = "check-config reports to the terminal")]
fn report_workflow(place: &str, name: &str, status: &WorkflowStatus) -> usize {
    if status.valid {
        println!("ok  workflow {} ({place})", shortened(name));
    }
    for error in &status.validation_errors {
        eprintln!("{place}: workflow {}: {error}", shortened(name));
    }
    status.validation_errors.len()
}

/// MCPServer and Workflow documents in a (multi-document) manifest file, as `kubectl apply -f` would see them.
#[allow(clippy::print_stdout, clippy::print_stderr, reason = "check-config reports to the terminal")]
pub(super) fn manifests(path: &Path) -> i32 {
    let text = match files::read_file(path) {
        Ok(text) => text,
        Err(reason) => {
            eprintln!("{}: {reason}", path.display());
            return EXIT_INVALID;
        }
    };
    let documents: Vec<serde_json::Value> = match serde_saphyr::from_multiple(&text) {
        Ok(documents) => documents,
        Err(e) => {
            eprintln!("{}: yaml: {}", path.display(), quoted(&e.to_string()));
            return EXIT_INVALID;
        }
    };
    let mut bad = 0;
    for (i, document) in documents.iter().enumerate().filter(|(_, d)| d["kind"] == workflow::KIND) {
        let yaml = serde_saphyr::to_string(document).unwrap_or_default();
        let place = format!("{} document {}", path.display(), i + 1);
        match workflow::parse(&yaml) {
            Ok(parsed) => {
                let definition = WorkflowDefinition::new(parsed, files::Source::File(path.to_owned()));
                bad += report_workflow(&place, definition.name(), &definition.status);
            }
            Err((name, problems)) => {
                let name = name.as_deref().map_or_else(|| "?".to_owned(), shortened);
                for problem in &problems {
                    eprintln!("{place}: workflow {name}: {problem}");
                }
                bad += problems.len();
            }
        }
    }
    for (i, document) in documents.iter().enumerate().filter(|(_, d)| d["kind"] == crate::crd::KIND) {
        let yaml = serde_saphyr::to_string(document).unwrap_or_default();
        match files::parse(&yaml) {
            Ok(server) => println!("ok  {} ({} document {})", server.name(), path.display(), i + 1),
            Err((name, problems)) => {
                let name = name.as_deref().map_or_else(|| "?".to_owned(), shortened);
                for problem in &problems {
                    eprintln!("{} document {} ({name}): {problem}", path.display(), i + 1);
                }
                bad += problems.len();
            }
        }
    }
    finish(bad)
}

#[allow(clippy::print_stderr, reason = "check-config reports to the terminal")]
fn finish(bad: usize) -> i32 {
    if bad > 0 {
        eprintln!("{bad} problem(s) found");
        EXIT_INVALID
    } else {
        0
    }
}

/// What a valid resource still needs on this machine: a URL `policy` allows, a runnable command.
fn on_this_machine(server: &McpServer, policy: egress::Policy, path_var: Option<&OsStr>) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(url) = server.spec.url.as_deref()
        && let Err(refused) = policy.check_url(url)
    {
        problems.push(Problem {
            field: "spec.url".into(),
            message: format!(
                "{} is refused: {refused}; set aggregator.upstreams.allowPrivateNetworks: true to allow it",
                quoted(url)
            ),
        });
    }
    if server.spec.server_type == Some(ServerType::Stdio)
        && let Some(command) = server.spec.command.as_deref()
    {
        // The child's own PATH (spec.env) is the one its command is looked up in.
        let path_var = server.spec.env.get("PATH").map(OsString::from).or_else(|| path_var.map(OsStr::to_owned));
        if let Err(message) = find_command(command, path_var.as_deref()) {
            problems.push(Problem { field: "spec.command".into(), message });
        }
    }
    problems
}

/// Where `command` would be run from: itself when it holds a `/`, else the first match on `PATH`.
fn find_command(command: &str, path_var: Option<&OsStr>) -> Result<PathBuf, String> {
    if command.contains('/') {
        let path = PathBuf::from(command);
        return match executable(&path) {
            Some(true) => Ok(path),
            Some(false) => Err(format!("{} is not an executable file", quoted(command))),
            None => Err(format!("{} does not exist", quoted(command))),
        };
    }
    let mut not_executable = None;
    for dir in std::env::split_paths(path_var.unwrap_or_default()) {
        let candidate = dir.join(command);
        match executable(&candidate) {
            Some(true) => return Ok(candidate),
            Some(false) => not_executable = not_executable.or(Some(candidate)),
            None => {}
        }
    }
    Err(match not_executable {
        Some(path) => format!("{} is not executable", path.display()),
        None => format!("{} is not found on PATH", quoted(command)),
    })
}

/// `None` when nothing is there; else whether it is a file someone may execute.
fn executable(path: &Path) -> Option<bool> {
    use std::os::unix::fs::PermissionsExt as _;
    let metadata = std::fs::metadata(path).ok()?;
    Some(metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stdio(command: &str, env_path: Option<&str>) -> McpServer {
        let env = env_path.map(|p| format!("  env: {{PATH: \"{p}\"}}\n")).unwrap_or_default();
        files::parse(&format!(
            "apiVersion: muster.giantswarm.io/v1alpha1\nkind: MCPServer\nmetadata:\n  name: a\nspec:\n  type: stdio\n  command: \"{command}\"\n{env}"
        ))
        .expect("valid")
    }

    #[test]
    fn a_stdio_command_must_be_an_executable_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("tool");
        std::fs::write(&bin, "#!/bin/sh\n").expect("write");
        let path = OsString::from(dir.path());
        let problems = |server: &McpServer| on_this_machine(server, egress::Policy::UPSTREAM_DEFAULT, Some(&path));
        assert_eq!(
            problems(&stdio("tool", None))[0].to_string(),
            format!("spec.command: {} is not executable", bin.display())
        );
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        assert_eq!(problems(&stdio("tool", None)), []);
        assert_eq!(problems(&stdio(&bin.display().to_string(), None)), []);
        assert_eq!(
            problems(&stdio("nope-not-a-command", None))[0].to_string(),
            "spec.command: \"nope-not-a-command\" is not found on PATH"
        );
        assert_eq!(problems(&stdio("/nope/tool", None))[0].to_string(), "spec.command: \"/nope/tool\" does not exist");
        // The child's PATH from spec.env is where its command is looked up.
        assert!(!problems(&stdio("tool", Some("/nowhere")))[0].message.is_empty());
    }

    #[test]
    fn a_private_url_is_reported_when_config_forbids_it() {
        let server = files::parse("apiVersion: muster.giantswarm.io/v1alpha1\nkind: MCPServer\nmetadata:\n  name: a\nspec:\n  type: streamable-http\n  url: http://10.0.0.5/mcp\n").expect("valid");
        let closed = egress::Policy { allow_private_networks: false };
        let problems = on_this_machine(&server, closed, None);
        assert!(problems[0].message.contains("10.0.0.5 is a private network address"), "{problems:?}");
        assert_eq!(on_this_machine(&server, egress::Policy::UPSTREAM_DEFAULT, None), []);
    }
}
