//! What failed, in words an agent and an operator can act on.
//!
//! Errors from reqwest, hyper and rmcp print their own internals: Rust type paths
//! (`WorkerTransport<StreamableHttpClientWorker<…>>`), whole upstream bodies (an upstream that
//! answers 200 with a JSON document that is not JSON-RPC sees that document copied into the
//! message), and a child's stderr. `describe` walks an error's source chain and says what
//! happened instead ("connection refused", "answered HTTP 503", "answered with a body that is not
//! JSON-RPC"). Nothing the upstream sent is quoted, except a content type, cut short. The full
//! chain goes to the log at debug level where the error is handled.

use std::error::Error as StdError;
use std::io::ErrorKind;

use rmcp::service::{ClientInitializeError, ServiceError};
use rmcp::transport::streamable_http_client::StreamableHttpError;

/// The longest piece of an upstream's own text (a content type) kept in a description.
const QUOTE_LIMIT: usize = 64;

/// What went wrong, in words, from the outermost error that says something useful.
pub(super) fn describe(error: &(dyn StdError + 'static)) -> String {
    if let Some(init) = error.downcast_ref::<ClientInitializeError>() {
        return initialize(init);
    }
    if let Some(service) = error.downcast_ref::<ServiceError>() {
        return service_error(service);
    }
    chain(error).find_map(level).unwrap_or_else(|| "the connection failed".to_owned())
}

/// The error and its sources, outermost first (bounded, in case of a cycle).
fn chain<'a>(error: &'a (dyn StdError + 'static)) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |e| (*e).source()).take(16)
}

fn initialize(error: &ClientInitializeError) -> String {
    match error {
        ClientInitializeError::TransportError { error, .. } => {
            chain(error.error.as_ref()).find_map(level).unwrap_or_else(|| "the connection failed".to_owned())
        }
        ClientInitializeError::ConnectionClosed(_) => "closed the connection during the handshake".to_owned(),
        ClientInitializeError::JsonRpcError(e) => {
            format!("refused the handshake (JSON-RPC error {})", e.code.0)
        }
        ClientInitializeError::NoCompatibleProtocolVersion { .. } => {
            "speaks no MCP protocol version muster supports".to_owned()
        }
        _ => "answered the handshake with something other than an initialize result".to_owned(),
    }
}

fn service_error(error: &ServiceError) -> String {
    match error {
        ServiceError::McpError(e) => format!("answered with JSON-RPC error {}", e.code.0),
        ServiceError::TransportSend(e) => {
            chain(e.error.as_ref()).find_map(level).unwrap_or_else(|| "the connection failed".to_owned())
        }
        ServiceError::Timeout { timeout } => format!("did not answer within {} s", timeout.as_secs()),
        ServiceError::Cancelled { .. } => "the request was cancelled".to_owned(),
        ServiceError::TransportClosed => "closed the connection".to_owned(),
        _ => "answered with something muster did not expect".to_owned(),
    }
}

/// One level of the chain, if it says something an agent can act on.
fn level(error: &(dyn StdError + 'static)) -> Option<String> {
    // muster's own refusal (a host name that resolves to a metadata address) says why itself.
    if let Some(refused) = chain(error).find_map(|e| e.downcast_ref::<crate::egress::RefusedName>()) {
        return Some(format!("refused by muster: {refused}"));
    }
    if let Some(http) = error.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
        return streamable(http);
    }
    if let Some(http) = error.downcast_ref::<reqwest::Error>() {
        return reqwest_error(http);
    }
    if let Some(io) = error.downcast_ref::<std::io::Error>() {
        return io_error(io);
    }
    if error.downcast_ref::<serde_json::Error>().is_some() {
        return Some("answered with a body that is not JSON-RPC".to_owned());
    }
    // hyper-util's resolver error carries no type we can name; its text is stable.
    error.to_string().starts_with("dns error").then(|| "its host name does not resolve".to_owned())
}

fn streamable(error: &StreamableHttpError<reqwest::Error>) -> Option<String> {
    use StreamableHttpError as E;
    Some(match error {
        E::Client(e) => return reqwest_error(e),
        E::Io(e) => return io_error(e),
        E::HttpStatus(status) => format!("answered HTTP {}", status.status),
        E::UnexpectedContentType(Some(content_type)) => {
            format!("answered with content type {}, not JSON or an event stream", quote(content_type))
        }
        E::UnexpectedContentType(None) => "answered without a content type".to_owned(),
        E::UnexpectedServerResponse(_) => "answered with a body that is not JSON-RPC".to_owned(),
        E::Deserialize(_) => "answered with a body that is not JSON-RPC".to_owned(),
        E::ResponseBodyTooLarge { max_size } => format!("answered with a body larger than {max_size} bytes"),
        E::UnexpectedEndOfStream => "ended its reply before answering".to_owned(),
        E::SessionExpired => "forgot the session (HTTP 404)".to_owned(),
        E::AuthRequired(_) => "requires authentication (HTTP 401)".to_owned(),
        E::InsufficientScope(_) => "refused the credentials' scope (HTTP 403)".to_owned(),
        E::Sse(_) => "sent an event stream muster cannot read".to_owned(),
        _ => return None,
    })
}

fn reqwest_error(error: &reqwest::Error) -> Option<String> {
    // The innermost cause (refused, reset, DNS) says more than reqwest's own summary.
    let inner = error.source().and_then(|source| chain(source).find_map(level));
    if inner.is_some() {
        return inner;
    }
    if error.is_timeout() {
        return Some("did not answer in time".to_owned());
    }
    if error.is_connect() {
        return Some("could not be connected to".to_owned());
    }
    if let Some(status) = error.status() {
        return Some(format!("answered HTTP {}", status.as_u16()));
    }
    if error.is_body() || error.is_decode() {
        return Some("broke off its reply".to_owned());
    }
    None
}

fn io_error(error: &std::io::Error) -> Option<String> {
    Some(
        match error.kind() {
            ErrorKind::ConnectionRefused => "connection refused",
            ErrorKind::ConnectionReset => "connection reset",
            ErrorKind::ConnectionAborted => "connection aborted",
            ErrorKind::TimedOut => "connection timed out",
            ErrorKind::HostUnreachable => "host unreachable",
            ErrorKind::NetworkUnreachable => "network unreachable",
            ErrorKind::AddrNotAvailable => "no local address available (too many connections?)",
            ErrorKind::NotFound => "not found",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::BrokenPipe => "closed the connection",
            ErrorKind::UnexpectedEof => "closed the connection before answering",
            _ => return error.get_ref().is_none().then(|| format!("input/output error ({})", error.kind())),
        }
        .to_owned(),
    )
}

/// An upstream's own short text (a content type), cut to `QUOTE_LIMIT` and stripped of control
/// characters.
pub(super) fn quote(text: &str) -> String {
    let mut quoted: String = text.chars().filter(|c| !c.is_control()).take(QUOTE_LIMIT).collect();
    if text.chars().count() > QUOTE_LIMIT {
        quoted.push('…');
    }
    format!("{quoted:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_named_by_what_happened() {
        let refused = std::io::Error::from(ErrorKind::ConnectionRefused);
        assert_eq!(describe(&refused), "connection refused");
    }

    #[test]
    fn an_upstream_body_is_never_quoted() {
        let body = serde_json::from_str::<serde_json::Value>("{\"SecretAccessKey\": \"wJalrXUtnFEMI\"")
            .expect_err("truncated JSON");
        let error: StreamableHttpError<reqwest::Error> =
            StreamableHttpError::UnexpectedServerResponse(format!("{{\"SecretAccessKey\": \"x\"}} {body}").into());
        let text = describe(&error);
        assert!(!text.contains("Secret"), "{text}");
        assert_eq!(text, "answered with a body that is not JSON-RPC");
    }

    #[test]
    fn rust_type_paths_never_appear() {
        let error: StreamableHttpError<reqwest::Error> =
            StreamableHttpError::UnexpectedContentType(Some(format!("text/html; {}", "x".repeat(500))));
        let text = describe(&error);
        assert!(text.len() < 140 && !text.contains("::"), "{text}");
        assert!(text.starts_with("answered with content type \"text/html;"), "{text}");
    }
}
