//! The resource verbs (`muster list|get|create|start|stop|restart|check|events`) as thin MCP
//! clients: each calls one `core_*` tool (or a meta-tool) of a running muster over `client.rs` and
//! prints its answer (`output.rs`). Exit codes are Muster's: 0 ok, 1 error (also a tool result
//! with `isError`, an unknown type, or `check` finding the target unavailable), 2 sign-in
//! required, 3 sign-in failed.

use std::path::Path;

use anyhow::bail;
use serde_json::{Map, Value, json};

use super::client::{call, connect, exit_code};
use super::output::{Format, render, render_with_list};

/// The resource a verb names (singular or plural, as Muster accepts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    McpServer,
    Service,
    Workflow,
    WorkflowExecution,
    Tool,
    Resource,
    Prompt,
}

impl Kind {
    pub(super) fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(match text.to_ascii_lowercase().trim_end_matches('s') {
            "mcpserver" => Self::McpServer,
            "service" => Self::Service,
            "workflow" | "wf" => Self::Workflow,
            "workflow-execution" | "workflowexecution" | "wfe" => Self::WorkflowExecution,
            "tool" => Self::Tool,
            "resource" => Self::Resource,
            "prompt" => Self::Prompt,
            _ => bail!(
                "unknown resource type {text:?}: use mcpserver, service, workflow, workflow-execution, tool, resource or prompt"
            ),
        })
    }
}

/// One tool call and how to show its answer.
pub(super) struct Request {
    pub(super) tool: &'static str,
    pub(super) arguments: Value,
    pub(super) rows: Option<&'static str>,
    pub(super) columns: &'static [&'static str],
    pub(super) wide: &'static [&'static str],
    /// A single object's list shown as a table below its fields (`steps` of an execution).
    pub(super) nested: Option<(&'static str, &'static [&'static str])>,
}

const SERVER_COLUMNS: &[&str] = &["name", "type", "state", "health", "toolCount"];
const SERVER_WIDE: &[&str] = &["autoStart", "lastError"];
const SERVICE_COLUMNS: &[&str] = &["name", "state", "health", "toolCount"];

/// What `muster list` was given besides the kind.
#[derive(Debug, Default)]
pub(super) struct ListFlags {
    pub(super) all: bool,
    pub(super) verbose: bool,
    /// workflow-execution: only runs of this workflow, with this status.
    pub(super) workflow: Option<String>,
    pub(super) status: Option<String>,
    pub(super) limit: Option<u32>,
}

const STEP_COLUMNS: &[&str] = &["stepId", "storedAs", "tool", "status", "durationMs", "error"];

pub(super) fn list(kind: Kind, flags: ListFlags) -> Request {
    let ListFlags { all, verbose, .. } = flags;
    match kind {
        Kind::WorkflowExecution => {
            let mut arguments = serde_json::Map::new();
            for (key, value) in [("workflow_name", flags.workflow), ("status", flags.status)] {
                if let Some(value) = value {
                    arguments.insert(key.to_owned(), value.into());
                }
            }
            if let Some(limit) = flags.limit {
                arguments.insert("limit".to_owned(), limit.into());
            }
            Request {
                tool: "core_workflow_execution_list",
                arguments: Value::Object(arguments),
                rows: Some("executions"),
                columns: &["id", "workflow_name", "status", "started_at", "duration_ms"],
                wide: &["steps", "error"],
                nested: None,
            }
        }
        Kind::McpServer => Request {
            tool: "core_mcpserver_list",
            arguments: json!({"showAll": all, "verbose": verbose}),
            rows: Some("mcpServers"),
            columns: SERVER_COLUMNS,
            wide: SERVER_WIDE,
            nested: None,
        },
        Kind::Service => Request {
            tool: "core_service_list",
            arguments: json!({}),
            rows: Some("services"),
            columns: SERVICE_COLUMNS,
            wide: &["lastError"],
            nested: None,
        },
        Kind::Workflow => Request {
            tool: "core_workflow_list",
            arguments: json!({}),
            rows: Some("workflows"),
            columns: &["name", "valid", "available", "stepCount"],
            wide: &["description", "missing_tools"],
            nested: None,
        },
        Kind::Tool => Request {
            tool: "list_tools",
            arguments: json!({"limit": 500}),
            rows: Some("tools"),
            columns: &["name", "summary"],
            wide: &[],
            nested: None,
        },
        Kind::Resource => Request {
            tool: "list_resources",
            arguments: json!({}),
            rows: Some("resources"),
            columns: &["uri", "name"],
            wide: &["description"],
            nested: None,
        },
        Kind::Prompt => Request {
            tool: "list_prompts",
            arguments: json!({}),
            rows: Some("prompts"),
            columns: &["name", "description"],
            wide: &[],
            nested: None,
        },
    }
}

pub(super) fn get(kind: Kind, name: &str) -> Request {
    let (tool, key) = match kind {
        Kind::McpServer => ("core_mcpserver_get", "name"),
        Kind::Service => ("core_service_status", "name"),
        Kind::Workflow => ("core_workflow_get", "name"),
        Kind::WorkflowExecution => {
            return Request {
                tool: "core_workflow_execution_get",
                arguments: json!({"execution_id": name}),
                rows: None,
                columns: &[],
                wide: &[],
                nested: Some(("steps", STEP_COLUMNS)),
            };
        }
        Kind::Tool => ("describe_tool", "name"),
        Kind::Resource => ("get_resource", "uri"),
        Kind::Prompt => ("get_prompt", "name"),
    };
    Request { tool, arguments: json!({ key: name }), rows: None, columns: &[], wide: &[], nested: None }
}

/// `muster start|stop|restart service <name>`.
pub(super) fn service(verb: &'static str, name: &str) -> Request {
    let tool = match verb {
        "start" => "core_service_start",
        "stop" => "core_service_stop",
        _ => "core_service_restart",
    };
    Request { tool, arguments: json!({"name": name}), rows: None, columns: &[], wide: &[], nested: None }
}

/// `muster create mcpserver <name> …`: the flags that were given, as Muster's argument names.
pub(super) fn create_mcpserver(name: &str, flags: Map<String, Value>) -> Request {
    let mut arguments = flags;
    arguments.insert("name".to_owned(), json!(name));
    Request {
        tool: "core_mcpserver_create",
        arguments: Value::Object(arguments),
        rows: None,
        columns: &[],
        wide: &[],
        nested: None,
    }
}

pub(super) fn events(filters: Map<String, Value>) -> Request {
    Request {
        tool: "core_events",
        arguments: Value::Object(filters),
        rows: Some("events"),
        columns: &["timestamp", "type", "reason", "resourceType", "resourceName", "message"],
        wide: &["namespace"],
        nested: None,
    }
}

/// Calls the request's tool (directly: core tools answer in either exposure) and prints the answer.
#[allow(clippy::print_stdout, clippy::print_stderr, reason = "the CLI's output")]
pub(super) async fn run(endpoint: &str, config_dir: &Path, request: Request, format: Format) -> anyhow::Result<i32> {
    let service = match connect(endpoint, config_dir).await {
        Ok(service) => service,
        Err(e) => {
            eprintln!("{e}");
            return Ok(exit_code(&e));
        }
    };
    let result = call(&service, request.tool, request.arguments).await;
    let _ = service.cancel().await;
    let result = result?;
    let text: String = result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect();
    if result.is_error == Some(true) {
        eprintln!("{text}");
        return Ok(1);
    }
    let body = result.structured_content.clone().or_else(|| serde_json::from_str(&text).ok());
    match body {
        Some(body) => match request.nested {
            Some((key, columns)) => println!("{}", render_with_list(&body, format, key, columns)),
            None => println!("{}", render(&body, format, request.rows, request.columns, request.wide)),
        },
        None => println!("{text}"),
    }
    Ok(0)
}

/// `muster check mcpserver|workflow <name>`: 0 when the server has a session (the workflow can
/// run), 1 otherwise.
#[allow(clippy::print_stdout, clippy::print_stderr, reason = "the CLI's output")]
pub(super) async fn check(endpoint: &str, config_dir: &Path, kind: Kind, name: &str) -> anyhow::Result<i32> {
    let service = match connect(endpoint, config_dir).await {
        Ok(service) => service,
        Err(e) => {
            eprintln!("{e}");
            return Ok(exit_code(&e));
        }
    };
    let tool = if kind == Kind::Workflow { "core_workflow_available" } else { "core_service_status" };
    let result = call(&service, tool, json!({"name": name})).await;
    let _ = service.cancel().await;
    let result = result?;
    let body = result.structured_content.clone().unwrap_or_default();
    let ok = if kind == Kind::Workflow { body["available"] == true } else { body["health"] == "healthy" };
    if result.is_error == Some(true) || !ok {
        let text: String = result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect();
        eprintln!("{name} is not available: {text}");
        return Ok(1);
    }
    println!("{name} is available");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_singular_or_plural_and_unknown_ones_are_refused() {
        assert_eq!(Kind::parse("mcpservers").expect("plural"), Kind::McpServer);
        assert_eq!(Kind::parse("Service").expect("singular"), Kind::Service);
        assert!(Kind::parse("gizmo").is_err());
        for text in ["workflow-execution", "workflow-executions", "wfe", "WorkflowExecutions"] {
            assert_eq!(Kind::parse(text).expect(text), Kind::WorkflowExecution);
        }
    }
}
