//! `core_workflow_execution_list` and `core_workflow_execution_get`: the WorkflowExecution records
//! of `DIR/workflow_executions/`, or the resources in Kubernetes mode (`crd/execution.rs`), newest
//! first.
//!
//! **Who sees what:** an administrator sees every record; anyone else only the runs they started
//! (the record's `muster.giantswarm.io/subject-hash` annotation against the caller's own), since a
//! run's input and results are the caller's data. With sign-in off no record names a user, so
//! every caller sees every record, as every caller may run every workflow.

use rmcp::model::{CallToolResult, JsonObject};
use serde_json::{Value, json};
use sha2::Digest as _;

use super::{Core, error, json_result, string};
use crate::caller::Caller;
use crate::crd::execution::{SUBJECT_ANNOTATION, WorkflowExecution};

/// `limit` when none is given (Muster's), and the most one page may hold.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;

/// The annotation value that names the caller on its records: a hash of (issuer, subject).
pub(in crate::mcp) fn subject_of(caller: &Caller) -> Option<String> {
    caller.identity.as_ref().map(|identity| hex::encode(&sha2::Sha256::digest(identity.key().as_bytes())[..16]))
}

/// Whether `caller` may read `record`.
fn may_read(core: &Core, caller: &Caller, record: &WorkflowExecution) -> bool {
    core.is_admin(caller) || record.metadata.annotations.get(SUBJECT_ANNOTATION) == subject_of(caller).as_ref()
}

pub(super) async fn list(core: &Core, args: &JsonObject, caller: &Caller) -> CallToolResult {
    let limit = match count(args, "limit", DEFAULT_LIMIT) {
        Ok(limit) => limit.clamp(1, MAX_LIMIT),
        Err(refused) => return refused,
    };
    let offset = match count(args, "offset", 0) {
        Ok(offset) => offset,
        Err(refused) => return refused,
    };
    let workflow = string(args, "workflow_name");
    let status = string(args, "status");
    if let Some(status) = status.as_deref().filter(|s| !["inprogress", "completed", "failed"].contains(s)) {
        return error(format!(
            "core_workflow_execution_list: status {status:?} is not one of inprogress, completed, failed"
        ));
    }
    let records = match core.recorder.store().list().await {
        Ok((records, _unreadable)) => records,
        Err(e) => return error(format!("core_workflow_execution_list: {e}")),
    };
    let matching: Vec<&WorkflowExecution> = records
        .iter()
        .filter(|r| may_read(core, caller, r))
        .filter(|r| workflow.as_ref().is_none_or(|w| &r.spec.workflow_name == w))
        .filter(|r| status.as_ref().is_none_or(|s| &r.spec.status == s))
        .collect();
    let page: Vec<Value> = matching.iter().skip(offset).take(limit).map(|r| r.summary()).collect();
    json_result(json!({"executions": page, "total": matching.len(), "limit": limit, "offset": offset}))
}

pub(super) async fn get(core: &Core, args: &JsonObject, caller: &Caller) -> CallToolResult {
    const TOOL: &str = "core_workflow_execution_get";
    let Some(id) = string(args, "execution_id") else {
        return error(format!("{TOOL} needs an \"execution_id\" argument"));
    };
    let include_steps = match args.get("include_steps") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(include)) => *include,
        Some(_) => return error(format!("{TOOL}: include_steps must be true or false")),
    };
    let found = match core.recorder.store().get(&id).await {
        Ok(found) => found,
        Err(e) => return error(format!("{TOOL}: {e}")),
    };
    // Someone else's run is "not found", so ids cannot be probed.
    let Some(mut record) = found.filter(|r| may_read(core, caller, r)) else {
        return error(format!("{TOOL}: no workflow execution with id {id:?}"));
    };
    if let Some(step_id) = string(args, "step_id") {
        let steps = &record.spec.steps;
        let step = steps
            .iter()
            .find(|s| s.stored_as.as_deref() == Some(&step_id))
            .or_else(|| steps.iter().rev().find(|s| s.step_id == step_id));
        return match step {
            Some(step) => json_result(serde_json::to_value(step).unwrap_or_default()),
            None => {
                let known: Vec<&str> = steps.iter().map(|s| s.stored_as.as_deref().unwrap_or(&s.step_id)).collect();
                error(format!(
                    "{TOOL}: execution {id} has no step {step_id:?}; its steps: {}",
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                ))
            }
        };
    }
    if !include_steps {
        record.spec.steps.clear();
    }
    let mut out = serde_json::to_value(&record.spec).unwrap_or_default();
    out["id"] = json!(record.id());
    json_result(out)
}

/// A non-negative integer argument, or `default` when it is absent.
fn count(args: &JsonObject, key: &str, default: usize) -> Result<usize, CallToolResult> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(value) => value.as_u64().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| {
            error(format!("core_workflow_execution_list: {key} must be a whole number of at least 0, not {value}"))
        }),
    }
}
