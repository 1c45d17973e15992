//! Where a resource read, a prompt or a completion goes: the backend and the upstream's own name,
//! from the router's snapshot; a family prompt's instance argument picks the member.

use crate::routing::{self, CatalogSnapshot};

pub(super) fn resource_backend(
    snapshot: &CatalogSnapshot,
    uri: &str,
) -> Result<(crate::backend::BackendHandle, String), routing::Error> {
    let target = snapshot
        .catalog
        .resource_target(uri)
        .ok_or_else(|| routing::Error::ResourceNotFound { uri: uri.to_owned() })?;
    let backend =
        snapshot.backend(&target.server).ok_or_else(|| routing::Error::ResourceNotFound { uri: uri.to_owned() })?;
    Ok((backend.clone(), target.name))
}

/// The backend and upstream request for a prompt: a family prompt's instance argument picks the
/// member and is not forwarded.
pub(super) fn prompt_backend(
    snapshot: &CatalogSnapshot,
    name: &str,
    arguments: Option<rmcp::model::JsonObject>,
) -> Result<(crate::backend::BackendHandle, routing::resolve::Resolved), routing::Error> {
    let resolved = routing::resolve::resolve_prompt(&snapshot.catalog, name, arguments)?;
    let backend = snapshot
        .backend(&resolved.server)
        .ok_or_else(|| routing::Error::PromptNotFound { name: name.to_owned(), suggestions: Vec::new() })?;
    Ok((backend.clone(), resolved))
}

/// Completions of a family prompt's instance argument, answered here: the full and bare names
/// that start with what was typed. `None` for any other argument.
pub(super) fn instance_completion(
    snapshot: &CatalogSnapshot,
    prompt: &str,
    argument: &rmcp::model::ArgumentInfo,
) -> Option<rmcp::model::CompletionInfo> {
    let Some(routing::catalog::ToolRoute::Family { instance_arg, members, .. }) =
        snapshot.catalog.prompt_routes.get(prompt)
    else {
        return None;
    };
    if argument.name != *instance_arg {
        return None;
    }
    let valid = routing::resolve::instance_values(&snapshot.catalog, members);
    let mut values: Vec<String> =
        valid.clusters.into_iter().chain(valid.servers).filter(|v| v.starts_with(&argument.value)).collect();
    let total = values.len();
    values.truncate(rmcp::model::CompletionInfo::MAX_VALUES);
    let mut info = rmcp::model::CompletionInfo::new(values).unwrap_or_default();
    info.total = u32::try_from(total).ok();
    info.has_more = Some(total > rmcp::model::CompletionInfo::MAX_VALUES);
    Some(info)
}
