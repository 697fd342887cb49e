//! The one place HTTP errors are shaped: `{status, error, causes}` (as the Go
//! original), from use-case errors, decoding errors and framework rejections.
//! Internal details go to the log, never into a response.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use products_core::{app::AppError, domain::ValidationErrors};
use serde::Serialize;

use crate::codec::DecodeError;

/// Error response body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The HTTP status code, repeated.
    #[schema(example = 400)]
    pub status: u16,
    #[schema(example = "Bad Request")]
    pub error: String,
    /// One entry per offending field (empty when not about fields).
    pub causes: Vec<Cause>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Cause {
    #[schema(example = "price")]
    pub field: String,
    #[schema(example = "must be greater than 0")]
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    causes: Vec<Cause>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            causes: Vec::new(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: "invalid input".to_owned(),
            causes: errors
                .into_fields()
                .into_iter()
                .map(|e| Cause {
                    field: e.field,
                    message: e.message,
                })
                .collect(),
        }
    }
}

impl From<DecodeError> for ApiError {
    fn from(err: DecodeError) -> Self {
        match err {
            DecodeError::Fields(errors) => errors.into(),
            other => Self::new(StatusCode::BAD_REQUEST, other.to_string()),
        }
    }
}

impl From<AppError> for ApiError {
    fn from(err: AppError) -> Self {
        match err {
            AppError::Validation(errors) => errors.into(),
            AppError::NotFound(id) => {
                Self::new(StatusCode::NOT_FOUND, format!("product {id} not found"))
            }
            AppError::Unavailable(detail) => {
                tracing::warn!(%detail, "dependency unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "a dependency is unavailable, retry later",
                )
            }
            AppError::Rejected(detail) => {
                tracing::warn!(%detail, "write rejected by the database");
                Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "the product was rejected by the database",
                )
            }
            AppError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            status: self.status.as_u16(),
            error: self.message,
            causes: self.causes,
        };
        (self.status, Json(body)).into_response()
    }
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}
