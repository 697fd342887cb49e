//! The Prometheus registry behind the `metrics` facade, rendered on the
//! metrics port. Histograms get explicit buckets so they aggregate across
//! replicas (summaries would not).

use std::{sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide registry: installs the recorder on first use (the
/// `metrics` facade allows one per process).
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::install)
}

pub struct Registry {
    handle: Option<PrometheusHandle>,
    process: metrics_process::Collector,
}

impl Registry {
    fn install() -> Self {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
            .and_then(PrometheusBuilder::install_recorder)
            .inspect_err(|err| tracing::error!(error = %err, "metrics recorder not installed"))
            .ok();
        let process = metrics_process::Collector::default();
        process.describe();
        metrics::describe_counter!(
            "otel_spans_total",
            "Spans ended and sampled, by outcome: queued for export or dropped (export queue full); of the queued, exported or export_failed"
        );
        metrics::gauge!(
            "build_info",
            "version" => env!("CARGO_PKG_VERSION"),
            "git_sha" => env!("PRODUCTS_GIT_SHA"),
        )
        .set(1.0);
        Self { handle, process }
    }

    /// The current metrics in Prometheus text format.
    pub fn render(&self) -> String {
        self.process.collect();
        // The span export counts (telemetry::export), as of now.
        let counts = &super::export::COUNTS;
        for (outcome, count) in [
            ("queued", &counts.queued),
            ("dropped", &counts.dropped),
            ("exported", &counts.exported),
            ("export_failed", &counts.export_failed),
        ] {
            metrics::counter!("otel_spans_total", "outcome" => outcome)
                .absolute(count.load(std::sync::atomic::Ordering::Relaxed));
        }
        self.handle
            .as_ref()
            .map(PrometheusHandle::render)
            .unwrap_or_default()
    }

    /// Drains histogram buffers; call periodically so memory stays bounded
    /// even when nothing scrapes.
    pub async fn run_upkeep(&self, every: Duration) {
        let mut ticker = tokio::time::interval(every);
        loop {
            ticker.tick().await;
            if let Some(handle) = &self.handle {
                handle.run_upkeep();
            }
        }
    }
}
