//! Ports: what the use cases need from the outside world, as traits.
//! Implementations live in the service crate's `adapters` (and, for unit
//! tests, in-memory fakes).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{Product, ProductId, SearchPage, SearchQuery};

use super::{ProductCommand, ProductUpdate, UpdateOutcome};

/// A failure of an adapter, classified by what the caller can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Timeout, connection refused, server selection failed: retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Anything else: not worth retrying.
    #[error("{0}")]
    Internal(String),
}

/// Result of inserting a product with a known id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    Inserted,
    /// A product with this id exists already (a replayed create).
    AlreadyExists,
}

/// Durable product storage.
#[async_trait]
pub trait ProductRepository: Send + Sync {
    async fn insert(&self, product: &Product) -> Result<InsertOutcome, PortError>;
    /// Inserts products with known, distinct ids, in one round trip where the
    /// store can: one outcome per product, in order. `Err` means nothing is
    /// known about the batch; inserting again is safe (a stored id answers
    /// `AlreadyExists`). The default inserts one by one.
    async fn insert_many(
        &self,
        products: &[Product],
    ) -> Result<Vec<Result<InsertOutcome, PortError>>, PortError> {
        let mut outcomes = Vec::with_capacity(products.len());
        for product in products {
            match self.insert(product).await {
                Err(PortError::Unavailable(reason)) => return Err(PortError::Unavailable(reason)),
                outcome => outcomes.push(outcome),
            }
        }
        Ok(outcomes)
    }
    /// Replaces the client-controlled fields and `updated_at`, unless the
    /// stored product was updated later than `update.updated_at`. Never an
    /// upsert.
    async fn update(&self, update: &ProductUpdate) -> Result<UpdateOutcome, PortError>;
    async fn find_by_id(&self, id: &ProductId) -> Result<Option<Product>, PortError>;
    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, PortError>;
    /// `false` when there was nothing to delete.
    async fn delete(&self, id: &ProductId) -> Result<bool, PortError>;
    /// Cheap reachability check for readiness probes.
    async fn ping(&self) -> Result<(), PortError>;
}

/// A best-effort read cache in front of the repository. Errors are reported
/// so they can be logged, but use cases never fail because of the cache.
#[async_trait]
pub trait ProductCache: Send + Sync {
    async fn get(&self, id: &ProductId) -> Result<Option<Product>, PortError>;
    async fn put(&self, product: &Product) -> Result<(), PortError>;
    async fn remove(&self, id: &ProductId) -> Result<(), PortError>;
}

/// The cache to use when caching is turned off.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCache;

#[async_trait]
impl ProductCache for NoCache {
    async fn get(&self, _id: &ProductId) -> Result<Option<Product>, PortError> {
        Ok(None)
    }
    async fn put(&self, _product: &Product) -> Result<(), PortError> {
        Ok(())
    }
    async fn remove(&self, _id: &ProductId) -> Result<(), PortError> {
        Ok(())
    }
}

/// Sends write commands to the command pipeline (Kafka), returning once the
/// pipeline has durably accepted them.
#[async_trait]
pub trait CommandPublisher: Send + Sync {
    async fn publish(&self, command: &ProductCommand) -> Result<(), PortError>;
}

/// Makes new, unique product ids.
pub trait IdGenerator: Send + Sync {
    fn next_id(&self) -> ProductId;
}

/// The current time; a port so tests can pin it.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// Wall-clock time, truncated to milliseconds (what BSON dates store), so a
/// product reads back exactly as it was written.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        let now = Utc::now();
        DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
    }
}
