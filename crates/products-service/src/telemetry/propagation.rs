//! W3C trace context from incoming HTTP and gRPC headers, so a caller's trace
//! continues into this service (Kafka headers are in `adapters::kafka::headers`).

use axum::http::HeaderMap;
use opentelemetry::propagation::Extractor;

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The remote parent carried by `traceparent`/`tracestate`, if any.
pub fn extract(headers: &HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    })
}

/// Makes `span` a child of the trace the request carries.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    // Nothing to continue when no span is exported (saves a header parse
    // and a global lookup per request).
    if !super::traces_exported() {
        return;
    }
    if let Err(err) = span.set_parent(extract(headers)) {
        tracing::debug!(error = ?err, "trace context not continued");
    }
}
