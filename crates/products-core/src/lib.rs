//! products-core: the domain model and the use cases of products-service.
//!
//! This crate is deliberately free of I/O crates (no tokio, axum, tonic,
//! rdkafka, mongodb or redis in its `Cargo.toml`), so the compiler enforces
//! the layering of docs/ARCHITECTURE.md: delivery (`api`, `pipeline`) and
//! infrastructure (`adapters`) in the service crate depend on this crate,
//! never the reverse.
//!
//! - [`domain`]: `Product` and the value types that can only hold valid values.
//! - [`app`]: use cases and the port traits they need (repository, cache, ids, clock).

pub mod app;
pub mod domain;
