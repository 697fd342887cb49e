//! `/api/v1/products` handlers: decode, call the use case, encode.

use axum::{
    extract::State,
    http::{header::LOCATION, StatusCode},
    response::IntoResponse,
    Json,
};
use products_core::domain::{SearchPage, SearchQuery};
use serde::Serialize;

use super::{
    extract::{IdParam, ProductBody, QueryParams},
    ApiError, AppState, ErrorBody,
};
use crate::codec::{DraftJson, ProductJson};

/// A write accepted into the command pipeline.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceptedResponse {
    /// Poll `GET /api/v1/products/{productId}` to see it applied.
    #[schema(example = "65a1f0c2e4b0a1b2c3d4e5f6")]
    pub product_id: String,
}

fn accepted(id: &products_core::domain::ProductId) -> impl IntoResponse {
    (
        StatusCode::ACCEPTED,
        [(LOCATION, format!("/api/v1/products/{id}"))],
        Json(AcceptedResponse {
            product_id: id.to_string(),
        }),
    )
}

/// A page of search results.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchResponse {
    pub total_count: u64,
    pub total_pages: u64,
    pub page: u64,
    pub size: u64,
    pub has_more: bool,
    pub products: Vec<ProductJson>,
}

impl From<&SearchPage> for SearchResponse {
    fn from(page: &SearchPage) -> Self {
        Self {
            total_count: page.total_count,
            total_pages: page.total_pages(),
            page: page.page,
            size: page.size,
            has_more: page.has_more(),
            products: page.products.iter().map(ProductJson::from).collect(),
        }
    }
}

#[utoipa::path(
    post, path = "/api/v1/products", tag = "products",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the first answer to this key is replayed (with `Idempotent-Replayed: true`) to a retry of the same request by the same caller for `idempotency.ttl_seconds` (24 h by default); a different request with the key gets 422, one arriving while the first runs gets 409. A quoted string (`\"…\"`) or a bare token, at most 255 characters. Optional.")),
    request_body(content = DraftJson, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted into the command pipeline; applied shortly", body = AcceptedResponse,
            headers(
                ("Location" = String, description = "URL of the product once applied"),
                ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same Idempotency-Key"),
            )),
        (status = 400, description = "Invalid input (every bad field is listed) or Idempotency-Key header", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 409, description = "A request with this Idempotency-Key is still in progress; retry later", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 422, description = "This Idempotency-Key was used for a different request (method, path or body)", body = ErrorBody),
        (status = 503, description = "Kafka or the idempotency key store unavailable, or too many requests in flight; nothing was accepted", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired bearer token (when auth is enabled)", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
        (status = 403, description = "The token lacks the write scope", body = ErrorBody),
        (status = 429, description = "Per-client rate limit exceeded (when enabled)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    ProductBody(input): ProductBody,
) -> Result<impl IntoResponse, ApiError> {
    let id = state.products.submit_create(input).await?;
    Ok(accepted(&id))
}

#[utoipa::path(
    put, path = "/api/v1/products/{id}", tag = "products",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "24-hex ObjectId of the product"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the first answer to this key is replayed (with `Idempotent-Replayed: true`) to a retry of the same request by the same caller for `idempotency.ttl_seconds` (24 h by default); a different request with the key gets 422, one arriving while the first runs gets 409. A quoted string (`\"…\"`) or a bare token, at most 255 characters. Optional."),
    ),
    request_body(content = DraftJson, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted into the command pipeline; applied shortly (an update of a product that never appears is dead-lettered)", body = AcceptedResponse,
            headers(
                ("Location" = String, description = "URL of the product"),
                ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same Idempotency-Key"),
            )),
        (status = 400, description = "Invalid id, input or Idempotency-Key header", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 409, description = "A request with this Idempotency-Key is still in progress; retry later", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 422, description = "This Idempotency-Key was used for a different request (method, path or body)", body = ErrorBody),
        (status = 503, description = "Kafka or the idempotency key store unavailable, or too many requests in flight; nothing was accepted", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired bearer token (when auth is enabled)", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
        (status = 403, description = "The token lacks the write scope", body = ErrorBody),
        (status = 429, description = "Per-client rate limit exceeded (when enabled)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    IdParam(id): IdParam,
    ProductBody(input): ProductBody,
) -> Result<impl IntoResponse, ApiError> {
    let id = state.products.submit_update(&id, input).await?;
    Ok(accepted(&id))
}

#[utoipa::path(
    get, path = "/api/v1/products/{id}", tag = "products",
    security((), ("bearer" = [])),
    params(("id" = String, Path, description = "24-hex ObjectId of the product")),
    responses(
        (status = 200, description = "The product", body = ProductJson),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 404, description = "No such product", body = ErrorBody),
        (status = 503, description = "Database unavailable, or too many requests in flight", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired bearer token (only with auth.protect_reads)", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
        (status = 429, description = "Per-client rate limit exceeded (when enabled)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn get_by_id(
    State(state): State<AppState>,
    IdParam(id): IdParam,
) -> Result<Json<ProductJson>, ApiError> {
    let product = state.products.get(&id).await?;
    Ok(Json(ProductJson::from(&product)))
}

/// Live products whose name or description contains the text (literal, case
/// insensitive), sorted by name then id. Answered from the replica's search
/// index: a stored change is searchable within 1 s (docs/SEARCH.md).
#[utoipa::path(
    get, path = "/api/v1/products/search", tag = "products",
    security((), ("bearer" = [])),
    params(
        ("search" = Option<String>, Query, description = "Literal text (at most 250 characters), matched case-insensitively (Unicode simple case folding) in name or description; empty matches all"),
        ("page" = Option<i64>, Query, description = "Page number from 1 (0 means 1)", minimum = 0),
        ("size" = Option<i64>, Query, description = "Page size, default 10, capped at 100", minimum = 0),
    ),
    responses(
        (status = 200, description = "A page of matches", body = SearchResponse),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
        (status = 503, description = "Database unavailable, or too many requests in flight", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired bearer token (only with auth.protect_reads)", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
        (status = 429, description = "Per-client rate limit exceeded (when enabled)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn search(
    State(state): State<AppState>,
    QueryParams(params): QueryParams,
) -> Result<Json<SearchResponse>, ApiError> {
    let page = state.products.search(search_query(&params)?).await?;
    Ok(Json(SearchResponse::from(&page)))
}

/// The search criteria of a `GET /api/v1/products/search` query string:
/// `search`, `page` and `size`, the last value of each when repeated, every
/// bad one reported. Pure, so it is fuzzed (`fuzz/`).
pub fn search_query(params: &[(String, String)]) -> Result<SearchQuery, ApiError> {
    Ok(SearchQuery::parse_params(
        param(params, "search"),
        param(params, "page"),
        param(params, "size"),
    )?)
}

#[utoipa::path(
    delete, path = "/api/v1/products/{id}", tag = "products",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "24-hex ObjectId of the product"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the first answer to this key is replayed (with `Idempotent-Replayed: true`) to a retry of the same request by the same caller for `idempotency.ttl_seconds` (24 h by default); a different request with the key gets 422, one arriving while the first runs gets 409. A quoted string (`\"…\"`) or a bare token, at most 255 characters. Optional."),
    ),
    responses(
        (status = 204, description = "Deleted",
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same Idempotency-Key"))),
        (status = 400, description = "Invalid id or Idempotency-Key header", body = ErrorBody),
        (status = 404, description = "No such product", body = ErrorBody),
        (status = 409, description = "A request with this Idempotency-Key is still in progress; retry later", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 422, description = "This Idempotency-Key was used for a different request (method, path or body)", body = ErrorBody),
        (status = 503, description = "Database or idempotency key store unavailable, or too many requests in flight", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired bearer token (when auth is enabled)", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
        (status = 403, description = "The token lacks the write scope", body = ErrorBody),
        (status = 429, description = "Per-client rate limit exceeded (when enabled)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    IdParam(id): IdParam,
) -> Result<StatusCode, ApiError> {
    state.products.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The last value given for `name` (as most frameworks do with repeats).
fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}
