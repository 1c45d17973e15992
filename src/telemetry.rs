//! Logs, traces and metrics. `init` sets up `tracing` (stderr from a writer thread, `RUST_LOG`) and, when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, an OTLP http/protobuf span
//! exporter with W3C trace-context propagation. The returned guard flushes spans on drop.
//!
//! Spans are for traces only: the log lines are events, each carrying its own fields, so the log
//! layer ignores spans. Without an exporter no layer wants a span, and a span costs nothing.
//! Every metric name lives in `telemetry/metrics.rs`.

pub mod metrics;
pub mod propagation;

use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Flushes the log and shuts the span exporter down when dropped.
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    _log: tracing_appender::non_blocking::WorkerGuard,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

pub fn init(debug: bool) -> TelemetryGuard {
    // rmcp logs transport failures with what the upstream sent (a whole body, when it was not
    // JSON-RPC); muster logs each failure itself, in words. So rmcp speaks only with --debug.
    let default = if debug { "debug,rmcp=info" } else { "info,rmcp=off" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour codes only for a terminal: a log file or collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Lines are written by a thread of their own, in batches: a call never waits for stderr, and
    // a slow log reader does not stall the workers (until 128,000 lines are waiting; none is dropped).
    let (writer, log) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("muster-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi)
        .with_filter(tracing_subscriber::filter::filter_fn(|metadata| metadata.is_event()));
    let provider = otlp_provider();
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("muster")));
    let _ = tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init();
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    TelemetryGuard { provider, _log: log }
}

fn otlp_provider() -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    let configured = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    if !configured {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
        Ok(exporter) => exporter,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the OTLP span exporter; traces are off");
            return None;
        }
    };
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "muster".to_owned());
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
    Some(
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    )
}
