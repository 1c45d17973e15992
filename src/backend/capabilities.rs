//! `ServerCapabilities`: what one upstream server offers (tools, resources, templates, prompts)
//! with its name, prefix and family, as its session listed them. The backend produces it; the
//! router builds the catalog from it.

use std::sync::Arc;

use rmcp::model::{Prompt, Resource, ResourceTemplate, Tool};

use crate::crd::Family;

/// What one server offers, as input to the catalog.
#[derive(Debug, Clone, Default)]
pub struct ServerCapabilities {
    pub name: String,
    /// `None` uses the server name; `Some("")` exposes names unprefixed.
    pub tool_prefix: Option<String>,
    pub family: Option<Family>,
    pub tools: Arc<Vec<Tool>>,
    pub resources: Arc<Vec<Resource>>,
    pub resource_templates: Arc<Vec<ResourceTemplate>>,
    pub prompts: Arc<Vec<Prompt>>,
}
