//! The one place where routing and backend errors become MCP wire objects.
//!
//! Tool-call failures reach agents as tool results with `isError: true` and
//! `structuredContent {code, message, validValues?, closest?, suggestions?, server?}`
//! (`validValues` holds a family's full server names, then the bare cluster names also accepted), so a model
//! can read the text and a program can read the code. Resource and prompt failures are JSON-RPC
//! errors. Messages never carry tokens or internal addresses beyond the configured server name.

use rmcp::ErrorData;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientRequest, CompleteRequestParams, ContentBlock, GetPromptRequestParams,
    InitializeRequestParams, ReadResourceRequestParams, SetLevelRequestParams, SubscribeRequestParams,
    UnsubscribeRequestParams,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::backend;
use crate::routing::Error;

/// A request a session does not serve. A known method whose params do not fit it arrives as a
/// custom request (rmcp's decoding falls back to one): that is invalid params, saying what does
/// not fit. Anything else is a method this revision does not have.
pub fn not_served(request: &ClientRequest) -> ErrorData {
    if let ClientRequest::CustomRequest(custom) = request {
        let params = custom.params.clone().unwrap_or(Value::Null);
        let misfit = match custom.method.as_str() {
            "logging/setLevel" => misfit::<SetLevelRequestParams>(params),
            "tools/call" => misfit::<CallToolRequestParams>(params),
            "resources/read" => misfit::<ReadResourceRequestParams>(params),
            "resources/subscribe" => misfit::<SubscribeRequestParams>(params),
            "resources/unsubscribe" => misfit::<UnsubscribeRequestParams>(params),
            "prompts/get" => misfit::<GetPromptRequestParams>(params),
            "completion/complete" => misfit::<CompleteRequestParams>(params),
            "initialize" => misfit::<InitializeRequestParams>(params),
            _ => None,
        };
        if let Some(misfit) = misfit {
            return ErrorData::invalid_params(format!("invalid params for {}: {misfit}", custom.method), None);
        }
    }
    ErrorData::new(
        rmcp::model::ErrorCode::METHOD_NOT_FOUND,
        format!("{} is not served on this protocol revision", request.method()),
        None,
    )
}

/// Why `params` do not decode as `T`, in the agent's terms (serde names the Rust type when the
/// params are not an object at all).
fn misfit<T: DeserializeOwned>(params: Value) -> Option<String> {
    if !params.is_object() {
        return Some("params must be an object".to_owned());
    }
    let text = serde_json::from_value::<T>(params).err()?.to_string();
    // A nested object of the wrong shape is named by its Rust type too.
    Some(match text.find("expected struct ") {
        Some(at) => {
            let after = &text[at + "expected struct ".len()..];
            let end = after.find(|c: char| !c.is_alphanumeric() && c != '_').unwrap_or(after.len());
            format!("{}expected an object{}", &text[..at], &after[end..])
        }
        None => text,
    })
}

/// A stable, machine-readable code for each failure.
pub fn code(error: &Error) -> &'static str {
    match error {
        Error::ToolNotFound { .. } => "tool_not_found",
        Error::InstanceMissing { .. } => "instance_required",
        Error::InstanceUnknown { .. } => "instance_unknown",
        Error::ResourceNotFound { .. } => "resource_not_found",
        Error::PromptNotFound { .. } => "prompt_not_found",
        Error::Backend(e) => backend_code(e),
        Error::OnCluster { error, .. } => backend_code(error),
    }
}

fn backend_code(error: &backend::Error) -> &'static str {
    match error {
        backend::Error::NotConnected { .. } => "server_unavailable",
        backend::Error::Timeout { .. } => "upstream_timeout",
        backend::Error::Busy { .. } => "server_busy",
        backend::Error::Upstream { .. } => "upstream_failed",
        backend::Error::TooLarge { .. } => "result_too_large",
        backend::Error::Protocol { .. } => "upstream_error",
        backend::Error::Cancelled { .. } => "cancelled",
        backend::Error::Unauthenticated { .. } => "authentication_required",
        backend::Error::Exchange { error, .. } if error.is_auth_failure() => "token_exchange_failed",
        backend::Error::Exchange { .. } => "identity_provider_unreachable",
        backend::Error::Unauthorized { .. } => "upstream_unauthorized",
        backend::Error::Unanswered { .. } => "input_not_given",
    }
}

pub fn tool_error(error: &Error) -> CallToolResult {
    let message = error.to_string();
    let mut structured = json!({"code": code(error), "message": message});
    match error {
        Error::InstanceMissing { valid, instance_arg, .. } => {
            structured["validValues"] = json!([valid.servers.as_slice(), valid.clusters.as_slice()].concat());
            structured["parameter"] = json!(instance_arg);
        }
        Error::InstanceUnknown { valid, closest, .. } => {
            structured["validValues"] = json!([valid.servers.as_slice(), valid.clusters.as_slice()].concat());
            if let Some(closest) = closest {
                structured["closest"] = json!(closest);
            }
        }
        Error::ToolNotFound { suggestions, .. } | Error::PromptNotFound { suggestions, .. }
            if !suggestions.is_empty() =>
        {
            structured["suggestions"] = json!(suggestions);
        }
        _ => {}
    }
    if let Some((e, cluster)) = error.backend() {
        structured["server"] = Value::String(server_of(e).to_owned());
        if let Some(cluster) = cluster {
            structured["cluster"] = json!(cluster);
        }
        match e {
            backend::Error::NotConnected { state, reason, retry_after, .. } => {
                structured["state"] = json!(state.as_str());
                structured["reason"] = json!(reason);
                if let Some(after) = retry_after {
                    structured["retryAfterMs"] = json!(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
                }
            }
            backend::Error::Timeout { timeout, .. } | backend::Error::Busy { timeout, .. } => {
                structured["timeoutMs"] = json!(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
            }
            _ => {}
        }
    }
    let mut result = CallToolResult::error(vec![ContentBlock::text(message)]);
    result.structured_content = Some(structured);
    result
}

fn server_of(error: &backend::Error) -> &str {
    match error {
        backend::Error::NotConnected { server, .. }
        | backend::Error::Timeout { server, .. }
        | backend::Error::Busy { server, .. }
        | backend::Error::Upstream { server, .. }
        | backend::Error::TooLarge { server, .. }
        | backend::Error::Protocol { server, .. }
        | backend::Error::Cancelled { server }
        | backend::Error::Unauthenticated { server }
        | backend::Error::Exchange { server, .. }
        | backend::Error::Unauthorized { server }
        | backend::Error::Unanswered { server, .. } => server,
    }
}

/// For requests other than `tools/call`: a JSON-RPC error with the same code in `data`.
pub fn protocol_error(error: &Error) -> ErrorData {
    let data = Some(json!({"code": code(error)}));
    match error {
        Error::ResourceNotFound { .. } => ErrorData::resource_not_found(error.to_string(), data),
        Error::PromptNotFound { .. } | Error::ToolNotFound { .. } => ErrorData::invalid_params(error.to_string(), data),
        // A family prompt's instance: the same fields as a tool call's error.
        Error::InstanceMissing { .. } | Error::InstanceUnknown { .. } => {
            ErrorData::invalid_params(error.to_string(), tool_error(error).structured_content)
        }
        _ if let Some((backend::Error::Protocol { code, message, .. }, _)) = error.backend() => {
            ErrorData::new(rmcp::model::ErrorCode(*code), message.clone(), data)
        }
        _ => ErrorData::internal_error(error.to_string(), data),
    }
}

/// A sessionless request needed a capability (`sampling`, `elicitation`, `roots`) that its
/// `_meta` did not declare: -32021 with the capability in `data.requiredCapabilities` (HTTP 400).
pub fn missing_capability(capability: &str) -> ErrorData {
    ErrorData::new(
        rmcp::model::ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY,
        format!("the upstream asked for {capability}, which this request's client capabilities do not declare"),
        Some(json!({"requiredCapabilities": {capability: {}}, "code": "missing_client_capability"})),
    )
}

/// A retry whose `requestState` does not open for this caller and tool, is spent, or names a call
/// that has ended or that another replica holds.
pub fn request_state_refused() -> ErrorData {
    ErrorData::invalid_params(
        "requestState is not valid for this request: it was altered, used before, belongs to another \
         user or tool, or its call has ended; call again without it",
        Some(json!({"code": "request_state_refused"})),
    )
}

/// The state of a multi round-trip request could not be sealed.
pub fn request_state_unavailable() -> ErrorData {
    ErrorData::internal_error("muster could not seal the requestState of this call", None)
}

/// The task running a sessionless call ended without a result.
pub fn call_lost() -> ErrorData {
    ErrorData::internal_error("the call ended without a result", None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::InstanceValues;

    #[test]
    fn valid_values_list_full_then_bare_names_and_closest_only_when_set() {
        let valid = Box::new(InstanceValues {
            servers: vec!["cluster-a-mcp-kubernetes".into(), "cluster-b-mcp-kubernetes".into()],
            clusters: vec!["cluster-a".into(), "cluster-b".into()],
        });
        let unknown = |closest: Option<&str>| Error::InstanceUnknown {
            kind: "tool",
            tool: "x_kubernetes_pods_list".into(),
            value: "cluster-z".into(),
            valid: valid.clone(),
            closest: closest.map(str::to_owned),
        };
        let wire = tool_error(&unknown(None)).structured_content.expect("structured");
        assert_eq!(
            wire["validValues"],
            json!(["cluster-a-mcp-kubernetes", "cluster-b-mcp-kubernetes", "cluster-a", "cluster-b"])
        );
        assert_eq!(wire.get("closest"), None);
        let wire = tool_error(&unknown(Some("cluster-b"))).structured_content.expect("structured");
        assert_eq!(wire["closest"], "cluster-b");
        // A family prompt's failure is invalid params carrying the same fields.
        let prompt = protocol_error(&unknown(None));
        assert_eq!(prompt.code, rmcp::model::ErrorCode::INVALID_PARAMS);
        assert_eq!(prompt.data.expect("data")["validValues"].as_array().map(Vec::len), Some(4));
    }

    /// A known method with params that do not fit is invalid params, saying what is wrong in the
    /// agent's terms; an unknown method is method not found.
    #[test]
    fn a_known_method_with_misfit_params_is_invalid_params() {
        let custom = |method: &str, params: Value| {
            ClientRequest::CustomRequest(rmcp::model::CustomRequest::new(method, Some(params)))
        };
        let loud = not_served(&custom("logging/setLevel", json!({"level": "loud"})));
        assert_eq!(loud.code, rmcp::model::ErrorCode::INVALID_PARAMS);
        assert!(
            loud.message.contains("logging/setLevel") && loud.message.contains("unknown variant `loud`"),
            "{loud:?}"
        );
        let missing = not_served(&custom("logging/setLevel", json!({})));
        assert!(missing.message.contains("missing field `level`"), "{missing:?}");
        let not_object = not_served(&custom("tools/call", json!("x")));
        assert_eq!(not_object.message, "invalid params for tools/call: params must be an object");
        let nested = not_served(&custom(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": "me"}),
        ));
        assert_eq!(nested.code, rmcp::model::ErrorCode::INVALID_PARAMS);
        assert!(nested.message.contains("expected an object") && !nested.message.contains("struct"), "{nested:?}");
        let unknown = not_served(&custom("tasks/list", json!({})));
        assert_eq!(unknown.code, rmcp::model::ErrorCode::METHOD_NOT_FOUND);
        assert_eq!(unknown.message, "tasks/list is not served on this protocol revision");
    }
}
