//! The span export pipeline: a bounded batch queue in front of the OTLP
//! exporter, with every span that ends counted as queued, dropped (queue
//! full), exported or failed, so a loss of traces shows in `/metrics`
//! (`otel_spans_total{outcome=...}`) instead of only in one log line.
//!
//! The SDK's `BatchSpanProcessor` keeps its drop count private (it logs the
//! first drop and the total at shutdown). [`CountingProcessor`] therefore
//! owns the bound itself: it counts the spans that are queued or being
//! exported (decremented by [`CountingExporter`] once a batch's export has
//! ended) and drops, and counts, a span when that number has reached the
//! queue size. The inner processor's own queue has the same size and holds
//! fewer spans than that count, so it never drops one of its own.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    time::Duration,
};

use opentelemetry::Context;
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{BatchConfigBuilder, BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor},
    Resource,
};

/// Defaults of the batch span processor, each overridden by its standard
/// environment variable (`OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`,
/// `OTEL_BSP_SCHEDULE_DELAY` in ms). The SDK's own defaults (2,048 / 512 /
/// 5,000 ms) dropped spans at a few thousand requests per second: a queue
/// of 2,048 spans holds ~40 ms of cached reads at full rate, and the export
/// calls (one at a time) could not keep up with 512 spans each. Measured on
/// 2 shared cores with Jaeger local (BENCHMARKS.md): batches of 2,048 still
/// dropped 12-17 % of the spans at ~16,000 traced requests/s, batches of
/// 4,096 exported ~44,000 spans/s without a drop. 4,096 spans are ~1 MiB of
/// OTLP, well under a collector's usual 4 MiB limit per message. The queue
/// holds four batches: ~16 MiB at most.
pub const MAX_QUEUE_SIZE: usize = 16_384;
pub const MAX_EXPORT_BATCH_SIZE: usize = 4_096;
pub const SCHEDULED_DELAY: Duration = Duration::from_millis(1_000);

/// Span counts since the process started (rendered by `telemetry::metrics`).
#[derive(Debug, Default)]
pub struct SpanCounts {
    pub queued: AtomicU64,
    pub dropped: AtomicU64,
    pub exported: AtomicU64,
    pub export_failed: AtomicU64,
    /// Queued or in an export that has not ended yet.
    pending: AtomicUsize,
}

pub static COUNTS: SpanCounts = SpanCounts {
    queued: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
    exported: AtomicU64::new(0),
    export_failed: AtomicU64::new(0),
    pending: AtomicUsize::new(0),
};

static DROP_LOGGED: AtomicBool = AtomicBool::new(false);

fn env_usize(key: &str) -> Option<usize> {
    std::env::var(key).ok()?.trim().parse().ok()
}

/// The batch processor in front of `exporter`, with the defaults above
/// unless the standard environment variables say otherwise.
pub fn batch_processor<E>(exporter: E) -> CountingProcessor
where
    E: SpanExporter + 'static,
{
    let max_queue = env_usize("OTEL_BSP_MAX_QUEUE_SIZE").unwrap_or(MAX_QUEUE_SIZE);
    let batch = env_usize("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
        .unwrap_or(MAX_EXPORT_BATCH_SIZE)
        .min(max_queue);
    let delay = env_usize("OTEL_BSP_SCHEDULE_DELAY")
        .map_or(SCHEDULED_DELAY, |ms| Duration::from_millis(ms as u64));
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(max_queue)
        .with_max_export_batch_size(batch)
        .with_scheduled_delay(delay)
        .build();
    let inner = BatchSpanProcessor::builder(CountingExporter { inner: exporter })
        .with_batch_config(config)
        .build();
    CountingProcessor { inner, max_queue }
}

/// Bounds and counts what enters the batch processor (see the module docs).
#[derive(Debug)]
pub struct CountingProcessor {
    inner: BatchSpanProcessor,
    max_queue: usize,
}

impl SpanProcessor for CountingProcessor {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if COUNTS.pending.fetch_add(1, Ordering::AcqRel) >= self.max_queue {
            COUNTS.pending.fetch_sub(1, Ordering::AcqRel);
            COUNTS.dropped.fetch_add(1, Ordering::Relaxed);
            if !DROP_LOGGED.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "span export queue full ({} spans): dropping spans, counted in otel_spans_total{{outcome=\"dropped\"}}",
                    self.max_queue
                );
            }
            return;
        }
        COUNTS.queued.fetch_add(1, Ordering::Relaxed);
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Counts each batch as exported or failed, and releases its spans from the
/// pending count when its export ends (or is abandoned on a timeout).
#[derive(Debug)]
pub struct CountingExporter<E> {
    inner: E,
}

/// Releases a batch from the pending count however its export ends.
struct Release(usize);

impl Drop for Release {
    fn drop(&mut self) {
        COUNTS.pending.fetch_sub(self.0, Ordering::AcqRel);
    }
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let release = Release(batch.len());
        let export = self.inner.export(batch);
        async move {
            let result = export.await;
            let counter = if result.is_ok() {
                &COUNTS.exported
            } else {
                &COUNTS.export_failed
            };
            counter.fetch_add(release.0 as u64, Ordering::Relaxed);
            drop(release);
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use opentelemetry::trace::{Tracer, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    #[derive(Debug, Clone, Default)]
    struct Received(Arc<AtomicUsize>);

    impl SpanExporter for Received {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.fetch_add(batch.len(), Ordering::Relaxed);
            Ok(())
        }
    }

    #[test]
    fn every_ended_span_is_counted_as_queued_or_dropped_and_then_exported() {
        let exporter = Received::default();
        let before = (
            COUNTS.queued.load(Ordering::Relaxed),
            COUNTS.dropped.load(Ordering::Relaxed),
            COUNTS.exported.load(Ordering::Relaxed),
        );
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batch_processor(exporter.clone()))
            .build();
        let tracer = provider.tracer("test");
        for _ in 0..100 {
            tracer.in_span("s", |_| {});
        }
        provider.force_flush().unwrap();
        let queued = COUNTS.queued.load(Ordering::Relaxed) - before.0;
        let dropped = COUNTS.dropped.load(Ordering::Relaxed) - before.1;
        let exported = COUNTS.exported.load(Ordering::Relaxed) - before.2;
        assert_eq!(queued + dropped, 100);
        assert_eq!(dropped, 0);
        assert_eq!(exported, 100);
        assert_eq!(exporter.0.load(Ordering::Relaxed), 100);
        provider.shutdown().unwrap();
    }
}
