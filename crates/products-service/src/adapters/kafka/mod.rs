//! Kafka: the command pipeline's transport.
//!
//! - [`publisher`]: `CommandPublisher` — REST writes become records on the
//!   create/update topics (idempotent producer, acks=all, key = product id).
//! - [`consumer`]: the `products_group` consumer: per-partition workers,
//!   retries with backoff while the partition is paused, dead letters, and
//!   offsets stored only once a message is applied or dead-lettered.
//! - [`dead_letter`]: dead-letter records with Spring-compatible provenance
//!   headers, and `replay-dlq`.
//! - [`headers`]: W3C trace context and message metadata in record headers.
//! - [`topics`]: topic creation at startup.

pub mod consumer;
pub mod dead_letter;
pub mod headers;
pub mod publisher;
pub mod topics;

use rdkafka::ClientConfig;

use crate::config::KafkaSettings;

/// Settings every client of ours shares.
fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", "products-service")
        // Fail fast on a dead broker address instead of hanging on DNS.
        .set("socket.connection.setup.timeout.ms", "5000");
    config
}
