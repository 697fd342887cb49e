//! Product change events: every stored change (create, update, delete, from
//! REST, Kafka or gRPC) becomes one CloudEvent on the `product-events` topic
//! (docs/EVENTS.md is the contract).
//!
//! How nothing is lost without multi-document transactions (an embedded
//! outbox, docs/EVENTS.md "How it works"):
//! - The MongoDB adapter writes the change's event metadata ([`EventMeta`])
//!   into the product document, in the same single-document write as the
//!   change (field `event`; the event's data is the document itself). An
//!   update or delete reads back the document as it was before (its
//!   previous event and state) in the same round trip.
//! - [`relay::EventRelay`] publishes what the writes of this process stored,
//!   in order per product, and records how far it got (a checkpoint in the
//!   database, per relay). A previous event written by another replica is
//!   published after that replica's checkpoint passed it, or by us if that
//!   replica died. A relay that died is swept: its events still in documents
//!   are published by a live one.
//! - [`record`] maps an event to its Kafka record (CloudEvents binary mode);
//!   [`tail`] is `products-service events tail`.

pub mod record;
pub mod relay;
pub mod tail;

use chrono::{DateTime, Utc};
use products_core::domain::{Product, ProductId};

pub use relay::{EventRelay, RelayRecord, RelayStore, RelayTask, Ticket};

/// What a change did to a product; the CloudEvents `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "product.created",
            Self::Updated => "product.updated",
            Self::Deleted => "product.deleted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "product.created" => Some(Self::Created),
            "product.updated" => Some(Self::Updated),
            "product.deleted" => Some(Self::Deleted),
            _ => None,
        }
    }
}

/// The event of one stored change, as kept in the product document: who
/// publishes it (`relay`, `seq`) and what the CloudEvent says about it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventMeta {
    /// `ce_id`: unique per change, the same on every redelivery.
    pub id: String,
    pub kind: EventKind,
    /// The relay (one per process) that wrote it, and its place in that
    /// relay's sequence.
    pub relay: String,
    pub seq: u64,
    pub time: DateTime<Utc>,
    /// W3C trace context of the write, so a consumer's trace continues it.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// A change to publish: its metadata, the product's revision after it, and
/// the product's state after it (`None` for a delete: a tombstone).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    pub meta: EventMeta,
    pub product_id: ProductId,
    pub rev: i64,
    pub state: Option<Product>,
}
