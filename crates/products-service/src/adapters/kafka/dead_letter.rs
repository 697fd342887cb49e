//! The dead-letter queue: records that could not be applied, kept whole
//! (key, value, headers) with provenance headers named and encoded as Spring
//! for Apache Kafka does (`kafka_dlt-*`, numbers as big-endian binary), so
//! existing DLT tooling can read them. `replay` re-publishes them to the
//! topic they came from, keeping `kafka_dlt-original-topic/-partition/
//! -offset` so a replayed record keeps its place in the order of its
//! product's updates, and remembers how far it got (the committed offsets
//! of its own group, `{group}-dlq-replay`): running it again replays only
//! what was dead-lettered since.

use std::time::Duration;

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::{BorrowedHeaders, Header, Headers, OwnedHeaders, OwnedMessage},
    producer::{FutureProducer, FutureRecord},
    Message, Offset, TopicPartitionList,
};

use crate::config::KafkaSettings;

pub const ORIGINAL_TOPIC: &str = "kafka_dlt-original-topic";
pub const ORIGINAL_PARTITION: &str = "kafka_dlt-original-partition";
pub const ORIGINAL_OFFSET: &str = "kafka_dlt-original-offset";
pub const ORIGINAL_TIMESTAMP: &str = "kafka_dlt-original-timestamp";
pub const ORIGINAL_TIMESTAMP_TYPE: &str = "kafka_dlt-original-timestamp-type";
pub const ORIGINAL_CONSUMER_GROUP: &str = "kafka_dlt-original-consumer-group";
pub const EXCEPTION_FQCN: &str = "kafka_dlt-exception-fqcn";
pub const EXCEPTION_MESSAGE: &str = "kafka_dlt-exception-message";
pub const DELIVERY_ATTEMPT: &str = "kafka_deliveryAttempt";

fn is_provenance(key: &str) -> bool {
    key.starts_with("kafka_dlt-") || key == DELIVERY_ATTEMPT
}

/// The provenance a replayed record keeps: where it first stood.
fn is_position(key: &str) -> bool {
    matches!(key, ORIGINAL_TOPIC | ORIGINAL_PARTITION | ORIGINAL_OFFSET)
}

/// Where a record stands in the order of its topic: its own partition and
/// offset, or, for a dead letter replayed to the topic it came from, the
/// original ones it carries. A record that fails again is dead-lettered with
/// that original position, so it keeps it through any number of replays.
pub fn original_position(message: &impl Message<Headers = OwnedHeaders>) -> (i32, i64) {
    let here = (message.partition(), message.offset());
    let headers = message.headers().map(OwnedHeaders::as_borrowed);
    if super::headers::text(headers, ORIGINAL_TOPIC) != Some(message.topic()) {
        return here;
    }
    let partition = super::headers::bytes(headers, ORIGINAL_PARTITION)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(i32::from_be_bytes);
    let offset = super::headers::bytes(headers, ORIGINAL_OFFSET)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(i64::from_be_bytes);
    match (partition, offset) {
        (Some(partition), Some(offset)) if offset >= 0 => (partition, offset),
        _ => here,
    }
}

/// Why a message was dead-lettered.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Error kind, in the `-exception-fqcn` header (e.g. `products_service::InvalidPayload`).
    pub kind: &'static str,
    pub message: String,
    pub attempts: u32,
}

#[derive(Clone)]
pub struct DeadLetterWriter {
    producer: FutureProducer,
    topic: String,
    group: String,
    timeout: Duration,
}

impl DeadLetterWriter {
    pub fn new(producer: FutureProducer, settings: &KafkaSettings) -> Self {
        Self {
            producer,
            topic: settings.topics.dead_letter.clone(),
            group: settings.group_id.clone(),
            timeout: Duration::from_millis(settings.producer.delivery_timeout_ms),
        }
    }

    /// Writes the dead letter and waits for the broker's acknowledgement.
    #[tracing::instrument(name = "kafka.dead_letter", skip_all, fields(kind = failure.kind), err)]
    pub async fn send(&self, message: &OwnedMessage, failure: &Failure) -> Result<(), String> {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter().filter(|h| !is_provenance(h.key)) {
                headers = headers.insert(header);
            }
        }
        let timestamp = message.timestamp().to_millis().unwrap_or(-1);
        let (partition, offset) = original_position(message);
        fn text<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a [u8]> {
            Header {
                key,
                value: Some(value.as_bytes()),
            }
        }
        headers = headers
            .insert(text(ORIGINAL_TOPIC, message.topic()))
            .insert(Header {
                key: ORIGINAL_PARTITION,
                value: Some(&partition.to_be_bytes()),
            })
            .insert(Header {
                key: ORIGINAL_OFFSET,
                value: Some(&offset.to_be_bytes()),
            })
            .insert(Header {
                key: ORIGINAL_TIMESTAMP,
                value: Some(&timestamp.to_be_bytes()),
            })
            .insert(text(ORIGINAL_TIMESTAMP_TYPE, "CreateTime"))
            .insert(text(ORIGINAL_CONSUMER_GROUP, &self.group))
            .insert(text(EXCEPTION_FQCN, failure.kind))
            .insert(text(EXCEPTION_MESSAGE, &failure.message))
            .insert(Header {
                key: DELIVERY_ATTEMPT,
                value: Some(&(failure.attempts as i32).to_be_bytes()),
            });
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        self.producer
            .send(record, self.timeout)
            .await
            .map(drop)
            .map_err(|(err, _)| err.to_string())?;
        metrics::counter!("kafka_dead_letter_messages_total", "topic" => message.topic().to_owned(), "kind" => failure.kind)
            .increment(1);
        Ok(())
    }
}

/// What `replay-dlq` does.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// List what would be replayed; publish nothing.
    pub dry_run: bool,
    /// Only records that came from this topic.
    pub original_topic: Option<String>,
    /// Only records with this key (product id).
    pub key: Option<String>,
    /// Only records whose error kind or message contains this text.
    pub error_contains: Option<String>,
    /// Read the whole dead-letter topic, not only what came since the last
    /// (unfiltered) replay.
    pub from_beginning: bool,
}

impl ReplayOptions {
    /// Whether every dead letter read is replayed (no filter, not a dry
    /// run): only such a run moves the remembered position.
    fn replays_all(&self) -> bool {
        !self.dry_run
            && self.original_topic.is_none()
            && self.key.is_none()
            && self.error_contains.is_none()
    }
}

/// One dead letter as `replay-dlq` reports it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub dlq_partition: i32,
    pub dlq_offset: i64,
    pub original_topic: String,
    pub key: Option<String>,
    pub error_kind: String,
    pub error_message: String,
}

#[derive(Debug, Default)]
pub struct ReplayReport {
    pub scanned: usize,
    pub matched: Vec<DeadLetter>,
    pub replayed: usize,
}

fn header_text<'a>(headers: Option<&'a BorrowedHeaders>, key: &str) -> Option<&'a str> {
    super::headers::text(headers, key)
}

/// Reads the dead-letter topic from where the last full replay stopped (or
/// its start: `from_beginning`, or nothing remembered) to its current end and
/// re-publishes the records that match to their original topics, with their
/// original key, value and headers and their original position. A replay of
/// everything then remembers where it stopped, so running it again replays
/// each dead letter once. Even a record replayed twice takes effect once:
/// applying commands is idempotent.
pub async fn replay(
    settings: &KafkaSettings,
    options: &ReplayOptions,
) -> anyhow::Result<ReplayReport> {
    let producer = super::publisher::producer(settings)?;
    let timeout = Duration::from_millis(settings.producer.delivery_timeout_ms);
    // Reading uses a blocking consumer on a blocking thread; publishing is async.
    let (scanned, matches, positions) = {
        let (settings, options) = (settings.clone(), options.clone());
        tokio::task::spawn_blocking(move || read_dead_letters(&settings, &options)).await??
    };
    let mut report = ReplayReport {
        scanned,
        ..ReplayReport::default()
    };
    for (letter, message) in matches {
        if let Some(message) = message {
            let mut headers = OwnedHeaders::new();
            if let Some(original) = message.headers() {
                for header in original
                    .iter()
                    .filter(|h| !is_provenance(h.key) || is_position(h.key))
                {
                    headers = headers.insert(header);
                }
            }
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&letter.original_topic).headers(headers);
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            if let Some(payload) = message.payload() {
                record = record.payload(payload);
            }
            producer.send(record, timeout).await.map_err(|(err, _)| {
                anyhow::anyhow!(
                    "replaying {}:{}: {err}",
                    letter.dlq_partition,
                    letter.dlq_offset
                )
            })?;
            report.replayed += 1;
        }
        report.matched.push(letter);
    }
    if options.replays_all() && positions.count() > 0 {
        let commit_settings = settings.clone();
        tokio::task::spawn_blocking(move || remember(&commit_settings, &positions)).await??;
    }
    Ok(report)
}

fn replay_group(settings: &KafkaSettings) -> String {
    format!("{}-dlq-replay", settings.group_id)
}

/// Commits how far a full replay read, for the next run to start there.
fn remember(settings: &KafkaSettings, positions: &TopicPartitionList) -> anyhow::Result<()> {
    let consumer: BaseConsumer = super::client_config(settings)
        .set("group.id", replay_group(settings))
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.commit(positions, rdkafka::consumer::CommitMode::Sync)?;
    Ok(())
}

/// A matching dead letter, with the record itself unless this is a dry run.
type Match = (DeadLetter, Option<OwnedMessage>);

/// How many records were read, the matching ones, and the position after
/// the last one read in each partition.
fn read_dead_letters(
    settings: &KafkaSettings,
    options: &ReplayOptions,
) -> anyhow::Result<(usize, Vec<Match>, TopicPartitionList)> {
    let consumer: BaseConsumer = super::client_config(settings)
        .set("group.id", replay_group(settings))
        .set("enable.auto.commit", "false")
        .create()?;
    let topic = &settings.topics.dead_letter;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut wanted_partitions = TopicPartitionList::new();
    for &partition in &partitions {
        wanted_partitions.add_partition(topic, partition);
    }
    let remembered = if options.from_beginning {
        TopicPartitionList::new()
    } else {
        consumer.committed_offsets(wanted_partitions, Duration::from_secs(10))?
    };
    let mut assignment = TopicPartitionList::new();
    let mut positions = TopicPartitionList::new();
    let mut remaining = std::collections::HashMap::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        let start = match remembered
            .find_partition(topic, partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(next)) => next.max(low),
            _ => low,
        };
        if high > start {
            assignment.add_partition_offset(topic, partition, Offset::Offset(start))?;
            positions.add_partition_offset(topic, partition, Offset::Offset(high))?;
            remaining.insert(partition, high);
        }
    }
    if remaining.is_empty() {
        return Ok((0, Vec::new(), positions));
    }
    consumer.assign(&assignment)?;

    let mut matches = Vec::new();
    let mut scanned = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !remaining.is_empty() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "timed out reading {topic}"
        );
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        // Owned and sanitised before any header is read (see headers::sanitized).
        let message = super::headers::sanitized(message?.detach());
        scanned += 1;
        if message.offset() + 1 >= remaining.get(&message.partition()).copied().unwrap_or(0) {
            remaining.remove(&message.partition());
        }
        let headers = message.headers().map(OwnedHeaders::as_borrowed);
        let letter = DeadLetter {
            dlq_partition: message.partition(),
            dlq_offset: message.offset(),
            original_topic: header_text(headers, ORIGINAL_TOPIC)
                .unwrap_or_default()
                .to_owned(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            error_kind: header_text(headers, EXCEPTION_FQCN)
                .unwrap_or_default()
                .to_owned(),
            error_message: header_text(headers, EXCEPTION_MESSAGE)
                .unwrap_or_default()
                .to_owned(),
        };
        let wanted = !letter.original_topic.is_empty()
            && options
                .original_topic
                .as_ref()
                .is_none_or(|t| *t == letter.original_topic)
            && options
                .key
                .as_ref()
                .is_none_or(|k| letter.key.as_ref() == Some(k))
            && options.error_contains.as_ref().is_none_or(|text| {
                letter.error_kind.contains(text.as_str())
                    || letter.error_message.contains(text.as_str())
            });
        if wanted {
            matches.push((letter, (!options.dry_run).then_some(message)));
        }
    }
    Ok((scanned, matches, positions))
}
