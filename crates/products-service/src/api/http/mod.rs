//! The REST API (axum): routes, middleware stack and shared state.
//!
//! Middleware, outermost first: request id (set + propagated), trace span,
//! CORS, compression, timeout, body limit. RED metrics are recorded per
//! matched route template. The product routes are guarded (rate limit, load
//! shedding, authentication: [`guard`]); probes and docs are not. Inside the
//! guard, writes honour `Idempotency-Key` ([`idempotency`]).

mod error;
mod extract;
mod guard;
mod health;
pub mod idempotency;
mod metrics;
mod openapi;
mod products;

use std::{sync::Arc, time::Duration};

use axum::{http::HeaderName, routing::get, Router};
use products_core::app::ProductService;
use tower::ServiceBuilder;
use tower_http::{
    compression::CompressionLayer,
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::TraceLayer,
};

pub use error::{ApiError, ErrorBody};
pub use extract::QueryParams;
pub use health::{Probe, Readiness};
pub use openapi::ApiDoc;
pub use products::search_query;

use crate::{
    api::{auth::Authenticator, rate_limit::RateLimiter},
    config::HttpSettings,
    telemetry::propagation::continue_trace,
};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub products: ProductService,
    pub readiness: Arc<Readiness>,
    /// `None`: authentication is off.
    pub auth: Option<Arc<Authenticator>>,
    /// `None`: no per-client rate limit.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    /// `None`: `Idempotency-Key` is ignored (`idempotency.enabled: false`).
    pub idempotency: Option<Arc<idempotency::Idempotency>>,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP application: API, health, OpenAPI document and Swagger UI.
pub fn router(state: AppState, settings: &HttpSettings) -> Router {
    let products = Router::new()
        .route("/api/v1/products", axum::routing::post(products::create))
        .route("/api/v1/products/search", get(products::search))
        .route(
            "/api/v1/products/{id}",
            get(products::get_by_id)
                .put(products::update)
                .delete(products::delete),
        );
    // Added first, so it runs last: after the guard has named the caller.
    let products = match &state.idempotency {
        Some(keys) => products.route_layer(axum::middleware::from_fn_with_state(
            keys.clone(),
            idempotency::idempotent,
        )),
        None => products,
    };
    let products = guard::protect(
        products,
        state.auth.clone(),
        state.rate_limiter.clone(),
        settings.max_concurrent_requests,
    );
    let api = products
        .route("/health", get(health::live))
        .route("/ready", get(health::ready))
        .route_layer(axum::middleware::from_fn(metrics::track))
        .with_state(state);

    let middleware = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &axum::http::Request<axum::body::Body>| {
                    let span = tracing::info_span!(
                        "http.request",
                        otel.name = request.method().as_str(),
                        otel.kind = "server",
                        http.request.method = request.method().as_str(),
                        url.path = request.uri().path(),
                        http.route = tracing::field::Empty,
                        http.response.status_code = tracing::field::Empty,
                        otel.status_code = tracing::field::Empty,
                    );
                    continue_trace(&span, request.headers());
                    span
                })
                .on_response(
                    |response: &axum::http::Response<_>, _latency, span: &tracing::Span| {
                        span.record("http.response.status_code", response.status().as_u16());
                        // Server errors fail the span; 4xx are the client's doing.
                        if response.status().is_server_error() {
                            span.record("otel.status_code", "ERROR");
                        }
                    },
                ),
        )
        .layer(cors(&settings.cors_allowed_origins))
        .layer(CompressionLayer::new())
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_millis(settings.request_timeout_ms),
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            settings.body_limit_bytes,
        ));

    api.merge(openapi::swagger_ui())
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(middleware)
}

fn cors(origins: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods(tower_http::cors::Any)
        .allow_headers(tower_http::cors::Any);
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(AllowOrigin::any())
    } else {
        let parsed = origins.iter().filter_map(|o| o.parse().ok());
        layer.allow_origin(AllowOrigin::list(parsed))
    }
}
