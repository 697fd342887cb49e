//! Kafka helpers for pipeline tests: produce raw records, read a topic from
//! the start, and compare a group's committed offsets with the log end.

use std::time::{Duration, Instant};

use products_service::config::Settings;
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::{Header, OwnedHeaders, OwnedMessage},
    producer::{FutureProducer, FutureRecord},
    ClientConfig, Message, Offset, TopicPartitionList,
};

pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.timeout.ms", "15000")
        .set("message.max.bytes", "2097152")
        // Retries must not reorder records within a partition.
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

/// Sends one record and returns (partition, offset).
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&str>,
    payload: &[u8],
    headers: &[(&str, &str)],
) -> (i32, i64) {
    let mut owned = OwnedHeaders::new();
    for (key, value) in headers {
        owned = owned.insert(Header {
            key,
            value: Some(*value),
        });
    }
    let mut record: FutureRecord<'_, str, [u8]> =
        FutureRecord::to(topic).payload(payload).headers(owned);
    if let Some(key) = key {
        record = record.key(key);
    }
    send(producer, record).await
}

/// Sends `record` as built by the caller (a partition of its choice, headers
/// copied from another record…); where it was stored.
pub async fn send<K, P>(producer: &FutureProducer, record: FutureRecord<'_, K, P>) -> (i32, i64)
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    let delivery = producer
        .send(record, Duration::from_secs(15))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    (delivery.partition, delivery.offset)
}

fn partitions(consumer: &BaseConsumer, topic: &str) -> Vec<i32> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect()
}

/// Every record of `topic` from the start to its current end. A broker
/// error is retried for up to 30 s: a topic auto-created by the first
/// read answers "not leader for partition" until its leader is elected,
/// and a restarted broker moves leaders.
pub fn read_all(brokers: &str, topic: &str) -> Vec<OwnedMessage> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match try_read_all(brokers, topic) {
            Ok(messages) => return messages,
            Err(error) if Instant::now() < deadline => {
                eprintln!("reading {topic} again after: {error}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(error) => panic!("reading {topic}: {error}"),
        }
    }
}

/// [`read_all`], with a broker error (a leader moving after a restart)
/// returned instead of failing the test.
pub fn try_read_all(
    brokers: &str,
    topic: &str,
) -> Result<Vec<OwnedMessage>, rdkafka::error::KafkaError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", super::unique("reader"))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let ids: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    for partition in ids {
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        if high > low {
            assignment.add_partition_offset(topic, partition, Offset::Offset(low))?;
            ends.insert(partition, high);
        }
    }
    let mut messages = Vec::new();
    if ends.is_empty() {
        return Ok(messages);
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ends.is_empty() {
        assert!(Instant::now() < deadline, "timed out reading {topic}");
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message?;
            // A partition read to its end keeps being fetched: records
            // appended since the watermarks were read are not part of this
            // read (a relay may still be writing).
            let Some(&end) = ends.get(&message.partition()) else {
                continue;
            };
            if message.offset() >= end {
                continue;
            }
            if message.offset() + 1 >= end {
                ends.remove(&message.partition());
            }
            messages.push(message.detach());
        }
    }
    Ok(messages)
}

/// [`read_all`] on a blocking thread, for async tests.
pub async fn read_all_async(brokers: &str, topic: &str) -> Vec<OwnedMessage> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || read_all(&brokers, &topic))
        .await
        .unwrap()
}

/// [`lag`] on a blocking thread, for async tests; `None` when a broker
/// request failed.
pub async fn lag_async(brokers: &str, group: &str, topic: &str) -> Option<i64> {
    let (brokers, group, topic) = (brokers.to_owned(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || lag(&brokers, &group, &topic))
        .await
        .ok()
}

/// Waits (30 s at most) until the app's consumer group has consumed both
/// command topics to their end.
pub async fn wait_for_zero_lag(brokers: &str, settings: &Settings) {
    for topic in [&settings.kafka.topics.create, &settings.kafka.topics.update] {
        super::eventually(Duration::from_secs(30), || async {
            // A failed broker request (a leader moving) is "not yet".
            lag_async(brokers, &settings.kafka.group_id, topic).await == Some(0)
        })
        .await;
    }
}

/// Total records between the group's committed offsets and the log end.
pub fn lag(brokers: &str, group: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    let parts = partitions(&consumer, topic);
    for partition in &parts {
        list.add_partition(topic, *partition);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap();
    parts
        .iter()
        .map(|partition| {
            let (low, high) = consumer
                .fetch_watermarks(topic, *partition, Duration::from_secs(10))
                .unwrap();
            let position = match committed
                .find_partition(topic, *partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(offset)) => offset,
                _ => low,
            };
            high - position
        })
        .sum()
}

/// The value of header `key` on a record.
pub fn header<'a>(message: &'a OwnedMessage, key: &str) -> Option<&'a [u8]> {
    use rdkafka::message::Headers;
    message
        .headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
}

/// Each partition of `topic` as (partition, leader node id, replica count);
/// the leader is -1 while a partition has none.
pub fn partition_leaders(brokers: &str, topic: &str) -> Vec<(i32, i32, usize)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| (p.id(), p.leader(), p.replicas().len()))
        .collect()
}

/// A topic's configuration entry `name`: its value, and whether it is set on
/// the topic itself (rather than inherited from a broker default).
pub async fn topic_config(brokers: &str, topic: &str, name: &str) -> Option<(String, bool)> {
    use rdkafka::admin::{AdminClient, AdminOptions, ConfigSource, ResourceSpecifier};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let results = admin
        .describe_configs(
            &[ResourceSpecifier::Topic(topic)],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    let resource = results.into_iter().next()?.ok()?;
    let entry = resource.get(name)?;
    Some((
        entry.value.clone().unwrap_or_default(),
        entry.source == ConfigSource::DynamicTopic,
    ))
}
