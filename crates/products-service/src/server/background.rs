//! Background tasks that live as long as the application: index creation
//! (retried until the database answers), gRPC health reporting, metrics
//! upkeep. All stop when the shutdown token is cancelled.

use std::{future::Future, sync::Arc, time::Duration};

use backon::{ExponentialBuilder, Retryable};
use products_core::app::ProductService;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic_health::{server::HealthReporter, ServingStatus};

use crate::{
    adapters::{
        idempotency::MongoKeyStore,
        kafka::{
            dead_letter::DeadLetterWriter,
            topics::{ensure_events_topic, ensure_topics},
        },
        mongo::MongoProductRepository,
    },
    api::grpc::pb::products_service_server::ProductsServiceServer,
    api::grpc::GrpcProductsApi,
    config::{EventsSettings, KafkaSettings},
    events::RelayTask,
    pipeline::{applier::Applier, consumer::CommandConsumer},
};

pub struct Tasks {
    shutdown: CancellationToken,
    set: JoinSet<()>,
}

impl Tasks {
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            set: JoinSet::new(),
        }
    }

    /// Runs `task` until it ends or shutdown begins.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        let shutdown = self.shutdown.clone();
        self.set.spawn(async move {
            tokio::select! {
                () = task => {}
                () = shutdown.cancelled() => {}
            }
        });
    }

    /// Runs `task` to completion; it must watch the shutdown token itself
    /// (for work that has to wind down gracefully, like the consumer).
    pub fn spawn_graceful(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.set.spawn(task);
    }

    /// Cancels the tasks and waits for them, at most `grace`.
    pub async fn stop(mut self, grace: Duration) {
        self.shutdown.cancel();
        let joined = tokio::time::timeout(grace, async {
            while self.set.join_next().await.is_some() {}
        })
        .await;
        if joined.is_err() {
            tracing::warn!(?grace, "background tasks still running; stopping anyway");
            self.set.abort_all();
        }
    }
}

/// Creates the indexes, retrying with backoff while MongoDB is unreachable
/// (the service may start before its database).
pub async fn ensure_indexes(repository: Arc<MongoProductRepository>) {
    let backoff = ExponentialBuilder::default()
        .with_jitter()
        .with_max_delay(Duration::from_secs(30))
        .without_max_times();
    let result = (|| async { repository.ensure_indexes().await })
        .retry(backoff)
        .notify(
            |err, delay| tracing::warn!(error = %err, ?delay, "creating indexes failed; retrying"),
        )
        .await;
    if result.is_ok() {
        tracing::info!("indexes ready");
    }
}

/// Creates the Kafka topics (retrying while the broker is unreachable), then
/// runs the command consumer until shutdown.
pub async fn run_command_pipeline(
    settings: KafkaSettings,
    applier: Applier,
    dead_letters: DeadLetterWriter,
    shutdown: CancellationToken,
    shutdown_grace: Duration,
) {
    let backoff = ExponentialBuilder::default()
        .with_jitter()
        .with_max_delay(Duration::from_secs(10))
        .without_max_times();
    let topics = (|| ensure_topics(&settings)).retry(backoff).notify(
        |err, delay| tracing::warn!(error = %err, ?delay, "creating topics failed; retrying"),
    );
    tokio::select! {
        result = topics => if result.is_err() { return },
        () = shutdown.cancelled() => return,
    }
    if !settings.consumer.enabled {
        tracing::info!("command consumer disabled by configuration");
        return;
    }
    match CommandConsumer::new(&settings, applier, dead_letters, shutdown, shutdown_grace) {
        Ok(consumer) => consumer.run().await,
        Err(err) => tracing::error!(error = %err, "cannot start the command consumer"),
    }
}

/// Runs the event relay until `shutdown` (and for at most `grace` after it,
/// publishing what is still in flight); it publishes once the change-event
/// topic exists (created here, retried until Kafka answers).
pub async fn run_event_relay(
    kafka: KafkaSettings,
    events: EventsSettings,
    relay: RelayTask,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let backoff = ExponentialBuilder::default()
        .with_jitter()
        .with_max_delay(Duration::from_secs(10))
        .without_max_times();
    let topic = async {
        let created = (|| ensure_events_topic(&kafka, &events))
            .retry(backoff)
            .notify(|err, delay| {
                tracing::warn!(error = %err, ?delay, "creating the events topic failed; retrying");
            })
            .await;
        if created.is_err() {
            // Retried without limit: not reached. Never publish to a topic
            // the broker would auto-create without compaction.
            std::future::pending::<()>().await;
        }
    };
    relay.run(topic, shutdown, grace).await;
}

/// Deletes tombstones older than the retention, once an hour, the first time
/// [`FIRST_PURGE_AFTER`] after the start. Not at once: the purge filters on
/// `deletedAt`, which FerretDB reads and decodes document by document (10 s
/// of its CPU for 100,000 products, BENCHMARKS.md), and a start is when the
/// service should catch up on its backlog, not compete with a scan.
pub async fn purge_tombstones(repository: Arc<MongoProductRepository>, retention: Duration) {
    let period = Duration::from_secs(3600);
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + FIRST_PURGE_AFTER, period);
    loop {
        ticker.tick().await;
        let Ok(retention) = chrono::Duration::from_std(retention) else {
            return;
        };
        match repository
            .purge_tombstones(chrono::Utc::now() - retention)
            .await
        {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "tombstones past their retention purged"),
            Err(err) => tracing::warn!(error = %err, "purging tombstones failed"),
        }
    }
}

/// Long after a start's work (topics, group join, backlog), short enough
/// that instances restarted more often than hourly still purge.
const FIRST_PURGE_AFTER: Duration = Duration::from_secs(600);

/// Keeps `grpc.health.v1` in step with the database: NOT_SERVING while
/// MongoDB is unreachable.
pub async fn report_grpc_health(reporter: HealthReporter, products: ProductService) {
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    let mut last = None;
    loop {
        ticker.tick().await;
        let status = match products.database_ready().await {
            Ok(()) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        };
        if last != Some(status) {
            tracing::info!(?status, "gRPC health status");
            reporter.set_service_status("", status).await;
            match status {
                ServingStatus::Serving => {
                    reporter
                        .set_serving::<ProductsServiceServer<GrpcProductsApi>>()
                        .await
                }
                _ => {
                    reporter
                        .set_not_serving::<ProductsServiceServer<GrpcProductsApi>>()
                        .await
                }
            }
            last = Some(status);
        }
    }
}

/// Deletes expired idempotency keys from MongoDB every hour (FerretDB
/// enforces no TTL index; expired keys already count as absent, this only
/// reclaims the space).
pub async fn purge_idempotency_keys(keys: Arc<MongoKeyStore>) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        match keys.purge_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired idempotency keys deleted"),
            Err(err) => tracing::warn!(error = %err, "purging expired idempotency keys failed"),
        }
    }
}
