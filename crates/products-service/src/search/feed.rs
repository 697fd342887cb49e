//! [`IndexFeed`]: keeps this replica's [`ProductIndex`] current from the
//! change events.
//!
//! It runs on its own thread (librdkafka's poll blocks): it creates the
//! events topic if needed, fills the index from the database when the topic
//! is empty (a catalog written before events were on), then reads every
//! partition from the beginning with no consumer group and applies each
//! event by its `ce_productrev` (older or repeated ones change nothing).
//! Between events it asks the broker which partitions the topic has and
//! where each ends, starts reading any partition added since (from its
//! beginning), and tells [`super::SyncStatus`] once it has read past those
//! ends.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use rdkafka::{
    consumer::{BaseConsumer, Consumer, ConsumerContext},
    error::KafkaError,
    message::{BorrowedMessage, Headers, Message},
    types::RDKafkaErrorCode,
    ClientContext, Offset, TopicPartitionList,
};
use tokio_util::sync::CancellationToken;

use super::ProductIndex;
use crate::{
    adapters::{
        kafka::{partition_offsets, topics::ensure_events_topic},
        mongo::MongoProductRepository,
    },
    codec::ProductJson,
    config::{EventsSettings, KafkaSettings},
    events::record::PRODUCT_REV,
};

/// How often the feed asks where the partitions end (when the last answer
/// has been passed): the sync age runs up to about this much when all is
/// well, far under `search.stale_after_ms`; every replica asks, so not more
/// often than needed.
const ASK_EVERY: Duration = Duration::from_secs(1);
/// A broker that does not answer this fast counts as unreachable.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(100);

pub struct IndexFeed {
    kafka: KafkaSettings,
    events: EventsSettings,
    index: Arc<ProductIndex>,
    repository: Arc<MongoProductRepository>,
}

/// The feed's librdkafka context. Reaching the end of a partition is how the
/// feed learns it has read everything, not an error: rdkafka's default
/// context logs each one at ERROR (thousands a minute on a quiet topic).
struct FeedContext;

impl ClientContext for FeedContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF)) {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for FeedContext {}

type FeedConsumer = BaseConsumer<FeedContext>;

/// The reader, the client that asks where partitions end, and each
/// partition with the offset it starts at.
type Started = (FeedConsumer, FeedConsumer, Vec<(i32, i64)>);

/// Where every partition ended when the feed asked, and when it asked.
struct Question {
    asked_at: Instant,
    ends: Vec<(i32, i64)>,
}

/// How far the feed has read each partition.
#[derive(Default)]
struct Progress {
    /// The offset after the last event read (or the partition's start).
    next: HashMap<i32, i64>,
    /// When librdkafka last said the partition was read to its end.
    at_end: HashMap<i32, Instant>,
}

impl Progress {
    /// Whether everything that was in the topic when `question` was asked
    /// has been read. The end-of-partition signal also counts: a compacted
    /// partition can end with a gap (a removed tombstone) that no event
    /// will ever fill.
    fn passed(&self, question: &Question) -> bool {
        question.ends.iter().all(|(partition, end)| {
            self.next.get(partition).is_some_and(|next| next >= end)
                || self
                    .at_end
                    .get(partition)
                    .is_some_and(|at| *at > question.asked_at)
        })
    }

    fn behind(&self, question: &Question) -> u64 {
        question
            .ends
            .iter()
            .map(|(partition, end)| {
                let next = self.next.get(partition).copied().unwrap_or_default();
                u64::try_from(end - next).unwrap_or_default()
            })
            .sum()
    }
}

impl IndexFeed {
    pub fn new(
        kafka: KafkaSettings,
        events: EventsSettings,
        index: Arc<ProductIndex>,
        repository: Arc<MongoProductRepository>,
    ) -> Self {
        Self {
            kafka,
            events,
            index,
            repository,
        }
    }

    /// Feeds the index until `stop` is cancelled. Blocking: call it on a
    /// thread of its own; `runtime` runs the database and admin calls.
    pub fn run(self, runtime: tokio::runtime::Handle, stop: CancellationToken) {
        let Some(consumer) = self.start(&runtime, &stop) else {
            return;
        };
        let (consumer, asker, partitions) = consumer;
        let mut progress = Progress::default();
        for (partition, start) in partitions {
            progress.next.insert(partition, start);
        }
        let mut question: Option<Question> = None;
        let mut last_asked = Instant::now() - ASK_EVERY;
        let mut last_metrics = Instant::now();
        let mut last_error_logged: Option<Instant> = None;
        while !stop.is_cancelled() {
            match consumer.poll(POLL) {
                None => {}
                Some(Ok(message)) => {
                    self.apply(&message);
                    progress
                        .next
                        .insert(message.partition(), message.offset() + 1);
                    progress.at_end.remove(&message.partition());
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    progress.at_end.insert(partition, Instant::now());
                }
                // librdkafka retries by itself: one line per 10 s is enough.
                Some(Err(err))
                    if last_error_logged
                        .is_none_or(|at| at.elapsed() > Duration::from_secs(10)) =>
                {
                    tracing::warn!(error = %err, "reading the events topic failed; retrying");
                    last_error_logged = Some(Instant::now());
                }
                Some(Err(_)) => {}
            }
            if let Some(asked) = &question {
                if progress.passed(asked) {
                    self.index.status().synced(asked.asked_at);
                    question = None;
                }
            }
            if question.is_none() && last_asked.elapsed() >= ASK_EVERY {
                last_asked = Instant::now();
                question = self.ask(&asker);
                if let Some(asked) = &question {
                    if let Err(err) = self.read_added_partitions(&consumer, asked, &mut progress) {
                        tracing::warn!(error = %err, "reading the events topic's new partitions failed; retrying");
                        question = None;
                    }
                }
                let behind = question.as_ref().map(|asked| progress.behind(asked));
                self.index.status().asked(behind);
            }
            if last_metrics.elapsed() >= Duration::from_secs(1) {
                last_metrics = Instant::now();
                self.index.status().record_metrics();
                metrics::gauge!("search_index_products").set(self.index.len() as f64);
            }
        }
    }

    /// Creates the topic if needed, fills the index from the database if
    /// the topic is empty, and assigns every partition from its start.
    /// `None` if stopped first, or if the service's runtime has shut down.
    fn start(&self, runtime: &tokio::runtime::Handle, stop: &CancellationToken) -> Option<Started> {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.try_start(runtime, stop) {
                Ok(started) => return started,
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), ?delay, "starting the search index feed failed; retrying");
                    self.index.status().asked(None);
                }
            }
            let retry_at = Instant::now() + delay;
            while Instant::now() < retry_at {
                if stop.is_cancelled() {
                    return None;
                }
                std::thread::sleep(POLL);
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// One attempt at [`Self::start`]; `Ok(None)`: stopped, or the runtime
    /// is gone.
    fn try_start(
        &self,
        runtime: &tokio::runtime::Handle,
        stop: &CancellationToken,
    ) -> anyhow::Result<Option<Started>> {
        let (kafka, events) = (self.kafka.clone(), self.events.clone());
        let Some(created) = on_runtime(runtime, async move {
            ensure_events_topic(&kafka, &events).await
        }) else {
            return Ok(None);
        };
        created?;
        let mut config = crate::adapters::kafka::client_config(&self.kafka);
        // Never committed nor joined: the feed assigns itself every
        // partition (librdkafka wants a group id all the same).
        config
            .set("group.id", format!("{}-search-index", self.kafka.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            // Bounds what librdkafka prefetches (the default is 64 MiB).
            .set("queued.max.messages.kbytes", "8192");
        let consumer: FeedConsumer = config
            .create_with_context(FeedContext)
            .context("cannot create the search index's Kafka consumer")?;
        // Questions go through connections of their own: a broker answers
        // one request per connection at a time, and the reader's fetch
        // waits there up to fetch.wait.max.ms for new events.
        let asker: FeedConsumer = config
            .create_with_context(FeedContext)
            .context("cannot create the search index's Kafka consumer")?;
        let topic = &self.events.topic;
        let partitions = partition_offsets(&consumer, topic, Duration::from_secs(10))?;
        // Filled again after a failed attempt: the same revisions change nothing.
        if partitions.iter().all(|(_, low, high)| low == high) {
            let started = Instant::now();
            let (index, repository) = (self.index.clone(), self.repository.clone());
            let stop = stop.clone();
            let scan = async move {
                let scan = repository.scan_live(|product, rev| {
                    index.upsert(product, rev);
                });
                tokio::select! {
                    loaded = scan => Some(loaded),
                    () = stop.cancelled() => None,
                }
            };
            let Some(Some(loaded)) = on_runtime(runtime, scan) else {
                return Ok(None);
            };
            tracing::info!(loaded = loaded?, took = ?started.elapsed(), "the events topic is empty: search index filled from the database");
        }
        let mut assignment = TopicPartitionList::new();
        for (partition, _, _) in &partitions {
            assignment.add_partition_offset(topic, *partition, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        Ok(Some((
            consumer,
            asker,
            partitions
                .into_iter()
                .map(|(partition, low, _)| (partition, low))
                .collect(),
        )))
    }

    /// Which partitions the topic has now and where each ends (a metadata
    /// request, then one offsets request per broker); `None` if the broker
    /// does not answer.
    fn ask(&self, asker: &FeedConsumer) -> Option<Question> {
        // It reads nothing, but its queue collects librdkafka's events
        // (errors while the broker is away): drained here, logged by context.
        while asker.poll(Duration::ZERO).is_some() {}
        let asked_at = Instant::now();
        let topic = &self.events.topic;
        let metadata = asker.fetch_metadata(Some(topic), ASK_TIMEOUT).ok()?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic.as_str() && t.error().is_none())?
            .partitions();
        if partitions.is_empty() {
            return None;
        }
        let mut latest = TopicPartitionList::new();
        for partition in partitions {
            latest
                .add_partition_offset(topic, partition.id(), Offset::End)
                .ok()?;
        }
        let answer = asker.offsets_for_times(latest, ASK_TIMEOUT).ok()?;
        let mut ends = Vec::with_capacity(partitions.len());
        for element in answer.elements() {
            match (element.error(), element.offset()) {
                (Ok(()), Offset::Offset(end)) => ends.push((element.partition(), end)),
                _ => return None,
            }
        }
        Some(Question { asked_at, ends })
    }

    /// Starts reading, from their beginning, the partitions `asked` names
    /// that the feed does not read yet: partitions added to the topic while
    /// it runs (events of products whose key now hashes to them go there).
    /// The others are assigned again where the feed has read them to.
    fn read_added_partitions(
        &self,
        consumer: &FeedConsumer,
        asked: &Question,
        progress: &mut Progress,
    ) -> Result<(), KafkaError> {
        let added: Vec<i32> = asked
            .ends
            .iter()
            .map(|(partition, _)| *partition)
            .filter(|partition| !progress.next.contains_key(partition))
            .collect();
        if added.is_empty() {
            return Ok(());
        }
        let topic = &self.events.topic;
        let mut assignment = TopicPartitionList::new();
        for (partition, next) in &progress.next {
            assignment.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        for partition in &added {
            assignment.add_partition_offset(topic, *partition, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        for partition in &added {
            progress.next.insert(*partition, 0);
        }
        tracing::info!(
            ?added,
            "the events topic has new partitions: the search index reads them"
        );
        Ok(())
    }

    /// Applies one event: a product's state (created, updated) or its
    /// tombstone (deleted). An event that cannot be read is counted and
    /// skipped: the next event of that product carries its whole state.
    fn apply(&self, message: &BorrowedMessage<'_>) {
        let outcome = match read_event(message) {
            Ok(Event {
                id,
                rev,
                time,
                state,
            }) => {
                if self.index.status().rebuilt() {
                    if let Some(time) = time {
                        let age = (Utc::now() - time).to_std().unwrap_or_default();
                        metrics::histogram!("search_index_freshness_seconds")
                            .record(age.as_secs_f64());
                    }
                }
                let changed = match state {
                    Some(product) => self.index.upsert(product, rev),
                    None => self.index.remove(&id, rev),
                };
                if changed {
                    "applied"
                } else {
                    "already_applied"
                }
            }
            Err(err) => {
                tracing::warn!(
                    error = %err,
                    partition = message.partition(),
                    offset = message.offset(),
                    "change event skipped by the search index"
                );
                "invalid"
            }
        };
        metrics::counter!("search_index_events_total", "outcome" => outcome).increment(1);
    }
}

/// Runs `future` on the service's runtime and waits for its output from
/// this thread; `None` if the runtime shut down first (the task is dropped
/// then, never polled without its runtime).
fn on_runtime<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    future: impl std::future::Future<Output = T> + Send + 'static,
) -> Option<T> {
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = sender.send(future.await);
    });
    receiver.recv().ok()
}

/// A change event as the index needs it.
struct Event {
    id: String,
    rev: u64,
    time: Option<DateTime<Utc>>,
    /// The product after the change; `None` for a delete.
    state: Option<products_core::domain::Product>,
}

fn read_event(message: &BorrowedMessage<'_>) -> Result<Event, String> {
    let id = message
        .key()
        .and_then(|key| std::str::from_utf8(key).ok())
        .ok_or("no product id key")?
        .to_owned();
    let header = |name: &str| {
        message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|header| header.key == name)
                .and_then(|header| header.value)
                .and_then(|value| std::str::from_utf8(value).ok())
        })
    };
    let rev = header(PRODUCT_REV)
        .and_then(|rev| rev.parse::<u64>().ok())
        .ok_or("no valid ce_productrev header")?;
    let time = header("ce_time")
        .and_then(|time| DateTime::parse_from_rfc3339(time).ok())
        .map(|time| time.with_timezone(&Utc));
    let state = match message.payload() {
        None => None,
        Some(payload) => {
            let product = serde_json::from_slice::<ProductJson>(payload)
                .map_err(|err| format!("data is not a product: {err}"))?
                .into_product()
                .map_err(|err| format!("data is not a valid product: {err}"))?;
            if product.id.as_str() != id {
                return Err(format!("data of product {} under key {id}", product.id));
            }
            Some(product)
        }
    };
    Ok(Event {
        id,
        rev,
        time,
        state,
    })
}
