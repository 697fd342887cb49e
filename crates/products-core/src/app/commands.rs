//! Write commands: what a REST write becomes, travels through Kafka as, and
//! the consumer applies. Applying is idempotent: a replayed create finds its
//! id taken, a replayed or older update finds a newer `updated_at` stored.

use chrono::{DateTime, Utc};

use crate::domain::{Product, ProductDraft, ProductId};

/// New field values for an existing product, versioned by `updated_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductUpdate {
    pub id: ProductId,
    pub draft: ProductDraft,
    /// The version: an update never overwrites a product updated later.
    pub updated_at: DateTime<Utc>,
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
    /// Already applied before, or superseded by a newer update: nothing to do.
    Duplicate,
}

/// What a versioned update found in the repository.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateOutcome {
    Applied(Product),
    /// The stored product is newer than this update; it was left alone.
    Stale,
    NotFound,
}
