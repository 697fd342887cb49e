//! Ports: what the use cases need from the outside world, as traits.
//! Implementations live in the service crate's `adapters` (and, for unit
//! tests, in-memory fakes).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{Product, ProductId, SearchPage, SearchQuery};

use super::{DeleteOutcome, ProductCommand, ProductUpdate, UpdateOrder, UpdateOutcome};

/// A failure of an adapter, classified by what the caller can do about it.
/// Adapters classify explicitly (see the MongoDB adapter's `port_error`):
/// the command pipeline retries `Unavailable` for as long as it lasts,
/// dead-letters `Rejected` at once, and gives `Internal` a bounded budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// The dependency cannot serve now (connection refused, timeout, server
    /// selection, shutting down, not primary): retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The dependency refused this request for what it is (document too
    /// large, failed validation): retrying the same request cannot help.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Anything else: a bug or corrupt data.
    #[error("{0}")]
    Internal(String),
}

/// Counts the writes of one product id (create 1, then +1 for each update and
/// for the delete), so copies of it, such as cache entries, are ordered
/// without clocks.
pub type Revision = u64;

/// What the repository holds for an id.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    Live(Product, Revision),
    /// Deleted: the tombstone stays for the command topics' retention.
    Deleted(Revision),
}

/// A cache entry: a product, or the short-lived mark that it was deleted.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheEntry {
    Product(Product),
    Deleted,
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
    /// Replaces the client-controlled fields and `updated_at` of a live
    /// product and bumps its revision. With [`UpdateOrder::Log`], only if the
    /// stored product has not applied that position or a later one of the
    /// same partition (then `Stale`); the position is stored with the change.
    /// Never an upsert; a tombstone answers `Deleted`.
    async fn update(
        &self,
        update: &ProductUpdate,
        order: UpdateOrder,
    ) -> Result<UpdateOutcome, PortError>;
    /// The product, or its tombstone, by id.
    async fn find_by_id(&self, id: &ProductId) -> Result<Option<Stored>, PortError>;
    /// Live products only.
    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, PortError>;
    /// Replaces the product by a tombstone (written even when nothing was
    /// there, so that a create still on its way stays deleted), with its
    /// new revision.
    async fn delete(&self, id: &ProductId) -> Result<(DeleteOutcome, Revision), PortError>;
    /// Cheap reachability check for readiness probes.
    async fn ping(&self) -> Result<(), PortError>;
}

/// Answers searches from somewhere other than the repository: a search
/// index kept by the service (`with_search`). The same contract as
/// [`ProductRepository::search`]: live products whose name or description
/// contains the text (literal, case insensitive), sorted by name then id.
#[async_trait]
pub trait ProductSearch: Send + Sync {
    /// `None` while it cannot answer yet (an index being built at start):
    /// the repository answers instead.
    async fn search(&self, query: &SearchQuery) -> Result<Option<SearchPage>, PortError>;
}

/// A best-effort read cache in front of the repository. Errors are reported
/// so they can be logged, but use cases never fail because of the cache.
///
/// Entries carry the revision they were read at, and `put` is a compare-and-
/// set: an entry is stored only if the cache holds nothing of the same or a
/// later revision. So a reader that read an old version before a write
/// cannot overwrite the newer entry the writer put (the cache-aside race).
#[async_trait]
pub trait ProductCache: Send + Sync {
    async fn get(&self, id: &ProductId) -> Result<Option<CacheEntry>, PortError>;
    async fn put(
        &self,
        id: &ProductId,
        entry: &CacheEntry,
        revision: Revision,
    ) -> Result<(), PortError>;
}

/// The cache to use when caching is turned off.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCache;

#[async_trait]
impl ProductCache for NoCache {
    async fn get(&self, _id: &ProductId) -> Result<Option<CacheEntry>, PortError> {
        Ok(None)
    }
    async fn put(
        &self,
        _id: &ProductId,
        _entry: &CacheEntry,
        _revision: Revision,
    ) -> Result<(), PortError> {
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
