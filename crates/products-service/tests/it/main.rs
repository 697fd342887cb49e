//! The integration tests, one binary (`cargo test --test it`): one module per
//! area, all sharing `tests/common`. Linking rdkafka, mongodb, tonic and axum
//! once instead of once per area is most of what a cold `make test` saves.
//!
//! Run one area with a filter: `cargo test --test it rest_api::`.
//! `tests/tracing_e2e.rs` is a binary of its own: it installs the process-wide
//! tracing subscriber and sets `RUST_LOG`, which no other test may share.
//!
//! Tests run in parallel in this one process (`--test-threads`, default: one
//! per core). Each has its own database, topics, consumer group and cache
//! prefix; process-wide state they share (the metrics registry, the log
//! subscriber of `common::init_logs`) is only ever checked for presence.

#[path = "../common/mod.rs"]
mod common;

mod alert_rules;
mod auth_limits;
mod compose_file;
mod dashboard_queries;
mod dependency_tls;
mod grpc_api;
mod idempotency;
mod kafka_cluster;
mod kafka_pipeline;
mod kafka_sasl;
mod lifecycle;
mod limits;
mod openapi_conformance;
mod pipeline_guarantees;
mod product_events;
mod rebalance;
mod resilience;
mod rest_api;
mod scale_out;
mod search_index;
mod stack_smoke;
mod swagger_browser;
mod tls;
