//! The `core_*` management tools (design §6, Muster's names and arguments): MCP servers, services
//! and events, plus `core_config_get`. They are routed before `resolve_tool` (`GatewayServer::
//! dispatch`), so they answer directly, through meta `call_tool` and from workflows alike.
//!
//! **Who may change things:** a mutating tool needs an administrator, a caller whose `groups`
//! claim meets `aggregator.admin.groups`, or, with sign-in off, a loopback connection. Everyone else
//! gets `isError` naming the rule, and nothing is written. Create, update and delete write the same
//! desired state the folder watcher reads (`mcp/core/mcpserver.rs`), so validation, status and events
//! stay one code path.

mod events;
mod execution;
mod mcpserver;
mod workflow;

pub(super) use execution::subject_of;

use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

use super::GatewayServer;
use crate::caller::Caller;
use crate::config::Config;
use crate::crd::execution::{ExecutionStore, Retention};
use crate::crd::resources::Resources;
use crate::supervisor::events::EventLog;
use crate::supervisor::{ServiceAction, ServiceHandle};
use crate::workflow::Recorder;

/// What the `core_*` tools need besides the router: set up once by `app::run`.
pub struct Core {
    admin_groups: Vec<String>,
    sign_in: bool,
    /// Where definitions are read and written: the folder, or the API server.
    resources: Resources,
    services: ServiceHandle,
    events: EventLog,
    /// The effective config with secrets as `***`.
    config: Value,
    /// Where workflow runs are recorded: the folder, or WorkflowExecution resources.
    recorder: Recorder,
}

impl Core {
    pub fn new(
        config: &Config,
        resources: Resources,
        services: ServiceHandle,
        events: EventLog,
        executions: ExecutionStore,
    ) -> Self {
        Self {
            admin_groups: config.admin_groups.clone(),
            sign_in: config.oauth.is_some(),
            resources,
            services,
            events,
            config: config_view(config),
            recorder: Recorder::new(executions, Retention::default()),
        }
    }

    /// Where workflow runs are recorded.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// The event ring `core_events` reads (workflow runs record theirs here).
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// Whether `caller` may use the mutating tools.
    pub fn is_admin(&self, caller: &Caller) -> bool {
        is_admin(&self.admin_groups, self.sign_in, caller.identity.as_deref(), caller.loopback)
    }
}

/// The admin rule: group claims that meet `admin_groups`; with sign-in off, a loopback connection.
fn is_admin(admin_groups: &[String], sign_in: bool, identity: Option<&crate::auth::Identity>, loopback: bool) -> bool {
    match identity {
        Some(identity) => identity.groups.iter().any(|g| admin_groups.contains(g)),
        None => !sign_in && loopback,
    }
}

struct Definition {
    name: &'static str,
    description: &'static str,
    schema: Value,
    read_only: bool,
    destructive: bool,
    admin: bool,
}

fn name_only() -> Value {
    json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]})
}

/// `mcpServerArgs`: the MCPServer spec's fields plus `name`.
fn server_args(type_required: bool) -> Value {
    let strings = json!({"type": "object", "additionalProperties": {"type": "string"}});
    let required = if type_required { json!(["name", "type"]) } else { json!(["name"]) };
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "the MCPServer's name (a DNS label)"},
            "type": {"type": "string", "enum": ["stdio", "streamable-http", "sse"]},
            "toolPrefix": {"type": "string"},
            "family": {"type": "object", "properties": {"name": {"type": "string"}, "instanceArg": {"type": "string"}}},
            "description": {"type": "string"},
            "autoStart": {"type": "boolean"},
            "command": {"type": "string"},
            "args": {"type": "array", "items": {"type": "string"}},
            "url": {"type": "string"},
            "env": strings,
            "headers": strings,
            "timeout": {"type": "integer", "minimum": 1, "maximum": 300},
            "auth": {"type": "object"},
        },
        "required": required,
    })
}

/// A Workflow's spec fields plus `name`.
fn workflow_args() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "args": {"type": "object"},
            "steps": {"type": "array", "items": {"type": "object"}},
            "onFailure": {"type": "array", "items": {"type": "object"}},
            "output": {"type": "object"},
        },
        "required": ["name", "steps"],
    })
}

fn definitions() -> Vec<Definition> {
    let read = |name, description, schema| Definition {
        name,
        description,
        schema,
        read_only: true,
        destructive: false,
        admin: false,
    };
    let write = |name, description, schema, destructive| Definition {
        name,
        description,
        schema,
        read_only: false,
        destructive,
        admin: true,
    };
    let flags =
        json!({"type": "object", "properties": {"showAll": {"type": "boolean"}, "verbose": {"type": "boolean"}}});
    let events = json!({
        "type": "object",
        "properties": {
            "resourceType": {"type": "string", "enum": ["MCPServer", "Workflow"]},
            "resourceName": {"type": "string"},
            "namespace": {"type": "string"},
            "eventType": {"type": "string", "enum": ["Normal", "Warning"]},
            "since": {"type": "string", "description": "a duration (30m, 2h) or an RFC 3339 time"},
            "until": {"type": "string", "description": "an RFC 3339 time"},
            "limit": {"type": "integer", "minimum": 1, "default": 50},
            "follow": {"type": "boolean", "default": false,
                "description": "keep the call open and send each new matching event as a notifications/message (logger core_events) until cancelled or followSeconds pass"},
            "followSeconds": {"type": "integer", "minimum": 1, "maximum": 3600, "default": 300},
        },
    });
    vec![
        read("core_mcpserver_list", "List the MCP servers with their state.", flags),
        read("core_mcpserver_get", "Show one MCP server.", name_only()),
        read("core_mcpserver_validate", "Check an MCP server definition without saving it.", server_args(true)),
        write("core_mcpserver_create", "Create an MCP server (admin only).", server_args(true), false),
        write("core_mcpserver_update", "Change an MCP server (admin only).", server_args(false), true),
        write("core_mcpserver_delete", "Delete an MCP server (admin only).", name_only(), true),
        read(
            "core_service_list",
            "List the services (MCP servers) with state and health.",
            json!({"type": "object", "properties": {}}),
        ),
        read("core_service_status", "Show one service's state and health.", name_only()),
        write("core_service_start", "Start a service (admin only).", name_only(), false),
        write("core_service_stop", "Stop a service (admin only).", name_only(), true),
        write("core_service_restart", "Restart a service (admin only).", name_only(), true),
        read(
            "core_workflow_list",
            "List the workflows with validity and availability.",
            json!({"type": "object", "properties": {"include_system": {"type": "boolean", "default": true}}}),
        ),
        read("core_workflow_get", "Show one workflow's spec and status.", name_only()),
        read("core_workflow_validate", "Check a workflow definition without saving it.", workflow_args()),
        read("core_workflow_available", "Whether a workflow can run now, and which tools it misses.", name_only()),
        write("core_workflow_create", "Create a workflow (admin only).", workflow_args(), false),
        write("core_workflow_update", "Change a workflow (admin only).", workflow_args(), true),
        write("core_workflow_delete", "Delete a workflow (admin only).", name_only(), true),
        read(
            "core_workflow_execution_list",
            "List workflow runs, newest first (your own unless you are an admin).",
            json!({
                "type": "object",
                "properties": {
                    "workflow_name": {"type": "string", "description": "only runs of this workflow"},
                    "status": {"type": "string", "enum": ["inprogress", "completed", "failed"]},
                    "limit": {"type": "integer", "minimum": 1, "default": 50},
                    "offset": {"type": "integer", "minimum": 0, "default": 0},
                },
            }),
        ),
        read(
            "core_workflow_execution_get",
            "Show one workflow run with its steps, or one step of it.",
            json!({
                "type": "object",
                "properties": {
                    "execution_id": {"type": "string"},
                    "include_steps": {"type": "boolean", "default": true},
                    "step_id": {"type": "string", "description": "only this step (a forEach body step as <id>_<i>)"},
                },
                "required": ["execution_id"],
            }),
        ),
        read("core_events", "Recent lifecycle events of MCP servers and workflows.", events),
        Definition {
            admin: true,
            ..read(
                "core_config_get",
                "The effective configuration, secrets as *** (admin only).",
                json!({"type": "object", "properties": {}}),
            )
        },
    ]
}

pub fn is_core_tool(name: &str) -> bool {
    name.starts_with("core_") && definitions().iter().any(|d| d.name == name)
}

fn to_tool(definition: &Definition) -> Tool {
    let schema: JsonObject = serde_json::from_value(definition.schema.clone()).unwrap_or_default();
    let mut tool = Tool::new(definition.name, definition.description, Arc::new(schema));
    let mut annotations = ToolAnnotations::new();
    annotations.read_only_hint = Some(definition.read_only);
    annotations.destructive_hint = Some(definition.destructive);
    tool.annotations = Some(annotations);
    tool
}

/// The core tools `tools/list` shows in direct exposure: the mutating ones only to admins.
pub fn tools(admin: bool) -> Vec<Tool> {
    definitions().iter().filter(|d| admin || !d.admin).map(to_tool).collect()
}

/// `list_core_tools` (meta exposure): every core tool, the admin-only ones marked.
pub fn list_core_tools(include_schema: bool) -> Value {
    let tools: Vec<Value> = definitions()
        .iter()
        .map(|d| {
            let mut entry = json!({
                "name": d.name,
                "description": d.description,
                "adminOnly": d.admin,
                "annotations": {"readOnlyHint": d.read_only, "destructiveHint": d.destructive},
            });
            if include_schema {
                entry["inputSchema"] = d.schema.clone();
            }
            entry
        })
        .collect();
    json!({"total": tools.len(), "tools": tools})
}

/// Runs a core tool. Failures are tool results with `isError`.
pub async fn call(gateway: &GatewayServer, name: &str, args: JsonObject, caller: &Caller) -> CallToolResult {
    let Some(core) = gateway.core.as_deref() else {
        return error(format!("{name} is not available on this muster"));
    };
    let Some(definition) = definitions().into_iter().find(|d| d.name == name) else {
        return error(format!("unknown core tool {name}"));
    };
    if definition.admin && !core.is_admin(caller) {
        let who = caller.identity.as_ref().map_or_else(
            || "not signed in and not on a loopback connection".to_owned(),
            |i| format!("{} (groups: {})", i.subject, i.groups.join(", ")),
        );
        return error(format!(
            "{name} needs an administrator (a member of one of aggregator.admin.groups); you are {who}"
        ));
    }
    let target = string(&args, "name");
    let service = |action| async move {
        let Some(target) = target else { return error(format!("{name} needs a \"name\" argument")) };
        let before = gateway.snapshot().servers.get(&target).map(|s| s.handle.instance);
        match core.services.control(&target, action).await {
            Ok(()) => mcpserver::service_status(gateway, &target, Some(before)).await,
            Err(e) => error(e),
        }
    };
    match name {
        "core_mcpserver_list" => mcpserver::list(gateway, core, &args, core.is_admin(caller)),
        "core_mcpserver_get" => mcpserver::get(gateway, core, &args, core.is_admin(caller)),
        "core_mcpserver_validate" => mcpserver::validate(&args),
        "core_mcpserver_create" => mcpserver::put(gateway, core, &args, true).await,
        "core_mcpserver_update" => mcpserver::put(gateway, core, &args, false).await,
        "core_mcpserver_delete" => mcpserver::delete(gateway, core, &args).await,
        "core_service_list" => mcpserver::services(gateway, core),
        "core_service_status" => match string(&args, "name") {
            Some(target) => mcpserver::service_status(gateway, &target, None).await,
            None => error(format!("{name} needs a \"name\" argument")),
        },
        "core_service_start" => service(ServiceAction::Start).await,
        "core_service_stop" => service(ServiceAction::Stop).await,
        "core_service_restart" => service(ServiceAction::Restart).await,
        "core_workflow_list" => workflow::list(gateway, core),
        "core_workflow_get" => workflow::get(gateway, core, &args),
        "core_workflow_validate" => workflow::validate(&args),
        "core_workflow_available" => workflow::available(gateway, core, &args),
        "core_workflow_create" => workflow::put(core, &args, true).await,
        "core_workflow_update" => workflow::put(core, &args, false).await,
        "core_workflow_delete" => workflow::delete(core, &args).await,
        "core_workflow_execution_list" => execution::list(core, &args, caller).await,
        "core_workflow_execution_get" => execution::get(core, &args, caller).await,
        "core_events" => events::events(core, &args, caller).await,
        "core_config_get" => json_result(core.config.clone()),
        _ => error(format!("unknown core tool {name}")),
    }
}

/// The effective config as `core_config_get` shows it: no secret, only whether one is set.
fn config_view(config: &Config) -> Value {
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let oauth = config.oauth.as_ref().map(|o| {
        json!({
            "enabled": true,
            "baseUrl": o.base_url,
            "issuer": o.issuer,
            "clientId": o.client_id,
            "trustedAudiences": o.trusted_audiences,
            "trustedIssuers": o.trusted_issuers.iter().map(|t| &t.issuer).collect::<Vec<_>>(),
            "clientSecret": o.authorization_server.as_ref().map(|_| "***"),
        })
    });
    json!({
        "aggregator": {
            "host": config.host,
            "port": config.port,
            "musterPrefix": config.muster_prefix,
            "toolExposure": format!("{:?}", config.tool_exposure).to_lowercase(),
            "allowedHosts": config.allowed_hosts,
            "allowedOrigins": config.allowed_origins,
            "maxBodyBytes": config.max_body_bytes,
            "supervision": {
                "initialBackoffMs": ms(config.supervision.initial_backoff),
                "maxBackoffMs": ms(config.supervision.max_backoff),
                "healthIntervalMs": ms(config.supervision.health_interval),
                "resyncIntervalMs": ms(config.supervision.resync_interval),
            },
            "calls": {"timeoutMs": config.calls.timeout.map(ms), "maxResultBytes": config.calls.max_result_bytes},
            "oauth": {"server": oauth.unwrap_or_else(|| json!({"enabled": false}))},
            "upstreams": {"allowPrivateNetworks": config.upstream_egress.allow_private_networks},
            "admin": {"groups": config.admin_groups},
        },
        "kubernetes": config.kubernetes.is_some(),
        "namespaces": config.kubernetes.as_ref().map(|k| k.namespaces.clone()).unwrap_or_default(),
    })
}

fn string(args: &JsonObject, key: &str) -> Option<String> {
    args.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

fn json_result(value: Value) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(value.to_string())]);
    result.structured_content = Some(value);
    result
}

fn error(message: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(admins: &[String], sign_in: bool, groups: Option<&[&str]>, loopback: bool) -> bool {
        let identity = groups.map(|g| crate::auth::Identity {
            subject: "alice".into(),
            issuer: "i".into(),
            token: crate::auth::Secret::new("t"),
            expires_at: 0,
            groups: g.iter().map(|s| (*s).to_owned()).collect(),
        });
        is_admin(admins, sign_in, identity.as_ref(), loopback)
    }

    #[test]
    fn admins_are_members_of_an_admin_group_or_loopback_without_sign_in() {
        let admins = ["platform".to_owned()];
        assert!(check(&admins, true, Some(&["sre", "platform"]), false));
        assert!(!check(&admins, true, Some(&["sre"]), true), "loopback does not count when signed in");
        assert!(!check(&[], true, Some(&["platform"]), false), "no admin groups: no admins");
        assert!(check(&[], false, None, true));
        assert!(!check(&admins, false, None, false), "sign-in off: only loopback");
        assert!(!check(&admins, true, None, true), "sign-in on: anonymous is never admin");
    }

    #[test]
    fn mutating_tools_are_listed_to_admins_only_and_annotated() {
        let everyone: Vec<String> = tools(false).iter().map(|t| t.name.to_string()).collect();
        assert!(everyone.contains(&"core_mcpserver_list".to_owned()));
        assert!(!everyone.iter().any(|n| n == "core_mcpserver_create" || n == "core_config_get"));
        let delete = tools(true).into_iter().find(|t| t.name == "core_mcpserver_delete").expect("listed");
        let hints = delete.annotations.expect("annotated");
        assert_eq!((hints.read_only_hint, hints.destructive_hint), (Some(false), Some(true)));
    }
}
