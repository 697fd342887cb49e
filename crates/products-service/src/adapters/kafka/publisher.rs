//! Publishes write commands: one record per command on the create or update
//! topic, keyed by product id (all commands of a product land on one
//! partition, in order). Returns when the broker acknowledged the record
//! (acks=all) or the delivery timeout passed.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use mongodb::bson::oid::ObjectId;
use products_core::app::{CommandPublisher, PortError, ProductCommand};
use rdkafka::{
    error::KafkaError,
    producer::{FutureProducer, FutureRecord, Producer, PurgeConfig},
};

use super::headers;
use crate::{codec::encode_command, config::KafkaSettings};

#[derive(Clone)]
pub struct KafkaCommandPublisher {
    producer: FutureProducer,
    create_topic: String,
    update_topic: String,
    delivery_timeout: Duration,
}

/// The producer configuration shared by commands and dead letters.
pub fn producer(settings: &KafkaSettings) -> Result<FutureProducer, KafkaError> {
    let p = &settings.producer;
    super::client_config(settings)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", p.compression.as_str())
        .set("linger.ms", p.linger_ms.to_string())
        .set("batch.size", p.batch_size_bytes.to_string())
        .set("message.timeout.ms", p.delivery_timeout_ms.to_string())
        .set(
            "request.timeout.ms",
            p.delivery_timeout_ms.min(30_000).to_string(),
        )
        // Above the broker's default record limit (1 MiB), so a dead letter
        // of a maximal record plus its provenance headers is still attempted.
        .set("message.max.bytes", "2097152")
        .create()
}

/// The change-event producer: like the command producer, but a record is
/// never given up (`message.timeout.ms` 0): a broker outage of any length
/// only delays events, and the idempotent producer keeps them in order.
///
/// `linger_ms` is its own (`events.linger_ms`): nobody waits for an event's
/// acknowledgement, so it can be raised independently of the commands'.
pub fn events_producer(
    settings: &KafkaSettings,
    linger_ms: u64,
) -> Result<FutureProducer, KafkaError> {
    let p = &settings.producer;
    super::client_config(settings)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", p.compression.as_str())
        .set("linger.ms", linger_ms.to_string())
        .set("batch.size", p.batch_size_bytes.to_string())
        .set("message.timeout.ms", "0")
        // Memory held while the brokers are away or slow; beyond it the
        // relay waits (and `events.relay.max_pending` caps what it holds).
        .set("queue.buffering.max.kbytes", "16384")
        .create()
}

impl KafkaCommandPublisher {
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: producer(settings)?,
            create_topic: settings.topics.create.clone(),
            update_topic: settings.topics.update.clone(),
            delivery_timeout: Duration::from_millis(settings.producer.delivery_timeout_ms),
        })
    }

    /// Whether a broker answers a metadata request (readiness).
    pub async fn ping(&self) -> Result<(), String> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(2))
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Waits for outstanding records (shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(err) = self.producer.flush(timeout) {
            tracing::warn!(error = %err, "records still unsent at shutdown");
        }
    }
}

#[async_trait]
impl CommandPublisher for KafkaCommandPublisher {
    #[tracing::instrument(
        name = "kafka.produce",
        skip_all,
        fields(
            messaging.system = "kafka",
            messaging.destination.name = tracing::field::Empty,
            product_id = %command.product_id(),
        ),
        err
    )]
    async fn publish(&self, command: &ProductCommand) -> Result<(), PortError> {
        let topic = match command {
            ProductCommand::Create(_) => &self.create_topic,
            ProductCommand::Update(_) => &self.update_topic,
        };
        tracing::Span::current().record("messaging.destination.name", topic.as_str());
        let payload = encode_command(command);
        let key = command.product_id().to_string();
        let message_id = ObjectId::new().to_hex();
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&payload)
            .headers(headers::outgoing(&message_id));
        let started = Instant::now();
        // librdkafka should expire queued records after message.timeout.ms,
        // but with the broker gone the idempotent producer holds them longer.
        // The outer bound keeps the answer prompt, and the purge makes the 503
        // true: a record we gave up on must not be delivered later. Records
        // already on the wire are not purged; those are the rare writes that
        // can still land after a 503.
        let bound = self.delivery_timeout + Duration::from_millis(500);
        let failure =
            match tokio::time::timeout(bound, self.producer.send(record, self.delivery_timeout))
                .await
            {
                Ok(Ok(_)) => None,
                Ok(Err((err, _))) => Some(err.to_string()),
                Err(_) => {
                    self.producer.purge(PurgeConfig::default().queue());
                    Some("delivery not confirmed in time".to_owned())
                }
            };
        metrics::histogram!("kafka_produce_duration_seconds", "topic" => topic.clone())
            .record(started.elapsed().as_secs_f64());
        let result = if failure.is_some() { "error" } else { "ok" };
        metrics::counter!("kafka_produced_messages_total", "topic" => topic.clone(), "result" => result)
            .increment(1);
        match failure {
            None => Ok(()),
            Some(err) => Err(PortError::Unavailable(format!("kafka: {err}"))),
        }
    }
}
