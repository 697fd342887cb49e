//! The command consumer (`products_group`): reads the create and update
//! topics and applies each command through the use cases.
//!
//! Design (see RUST-NOTES.md): one receive loop polls the consumer and never
//! blocks; each assigned partition gets a worker task fed by a bounded
//! channel, so partitions run concurrently and each keeps its order. When a
//! worker falls behind (a retry in progress, a slow database) its channel
//! fills, the loop parks the overflow and pauses that partition, and resumes
//! it once the worker catches up. Nothing is skipped.
//!
//! Offsets: auto-commit is on but only *stored* offsets are committed, and a
//! worker stores an offset only after its message was applied (or found
//! already applied) or written to the dead-letter queue. A crash anywhere
//! re-reads from the last stored offset; applying is idempotent.
//!
//! Rebalance: before partitions are revoked, their workers stop taking new
//! messages, finish the attempt in progress and store it; queued messages are
//! left for the next owner. Shutdown: the loop stops, workers drain their
//! queues (retries are abandoned, not dead-lettered), offsets are committed,
//! the consumer leaves the group.

use std::{
    collections::{HashMap, VecDeque},
    sync::{mpsc as std_mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use backon::BackoffBuilder;
use products_core::{
    app::{AppError, ApplyOutcome, ProductCommand, ProductService},
    domain::Product,
};
use rdkafka::{
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaError,
    message::{OwnedHeaders, OwnedMessage},
    ClientContext, Message, TopicPartitionList,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{
    dead_letter::{DeadLetterWriter, Failure},
    headers,
};
use crate::{
    codec::{decode_command, CommandKind, MessageOrigin},
    config::KafkaSettings,
};

type TopicPartition = (String, i32);
type Consumer_ = StreamConsumer<PipelineContext>;

/// The command a consumed record carries: the topic says which kind (the
/// create topic, else update), the payload is decoded with the record's
/// timestamp, partition and offset as its origin. The error is the reason
/// written to the dead-letter queue. Pure, so it is fuzzed (`fuzz/`).
pub fn decode_message(
    message: &impl Message,
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

/// Where a record came from (timestamp, partition, offset): what a legacy
/// payload without a product id derives its id from.
pub fn message_origin(message: &impl Message) -> MessageOrigin {
    MessageOrigin {
        timestamp: message
            .timestamp()
            .to_millis()
            .and_then(chrono::DateTime::from_timestamp_millis),
        partition: message.partition(),
        offset: message.offset(),
    }
}

/// How long a revocation waits for workers to finish their current message.
const REVOKE_GRACE: Duration = Duration::from_secs(10);

/// A partition's worker, as the receive loop and the rebalance hook see it.
struct PartitionWorker {
    sender: mpsc::Sender<OwnedMessage>,
    /// Messages received while the channel was full, in order.
    overflow: VecDeque<OwnedMessage>,
    paused: bool,
    /// Cancelled on revocation: stop after the attempt in progress.
    revoked: CancellationToken,
    /// Disconnects when the worker task ends.
    finished: std_mpsc::Receiver<()>,
}

#[derive(Default)]
struct Workers(Mutex<HashMap<TopicPartition, PartitionWorker>>);

impl Workers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TopicPartition, PartitionWorker>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Rebalance hooks: runs on the thread that polls the consumer.
pub struct PipelineContext {
    workers: Arc<Workers>,
}

impl ClientContext for PipelineContext {
    /// librdkafka statistics (every `statistics.interval.ms`): publishes the
    /// lag of each assigned partition, in messages behind the log end.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, stats) in statistics.topics {
            for (partition, p) in stats.partitions {
                // -1: internal "unassigned" partition; lag -1: unknown yet.
                if partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!(
                    "kafka_consumer_lag",
                    "topic" => topic.clone(),
                    "partition" => partition.to_string(),
                )
                .set(p.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for PipelineContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(partitions) = rebalance else {
            return;
        };
        let revoked: Vec<PartitionWorker> = {
            let mut workers = self.workers.lock();
            partitions
                .elements()
                .iter()
                .filter_map(|e| workers.remove(&(e.topic().to_owned(), e.partition())))
                .collect()
        };
        tracing::info!(
            partitions = revoked.len(),
            "partitions revoked; finishing in-flight work"
        );
        // Blocking here is intended: the partitions must not change hands
        // before their in-flight offsets are stored. Workers run on other
        // runtime threads.
        let deadline = Instant::now() + REVOKE_GRACE;
        for worker in revoked {
            worker.revoked.cancel();
            drop(worker.sender);
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(std_mpsc::RecvTimeoutError::Timeout) = worker.finished.recv_timeout(left) {
                tracing::warn!("worker still busy after revocation grace period");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            tracing::info!(partitions = partitions.count(), "partitions assigned");
            // A partition paused under a previous assignment must not stay paused.
            if let Err(err) = consumer.resume(partitions) {
                tracing::warn!(error = %err, "cannot resume assigned partitions");
            }
        }
    }
}

/// Everything a worker needs, shared.
struct Pipeline {
    consumer: Arc<Consumer_>,
    products: ProductService,
    dead_letters: DeadLetterWriter,
    create_topic: String,
    /// Most creates applied in one batch (`consumer.create_batch_max`).
    create_batch_max: usize,
    retry: backon::ExponentialBuilder,
    /// Caps applies running at once across partitions (`consumer.workers`).
    in_flight: Option<tokio::sync::Semaphore>,
    shutdown: CancellationToken,
}

pub struct CommandConsumer {
    pipeline: Arc<Pipeline>,
    workers: Arc<Workers>,
    partition_buffer: usize,
}

impl CommandConsumer {
    pub fn new(
        settings: &KafkaSettings,
        products: ProductService,
        dead_letters: DeadLetterWriter,
        shutdown: CancellationToken,
    ) -> Result<Self, KafkaError> {
        let workers = Arc::new(Workers::default());
        let consumer: Consumer_ = super::client_config(settings)
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            // Offsets are stored by the workers, after the work is done.
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "2000")
            .set("statistics.interval.ms", "5000")
            .create_with_context(PipelineContext {
                workers: workers.clone(),
            })?;
        consumer.subscribe(&[&settings.topics.create, &settings.topics.update])?;
        let c = &settings.consumer;
        let retry = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(c.retry_initial_backoff_ms))
            .with_max_delay(Duration::from_millis(c.retry_max_backoff_ms))
            .with_max_times(c.retry_max_attempts.saturating_sub(1))
            .with_jitter();
        Ok(Self {
            pipeline: Arc::new(Pipeline {
                consumer: Arc::new(consumer),
                products,
                dead_letters,
                create_topic: settings.topics.create.clone(),
                create_batch_max: c.create_batch_max.max(1),
                retry,
                in_flight: (c.workers > 0).then(|| tokio::sync::Semaphore::new(c.workers)),
                shutdown,
            }),
            workers,
            partition_buffer: c.partition_buffer.max(1),
        })
    }

    /// The receive loop; returns after a graceful shutdown.
    pub async fn run(self) {
        let shutdown = self.pipeline.shutdown.clone();
        let mut tasks = tokio::task::JoinSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                received = self.pipeline.consumer.recv() => match received {
                    Ok(message) => self.dispatch(headers::sanitized(message.detach()), &mut tasks),
                    Err(err) => {
                        tracing::warn!(error = %err, "kafka consumer error");
                        metrics::counter!("kafka_consumer_errors_total").increment(1);
                    }
                },
                _ = tick.tick() => self.drain_overflow(&mut tasks),
            }
            // Reap finished workers so the set does not grow.
            while tasks.try_join_next().is_some() {}
        }
        self.stop(tasks).await;
    }

    /// Hands a message to its partition's worker, starting one if needed;
    /// parks it and pauses the partition if the worker is full.
    fn dispatch(&self, message: OwnedMessage, tasks: &mut tokio::task::JoinSet<()>) {
        let key = (message.topic().to_owned(), message.partition());
        let mut workers = self.workers.lock();
        let worker = workers
            .entry(key.clone())
            .or_insert_with(|| self.spawn_worker(&key, tasks));
        self.replace_if_stopped(worker, &key, tasks);
        if !worker.overflow.is_empty() {
            worker.overflow.push_back(message);
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(message)) = worker.sender.try_send(message) {
            worker.overflow.push_back(message);
            if !worker.paused {
                worker.paused = self.set_paused(&key, true);
            }
        }
    }

    /// Moves parked messages into workers that have room again; resumes
    /// partitions whose backlog is gone.
    fn drain_overflow(&self, tasks: &mut tokio::task::JoinSet<()>) {
        let mut workers = self.workers.lock();
        for (key, worker) in workers.iter_mut() {
            self.replace_if_stopped(worker, key, tasks);
            while let Some(message) = worker.overflow.pop_front() {
                match worker.sender.try_send(message) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(message))
                    | Err(mpsc::error::TrySendError::Closed(message)) => {
                        worker.overflow.push_front(message);
                        break;
                    }
                }
            }
            if worker.paused && worker.overflow.is_empty() {
                worker.paused = !self.set_paused(key, false);
            }
        }
    }

    /// A worker stops early when it cannot store an offset: the partition
    /// was lost without a revocation reaching us. Its queued messages are
    /// dropped unstored (whoever owns the partition re-reads them from the
    /// committed offset), and should the partition come back to us, a fresh
    /// worker serves it instead of a dead channel.
    fn replace_if_stopped(
        &self,
        worker: &mut PartitionWorker,
        key: &TopicPartition,
        tasks: &mut tokio::task::JoinSet<()>,
    ) {
        if !worker.sender.is_closed() {
            return;
        }
        tracing::info!(
            topic = key.0,
            partition = key.1,
            dropped = worker.overflow.len(),
            "partition worker had stopped; starting a new one"
        );
        if worker.paused {
            self.set_paused(key, false);
        }
        *worker = self.spawn_worker(key, tasks);
    }

    /// Pauses or resumes one partition; true if it worked.
    fn set_paused(&self, (topic, partition): &TopicPartition, pause: bool) -> bool {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, *partition);
        let result = if pause {
            self.pipeline.consumer.pause(&tpl)
        } else {
            self.pipeline.consumer.resume(&tpl)
        };
        match result {
            Ok(()) => {
                tracing::debug!(topic, partition, pause, "partition flow control");
                true
            }
            Err(err) => {
                tracing::warn!(topic, partition, error = %err, "pause/resume failed");
                false
            }
        }
    }

    fn spawn_worker(
        &self,
        (topic, partition): &TopicPartition,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> PartitionWorker {
        let (sender, receiver) = mpsc::channel(self.partition_buffer);
        let (finished_tx, finished) = std_mpsc::sync_channel(0);
        let revoked = CancellationToken::new();
        let pipeline = self.pipeline.clone();
        let abandon = revoked.clone();
        let span = tracing::info_span!("partition_worker", topic, partition);
        tasks.spawn(
            async move {
                pipeline.work(receiver, abandon).await;
                drop(finished_tx);
            }
            .instrument(span),
        );
        PartitionWorker {
            sender,
            overflow: VecDeque::new(),
            paused: false,
            revoked,
            finished,
        }
    }

    /// Graceful stop: workers finish what they were given, then the stored
    /// offsets are committed and the consumer leaves the group.
    async fn stop(self, mut tasks: tokio::task::JoinSet<()>) {
        let parked: usize = {
            let mut workers = self.workers.lock();
            let parked = workers.values().map(|w| w.overflow.len()).sum();
            workers.clear(); // closes every channel
            parked
        };
        tracing::info!(parked, "consumer stopping; draining partition workers");
        while tasks.join_next().await.is_some() {}
        let consumer = self.pipeline.consumer.clone();
        drop(self);
        let closed = tokio::task::spawn_blocking(move || {
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(())
                | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
                Err(err) => tracing::warn!(error = %err, "final offset commit failed"),
            }
            consumer.unsubscribe();
            // Dropping closes the consumer (blocking: it leaves the group).
            drop(consumer);
        })
        .await;
        if let Err(err) = closed {
            tracing::warn!(error = %err, "closing the consumer failed");
        }
        tracing::info!("consumer stopped");
    }
}

/// How handling one message ended.
enum Handled {
    /// Applied, already applied, or dead-lettered: its offset may be stored.
    Done,
    /// Given up because of revocation or shutdown: leave it for redelivery.
    Abandoned,
}

impl Pipeline {
    async fn work(&self, mut receiver: mpsc::Receiver<OwnedMessage>, revoked: CancellationToken) {
        loop {
            let message = tokio::select! {
                biased;
                () = revoked.cancelled() => break,
                message = receiver.recv() => match message {
                    Some(message) => message,
                    None => break,
                },
            };
            // Creates already waiting behind this one are applied together;
            // updates stay one by one (each is ordered after the previous).
            let mut batch = vec![message];
            if batch[0].topic() == self.create_topic {
                while batch.len() < self.create_batch_max {
                    match receiver.try_recv() {
                        Ok(message) => batch.push(message),
                        Err(_) => break,
                    }
                }
            }
            let handled = match batch.as_slice() {
                [message] => self.handle(message, &revoked).await,
                messages => self.handle_creates(messages, &revoked).await,
            };
            let Some(last) = batch.last() else { continue };
            match handled {
                Handled::Done => {
                    // Storing the last offset covers the whole batch.
                    if let Err(err) =
                        self.consumer
                            .store_offset(last.topic(), last.partition(), last.offset())
                    {
                        // The partition is no longer ours: its next owner
                        // re-reads these messages, and applying them again is a no-op.
                        tracing::info!(error = %err, "offset not stored (partition lost)");
                        break;
                    }
                }
                Handled::Abandoned => break,
            }
        }
    }

    /// Applies a batch of creates from one partition with one `insert_many`.
    /// Each message keeps its own `kafka.consume` span (continuing its
    /// producer's trace), linked from the batch span. A message that is not
    /// a valid create, or whose create the batch could not settle, goes
    /// through the one-message path (retries, dead letter) instead.
    async fn handle_creates(
        &self,
        messages: &[OwnedMessage],
        revoked: &CancellationToken,
    ) -> Handled {
        let started = Instant::now();
        let batch_span = tracing::info_span!(
            "kafka.consume_batch",
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.destination.name = %self.create_topic,
            messaging.batch.message_count = messages.len(),
        );
        let mut products: Vec<Product> = Vec::with_capacity(messages.len());
        let mut sources: Vec<(&OwnedMessage, tracing::Span)> = Vec::with_capacity(messages.len());
        for message in messages {
            let span = consume_span(message);
            match span.in_scope(|| decode_message(message, &self.create_topic)) {
                Ok(ProductCommand::Create(product)) => {
                    batch_span.follows_from(&span);
                    products.push(product);
                    sources.push((message, span));
                }
                // Poison (or not a create after all): the one-message path
                // dead-letters it with the reason.
                _ => {
                    drop(span);
                    if let Handled::Abandoned = self.handle(message, revoked).await {
                        return Handled::Abandoned;
                    }
                }
            }
        }
        if products.is_empty() {
            return Handled::Done;
        }

        let mut delays = self.retry.build();
        let mut attempts = 0u32;
        let outcomes = loop {
            attempts += 1;
            let applied = {
                let _permit = self.apply_permit().await;
                self.products
                    .apply_creates(&products)
                    .instrument(batch_span.clone())
                    .await
            };
            let error = match applied {
                Ok(outcomes) => break outcomes,
                Err(error) => error,
            };
            if !error.is_transient() {
                tracing::warn!(%error, "batch of creates failed; applying them one by one");
                for (message, _) in &sources {
                    if let Handled::Abandoned = self.handle(message, revoked).await {
                        return Handled::Abandoned;
                    }
                }
                return Handled::Done;
            }
            let Some(delay) = delays.next() else {
                for (message, span) in &sources {
                    let failure = Failure {
                        kind: "products_service::RetriesExhausted",
                        message: error.to_string(),
                        attempts,
                    };
                    let (handled, outcome) = self
                        .dead_letter(message, failure, revoked)
                        .instrument(span.clone())
                        .await;
                    if let Handled::Abandoned = handled {
                        return Handled::Abandoned;
                    }
                    observe_outcome(message.topic(), outcome, started);
                }
                return Handled::Done;
            };
            metrics::counter!("kafka_message_retries_total", "topic" => self.create_topic.clone())
                .increment(sources.len() as u64);
            tracing::info!(%error, attempts, ?delay, batch = sources.len(), "batch apply failed; retrying");
            if !self.pause_for(delay, revoked).await {
                return Handled::Abandoned;
            }
        };

        for ((message, span), outcome) in sources.iter().zip(outcomes) {
            match outcome {
                Ok(ApplyOutcome::Applied) => {
                    observe_outcome(message.topic(), Some("applied"), started)
                }
                Ok(ApplyOutcome::Duplicate) => {
                    observe_outcome(message.topic(), Some("duplicate"), started)
                }
                Err(error) => {
                    span.in_scope(
                        || tracing::warn!(%error, "create failed in its batch; applying it alone"),
                    );
                    if let Handled::Abandoned = self.handle(message, revoked).await {
                        return Handled::Abandoned;
                    }
                }
            }
        }
        Handled::Done
    }

    /// Decodes and applies one message, retrying transient failures with
    /// backoff; invalid or exhausted messages go to the dead-letter queue.
    async fn handle(&self, message: &OwnedMessage, revoked: &CancellationToken) -> Handled {
        let started = Instant::now();
        let (handled, outcome) = self
            .handle_traced(message, revoked)
            .instrument(consume_span(message))
            .await;
        observe_outcome(message.topic(), outcome, started);
        handled
    }

    async fn handle_traced(
        &self,
        message: &OwnedMessage,
        revoked: &CancellationToken,
    ) -> (Handled, Option<&'static str>) {
        let command = match decode_message(message, &self.create_topic) {
            Ok(command) => command,
            Err(error) => {
                tracing::warn!(%error, "poison message");
                let failure = Failure {
                    kind: "products_service::InvalidPayload",
                    message: error,
                    attempts: 1,
                };
                return self.dead_letter(message, failure, revoked).await;
            }
        };

        let mut delays = self.retry.build();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let applied = {
                let _permit = self.apply_permit().await;
                self.products.apply(&command).await
            };
            let error = match applied {
                Ok(ApplyOutcome::Applied) => return (Handled::Done, Some("applied")),
                Ok(ApplyOutcome::Duplicate) => return (Handled::Done, Some("duplicate")),
                Err(error) => error,
            };
            let retryable = error.is_transient() || matches!(error, AppError::NotFound(_));
            let delay = if retryable { delays.next() } else { None };
            let Some(delay) = delay else {
                let kind = match &error {
                    AppError::Validation(_) => "products_service::InvalidCommand",
                    AppError::NotFound(_) => "products_service::ProductNotFound",
                    AppError::Unavailable(_) => "products_service::RetriesExhausted",
                    AppError::Internal(_) => "products_service::InternalError",
                };
                let failure = Failure {
                    kind,
                    message: error.to_string(),
                    attempts,
                };
                return self.dead_letter(message, failure, revoked).await;
            };
            metrics::counter!("kafka_message_retries_total", "topic" => message.topic().to_owned())
                .increment(1);
            tracing::info!(%error, attempts, ?delay, "apply failed; retrying");
            if !self.pause_for(delay, revoked).await {
                return (Handled::Abandoned, None);
            }
        }
    }

    /// Writes the dead letter, retrying until the broker acknowledges it; the
    /// offset is stored only after that.
    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        failure: Failure,
        revoked: &CancellationToken,
    ) -> (Handled, Option<&'static str>) {
        let mut delays = self.retry.without_max_times().build();
        loop {
            match self.dead_letters.send(message, &failure).await {
                Ok(()) => return (Handled::Done, Some("dead_lettered")),
                Err(error) => {
                    tracing::warn!(%error, "dead-letter write failed; retrying");
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    if !self.pause_for(delay, revoked).await {
                        return (Handled::Abandoned, None);
                    }
                }
            }
        }
    }

    /// Waits for a turn to apply when `consumer.workers` caps applies across
    /// partitions. Held only around the database call: never while decoding,
    /// backing off or dead-lettering, so a retrying partition (an update
    /// waiting for its create) cannot hold up the others.
    async fn apply_permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        match &self.in_flight {
            Some(limit) => limit.acquire().await.ok(),
            None => None,
        }
    }

    /// Sleeps unless revocation or shutdown comes first; false if it did.
    async fn pause_for(&self, delay: Duration, revoked: &CancellationToken) -> bool {
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = revoked.cancelled() => false,
            () = self.shutdown.cancelled() => false,
        }
    }
}

/// The span of one consumed message, continuing the trace its headers carry.
fn consume_span(message: &OwnedMessage) -> tracing::Span {
    let headers = message.headers().map(OwnedHeaders::as_borrowed);
    let span = tracing::info_span!(
        "kafka.consume",
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.destination.name = message.topic(),
        messaging.kafka.partition = message.partition(),
        messaging.kafka.offset = message.offset(),
        messaging.message.id = headers::text(headers, headers::MESSAGE_ID),
    );
    if let Err(err) = span.set_parent(headers::trace_context(headers)) {
        tracing::debug!(error = ?err, "no trace context continued");
    }
    span
}

/// Counts a settled message by outcome and records how long it took.
fn observe_outcome(topic: &str, outcome: Option<&'static str>, started: Instant) {
    if let Some(outcome) = outcome {
        metrics::counter!("kafka_consumed_messages_total", "topic" => topic.to_owned(), "outcome" => outcome)
            .increment(1);
        metrics::histogram!("kafka_message_processing_duration_seconds", "topic" => topic.to_owned())
            .record(started.elapsed().as_secs_f64());
    }
}
