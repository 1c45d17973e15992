//! The catalog: every exposed tool, resource and prompt, and where each one routes.
//!
//! `build` is a pure function of the servers' last-known capabilities. It applies Muster's naming
//! (`{musterPrefix}_{toolPrefix|name}_{tool}`, never a doubled prefix, an empty part drops its
//! separator) and families (`{musterPrefix}_{family}_{tool}` with a required instance enum, the
//! description suffix and the three fallback rules of reference §3.2). Duplicate exposed names
//! are kept once (the first server in name order wins) and reported in `conflicts`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use rmcp::model::{JsonObject, Prompt, Resource, ResourceTemplate, Tool};
use serde_json::{Value, json};

use crate::backend::ServerCapabilities;

/// Where an exposed tool name goes.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolRoute {
    /// One server, one upstream tool.
    Server { server: String, tool: String },
    /// A family tool: the instance argument picks the member server.
    Family {
        family: String,
        instance_arg: String,
        /// Member server name -> upstream tool name, sorted.
        members: BTreeMap<String, String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteTarget {
    pub server: String,
    pub name: String,
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Exposed tools, sorted by name.
    pub tools: Vec<Tool>,
    pub tool_routes: HashMap<String, ToolRoute>,
    pub resources: Vec<Resource>,
    pub resource_routes: HashMap<String, RouteTarget>,
    pub resource_templates: Vec<ResourceTemplate>,
    /// (literal URI-template prefix before the first `{`, server, scheme-less?) for reads of templated URIs.
    pub template_routes: Vec<(String, String)>,
    pub prompts: Vec<Prompt>,
    pub prompt_routes: HashMap<String, RouteTarget>,
    /// Exposed names claimed by more than one source; the first kept it.
    pub conflicts: Vec<String>,
    /// Family fallbacks and other notes for operators.
    pub warnings: Vec<String>,
    /// Every configured member of each family, listed or not (a member that has not listed its
    /// tools yet, e.g. waiting for a user's sign-in, is still a valid instance).
    pub family_members: BTreeMap<String, BTreeSet<String>>,
}

/// The exposed name of `tool` from a server with `prefix`: `{muster}_{prefix}_{tool}`.
pub fn exposed_name(muster_prefix: &str, prefix: &str, tool: &str) -> String {
    let full = join(muster_prefix, prefix);
    if full.is_empty() {
        return tool.to_owned();
    }
    if tool.starts_with(&format!("{full}_")) {
        return tool.to_owned();
    }
    if !prefix.is_empty() && tool.starts_with(&format!("{prefix}_")) {
        return join(muster_prefix, tool);
    }
    format!("{full}_{tool}")
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}_{b}"),
    }
}

fn server_prefix(server: &ServerCapabilities) -> &str {
    server.tool_prefix.as_deref().unwrap_or(&server.name)
}

/// Builds the catalog. `servers` may come in any order; the result is deterministic.
pub fn build(muster_prefix: &str, servers: &[ServerCapabilities]) -> Catalog {
    let mut servers: Vec<&ServerCapabilities> = servers.iter().collect();
    servers.sort_by(|a, b| a.name.cmp(&b.name));
    let mut catalog = Catalog::default();
    let mut tools: BTreeMap<String, Tool> = BTreeMap::new();
    for server in &servers {
        if let Some(family) = &server.family {
            catalog.family_members.entry(family.name.clone()).or_default().insert(server.name.clone());
        }
    }

    let (families, solo) = group_families(&servers, &mut catalog.warnings);
    for (family, members) in &families {
        add_family_tools(muster_prefix, family, members, &mut tools, &mut catalog);
    }
    for (server, skip) in &solo {
        for tool in server.tools.iter().filter(|t| !skip.contains(t.name.as_ref())) {
            let name = exposed_name(muster_prefix, server_prefix(server), &tool.name);
            let route = ToolRoute::Server { server: server.name.clone(), tool: tool.name.to_string() };
            insert_tool(&mut tools, &mut catalog, name, tool.clone(), route, &server.name);
        }
    }
    catalog.tools = tools.into_values().collect();

    for server in &servers {
        add_resources_and_prompts(muster_prefix, server, &mut catalog);
    }
    catalog.resources.sort_by(|a, b| a.uri.cmp(&b.uri));
    catalog.prompts.sort_by(|a, b| a.name.cmp(&b.name));
    catalog
}

/// A server exposed under its own prefix, minus the tools its family already exposes.
type Solo<'a> = (&'a ServerCapabilities, BTreeSet<String>);

struct FamilyMembers<'a> {
    instance_arg: String,
    servers: Vec<&'a ServerCapabilities>,
}

/// Splits servers into valid families and solo servers. A solo server carries the set of tool
/// names already exposed through its family (those are not exposed again per server).
fn group_families<'a>(
    servers: &[&'a ServerCapabilities],
    warnings: &mut Vec<String>,
) -> (BTreeMap<String, FamilyMembers<'a>>, Vec<Solo<'a>>) {
    let mut families: BTreeMap<String, Vec<&ServerCapabilities>> = BTreeMap::new();
    let mut solo = Vec::new();
    for server in servers {
        match &server.family {
            Some(family) => families.entry(family.name.clone()).or_default().push(server),
            None => solo.push((*server, BTreeSet::new())),
        }
    }
    let mut valid = BTreeMap::new();
    for (name, members) in families {
        let args: BTreeSet<&str> =
            members.iter().filter_map(|m| m.family.as_ref()).map(|f| f.instance_arg.as_str()).collect();
        if args.len() > 1 {
            warnings.push(format!(
                "family {name}: members disagree on instanceArg ({}); falling back to per-server names",
                args.into_iter().collect::<Vec<_>>().join(", ")
            ));
            solo.extend(members.into_iter().map(|m| (m, BTreeSet::new())));
            continue;
        }
        let instance_arg = args.into_iter().next().unwrap_or_default().to_owned();
        valid.insert(name, FamilyMembers { instance_arg, servers: members });
    }
    (valid, solo)
}

fn add_family_tools(
    muster_prefix: &str,
    family: &str,
    members: &FamilyMembers<'_>,
    tools: &mut BTreeMap<String, Tool>,
    catalog: &mut Catalog,
) {
    // Tool name -> the members offering it, in server-name order.
    let mut by_tool: BTreeMap<&str, Vec<(&ServerCapabilities, &Tool)>> = BTreeMap::new();
    for server in &members.servers {
        for tool in server.tools.iter() {
            by_tool.entry(tool.name.as_ref()).or_default().push((server, tool));
        }
    }
    for (tool_name, offers) in by_tool {
        let descriptions: BTreeSet<Option<&str>> = offers.iter().map(|(_, t)| t.description.as_deref()).collect();
        let collides = offers.iter().any(|(_, t)| {
            t.input_schema
                .get("properties")
                .and_then(Value::as_object)
                .is_some_and(|p| p.contains_key(&members.instance_arg))
        });
        if descriptions.len() > 1 || collides {
            let why = if collides {
                format!("its input already has a {:?} property", members.instance_arg)
            } else {
                "members describe it differently".to_owned()
            };
            catalog.warnings.push(format!("family {family}: tool {tool_name} falls back to per-server names: {why}"));
            for (server, tool) in offers {
                let name = exposed_name(muster_prefix, server_prefix(server), &tool.name);
                let route = ToolRoute::Server { server: server.name.clone(), tool: tool.name.to_string() };
                insert_tool(tools, catalog, name, tool.clone(), route, &server.name);
            }
            continue;
        }
        let member_names: Vec<String> = offers.iter().map(|(s, _)| s.name.clone()).collect();
        let (_, first) = offers[0];
        let exposed = family_tool(first, &members.instance_arg, &member_names);
        let name = exposed_name(muster_prefix, family, tool_name);
        let route = ToolRoute::Family {
            family: family.to_owned(),
            instance_arg: members.instance_arg.clone(),
            members: offers.iter().map(|(s, t)| (s.name.clone(), t.name.to_string())).collect(),
        };
        insert_tool(tools, catalog, name, exposed, route, &format!("family {family}"));
    }
}

/// The family's view of one tool: the instance enum added (and required), the suffix appended.
fn family_tool(tool: &Tool, instance_arg: &str, members: &[String]) -> Tool {
    let mut schema: JsonObject = (*tool.input_schema).clone();
    let list = members.join(", ");
    let properties = schema.entry("properties").or_insert_with(|| json!({}));
    if let Some(properties) = properties.as_object_mut() {
        properties.insert(
            instance_arg.to_owned(),
            json!({
                "type": "string",
                "enum": members,
                "description": format!("Target instance to execute this tool on. Available: {list}"),
            }),
        );
    }
    let required = schema.entry("required").or_insert_with(|| json!([]));
    if let Some(required) = required.as_array_mut() {
        required.push(json!(instance_arg));
    }
    schema.entry("type").or_insert_with(|| json!("object"));
    let mut out = tool.clone();
    out.input_schema = Arc::new(schema);
    let description = tool.description.as_deref().unwrap_or_default();
    let suffix = format!("(available on servers: {list})");
    out.description = Some(if description.is_empty() { suffix } else { format!("{description} {suffix}") }.into());
    out
}

fn insert_tool(
    tools: &mut BTreeMap<String, Tool>,
    catalog: &mut Catalog,
    name: String,
    mut tool: Tool,
    route: ToolRoute,
    source: &str,
) {
    if catalog.tool_routes.contains_key(&name) {
        catalog.conflicts.push(format!("tool {name} from {source} is already exposed by another server; ignored"));
        return;
    }
    tool.name = name.clone().into();
    tools.insert(name.clone(), tool);
    catalog.tool_routes.insert(name, route);
}

fn add_resources_and_prompts(muster_prefix: &str, server: &ServerCapabilities, catalog: &mut Catalog) {
    let prefix = server_prefix(server);
    for resource in server.resources.iter() {
        // Muster: URIs with a scheme pass through unchanged; others are prefixed.
        let uri = if resource.uri.contains("://") {
            resource.uri.clone()
        } else {
            exposed_name(muster_prefix, prefix, &resource.uri)
        };
        if catalog.resource_routes.contains_key(&uri) {
            catalog
                .conflicts
                .push(format!("resource {uri} from {} is already exposed by another server; ignored", server.name));
            continue;
        }
        let mut exposed = resource.clone();
        exposed.uri = uri.clone();
        catalog.resources.push(exposed);
        catalog.resource_routes.insert(uri, RouteTarget { server: server.name.clone(), name: resource.uri.clone() });
    }
    for template in server.resource_templates.iter() {
        let literal = template.uri_template.split('{').next().unwrap_or_default().to_owned();
        catalog.template_routes.push((literal, server.name.clone()));
        catalog.resource_templates.push(template.clone());
    }
    for prompt in server.prompts.iter() {
        let name = exposed_name(muster_prefix, prefix, &prompt.name);
        if catalog.prompt_routes.contains_key(&name) {
            catalog
                .conflicts
                .push(format!("prompt {name} from {} is already exposed by another server; ignored", server.name));
            continue;
        }
        let mut exposed = prompt.clone();
        exposed.name = name.clone();
        catalog.prompts.push(exposed);
        catalog.prompt_routes.insert(name, RouteTarget { server: server.name.clone(), name: prompt.name.clone() });
    }
}

impl Catalog {
    /// The server and upstream URI for a `resources/read` of `uri`.
    /// The cluster a family member serves: its name without the suffix all members of its
    /// family share (`cluster-b` for `cluster-b-mcp-kubernetes` beside `cluster-a-mcp-kubernetes`),
    /// or, for a family of one, without `-mcp-{family}`.
    pub fn cluster_of(&self, server: &str) -> Option<String> {
        let (family, members) = self.family_members.iter().find(|(_, members)| members.contains(server))?;
        let suffix = if members.len() > 1 {
            let mut suffix = server;
            for member in members {
                let common = suffix.chars().rev().zip(member.chars().rev()).take_while(|(a, b)| a == b).count();
                suffix = &suffix[suffix.len() - suffix.chars().rev().take(common).map(char::len_utf8).sum::<usize>()..];
            }
            // Cut at a '-', so `cluster-a`/`cluster-b` do not share the `a`-less tail of a name.
            let dash = suffix.find('-')?;
            suffix[dash..].to_owned()
        } else {
            format!("-mcp-{family}")
        };
        server.strip_suffix(suffix.as_str()).filter(|cluster| !cluster.is_empty()).map(str::to_owned)
    }

    pub fn resource_target(&self, uri: &str) -> Option<RouteTarget> {
        if let Some(target) = self.resource_routes.get(uri) {
            return Some(target.clone());
        }
        self.template_routes
            .iter()
            .filter(|(literal, _)| !literal.is_empty() && uri.starts_with(literal.as_str()))
            .max_by_key(|(literal, _)| literal.len())
            .map(|(_, server)| RouteTarget { server: server.clone(), name: uri.to_owned() })
    }
}

#[cfg(test)]
mod tests;
