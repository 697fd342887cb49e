//! products-service: the product catalog reachable over REST, gRPC and Kafka.
//!
//! Layers (docs/ARCHITECTURE.md), arrows pointing inward to `products_core`:
//! - [`codec`]: wire formats shared by several edges (Product JSON).
//! - [`adapters`]: MongoDB, Redis, Kafka producing and id generation behind
//!   the core's ports.
//! - [`api`]: REST (axum) and gRPC (tonic) delivery.
//! - [`pipeline`]: the Kafka command consumer, delivery too.
//! - [`events`]: product change events (CloudEvents on Kafka) through an
//!   outbox embedded in the product documents, and their relay.
//! - [`search`]: the search index each replica keeps in memory, fed by the
//!   change events (the index itself is the `products_search` crate).
//! - [`idempotency`]: the `Idempotency-Key` store port for REST writes.
//! - [`telemetry`]: logs, traces and metrics.
//! - [`tls`]: TLS for the listeners and `gen-cert`.
//! - [`server`]: wiring and lifecycle (`Application::build`, then
//!   `run_until_stopped`), and [`config`] for typed settings.

pub mod adapters;
pub mod api;
pub mod codec;
pub mod config;
pub mod events;
pub mod idempotency;
pub mod pipeline;
pub mod search;
pub mod server;
pub mod telemetry;
pub mod tls;
