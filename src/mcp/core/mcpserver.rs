//! `core_mcpserver_*` and `core_service_*`: servers as the router's snapshot shows them, and
//! changes written where the desired state lives (`crd::resources`: a file in `DIR/mcpservers/`,
//! or an MCPServer resource), which the watcher turns into desired state like a hand-made change.
//! A write waits (at most `SETTLE_TIMEOUT`) until the snapshot shows the change, so the caller
//! sees the tools appear.

use std::time::Duration;

use rmcp::model::{CallToolResult, JsonObject};
use serde_json::{Value, json};

use super::{Core, error, json_result, string};
use crate::crd::files::Source;
use crate::crd::resources::Kind;
use crate::crd::{API_VERSION, KIND, McpServer, McpServerSpec, ObjectMeta};
use crate::mcp::GatewayServer;
use crate::routing::catalog::ToolRoute;
use crate::routing::{CatalogSnapshot, Server};

/// How long a write waits for the router to show its result.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

fn health(server: &Server) -> &'static str {
    let status = server.handle.status();
    match (status.session.is_some(), status.state) {
        (true, _) => "healthy",
        (false, crate::crd::status::State::Failed) => "unhealthy",
        _ => "unknown",
    }
}

/// The exposed tool names that route to `server`.
fn tool_names(snapshot: &CatalogSnapshot, server: &str) -> Vec<String> {
    let mut names: Vec<String> = snapshot
        .catalog
        .tool_routes
        .iter()
        .filter(|(_, route)| match route {
            ToolRoute::Server { server: s, .. } => s == server,
            ToolRoute::Family { members, .. } => members.contains_key(server),
            #[allow(unreachable_patterns, reason = "other routes (workflows) name no server")]
            _ => false,
        })
        .map(|(name, _)| name.clone())
        .collect();
    names.sort();
    names
}

/// A server as the tools show it; a non-admin does not see `env`, `headers` or `auth`.
fn info(snapshot: &CatalogSnapshot, server: &Server, admin: bool, verbose: bool) -> Value {
    let definition = server.handle.definition();
    let status = server.handle.status();
    let mut spec = serde_json::to_value(&definition.spec).unwrap_or_default();
    if !admin && let Some(spec) = spec.as_object_mut() {
        for hidden in ["env", "headers", "auth"] {
            spec.remove(hidden);
        }
    }
    let tools = tool_names(snapshot, definition.name());
    let mut out = json!({
        "name": definition.name(),
        "type": definition.spec.server_type.map(|t| t.as_str()),
        "state": status.state.as_str(),
        "health": health(server),
        "autoStart": definition.spec.auto_start,
        "description": definition.spec.description,
        "toolCount": tools.len(),
        "lastError": status.last_error,
        "protocolVersion": status.session.as_ref().and_then(crate::backend::UpstreamSession::protocol_version),
    });
    if verbose {
        out["spec"] = spec;
        out["tools"] = json!(tools);
    }
    out
}

/// Definitions whose server is not running (stopped, or invalid), by name.
fn not_running(core: &Core, snapshot: &CatalogSnapshot) -> Vec<Value> {
    let desired = core.resources.current();
    let stopped = desired.definitions.iter().filter(|d| !snapshot.servers.contains_key(d.server.name())).map(|d| {
        json!({"name": d.server.name(), "type": d.server.spec.server_type.map(|t| t.as_str()), "state": "Stopped",
               "health": "unknown", "autoStart": d.server.spec.auto_start, "toolCount": 0})
    });
    let invalid = desired.rejected.iter().map(|r| {
        json!({"name": r.name, "state": "Invalid", "health": "unknown",
               "lastError": r.problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")})
    });
    stopped.chain(invalid).collect()
}

pub(super) fn list(gateway: &GatewayServer, core: &Core, args: &JsonObject, admin: bool) -> CallToolResult {
    let snapshot = gateway.snapshot();
    let verbose = args.get("verbose").and_then(Value::as_bool).unwrap_or(false);
    let show_all = args.get("showAll").and_then(Value::as_bool).unwrap_or(false);
    let mut servers: Vec<Value> = snapshot.servers.values().map(|s| info(&snapshot, s, admin, verbose)).collect();
    let others = not_running(core, &snapshot);
    let hidden = others.iter().filter(|s| s["state"] == "Invalid").count();
    servers.extend(others.into_iter().filter(|s| show_all || s["state"] != "Invalid"));
    let mut out = json!({"mcpServers": servers, "total": servers.len(), "mode": core.resources.mode()});
    if hidden > 0 && !show_all {
        out["hiddenFailed"] = json!(hidden);
        out["hint"] = json!("invalid definitions are hidden: pass showAll=true to list them");
    }
    json_result(out)
}

pub(super) fn get(gateway: &GatewayServer, core: &Core, args: &JsonObject, admin: bool) -> CallToolResult {
    let Some(name) = string(args, "name") else { return error("core_mcpserver_get needs a \"name\" argument".into()) };
    let snapshot = gateway.snapshot();
    if let Some(server) = snapshot.servers.get(&name) {
        return json_result(info(&snapshot, server, admin, true));
    }
    match not_running(core, &snapshot).into_iter().find(|s| s["name"] == name.as_str()) {
        Some(server) => json_result(server),
        None => error(unknown(&snapshot, &name)),
    }
}

fn unknown(snapshot: &CatalogSnapshot, name: &str) -> String {
    let known: Vec<&str> = snapshot.servers.keys().map(String::as_str).collect();
    format!("no MCP server named {name:?}; known: {}", if known.is_empty() { "none".into() } else { known.join(", ") })
}

/// The resource the arguments describe, over `base` (an update), or every problem with them.
fn from_args(args: &JsonObject, base: Option<&McpServerSpec>) -> Result<McpServer, Vec<String>> {
    let mut problems = Vec::new();
    let name = string(args, "name");
    if name.is_none() {
        problems.push("name: is required".to_owned());
    }
    let mut spec = base.and_then(|b| serde_json::to_value(b).ok()).unwrap_or_else(|| json!({}));
    for (key, value) in args.iter().filter(|(k, _)| *k != "name") {
        spec[key] = value.clone();
    }
    let spec = match serde_json::from_value::<McpServerSpec>(spec) {
        Ok(spec) => spec,
        Err(e) => {
            problems.push(format!("arguments: {e}"));
            return Err(problems);
        }
    };
    let server = McpServer {
        api_version: API_VERSION.to_owned(),
        kind: KIND.to_owned(),
        metadata: ObjectMeta { name: name.clone().unwrap_or_default(), ..ObjectMeta::default() },
        spec,
        status: None,
    };
    for problem in server.validate() {
        if name.is_some() || problem.field != "metadata.name" {
            problems.push(problem.to_string().replacen("metadata.name", "name", 1).replacen("spec.", "", 1));
        }
    }
    // Private ranges depend on config.yaml (`aggregator.upstreams.allowPrivateNetworks`).
    if let Some(url) = &server.spec.url
        && let Err(refused) = crate::egress::upstream_policy().check_url(url)
    {
        problems.push(format!("url: {url:?} is refused: {refused}"));
    }
    if problems.is_empty() { Ok(server) } else { Err(problems) }
}

pub(super) fn validate(args: &JsonObject) -> CallToolResult {
    match from_args(args, None) {
        Ok(_) => json_result(json!({"valid": true, "errors": []})),
        Err(errors) => json_result(json!({"valid": false, "errors": errors})),
    }
}

/// Where the output shows a definition: `path` for a file, `resource` for a Kubernetes object.
pub(super) fn located(out: &mut Value, source: &Source) {
    match source {
        Source::File(path) => out["path"] = json!(path.display().to_string()),
        Source::Kubernetes { .. } => out["resource"] = json!(source.to_string()),
    }
}

pub(super) async fn put(gateway: &GatewayServer, core: &Core, args: &JsonObject, create: bool) -> CallToolResult {
    let tool = if create { "core_mcpserver_create" } else { "core_mcpserver_update" };
    let name = string(args, "name").unwrap_or_default();
    let existing = if name.is_empty() { None } else { core.resources.source_of(Kind::McpServer, &name) };
    let base = match (create, &existing) {
        (true, Some(source)) => {
            return error(format!("{tool}: an MCP server named {name:?} exists already ({source})"));
        }
        (false, None) => return error(format!("{tool}: {}", unknown(&gateway.snapshot(), &name))),
        (false, Some(source)) => core
            .resources
            .read(Kind::McpServer, source)
            .await
            .and_then(|object| serde_json::from_value::<McpServerSpec>(object.get("spec")?.clone()).ok()),
        (true, None) => None,
    };
    let server = match from_args(args, base.as_ref()) {
        Ok(server) => server,
        Err(problems) => return error(format!("{tool}: invalid MCP server:\n- {}", problems.join("\n- "))),
    };
    let resource = serde_json::to_value(&server).unwrap_or_default();
    let source = match core.resources.write(Kind::McpServer, &name, resource, existing.as_ref()).await {
        Ok(source) => source,
        Err(e) => return error(format!("{tool}: {e}")),
    };
    let expected = server.spec.clone();
    let auto_start = expected.auto_start;
    let snapshot = settle(gateway, |s| {
        s.servers.get(&name).is_some_and(|x| x.handle.definition().spec == expected && (!auto_start || x.settled))
    })
    .await;
    let mut out = json!({"mcpServer": server});
    located(&mut out, &source);
    match snapshot.servers.get(&name) {
        Some(running) => out["status"] = info(&snapshot, running, true, true),
        None => {
            out["status"] =
                json!({"state": "Pending", "hint": "the change is written; the watcher has not applied it yet"})
        }
    }
    json_result(out)
}

pub(super) async fn delete(gateway: &GatewayServer, core: &Core, args: &JsonObject) -> CallToolResult {
    let Some(name) = string(args, "name") else {
        return error("core_mcpserver_delete needs a \"name\" argument".into());
    };
    let Some(source) = core.resources.source_of(Kind::McpServer, &name) else {
        return error(format!("core_mcpserver_delete: {}", unknown(&gateway.snapshot(), &name)));
    };
    if let Err(e) = core.resources.delete(Kind::McpServer, &source).await {
        return error(format!("core_mcpserver_delete: {e}"));
    }
    settle(gateway, |s| !s.servers.contains_key(&name)).await;
    let mut out = json!({"deleted": name});
    located(&mut out, &source);
    json_result(out)
}

/// Waits until the snapshot satisfies `done`, at most `SETTLE_TIMEOUT`; returns the latest.
async fn settle(
    gateway: &GatewayServer,
    done: impl FnMut(&std::sync::Arc<CatalogSnapshot>) -> bool,
) -> std::sync::Arc<CatalogSnapshot> {
    let mut snapshots = gateway.router.snapshot.clone();
    let _ = tokio::time::timeout(SETTLE_TIMEOUT, snapshots.wait_for(done)).await;
    gateway.snapshot()
}

pub(super) fn services(gateway: &GatewayServer, core: &Core) -> CallToolResult {
    let snapshot = gateway.snapshot();
    let mut services: Vec<Value> = snapshot.servers.values().map(|s| service_info(&snapshot, s)).collect();
    services.extend(not_running(core, &snapshot).into_iter().map(|s| {
        json!({"name": s["name"], "serviceType": "MCPServer", "state": s["state"], "health": s["health"],
               "lastError": s.get("lastError")})
    }));
    json_result(json!({"services": services, "total": services.len()}))
}

fn service_info(snapshot: &CatalogSnapshot, server: &Server) -> Value {
    let status = server.handle.status();
    json!({
        "name": server.handle.name.as_ref(),
        "serviceType": "MCPServer",
        "state": status.state.as_str(),
        "health": health(server),
        "toolCount": tool_names(snapshot, &server.handle.name).len(),
        "lastError": status.last_error,
    })
}

/// One service's status; after a start/stop/restart (`changed`, with the backend instance from
/// before it), once the router shows the change: a new backend that has settled, or none.
pub(super) async fn service_status(
    gateway: &GatewayServer,
    name: &str,
    changed: Option<Option<u64>>,
) -> CallToolResult {
    let snapshot = if let Some(before) = changed {
        settle(gateway, |s| match s.servers.get(name) {
            Some(server) => {
                let replaced = Some(server.handle.instance) != before;
                (replaced && server.settled) || (!replaced && server.handle.status().session.is_some())
            }
            None => true,
        })
        .await
    } else {
        gateway.snapshot()
    };
    match snapshot.servers.get(name) {
        Some(server) => json_result(service_info(&snapshot, server)),
        None if changed.is_some() => json_result(json!({"name": name, "serviceType": "MCPServer", "state": "Stopped"})),
        None => error(unknown(&snapshot, name)),
    }
}
