//! The applier: turns decoded commands into stored changes, and decides what
//! happens on failure. It knows nothing of Kafka (the partition worker in
//! [`super::consumer`] does the records, offsets and dead-letter writes), so
//! it is unit-tested against the core's in-memory fakes.
//!
//! Errors are classified once, here:
//! - `Unavailable` (database down, timeout, not primary): retried with capped,
//!   jittered exponential backoff for as long as it lasts; the partition
//!   counts as blocked meanwhile (`kafka_consumer_blocked_partitions`). An
//!   outage of any length dead-letters nothing.
//! - `Internal` (unknown server errors, corrupt data): retried
//!   `retry_max_attempts` times in all, then dead-lettered.
//! - `Validation` / `Rejected` (the message's own fault): dead-lettered at
//!   once.
//! - `NotFound` on an update: not retried here; the worker parks it (see
//!   [`super::waiting`]) so it delays only its own product.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use backon::BackoffBuilder;
use products_core::{
    app::{AppError, ApplyOutcome, LogPosition, ProductCommand, ProductService},
    domain::Product,
};
use tokio_util::sync::CancellationToken;

/// Why a record went to the dead-letter queue; its `fqcn` is the
/// `kafka_dlt-exception-fqcn` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// Not JSON, wrong shape, empty.
    InvalidPayload,
    /// Decoded, but breaks a product rule.
    InvalidCommand,
    /// An update whose product did not appear within the wait budget.
    ProductNotFound,
    /// The database refused the write for what it is (e.g. too large).
    Rejected,
    /// An unclassified error that persisted through the retry budget.
    RetriesExhausted,
}

impl DeadLetterReason {
    pub fn fqcn(self) -> &'static str {
        match self {
            Self::InvalidPayload => "products_service::InvalidPayload",
            Self::InvalidCommand => "products_service::InvalidCommand",
            Self::ProductNotFound => "products_service::ProductNotFound",
            Self::Rejected => "products_service::Rejected",
            Self::RetriesExhausted => "products_service::RetriesExhausted",
        }
    }
}

/// A record's verdict when it goes to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterFailure {
    pub reason: DeadLetterReason,
    pub message: String,
    pub attempts: u32,
}

/// How applying one command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Applied,
    Duplicate,
    /// A create or update of a deleted product: dropped.
    Deleted,
    /// An update whose product is not there (yet): the worker parks it.
    WaitForCreate,
    DeadLetter(DeadLetterFailure),
}

impl Verdict {
    /// The `outcome` label of `kafka_consumed_messages_total`.
    pub fn outcome(&self) -> Option<&'static str> {
        match self {
            Self::Applied => Some("applied"),
            Self::Duplicate => Some("duplicate"),
            Self::Deleted => Some("deleted"),
            Self::DeadLetter(_) => Some("dead_lettered"),
            Self::WaitForCreate => None,
        }
    }
}

/// Revocation or shutdown stopped the work: the record stays unsettled and
/// is read again by whoever owns the partition next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// Backoff of the retries (`kafka.consumer.retry_*`).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// Attempts in all for an `Internal` error before it is dead-lettered.
    pub internal_attempts: u32,
    /// How long one attempt may take: a database that stops answering
    /// (frozen, partitioned) is an outage like one that refuses, and a
    /// worker's step in hand stays bounded (revocation waits for it).
    pub attempt_timeout: Duration,
}

impl RetryPolicy {
    /// The policy `kafka.consumer.retry_*` / `apply_timeout_ms` describe.
    pub fn from_settings(consumer: &crate::config::ConsumerSettings) -> Self {
        Self {
            initial: Duration::from_millis(consumer.retry_initial_backoff_ms),
            max: Duration::from_millis(consumer.retry_max_backoff_ms),
            internal_attempts: u32::try_from(consumer.retry_max_attempts).unwrap_or(u32::MAX),
            attempt_timeout: Duration::from_millis(consumer.apply_timeout_ms.max(1)),
        }
    }

    /// Endless, capped, jittered delays.
    fn delays(&self) -> impl Iterator<Item = Duration> {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .without_max_times()
            .with_jitter()
            .build()
    }
}

pub struct Applier {
    products: ProductService,
    policy: RetryPolicy,
    /// Caps applies running at once across partitions (`consumer.workers`).
    in_flight: Option<tokio::sync::Semaphore>,
    blocked: Arc<AtomicUsize>,
}

impl Applier {
    pub fn new(products: ProductService, policy: RetryPolicy, max_in_flight: usize) -> Self {
        Self {
            products,
            policy,
            in_flight: (max_in_flight > 0).then(|| tokio::sync::Semaphore::new(max_in_flight)),
            blocked: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// How many partitions are retrying a dependency failure right now.
    pub fn blocked(&self) -> Arc<AtomicUsize> {
        self.blocked.clone()
    }

    /// Applies one command; `position` orders updates of one product.
    pub async fn apply(
        &self,
        command: &ProductCommand,
        position: LogPosition,
        stop: &CancellationToken,
    ) -> Result<Verdict, Stopped> {
        let (result, attempts) = self
            .retrying(stop, || self.products.apply(command, position))
            .await?;
        Ok(match result {
            Ok(ApplyOutcome::Applied) => Verdict::Applied,
            Ok(ApplyOutcome::Duplicate) => Verdict::Duplicate,
            Ok(ApplyOutcome::Deleted) => Verdict::Deleted,
            Err(AppError::NotFound(_)) => Verdict::WaitForCreate,
            Err(error) => Verdict::DeadLetter(failure_of(&error, attempts)),
        })
    }

    /// Applies creates of one partition together (one `insert_many`), one
    /// verdict per product, in order. A create the batch could not settle
    /// is applied alone, so it gets its own verdict.
    pub async fn apply_creates(
        &self,
        products: &[Product],
        position: LogPosition,
        stop: &CancellationToken,
    ) -> Result<Vec<Verdict>, Stopped> {
        let (result, _) = self
            .retrying(stop, || self.products.apply_creates(products))
            .await?;
        let outcomes = match result {
            Ok(outcomes) => outcomes,
            Err(error) => {
                tracing::warn!(%error, "batch of creates failed; applying them one by one");
                products.iter().map(|_| Err(error_again())).collect()
            }
        };
        let mut verdicts = Vec::with_capacity(products.len());
        for (product, outcome) in products.iter().zip(outcomes) {
            verdicts.push(match outcome {
                Ok(ApplyOutcome::Applied) => Verdict::Applied,
                Ok(ApplyOutcome::Duplicate) => Verdict::Duplicate,
                Ok(ApplyOutcome::Deleted) => Verdict::Deleted,
                Err(_) => {
                    self.apply(&ProductCommand::Create(product.clone()), position, stop)
                        .await?
                }
            });
        }
        Ok(verdicts)
    }

    /// The one retry loop: runs `operation` until it succeeds or fails for a
    /// reason retrying cannot fix; how many attempts it took.
    async fn retrying<T, F, Fut>(
        &self,
        stop: &CancellationToken,
        mut operation: F,
    ) -> Result<(Result<T, AppError>, u32), Stopped>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, AppError>>,
    {
        let mut delays = self.policy.delays();
        let mut attempts = 0u32;
        let mut blocked: Option<BlockedGuard> = None;
        loop {
            if stop.is_cancelled() {
                return Err(Stopped);
            }
            attempts += 1;
            let result = {
                let _permit = match &self.in_flight {
                    Some(limit) => limit.acquire().await.ok(),
                    None => None,
                };
                tokio::time::timeout(self.policy.attempt_timeout, operation())
                    .await
                    .unwrap_or_else(|_| {
                        Err(AppError::Unavailable(format!(
                            "no answer within {:?}",
                            self.policy.attempt_timeout
                        )))
                    })
            };
            let error = match result {
                Err(error) if error.is_transient() => {
                    if blocked.is_none() {
                        blocked = Some(BlockedGuard::new(self.blocked.clone()));
                    }
                    error
                }
                Err(error @ AppError::Internal(_)) if attempts < self.policy.internal_attempts => {
                    error
                }
                result => return Ok((result, attempts)),
            };
            let delay = delays.next().unwrap_or(self.policy.max);
            metrics::counter!("kafka_message_retries_total").increment(1);
            tracing::info!(%error, attempts, ?delay, "apply failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => return Err(Stopped),
            }
        }
    }
}

/// Placeholder error for creates whose batch failed as a whole: each is
/// then applied alone, which classifies its own failure.
fn error_again() -> AppError {
    AppError::Internal("batch failed".to_owned())
}

fn failure_of(error: &AppError, attempts: u32) -> DeadLetterFailure {
    let reason = match error {
        AppError::Validation(_) => DeadLetterReason::InvalidCommand,
        AppError::NotFound(_) => DeadLetterReason::ProductNotFound,
        AppError::Rejected(_) => DeadLetterReason::Rejected,
        AppError::Unavailable(_) | AppError::Internal(_) => DeadLetterReason::RetriesExhausted,
    };
    DeadLetterFailure {
        reason,
        message: error.to_string(),
        attempts,
    }
}

/// Counts a partition as blocked on a dependency while it lives.
struct BlockedGuard(Arc<AtomicUsize>);

impl BlockedGuard {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        let now = counter.fetch_add(1, Ordering::SeqCst) + 1;
        metrics::gauge!("kafka_consumer_blocked_partitions").set(now as f64);
        Self(counter)
    }
}

impl Drop for BlockedGuard {
    fn drop(&mut self) {
        let now = self.0.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        metrics::gauge!("kafka_consumer_blocked_partitions").set(now as f64);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use products_core::app::{fakes::*, ProductCommand};

    use super::*;

    fn applier(f: &Fixture) -> Applier {
        Applier::new(
            f.service.clone(),
            RetryPolicy {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(5),
                internal_attempts: 3,
                attempt_timeout: Duration::from_secs(5),
            },
            0,
        )
    }

    fn at(offset: i64) -> LogPosition {
        LogPosition {
            partition: 0,
            offset,
        }
    }

    async fn commands(f: &Fixture) -> Vec<ProductCommand> {
        let id = f.service.submit_create(raw_product("Lamp")).await.unwrap();
        f.service
            .submit_update(id.as_str(), raw_product("Lamp renamed"))
            .await
            .unwrap();
        f.publisher.commands.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn an_update_before_its_create_waits_instead_of_retrying() {
        let f = Fixture::default();
        let applier = applier(&f);
        let commands = commands(&f).await;
        let stop = CancellationToken::new();
        assert_eq!(
            applier.apply(&commands[1], at(0), &stop).await,
            Ok(Verdict::WaitForCreate)
        );
        assert_eq!(
            applier.apply(&commands[0], at(0), &stop).await,
            Ok(Verdict::Applied)
        );
        assert_eq!(
            applier.apply(&commands[1], at(0), &stop).await,
            Ok(Verdict::Applied)
        );
    }

    #[tokio::test]
    async fn a_database_outage_is_retried_until_it_ends_never_dead_lettered() {
        let f = Fixture::default();
        let applier = Arc::new(applier(&f));
        let commands = commands(&f).await;
        f.repository.down.store(true, Ordering::SeqCst);
        let stop = CancellationToken::new();
        let task = {
            let (applier, command, stop) = (applier.clone(), commands[0].clone(), stop.clone());
            tokio::spawn(async move { applier.apply(&command, at(0), &stop).await })
        };
        // Far more attempts than the internal budget (3).
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!task.is_finished());
        assert_eq!(applier.blocked().load(Ordering::SeqCst), 1);
        f.repository.down.store(false, Ordering::SeqCst);
        assert_eq!(task.await.unwrap(), Ok(Verdict::Applied));
        assert_eq!(applier.blocked().load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn stopping_abandons_a_retry_without_a_verdict() {
        let f = Fixture::default();
        let applier = applier(&f);
        let commands = commands(&f).await;
        f.repository.down.store(true, Ordering::SeqCst);
        let stop = CancellationToken::new();
        let canceller = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            canceller.cancel();
        });
        assert_eq!(
            applier.apply(&commands[0], at(0), &stop).await,
            Err(Stopped)
        );
    }

    #[tokio::test]
    async fn a_rejected_write_is_dead_lettered_at_once() {
        let f = Fixture::default();
        let applier = applier(&f);
        let commands = commands(&f).await;
        f.repository.reject.store(true, Ordering::SeqCst);
        let verdict = applier
            .apply(&commands[0], at(0), &CancellationToken::new())
            .await
            .unwrap();
        let Verdict::DeadLetter(failure) = verdict else {
            panic!("expected a dead letter, got {verdict:?}")
        };
        assert_eq!(failure.reason, DeadLetterReason::Rejected);
        assert_eq!(failure.attempts, 1);
    }

    #[tokio::test]
    async fn a_batch_gives_one_verdict_per_create() {
        let f = Fixture::default();
        let applier = applier(&f);
        for name in ["Lamp", "Desk"] {
            f.service.submit_create(raw_product(name)).await.unwrap();
        }
        let products: Vec<Product> = f
            .publisher
            .commands
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| match c {
                ProductCommand::Create(p) => Some(p.clone()),
                ProductCommand::Update(_) => None,
            })
            .collect();
        let stop = CancellationToken::new();
        applier
            .apply(&ProductCommand::Create(products[1].clone()), at(0), &stop)
            .await
            .unwrap();
        let verdicts = applier.apply_creates(&products, at(0), &stop).await;
        assert_eq!(verdicts, Ok(vec![Verdict::Applied, Verdict::Duplicate]));
        f.service.delete(products[0].id.as_str()).await.unwrap();
        let verdicts = applier.apply_creates(&products, at(0), &stop).await;
        assert_eq!(verdicts, Ok(vec![Verdict::Duplicate, Verdict::Duplicate]));
        assert_eq!(
            f.repository.live().len(),
            1,
            "the deleted one stays deleted"
        );
    }
}
