//! Delivery: HTTP (axum) and gRPC (tonic) front doors to the use cases.
//!
//! Each protocol decodes its input into domain types, calls a use case on
//! `ProductService`, and maps `AppError` to its own errors exactly once
//! (`http::error`, `grpc::status`). Both share the bearer-token check
//! ([`auth`]) and the per-client rate limit ([`rate_limit`]).

pub mod auth;
pub mod grpc;
pub mod http;
pub mod rate_limit;
