//! The command consumer (`products_group`), flow control half: reads the
//! create and update topics, feeds each partition's worker, stores offsets,
//! follows rebalances and shutdown. What to do with a record is the
//! [`Applier`]'s business.
//!
//! - One receive loop polls the consumer and never blocks. Each assigned
//!   partition has a worker task behind a bounded channel (counted in
//!   messages and in bytes); when a worker falls behind, the loop parks the
//!   overflow and pauses that partition until it catches up. librdkafka's
//!   own prefetch is bounded in bytes too (`fetch_queue_kbytes`).
//! - A worker ([`super::worker`]) applies records in order. Creates waiting in its channel are
//!   applied together (one `insert_many`). An update whose product does not
//!   exist yet waits in a [`WaitingRoom`] with the later updates of that
//!   product, while the worker goes on with other products.
//! - Offsets: auto-commit is on but only *stored* offsets are committed, and
//!   a worker stores the position of its oldest unsettled record
//!   ([`OffsetTracker`]): a record settles once applied, found applied, or
//!   written to the dead-letter queue. A crash re-reads everything not
//!   settled; applying again is a no-op.
//! - Revocation and shutdown cancel the worker's `stop` token: it finishes
//!   the step in hand, stores what settled and leaves the rest (waiting
//!   updates included) to the partition's next owner.
//! - The receive loop runs on its own thread (`kafka-consumer`, with a
//!   one-thread runtime); workers run on the service's runtime. librdkafka
//!   calls the rebalance hook from inside the loop's poll, and the hook
//!   waits for revoked workers to finish their step: that wait holds only
//!   the loop's thread, never a thread serving HTTP or gRPC.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc as std_mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use rdkafka::{
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaError,
    message::OwnedMessage,
    ClientContext, Message, TopicPartitionList,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    applier::{Applier, RetryPolicy},
    worker::{record_bytes, Pipeline, Worker, WorkerLimits},
};
use crate::{
    adapters::kafka::{dead_letter::DeadLetterWriter, headers},
    config::KafkaSettings,
};

type TopicPartition = (String, i32);
pub(super) type PipelineConsumer = StreamConsumer<PipelineContext>;

/// How long a revocation waits for workers to finish their step in hand,
/// beyond the longest a step can take (`apply_timeout_ms`).
const REVOKE_MARGIN: Duration = Duration::from_secs(2);

/// A partition's worker, as the receive loop and the rebalance hook see it.
struct PartitionWorker {
    sender: mpsc::Sender<OwnedMessage>,
    /// Messages received while the channel was full, in order.
    overflow: VecDeque<OwnedMessage>,
    paused: bool,
    /// Bytes in the channel and the overflow.
    queued_bytes: Arc<AtomicUsize>,
    /// Cancelled on revocation (and, as a child of the shutdown token, on
    /// shutdown): stop after the step in hand.
    stop: CancellationToken,
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

/// Rebalance hooks: runs on the thread that polls the consumer (the
/// receive loop's own thread, see the module doc).
pub struct PipelineContext {
    workers: Arc<Workers>,
    /// When the revocation now in progress started: the next assignment
    /// ends it (`kafka_consumer_rebalance_duration_seconds`).
    revoked_at: Mutex<Option<Instant>>,
    /// How long a revocation waits for the revoked workers.
    revoke_grace: Duration,
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
        let started = Instant::now();
        metrics::counter!("kafka_consumer_rebalances_total", "event" => "revoke").increment(1);
        // Eager rebalancing revokes everything owned; cooperative only what moves.
        metrics::counter!("kafka_consumer_revoked_partitions_total")
            .increment(partitions.count() as u64);
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
        // Tell every worker first, so they wind down together.
        for worker in &revoked {
            worker.stop.cancel();
        }
        // Waiting here is intended: the partitions must not change hands
        // before their settled offsets are stored, nor be worked by two
        // workers at once. It holds the receive loop's own thread only;
        // workers run on the service's runtime and stop after the step in
        // hand (one database call, bounded by its timeout).
        let deadline = Instant::now() + self.revoke_grace;
        for worker in revoked {
            drop(worker.sender);
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(std_mpsc::RecvTimeoutError::Timeout) = worker.finished.recv_timeout(left) {
                tracing::warn!("worker still busy after revocation grace period");
            }
        }
        metrics::histogram!("kafka_consumer_revocation_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        *self.revoked_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(started);
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            tracing::info!(partitions = partitions.count(), "partitions assigned");
            metrics::counter!("kafka_consumer_rebalances_total", "event" => "assign").increment(1);
            // Eager rebalancing stops every partition from the revocation
            // to this assignment; cooperative, only the ones that move.
            let revoked_at = self
                .revoked_at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(revoked_at) = revoked_at {
                metrics::histogram!("kafka_consumer_rebalance_duration_seconds")
                    .record(revoked_at.elapsed().as_secs_f64());
            }
            // A partition paused under a previous assignment must not stay paused.
            if let Err(err) = consumer.resume(partitions) {
                tracing::warn!(error = %err, "cannot resume assigned partitions");
            }
        }
        if let Ok(assignment) = consumer.assignment() {
            metrics::gauge!("kafka_consumer_assigned_partitions").set(assignment.count() as f64);
        }
    }
}

pub struct CommandConsumer {
    pipeline: Arc<Pipeline>,
    workers: Arc<Workers>,
    /// The service's runtime, where the partition workers run.
    workers_runtime: tokio::runtime::Handle,
}

impl CommandConsumer {
    /// `shutdown_grace`: the whole time shutdown may take
    /// (`shutdown_timeout_secs`); the consumer's stop uses at most 3/4 of it.
    pub fn new(
        settings: &KafkaSettings,
        applier: Applier,
        dead_letters: DeadLetterWriter,
        shutdown: CancellationToken,
        shutdown_grace: Duration,
    ) -> Result<Self, KafkaError> {
        let workers = Arc::new(Workers::default());
        let c = &settings.consumer;
        let mut config = crate::adapters::kafka::client_config(settings);
        if let Some(instance) = c.group_instance_id.as_deref().filter(|id| !id.is_empty()) {
            config.set("group.instance.id", instance);
        }
        let consumer: PipelineConsumer = config
            .set("group.id", &settings.group_id)
            .set("partition.assignment.strategy", &c.assignment_strategy)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            // Offsets are stored by the workers, after the work is done.
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", c.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (c.session_timeout_ms / 5).clamp(100, 3000).to_string(),
            )
            .set("statistics.interval.ms", "5000")
            // librdkafka's prefetch queue, bounded in bytes.
            .set(
                "queued.max.messages.kbytes",
                c.fetch_queue_kbytes.to_string(),
            )
            .create_with_context(PipelineContext {
                workers: workers.clone(),
                revoked_at: Mutex::new(None),
                revoke_grace: RetryPolicy::from_settings(c).attempt_timeout + REVOKE_MARGIN,
            })?;
        consumer.subscribe(&[&settings.topics.create, &settings.topics.update])?;
        // Present from the start, so dashboards and alerts see 0, not nothing.
        metrics::gauge!("kafka_consumer_blocked_partitions").set(0.0);
        metrics::counter!("kafka_consumer_revoked_partitions_total").increment(0);
        let _registered = metrics::histogram!("kafka_consumer_rebalance_duration_seconds");
        Ok(Self {
            pipeline: Arc::new(Pipeline {
                consumer: Arc::new(consumer),
                applier,
                dead_letters,
                create_topic: settings.topics.create.clone(),
                limits: WorkerLimits {
                    buffer_messages: c.partition_buffer.max(1),
                    buffer_bytes: c.partition_buffer_bytes.max(1),
                    batch_messages: c.create_batch_max.max(1),
                    batch_bytes: c.create_batch_max_bytes.max(1),
                    waiting_limit: c.waiting_updates_max.max(1),
                    waiting_budget: Duration::from_millis(c.not_found_wait_ms),
                    retry: RetryPolicy::from_settings(c),
                },
                shutdown,
                stop_grace: shutdown_grace * 3 / 8,
            }),
            workers,
            workers_runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Runs the receive loop on its own thread until a graceful shutdown
    /// has finished.
    pub async fn run(self) {
        let (finished_tx, finished) = tokio::sync::oneshot::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("kafka-consumer".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        tracing::error!(error = %err, "cannot start the consumer's runtime");
                        return;
                    }
                };
                runtime.block_on(self.receive_loop());
                // A consumer close that overran its grace is left behind.
                runtime.shutdown_background();
                drop(finished_tx);
            });
        match spawned {
            Ok(_) => {
                let _ = finished.await;
            }
            Err(err) => tracing::error!(error = %err, "cannot start the consumer's thread"),
        }
    }

    async fn receive_loop(self) {
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
        let size = record_bytes(&message);
        let queued = worker.queued_bytes.fetch_add(size, Ordering::SeqCst);
        let full = queued > self.pipeline.limits.buffer_bytes;
        if !full && worker.overflow.is_empty() {
            match worker.sender.try_send(message) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(message))
                | Err(mpsc::error::TrySendError::Closed(message)) => {
                    worker.overflow.push_back(message)
                }
            }
        } else {
            worker.overflow.push_back(message);
        }
        if !worker.paused {
            worker.paused = self.set_paused(&key, true);
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
            let has_room =
                worker.queued_bytes.load(Ordering::SeqCst) <= self.pipeline.limits.buffer_bytes / 2;
            if worker.paused && worker.overflow.is_empty() && has_room {
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
        let (sender, receiver) = mpsc::channel(self.pipeline.limits.buffer_messages);
        let (finished_tx, finished) = std_mpsc::sync_channel(0);
        let stop = self.pipeline.shutdown.child_token();
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let worker = Worker::new(
            self.pipeline.clone(),
            (topic.clone(), *partition),
            receiver,
            queued_bytes.clone(),
            stop.clone(),
        );
        let span = tracing::info_span!("partition_worker", topic, partition);
        tasks.spawn_on(
            async move {
                worker.run().await;
                drop(finished_tx);
            }
            .instrument(span),
            &self.workers_runtime,
        );
        PartitionWorker {
            sender,
            overflow: VecDeque::new(),
            paused: false,
            queued_bytes,
            stop,
            finished,
        }
    }

    /// Graceful stop: every worker finishes its step in hand (the shutdown
    /// token has stopped them), the settled offsets are committed and the
    /// consumer leaves the group; queued records stay for the next owner.
    /// Bounded by `stop_grace` at each of the two steps, broker down or not.
    async fn stop(self, mut tasks: tokio::task::JoinSet<()>) {
        let parked: usize = {
            let mut workers = self.workers.lock();
            let parked = workers.values().map(|w| w.overflow.len()).sum();
            workers.clear(); // closes every channel
            parked
        };
        tracing::info!(
            parked,
            "consumer stopping; partition workers finish their step"
        );
        let grace = self.pipeline.stop_grace;
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!("partition workers still busy; leaving them");
            tasks.abort_all();
        }
        let consumer = self.pipeline.consumer.clone();
        drop(self);
        let closing = tokio::task::spawn_blocking(move || {
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(())
                | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
                Err(err) => tracing::warn!(error = %err, "final offset commit failed"),
            }
            consumer.unsubscribe();
            // Dropping closes the consumer (blocking: it leaves the group).
            drop(consumer);
        });
        match tokio::time::timeout(grace, closing).await {
            Ok(Ok(())) => tracing::info!("consumer stopped"),
            Ok(Err(err)) => tracing::warn!(error = %err, "closing the consumer failed"),
            Err(_) => tracing::warn!("the consumer did not close in time; leaving it"),
        }
    }
}
