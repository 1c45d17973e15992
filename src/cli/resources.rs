//! The resource verbs (`muster list|get|create|start|stop|restart|check|events`) as thin MCP
//! clients: each calls one `core_*` tool (or a meta-tool) of a running muster over `client.rs` and
//! prints its answer (`output.rs`). Exit codes are Muster's: 0 ok, 1 error (also a tool result
//! with `isError`, an unknown type, or `check` finding the target unavailable), 2 sign-in
//! required, 3 sign-in failed.

use std::path::Path;

use anyhow::bail;
use serde_json::{Map, Value, json};

use super::client::{call, connect, exit_code};
use super::output::{Format, render};

/// The resource a verb names (singular or plural, as Muster accepts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    McpServer,
    Service,
    Workflow,
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
            "tool" => Self::Tool,
            "resource" => Self::Resource,
            "prompt" => Self::Prompt,
            _ => bail!("unknown resource type {text:?}: use mcpserver, service, workflow, tool, resource or prompt"),
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
}

const SERVER_COLUMNS: &[&str] = &["name", "type", "state", "health", "toolCount"];
const SERVER_WIDE: &[&str] = &["autoStart", "lastError"];
const SERVICE_COLUMNS: &[&str] = &["name", "state", "health", "toolCount"];

pub(super) fn list(kind: Kind, all: bool, verbose: bool) -> Request {
    match kind {
        Kind::McpServer => Request {
            tool: "core_mcpserver_list",
            arguments: json!({"showAll": all, "verbose": verbose}),
            rows: Some("mcpServers"),
            columns: SERVER_COLUMNS,
            wide: SERVER_WIDE,
        },
        Kind::Service => Request {
            tool: "core_service_list",
            arguments: json!({}),
            rows: Some("services"),
            columns: SERVICE_COLUMNS,
            wide: &["lastError"],
        },
        Kind::Workflow => Request {
            tool: "core_workflow_list",
            arguments: json!({}),
            rows: Some("workflows"),
            columns: &["name", "valid", "available", "stepCount"],
            wide: &["description", "missing_tools"],
        },
        Kind::Tool => Request {
            tool: "list_tools",
            arguments: json!({"limit": 500}),
            rows: Some("tools"),
            columns: &["name", "summary"],
            wide: &[],
        },
        Kind::Resource => Request {
            tool: "list_resources",
            arguments: json!({}),
            rows: Some("resources"),
            columns: &["uri", "name"],
            wide: &["description"],
        },
        Kind::Prompt => Request {
            tool: "list_prompts",
            arguments: json!({}),
            rows: Some("prompts"),
            columns: &["name", "description"],
            wide: &[],
        },
    }
}

pub(super) fn get(kind: Kind, name: &str) -> Request {
    let (tool, key) = match kind {
        Kind::McpServer => ("core_mcpserver_get", "name"),
        Kind::Service => ("core_service_status", "name"),
        Kind::Workflow => ("core_workflow_get", "name"),
        Kind::Tool => ("describe_tool", "name"),
        Kind::Resource => ("get_resource", "uri"),
        Kind::Prompt => ("get_prompt", "name"),
    };
    Request { tool, arguments: json!({ key: name }), rows: None, columns: &[], wide: &[] }
}

/// `muster start|stop|restart service <name>`.
pub(super) fn service(verb: &'static str, name: &str) -> Request {
    let tool = match verb {
        "start" => "core_service_start",
        "stop" => "core_service_stop",
        _ => "core_service_restart",
    };
    Request { tool, arguments: json!({"name": name}), rows: None, columns: &[], wide: &[] }
}

/// `muster create mcpserver <name> …`: the flags that were given, as Muster's argument names.
pub(super) fn create_mcpserver(name: &str, flags: Map<String, Value>) -> Request {
    let mut arguments = flags;
    arguments.insert("name".to_owned(), json!(name));
    Request { tool: "core_mcpserver_create", arguments: Value::Object(arguments), rows: None, columns: &[], wide: &[] }
}

pub(super) fn events(filters: Map<String, Value>) -> Request {
    Request {
        tool: "core_events",
        arguments: Value::Object(filters),
        rows: Some("events"),
        columns: &["timestamp", "type", "reason", "resourceType", "resourceName", "message"],
        wide: &["namespace"],
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
        Some(body) => println!("{}", render(&body, format, request.rows, request.columns, request.wide)),
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
    }
}
