//! Filesystem mode: MCPServer resources as YAML files in `DIR/mcpservers/*.yaml`, and Workflow
//! resources in `DIR/workflows/*.yaml` (`files/workflows.rs`), both in one `DesiredSet`.
//!
//! `load` reads the folder and reports every bad file with its problems; a bad file rejects only
//! its own server. `watch` re-reads the folder when it changes (notify, debounced) and on a slow
//! resync timer, and publishes the whole desired set; the supervisor diffs it. Status writes
//! from `crd/status.rs` change only the `status` block, so they re-load to the same spec and
//! cause no restart (no feedback loop).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher as _;
use tokio::sync::mpsc;

use super::{McpServer, Problem, first_line, quoted};

pub mod workflows;

pub use workflows::{WorkflowDefinition, workflows_dir};

/// Where a definition came from, and so where its status goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// The resource `namespace/name` of `kind` (`MCPServer` or `Workflow`; Kubernetes mode).
    Kubernetes {
        kind: &'static str,
        namespace: String,
        name: String,
    },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Kubernetes { kind, namespace, name } => {
                write!(f, "{} {namespace}/{name}", kind.to_ascii_lowercase())
            }
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
pub struct DesiredSet {
    pub definitions: Vec<Definition>,
    pub rejected: Vec<Rejected>,
    /// Files (or the folder itself) that could not be read. `Loader::read` keeps what they held at
    /// the last successful read, as `rejected` entries that name the server, so the supervisor
    /// leaves it running. Workflow files and the workflows folder are listed here too.
    pub unreadable: Vec<Unreadable>,
    /// Every workflow that parsed, valid or not; its `status` says which. The supervisor writes
    /// each status back and gives the valid ones to the router as `workflow_<name>` tools.
    pub workflows: Vec<WorkflowDefinition>,
    /// Workflow files that are not a Workflow at all (bad YAML, no `spec`).
    pub rejected_workflows: Vec<Rejected>,
}

/// A file or folder that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub path: PathBuf,
    pub reason: String,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// The largest MCPServer file muster reads (a Kubernetes object is at most ~1.5 MB; a real
/// MCPServer a few KiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

pub fn servers_dir(config_dir: &Path) -> PathBuf {
    config_dir.join("mcpservers")
}

/// Reads every `*.yaml`/`*.yml` file of `DIR/mcpservers` and `DIR/workflows` once, with no
/// memory of earlier reads (`check-config`). A missing folder is an empty fleet; a folder that
/// cannot be listed is one `unreadable` entry.
pub fn load(config_dir: &Path) -> DesiredSet {
    let mut snapshot = DesiredSet::default();
    load_servers(config_dir, &mut snapshot);
    workflows::load_into(config_dir, &mut snapshot);
    workflows::reject_duplicate_names(&mut snapshot);
    snapshot
}

/// The text of every `*.yaml`/`*.yml` file of `dir`, by path. A missing folder holds none; a folder
/// that cannot be listed, and each file that cannot be read, is an `unreadable` entry of `snapshot`.
fn read_folder(dir: PathBuf, snapshot: &mut DesiredSet) -> Vec<(PathBuf, String)> {
    let paths = match list(&dir) {
        Ok(paths) => paths,
        Err(Listing::Missing) => return Vec::new(),
        Err(Listing::Failed(reason)) => {
            snapshot.unreadable.push(Unreadable { path: dir, reason });
            return Vec::new();
        }
    };
    let mut texts = Vec::with_capacity(paths.len());
    for path in paths {
        match read_file(&path) {
            Ok(text) => texts.push((path, text)),
            Err(reason) => snapshot.unreadable.push(Unreadable { path, reason }),
        }
    }
    texts
}

fn load_servers(config_dir: &Path, snapshot: &mut DesiredSet) {
    for (path, text) in read_folder(servers_dir(config_dir), snapshot) {
        match parse(&text) {
            Ok(server) => snapshot.definitions.push(Definition { server, source: Source::File(path) }),
            Err((name, problems)) => snapshot.rejected.push(Rejected { source: Source::File(path), name, problems }),
        }
    }
    reject_duplicate_names(snapshot);
}

/// Reads the folder again and again (the watcher), remembering what each file held at its last
/// successful read: a file or folder that cannot be read now keeps that, and only a successful
/// read that no longer holds a server removes it. A failed read is never an empty fleet.
#[derive(Debug)]
pub struct Loader {
    config_dir: PathBuf,
    /// What each file held when it was last read.
    known: BTreeMap<PathBuf, Known>,
}

#[derive(Debug, Clone)]
enum Known {
    /// A valid server, by name.
    Valid(String),
    Invalid(Rejected),
    /// A workflow file as last read (valid or not).
    Workflow(Box<WorkflowDefinition>),
    /// A workflow file that was not a Workflow at all.
    InvalidWorkflow(Rejected),
}

impl Loader {
    pub fn new(config_dir: &Path) -> Self {
        Self { config_dir: config_dir.to_owned(), known: BTreeMap::new() }
    }

    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// `load`, plus what unreadable files and folders held before.
    pub fn read(&mut self) -> DesiredSet {
        let mut snapshot = load(&self.config_dir);
        let dir = servers_dir(&self.config_dir);
        // A file that no longer parses far enough to name its server still names the one it
        // held: the supervisor keeps that running, as for any invalid new version.
        for rejected in snapshot.rejected.iter_mut().filter(|r| r.name.is_none()) {
            if let Source::File(path) = &rejected.source {
                rejected.name = match self.known.get(path) {
                    Some(Known::Valid(name)) => Some(name.clone()),
                    Some(Known::Invalid(before)) => before.name.clone(),
                    _ => None,
                };
            }
        }
        let unread_folders: Vec<PathBuf> = [dir, workflows_dir(&self.config_dir)]
            .into_iter()
            .filter(|folder| snapshot.unreadable.iter().any(|u| u.path == *folder))
            .collect();
        let unreadable: Vec<&PathBuf> = snapshot.unreadable.iter().map(|u| &u.path).collect();
        // A listing that succeeded drops the files it no longer lists.
        self.known.retain(|path, _| unreadable.contains(&path) || unread_folders.iter().any(|f| path.starts_with(f)));
        for definition in &snapshot.definitions {
            if let Source::File(path) = &definition.source {
                self.known.insert(path.clone(), Known::Valid(definition.server.name().to_owned()));
            }
        }
        for rejected in &snapshot.rejected {
            if let Source::File(path) = &rejected.source {
                self.known.insert(path.clone(), Known::Invalid(rejected.clone()));
            }
        }
        for definition in &snapshot.workflows {
            if let Source::File(path) = &definition.source {
                self.known.insert(path.clone(), Known::Workflow(Box::new(definition.clone())));
            }
        }
        for rejected in &snapshot.rejected_workflows {
            if let Source::File(path) = &rejected.source {
                self.known.insert(path.clone(), Known::InvalidWorkflow(rejected.clone()));
            }
        }
        keep_known(&mut snapshot, &self.known);
        metrics::gauge!(crate::telemetry::metrics::UNREADABLE_SOURCES).set(snapshot.unreadable.len() as f64);
        snapshot
    }
}

/// Adds what unreadable files (or every file, when the folder is unreadable) held before: a valid
/// server as a `rejected` entry that names it (the supervisor keeps it running and says why in its
/// status), an invalid one as it was.
fn keep_known(snapshot: &mut DesiredSet, known: &BTreeMap<PathBuf, Known>) {
    let mut kept = Vec::new();
    let mut kept_workflows = Vec::new();
    for unreadable in &snapshot.unreadable {
        for (path, outcome) in known.iter().filter(|(path, _)| path.starts_with(&unreadable.path)) {
            let rejected = match outcome {
                // A workflow runs nothing on its own: keeping it is listing it as it was.
                Known::Workflow(definition) => {
                    kept_workflows.push(WorkflowDefinition::clone(definition));
                    continue;
                }
                Known::InvalidWorkflow(rejected) => {
                    snapshot.rejected_workflows.push(rejected.clone());
                    continue;
                }
                Known::Invalid(rejected) => rejected.clone(),
                Known::Valid(name) => Rejected {
                    source: Source::File(path.clone()),
                    name: Some(name.clone()),
                    problems: vec![Problem {
                        field: "file".into(),
                        message: if *path == unreadable.path {
                            format!("{}; keeping the definition read before", unreadable.reason)
                        } else {
                            format!(
                                "the folder {} {}; keeping the definition read before",
                                unreadable.path.display(),
                                unreadable.reason
                            )
                        },
                    }],
                },
            };
            kept.push(rejected);
        }
    }
    // A kept server's name stays taken: a new file that reuses it is a duplicate.
    for rejected in &kept {
        let Some(name) = &rejected.name else { continue };
        let Some(at) = snapshot.definitions.iter().position(|d| d.server.name() == name) else { continue };
        let duplicate = snapshot.definitions.remove(at);
        snapshot.rejected.push(Rejected {
            source: duplicate.source,
            name: Some(name.clone()),
            problems: vec![Problem {
                field: "metadata.name".into(),
                message: format!("{} is already defined in {}", quoted(name), rejected.source),
            }],
        });
    }
    snapshot.rejected.extend(kept);
    // A kept workflow's name stays taken, as a kept server's does.
    if !kept_workflows.is_empty() {
        kept_workflows.append(&mut snapshot.workflows);
        snapshot.workflows = kept_workflows;
        for definition in &mut snapshot.workflows {
            definition.status = WorkflowDefinition::new(definition.workflow.clone(), definition.source.clone()).status;
        }
        workflows::reject_duplicate_names(snapshot);
    }
}

enum Listing {
    Missing,
    Failed(String),
}

/// The folder's YAML files, sorted. Any error while listing fails the whole listing: a partial
/// one would look like deleted servers.
fn list(dir: &Path) -> Result<Vec<PathBuf>, Listing> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Listing::Missing),
        Err(e) => return Err(Listing::Failed(format!("cannot be listed: {e}"))),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Listing::Failed(format!("cannot be listed: {e}")))?;
        let path = entry.path();
        if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// Reads one MCPServer file without ever blocking: it must be (or link to) a regular file of at
/// most `MAX_FILE_BYTES`. A FIFO, a device or a folder is refused before it is opened, and the
/// file is opened non-blocking and checked again, in case it was swapped in between.
pub fn read_file(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let metadata = std::fs::metadata(path).map_err(|e| match std::fs::read_link(path) {
        Ok(target) => format!("is a symlink to {}, which cannot be read: {e}", target.display()),
        Err(_) => format!("cannot be read: {e}"),
    })?;
    check_metadata(&metadata)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot be read: {e}"))?;
    check_metadata(&file.metadata().map_err(|e| format!("cannot be read: {e}"))?)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot be read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_owned())
}

fn check_metadata(metadata: &std::fs::Metadata) -> Result<(), String> {
    if !metadata.is_file() {
        return Err("is not a regular file (a folder, FIFO, socket or device); only YAML files are read".to_owned());
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(too_large(metadata.len()));
    }
    Ok(())
}

fn too_large(bytes: u64) -> String {
    format!("is {bytes} bytes; a resource file may hold at most {} KiB", MAX_FILE_BYTES / 1024)
}

/// Validates already-parsed resources (Kubernetes mode): the same rules and the same
/// duplicate-name checks as files, for servers and workflows.
pub fn desired_set_of(
    resources: Vec<(McpServer, Source)>,
    workflows: Vec<Result<WorkflowDefinition, Rejected>>,
) -> DesiredSet {
    let mut snapshot = DesiredSet::default();
    for workflow in workflows {
        match workflow {
            Ok(definition) => snapshot.workflows.push(definition),
            Err(rejected) => snapshot.rejected_workflows.push(rejected),
        }
    }
    workflows::reject_duplicate_names(&mut snapshot);
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

fn reject_duplicate_names(snapshot: &mut DesiredSet) {
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
                    message: format!("{} is already defined in {first}", quoted(&name)),
                }],
            });
        } else {
            seen.insert(name, definition.source.clone());
            keep.push(definition);
        }
    }
    snapshot.definitions = keep;
}

/// Watches the folder: a change to its files (created, written, renamed, deleted; debounced) and
/// every `resync` tick send a new snapshot when it differs from the last one. Access events (the
/// watcher's own reads open and read every file) and metadata events (atime) are ignored, so an
/// idle folder is read only on the tick. `loader` continues from the first read (`app::run`).
/// The returned guard stops the OS watcher when dropped.
pub fn watch(
    loader: Loader,
    last: DesiredSet,
    resync: Duration,
    out: mpsc::UnboundedSender<DesiredSet>,
) -> notify::Result<notify::RecommendedWatcher> {
    let dir = servers_dir(loader.config_dir());
    let _ = std::fs::create_dir_all(&dir);
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|event| is_change(&event)) {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    // Workflows are optional: a workflows folder that cannot be made or watched is still read on
    // every resync tick.
    let workflows = workflows_dir(loader.config_dir());
    let _ = std::fs::create_dir_all(&workflows);
    if let Err(e) = watcher.watch(&workflows, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %workflows.display(), error = %e, "cannot watch the workflows folder; reading it on resync only");
    }
    tokio::spawn(async move {
        let mut loader = loader;
        let mut last = last;
        let mut ticker = tokio::time::interval(resync);
        ticker.tick().await;
        loop {
            let trigger = tokio::select! {
                changed = rx.recv() => {
                    if changed.is_none() { return; }
                    // Debounce: editors write in several steps.
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                    "change"
                }
                _ = ticker.tick() => "resync",
            };
            tracing::debug!(trigger, "reading the mcpservers folder");
            // Reading stats and opens files: keep it off the runtime's threads.
            let Ok((returned, next)) = tokio::task::spawn_blocking(move || {
                let next = loader.read();
                (loader, next)
            })
            .await
            else {
                return;
            };
            loader = returned;
            if next == last {
                continue;
            }
            if next.unreadable != last.unreadable {
                for unreadable in &next.unreadable {
                    tracing::warn!(
                        path = %unreadable.path.display(),
                        "{unreadable}; keeping what it held at the last successful read"
                    );
                }
            }
            last = next.clone();
            if out.send(next).is_err() {
                return;
            }
        }
    });
    Ok(watcher)
}

const DEBOUNCE: Duration = Duration::from_millis(150);

/// A change to what the folder holds: not an open, a read or a close without writing.
fn is_change(event: &notify::Event) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
    match event.kind {
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any | EventKind::Other => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
    }
}

#[cfg(test)]
mod tests;
