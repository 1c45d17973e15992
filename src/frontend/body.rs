//! Reads a request body only after the request was let in (Host/Origin guard, authentication),
//! with a size cap (`maxBodyBytes`) and a deadline (`bodyTimeoutMs`), so nobody can make muster
//! hold a body it would refuse, or wait for one forever.

use std::time::Duration;

use actix_web::{HttpRequest, web};
use bytes::BytesMut;
use futures::StreamExt as _;

/// The most a body buffer grows ahead of what arrived: a declared length is not trusted.
const FIRST_RESERVE: usize = 16 * 1024;

/// Why a body was not read whole.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum Error {
    #[error("Payload Too Large: the request body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("Request Timeout: the request body did not arrive within {} ms", .after.as_millis())]
    Timeout { after: Duration },
    #[error("Bad Request: the request body ended early or was malformed")]
    Incomplete,
}

/// The whole body, at most `limit` bytes, within `timeout` of the call.
pub(super) async fn read(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    timeout: Duration,
) -> Result<web::Bytes, Error> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::TooLarge { limit });
    }
    tokio::time::timeout(timeout, collect(payload, declared, limit))
        .await
        .unwrap_or(Err(Error::Timeout { after: timeout }))
}

async fn collect(mut payload: web::Payload, declared: Option<usize>, limit: usize) -> Result<web::Bytes, Error> {
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(FIRST_RESERVE));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| Error::Incomplete)?;
        if body.len() + chunk.len() > limit {
            return Err(Error::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
