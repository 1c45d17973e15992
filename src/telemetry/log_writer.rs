//! The log's writer: formatted lines go into a buffer that a thread of its own writes to stderr
//! every `FLUSH_EVERY` (sooner once `FLUSH_AT` bytes wait), so a call never waits for stderr and
//! no thread is woken per line (tracing-appender's writer wakes its thread for each line when
//! idle: loadtests/README.md, ADR 0011). The buffer is bounded: past `MAX_PENDING` bytes a logging
//! thread waits for the writer, so a stuck stderr stalls callers instead of growing memory, and
//! no line is dropped. Dropping the `FlushGuard` writes what is left.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

/// How long a line may wait in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Waiting bytes that wake the writer before `FLUSH_EVERY`.
const FLUSH_AT: usize = 256 * 1024;
/// Waiting bytes past which a logging thread waits for the writer.
const MAX_PENDING: usize = 16 * 1024 * 1024;

/// Where the log layer writes (`tracing_subscriber::fmt::MakeWriter`).
#[derive(Clone)]
pub(super) struct LogWriter {
    shared: Arc<Shared>,
}

/// Writes what is left when dropped, and stops the writer thread.
pub(super) struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    pending: Mutex<Vec<u8>>,
    /// Signalled each time the writer has taken the pending bytes.
    taken: Condvar,
    writer: OnceLock<std::thread::Thread>,
    stopping: AtomicBool,
}

/// A writer of lines to `out`, and the guard that flushes it.
pub(super) fn start(out: impl std::io::Write + Send + 'static) -> (LogWriter, FlushGuard) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Vec::with_capacity(64 * 1024)),
        taken: Condvar::new(),
        writer: OnceLock::new(),
        stopping: AtomicBool::new(false),
    });
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new().name("muster-log".into()).spawn(move || write_out(&shared, out))
    };
    // Without a thread (none can be started), lines wait in the buffer until it is full; then
    // the guard still writes the last of them.
    let thread = thread.ok();
    if let Some(thread) = &thread {
        let _ = shared.writer.set(thread.thread().clone());
    }
    (LogWriter { shared: shared.clone() }, FlushGuard { shared, thread })
}

fn write_out(shared: &Shared, mut out: impl std::io::Write) {
    let mut batch = Vec::with_capacity(64 * 1024);
    loop {
        std::thread::park_timeout(FLUSH_EVERY);
        let stopping = shared.stopping.load(Ordering::Acquire);
        std::mem::swap(&mut *shared.lock(), &mut batch);
        shared.taken.notify_all();
        if !batch.is_empty() {
            let _ = out.write_all(&batch);
            let _ = out.flush();
            batch.clear();
        }
        if stopping {
            return;
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl std::io::Write for &LogWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.shared.lock();
        while pending.len() >= MAX_PENDING && self.shared.writer.get().is_some() {
            pending = self.shared.taken.wait(pending).unwrap_or_else(PoisonError::into_inner);
        }
        let was_below = pending.len() < FLUSH_AT;
        pending.extend_from_slice(line);
        let now_above = pending.len() >= FLUSH_AT;
        drop(pending);
        if was_below && now_above {
            self.shared.writer.get().map(std::thread::Thread::unpark);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = &'a LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` whose bytes the test can read.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("sink").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_guard_is_dropped() {
        let sink = Sink::default();
        let (writer, guard) = start(sink.clone());
        for i in 0..10_000 {
            let mut line = &writer;
            std::io::Write::write_all(&mut line, format!("line {i}\n").as_bytes()).expect("write");
        }
        drop(guard);
        let written = String::from_utf8(sink.0.lock().expect("sink").clone()).expect("utf-8");
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), 10_000);
        assert!(lines.iter().enumerate().all(|(i, line)| *line == format!("line {i}")));
    }
}
