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

use products_core::{
    app::{ProductCommand, ProductUpdate},
    domain::{Product, ProductDraft, ProductId, UnvalidatedProduct},
};
use products_service::codec::encode_command;

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

/// Produces create commands of `opts.n` new products to `topic`: their ids,
/// and the seconds taken (see [`produce`]).
pub fn produce_creates(opts: &Opts, topic: &str) -> Result<(Vec<ObjectId>, f64)> {
    let ids: Vec<ObjectId> = (0..opts.n).map(|_| ObjectId::new()).collect();
    let secs = produce(
        opts,
        topic,
        ids.iter()
            .enumerate()
            .map(|(i, id)| (id.to_hex(), create_payload(id, i))),
    )?;
    Ok((ids, secs))
}

/// A create command of the catalog's product `i`, encoded as the service's
/// REST path encodes it (`products_service::codec::encode_command`).
pub fn create_payload(id: &ObjectId, i: usize) -> Vec<u8> {
    let draft = bench_draft(format!("Bench widget-{i}"), 1.5, 1);
    let at = fixed_time(1);
    encode_command(&ProductCommand::Create(Product {
        id: ProductId::from_bytes(id.bytes()),
        draft,
        created_at: at,
        updated_at: at,
    }))
}

/// An update command of the catalog's product `i` (new name and price).
pub fn update_payload(id: &ObjectId, i: usize) -> Vec<u8> {
    encode_command(&ProductCommand::Update(ProductUpdate {
        id: ProductId::from_bytes(id.bytes()),
        draft: bench_draft(format!("Bench widget-{i} updated"), 2.5, 2),
        updated_at: fixed_time(2),
    }))
}

/// A valid product draft; the constants are valid, so parsing cannot fail.
fn bench_draft(name: String, price: f64, quantity: i64) -> ProductDraft {
    ProductDraft::parse(UnvalidatedProduct {
        category_id: Some(CATEGORY.to_owned()),
        name: Some(name),
        description: Some("Produced straight to Kafka by products-bench".to_owned()),
        price: Some(price),
        image_url: None,
        photos: Vec::new(),
        quantity: Some(quantity),
        rating: Some(3),
    })
    .expect("the bench's product fields are valid")
}

fn fixed_time(day: u32) -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone;
    chrono::Utc
        .with_ymd_and_hms(2026, 1, day, 0, 0, 0)
        .single()
        .unwrap_or_default()
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

/// Deletes topics; one that does not exist is no error.
pub async fn delete_topics(opts: &Opts, topics: &[&str]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &opts.brokers)
        .create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    admin.delete_topics(topics, &options).await?;
    Ok(())
}

/// Creates a change-event topic as the service would (compacted, the
/// service's default `events.partitions` and `events.retention_ms`), but with
/// `message.timestamp.type=LogAppendTime`: each record's timestamp is when
/// the broker appended it, the end of an event's relay latency.
pub async fn create_events_topic(opts: &Opts, topic: &str) -> Result<()> {
    let events = products_service::config::Settings::load_from(None, std::iter::empty())?.events;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &opts.brokers)
        .create()?;
    let retention = events.retention_ms.to_string();
    let new = NewTopic::new(topic, events.partitions, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("retention.ms", &retention)
        .set("message.timestamp.type", "LogAppendTime");
    for r in admin.create_topics(&[new], &AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e}"))?;
    }
    Ok(())
}

/// Deletes the run's three topics (of `names`) and the given consumer groups.
pub async fn delete_topics_and_groups(opts: &Opts, names: &Names, groups: &[&str]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &opts.brokers)
        .create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    delete_topics(
        opts,
        &[&names.topic_create, &names.topic_update, &names.topic_dlq],
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
