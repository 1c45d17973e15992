//! The MCPServer resource (`muster.giantswarm.io/v1alpha1`): its types and every validation rule.
//! The Workflow resource is in `crd/workflow.rs`.
//!
//! The same types come from YAML files (filesystem mode, `crd/files.rs`) and, later, from the
//! Kubernetes API. Validation collects every problem at once, so `muster check-config` can list
//! them all; it mirrors the CRD's OpenAPI patterns and CEL admission rules (reference §2.1).

// KubeSchema expands a private copy of each type it derives for, which trips `unreachable_pub`.
#![allow(unreachable_pub, reason = "false positive from kube's KubeSchema derive")]
#![allow(clippy::duplicated_attributes, reason = "several printcolumn(type_ = \"string\") are not duplicates")]

pub mod execution;
pub mod files;
pub mod kubernetes;
pub mod leader;
pub mod resources;
pub mod sink;
pub mod status;
pub mod workflow;

use std::collections::BTreeMap;

use kube::CustomResource;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::egress::{self, is_https_or_loopback};

pub const API_VERSION: &str = "muster.giantswarm.io/v1alpha1";
pub const KIND: &str = "MCPServer";

/// An MCPServer resource as written by users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct McpServer {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: McpServerSpec,
    /// Written by muster; ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ServerType {
    #[serde(rename = "stdio")]
    Stdio,
    #[serde(rename = "streamable-http")]
    StreamableHttp,
    #[serde(rename = "sse")]
    Sse,
}

/// The desired state of one upstream MCP server. `kube` derives the `McpServerResource` (kind
/// `MCPServer`) and its CRD from this type; `muster print-crd` prints it (reference §2.1).
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[kube(
    group = "muster.giantswarm.io",
    version = "v1alpha1",
    kind = "MCPServer",
    root = "McpServerResource",
    namespaced,
    status = "status::Status",
    shortname = "mcps",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
    printcolumn(name = "AutoStart", type_ = "boolean", json_path = ".spec.autoStart"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("self.type != 'stdio' || has(self.command)").message("command is required when type is stdio"),
    validation = Rule::new("self.type == 'stdio' || has(self.url)").message("url is required for streamable-http and sse servers"),
    validation = Rule::new("self.type == 'stdio' || !has(self.args)").message("args is only allowed for stdio servers"),
    validation = Rule::new("self.type != 'stdio' || !has(self.headers)").message("headers is only allowed for streamable-http and sse servers")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct McpServerSpec {
    #[serde(rename = "type")]
    #[schemars(required)]
    pub server_type: Option<ServerType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^([a-zA-Z][a-zA-Z0-9_-]*)?$"))]
    pub tool_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<Family>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 500))]
    pub description: Option<String>,
    #[serde(default)]
    pub auto_start: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https?://.+"))]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Connect/initialize timeout in seconds (1–300, default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Family {
    #[schemars(pattern(r"^[a-zA-Z][a-zA-Z0-9_-]*$"))]
    pub name: String,
    #[schemars(pattern(r"^[a-zA-Z][a-zA-Z0-9_]*$"))]
    pub instance_arg: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthType {
    Oauth,
    #[default]
    None,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, KubeSchema)]
#[x_kube(
    validation = Rule::new("!has(self.authorizationServer) || (has(self.type) && self.type == 'oauth')").message("authorizationServer is only valid with type oauth"),
    validation = Rule::new("!(has(self.forwardToken) && self.forwardToken && has(self.authorizationServer))").message("forwardToken and authorizationServer are mutually exclusive"),
    validation = Rule::new("!(has(self.tokenExchange) && has(self.tokenExchange.enabled) && self.tokenExchange.enabled && has(self.authorizationServer))").message("tokenExchange.enabled and authorizationServer are mutually exclusive")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Auth {
    #[serde(rename = "type", default)]
    pub auth_type: AuthType,
    #[serde(default)]
    pub forward_token: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_audiences: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_exchange: Option<TokenExchange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_server: Option<AuthorizationServer>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.enabled) || !self.enabled || (has(self.dexTokenEndpoint) && has(self.connectorId))").message("dexTokenEndpoint and connectorId are required when token exchange is enabled"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenExchange {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https://.+|^http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]+)?/.*"))]
    pub dex_token_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https://.+|^http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]+)?(/.*)?$"))]
    pub expected_issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-zA-Z][a-zA-Z0-9_-]*$"))]
    pub connector_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_credentials_secret_ref: Option<SecretRef>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationServer {
    #[schemars(pattern(r"^https://[^?#]*[^/?#]$"))]
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<String>,
}

/// Longest user-given value (name, URL, ...) that a problem message repeats.
pub const MAX_SHOWN_CHARS: usize = 64;

/// `value` quoted for a problem message, cut after `MAX_SHOWN_CHARS` characters (a 1 MB
/// `metadata.name` must not come back whole in every error).
pub fn quoted(value: &str) -> String {
    match value.char_indices().nth(MAX_SHOWN_CHARS) {
        Some((end, _)) => format!("{:?}…", &value[..end]),
        None => format!("{value:?}"),
    }
}

/// `value` cut as `quoted` cuts it, without the quotes.
pub fn shortened(value: &str) -> String {
    match value.char_indices().nth(MAX_SHOWN_CHARS) {
        Some((end, _)) => format!("{}…", &value[..end]),
        None => value.to_owned(),
    }
}

/// One validation problem: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

pub const DEFAULT_TIMEOUT_SECS: u32 = 30;

/// The CustomResourceDefinition as YAML (`muster print-crd`, `deploy/crds/mcpserver.yaml`).
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt as _;
    let body = serde_saphyr::to_string(&McpServerResource::crd()).unwrap_or_default();
    format!("# Generated by `muster print-crd` from src/crd.rs. Do not edit: a test fails when it is stale.\n{body}")
}

impl McpServerResource {
    /// The resource as the supervisor sees it (the same type as filesystem mode).
    pub fn to_definition(&self) -> McpServer {
        McpServer {
            api_version: API_VERSION.to_owned(),
            kind: KIND.to_owned(),
            metadata: ObjectMeta {
                name: self.metadata.name.clone().unwrap_or_default(),
                namespace: self.metadata.namespace.clone(),
                labels: self.metadata.labels.clone().unwrap_or_default(),
                annotations: self.metadata.annotations.clone().unwrap_or_default(),
            },
            spec: self.spec.clone(),
            status: None,
        }
    }
}

impl McpServer {
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// Every problem with this resource; empty when it is valid.
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut problem = |field: &str, message: String| {
            out.push(Problem { field: field.to_owned(), message });
        };
        if self.api_version != API_VERSION {
            problem("apiVersion", format!("must be {API_VERSION}, got {}", quoted(&self.api_version)));
        }
        if self.kind != KIND {
            problem("kind", format!("must be {KIND}, got {}", quoted(&self.kind)));
        }
        if !is_dns_label(&self.metadata.name) {
            problem(
                "metadata.name",
                format!(
                    "{} is not a valid name (lowercase letters, digits and '-', at most 63, starting and ending alphanumeric)",
                    quoted(&self.metadata.name)
                ),
            );
        }
        let spec = &self.spec;
        let Some(server_type) = spec.server_type else {
            problem("spec.type", "is required (stdio, streamable-http or sse)".to_owned());
            return out;
        };
        if let Some(prefix) = &spec.tool_prefix
            && !prefix.is_empty()
            && !is_identifier(prefix, true)
        {
            problem(
                "spec.toolPrefix",
                format!("{} must match ^[a-zA-Z][a-zA-Z0-9_-]*$ (or be empty for no prefix)", quoted(prefix)),
            );
        }
        if let Some(family) = &spec.family {
            if !is_identifier(&family.name, true) {
                problem("spec.family.name", format!("{} must match ^[a-zA-Z][a-zA-Z0-9_-]*$", quoted(&family.name)));
            }
            if !is_identifier(&family.instance_arg, false) {
                problem(
                    "spec.family.instanceArg",
                    format!("{} must match ^[a-zA-Z][a-zA-Z0-9_]*$", quoted(&family.instance_arg)),
                );
            }
        }
        if let Some(description) = &spec.description
            && description.chars().count() > 500
        {
            problem("spec.description", "must be at most 500 characters".to_owned());
        }
        if let Some(timeout) = spec.timeout
            && !(1..=300).contains(&timeout)
        {
            problem("spec.timeout", format!("{timeout} is out of range 1–300 seconds"));
        }
        match server_type {
            ServerType::Stdio => {
                if spec.command.as_deref().is_none_or(str::is_empty) {
                    problem("spec.command", "is required when type is stdio".to_owned());
                }
                if !spec.headers.is_empty() {
                    problem("spec.headers", "is only allowed for streamable-http and sse servers".to_owned());
                }
                if spec.url.is_some() {
                    problem("spec.url", "is not used by stdio servers".to_owned());
                }
            }
            ServerType::StreamableHttp | ServerType::Sse => {
                match spec.url.as_deref() {
                    None | Some("") => {
                        problem("spec.url", format!("is required when type is {}", server_type.as_str()))
                    }
                    Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                        problem("spec.url", format!("{} must start with http:// or https://", quoted(url)));
                    }
                    Some(url) if reqwest::Url::parse(url).is_err() => {
                        problem("spec.url", format!("{} is not a valid URL", quoted(url)));
                    }
                    // Link-local and metadata addresses, whatever `allowPrivateNetworks` says;
                    // private ranges depend on config.yaml and are checked where it is known.
                    Some(url) => {
                        if let Err(refused) = (egress::Policy { allow_private_networks: true }).check_url(url) {
                            problem("spec.url", format!("{} is refused: {refused}", quoted(url)));
                        }
                    }
                }
                if !spec.args.is_empty() {
                    problem("spec.args", "is only allowed for stdio servers".to_owned());
                }
                if spec.command.is_some() {
                    problem("spec.command", "is only allowed for stdio servers".to_owned());
                }
            }
        }
        if let Some(auth) = &spec.auth {
            validate_auth(auth, &mut problem);
            // The user's own token goes in Authorization; a static one beside it would reach the
            // upstream for every user.
            if spec.headers.keys().any(|h| h.eq_ignore_ascii_case("authorization")) {
                problem("spec.headers", "must not set Authorization when spec.auth is set".to_owned());
            }
        }
        out
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.spec.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS)))
    }
}

fn validate_auth(auth: &Auth, problem: &mut impl FnMut(&str, String)) {
    if auth.authorization_server.is_some() {
        if auth.auth_type != AuthType::Oauth {
            problem("spec.auth.authorizationServer", "is only valid with auth.type oauth".to_owned());
        }
        if auth.forward_token {
            problem("spec.auth", "forwardToken and authorizationServer are mutually exclusive".to_owned());
        }
        if auth.token_exchange.as_ref().is_some_and(|t| t.enabled) {
            problem("spec.auth", "tokenExchange.enabled and authorizationServer are mutually exclusive".to_owned());
        }
    }
    if let Some(server) = &auth.authorization_server
        && (!server.issuer.starts_with("https://")
            || server.issuer.ends_with('/')
            || server.issuer.contains(['?', '#']))
    {
        problem(
            "spec.auth.authorizationServer.issuer",
            format!("{} must be an https URL without trailing slash, query or fragment", quoted(&server.issuer)),
        );
    }
    let Some(exchange) = &auth.token_exchange else { return };
    if !exchange.enabled {
        return;
    }
    match exchange.dex_token_endpoint.as_deref() {
        None | Some("") => {
            problem("spec.auth.tokenExchange.dexTokenEndpoint", "is required when token exchange is enabled".to_owned())
        }
        Some(url) if !is_https_or_loopback(url) => problem(
            "spec.auth.tokenExchange.dexTokenEndpoint",
            format!("{} must be an https URL (http is allowed only for loopback hosts)", quoted(url)),
        ),
        Some(_) => {}
    }
    if let Some(issuer) = exchange.expected_issuer.as_deref()
        && !is_https_or_loopback(issuer)
    {
        problem(
            "spec.auth.tokenExchange.expectedIssuer",
            format!("{} must be an https URL (http is allowed only for loopback hosts)", quoted(issuer)),
        );
    }
    match exchange.connector_id.as_deref() {
        None | Some("") => {
            problem("spec.auth.tokenExchange.connectorId", "is required when token exchange is enabled".to_owned())
        }
        Some(id) if !is_identifier(id, true) => {
            problem(
                "spec.auth.tokenExchange.connectorId",
                format!("{} must match ^[a-zA-Z][a-zA-Z0-9_-]*$", quoted(id)),
            );
        }
        Some(_) => {}
    }
    if let Some(secret) = &exchange.client_credentials_secret_ref
        && secret.name.is_empty()
    {
        problem("spec.auth.tokenExchange.clientCredentialsSecretRef.name", "is required".to_owned());
    }
}

impl ServerType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdio => "stdio",
            Self::StreamableHttp => "streamable-http",
            Self::Sse => "sse",
        }
    }
}

/// The start of a parser error, at most 300 characters (it may quote the file).
fn first_line(s: &str) -> String {
    let text = s.lines().take(3).collect::<Vec<_>>().join(" ");
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// `^[a-zA-Z][a-zA-Z0-9_-]*$`, or without `-` when `dash` is false.
fn is_identifier(s: &str, dash: bool) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (dash && c == '-'))
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests;
