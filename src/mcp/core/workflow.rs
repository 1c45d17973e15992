//! `core_workflow_*`: workflow definitions from `DIR/workflows/`, their validation
//! (`crd/workflow/validate.rs`), and availability: a workflow is available when it is valid and
//! every tool it names is in the current catalog (or is a core tool or another workflow's tool).
//! Create, update and delete write where the desired state lives (`crd::resources`: the folder or
//! Workflow resources) like `core_mcpserver_*` do; the supervisor publishes `WorkflowCreated`/
//! `WorkflowUpdated`/`WorkflowDeleted` once the watcher delivers the change
//! (`supervisor/workflows.rs`). Input refused before anything is written is recorded here, as
//! `WorkflowValidationFailed`.

use rmcp::model::{CallToolResult, JsonObject};
use serde_json::{Value, json};

use super::mcpserver::located;
use super::{Core, error, json_result, string};
use crate::crd::ObjectMeta;
use crate::crd::files::WorkflowDefinition;
use crate::crd::resources::Kind;
use crate::crd::workflow::{Workflow, WorkflowSpec};
use crate::mcp::GatewayServer;
use crate::supervisor::events::Event;

fn definitions(core: &Core) -> Vec<WorkflowDefinition> {
    core.resources.current().workflows.clone()
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

fn event(core: &Core, name: &str, reason: &str, message: String, warning: bool) {
    core.events.record(Event::new("Workflow", name, "default", reason, message).warning(warning));
}

pub(super) async fn put(core: &Core, args: &JsonObject, create: bool) -> CallToolResult {
    let tool = if create { "core_workflow_create" } else { "core_workflow_update" };
    let name = string(args, "name").unwrap_or_default();
    let existing = if name.is_empty() { None } else { core.resources.source_of(Kind::Workflow, &name) };
    match (create, &existing) {
        (true, Some(source)) => return error(format!("{tool}: a workflow named {name:?} exists already ({source})")),
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
    let resource = serde_json::to_value(&workflow).unwrap_or_default();
    let source = match core.resources.write(Kind::Workflow, &name, resource, existing.as_ref()).await {
        Ok(source) => source,
        Err(e) => return error(format!("{tool}: {e}")),
    };
    let mut out = json!({"workflow": workflow});
    located(&mut out, &source);
    json_result(out)
}

pub(super) async fn delete(core: &Core, args: &JsonObject) -> CallToolResult {
    let Some(name) = string(args, "name") else {
        return error("core_workflow_delete needs a \"name\" argument".into());
    };
    let Some(source) = core.resources.source_of(Kind::Workflow, &name) else {
        return error(format!("core_workflow_delete: no workflow named {name:?}"));
    };
    if let Err(e) = core.resources.delete(Kind::Workflow, &source).await {
        return error(format!("core_workflow_delete: {e}"));
    }
    let mut out = json!({"deleted": name});
    located(&mut out, &source);
    json_result(out)
}
