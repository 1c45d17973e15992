//! Logging setup: `tracing` to stderr, filtered by `RUST_LOG` (default `info`, or `debug`).

pub fn init(debug: bool) {
    let default = if debug { "debug,rmcp=info" } else { "info,rmcp=warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
