//! One partition's worker: takes the records the receive loop
//! ([`super::consumer`]) hands it, in order, applies them through the
//! [`Applier`] (creates waiting together as one batch, updates of products
//! not there yet into the [`WaitingRoom`]), writes dead letters, and stores
//! the offset of its oldest unsettled record ([`OffsetTracker`]). Its `stop`
//! token (revocation, shutdown) ends it after the step in hand.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use products_core::{app::ProductCommand, domain::Product};
use rdkafka::{
    consumer::Consumer,
    message::{OwnedHeaders, OwnedMessage},
    Message,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{
    applier::{Applier, DeadLetterFailure, DeadLetterReason, RetryPolicy, Stopped, Verdict},
    consumer::PipelineConsumer,
    decode_message,
    offsets::OffsetTracker,
    record_position,
    waiting::WaitingRoom,
};
use crate::adapters::kafka::{
    dead_letter::{DeadLetterWriter, Failure},
    headers,
};

/// Bytes a record holds in our buffers.
pub(super) fn record_bytes(message: &OwnedMessage) -> usize {
    message.payload().map_or(0, <[u8]>::len) + message.key().map_or(0, <[u8]>::len)
}

/// Limits of one partition worker.
#[derive(Debug, Clone)]
pub(super) struct WorkerLimits {
    pub(super) buffer_messages: usize,
    pub(super) buffer_bytes: usize,
    pub(super) batch_messages: usize,
    pub(super) batch_bytes: usize,
    pub(super) waiting_limit: usize,
    pub(super) waiting_budget: Duration,
    pub(super) retry: RetryPolicy,
}

/// Everything a worker needs, shared.
pub(super) struct Pipeline {
    pub(super) consumer: Arc<PipelineConsumer>,
    pub(super) applier: Applier,
    pub(super) dead_letters: DeadLetterWriter,
    pub(super) create_topic: String,
    pub(super) limits: WorkerLimits,
    pub(super) shutdown: CancellationToken,
    /// Shutdown waits this long for the workers' step in hand, then as long
    /// again for the final commit and leaving the group.
    pub(super) stop_grace: Duration,
}

/// An update waiting for its product's create.
struct Pending {
    message: OwnedMessage,
    command: ProductCommand,
    span: tracing::Span,
    received: Instant,
}

/// One partition's worker task.
pub(super) struct Worker {
    pipeline: Arc<Pipeline>,
    topic: String,
    partition: i32,
    receiver: mpsc::Receiver<OwnedMessage>,
    queued_bytes: Arc<AtomicUsize>,
    stop: CancellationToken,
    offsets: OffsetTracker,
    waiting: WaitingRoom<Pending>,
}

impl Worker {
    pub(super) fn new(
        pipeline: Arc<Pipeline>,
        (topic, partition): (String, i32),
        receiver: mpsc::Receiver<OwnedMessage>,
        queued_bytes: Arc<AtomicUsize>,
        stop: CancellationToken,
    ) -> Self {
        let limits = &pipeline.limits;
        let waiting = WaitingRoom::new(
            limits.waiting_limit,
            limits.waiting_budget,
            limits.retry.initial,
            limits.retry.max,
        );
        Self {
            pipeline,
            topic,
            partition,
            receiver,
            queued_bytes,
            stop,
            offsets: OffsetTracker::default(),
            waiting,
        }
    }

    pub(super) async fn run(mut self) {
        loop {
            let next_due = self.waiting.next_due();
            let stepped = tokio::select! {
                biased;
                () = self.stop.cancelled() => break,
                () = sleep_until(next_due) => self.retry_waiting().await,
                message = self.receiver.recv(), if !self.waiting.is_full() => match message {
                    Some(message) => self.handle(message).await,
                    None => break,
                },
            };
            self.publish_waiting(self.waiting.len());
            if stepped.is_err() || !self.store_offsets() {
                break;
            }
        }
        if !self.waiting.is_empty() {
            tracing::info!(
                waiting = self.waiting.len(),
                "updates still waiting are left for the partition's next owner"
            );
        }
        self.publish_waiting(0);
    }

    /// Takes a record off the channel (and, for creates, those waiting
    /// behind it) and applies it.
    async fn handle(&mut self, message: OwnedMessage) -> Result<(), Stopped> {
        self.taken(&message);
        if message.topic() != self.pipeline.create_topic {
            return self.handle_update(message).await;
        }
        // Creates already waiting behind this one are applied together.
        let (max_messages, max_bytes) = (
            self.pipeline.limits.batch_messages,
            self.pipeline.limits.batch_bytes,
        );
        let mut batch_bytes = record_bytes(&message);
        let mut batch = vec![message];
        while batch.len() < max_messages && batch_bytes < max_bytes {
            match self.receiver.try_recv() {
                Ok(message) => {
                    self.taken(&message);
                    batch_bytes += record_bytes(&message);
                    batch.push(message);
                }
                Err(_) => break,
            }
        }
        self.handle_creates(batch).await
    }

    fn taken(&mut self, message: &OwnedMessage) {
        self.queued_bytes
            .fetch_sub(record_bytes(message), Ordering::SeqCst);
        self.offsets.received(message.offset());
    }

    /// Applies one update, unless earlier updates of its product wait: then
    /// it waits behind them.
    async fn handle_update(&mut self, message: OwnedMessage) -> Result<(), Stopped> {
        let received = Instant::now();
        let span = consume_span(&message);
        let command = match span.in_scope(|| decode_message(&message, &self.pipeline.create_topic))
        {
            Ok(command) => command,
            Err(error) => return self.poison(&message, error, &span, received).await,
        };
        let key = command.product_id().clone();
        let pending = Pending {
            message,
            command,
            span,
            received,
        };
        if self.waiting.holds(&key) {
            self.waiting.push_back(key, pending, received, false);
            return Ok(());
        }
        let verdict = self.apply(&pending).await?;
        if verdict == Verdict::WaitForCreate {
            pending
                .span
                .in_scope(|| tracing::info!("product not there yet; the update waits"));
            self.waiting.push_back(key, pending, Instant::now(), true);
            return Ok(());
        }
        self.conclude(pending, verdict).await
    }

    async fn apply(&self, pending: &Pending) -> Result<Verdict, Stopped> {
        self.pipeline
            .applier
            .apply(
                &pending.command,
                record_position(&pending.message),
                &self.stop,
            )
            .instrument(pending.span.clone())
            .await
    }

    /// Tries the waiting updates that are due, product by product, in order.
    async fn retry_waiting(&mut self) -> Result<(), Stopped> {
        loop {
            let now = Instant::now();
            let Some(key) = self.waiting.due_key(now) else {
                return Ok(());
            };
            let Some(waiting) = self.waiting.pop_front(&key) else {
                return Ok(());
            };
            if waiting.tries > 0 {
                metrics::counter!("kafka_message_retries_total").increment(1);
            }
            let verdict = self.apply(&waiting.item).await?;
            match verdict {
                Verdict::WaitForCreate if Instant::now() < waiting.deadline => {
                    self.waiting.retry_later(key, waiting, Instant::now());
                }
                Verdict::WaitForCreate => {
                    let failure = DeadLetterFailure {
                        reason: DeadLetterReason::ProductNotFound,
                        message: format!(
                            "product {key} not found within {:?}",
                            self.pipeline.limits.waiting_budget
                        ),
                        attempts: waiting.tries + 1,
                    };
                    self.conclude(waiting.item, Verdict::DeadLetter(failure))
                        .await?;
                }
                verdict => self.conclude(waiting.item, verdict).await?,
            }
        }
    }

    /// Settles a record with its verdict (writing its dead letter first).
    async fn conclude(&mut self, pending: Pending, verdict: Verdict) -> Result<(), Stopped> {
        match verdict {
            Verdict::DeadLetter(failure) => {
                self.dead_letter(&pending.message, failure, &pending.span, pending.received)
                    .await
            }
            verdict => {
                self.settle(&pending.message, &verdict, pending.received);
                Ok(())
            }
        }
    }

    /// Applies a batch of creates with one `insert_many`. Each message keeps
    /// its own `kafka.consume` span (continuing its producer's trace),
    /// linked from the batch span.
    async fn handle_creates(&mut self, messages: Vec<OwnedMessage>) -> Result<(), Stopped> {
        let received = Instant::now();
        let batch_span = tracing::info_span!(
            "kafka.consume_batch",
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.destination.name = %self.pipeline.create_topic,
            messaging.batch.message_count = messages.len(),
        );
        let mut products: Vec<Product> = Vec::with_capacity(messages.len());
        let mut sources: Vec<(OwnedMessage, tracing::Span)> = Vec::with_capacity(messages.len());
        for message in messages {
            let span = consume_span(&message);
            match span.in_scope(|| decode_message(&message, &self.pipeline.create_topic)) {
                Ok(ProductCommand::Create(product)) => {
                    batch_span.follows_from(&span);
                    products.push(product);
                    sources.push((message, span));
                }
                // An update cannot come from the create topic; kept total.
                Ok(ProductCommand::Update(_)) => {
                    let error = "an update on the create topic".to_owned();
                    self.poison(&message, error, &span, received).await?;
                }
                Err(error) => self.poison(&message, error, &span, received).await?,
            }
        }
        let Some((first, first_span)) = sources.first() else {
            return Ok(());
        };
        if products.len() == 1 {
            // A lone create is applied inside its own span, so its trace goes
            // on from the producer's into the database write.
            let command = ProductCommand::Create(products.remove(0));
            let verdict = self
                .pipeline
                .applier
                .apply(&command, record_position(first), &self.stop)
                .instrument(first_span.clone())
                .await?;
            let Some((message, span)) = sources.pop() else {
                return Ok(());
            };
            let pending = Pending {
                message,
                command,
                span,
                received,
            };
            return self.conclude(pending, verdict).await;
        }
        let verdicts = self
            .pipeline
            .applier
            .apply_creates(&products, record_position(first), &self.stop)
            .instrument(batch_span)
            .await?;
        for (((message, span), verdict), product) in sources.into_iter().zip(verdicts).zip(products)
        {
            let pending = Pending {
                message,
                command: ProductCommand::Create(product),
                span,
                received,
            };
            self.conclude(pending, verdict).await?;
        }
        Ok(())
    }

    /// A record that does not decode: straight to the dead-letter queue.
    async fn poison(
        &mut self,
        message: &OwnedMessage,
        error: String,
        span: &tracing::Span,
        received: Instant,
    ) -> Result<(), Stopped> {
        span.in_scope(|| tracing::warn!(%error, "poison message"));
        let failure = DeadLetterFailure {
            reason: DeadLetterReason::InvalidPayload,
            message: error,
            attempts: 1,
        };
        self.dead_letter(message, failure, span, received).await
    }

    /// Writes the dead letter, retrying until the broker acknowledges it,
    /// then settles the record. Only stop interrupts it (the record then
    /// stays unsettled and is read again).
    async fn dead_letter(
        &mut self,
        message: &OwnedMessage,
        failure: DeadLetterFailure,
        span: &tracing::Span,
        received: Instant,
    ) -> Result<(), Stopped> {
        // A revoked worker takes no new step, dead letters included.
        if self.stop.is_cancelled() {
            return Err(Stopped);
        }
        let write = Failure {
            kind: failure.reason.fqcn(),
            message: failure.message.clone(),
            attempts: failure.attempts,
        };
        let mut delay = self.pipeline.limits.retry.initial;
        loop {
            let sent = self
                .pipeline
                .dead_letters
                .send(message, &write)
                .instrument(span.clone())
                .await;
            match sent {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, ?delay, "dead-letter write failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.stop.cancelled() => return Err(Stopped),
                    }
                    delay = (delay * 2).min(self.pipeline.limits.retry.max);
                }
            }
        }
        self.settle(message, &Verdict::DeadLetter(failure), received);
        Ok(())
    }

    fn settle(&mut self, message: &OwnedMessage, verdict: &Verdict, received: Instant) {
        self.offsets.settled(message.offset());
        if let Some(outcome) = verdict.outcome() {
            metrics::counter!("kafka_consumed_messages_total", "topic" => message.topic().to_owned(), "outcome" => outcome)
                .increment(1);
            metrics::histogram!("kafka_message_processing_duration_seconds", "topic" => message.topic().to_owned())
                .record(received.elapsed().as_secs_f64());
        }
    }

    /// Stores the position of the oldest unsettled record if it moved;
    /// false if the partition is no longer ours.
    fn store_offsets(&mut self) -> bool {
        let Some(next) = self.offsets.advance() else {
            return true;
        };
        // `store_offset` stores offset + 1: the next record to read.
        match self
            .pipeline
            .consumer
            .store_offset(&self.topic, self.partition, next - 1)
        {
            Ok(()) => true,
            Err(err) => {
                // Its next owner re-reads what we had not stored; applying
                // again is a no-op.
                tracing::info!(error = %err, "offset not stored (partition lost)");
                false
            }
        }
    }

    fn publish_waiting(&self, waiting: usize) {
        metrics::gauge!(
            "kafka_consumer_waiting_updates",
            "topic" => self.topic.clone(),
            "partition" => self.partition.to_string(),
        )
        .set(waiting as f64);
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
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
