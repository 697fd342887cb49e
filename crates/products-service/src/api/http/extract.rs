//! Request extractors that answer in the API's JSON error format instead of
//! axum's plain-text rejections.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::{header::CONTENT_TYPE, request::Parts, StatusCode, Uri},
};
use products_core::domain::UnvalidatedProduct;

use super::ApiError;
use crate::codec::decode_product_input;

/// A create/update body: `application/json`, within the body limit, decoded
/// with every bad field reported.
pub struct ProductBody(pub UnvalidatedProduct);

impl<S: Send + Sync> FromRequest<S> for ProductBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_media_type);
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected Content-Type: application/json",
            ));
        }
        let body = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "request body is too large".to_owned()
            } else {
                rejection.body_text()
            };
            ApiError::new(status, message)
        })?;
        Ok(Self(decode_product_input(&body)?))
    }
}

/// The `{id}` path segment as text; the use case validates it. A segment that
/// is not valid UTF-8 is a 400 in JSON.
pub struct IdParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|rejection| ApiError::new(StatusCode::BAD_REQUEST, rejection.body_text()))
    }
}

/// Raw query parameters; a malformed query string is a 400 in JSON.
pub struct QueryParams(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::from_uri(&parts.uri)
    }
}

impl QueryParams {
    /// The query string of `uri`, decoded as axum's `Query` extractor does.
    pub fn from_uri(uri: &Uri) -> Result<Self, ApiError> {
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map(|q| Self(q.0))
            .map_err(|rejection| ApiError::new(StatusCode::BAD_REQUEST, rejection.body_text()))
    }
}

/// Accepts `application/json`, with parameters (`; charset=utf-8`) and the
/// structured-syntax suffix form (`application/problem+json`).
fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}
