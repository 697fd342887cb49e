//! Write commands: what a REST write becomes, travels through Kafka as, and
//! the consumer applies. Applying is idempotent and ordered by the log, never
//! by clocks: a replayed create finds its id taken (or its tombstone), and an
//! update applies only if no later record of the same product's updates has
//! been applied (its [`LogPosition`] is compared with the one stored).

use chrono::{DateTime, Utc};

use crate::domain::{Product, ProductDraft, ProductId};

/// New field values for an existing product.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductUpdate {
    pub id: ProductId,
    pub draft: ProductDraft,
    /// Wall-clock time of the write, for display (`updatedAt`). It does not
    /// order updates: replicas' clocks disagree.
    pub updated_at: DateTime<Utc>,
}

/// Where an update record sits in the update topic. All updates of one
/// product share a key and so a partition: their offsets order them. A
/// replayed dead letter keeps the position of the record it copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    pub partition: i32,
    pub offset: i64,
}

/// How an update is ordered against others of the same product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOrder {
    /// From the update topic: applied only if the stored product has not
    /// seen this position or a later one of the same partition.
    Log(LogPosition),
    /// A direct write (gRPC): applied now, and it leaves the stored log
    /// position alone, so it can never make a Kafka update look stale.
    Direct,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProductCommand {
    /// Store this product (id and timestamps already assigned).
    Create(Product),
    Update(ProductUpdate),
}

impl ProductCommand {
    pub fn product_id(&self) -> &ProductId {
        match self {
            Self::Create(product) => &product.id,
            Self::Update(update) => &update.id,
        }
    }

    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Create(_) => "create",
            Self::Update(_) => "update",
        }
    }
}

/// What applying a command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Applied,
    /// Already applied before, or superseded by a later update: nothing to do.
    Duplicate,
    /// The product was deleted: a create or update arriving after its delete
    /// is dropped, so a deleted product never comes back.
    Deleted,
}

/// What an ordered update found in the repository.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateOutcome {
    /// Stored, with its new revision.
    Applied(Product, crate::app::Revision),
    /// This position (or a later one) was applied already: left alone.
    Stale,
    /// The product was deleted (a tombstone is stored).
    Deleted,
    NotFound,
}

/// What a delete found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// A live product was turned into a tombstone.
    Deleted,
    /// Nothing live was there; a tombstone now makes sure that a create or
    /// update still on its way cannot bring the id back.
    NothingToDelete,
}
