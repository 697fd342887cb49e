//! `products-service events tail`: prints the change events for a person to
//! read, one JSON line each (partition, offset, the CloudEvents attributes,
//! the data), so the stream can be watched without Kafka tools. Reads every
//! partition with no consumer group (nothing is committed); follows new
//! events until interrupted, or stops at the end with `--until-end`.

use std::{collections::HashMap, io::Write, time::Duration};

use anyhow::Context;
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::{Headers, Message},
    Offset, TopicPartitionList,
};
use serde_json::{json, Value};

use crate::config::{EventsSettings, KafkaSettings};

#[derive(Debug, Clone, Default)]
pub struct TailOptions {
    /// Start at the oldest event kept (else: only new ones).
    pub from_beginning: bool,
    /// Only this product's events.
    pub product: Option<String>,
    /// Stop once the end of every partition (as of the start) is reached.
    pub until_end: bool,
}

/// Prints events to `out` until interrupted (or the end, with
/// `until_end`); how many were printed. Blocking: run it on its own thread.
pub fn tail(
    kafka: &KafkaSettings,
    events: &EventsSettings,
    options: &TailOptions,
    out: &mut impl Write,
    stop: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<u64> {
    let consumer: BaseConsumer = crate::adapters::kafka::client_config(kafka)
        .set("group.id", "products-service-events-tail")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .context("cannot create a Kafka consumer")?;
    let topic = &events.topic;
    let mut assignment = TopicPartitionList::new();
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for (partition, low, high) in
        crate::adapters::kafka::partition_offsets(&consumer, topic, Duration::from_secs(10))?
    {
        let start = if options.from_beginning { low } else { high };
        assignment.add_partition_offset(topic, partition, Offset::Offset(start))?;
        if high > start {
            ends.insert(partition, high);
        }
    }
    consumer.assign(&assignment)?;
    let mut printed = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if options.until_end && ends.is_empty() {
            break;
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.context("cannot read the events topic")?;
        if let Some(end) = ends.get(&message.partition()) {
            if message.offset() + 1 >= *end {
                ends.remove(&message.partition());
            }
        }
        let key = message.key().map(String::from_utf8_lossy);
        if let Some(product) = &options.product {
            if key.as_deref() != Some(product.as_str()) {
                continue;
            }
        }
        writeln!(out, "{}", line(&message, key.as_deref()))?;
        out.flush()?;
        printed += 1;
    }
    Ok(printed)
}

/// One event as a JSON object: where it is, its attributes (`ce_` prefix
/// dropped), and its data (null for a delete).
fn line(message: &rdkafka::message::BorrowedMessage<'_>, key: Option<&str>) -> Value {
    let mut attributes = serde_json::Map::new();
    if let Some(headers) = message.headers() {
        for header in headers.iter() {
            let value = String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned();
            let name = header.key.strip_prefix("ce_").unwrap_or(header.key);
            attributes.insert(name.to_owned(), Value::String(value));
        }
    }
    let data = message
        .payload()
        .map(|p| {
            serde_json::from_slice(p)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(p).into_owned()))
        })
        .unwrap_or(Value::Null);
    json!({
        "partition": message.partition(),
        "offset": message.offset(),
        "key": key,
        "event": attributes,
        "data": data,
    })
}
