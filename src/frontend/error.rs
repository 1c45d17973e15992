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
