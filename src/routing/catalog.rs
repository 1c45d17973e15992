//! The catalog: every exposed tool, resource and prompt, and where each one routes.
//!
//! `build` is a pure function of the servers' last-known capabilities. It applies Muster's naming
//! (`{musterPrefix}_{toolPrefix|name}_{tool}`, never a doubled prefix, an empty part drops its
//! separator) and families (`{musterPrefix}_{family}_{tool}` with a required instance enum, the
//! description suffix and the three fallback rules of reference §3.2). A family's prompts
//! collapse the same way (`{musterPrefix}_{family}_{prompt}` with a required instance argument),
//! which Muster does not do. Duplicate exposed names are kept once (the first server in name
//! order wins) and reported in `conflicts`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use rmcp::model::{JsonObject, Prompt, PromptArgument, Resource, ResourceTemplate, Tool};
use serde_json::{Value, json};

use crate::backend::ServerCapabilities;

/// Where an exposed tool (or prompt) name goes; for a prompt, `tool` is the upstream prompt.
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

/// A workflow the catalog routes to, and the referenced tools it lacks.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRoute {
    pub workflow: Arc<crate::crd::workflow::Workflow>,
    pub missing_tools: Vec<String>,
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
    pub prompt_routes: HashMap<String, ToolRoute>,
    /// Exposed names claimed by more than one source; the first kept it.
    pub conflicts: Vec<String>,
    /// Family fallbacks and other notes for operators.
    pub warnings: Vec<String>,
    /// Every configured member of each family, listed or not (a member that has not listed its
    /// tools yet, e.g. waiting for a user's sign-in, is still a valid instance).
    pub family_members: BTreeMap<String, BTreeSet<String>>,
    /// `workflow_<name>` -> the workflow it runs (routing/workflows.rs).
    pub workflows: BTreeMap<String, WorkflowRoute>,
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
        add_resources(muster_prefix, server, &mut catalog);
    }
    for (family, members) in &families {
        add_family_prompts(muster_prefix, family, members, &mut catalog);
    }
    for (server, _) in &solo {
        for prompt in server.prompts.iter() {
            let name = exposed_name(muster_prefix, server_prefix(server), &prompt.name);
            let route = ToolRoute::Server { server: server.name.clone(), tool: prompt.name.clone() };
            insert_prompt(&mut catalog, name, prompt.clone(), route, &server.name);
        }
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
    let suffix = family_suffix(members);
    out.description = Some(if description.is_empty() { suffix } else { format!("{description} {suffix}") }.into());
    out
}

/// Muster's suffix on a family tool's description, `(available on servers: a, b)`.
pub fn family_suffix(members: &[String]) -> String {
    format!("{FAMILY_SUFFIX_START}{})", members.join(", "))
}

const FAMILY_SUFFIX_START: &str = "(available on servers: ";

/// A description without its family suffix, and the servers that suffix names (for clients
/// that only see the description, e.g. `muster list tools` against direct exposure).
pub fn split_family_suffix(description: &str) -> (&str, Option<Vec<String>>) {
    let Some(start) = description.rfind(FAMILY_SUFFIX_START) else { return (description, None) };
    let Some(list) = description[start + FAMILY_SUFFIX_START.len()..].strip_suffix(')') else {
        return (description, None);
    };
    let servers = list.split(", ").map(str::to_owned).collect();
    (description[..start].trim_end(), Some(servers))
}

/// The clusters of family members known only by name: each without the suffix all of them share
/// or, for one server, without its `-mcp-…` tail. The catalog's own `cluster_of` knows the whole
/// family and is preferred.
pub fn cluster_names(servers: &[String]) -> Vec<String> {
    let suffix = match servers {
        [only] => only.find("-mcp-").map(|at| only[at..].to_owned()),
        _ => shared_suffix(servers.iter().map(String::as_str)),
    };
    servers
        .iter()
        .map(|server| {
            suffix
                .as_deref()
                .and_then(|suffix| server.strip_suffix(suffix))
                .filter(|cluster| !cluster.is_empty())
                .unwrap_or(server)
                .to_owned()
        })
        .collect()
}

/// The tail all `names` share, from a '-' on (so `cluster-a`/`cluster-b` do not share the
/// `a`-less tail of a name).
fn shared_suffix<'a>(mut names: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut suffix = names.next()?;
    for name in names {
        let common = suffix.chars().rev().zip(name.chars().rev()).take_while(|(a, b)| a == b).count();
        suffix = &suffix[suffix.len() - suffix.chars().rev().take(common).map(char::len_utf8).sum::<usize>()..];
    }
    let dash = suffix.find('-')?;
    Some(suffix[dash..].to_owned())
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

fn add_resources(muster_prefix: &str, server: &ServerCapabilities, catalog: &mut Catalog) {
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
    // Templates are not collapsed into one per family, unlike tools and prompts: a URI has no
    // slot for the instance argument, and inventing one (`…{?management_cluster}`) would hand
    // clients URIs that no upstream issued, which its completions, subscriptions and resource
    // links would never show. A template several servers share (a family's `k8s://{namespace}/pods`)
    // is listed once, from the first server in name order, which serves its reads; its
    // description says so. Reading from a chosen cluster is what the family's tools are for.
    for template in server.resource_templates.iter() {
        if let Some(index) = catalog.resource_templates.iter().position(|t| t.uri_template == template.uri_template) {
            // Template routes are pushed beside their templates, so `index` is its route too.
            let note = format!(" (reads go to {}; other servers offer it too)", catalog.template_routes[index].1);
            let kept = &mut catalog.resource_templates[index];
            if kept.description.as_deref().is_none_or(|d| !d.ends_with(note.trim_start())) {
                let description = format!("{}{note}", kept.description.as_deref().unwrap_or_default());
                kept.description = Some(description.trim_start().to_owned());
            }
            continue;
        }
        let literal = template.uri_template.split('{').next().unwrap_or_default().to_owned();
        catalog.template_routes.push((literal, server.name.clone()));
        catalog.resource_templates.push(template.clone());
    }
}

/// A family's prompts, collapsed like its tools: one prompt per name with the instance argument
/// added (required), under the same two per-prompt fallbacks (members describe it differently,
/// or it already has an argument named like the instance).
fn add_family_prompts(muster_prefix: &str, family: &str, members: &FamilyMembers<'_>, catalog: &mut Catalog) {
    let mut by_prompt: BTreeMap<&str, Vec<(&ServerCapabilities, &Prompt)>> = BTreeMap::new();
    for server in &members.servers {
        for prompt in server.prompts.iter() {
            by_prompt.entry(prompt.name.as_str()).or_default().push((server, prompt));
        }
    }
    for (prompt_name, offers) in by_prompt {
        let descriptions: BTreeSet<Option<&str>> = offers.iter().map(|(_, p)| p.description.as_deref()).collect();
        let collides = offers.iter().any(|(_, p)| p.arguments.iter().flatten().any(|a| a.name == members.instance_arg));
        if descriptions.len() > 1 || collides {
            let why = if collides {
                format!("it already has a {:?} argument", members.instance_arg)
            } else {
                "members describe it differently".to_owned()
            };
            catalog
                .warnings
                .push(format!("family {family}: prompt {prompt_name} falls back to per-server names: {why}"));
            for (server, prompt) in offers {
                let name = exposed_name(muster_prefix, server_prefix(server), &prompt.name);
                let route = ToolRoute::Server { server: server.name.clone(), tool: prompt.name.clone() };
                insert_prompt(catalog, name, prompt.clone(), route, &server.name);
            }
            continue;
        }
        let member_names: Vec<String> = offers.iter().map(|(s, _)| s.name.clone()).collect();
        let mut exposed = offers[0].1.clone();
        let argument = PromptArgument::new(members.instance_arg.clone())
            .with_description(format!(
                "Target instance to get this prompt from: a server or its cluster's name. Available: {}",
                member_names.join(", ")
            ))
            .with_required(true);
        exposed.arguments.get_or_insert_with(Vec::new).push(argument);
        let route = ToolRoute::Family {
            family: family.to_owned(),
            instance_arg: members.instance_arg.clone(),
            members: offers.iter().map(|(s, p)| (s.name.clone(), p.name.clone())).collect(),
        };
        let name = exposed_name(muster_prefix, family, prompt_name);
        insert_prompt(catalog, name, exposed, route, &format!("family {family}"));
    }
}

fn insert_prompt(catalog: &mut Catalog, name: String, mut prompt: Prompt, route: ToolRoute, source: &str) {
    if catalog.prompt_routes.contains_key(&name) {
        catalog.conflicts.push(format!("prompt {name} from {source} is already exposed by another server; ignored"));
        return;
    }
    prompt.name = name.clone();
    catalog.prompts.push(prompt);
    catalog.prompt_routes.insert(name, route);
}

impl Catalog {
    /// The cluster a family member serves: its name without the suffix all members of its
    /// family share (`cluster-b` for `cluster-b-mcp-kubernetes` beside `cluster-a-mcp-kubernetes`),
    /// or, for a family of one, without `-mcp-{family}`.
    pub fn cluster_of(&self, server: &str) -> Option<String> {
        let (family, members) = self.family_members.iter().find(|(_, members)| members.contains(server))?;
        let suffix = if members.len() > 1 {
            shared_suffix(members.iter().map(String::as_str))?
        } else {
            format!("-mcp-{family}")
        };
        server.strip_suffix(suffix.as_str()).filter(|cluster| !cluster.is_empty()).map(str::to_owned)
    }

    /// The server and upstream URI for a `resources/read` of `uri`.
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
