//! products-service: the product catalog reachable over REST, gRPC and Kafka.
//!
//! Layers (DESIGN.md §1), arrows pointing inward to `products_core`:
//! - [`codec`]: wire formats shared by several edges (Product JSON).
//! - [`adapters`]: MongoDB, Redis and id generation behind the core's ports.
//! - [`api`]: REST (axum) and gRPC (tonic) delivery.
//! - [`telemetry`]: logs, traces and metrics.
//! - [`tls`]: TLS for the listeners and `gen-cert`.
//! - [`server`]: wiring and lifecycle (`Application::build`, then
//!   `run_until_stopped`), and [`config`] for typed settings.

pub mod adapters;
pub mod api;
pub mod codec;
pub mod config;
pub mod server;
pub mod telemetry;
pub mod tls;
