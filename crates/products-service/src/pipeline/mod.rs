//! The command pipeline's inbound side: the `products_group` consumer that
//! applies the create and update commands REST writes (and other producers)
//! put on Kafka. Like [`crate::api`], it drives the use cases.
//!
//! - [`consumer`]: flow control: the rdkafka receive loop on its own thread,
//!   per-partition channels, pause/resume, rebalance and shutdown.
//! - `worker`: one partition's worker: applies its records in order, waits,
//!   dead-letters, stores offsets.
//! - [`applier`]: applying a decoded command: batching, error
//!   classification, the retry loop and the dead-letter decision; no rdkafka.
//! - [`offsets`]: which offset may be committed while records settle out
//!   of order.
//! - [`waiting`]: updates waiting for their product's create, per product.
//!
//! docs/ARCHITECTURE.md lists the guarantees and where each is enforced.

pub mod applier;
pub mod consumer;
pub mod offsets;
pub mod waiting;
mod worker;

use products_core::app::{LogPosition, ProductCommand};
use rdkafka::{message::OwnedHeaders, Message};

use crate::{
    adapters::kafka::dead_letter,
    codec::{decode_command, CommandKind, MessageOrigin},
};

/// The command a consumed record carries: the topic says which kind (the
/// create topic, else update), the payload is decoded with the record's
/// timestamp, partition and offset as its origin. The error is the reason
/// written to the dead-letter queue. Pure, so it is fuzzed (`fuzz/`).
pub fn decode_message(
    message: &impl Message<Headers = OwnedHeaders>,
    create_topic: &str,
) -> Result<ProductCommand, String> {
    let kind = if message.topic() == create_topic {
        CommandKind::Create
    } else {
        CommandKind::Update
    };
    match message.payload() {
        None => Err("empty payload".to_owned()),
        Some(payload) => {
            decode_command(kind, payload, message_origin(message)).map_err(|e| e.to_string())
        }
    }
}

/// Where a record came from (timestamp, and its position in the log): what
/// a legacy payload without a product id derives its id from.
pub fn message_origin(message: &impl Message<Headers = OwnedHeaders>) -> MessageOrigin {
    let position = record_position(message);
    MessageOrigin {
        timestamp: message
            .timestamp()
            .to_millis()
            .and_then(chrono::DateTime::from_timestamp_millis),
        partition: position.partition,
        offset: position.offset,
    }
}

/// The record's place in the log, which orders the updates of one product.
/// A dead letter replayed to the topic it came from (`replay-dlq`) carries
/// its original place in `kafka_dlt-original-partition/offset` and keeps
/// it: so a replayed old update is older than every update after it and can
/// never overwrite newer state, and a replayed legacy create maps to the
/// same product id as before.
pub fn record_position(message: &impl Message<Headers = OwnedHeaders>) -> LogPosition {
    let (partition, offset) = dead_letter::original_position(message);
    LogPosition { partition, offset }
}

#[cfg(test)]
mod tests {
    use rdkafka::{
        message::{Header, OwnedHeaders, OwnedMessage},
        Timestamp,
    };

    use super::*;

    fn record(topic: &str, headers: Option<OwnedHeaders>) -> OwnedMessage {
        OwnedMessage::new(
            Some(b"{}".to_vec()),
            None,
            topic.to_owned(),
            Timestamp::NotAvailable,
            2,
            900,
            headers,
        )
    }

    fn provenance(topic: &str, partition: i32, offset: i64) -> OwnedHeaders {
        OwnedHeaders::new()
            .insert(Header {
                key: dead_letter::ORIGINAL_TOPIC,
                value: Some(topic.as_bytes()),
            })
            .insert(Header {
                key: dead_letter::ORIGINAL_PARTITION,
                value: Some(&partition.to_be_bytes()),
            })
            .insert(Header {
                key: dead_letter::ORIGINAL_OFFSET,
                value: Some(&offset.to_be_bytes()),
            })
    }

    #[test]
    fn a_record_is_where_it_is() {
        let position = record_position(&record("update-product", None));
        assert_eq!(
            position,
            LogPosition {
                partition: 2,
                offset: 900
            }
        );
    }

    #[test]
    fn a_replayed_dead_letter_keeps_its_original_position() {
        let replayed = record("update-product", Some(provenance("update-product", 2, 17)));
        assert_eq!(
            record_position(&replayed),
            LogPosition {
                partition: 2,
                offset: 17
            }
        );
    }

    #[test]
    fn provenance_of_another_topic_is_ignored() {
        let replayed = record("update-product", Some(provenance("create-product", 1, 17)));
        assert_eq!(record_position(&replayed).offset, 900);
    }
}
