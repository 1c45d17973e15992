//! The WorkflowExecution record (`muster.giantswarm.io/v1alpha1`, `kind: WorkflowExecution`,
//! short name `wfe`, reference §2.3): one immutable record per run of a `workflow_<name>` tool,
//! its CRD (no status subresource), its payload cap (Muster's `payload_guard.go`), and where
//! records go: `ExecutionStore`, the folder `DIR/workflow_executions/<id>.json` (`FileStore`) or
//! WorkflowExecution resources (`execution/kubernetes.rs`), with retention by age and count.
//!
//! The stores are stateless: each call reads or writes the folder or the API. File records are
//! written whole (temporary file, then rename), so a reader never sees half a record; a record's
//! file time is its completion time, which retention reads instead of opening every file.

// KubeSchema expands a private copy of each type it derives for, which trips `unreachable_pub`.
#![allow(unreachable_pub, reason = "false positive from kube's CustomResource derive")]

mod kubernetes;

pub use kubernetes::KubernetesStore;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ObjectMeta;

pub const KIND: &str = "WorkflowExecution";
/// The annotation that names who ran a workflow (a hash of the subject; ours).
pub const SUBJECT_ANNOTATION: &str = "muster.giantswarm.io/subject-hash";
/// The most a record's JSON may hold before its payloads are cut (Muster: 256 KiB).
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// What replaces a payload that was cut, as Muster writes it.
pub const TRUNCATED: &str = "[truncated: payload exceeded retention size limit]";
/// Muster's retention: records older than 21 days go, and all but the newest 10,000.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(21 * 24 * 3600);
pub const DEFAULT_MAX_COUNT: usize = 10_000;

/// One run of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowExecution {
    pub api_version: String,
    pub kind: String,
    /// `name` is the execution id (a v4 UUID).
    pub metadata: ObjectMeta,
    pub spec: ExecutionSpec,
}

// Muster's `WorkflowExecutionSpec`; empty fields are left out, as Go's `omitempty` does. `kube`
// derives `WorkflowExecutionResource` and its CRD from it (`deploy/crds/workflowexecution.yaml`).
/// One run of a workflow: its input, result or error, and its steps.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "muster.giantswarm.io",
    version = "v1alpha1",
    kind = "WorkflowExecution",
    root = "WorkflowExecutionResource",
    namespaced,
    shortname = "wfe",
    printcolumn(name = "Workflow", type_ = "string", json_path = ".spec.workflowName"),
    printcolumn(name = "Status", type_ = "string", json_path = ".spec.status"),
    printcolumn(name = "Duration(ms)", type_ = "integer", json_path = ".spec.durationMs"),
    printcolumn(name = "Started", type_ = "date", json_path = ".spec.startedAt")
)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionSpec {
    pub workflow_name: String,
    /// `inprogress`, `completed` or `failed`.
    #[schemars(extend("enum" = ["inprogress", "completed", "failed"]))]
    pub status: String,
    #[schemars(schema_with = "date_time")]
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time")]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_value")]
    pub input: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_value")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// One step of a run (a `forEach` body step once per item, a `parallel` sub-step, an `onFailure` step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    pub step_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tool: String,
    /// `completed`, `failed` or `skipped`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time")]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_value")]
    pub input: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_value")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The key of `.results` the result is kept under (`<id>_<i>` in a `forEach` body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_as: Option<String>,
}

/// An RFC 3339 time.
fn date_time(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "format": "date-time" })
}

/// Any JSON value (inputs and results).
fn any_value(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// The CustomResourceDefinition as YAML (`muster print-crd workflow-execution`,
/// `deploy/crds/workflowexecution.yaml`).
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt as _;
    let body = serde_saphyr::to_string(&WorkflowExecutionResource::crd()).unwrap_or_default();
    format!(
        "# Generated by `muster print-crd workflow-execution` from src/crd/execution.rs. Do not edit: a test fails when it is stale.\n{body}"
    )
}

impl WorkflowExecution {
    pub fn new(id: String, spec: ExecutionSpec) -> Self {
        Self {
            api_version: super::API_VERSION.to_owned(),
            kind: KIND.to_owned(),
            metadata: ObjectMeta { name: id, ..ObjectMeta::default() },
            spec,
        }
    }

    pub fn id(&self) -> &str {
        &self.metadata.name
    }

    /// The summary `core_workflow_execution_list` shows.
    pub fn summary(&self) -> Value {
        let s = &self.spec;
        let mut out = json!({
            "id": self.id(), "workflow_name": s.workflow_name, "status": s.status,
            "started_at": s.started_at, "duration_ms": s.duration_ms, "steps": s.steps.len(),
        });
        if let Some(completed) = s.completed_at {
            out["completed_at"] = json!(completed);
        }
        if let Some(error) = &s.error {
            out["error"] = json!(first_line(error));
        }
        out
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.len() <= 200 { line.to_owned() } else { format!("{}…", &line[..char_boundary(line, 200)]) }
}

/// The largest index at most `at` that starts a character (`str::floor_char_boundary`, newer than our MSRV).
fn char_boundary(text: &str, at: usize) -> usize {
    (0..=at.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0)
}

/// Muster's payload guard: when the record's JSON is over `limit`, every `input` over `limit / 8`
/// becomes `{"_truncated": TRUNCATED}` and every `result` over it becomes `TRUNCATED`, and
/// `truncated` is set. Ours goes further where Muster would write an oversized record anyway:
/// errors are cut to `limit / 8`, then step results are dropped oldest first until it fits.
pub fn truncate(record: &mut WorkflowExecution, limit: usize) {
    if size(record) <= limit {
        return;
    }
    let part = limit / 8;
    let spec = &mut record.spec;
    spec.truncated = true;
    cut_input(&mut spec.input, part);
    cut_result(&mut spec.result, part);
    cut_error(&mut spec.error, part);
    for step in &mut spec.steps {
        cut_input(&mut step.input, part);
        cut_result(&mut step.result, part);
        cut_error(&mut step.error, part);
    }
    for i in 0..record.spec.steps.len() {
        if size(record) <= limit {
            return;
        }
        if record.spec.steps[i].result.is_some() {
            record.spec.steps[i].result = Some(Value::String(TRUNCATED.to_owned()));
        }
    }
}

fn size(record: &WorkflowExecution) -> usize {
    serde_json::to_vec(record).map_or(usize::MAX, |bytes| bytes.len())
}

fn json_len(value: &Value) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len())
}

fn cut_input(input: &mut Option<Value>, part: usize) {
    if input.as_ref().is_some_and(|v| json_len(v) > part) {
        *input = Some(json!({"_truncated": TRUNCATED}));
    }
}

fn cut_result(result: &mut Option<Value>, part: usize) {
    if result.as_ref().is_some_and(|v| json_len(v) > part) {
        *result = Some(Value::String(TRUNCATED.to_owned()));
    }
}

fn cut_error(error: &mut Option<String>, part: usize) {
    if let Some(text) = error
        && text.len() > part
    {
        let keep = char_boundary(text, part.saturating_sub(TRUNCATED.len() + 1));
        *text = format!("{} {TRUNCATED}", &text[..keep]);
    }
}

/// How long and how many records are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Duration,
    pub max_count: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Self { max_age: DEFAULT_MAX_AGE, max_count: DEFAULT_MAX_COUNT }
    }
}

/// Where execution records go: the folder (filesystem mode) or the API (Kubernetes mode). The
/// same calls for both; the folder's are run off the async threads.
#[derive(Clone)]
pub enum ExecutionStore {
    Files(FileStore),
    Kubernetes(Box<KubernetesStore>),
}

impl ExecutionStore {
    /// Writes `record` whole (its payloads already capped by `truncate`).
    pub async fn write(&self, record: WorkflowExecution) -> Result<(), Error> {
        match self {
            Self::Files(store) => blocking(store, move |store| store.write(&record)).await,
            Self::Kubernetes(store) => store.write(&record).await,
        }
    }

    /// The record with this id, or `None`.
    pub async fn get(&self, id: &str) -> Result<Option<WorkflowExecution>, Error> {
        match self {
            Self::Files(store) => {
                let id = id.to_owned();
                blocking(store, move |store| store.get(&id)).await
            }
            Self::Kubernetes(store) => store.get(id).await,
        }
    }

    /// Every readable record, newest first, and the unreadable ones in words.
    pub async fn list(&self) -> Result<(Vec<WorkflowExecution>, Vec<String>), Error> {
        match self {
            Self::Files(store) => blocking(store, FileStore::list).await,
            Self::Kubernetes(store) => store.list().await,
        }
    }

    /// Deletes records past `retention`; returns how many went.
    pub async fn prune(&self, now: SystemTime, retention: Retention) -> Result<usize, Error> {
        match self {
            Self::Files(store) => blocking(store, move |store| store.prune(now, retention)).await,
            Self::Kubernetes(store) => store.prune(now, retention).await,
        }
    }
}

/// Runs a folder operation on the blocking pool.
async fn blocking<T: Send + 'static>(
    store: &FileStore,
    work: impl FnOnce(&FileStore) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let store = store.clone();
    let dir = store.dir.clone();
    tokio::task::spawn_blocking(move || work(&store))
        .await
        .unwrap_or_else(|_| Err(Error::List { dir, source: std::io::Error::other("the folder operation stopped") }))
}

/// Execution records in `DIR/workflow_executions/` (filesystem mode).
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

/// A failure of the store, in words that name the record or the folder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{id:?} is not an execution id (letters, digits and dashes)")]
    BadId { id: String },
    #[error("execution {id}: {reason}")]
    Unreadable { id: String, reason: String },
    #[error("writing execution {id} to {}", dir.display())]
    Write {
        id: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {}", dir.display())]
    List {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The Kubernetes API refused or failed an operation on WorkflowExecution resources.
    #[error("{action} WorkflowExecution resources in namespace {namespace}: {reason}")]
    Api { action: &'static str, namespace: String, reason: String },
}

impl FileStore {
    pub fn new(config_dir: &Path) -> Self {
        Self { dir: config_dir.join("workflow_executions") }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `record` whole: a temporary file beside it, then a rename.
    pub fn write(&self, record: &WorkflowExecution) -> Result<(), Error> {
        let id = record.id().to_owned();
        check_id(&id)?;
        let fail = |source| Error::Write { id: id.clone(), dir: self.dir.clone(), source };
        let json = serde_json::to_vec_pretty(record).map_err(|e| fail(std::io::Error::other(e)))?;
        super::resources::replace_file(&self.dir.join(format!("{id}.json")), &json).map_err(fail)
    }

    /// The record with this id, or `None`.
    pub fn get(&self, id: &str) -> Result<Option<WorkflowExecution>, Error> {
        check_id(id)?;
        let path = self.dir.join(format!("{id}.json"));
        if !path.exists() {
            return Ok(None);
        }
        read(&path, id).map(Some)
    }

    /// Every readable record, newest first. Unreadable files are skipped and named in the second list.
    pub fn list(&self) -> Result<(Vec<WorkflowExecution>, Vec<String>), Error> {
        let mut records = Vec::new();
        let mut unreadable = Vec::new();
        for (path, _) in self.files()? {
            let id = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            match read(&path, &id) {
                Ok(record) => records.push(record),
                Err(e) => unreadable.push(e.to_string()),
            }
        }
        records.sort_by(|a, b| b.spec.started_at.cmp(&a.spec.started_at).then_with(|| a.id().cmp(b.id())));
        Ok((records, unreadable))
    }

    /// Deletes records written before `now - max_age`, then all but the newest `max_count`;
    /// returns how many went.
    pub fn prune(&self, now: SystemTime, retention: Retention) -> Result<usize, Error> {
        let mut files = self.files()?;
        files.sort_by_key(|(_, written)| std::cmp::Reverse(*written));
        let oldest_kept = now.checked_sub(retention.max_age).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut removed = 0;
        for (i, (path, written)) in files.iter().enumerate() {
            if (i >= retention.max_count || *written < oldest_kept) && std::fs::remove_file(path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The record files with their modification time (when the record was written).
    fn files(&self) -> Result<Vec<(PathBuf, SystemTime)>, Error> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(Error::List { dir: self.dir.clone(), source }),
        };
        let mut files = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let is_record = path.extension().is_some_and(|e| e == "json")
                && path.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.'));
            if !is_record {
                continue;
            }
            if let Ok(metadata) = entry.metadata()
                && metadata.is_file()
            {
                files.push((path, metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
            }
        }
        Ok(files)
    }
}

fn read(path: &Path, id: &str) -> Result<WorkflowExecution, Error> {
    let unreadable = |reason: String| Error::Unreadable { id: id.to_owned(), reason };
    let text = super::files::read_file(path).map_err(unreadable)?;
    serde_json::from_str(&text).map_err(|e| unreadable(format!("is not a WorkflowExecution record: {e}")))
}

/// Ids are UUIDs; anything else could name a path outside the folder.
fn check_id(id: &str) -> Result<(), Error> {
    let fits = !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if fits { Ok(()) } else { Err(Error::BadId { id: id.to_owned() }) }
}

#[cfg(test)]
mod tests;
