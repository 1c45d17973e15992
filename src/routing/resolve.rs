//! `resolve_tool`: turns an exposed tool name and its arguments into one upstream call.
//!
//! For family tools it reads and strips the instance argument, accepts the full server name or,
//! beyond Muster, the bare cluster name when it is unambiguous (`cluster-b` for
//! `cluster-b-mcp-kubernetes`), and otherwise fails with Muster's exact message plus the valid
//! values and the closest match.

use rmcp::model::JsonObject;
use serde_json::Value;

use super::Error;
use super::catalog::{Catalog, ToolRoute};

/// One resolved upstream call.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub server: String,
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
    match route {
        ToolRoute::Server { server, tool } => Ok(Resolved { server: server.clone(), tool: tool.clone(), arguments }),
        ToolRoute::Family { family, instance_arg, members } => {
            let mut arguments = arguments.unwrap_or_default();
            let valid: Vec<String> = members.keys().cloned().collect();
            let value = match arguments.remove(instance_arg) {
                Some(Value::String(value)) => value,
                Some(other) => other.to_string(),
                None => {
                    return Err(Error::InstanceMissing {
                        tool: name.to_owned(),
                        family: family.clone(),
                        instance_arg: instance_arg.clone(),
                        valid,
                    });
                }
            };
            if let Some(server) = match_instance(&value, &valid) {
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
            Err(Error::InstanceUnknown {
                tool: name.to_owned(),
                value: value.clone(),
                closest: closest(&value, valid.iter().map(String::as_str), 1).into_iter().next(),
                valid,
            })
        }
    }
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
