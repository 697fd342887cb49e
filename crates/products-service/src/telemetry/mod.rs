//! Telemetry: logs and traces (`tracing` + OpenTelemetry over OTLP) and the
//! Prometheus metrics registry.
//!
//! [`init`] runs once per process, in `main` (tests call it through their
//! helper); it returns a guard that flushes pending spans when dropped.

pub mod grpc;
pub mod logs;
pub mod metrics;
pub mod propagation;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider, Resource};
use tracing_subscriber::{
    fmt::MakeWriter, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer,
};

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

/// Installs the global subscriber: `RUST_LOG` filter (default `info`), pretty
/// or JSON logs, and OTLP trace export when an endpoint is configured.
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
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
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
        tracing_opentelemetry::layer().with_tracer(provider.tracer("products-service"))
    });

    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(otel)
        .try_init()?;
    Ok(TelemetryGuard { tracer_provider })
}
