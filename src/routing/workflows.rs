//! Workflows as tools (docs/design/workflows.md §3): `workflow_<name>` with an input schema from
//! `args`, labels for `filter_tools`, and availability: a workflow whose referenced tools are not
//! in the catalog stays listed, its description ending `Unavailable: missing tools a, b`.

use std::sync::Arc;

use rmcp::model::Tool;
use serde_json::{Map, Value, json};

use super::catalog::{Catalog, WorkflowRoute};
use crate::crd::workflow::Workflow;

/// The exposed name of a workflow's tool.
pub fn tool_name(workflow: &str) -> String {
    format!("workflow_{workflow}")
}

/// Adds a tool per workflow to `catalog` (after the servers' tools are in it). A name an upstream
/// tool already has is a conflict, and the upstream tool keeps it.
pub fn add(catalog: &mut Catalog, workflows: &[Arc<Workflow>]) {
    let names: Vec<String> = workflows.iter().map(|w| tool_name(w.name())).collect();
    let exists = |tool: &str, catalog: &Catalog| {
        catalog.tool_routes.contains_key(tool)
            || names.iter().any(|n| n == tool)
            || tool.strip_prefix("action_").is_some_and(|w| names.contains(&tool_name(w)))
    };
    for (workflow, name) in workflows.iter().zip(&names) {
        if catalog.tool_routes.contains_key(name) {
            catalog.conflicts.push(name.clone());
            continue;
        }
        let missing: Vec<String> =
            workflow.spec.referenced_tools().into_iter().filter(|t| !exists(t, catalog)).collect();
        let tool = tool(workflow, name, &missing, catalog);
        let at = catalog.tools.partition_point(|t| t.name.as_ref() < name.as_str());
        catalog.tools.insert(at, tool);
        catalog.workflows.insert(name.clone(), WorkflowRoute { workflow: workflow.clone(), missing_tools: missing });
    }
}

fn tool(workflow: &Workflow, name: &str, missing: &[String], catalog: &Catalog) -> Tool {
    let mut description = workflow.spec.description.clone();
    if !missing.is_empty() {
        if !description.is_empty() {
            description.push(' ');
        }
        description.push_str(&format!("Unavailable: missing tools {}", missing.join(", ")));
    }
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (arg, definition) in &workflow.spec.args {
        let mut property = json!({"type": definition.arg_type});
        let mut text = definition.description.clone();
        if let Some(family) = instance_family(workflow, arg, catalog) {
            if !text.is_empty() {
                text.push(' ');
            }
            let example = catalog.family_members.get(&family).and_then(|m| m.iter().next().cloned());
            let example = example.unwrap_or_else(|| format!("cluster-a-mcp-{family}"));
            text.push_str(&format!("The full server name, e.g. {example}; the bare cluster name is accepted."));
            if let Some(members) = catalog.family_members.get(&family) {
                property["examples"] = json!(members);
            }
        }
        if !text.is_empty() {
            property["description"] = Value::String(text);
        }
        if let Some(default) = &definition.default {
            property["default"] = default.clone();
        }
        if definition.required {
            required.push(Value::String(arg.clone()));
        }
        properties.insert(arg.clone(), property);
    }
    let mut schema = Map::new();
    schema.insert("type".into(), "object".into());
    schema.insert("properties".into(), Value::Object(properties));
    schema.insert("required".into(), Value::Array(required));
    Tool::new(name.to_owned(), description, Arc::new(schema))
}

/// The family whose instance argument `arg` flows into: some step passes exactly
/// `{{ .input.<arg> }}` as a family tool's instance argument.
fn instance_family(workflow: &Workflow, arg: &str, catalog: &Catalog) -> Option<String> {
    let steps = workflow.spec.steps.iter();
    let calls = steps
        .flat_map(|s| {
            let own = s.tool.iter().map(move |t| (t.clone(), s.args.clone()));
            let subs = s.for_each.iter().flat_map(|f| &f.steps).chain(s.parallel.iter().flatten());
            own.chain(subs.map(|sub| (sub.tool.clone(), sub.args.clone()))).collect::<Vec<_>>()
        })
        .chain(workflow.spec.on_failure.iter().map(|s| (s.tool.clone(), s.args.clone())));
    for (tool, args) in calls {
        if let Some(super::catalog::ToolRoute::Family { family, instance_arg, .. }) = catalog.tool_routes.get(&tool)
            && let Some(Value::String(value)) = args.get(instance_arg)
            && is_input_reference(value, arg)
        {
            return Some(family.clone());
        }
    }
    None
}

fn is_input_reference(value: &str, arg: &str) -> bool {
    let inner = value.trim().strip_prefix("{{").and_then(|v| v.strip_suffix("}}")).map(str::trim);
    inner.and_then(|i| i.strip_prefix(".input.")) == Some(arg)
}
