//! A run's WorkflowExecution record (`crd/execution.rs`): built from the run's step records when
//! it ends, and saved by the `Recorder`, which caps its payloads, writes it whole (a file, or a
//! resource in Kubernetes mode) and prunes old records in the background (at most one pruning at a
//! time, at most once a minute), so a workflow call never waits for retention.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::Outcome;
use super::steps::{COMPLETED_AT, DURATION_MS, INPUT, Run, STARTED_AT, STORED_AS};
use crate::crd::execution::{
    self, ExecutionSpec, ExecutionStore, MAX_PAYLOAD_BYTES, Retention, StepRecord, WorkflowExecution,
};

/// How often retention runs at most: a record or two too many for a minute is fine.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// When a run started, by the wall clock (for the record) and the monotonic one (for its duration).
pub(super) struct Started {
    at: DateTime<Utc>,
    clock: Instant,
}

impl Started {
    pub(super) fn now() -> Self {
        Self { at: Utc::now(), clock: Instant::now() }
    }

    fn spec(&self, workflow: &str, status: &str, input: Value, error: Option<String>) -> ExecutionSpec {
        ExecutionSpec {
            workflow_name: workflow.to_owned(),
            status: status.to_owned(),
            started_at: self.at,
            completed_at: Some(Utc::now()),
            duration_ms: millis(self.clock.elapsed()),
            input: Some(input),
            result: None,
            error,
            steps: Vec::new(),
            truncated: false,
        }
    }

    /// The record of a run that has just begun: `inprogress`, with its input and no end yet.
    pub(super) fn in_progress(&self, run: &Run<'_>) -> WorkflowExecution {
        let mut spec = self.spec(&run.name, "inprogress", Value::Object(run.context.input.clone()), None);
        spec.completed_at = None;
        WorkflowExecution::new(run.id.clone(), spec)
    }

    /// The record of a run whose arguments were refused before any step ran.
    pub(super) fn refused(&self, id: String, workflow: &str, args: Value, error: &str) -> WorkflowExecution {
        WorkflowExecution::new(id, self.spec(workflow, "failed", args, Some(error.to_owned())))
    }

    /// The outcome of a run that got as far as its steps: `error` makes it failed.
    pub(super) fn finish(&self, run: &Run<'_>, body: Value, error: Option<String>) -> Outcome {
        let status = if error.is_some() { "failed" } else { "completed" };
        let is_error = error.is_some();
        let mut spec = self.spec(&run.name, status, Value::Object(run.context.input.clone()), error);
        spec.steps = run.records.iter().map(step_record).collect();
        spec.result = Some(body.clone());
        Outcome { body, is_error, execution: WorkflowExecution::new(run.id.clone(), spec) }
    }
}

fn step_record(record: &Map<String, Value>) -> StepRecord {
    let text = |key: &str| record.get(key).and_then(Value::as_str).map(str::to_owned);
    let time = |key: &str| record.get(key).and_then(|v| serde_json::from_value(v.clone()).ok());
    StepRecord {
        step_id: text("id").unwrap_or_default(),
        tool: text("tool").unwrap_or_default(),
        status: text("status").unwrap_or_default(),
        started_at: time(STARTED_AT),
        completed_at: time(COMPLETED_AT),
        duration_ms: record.get(DURATION_MS).and_then(Value::as_u64).unwrap_or(0),
        input: record.get(INPUT).cloned(),
        result: record.get("result").cloned(),
        error: text("error"),
        stored_as: text(STORED_AS),
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Saves execution records; shared by every run.
#[derive(Clone)]
pub struct Recorder {
    store: ExecutionStore,
    retention: Retention,
    /// When retention last started; `None` before the first record.
    last_prune: Arc<Mutex<Option<Instant>>>,
}

impl Recorder {
    pub fn new(store: ExecutionStore, retention: Retention) -> Self {
        Self { store, retention, last_prune: Arc::default() }
    }

    pub fn store(&self) -> &ExecutionStore {
        &self.store
    }

    /// Caps the record's payloads and writes it; then starts retention if it is due. A record
    /// that cannot be written is logged: the run's answer does not depend on it.
    pub async fn save(&self, mut record: WorkflowExecution) {
        let id = record.id().to_owned();
        let workflow = record.spec.workflow_name.clone();
        // Measuring a record means encoding it, up to megabytes: off the async threads.
        let capped = tokio::task::spawn_blocking(move || {
            execution::truncate(&mut record, MAX_PAYLOAD_BYTES);
            record
        })
        .await;
        match capped {
            Ok(record) => {
                if let Err(e) = self.store.write(record).await {
                    tracing::warn!(workflow, error = %e, "workflow execution not recorded");
                }
            }
            Err(e) => tracing::warn!(workflow, execution = id, error = %e, "workflow execution not recorded"),
        }
        self.prune_if_due();
    }

    fn prune_if_due(&self) {
        {
            let Ok(mut last) = self.last_prune.lock() else { return };
            if last.is_some_and(|at| at.elapsed() < PRUNE_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let (store, retention) = (self.store.clone(), self.retention);
        tokio::spawn(async move {
            match store.prune(SystemTime::now(), retention).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "old workflow execution records removed"),
                Err(e) => tracing::warn!(error = %e, "workflow execution retention failed"),
            }
        });
    }
}
