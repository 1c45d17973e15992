//! Filesystem mode: MCPServer resources as YAML files in `DIR/mcpservers/*.yaml`.
//!
//! `load` reads the folder and reports every bad file with its problems; a bad file rejects only
//! its own server. `watch` re-reads the folder when it changes (notify, debounced) and on a slow
//! resync timer, and publishes the whole desired set; the supervisor diffs it. Status writes
//! from `crd/status.rs` change only the `status` block, so they re-load to the same spec and
//! cause no restart (no feedback loop).

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher as _;
use tokio::sync::mpsc;

use super::{McpServer, Problem};

/// Where a definition came from, and so where its status goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// The MCPServer resource `namespace/name` (Kubernetes mode).
    Kubernetes {
        namespace: String,
        name: String,
    },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Kubernetes { namespace, name } => write!(f, "mcpserver {namespace}/{name}"),
        }
    }
}

/// One valid server and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub server: McpServer,
    pub source: Source,
}

/// A definition that could not be used, with every reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub source: Source,
    pub name: Option<String>,
    pub problems: Vec<Problem>,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {problem}", self.source)?;
        }
        Ok(())
    }
}

/// The result of reading the folder once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub definitions: Vec<Definition>,
    pub rejected: Vec<Rejected>,
}

pub fn servers_dir(config_dir: &Path) -> PathBuf {
    config_dir.join("mcpservers")
}

/// Reads every `*.yaml`/`*.yml` file of `DIR/mcpservers`. A missing folder is an empty fleet.
pub fn load(config_dir: &Path) -> Snapshot {
    let dir = servers_dir(config_dir);
    let mut snapshot = Snapshot::default();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return snapshot;
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    paths.sort();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => match parse(&text) {
                Ok(server) => snapshot.definitions.push(Definition { server, source: Source::File(path) }),
                Err((name, problems)) => {
                    snapshot.rejected.push(Rejected { source: Source::File(path), name, problems })
                }
            },
            Err(e) => snapshot.rejected.push(Rejected {
                source: Source::File(path),
                name: None,
                problems: vec![Problem { field: "file".into(), message: format!("cannot be read: {e}") }],
            }),
        }
    }
    reject_duplicate_names(&mut snapshot);
    snapshot
}

/// Validates already-parsed resources (Kubernetes mode): the same rules and the same
/// duplicate-name check as files.
pub fn snapshot_of(resources: Vec<(McpServer, Source)>) -> Snapshot {
    let mut snapshot = Snapshot::default();
    for (server, source) in resources {
        let problems = server.validate();
        if problems.is_empty() {
            snapshot.definitions.push(Definition { server, source });
        } else {
            snapshot.rejected.push(Rejected { source, name: Some(server.metadata.name.clone()), problems });
        }
    }
    reject_duplicate_names(&mut snapshot);
    snapshot
}

/// Parses and validates one resource. On failure returns the name, if it could be read.
pub fn parse(text: &str) -> Result<McpServer, (Option<String>, Vec<Problem>)> {
    let server: McpServer = serde_saphyr::from_str(text).map_err(|e| {
        let name = serde_saphyr::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.pointer("/metadata/name").and_then(|n| n.as_str()).map(str::to_owned));
        (name, vec![Problem { field: "yaml".into(), message: first_line(&e.to_string()) }])
    })?;
    let mut server = server;
    // Status is ours to write, never desired state.
    server.status = None;
    let problems = server.validate();
    if problems.is_empty() { Ok(server) } else { Err((Some(server.metadata.name.clone()), problems)) }
}

fn first_line(s: &str) -> String {
    s.lines().take(3).collect::<Vec<_>>().join(" ").trim().to_owned()
}

fn reject_duplicate_names(snapshot: &mut Snapshot) {
    let mut seen: std::collections::HashMap<String, Source> = std::collections::HashMap::new();
    let mut keep = Vec::new();
    for definition in std::mem::take(&mut snapshot.definitions) {
        let name = definition.server.name().to_owned();
        if let Some(first) = seen.get(&name) {
            snapshot.rejected.push(Rejected {
                source: definition.source,
                name: Some(name.clone()),
                problems: vec![Problem {
                    field: "metadata.name".into(),
                    message: format!("{name:?} is already defined in {first}"),
                }],
            });
        } else {
            seen.insert(name, definition.source.clone());
            keep.push(definition);
        }
    }
    snapshot.definitions = keep;
}

/// Watches the folder; every change (debounced) and every `resync` tick sends a new snapshot.
/// The returned guard stops the OS watcher when dropped.
pub fn watch(
    config_dir: PathBuf,
    resync: Duration,
    out: mpsc::UnboundedSender<Snapshot>,
) -> notify::Result<notify::RecommendedWatcher> {
    let dir = servers_dir(&config_dir);
    let _ = std::fs::create_dir_all(&dir);
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        let mut last = load(&config_dir);
        let mut ticker = tokio::time::interval(resync);
        ticker.tick().await;
        loop {
            tokio::select! {
                changed = rx.recv() => {
                    if changed.is_none() { return; }
                    // Debounce: editors write in several steps.
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    while rx.try_recv().is_ok() {}
                }
                _ = ticker.tick() => {}
            }
            let next = load(&config_dir);
            if next != last {
                last = next.clone();
                if out.send(next).is_err() {
                    return;
                }
            }
        }
    });
    Ok(watcher)
}
