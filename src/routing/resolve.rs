//! `resolve_tool` and `resolve_prompt`: turn an exposed name and its arguments into one upstream
//! request.
//!
//! For family tools and prompts it reads and strips the instance argument, accepts the full
//! server name or, beyond Muster, the bare cluster name when it is unambiguous (`cluster-b` for
//! `cluster-b-mcp-kubernetes`), and otherwise fails with Muster's exact message plus the valid
//! values (full and bare names) and, when one member is clearly meant, that member.

use std::collections::BTreeMap;

use rmcp::model::JsonObject;
use serde_json::Value;

use super::catalog::{Catalog, ToolRoute};
use super::{Error, InstanceValues};

/// One resolved upstream request.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub server: String,
    /// The upstream tool's (or prompt's) own name.
    pub tool: String,
    pub arguments: Option<JsonObject>,
}

pub fn resolve_tool(catalog: &Catalog, name: &str, arguments: Option<JsonObject>) -> Result<Resolved, Error> {
    let Some(route) = catalog.tool_routes.get(name) else {
        return Err(Error::ToolNotFound {
            name: name.to_owned(),
            suggestions: closest(name, catalog.tool_routes.keys().map(String::as_str), 3),
        });
    };
    resolve_route(catalog, "tool", name, route, arguments)
}

pub fn resolve_prompt(catalog: &Catalog, name: &str, arguments: Option<JsonObject>) -> Result<Resolved, Error> {
    let Some(route) = catalog.prompt_routes.get(name) else {
        return Err(Error::PromptNotFound {
            name: name.to_owned(),
            suggestions: closest(name, catalog.prompt_routes.keys().map(String::as_str), 3),
        });
    };
    resolve_route(catalog, "prompt", name, route, arguments)
}

/// The values a family's instance argument accepts for these members: the full server names
/// and the bare cluster names `match_instance` maps back to exactly that member.
pub fn instance_values(catalog: &Catalog, members: &BTreeMap<String, String>) -> InstanceValues {
    let servers: Vec<String> = members.keys().cloned().collect();
    let clusters = servers
        .iter()
        .filter_map(|server| {
            let cluster = catalog.cluster_of(server)?;
            (match_instance(&cluster, &servers).as_deref() == Some(server.as_str())).then_some(cluster)
        })
        .collect();
    InstanceValues { servers, clusters }
}

fn resolve_route(
    catalog: &Catalog,
    kind: &'static str,
    name: &str,
    route: &ToolRoute,
    arguments: Option<JsonObject>,
) -> Result<Resolved, Error> {
    let (family, instance_arg, members) = match route {
        ToolRoute::Server { server, tool } => {
            return Ok(Resolved { server: server.clone(), tool: tool.clone(), arguments });
        }
        ToolRoute::Family { family, instance_arg, members } => (family, instance_arg, members),
    };
    let mut arguments = arguments.unwrap_or_default();
    let valid = instance_values(catalog, members);
    let value = match arguments.remove(instance_arg) {
        Some(Value::String(value)) => value,
        Some(other) => other.to_string(),
        None => {
            return Err(Error::InstanceMissing {
                kind,
                tool: name.to_owned(),
                family: family.clone(),
                instance_arg: instance_arg.clone(),
                valid: Box::new(valid),
            });
        }
    };
    if let Some(server) = match_instance(&value, &valid.servers) {
        let tool = members[&server].clone();
        return Ok(Resolved { server, tool, arguments: Some(arguments) });
    }
    // A configured member that has not listed its tools yet (down, or waiting for this
    // user's sign-in): route there, so the caller learns why it is unavailable.
    let unlisted: Vec<String> = catalog
        .family_members
        .get(family)
        .map(|m| m.iter().filter(|s| !members.contains_key(*s)).cloned().collect())
        .unwrap_or_default();
    if let (Some(server), Some(tool)) = (match_instance(&value, &unlisted), members.values().next()) {
        return Ok(Resolved { server, tool: tool.clone(), arguments: Some(arguments) });
    }
    let named: Vec<(String, Option<String>)> =
        valid.servers.iter().map(|s| (s.clone(), catalog.cluster_of(s))).collect();
    Err(Error::InstanceUnknown {
        kind,
        tool: name.to_owned(),
        closest: closest_instance(&value, &named),
        value,
        valid: Box::new(valid),
    })
}

/// The member named by `value`: the full server name, or a bare cluster name that is the
/// `{value}-` prefix of exactly one member.
fn match_instance(value: &str, members: &[String]) -> Option<String> {
    if members.iter().any(|m| m == value) {
        return Some(value.to_owned());
    }
    let prefix = format!("{value}-");
    let mut matches = members.iter().filter(|m| m.starts_with(&prefix));
    match (matches.next(), matches.next()) {
        (Some(only), None) => Some(only.clone()),
        _ => None,
    }
}

/// The name `value` most likely meant among `members` (full name, bare cluster name): the
/// nearest by edit distance, ignoring case, compared with both names of each member. Only a
/// clear winner counts: strictly nearer than every other member, with at most a third of the
/// name changed. So `cluster-bb` and `clster-b` mean `cluster-b`, while `cluster-z` is one edit
/// from every `cluster-*` and means none of them.
fn closest_instance(value: &str, members: &[(String, Option<String>)]) -> Option<String> {
    let value = value.to_lowercase();
    let mut nearest: Vec<(usize, &str)> = members
        .iter()
        .filter_map(|(full, bare)| {
            std::iter::once(full.as_str())
                .chain(bare.as_deref())
                .map(|name| (strsim::damerau_levenshtein(&value, &name.to_lowercase()), name))
                .min_by_key(|(distance, _)| *distance)
        })
        .collect();
    nearest.sort_by_key(|(distance, _)| *distance);
    let (best, name) = *nearest.first()?;
    let clear = nearest.get(1).is_none_or(|(second, _)| *second > best);
    (clear && best * 3 <= name.chars().count()).then(|| name.to_owned())
}

/// Up to `n` candidates closest to `target` (Jaro-Winkler), best first, above a floor.
pub fn closest<'a>(target: &str, candidates: impl Iterator<Item = &'a str>, n: usize) -> Vec<String> {
    let mut scored: Vec<(f64, &str)> = candidates
        .map(|c| {
            let score =
                strsim::jaro_winkler(target, c).max(if c.contains(target) || target.contains(c) { 0.9 } else { 0.0 });
            (score, c)
        })
        .filter(|(score, _)| *score >= 0.75)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.into_iter().take(n).map(|(_, c)| c.to_owned()).collect()
}

#[cfg(test)]
mod tests;
