//! RED metrics for HTTP: requests and latency by method, route template
//! (never the raw path, which would explode cardinality) and status.

use std::time::Instant;

use axum::{extract::MatchedPath, extract::Request, middleware::Next, response::Response};
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // Name the request's span after its route template ("GET /api/v1/products/{id}").
    // (The OpenTelemetry span already exists, so it is renamed directly.)
    let span = tracing::Span::current();
    span.record("http.route", route.as_str());
    // Only when spans are exported: a name and a context lookup per request.
    if crate::telemetry::traces_exported() {
        span.context()
            .span()
            .update_name(format!("{method} {route}"));
    }
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
