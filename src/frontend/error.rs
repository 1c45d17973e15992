//! HTTP-level failures as JSON-RPC error bodies, in one place.
//!
//! rmcp rejects a body it cannot decode with a plain-text 415. Agents deserve a JSON-RPC error:
//! `-32700` when the body is not JSON at all, `-32600` when it is JSON but not a JSON-RPC message.
//! The limits of issue 11 answer here too: a body too large (413), too slow (408), sessions past a
//! user's or muster's limit (429, 503) and connections past `maxConnections` (503, closed).

use actix_web::HttpResponse;
use actix_web::http::StatusCode;

pub(super) const PARSE_ERROR: i64 = -32700;
pub(super) const INVALID_REQUEST: i64 = -32600;
/// Implementation-defined server error: a limit was reached; the request may be retried later.
const SERVER_BUSY: i64 = -32000;

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

/// `initialize` refused: the user (429) or muster (503) holds as many sessions as allowed.
pub(super) fn sessions_refused(refused: &crate::mcp::sessions::Refused) -> HttpResponse {
    use crate::mcp::sessions::Refused;
    let status = match refused {
        Refused::UserLimit { .. } => StatusCode::TOO_MANY_REQUESTS,
        Refused::TotalLimit { .. } => StatusCode::SERVICE_UNAVAILABLE,
    };
    jsonrpc_error(status, SERVER_BUSY, &refused.to_string())
}

/// A request body that could not be read: too large (413), too slow (408) or cut off (400).
/// The connection is closed, since what is left of the body was never read.
pub(super) fn body_refused(error: &super::body::Error) -> HttpResponse {
    use super::body::Error;
    let status = match error {
        Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
        Error::Incomplete => StatusCode::BAD_REQUEST,
        Error::Busy => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut response = jsonrpc_error(status, INVALID_REQUEST, &error.to_string());
    response.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
    response
}

/// 503 on a connection past `maxConnections`, which is closed after it.
pub(super) fn overloaded(limit: usize) -> HttpResponse {
    let message = format!("muster serves {limit} connections, the most it allows; try again shortly");
    let mut response = jsonrpc_error(StatusCode::SERVICE_UNAVAILABLE, SERVER_BUSY, &message);
    response.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
    response
        .headers_mut()
        .insert(actix_web::http::header::RETRY_AFTER, actix_web::http::header::HeaderValue::from_static("1"));
    response
}
