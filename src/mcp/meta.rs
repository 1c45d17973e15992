//! The meta-tools of `toolExposure: meta` (reference §3.3): agents discover real tools with
//! `list_tools`/`filter_tools`/`describe_tool` and run them with `call_tool`, so `tools/list`
//! stays small however large the fleet is. Responses are bounded: `list_tools` pages summaries,
//! schemas only come from `describe_tool` or `include_schema`.

use std::collections::BTreeMap;
use std::sync::Arc;

use rmcp::model::{CallToolResponse, CallToolResult, ContentBlock, JsonObject, Tool};
use serde_json::{Value, json};

use super::GatewayServer;
use super::error;
use crate::caller::Caller;
use crate::routing::catalog::ToolRoute;
use crate::routing::{self, CatalogSnapshot};

const LIST_TOOLS_DEFAULT_LIMIT: usize = 50;
const FILTER_TOOLS_DEFAULT_LIMIT: usize = 5;
const SUMMARY_CHARS: usize = 120;

const META_TOOLS: &[&str] = &[
    "list_tools",
    "list_core_tools",
    "describe_tool",
    "filter_tools",
    "call_tool",
    "list_resources",
    "get_resource",
    "list_prompts",
    "get_prompt",
];

pub fn is_meta_tool(name: &str) -> bool {
    META_TOOLS.contains(&name)
}

fn tool(name: &'static str, description: &'static str, schema: Value) -> Tool {
    let schema: JsonObject = serde_json::from_value(schema).unwrap_or_default();
    Tool::new(name, description, Arc::new(schema))
}

/// The meta-tools as `tools/list` shows them.
pub fn tools() -> Vec<Tool> {
    vec![
        tool(
            "list_tools",
            "List the fleet's tools (name and one-line summary), paginated. Use describe_tool for a schema.",
            json!({
                "type": "object",
                "properties": {
                    "offset": {"type": "integer", "minimum": 0, "default": 0},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 500, "default": LIST_TOOLS_DEFAULT_LIMIT},
                },
            }),
        ),
        tool(
            "list_core_tools",
            "List muster's own core_* management tools (call them with call_tool; the mutating ones are admin only).",
            json!({
                "type": "object",
                "properties": {"include_schema": {"type": "boolean", "default": true}},
            }),
        ),
        tool(
            "describe_tool",
            "Show one tool's full description and input schema.",
            json!({
                "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
            }),
        ),
        tool(
            "filter_tools",
            "Find tools by name glob, description substring, BM25 query and labels (server=…, family=…).",
            json!({
                "type": "object",
                "properties": {
                    "pattern": {"type": "string", "description": "glob on the tool name, e.g. x_kubernetes_*"},
                    "description_filter": {"type": "string"},
                    "query": {"type": "string", "description": "free text, ranked with BM25"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "case_sensitive": {"type": "boolean", "default": false},
                    "include_schema": {"type": "boolean", "default": false},
                    "limit": {"type": "integer", "minimum": 1, "default": FILTER_TOOLS_DEFAULT_LIMIT},
                    "offset": {"type": "integer", "minimum": 0, "default": 0},
                },
            }),
        ),
        tool(
            "call_tool",
            "Call a fleet tool by name. The result is a JSON envelope {isError, content, structuredContent}.",
            json!({
                "type": "object",
                "properties": {"name": {"type": "string"}, "arguments": {"type": "object"}},
                "required": ["name"],
            }),
        ),
        tool("list_resources", "List the fleet's resources.", json!({"type": "object", "properties": {}})),
        tool(
            "get_resource",
            "Read one resource by URI.",
            json!({
                "type": "object", "properties": {"uri": {"type": "string"}}, "required": ["uri"],
            }),
        ),
        tool("list_prompts", "List the fleet's prompts.", json!({"type": "object", "properties": {}})),
        tool(
            "get_prompt",
            "Get one prompt, rendered with its arguments.",
            json!({
                "type": "object",
                "properties": {"name": {"type": "string"}, "arguments": {"type": "object", "additionalProperties": {"type": "string"}}},
                "required": ["name"],
            }),
        ),
    ]
}

/// Runs a meta-tool. Failures are tool results with `isError`, never protocol errors.
pub async fn call(gateway: &GatewayServer, name: &str, args: JsonObject, caller: &Caller) -> CallToolResult {
    let snapshot = gateway.snapshot();
    match name {
        "list_tools" => json_result(list_tools(&snapshot, &args)),
        "list_core_tools" => json_result(super::core::list_core_tools(
            args.get("include_schema").and_then(Value::as_bool).unwrap_or(true),
        )),
        "describe_tool" => describe_tool(&snapshot, &args),
        "filter_tools" => match args.get("pattern").and_then(Value::as_str) {
            Some(pattern) if pattern.chars().count() > MAX_PATTERN_CHARS => {
                invalid(format!("filter_tools' pattern is longer than {MAX_PATTERN_CHARS} characters"))
            }
            _ => json_result(filter_tools(&snapshot, &args)),
        },
        "call_tool" => call_tool(gateway, args, caller).await,
        "list_resources" => json_result(
            json!({"resources": snapshot.catalog.resources, "resourceTemplates": snapshot.catalog.resource_templates}),
        ),
        "list_prompts" => json_result(json!({"prompts": snapshot.catalog.prompts})),
        "get_resource" => get_resource(&snapshot, &args, caller).await,
        "get_prompt" => get_prompt(&snapshot, &args, caller).await,
        _ => error::tool_error(&routing::Error::ToolNotFound { name: name.to_owned(), suggestions: Vec::new() }),
    }
}

fn json_result(value: Value) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(value.to_string())]);
    result.structured_content = Some(value);
    result
}

fn invalid(message: String) -> CallToolResult {
    let mut result = CallToolResult::error(vec![ContentBlock::text(message.clone())]);
    result.structured_content = Some(json!({"code": "invalid_arguments", "message": message}));
    result
}

/// What `list_tools` and `filter_tools` show for a tool. A family tool's summary names its
/// clusters (bare names) whole, instead of Muster's suffix of full server names, which a cut
/// would truncate; its `description` keeps the suffix.
fn summary(snapshot: &CatalogSnapshot, tool: &Tool) -> String {
    let description = tool.description.as_deref().unwrap_or_default();
    match snapshot.catalog.tool_routes.get(tool.name.as_ref()) {
        Some(ToolRoute::Family { members, .. }) => {
            let (text, _) = routing::catalog::split_family_suffix(description);
            let clusters: Vec<String> =
                members.keys().map(|m| snapshot.catalog.cluster_of(m).unwrap_or_else(|| m.clone())).collect();
            summarize(text, &clusters)
        }
        _ => summarize(description, &[]),
    }
}

/// The first line of `description`, cut at a word boundary with an ellipsis when longer than
/// `SUMMARY_CHARS`, then `(clusters: …)` whole when there are any.
pub fn summarize(description: &str, clusters: &[String]) -> String {
    let first = description.lines().next().unwrap_or_default().trim();
    let mut out = if first.chars().count() <= SUMMARY_CHARS {
        first.to_owned()
    } else {
        // One character is left for the ellipsis; the word the cut falls in is dropped whole.
        let head: String = first.chars().take(SUMMARY_CHARS - 1).collect();
        let next_is_space = first.chars().nth(SUMMARY_CHARS - 1).is_some_and(char::is_whitespace);
        let words = match head.rfind(char::is_whitespace) {
            _ if next_is_space => head.as_str(),
            Some(at) if at > 0 => &head[..at],
            _ => head.as_str(),
        };
        let words = words.trim_end_matches(|c: char| c.is_whitespace() || ",;:-(".contains(c));
        format!("{words}…")
    };
    if !clusters.is_empty() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&format!("(clusters: {})", clusters.join(", ")));
    }
    out
}

fn labels(snapshot: &CatalogSnapshot, name: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    match snapshot.catalog.tool_routes.get(name) {
        Some(ToolRoute::Server { server, .. }) => {
            labels.insert("server".into(), server.clone());
        }
        Some(ToolRoute::Family { family, .. }) => {
            labels.insert("family".into(), family.clone());
        }
        None => {}
    }
    // A workflow's tool carries its resource's labels.
    if let Some(route) = snapshot.catalog.workflows.get(name) {
        labels.extend(route.workflow.metadata.labels.clone());
    }
    labels
}

fn usize_arg(args: &JsonObject, key: &str, default: usize) -> usize {
    args.get(key).and_then(Value::as_u64).map_or(default, |v| usize::try_from(v).unwrap_or(default))
}

fn list_tools(snapshot: &CatalogSnapshot, args: &JsonObject) -> Value {
    let tools = &snapshot.catalog.tools;
    let offset = usize_arg(args, "offset", 0);
    let limit = usize_arg(args, "limit", LIST_TOOLS_DEFAULT_LIMIT).clamp(1, 500);
    let page: Vec<Value> = tools
        .iter()
        .skip(offset)
        .take(limit)
        .map(|t| json!({"name": t.name, "summary": summary(snapshot, t)}))
        .collect();
    let next = offset + page.len();
    let mut out = json!({"tools": page, "total": tools.len(), "offset": offset, "limit": limit});
    if next < tools.len() {
        out["next_offset"] = json!(next);
    }
    let unavailable: Vec<Value> = snapshot
        .servers
        .iter()
        .filter_map(|(name, server)| {
            let connection = server.handle.status();
            connection
                .session
                .is_none()
                .then(|| json!({"name": name, "state": connection.state.as_str(), "error": connection.last_error}))
        })
        .collect();
    if !unavailable.is_empty() {
        out["servers_unavailable"] = json!(unavailable);
    }
    out
}

fn describe_tool(snapshot: &CatalogSnapshot, args: &JsonObject) -> CallToolResult {
    let Some(name) = args.get("name").and_then(Value::as_str) else {
        return invalid("describe_tool needs a \"name\" argument".to_owned());
    };
    let core = super::core::tools(true);
    match snapshot.catalog.tools.iter().chain(&core).find(|t| t.name == name) {
        Some(tool) => json_result(json!({
            "name": tool.name,
            "description": tool.description,
            "inputSchema": tool.input_schema,
            "outputSchema": tool.output_schema,
            "annotations": tool.annotations,
            "labels": labels(snapshot, name),
        })),
        None => error::tool_error(&routing::Error::ToolNotFound {
            name: name.to_owned(),
            suggestions: routing::resolve::closest(name, snapshot.catalog.tool_routes.keys().map(String::as_str), 3),
        }),
    }
}

/// Longest `pattern` accepted by `filter_tools`.
const MAX_PATTERN_CHARS: usize = 256;

/// `*` matches any run, `?` one character. Iterative, linear in practice (no recursion: a
/// hostile pattern can neither overflow the stack nor backtrack exponentially).
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((star_pi, star_ti)) = star {
            pi = star_pi + 1;
            ti = star_ti + 1;
            star = Some((star_pi, star_ti + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn filter_tools(snapshot: &CatalogSnapshot, args: &JsonObject) -> Value {
    let case_sensitive = args.get("case_sensitive").and_then(Value::as_bool).unwrap_or(false);
    let fold = |s: &str| if case_sensitive { s.to_owned() } else { s.to_lowercase() };
    let pattern = args.get("pattern").and_then(Value::as_str).map(fold);
    let description = args.get("description_filter").and_then(Value::as_str).map(fold);
    let query = args.get("query").and_then(Value::as_str).filter(|q| !q.trim().is_empty());
    let wanted_labels: BTreeMap<String, String> = args
        .get("labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default();
    let include_schema = args.get("include_schema").and_then(Value::as_bool).unwrap_or(false);
    let limit = usize_arg(args, "limit", FILTER_TOOLS_DEFAULT_LIMIT).max(1);
    let offset = usize_arg(args, "offset", 0);

    // muster's own core_* tools are found too (the mutating ones say "admin only").
    let with_core: Vec<Tool> = snapshot.catalog.tools.iter().cloned().chain(super::core::tools(true)).collect();
    let tools = &with_core;
    let documents: Vec<String> = tools.iter().map(|t| format!("{} {}", t.name, summary(snapshot, t))).collect();
    let scores = query.map(|q| super::search::bm25(q, &documents));
    let mut matches: Vec<(usize, f64)> = tools
        .iter()
        .enumerate()
        .filter(|(_, t)| pattern.as_ref().is_none_or(|p| glob(p, &fold(&t.name))))
        .filter(|(_, t)| {
            description.as_ref().is_none_or(|d| fold(t.description.as_deref().unwrap_or_default()).contains(d.as_str()))
        })
        .filter(|(_, t)| {
            let labels = labels(snapshot, &t.name);
            wanted_labels.iter().all(|(k, v)| labels.get(k.as_str()) == Some(v))
        })
        .map(|(i, _)| (i, scores.as_ref().map_or(0.0, |s| s[i])))
        .filter(|(_, score)| scores.is_none() || *score > 0.0)
        .collect();
    if scores.is_some() {
        matches.sort_by(|a, b| b.1.total_cmp(&a.1));
    }
    let filtered_count = matches.len();
    let page: Vec<Value> = matches
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(i, score)| {
            let t = &tools[*i];
            let mut entry =
                json!({"name": t.name, "summary": summary(snapshot, t), "labels": labels(snapshot, &t.name)});
            if scores.is_some() {
                entry["score"] = json!((score * 1000.0).round() / 1000.0);
            }
            if include_schema {
                entry["inputSchema"] = json!(t.input_schema);
            }
            entry
        })
        .collect();
    json!({
        "filters": args,
        "total_tools": tools.len(),
        "filtered_count": filtered_count,
        "total": filtered_count,
        "truncated": offset + page.len() < filtered_count,
        "tools": page,
    })
}

/// `call_tool`: the JSON envelope `{isError, content, structuredContent?}` as text, with the
/// top-level `isError` and `structuredContent` mirroring the inner result.
async fn call_tool(gateway: &GatewayServer, args: JsonObject, caller: &Caller) -> CallToolResult {
    let Some(name) = args.get("name").and_then(Value::as_str) else {
        return invalid("call_tool needs a \"name\" argument".to_owned());
    };
    let arguments = match args.get("arguments") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(map.clone()),
        Some(_) => return invalid("call_tool's \"arguments\" must be an object".to_owned()),
    };
    let mut dispatched = gateway.dispatch(name, arguments.clone(), super::rounds::Resume::default(), caller).await;
    if matches!(dispatched, Err(routing::Error::ToolNotFound { .. })) && caller.identity.is_some() {
        gateway.discover_for(caller.identity.as_ref()).await;
        dispatched = gateway.dispatch(name, arguments, super::rounds::Resume::default(), caller).await;
    }
    let inner = match dispatched.map(crate::backend::UpstreamResult::into_call_tool_response) {
        Ok(Some(CallToolResponse::Complete(result))) => result,
        Ok(_) => invalid(format!(
            "tool {name} answered with a task, an input request or a result muster could not read, which call_tool cannot relay; call it directly"
        )),
        Err(e) => error::tool_error(&e),
    };
    envelope(inner)
}

pub(super) fn envelope(inner: CallToolResult) -> CallToolResult {
    let is_error = inner.is_error.unwrap_or(false);
    let mut body = json!({"isError": is_error, "content": inner.content});
    if let Some(structured) = &inner.structured_content {
        body["structuredContent"] = structured.clone();
    }
    let mut result = if is_error {
        CallToolResult::error(vec![ContentBlock::text(body.to_string())])
    } else {
        CallToolResult::success(vec![ContentBlock::text(body.to_string())])
    };
    result.structured_content = inner.structured_content;
    result
}

async fn get_resource(snapshot: &CatalogSnapshot, args: &JsonObject, caller: &Caller) -> CallToolResult {
    let Some(uri) = args.get("uri").and_then(Value::as_str) else {
        return invalid("get_resource needs a \"uri\" argument".to_owned());
    };
    let (backend, upstream_uri) = match super::resource_backend(snapshot, uri) {
        Ok(found) => found,
        Err(e) => return error::tool_error(&e),
    };
    match backend.read_resource(rmcp::model::ReadResourceRequestParams::new(upstream_uri), caller).await {
        Ok(result) => json_result(serde_json::to_value(result).unwrap_or_default()),
        Err(e) => error::tool_error(&e.into()),
    }
}

async fn get_prompt(snapshot: &CatalogSnapshot, args: &JsonObject, caller: &Caller) -> CallToolResult {
    let Some(name) = args.get("name").and_then(Value::as_str) else {
        return invalid("get_prompt needs a \"name\" argument".to_owned());
    };
    let arguments = args.get("arguments").and_then(Value::as_object).cloned();
    let (backend, resolved) = match super::prompt_backend(snapshot, name, arguments) {
        Ok(found) => found,
        Err(e) => return error::tool_error(&e),
    };
    let mut params = rmcp::model::GetPromptRequestParams::new(resolved.tool);
    params.arguments = resolved.arguments;
    match backend.get_prompt(params, caller).await {
        Ok(result) => json_result(serde_json::to_value(result).unwrap_or_default()),
        Err(e) => error::tool_error(&e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_prefixes_and_single_chars() {
        assert!(glob("x_kubernetes_*", "x_kubernetes_pods_list"));
        assert!(glob("*pods?list", "x_kubernetes_pods_list"));
        assert!(!glob("x_prometheus_*", "x_kubernetes_pods_list"));
        assert!(glob("*", ""));
        assert!(!glob("a*b", "a"));
        // A pattern built to backtrack exponentially answers at once.
        let hostile = "*a".repeat(100) + "b";
        assert!(!glob(&hostile, &"a".repeat(200)));
    }

    #[test]
    fn summaries_cut_at_a_word_boundary_with_an_ellipsis() {
        assert_eq!(summarize("Lists pods.\nMore detail.", &[]), "Lists pods.");
        let long = "Get the logs of a pod container, following rotated files, with optional filters by time, \
                    level and the previous instance of a crashed container";
        let cut = summarize(long, &[]);
        assert_eq!(
            cut,
            "Get the logs of a pod container, following rotated files, with optional filters by time, level and the previous…"
        );
        assert!(cut.chars().count() <= SUMMARY_CHARS, "{cut}");
        // A single word longer than the budget is cut inside it, still with the ellipsis.
        let word = "x".repeat(200);
        assert_eq!(summarize(&word, &[]).chars().count(), SUMMARY_CHARS);
        // A cut that falls right after a whole word keeps that word.
        let exact = format!("{} tail", "y".repeat(SUMMARY_CHARS - 1));
        assert_eq!(summarize(&exact, &[]), format!("{}…", "y".repeat(SUMMARY_CHARS - 1)));
    }

    #[test]
    fn a_family_summary_keeps_its_clusters_whole_with_bare_names() {
        let long = "Get the logs of a pod container, following rotated files, with optional filters by time, \
                    level and the previous instance of a crashed container";
        let clusters = ["cluster-a", "cluster-b", "cluster-c"].map(str::to_owned);
        assert_eq!(
            summarize(long, &clusters),
            "Get the logs of a pod container, following rotated files, with optional filters by time, level and the previous… (clusters: cluster-a, cluster-b, cluster-c)"
        );
        assert_eq!(summarize("", &clusters), "(clusters: cluster-a, cluster-b, cluster-c)");
    }

    #[test]
    fn list_tools_summarizes_a_family_tool_by_its_clusters() {
        let k8s = |cluster: &str| crate::backend::ServerCapabilities {
            name: format!("{cluster}-mcp-kubernetes"),
            family: Some(crate::crd::Family { name: "kubernetes".into(), instance_arg: "management_cluster".into() }),
            tools: Arc::new(vec![tool("pods_list", "Lists the pods of a namespace", json!({"type": "object"}))]),
            ..Default::default()
        };
        let catalog = routing::catalog::build("x", &[k8s("cluster-a"), k8s("cluster-b"), k8s("cluster-c")]);
        let snapshot = CatalogSnapshot { catalog, ..Default::default() };
        let listed = list_tools(&snapshot, &JsonObject::new());
        assert_eq!(
            listed["tools"][0]["summary"],
            "Lists the pods of a namespace (clusters: cluster-a, cluster-b, cluster-c)"
        );
        // The tool's own description keeps Muster's suffix.
        assert!(snapshot.catalog.tools[0].description.as_deref().is_some_and(|d| d.ends_with(
            "(available on servers: cluster-a-mcp-kubernetes, cluster-b-mcp-kubernetes, cluster-c-mcp-kubernetes)"
        )));
    }

    #[test]
    fn envelope_mirrors_is_error_and_structured_content() {
        let mut inner = CallToolResult::error(vec![ContentBlock::text("boom")]);
        inner.structured_content = Some(json!({"code": "x"}));
        let outer = envelope(inner);
        assert_eq!(outer.is_error, Some(true));
        assert_eq!(outer.structured_content, Some(json!({"code": "x"})));
        let text = outer.content[0].as_text().map(|t| t.text.clone()).unwrap_or_default();
        let body: Value = serde_json::from_str(&text).expect("json envelope");
        assert_eq!(body["isError"], true);
        assert_eq!(body["content"][0]["text"], "boom");
        assert_eq!(body["structuredContent"]["code"], "x");
    }
}
