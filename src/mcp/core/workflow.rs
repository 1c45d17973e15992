//! `core_workflow_*`: workflow definitions from `DIR/workflows/`, their validation
//! (`crd/workflow/validate.rs`), and availability: a workflow is available when it is valid and
//! every tool it names is in the current catalog (or is a core tool or another workflow's tool).
//! Create, update and delete write the folder like `core_mcpserver_*` do, and record
//! `WorkflowCreated`/`WorkflowUpdated`/`WorkflowDeleted` (or `WorkflowValidationFailed`) events.

use std::path::PathBuf;

use rmcp::model::{CallToolResult, JsonObject};
use serde_json::{Value, json};

use super::mcpserver::write_atomically;
use super::{Core, error, json_result, string};
use crate::crd::ObjectMeta;
use crate::crd::files::{self, Source, WorkflowDefinition};
use crate::crd::workflow::{Workflow, WorkflowSpec};
use crate::mcp::GatewayServer;
use crate::supervisor::events::Event;

fn definitions(core: &Core) -> Vec<WorkflowDefinition> {
    core.dir.as_deref().map(|dir| files::load(dir).workflows).unwrap_or_default()
}

/// The tools `workflow` names that no one serves now.
fn missing_tools(gateway: &GatewayServer, workflows: &[WorkflowDefinition], workflow: &Workflow) -> Vec<String> {
    let snapshot = gateway.snapshot();
    let is_workflow = |tool: &str| {
        let name = tool.strip_prefix("workflow_").or_else(|| tool.strip_prefix("action_"));
        name.is_some_and(|n| workflows.iter().any(|w| w.name() == n))
    };
    workflow
        .spec
        .referenced_tools()
        .into_iter()
        .filter(|t| !snapshot.catalog.tool_routes.contains_key(t) && !super::is_core_tool(t) && !is_workflow(t))
        .collect()
}

fn summary(gateway: &GatewayServer, workflows: &[WorkflowDefinition], definition: &WorkflowDefinition) -> Value {
    let missing = missing_tools(gateway, workflows, &definition.workflow);
    let mut out = json!({
        "name": definition.name(),
        "description": definition.workflow.spec.description,
        "valid": definition.status.valid,
        "available": definition.status.valid && missing.is_empty(),
        "stepCount": definition.status.step_count,
    });
    if !missing.is_empty() {
        out["missing_tools"] = json!(missing);
    }
    if !definition.status.validation_errors.is_empty() {
        out["validationErrors"] = json!(definition.status.validation_errors);
    }
    out
}

pub(super) fn list(gateway: &GatewayServer, core: &Core) -> CallToolResult {
    let workflows = definitions(core);
    let listed: Vec<Value> = workflows.iter().map(|d| summary(gateway, &workflows, d)).collect();
    json_result(json!({"workflows": listed, "total": listed.len()}))
}

fn find<'a>(
    workflows: &'a [WorkflowDefinition],
    args: &JsonObject,
    tool: &str,
) -> Result<&'a WorkflowDefinition, CallToolResult> {
    let Some(name) = string(args, "name") else { return Err(error(format!("{tool} needs a \"name\" argument"))) };
    workflows.iter().find(|w| w.name() == name).ok_or_else(|| {
        let known: Vec<&str> = workflows.iter().map(WorkflowDefinition::name).collect();
        error(format!(
            "{tool}: no workflow named {name:?}; known: {}",
            if known.is_empty() { "none".into() } else { known.join(", ") }
        ))
    })
}

pub(super) fn get(gateway: &GatewayServer, core: &Core, args: &JsonObject) -> CallToolResult {
    let workflows = definitions(core);
    match find(&workflows, args, "core_workflow_get") {
        Ok(definition) => {
            let mut out = summary(gateway, &workflows, definition);
            out["spec"] = serde_json::to_value(&definition.workflow.spec).unwrap_or_default();
            out["status"] = serde_json::to_value(&definition.status).unwrap_or_default();
            json_result(out)
        }
        Err(refused) => refused,
    }
}

pub(super) fn available(gateway: &GatewayServer, core: &Core, args: &JsonObject) -> CallToolResult {
    let workflows = definitions(core);
    match find(&workflows, args, "core_workflow_available") {
        Ok(definition) => {
            let missing = missing_tools(gateway, &workflows, &definition.workflow);
            json_result(json!({
                "name": definition.name(),
                "available": definition.status.valid && missing.is_empty(),
                "missing_tools": missing,
            }))
        }
        Err(refused) => refused,
    }
}

/// The workflow the arguments describe, or every problem with it.
fn from_args(args: &JsonObject) -> Result<Workflow, Vec<String>> {
    let name = string(args, "name");
    let mut spec = args.clone();
    spec.remove("name");
    let spec = serde_json::from_value::<WorkflowSpec>(Value::Object(spec)).map_err(|e| {
        let mut problems: Vec<String> = name.is_none().then(|| "name: is required".to_owned()).into_iter().collect();
        problems.push(format!("arguments: {e}"));
        problems
    })?;
    let workflow = Workflow {
        api_version: crate::crd::API_VERSION.to_owned(),
        kind: "Workflow".to_owned(),
        metadata: ObjectMeta { name: name.clone().unwrap_or_default(), ..ObjectMeta::default() },
        spec,
        status: None,
    };
    let mut problems: Vec<String> = workflow.validate().iter().map(ToString::to_string).collect();
    if name.is_none() {
        problems.insert(0, "name: is required".to_owned());
    }
    if problems.is_empty() { Ok(workflow) } else { Err(problems) }
}

pub(super) fn validate(args: &JsonObject) -> CallToolResult {
    match from_args(args) {
        Ok(_) => json_result(json!({"valid": true, "errors": []})),
        Err(errors) => json_result(json!({"valid": false, "errors": errors})),
    }
}

fn file_of(core: &Core, name: &str) -> Option<PathBuf> {
    let dir = core.dir.as_deref()?;
    let desired = files::load(dir);
    let source = desired.workflows.iter().find(|w| w.name() == name).map(|w| w.source.clone()).or_else(|| {
        desired.rejected_workflows.iter().find(|r| r.name.as_deref() == Some(name)).map(|r| r.source.clone())
    });
    match source {
        Some(Source::File(path)) => Some(path),
        _ => None,
    }
}

fn event(core: &Core, name: &str, reason: &str, message: String, warning: bool) {
    core.events.record(Event::new("Workflow", name, "default", reason, message).warning(warning));
}

pub(super) fn put(core: &Core, args: &JsonObject, create: bool) -> CallToolResult {
    let tool = if create { "core_workflow_create" } else { "core_workflow_update" };
    let Some(dir) = core.dir.clone() else {
        return error(format!(
            "{tool} is not available in Kubernetes mode yet: apply the Workflow resource with kubectl"
        ));
    };
    let name = string(args, "name").unwrap_or_default();
    let existing = if name.is_empty() { None } else { file_of(core, &name) };
    match (create, &existing) {
        (true, Some(path)) => {
            return error(format!("{tool}: a workflow named {name:?} exists already ({})", path.display()));
        }
        (false, None) if !name.is_empty() => return error(format!("{tool}: no workflow named {name:?}")),
        _ => {}
    }
    let workflow = match from_args(args) {
        Ok(workflow) => workflow,
        Err(problems) => {
            if !name.is_empty() {
                event(core, &name, "WorkflowValidationFailed", problems.join("; "), true);
            }
            return error(format!("{tool}: invalid workflow:\n- {}", problems.join("\n- ")));
        }
    };
    let path = existing.unwrap_or_else(|| files::workflows_dir(&dir).join(format!("{name}.yaml")));
    if let Err(e) = write_atomically(&path, &workflow) {
        return error(format!("{tool}: cannot write {}: {e}", path.display()));
    }
    let (reason, verb) = if create { ("WorkflowCreated", "created") } else { ("WorkflowUpdated", "updated") };
    event(core, &name, reason, format!("workflow {name} {verb}"), false);
    json_result(json!({"path": path.display().to_string(), "workflow": workflow}))
}

pub(super) fn delete(core: &Core, args: &JsonObject) -> CallToolResult {
    if core.dir.is_none() {
        return error("core_workflow_delete is not available in Kubernetes mode yet".to_owned());
    }
    let Some(name) = string(args, "name") else {
        return error("core_workflow_delete needs a \"name\" argument".into());
    };
    let Some(path) = file_of(core, &name) else {
        return error(format!("core_workflow_delete: no workflow named {name:?}"));
    };
    if let Err(e) = std::fs::remove_file(&path) {
        return error(format!("core_workflow_delete: cannot remove {}: {e}", path.display()));
    }
    event(core, &name, "WorkflowDeleted", format!("workflow {name} deleted"), false);
    json_result(json!({"deleted": name, "path": path.display().to_string()}))
}
