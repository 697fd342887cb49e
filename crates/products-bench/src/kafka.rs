//! The run's Kafka side: topics, producing commands, the raw read limit,
//! dead letters and the clean-up of topics and groups.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use mongodb::bson::oid::ObjectId;
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer},
    ClientConfig, Message,
};
use serde_json::json;

use crate::{Names, Opts, CATEGORY, PARTITIONS};

pub async fn create_topics(opts: &Opts, names: &Names) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &opts.brokers)
        .create()?;
    let topics: Vec<NewTopic> = [&names.topic_create, &names.topic_update, &names.topic_dlq]
        .into_iter()
        .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    for r in admin.create_topics(&topics, &AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e}"))?;
    }
    Ok(())
}

pub fn create_payload(id: &ObjectId, i: usize) -> Vec<u8> {
    json!({
        "productId": id.to_hex(),
        "categoryId": CATEGORY,
        "name": format!("Bench widget-{i}"),
        "description": "Produced straight to Kafka by products-bench",
        "price": 1.5,
        "photos": [],
        "quantity": 1,
        "rating": 3,
        "createdAt": "2026-01-01T00:00:00Z",
        "updatedAt": "2026-01-01T00:00:00Z"
    })
    .to_string()
    .into_bytes()
}

/// An update command of the catalog's product `i` (new name and price).
pub fn update_payload(id: &ObjectId, i: usize) -> Vec<u8> {
    json!({
        "productId": id.to_hex(),
        "categoryId": CATEGORY,
        "name": format!("Bench widget-{i} updated"),
        "description": "Updated through Kafka by products-bench",
        "price": 2.5,
        "photos": [],
        "quantity": 2,
        "rating": 4,
        "updatedAt": "2026-01-02T00:00:00Z"
    })
    .to_string()
    .into_bytes()
}

/// A producer set as the service's own (acks=all, idempotent, lz4).
pub fn producer(opts: &Opts) -> Result<ThreadedProducer<DefaultProducerContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", &opts.brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .create()?)
}

/// Produces `(key, payload)` records to `topic` with a new [`producer`] and
/// waits for all acknowledgements; seconds taken (with the producer's start).
pub fn produce(
    opts: &Opts,
    topic: &str,
    records: impl IntoIterator<Item = (String, Vec<u8>)>,
) -> Result<f64> {
    let start = Instant::now();
    produce_with(&producer(opts)?, topic, records)?;
    Ok(start.elapsed().as_secs_f64())
}

/// Produces with `producer` and waits for all acknowledgements; seconds taken.
pub fn produce_with(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    records: impl IntoIterator<Item = (String, Vec<u8>)>,
) -> Result<f64> {
    let start = Instant::now();
    for (key, payload) in records {
        send(producer, topic, &key, payload)?;
    }
    producer.flush(Duration::from_secs(120))?;
    if producer.in_flight_count() != 0 {
        bail!("{} records not delivered", producer.in_flight_count());
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Queues one record, waiting while the producer's queue is full.
pub fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &str,
    mut payload: Vec<u8>,
) -> Result<()> {
    loop {
        match producer.send(BaseRecord::to(topic).key(key).payload(&payload)) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                rec,
            )) => {
                payload = rec.payload.map(|p| p.to_vec()).unwrap_or_default();
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => bail!("producing: {e}"),
        }
    }
}

/// Reads the create topic to the end with a fresh group: the Kafka limit.
pub fn raw_consume(opts: &Opts, names: &Names) -> Result<(f64, usize)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &opts.brokers)
        .set("group.id", &names.raw_group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    let start = Instant::now();
    consumer.subscribe(&[&names.topic_create])?;
    let mut count = 0usize;
    let deadline = start + Duration::from_secs(120);
    while count < opts.n && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                count += 1;
                std::hint::black_box(m.payload());
            }
            Some(Err(e)) => eprintln!("raw read: {e}"),
            None => {}
        }
    }
    let secs = start.elapsed().as_secs_f64();
    consumer.unsubscribe();
    Ok((secs, count))
}

pub fn dead_letters(opts: &Opts, names: &Names) -> Result<u64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &opts.brokers)
        .create()?;
    let mut total = 0;
    for p in 0..PARTITIONS {
        let (low, high) =
            consumer.fetch_watermarks(&names.topic_dlq, p, Duration::from_secs(10))?;
        total += (high - low).max(0) as u64;
    }
    Ok(total)
}

/// Deletes the run's three topics (of `names`) and the given consumer groups.
pub async fn delete_topics_and_groups(opts: &Opts, names: &Names, groups: &[&str]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &opts.brokers)
        .create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    admin
        .delete_topics(
            &[&names.topic_create, &names.topic_update, &names.topic_dlq],
            &options,
        )
        .await?;
    for r in admin.delete_groups(groups, &options).await? {
        if let Err((g, e)) = r {
            if !e.to_string().contains("GroupIdNotFound") {
                eprintln!("deleting consumer group {g}: {e}");
            }
        }
    }
    Ok(())
}
