//! `Idempotency-Key` on REST `POST`, `PUT` and `DELETE` (a route layer of the
//! product routes, inside the guard, so the caller is known).
//!
//! With a key: the body is read, the request fingerprinted (method, path,
//! SHA-256 of the body) and the key claimed in the shared store, scoped to
//! the caller (`Principal::caller`, or one anonymous scope without auth).
//! Then:
//! - key free → the handler runs; a 2xx/4xx answer is stored for
//!   `idempotency.ttl_seconds` and returned; a 5xx answer (or a request
//!   that is cancelled or times out) releases the key, so a retry runs again;
//! - same key, same fingerprint, answer stored → that answer is replayed
//!   (status, `Location`, `Content-Type`, body, plus `Idempotent-Replayed: true`);
//! - same key, same fingerprint, still in progress → 409 + `Retry-After: 1`;
//! - same key, different fingerprint → 422;
//! - the store unreachable or slower than `store_timeout_ms` → 503, and the
//!   handler does not run.
//!
//! Without the header, or with `idempotency.enabled: false`, requests pass
//! untouched. A bad header is a 400 ([`header`]).

pub mod header;

use std::{future::Future, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{FromRequest, Request, State},
    http::{
        header::{CONTENT_TYPE, LOCATION, RETRY_AFTER},
        HeaderName, HeaderValue, Method, StatusCode,
    },
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::ApiError;
use crate::{
    api::auth::Principal,
    config::IdempotencySettings,
    idempotency::{
        Claim, ClaimOutcome, Entry, Fingerprint, IdempotencyStore, KeyStoreError, ScopedKey,
        StoredResponse,
    },
};

/// Set on a replayed answer.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The scope of callers without a principal (auth off).
const ANONYMOUS: &str = "anonymous";

/// Answers larger than this are not ours to store (ours are a few bytes).
const MAX_STORED_BODY: usize = 1 << 20;

/// The key store and its timings.
pub struct Idempotency {
    store: Arc<dyn IdempotencyStore>,
    ttl: Duration,
    lock_ttl: Duration,
    store_timeout: Duration,
}

impl Idempotency {
    pub fn new(store: Arc<dyn IdempotencyStore>, settings: &IdempotencySettings) -> Self {
        Self {
            store,
            ttl: Duration::from_secs(settings.ttl_seconds.max(1)),
            lock_ttl: Duration::from_millis(settings.in_progress_ttl_ms.max(1)),
            store_timeout: Duration::from_millis(settings.store_timeout_ms.max(1)),
        }
    }

    /// A store call bounded by `store_timeout`.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, KeyStoreError>>,
    ) -> Result<T, KeyStoreError> {
        tokio::time::timeout(self.store_timeout, call)
            .await
            .unwrap_or_else(|_| Err(KeyStoreError::Unavailable("timed out".into())))
    }
}

fn count(outcome: &'static str) {
    metrics::counter!("http_idempotency_requests_total", "outcome" => outcome).increment(1);
}

/// The middleware (see the module documentation).
pub async fn idempotent(
    State(idempotency): State<Arc<Idempotency>>,
    request: Request,
    next: Next,
) -> Response {
    if !matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::DELETE
    ) {
        return next.run(request).await;
    }
    let key = match header::idempotency_key(request.headers()) {
        Ok(None) => return next.run(request).await,
        Ok(Some(key)) => key,
        Err(err) => return ApiError::new(StatusCode::BAD_REQUEST, err.to_string()).into_response(),
    };
    let scope = request
        .extensions()
        .get::<Principal>()
        .map_or(ANONYMOUS, Principal::caller);
    let key = ScopedKey::new(scope, &key);

    let (parts, body) = request.into_parts();
    // Read as the handlers would: same body limit, same errors.
    let mut body_only = Request::new(body);
    *body_only.extensions_mut() = parts.extensions.clone();
    let body = match Bytes::from_request(body_only, &()).await {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "request body is too large".to_owned()
            } else {
                rejection.body_text()
            };
            return ApiError::new(status, message).into_response();
        }
    };
    let fingerprint = Fingerprint::of(parts.method.as_str(), parts.uri.path(), &body);
    let claim = Claim::new(key, fingerprint.clone());

    match idempotency
        .bounded(idempotency.store.claim(claim, idempotency.lock_ttl))
        .await
    {
        Err(err) => {
            count("store_unavailable");
            tracing::warn!(error = %err, "idempotency key store unavailable; write refused");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the idempotency key store is unavailable, retry later",
            )
            .into_response()
        }
        Ok(ClaimOutcome::Held(entry)) if entry.fingerprint != fingerprint => {
            count("mismatch");
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "this Idempotency-Key was used for a different request (method, path or body)",
            )
            .into_response()
        }
        Ok(ClaimOutcome::Held(Entry { response: None, .. })) => {
            count("in_progress");
            let mut response = ApiError::new(
                StatusCode::CONFLICT,
                "a request with this Idempotency-Key is still in progress, retry later",
            )
            .into_response();
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Ok(ClaimOutcome::Held(Entry {
            response: Some(stored),
            ..
        })) => {
            count("replayed");
            replay(stored)
        }
        Ok(ClaimOutcome::Claimed(claim)) => {
            let request = Request::from_parts(parts, Body::from(body));
            execute(idempotency, claim, request, next).await
        }
    }
}

/// Runs the handler under `claim`, then stores or releases.
async fn execute(
    idempotency: Arc<Idempotency>,
    claim: Claim,
    request: Request,
    next: Next,
) -> Response {
    let mut claim = ReleaseOnDrop {
        idempotency: idempotency.clone(),
        claim,
        armed: true,
    };
    let response = next.run(request).await;
    let status = response.status();
    if status.is_server_error() {
        // Not a final answer: free the key so that a retry runs again.
        claim.armed = false;
        count("released");
        if let Err(err) = idempotency
            .bounded(idempotency.store.release(&claim.claim))
            .await
        {
            tracing::warn!(error = %err, "could not release an idempotency key; it frees itself when its claim expires");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_STORED_BODY).await {
        Ok(bytes) => bytes,
        Err(err) => {
            // The guard releases the key.
            tracing::error!(error = %err, "cannot read an answer to store it");
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                .into_response();
        }
    };
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let stored = StoredResponse {
        status: status.as_u16(),
        location: header(LOCATION),
        content_type: header(CONTENT_TYPE),
        body: String::from_utf8_lossy(&bytes).into_owned(),
    };
    claim.armed = false;
    count("executed");
    if let Err(err) = idempotency
        .bounded(
            idempotency
                .store
                .complete(&claim.claim, stored, idempotency.ttl),
        )
        .await
    {
        // The write happened: answer it. The key stays "in progress" (409)
        // until its claim expires; a retry after that runs again.
        tracing::warn!(error = %err, "could not store the answer of an idempotent request");
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The stored answer again, marked as a replay.
fn replay(stored: StoredResponse) -> Response {
    let mut response = Response::new(Body::from(stored.body));
    *response.status_mut() =
        StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    for (name, value) in [
        (LOCATION, stored.location),
        (CONTENT_TYPE, stored.content_type),
    ] {
        if let Some(value) = value.and_then(|v| HeaderValue::try_from(v).ok()) {
            headers.insert(name, value);
        }
    }
    headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// Releases the claim if the request ends without storing an answer (the
/// handler panicked, the request timed out or the client went away).
struct ReleaseOnDrop {
    idempotency: Arc<Idempotency>,
    claim: Claim,
    armed: bool,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        count("released");
        let idempotency = self.idempotency.clone();
        let claim = self.claim.clone();
        runtime.spawn(async move {
            if let Err(err) = idempotency
                .bounded(idempotency.store.release(&claim))
                .await
            {
                tracing::warn!(error = %err, "could not release an idempotency key; it frees itself when its claim expires");
            }
        });
    }
}
