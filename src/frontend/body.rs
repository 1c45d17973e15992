//! Reads a request body only after the request was let in (Host/Origin guard, authentication),
//! with a size cap (`maxBodyBytes`) and a deadline (`bodyTimeoutMs`), so nobody can make muster
//! hold a body it would refuse, or wait for one forever.
//!
//! Bodies being read also share one budget (`BUDGET`): without it, agents allowed in (signed-in
//! users, or anyone on loopback without sign-in) could hold `maxConnections` × `maxBodyBytes` by
//! sending all but the last byte of each (measured: 200 such bodies of 4 MiB, 1.3 GB). Past the
//! budget a body gets 503; a body holds its share only while it is being read.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, web};
use bytes::BytesMut;
use futures::StreamExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes of request bodies muster holds while reading them, in all.
pub(super) const BUDGET: usize = 256 << 20;

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
    #[error("Service Unavailable: muster is reading as many request bodies as it can hold; try again shortly")]
    Busy,
}

/// The budget of `BUDGET` bytes shared by every body read.
pub(super) fn budget() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(BUDGET))
}

/// The whole body, at most `limit` bytes, within `timeout` of the call.
pub(super) async fn read(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    timeout: Duration,
    budget: &Arc<Semaphore>,
) -> Result<web::Bytes, Error> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::TooLarge { limit });
    }
    tokio::time::timeout(timeout, collect(payload, declared, limit, budget))
        .await
        .unwrap_or(Err(Error::Timeout { after: timeout }))
}

async fn collect(
    mut payload: web::Payload,
    declared: Option<usize>,
    limit: usize,
    budget: &Arc<Semaphore>,
) -> Result<web::Bytes, Error> {
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(FIRST_RESERVE));
    let mut held: Option<OwnedSemaphorePermit> = None;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| Error::Incomplete)?;
        if body.len() + chunk.len() > limit {
            return Err(Error::TooLarge { limit });
        }
        let share = u32::try_from(chunk.len()).map_err(|_| Error::TooLarge { limit })?;
        let permit = budget.clone().try_acquire_many_owned(share).map_err(|_| Error::Busy)?;
        match held.as_mut() {
            Some(held) => held.merge(permit),
            None => held = Some(permit),
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::FromRequest as _;

    #[actix_web::test]
    async fn bodies_share_one_budget_while_they_are_read() {
        let budget = Arc::new(Semaphore::new(10));
        let (req, mut payload) = actix_web::test::TestRequest::post().set_payload(&b"0123456789ab"[..]).to_http_parts();
        let read = read(
            &req,
            web::Payload::from_request(&req, &mut payload).await.expect("payload"),
            100,
            Duration::from_secs(1),
            &budget,
        );
        assert_eq!(read.await, Err(Error::Busy));
        assert_eq!(budget.available_permits(), 10, "a refused read gives its share back");
    }
}
