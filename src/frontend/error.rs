//! HTTP-level failures as JSON-RPC error bodies, in one place.
//!
//! rmcp rejects a body it cannot decode with a plain-text 415. Agents deserve a JSON-RPC error:
//! `-32700` when the body is not JSON at all, `-32600` when it is JSON but not a JSON-RPC message.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;

pub(super) const PARSE_ERROR: i64 = -32700;
pub(super) const INVALID_REQUEST: i64 = -32600;

pub(super) fn jsonrpc_error(status: StatusCode, code: i64, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": code, "message": message},
    }))
}

/// 401 (or 503 when the identity provider cannot be reached) with RFC 6750/9728 `WWW-Authenticate`.
pub(super) fn unauthorized(resource_metadata: &str, error: &crate::auth::inbound::Error) -> HttpResponse {
    use crate::auth::inbound::Error;
    let description = error.to_string().replace('"', "'");
    let (status, challenge) = match error {
        Error::Missing => (StatusCode::UNAUTHORIZED, format!("Bearer resource_metadata=\"{resource_metadata}\"")),
        Error::Unavailable { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "Bearer resource_metadata=\"{resource_metadata}\", error=\"temporarily_unavailable\", error_description=\"{description}\""
            ),
        ),
        _ => (
            StatusCode::UNAUTHORIZED,
            format!(
                "Bearer resource_metadata=\"{resource_metadata}\", error=\"invalid_token\", error_description=\"{description}\""
            ),
        ),
    };
    HttpResponse::build(status)
        .insert_header((actix_web::http::header::WWW_AUTHENTICATE, challenge))
        .json(serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32001, "message": description}}))
}

/// 403: the MCP session belongs to another user.
pub(super) fn forbidden_session() -> HttpResponse {
    jsonrpc_error(StatusCode::FORBIDDEN, INVALID_REQUEST, "this MCP session belongs to another user")
}

/// The JSON-RPC error for a POST body rmcp could not decode.
pub(super) fn undecodable_body(body: &[u8], detail: &str) -> HttpResponse {
    if detail.starts_with("Unsupported Media Type") {
        return jsonrpc_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, INVALID_REQUEST, detail);
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Err(e) => jsonrpc_error(StatusCode::BAD_REQUEST, PARSE_ERROR, &format!("Parse error: {e}")),
        Ok(_) => jsonrpc_error(StatusCode::BAD_REQUEST, INVALID_REQUEST, &format!("Invalid Request: {detail}")),
    }
}
