//! Telemetry: logs and traces (`tracing` + OpenTelemetry over OTLP) and the
//! Prometheus metrics registry.
//!
//! [`init`] runs once per process, in `main` (tests call it through their
//! helper); it returns a guard that flushes pending spans when dropped.

pub mod export;
pub mod grpc;
pub mod logs;
pub mod metrics;
pub mod propagation;

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider, Resource};
use tracing_subscriber::{
    filter::{filter_fn, FilterExt},
    fmt::MakeWriter,
    layer::SubscriberExt,
    util::SubscriberInitExt,
    EnvFilter, Layer,
};

/// Spans left out of the exported traces unless `TRACE_FILTER` enables
/// `debug`: leaves of the hot cached-read path that a trace does not need
/// (their time is inside the parent use-case span, and their failures are
/// logged). One `redis.get` per cached read was a third of all spans.
const DEBUG_ONLY_SPANS: &[&str] = &["redis.get"];

static TRACES_EXPORTED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported at all (an OTLP endpoint is configured):
/// per-request work that only feeds the trace (span renames) is skipped
/// when not.
pub fn traces_exported() -> bool {
    TRACES_EXPORTED.load(Ordering::Relaxed)
}

use crate::config::{LogFormat, TelemetrySettings};

/// Flushes and shuts down the trace exporter when dropped.
#[must_use = "dropping the guard shuts tracing down"]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports the spans buffered so far (tests read them back from Jaeger).
    pub fn flush(&self) {
        if let Some(provider) = &self.tracer_provider {
            if let Err(err) = provider.force_flush() {
                tracing::warn!(error = %err, "flushing traces failed");
            }
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take() {
            if let Err(err) = provider.shutdown() {
                eprintln!("failed to flush traces: {err}");
            }
        }
    }
}

/// Installs the global subscriber: pretty or JSON logs filtered by `RUST_LOG`
/// (default `info`), and OTLP trace export when an endpoint is configured,
/// filtered by `TRACE_FILTER` (same syntax, default `info`) independently of
/// the logs, sampled by `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG`
/// (default: every trace; see docs/OBSERVABILITY.md) and batched as
/// [`export`] says.
pub fn init(settings: &TelemetrySettings) -> anyhow::Result<TelemetryGuard> {
    init_with_writer(settings, std::io::stdout)
}

/// As [`init`], writing logs to `writer` (tests capture them).
pub fn init_with_writer<W>(
    settings: &TelemetrySettings,
    writer: W,
) -> anyhow::Result<TelemetryGuard>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    // W3C trace context in and out (HTTP, gRPC, Kafka headers).
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match settings.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(logs::JsonWithTraceIds)
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .event_format(logs::TextWithTraceIds(
                tracing_subscriber::fmt::format().compact(),
            ))
            .with_writer(writer)
            .boxed(),
    };

    let tracer_provider = match settings.otlp_endpoint.as_deref() {
        Some(endpoint) if !endpoint.is_empty() => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()?;
            // The sampler comes from OTEL_TRACES_SAMPLER(_ARG), read by the SDK.
            Some(
                SdkTracerProvider::builder()
                    .with_span_processor(export::batch_processor(exporter))
                    .with_resource(
                        Resource::builder()
                            .with_service_name(settings.service_name.clone())
                            .build(),
                    )
                    .build(),
            )
        }
        _ => None,
    };
    let otel = tracer_provider.as_ref().map(|provider| {
        opentelemetry::global::set_tracer_provider(provider.clone());
        let traces =
            EnvFilter::try_from_env("TRACE_FILTER").unwrap_or_else(|_| EnvFilter::new("info"));
        let debug_spans = traces
            .max_level_hint()
            .is_some_and(|max| max >= tracing::level_filters::LevelFilter::DEBUG);
        let hot = filter_fn(move |metadata| {
            debug_spans || !(metadata.is_span() && DEBUG_ONLY_SPANS.contains(&metadata.name()))
        });
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("products-service"))
            // Per span, these add attributes (thread id and name, source
            // location, target, busy/idle time: two clock reads per poll) that
            // cost CPU here and bytes on the wire, and that the traces here
            // never use.
            .with_threads(false)
            .with_location(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            // Entering a span would also make its OpenTelemetry context the
            // thread's current one (a clone and a thread-local push per poll
            // of every instrumented future). Nothing here reads
            // `opentelemetry::Context::current()`: propagation and log lines
            // take the context from the tracing span.
            .with_context_activation(false)
            .with_filter(traces.and(hot))
    });
    TRACES_EXPORTED.store(otel.is_some(), Ordering::Relaxed);

    // Each layer has its own filter: RUST_LOG=warn quietens the logs without
    // turning the traces off, and spans no layer wants are never built.
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(otel)
        .try_init()?;
    Ok(TelemetryGuard { tracer_provider })
}
