//! What a use case can fail with; each protocol maps it once (HTTP status,
//! gRPC code, Kafka retry-or-dead-letter).

use crate::domain::{ProductId, ValidationErrors};

use super::PortError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The input broke one or more rules; every bad field is listed.
    #[error(transparent)]
    Validation(#[from] ValidationErrors),
    #[error("product {0} not found")]
    NotFound(ProductId),
    /// A dependency (the database) cannot be reached; retrying later may work.
    #[error("dependency unavailable: {0}")]
    Unavailable(String),
    /// The database refused this write for what it is (e.g. too large):
    /// retrying it cannot help.
    #[error("rejected by the database: {0}")]
    Rejected(String),
    /// A bug or corrupt data; the message is for logs, never for clients.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<PortError> for AppError {
    fn from(err: PortError) -> Self {
        match err {
            PortError::Unavailable(msg) => Self::Unavailable(msg),
            PortError::Rejected(msg) => Self::Rejected(msg),
            PortError::Internal(msg) => Self::Internal(msg),
        }
    }
}

impl AppError {
    /// Whether the same request may succeed if retried later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}
