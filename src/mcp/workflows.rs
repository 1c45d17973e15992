//! Calling a `workflow_<name>` tool: `workflow::run` with a `Dispatch` that sends each step
//! through `GatewayServer::dispatch`, the agent's own path (the caller's identity, so token
//! exchange and per-user sessions apply; family instances resolve as in a direct call). The run
//! ends at its deadline or on the agent's cancellation (`workflow::run`). Its execution record is
//! saved as `inprogress` when the run begins (in the background) and replaced by the final one
//! before the answer goes out. Each run puts `WorkflowExecutionStarted` and then
//! `WorkflowExecutionCompleted` or `WorkflowExecutionFailed` (Muster's reasons) in the event ring. An agent that sent a `progressToken` hears
//! `notifications/progress` after each top-level step (steps done of the step count, the step
//! named); the steps' own calls carry no token, so their upstream progress (another scale) stays out.

use futures::future::BoxFuture;
use rmcp::model::{CallToolResult, ContentBlock, ProgressNotification, ProgressNotificationParam, ServerNotification};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::GatewayServer;
use crate::backend::UpstreamResult;
use crate::caller::Caller;
use crate::crd::execution::SUBJECT_ANNOTATION;
use crate::routing::catalog::WorkflowRoute;
use crate::supervisor::events::Event;
use crate::workflow::{self, CallResult, Dispatch, Limits};

/// How deep workflows may call workflows (`workflow nesting deeper than 8`).
const MAX_DEPTH: usize = 8;

tokio::task_local! {
    /// How many workflows enclose the current call in this request's task.
    static DEPTH: usize;
}

/// The workflow a tool name names: `workflow_<name>`, or Muster's `action_<name>` alias.
pub(super) fn route<'a>(catalog: &'a crate::routing::catalog::Catalog, name: &str) -> Option<&'a WorkflowRoute> {
    let name = match name.strip_prefix("action_") {
        Some(workflow) => crate::routing::workflows::tool_name(workflow),
        None => name.to_owned(),
    };
    catalog.workflows.get(&name)
}

/// Runs the workflow for `caller`; its failures are tool results with `isError`.
pub(super) async fn call(
    server: &GatewayServer,
    route: &WorkflowRoute,
    arguments: Option<rmcp::model::JsonObject>,
    caller: &Caller,
) -> UpstreamResult {
    let name = route.workflow.name();
    if !route.missing_tools.is_empty() {
        return failure(format!("workflow {name} is unavailable: missing tools {}", route.missing_tools.join(", ")));
    }
    let depth = DEPTH.try_with(|d| *d).unwrap_or(0);
    if depth >= MAX_DEPTH {
        return failure(format!("workflow nesting deeper than {MAX_DEPTH} at {name}"));
    }
    let core = server.core.as_deref();
    let namespace = route.workflow.metadata.namespace.as_deref().unwrap_or("default");
    let event = |reason, message| Event::new("Workflow", name, namespace, reason, message);
    if let Some(core) = core {
        core.events().record(event("WorkflowExecutionStarted", format!("workflow {name} started")));
    }
    let steps = Steps { server, caller, in_progress: std::sync::Mutex::new(None) };
    let args = arguments.map_or(Value::Null, Value::Object);
    let run = workflow::run(&route.workflow, args, &steps, &caller.ct, Limits::default());
    let mut outcome = DEPTH.scope(depth + 1, run).await;
    if let Some(core) = core {
        let (id, spec) = (outcome.execution.id(), &outcome.execution.spec);
        let ended = match &spec.error {
            Some(error) => {
                event("WorkflowExecutionFailed", format!("execution {id} failed: {}", first_line(error))).warning(true)
            }
            None => event("WorkflowExecutionCompleted", format!("execution {id} completed in {} ms", spec.duration_ms)),
        };
        core.events().record(ended);
        if let Some(subject) = super::core::subject_of(caller) {
            outcome.execution.metadata.annotations.insert(SUBJECT_ANNOTATION.to_owned(), subject);
        }
        // The final record replaces the `inprogress` one, so that one must have landed first.
        let in_progress = steps.in_progress.lock().ok().and_then(|mut saving| saving.take());
        if let Some(saving) = in_progress {
            let _ = saving.await;
        }
        core.recorder().save(outcome.execution.clone()).await;
    }
    let text = match &outcome.body {
        Value::String(s) => s.clone(),
        body => body.to_string(),
    };
    let mut result = if outcome.is_error {
        CallToolResult::error(vec![ContentBlock::text(text)])
    } else {
        CallToolResult::success(vec![ContentBlock::text(text)])
    };
    if let Value::Object(body) = outcome.body {
        result.structured_content = Some(Value::Object(body));
    }
    result.into()
}

/// An event's message holds one line of at most 500 bytes of an error.
fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or_default();
    let end = (0..=line.len().min(500)).rev().find(|&i| line.is_char_boundary(i)).unwrap_or(0);
    &line[..end]
}

fn failure(message: String) -> UpstreamResult {
    CallToolResult::error(vec![ContentBlock::text(message)]).into()
}

/// The steps' way to tools: the gateway's dispatch, as the caller.
struct Steps<'a> {
    server: &'a GatewayServer,
    caller: &'a Caller,
    /// The saving of the run's `inprogress` record, in the background so no step waits for it.
    in_progress: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Dispatch for Steps<'_> {
    fn call<'a>(
        &'a self,
        tool: &'a str,
        args: Value,
        stop: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<CallResult, String>> {
        Box::pin(async move {
            let arguments = match args {
                Value::Object(map) => Some(map),
                _ => None,
            };
            // The agent's identity and reply path, with the run's token: the run's deadline and
            // the agent's cancellation reach the upstream; onFailure runs on after the agent left.
            let caller = Caller { ct: stop.clone(), progress_token: None, ..self.caller.clone() };
            let answer =
                self.server.dispatch(tool, arguments, super::rounds::Resume::default(), &caller).await.map_err(
                    |e| {
                        let error = super::error::tool_error(&e);
                        let mut text = first_text(&error).unwrap_or_else(|| e.to_string());
                        let valid = error.structured_content.as_ref().and_then(|s| s.get("validValues"));
                        if let Some(Value::Array(valid)) = valid {
                            let names: Vec<&str> = valid.iter().filter_map(Value::as_str).collect();
                            text.push_str(&format!(" (validValues: {})", names.join(", ")));
                        }
                        text
                    },
                )?;
            let is_error = answer.is_tool_error();
            let result = match answer.into_result() {
                Ok(rmcp::model::ServerResult::CallToolResult(result)) => result,
                _ => return Err(format!("tool {tool} did not answer with a tool result")),
            };
            Ok(CallResult { value: value_of(&result), is_error })
        })
    }

    fn run_started(&self, mut record: crate::crd::execution::WorkflowExecution) {
        let Some(core) = self.server.core.clone() else { return };
        if let Some(subject) = super::core::subject_of(self.caller) {
            record.metadata.annotations.insert(SUBJECT_ANNOTATION.to_owned(), subject);
        }
        let saving = tokio::spawn(async move { core.recorder().save(record).await });
        if let Ok(mut slot) = self.in_progress.lock() {
            *slot = Some(saving);
        }
    }

    fn step_ended(&self, done: usize, total: usize, message: String) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(token) = self.caller.progress_token.clone() else { return };
            let progress =
                ProgressNotificationParam::new(token, count(done)).with_total(count(total)).with_message(message);
            let notification = ServerNotification::ProgressNotification(ProgressNotification::new(progress));
            self.caller.reply_path.notify(notification).await;
        })
    }
}

/// A step count as MCP's progress number (exact far beyond any workflow's length).
fn count(n: usize) -> f64 {
    u32::try_from(n).map_or(f64::from(u32::MAX), f64::from)
}

/// Muster's result capture: the structured content, else the first text parsed as JSON, else
/// the text itself.
fn value_of(result: &CallToolResult) -> Value {
    if let Some(structured) = &result.structured_content {
        return structured.clone();
    }
    let Some(text) = first_text(result) else { return Value::Null };
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

fn first_text(result: &CallToolResult) -> Option<String> {
    result.content.iter().find_map(|c| c.as_text().map(|t| t.text.clone()))
}
