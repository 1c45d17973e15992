//! Running a workflow (docs/design/workflows.md §4): steps in order, `forEach`, `parallel` with a
//! bound and snapshot results, conditions, `allowFailure`, `onFailure`, typed `spec.output`, a
//! deadline, and Muster's default response.
//!
//! Steps call tools through a [`Dispatch`], which `mcp` implements with the agent's own call path
//! (identity, token exchange, per-user sessions, family resolution); this module never names
//! `mcp`. `steps.rs` runs one step of each kind and evaluates conditions.
//!
//! **Architecture Invariant:** no runtime state outside one run; uses `crd` types and `template`.

mod record;
mod steps;

pub use record::Recorder;

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::crd::execution::WorkflowExecution;
use crate::crd::workflow::{Workflow, WorkflowStep};
use crate::template;

/// Every run's deadline. Muster has none (only each call's own); ours bounds a run whose step
/// hangs, and names that step.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long `onFailure` may take at least, even after the deadline or the agent's cancellation.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long stopped steps get to hear their cancellation before they are dropped.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The default number of `parallel` sub-steps in flight at once (`aggregator.workflows.maxParallel`).
pub const DEFAULT_MAX_PARALLEL: usize = 8;

/// What a tool call gave: its value (the parsed JSON of the first text, or structured content)
/// and whether the tool said it failed.
#[derive(Debug, Clone, PartialEq)]
pub struct CallResult {
    pub value: Value,
    pub is_error: bool,
}

/// How steps call tools: the agent's path, bound to the caller who started the run.
pub trait Dispatch: Send + Sync {
    /// Calls `tool` with `args` under `stop`: when it is cancelled the call is cancelled (upstream
    /// too) and ends. `Err` is a call that did not reach a result, in words.
    fn call<'a>(
        &'a self,
        tool: &'a str,
        args: Value,
        stop: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<CallResult, String>>;

    /// A top-level step has ended: `done` of the workflow's `total` steps, and a message naming
    /// the step and how it ended. `mcp` sends it to the agent as `notifications/progress` when the
    /// agent asked for progress; by default nothing happens.
    fn step_ended(&self, done: usize, total: usize, message: String) -> BoxFuture<'_, ()> {
        let _ = (done, total, message);
        Box::pin(async {})
    }

    /// The run has begun (its arguments are valid): `record` is its execution record with status
    /// `inprogress`, for `mcp` to save before the final one replaces it. By default nothing happens.
    fn run_started(&self, record: WorkflowExecution) {
        let _ = record;
    }
}

/// Limits of one run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub max_parallel: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { timeout: DEFAULT_TIMEOUT, max_parallel: DEFAULT_MAX_PARALLEL }
    }
}

/// The finished run: the response body, whether it is an error result, and its execution record.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub body: Value,
    pub is_error: bool,
    pub execution: WorkflowExecution,
}

/// The state templates see while a run goes on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Context {
    input: Map<String, Value>,
    vars: Map<String, Value>,
    results: Map<String, Value>,
}

impl Context {
    fn data(&self) -> template::Data {
        let results = Value::Object(self.results.clone());
        template::Data::new(json!({
            "input": self.input, "vars": self.vars, "results": results, "context": results,
        }))
    }
}

/// Runs `workflow` with the agent's `args` (checked and defaulted first), until the steps end,
/// the deadline passes or `cancel` (the agent's cancellation) fires. A stopped run cancels its
/// calls in flight, then runs `onFailure` under a token of its own (the agent has gone, the
/// cleanup has not), within `CLEANUP_TIMEOUT` or what is left of the deadline if that is more.
pub async fn run(
    workflow: &Workflow,
    args: Value,
    dispatch: &dyn Dispatch,
    cancel: &CancellationToken,
    limits: Limits,
) -> Outcome {
    let name = workflow.name().to_owned();
    let started = record::Started::now();
    let input = match check_args(workflow, args.clone()) {
        Ok(input) => input,
        Err(message) => {
            let message = format!("workflow {name}: {message}");
            let execution = started.refused(execution_id(), &name, args, &message);
            return Outcome { body: Value::String(message), is_error: true, execution };
        }
    };
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let mut run = steps::Run::new(name.clone(), dispatch, limits.max_parallel, input);
    dispatch.run_started(started.in_progress(&run));
    run.stop = cancel.child_token();
    let current = run.current.clone();
    let step = || current.lock().map(|c| c.clone()).unwrap_or_default();
    let stop = run.stop.clone();
    let stopped = match bounded(run.steps(&workflow.spec.steps), deadline, cancel, &stop).await {
        Bounded::Done(stopped) => stopped,
        Bounded::Deadline => {
            Some(format!("workflow {name} exceeded its deadline of {:?} during step {}", limits.timeout, step()))
        }
        Bounded::Cancelled => Some(format!("workflow {name}: cancelled by the caller during step {}", step())),
    };
    if let Some(error) = stopped {
        let stop = CancellationToken::new();
        run.stop = stop.clone();
        let now = tokio::time::Instant::now();
        let cleanup = now + CLEANUP_TIMEOUT.max(deadline.saturating_duration_since(now));
        let on_failure = run.on_failure(&workflow.spec.on_failure);
        let _ = bounded(on_failure, cleanup, &CancellationToken::new(), &stop).await;
        let mut body = run.response(&workflow.spec.steps, "failed");
        body["error"] = Value::String(error.clone());
        return started.finish(&run, body, Some(error));
    }
    if let Some(output) = &workflow.spec.output {
        let data = run.context.data();
        return match template::resolve(&Value::Object(output.clone()), &data, "output") {
            Ok(body) => started.finish(&run, body, None),
            Err(error) => {
                let mut body = run.response(&workflow.spec.steps, "failed");
                let error = format!("workflow {name}: spec.{error}");
                body["output_error"] = Value::String(error.clone());
                started.finish(&run, body, Some(error))
            }
        };
    }
    started.finish(&run, run.response(&workflow.spec.steps, "completed"), None)
}

/// How a bounded piece of a run ended.
enum Bounded<T> {
    Done(T),
    Deadline,
    Cancelled,
}

/// Runs `work` until it ends, `deadline` passes or `cancel` fires. On a stop it cancels `stop`
/// (the calls in flight) and gives `work` `STOP_GRACE` to wind down, so the upstream hears the
/// cancellation; a call that ignores it is dropped.
async fn bounded<T>(
    work: impl Future<Output = T>,
    deadline: tokio::time::Instant,
    cancel: &CancellationToken,
    stop: &CancellationToken,
) -> Bounded<T> {
    let mut work = std::pin::pin!(work);
    // The stops first: a call that failed because the run was cancelled (its token is a child of
    // `cancel`) ends `work` at the same moment, and the run's error must name the cancellation.
    let ended = tokio::select! {
        biased;
        () = cancel.cancelled() => Bounded::Cancelled,
        () = tokio::time::sleep_until(deadline) => Bounded::Deadline,
        done = &mut work => return Bounded::Done(done),
    };
    stop.cancel();
    let _ = tokio::time::timeout(STOP_GRACE, &mut work).await;
    ended
}

/// Muster's argument check (`validation.go`): required arguments, types, defaults.
fn check_args(workflow: &Workflow, args: Value) -> Result<Map<String, Value>, String> {
    let mut input = match args {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        _ => return Err("arguments must be an object".into()),
    };
    input.remove("_debug");
    for (key, definition) in &workflow.spec.args {
        match input.get(key) {
            None | Some(Value::Null) => match &definition.default {
                Some(default) => {
                    input.insert(key.clone(), default.clone());
                }
                None if definition.required => return Err(format!("required field '{key}' is missing")),
                None => {}
            },
            Some(value) => {
                let fits = match definition.arg_type.as_str() {
                    "string" => value.is_string(),
                    "integer" | "number" => value.is_number(),
                    "boolean" => value.is_boolean(),
                    "object" => value.is_object(),
                    "array" => value.is_array(),
                    _ => true,
                };
                if !fits {
                    return Err(format!("field '{key}' has wrong type, expected {}", definition.arg_type));
                }
            }
        }
    }
    Ok(input)
}

/// Whether a top-level step's result is part of the response (`output`, or the deprecated `store`).
fn is_output(step: &WorkflowStep) -> bool {
    step.output.unwrap_or(step.store)
}

/// A random v4 UUID, as Muster names executions.
fn execution_id() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

#[cfg(test)]
mod tests;
