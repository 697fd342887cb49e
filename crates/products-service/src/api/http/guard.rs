//! What stands before the product handlers: the per-client rate limit (429),
//! load shedding over the concurrency limit (503 at once instead of a queue)
//! and bearer-token authentication (401/403). Every refusal uses the API's
//! JSON error body; probes and docs are not guarded.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    error_handling::HandleErrorLayer,
    extract::{ConnectInfo, Request, State},
    http::{
        header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE},
        HeaderValue, Method, StatusCode,
    },
    middleware::Next,
    response::{IntoResponse, Response},
    BoxError, Router,
};
use tower::{limit::GlobalConcurrencyLimitLayer, ServiceBuilder};

use super::ApiError;
use crate::api::{
    auth::{Access, AuthError, Authenticator},
    rate_limit::{retry_after_secs, RateLimiter},
};

/// Adds the guards to `routes` (route layers: they run after routing, for
/// these routes only). Outermost first: rate limit, load shedding, auth.
pub fn protect<S: Clone + Send + Sync + 'static>(
    routes: Router<S>,
    auth: Option<Arc<Authenticator>>,
    rate_limiter: Option<Arc<RateLimiter>>,
    max_concurrent_requests: usize,
) -> Router<S> {
    let mut routes = match auth {
        Some(auth) => routes.route_layer(axum::middleware::from_fn_with_state(auth, authorize)),
        None => routes,
    };
    if max_concurrent_requests > 0 {
        routes = routes.route_layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(overloaded))
                .load_shed()
                // One semaphore for all routes (a plain concurrency limit
                // would be copied per route).
                .layer(GlobalConcurrencyLimitLayer::new(max_concurrent_requests)),
        );
    }
    if let Some(limiter) = rate_limiter {
        routes = routes.route_layer(axum::middleware::from_fn_with_state(limiter, rate_limit));
    }
    routes
}

fn with_retry_after(mut response: Response, secs: u64) -> Response {
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs));
    response
}

async fn overloaded(err: BoxError) -> Response {
    if err.is::<tower::load_shed::error::Overloaded>() {
        metrics::counter!("http_requests_shed_total").increment(1);
        let body = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight, retry later",
        );
        with_retry_after(body.into_response(), 1)
    } else {
        tracing::error!(error = %err, "request failed in middleware");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
    }
}

async fn rate_limit(
    State(limiter): State<Arc<RateLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    match limiter.check(client) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let body = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded, retry later",
            );
            with_retry_after(body.into_response(), retry_after_secs(wait))
        }
    }
}

async fn authorize(
    State(auth): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let access = if matches!(*request.method(), Method::GET | Method::HEAD) {
        Access::Read
    } else {
        Access::Write
    };
    // A header that is not text is present but invalid, not missing.
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default());
    match auth.authorize(header, access) {
        Ok(principal) => {
            // Who called, for what runs after the guard (idempotency scopes).
            if let Some(principal) = principal {
                request.extensions_mut().insert(principal);
            }
            next.run(request).await
        }
        Err(err) => refusal(&err),
    }
}

/// 401 or 403 with an RFC 6750 challenge.
fn refusal(err: &AuthError) -> Response {
    const REALM: &str = r#"Bearer realm="products-service""#;
    let (status, challenge) = match err {
        AuthError::Missing => (StatusCode::UNAUTHORIZED, REALM.to_owned()),
        AuthError::Invalid => (
            StatusCode::UNAUTHORIZED,
            format!(r#"{REALM}, error="invalid_token""#),
        ),
        AuthError::Forbidden(scope) => (
            StatusCode::FORBIDDEN,
            format!(r#"{REALM}, error="insufficient_scope", scope="{scope}""#),
        ),
    };
    let mut response = ApiError::new(status, err.to_string()).into_response();
    let challenge =
        HeaderValue::try_from(challenge).unwrap_or_else(|_| HeaderValue::from_static(REALM));
    response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
    response
}
