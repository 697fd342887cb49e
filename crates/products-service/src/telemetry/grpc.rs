//! A tower layer for the gRPC server: a server span per call (continuing the
//! caller's trace from its `traceparent` metadata) and RED metrics by method
//! and status code.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use axum::http::{Request, Response};
use tower::{Layer, Service};
use tracing::Instrument;

use super::propagation::continue_trace;

#[derive(Clone, Copy, Default)]
pub struct GrpcTelemetryLayer;

impl<S> Layer<S> for GrpcTelemetryLayer {
    type Service = GrpcTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcTelemetry { inner }
    }
}

#[derive(Clone)]
pub struct GrpcTelemetry<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for GrpcTelemetry<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let span = tracing::info_span!(
            "grpc.request",
            otel.name = method.as_str(),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = method.as_str(),
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        continue_trace(&span, request.headers());
        // The clone that was made ready by `poll_ready` serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let started = Instant::now();
        Box::pin(async move {
            let result = inner.call(request).instrument(span.clone()).await;
            // Errors come back "trailers-only": the status is in the headers.
            // Without it the call succeeded (status OK in the trailers).
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                Err(_) => tonic::Code::Unknown,
            };
            // Server-side failures fail the span (as OpenTelemetry's gRPC
            // conventions say); client errors such as NotFound do not.
            if matches!(
                code,
                tonic::Code::Unknown
                    | tonic::Code::Internal
                    | tonic::Code::Unavailable
                    | tonic::Code::DataLoss
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unimplemented
            ) {
                span.record("otel.status_code", "ERROR");
            }
            let code = match code {
                tonic::Code::Ok => "OK".to_owned(),
                other => format!("{other:?}"),
            };
            span.record("rpc.grpc.status_code", code.as_str());
            let labels = [("method", method), ("code", code)];
            metrics::counter!("grpc_requests_total", &labels).increment(1);
            metrics::histogram!("grpc_request_duration_seconds", &labels)
                .record(started.elapsed().as_secs_f64());
            result
        })
    }
}
