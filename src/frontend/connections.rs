//! Counts open HTTP connections, so that past `maxConnections` muster refuses fast (503 and
//! `Connection: close`) instead of queueing clients or running out of file descriptors.
//!
//! actix's own limit (`HttpServer::max_connections`, per worker) stops *accepting*: clients wait
//! in the listen backlog with no answer. So `on_connect` puts a `Slot` in each connection's
//! extensions, which counts the connection while it lives (its `Drop` counts it out), and a
//! connection that arrived past the limit gets 503 for its request and is closed. actix's limit
//! sits a quarter above ours (`hard`), as the backstop that keeps file descriptors for the rest of
//! muster (upstream connections, files) when clients open connections faster than 503s close
//! them; past it, clients wait in the backlog until silent connections time out (5 s). Both are
//! kept within what `RLIMIT_NOFILE` allows (`Connections::new`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::HttpRequest;
use actix_web::dev::Extensions;

/// File descriptors kept for everything but agent connections (upstreams, files, the watcher).
const RESERVED_FILES: usize = 1024;

/// The open connections, shared by every worker.
#[derive(Clone)]
pub(super) struct Connections {
    open: Arc<AtomicUsize>,
    limit: usize,
    /// actix's accept limit, over all workers.
    hard: usize,
}

/// One accepted connection, counted while it lives.
pub(super) struct Slot {
    open: Arc<AtomicUsize>,
    /// False when the connection arrived past the limit: its request gets 503.
    admitted: bool,
    /// Where the client reached muster (for `host_guard::HostGuard::check_local`).
    pub local: Option<SocketAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connections {
    /// `limit` (`maxConnections`), and a quarter more (at least 64) as actix's limit; both lowered
    /// when `open_files` (`RLIMIT_NOFILE`) minus `RESERVED_FILES` cannot hold them.
    pub(super) fn new(limit: usize, open_files: Option<usize>) -> Self {
        let mut connections = Self { open: Arc::default(), limit, hard: limit + (limit / 4).max(64) };
        if let Some(files) = open_files {
            let usable = files.saturating_sub(RESERVED_FILES).max(128);
            if connections.hard > usable {
                connections.hard = usable;
                connections.limit = limit.min(usable * 4 / 5);
                tracing::warn!(
                    max_connections = limit,
                    open_files = files,
                    serving = connections.limit,
                    "aggregator.maxConnections is above what the open-files limit (ulimit -n) allows; serving fewer"
                );
            }
        }
        connections
    }

    /// `new`, with the open-files limit of this process.
    pub(super) fn within_open_files(limit: usize) -> Self {
        Self::new(limit, open_files_limit())
    }

    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    /// actix's accept limit for each of `workers`.
    pub(super) fn hard_limit_per_worker(&self, workers: usize) -> usize {
        self.hard.div_ceil(workers.max(1))
    }

    /// `on_connect`: counts the connection in and remembers whether it was let in.
    pub(super) fn accept(&self, local: Option<SocketAddr>, extensions: &mut Extensions) {
        let before = self.open.fetch_add(1, Ordering::Relaxed);
        extensions.insert(Slot { open: self.open.clone(), admitted: before < self.limit, local });
    }

    pub(super) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Whether the request's connection arrived past the limit.
pub(super) fn refused(req: &HttpRequest) -> bool {
    req.conn_data::<Slot>().is_some_and(|slot| !slot.admitted)
}

fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files(&limits)
}

/// The soft limit from `/proc/self/limits`' "Max open files" line.
fn parse_open_files(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_files_limit_is_read_from_proc() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63432                63432                processes \n\
                      Max open files            20000                524288               files     \n";
        assert_eq!(parse_open_files(limits), Some(20_000));
        assert_eq!(parse_open_files("Max open files            unlimited            unlimited   files"), None);
    }

    #[test]
    fn connections_past_the_limit_are_marked_and_counted_out_on_drop() {
        let connections = Connections::new(2, None);
        let mut slots: Vec<Extensions> = (0..3).map(|_| Extensions::new()).collect();
        for extensions in &mut slots {
            connections.accept(None, extensions);
        }
        let admitted: Vec<bool> = slots.iter().map(|e| e.get::<Slot>().is_some_and(|s| s.admitted)).collect();
        assert_eq!(admitted, [true, true, false]);
        assert_eq!(connections.open(), 3);
        slots.clear();
        assert_eq!(connections.open(), 0);
        assert_eq!(connections.hard_limit_per_worker(2), 33);
    }

    #[test]
    fn the_limits_stay_within_the_open_files_limit() {
        let roomy = Connections::new(20_000, Some(1 << 20));
        assert_eq!((roomy.limit, roomy.hard), (20_000, 25_000));
        let tight = Connections::new(20_000, Some(20_000));
        assert_eq!((tight.limit, tight.hard), (15_180, 18_976), "a band of 503s stays below actix's limit");
    }
}
