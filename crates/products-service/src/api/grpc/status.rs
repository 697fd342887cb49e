//! The one place use-case errors become gRPC statuses. Validation errors
//! carry a `google.rpc.BadRequest` detail listing every bad field.

use std::time::Duration;

use products_core::{app::AppError, domain::ValidationErrors};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::api::{auth::AuthError, rate_limit::retry_after_secs};

/// Missing/invalid token → Unauthenticated; valid but not allowed →
/// PermissionDenied.
pub fn from_auth_error(err: AuthError) -> Status {
    match err {
        AuthError::Missing | AuthError::Invalid => Status::unauthenticated(err.to_string()),
        AuthError::Forbidden(_) => Status::permission_denied(err.to_string()),
    }
}

/// Over the per-client rate limit: ResourceExhausted with a
/// `google.rpc.RetryInfo` saying how long to wait.
pub fn rate_limited(wait: Duration) -> Status {
    let mut details = ErrorDetails::new();
    details.set_retry_info(Some(Duration::from_secs(retry_after_secs(wait))));
    Status::with_error_details(
        Code::ResourceExhausted,
        "rate limit exceeded, retry later",
        details,
    )
}

pub fn from_app_error(err: AppError) -> Status {
    match err {
        AppError::Validation(errors) => invalid_argument(&errors),
        AppError::NotFound(id) => Status::not_found(format!("product {id} not found")),
        AppError::Unavailable(detail) => {
            tracing::warn!(%detail, "dependency unavailable");
            Status::unavailable("a dependency is unavailable, retry later")
        }
        AppError::Rejected(detail) => {
            tracing::warn!(%detail, "write rejected by the database");
            Status::invalid_argument("the product was rejected by the database")
        }
        AppError::Internal(detail) => {
            tracing::error!(%detail, "internal error");
            Status::internal("internal error")
        }
    }
}

pub fn invalid_argument(errors: &ValidationErrors) -> Status {
    let mut details = ErrorDetails::new();
    for e in errors.fields() {
        details.add_bad_request_violation(e.field.clone(), e.message.clone());
    }
    Status::with_error_details(Code::InvalidArgument, errors.to_string(), details)
}
