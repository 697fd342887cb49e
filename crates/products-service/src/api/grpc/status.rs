//! The one place use-case errors become gRPC statuses. Validation errors
//! carry a `google.rpc.BadRequest` detail listing every bad field.

use products_core::{app::AppError, domain::ValidationErrors};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub fn from_app_error(err: AppError) -> Status {
    match err {
        AppError::Validation(errors) => invalid_argument(&errors),
        AppError::NotFound(id) => Status::not_found(format!("product {id} not found")),
        AppError::Unavailable(detail) => {
            tracing::warn!(%detail, "dependency unavailable");
            Status::unavailable("a dependency is unavailable, retry later")
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
