//! Load shedding for the product RPCs: over the concurrency limit a call is
//! answered `Unavailable` at once (clients retry with backoff) instead of
//! queueing. Health and reflection are not limited, so an overloaded
//! instance still reports itself alive.

use std::convert::Infallible;

use axum::{
    error_handling::HandleErrorLayer,
    response::{IntoResponse, Response},
};
use tonic::{body::Body, server::NamedService, service::LayerExt, Status};
use tower::{
    limit::GlobalConcurrencyLimitLayer, load_shed::error::Overloaded, BoxError, Service,
    ServiceBuilder,
};

type HttpRequest = axum::http::Request<Body>;
type HttpResponse = axum::http::Response<Body>;

/// Wraps a generated gRPC server so at most `max_in_flight` calls run at
/// once (0 = no limit); the result is still a named service for
/// `Server::add_service`.
pub fn shed_load<S>(
    service: S,
    max_in_flight: usize,
) -> impl Service<HttpRequest, Response = Response, Error = Infallible, Future: Send + 'static>
       + NamedService
       + Clone
       + Send
       + Sync
       + 'static
where
    S: Service<HttpRequest, Response = HttpResponse, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let limit = if max_in_flight == 0 {
        tokio::sync::Semaphore::MAX_PERMITS
    } else {
        max_in_flight
    };
    ServiceBuilder::new()
        .layer(HandleErrorLayer::new(answer_overload))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(limit))
        .named_layer(service)
}

async fn answer_overload(err: BoxError) -> Response {
    let status = if err.is::<Overloaded>() {
        metrics::counter!("grpc_requests_shed_total").increment(1);
        Status::unavailable("too many requests in flight, retry later")
    } else {
        tracing::error!(error = %err, "gRPC call failed in middleware");
        Status::internal("internal error")
    };
    status.into_http::<Body>().into_response()
}
