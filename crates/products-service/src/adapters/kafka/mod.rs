//! Kafka: the command pipeline's transport.
//!
//! - [`publisher`]: `CommandPublisher` — REST writes become records on the
//!   create/update topics (idempotent producer, acks=all, key = product id).
//! - The `products_group` consumer is inbound, in [`crate::pipeline`].
//! - [`dead_letter`]: dead-letter records with Spring-compatible provenance
//!   headers, and `replay-dlq`.
//! - [`headers`]: W3C trace context and message metadata in record headers.
//! - [`topics`]: topic creation at startup.

pub mod dead_letter;
pub mod headers;
pub mod publisher;
pub mod topics;

use std::time::Duration;

use anyhow::Context;
use rdkafka::{
    consumer::{BaseConsumer, Consumer, ConsumerContext},
    ClientConfig,
};

use crate::config::{ExposeSecret, KafkaSettings};

/// Every partition of `topic` with its low and high watermark, as the
/// broker answers now (readers that assign themselves a whole topic: the
/// search index feed, `events tail`). An error if the topic has none.
pub(crate) fn partition_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<(i32, i64, i64)>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("cannot read the metadata of {topic}"))?;
    let mut partitions = Vec::new();
    for partition in metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions())
    {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition.id(), timeout)
            .with_context(|| format!("cannot read the offsets of {topic}/{}", partition.id()))?;
        partitions.push((partition.id(), low, high));
    }
    anyhow::ensure!(!partitions.is_empty(), "topic {topic} does not exist (yet)");
    Ok(partitions)
}

/// Settings every client of ours shares, transport security included
/// (secrets must have been resolved: `Settings::resolve_secrets`). rdkafka's
/// `Debug` of a `ClientConfig` hides `sasl.password`.
pub(crate) fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", "products-service")
        // Fail fast on a dead broker address instead of hanging on DNS.
        .set("socket.connection.setup.timeout.ms", "5000");
    let security = &settings.security;
    config.set("security.protocol", security.protocol.as_str());
    if let Some(ca) = &security.ssl_ca_file {
        config.set("ssl.ca.location", ca.to_string_lossy());
    }
    if security.protocol.uses_sasl() {
        let sasl = &security.sasl;
        config.set("sasl.mechanism", &sasl.mechanism);
        if let Some(username) = &sasl.username {
            config.set("sasl.username", username);
        }
        if let Some(password) = &sasl.password {
            config.set("sasl.password", password.expose_secret());
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use rdkafka::producer::FutureProducer;

    use super::client_config;
    use crate::config::{KafkaSecurityProtocol, Settings};

    fn settings() -> crate::config::KafkaSettings {
        let mut kafka = Settings::load_from(None, Vec::new()).unwrap().kafka;
        kafka.security.protocol = KafkaSecurityProtocol::SaslSsl;
        kafka.security.ssl_ca_file = Some("/certs/kafka-ca.pem".into());
        kafka.security.sasl.username = Some("products".to_owned());
        kafka.security.sasl.password = Some("sasl-hunter2".into());
        kafka
    }

    #[test]
    fn security_settings_become_librdkafka_keys() {
        let config = client_config(&settings());
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("ssl.ca.location"), Some("/certs/kafka-ca.pem"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("products"));
        assert_eq!(config.get("sasl.password"), Some("sasl-hunter2"));
        assert!(!format!("{config:?}").contains("hunter2"));

        let mut plain = settings();
        plain.security.protocol = KafkaSecurityProtocol::Plaintext;
        let config = client_config(&plain);
        assert_eq!(config.get("security.protocol"), Some("plaintext"));
        assert_eq!(config.get("sasl.password"), None);
    }

    /// A client that cannot be created says why, without the password.
    #[test]
    fn creation_errors_do_not_echo_the_password() {
        let mut kafka = settings();
        kafka.security.sasl.mechanism = "NOT-A-MECHANISM".to_owned();
        let err = client_config(&kafka)
            .create::<FutureProducer>()
            .err()
            .expect("unknown SASL mechanism");
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
    }

    /// The build has what SASL/SCRAM over TLS needs (rdkafka `ssl` feature).
    #[test]
    fn librdkafka_is_built_with_ssl_and_scram() {
        let mut kafka = settings();
        kafka.security.ssl_ca_file = None;
        let producer: FutureProducer = client_config(&kafka).create().expect("sasl_ssl + SCRAM");
        drop(producer);
    }
}
