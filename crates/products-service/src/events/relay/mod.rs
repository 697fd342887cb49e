//! The relay: publishes the change events this process stored, in order per
//! product, and nothing twice under different ids (docs/EVENTS.md "How it
//! works").
//!
//! - A writer takes a [`Ticket`] ([`EventRelay::reserve`]) before its write:
//!   the event's id and this relay's next sequence number, stamped into the
//!   document with the change. At most one event of ours per product is in
//!   flight: a second write of the same product waits until the first one's
//!   event is acknowledged, so a document's `event` field always holds every
//!   event of ours that is not yet published.
//! - After the write the ticket says what happened: stored (with the
//!   document's previous event, read in the same round trip), not stored, or
//!   unknown (then the relay reads the document to find out).
//! - [`RelayTask`] sends events with an idempotent producer that never times
//!   out (a broker outage of any length only delays them) and records in the
//!   database the highest sequence number up to which everything is
//!   acknowledged (its checkpoint), with a heartbeat.
//! - The previous event of a document, when another relay wrote it, is
//!   published after that relay's checkpoint passed it, or by us if that
//!   relay stopped beating for `lease_ms` (it died): so per product, first
//!   copies are in order. A dead relay's events still in documents are found
//!   by a sweep (one full scan) and published by a live relay.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use async_trait::async_trait;
use products_core::{app::PortError, domain::ProductId};
use rdkafka::producer::FutureProducer;
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};

use super::{ChangeEvent, EventKind, EventMeta};
use crate::config::EventsSettings;

mod task;

pub use task::RelayTask;

/// How far a relay got, as stored in the database (one record per process
/// that ever relayed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRecord {
    pub id: String,
    /// Every event of this relay with `seq <= through` is published (or was
    /// never stored).
    pub through: u64,
    /// Incremented about once a second while the relay lives.
    pub beat: u64,
    /// Stopped after publishing everything (a graceful shutdown), or swept.
    pub stopped: bool,
    /// The relay that swept it after it died.
    pub swept_by: Option<String>,
}

/// What the relay needs from the database (the MongoDB adapter implements
/// it on the product collection and a small relay collection).
#[async_trait]
pub trait RelayStore: Send + Sync + 'static {
    /// Saves `through`, `beat` and `stopped` (creating the record).
    async fn save_relay(&self, record: &RelayRecord) -> Result<(), PortError>;
    async fn relays(&self) -> Result<Vec<RelayRecord>, PortError>;
    /// Marks `relay` as swept by `sweeper` unless another sweeper did;
    /// whether this one got it.
    async fn claim_sweep(&self, relay: &str, sweeper: &str) -> Result<bool, PortError>;
    /// The events of `relay` past `after` still held by documents.
    async fn events_of(&self, relay: &str, after: u64) -> Result<Vec<ChangeEvent>, PortError>;
    /// The event a product's document holds now.
    async fn last_event(&self, id: &ProductId) -> Result<Option<ChangeEvent>, PortError>;
    /// Marks a swept relay as done: its events are all published.
    async fn finish_sweep(&self, relay: &str) -> Result<(), PortError>;
}

/// The writers' side of the relay; cheap to clone.
#[derive(Clone)]
pub struct EventRelay {
    shared: Arc<Shared>,
}

struct Shared {
    id: String,
    capacity: usize,
    next_seq: AtomicU64,
    permits: Arc<Semaphore>,
    messages: mpsc::UnboundedSender<Message>,
    /// Products with an event of ours stored (or maybe stored) and not yet
    /// acknowledged; guarded together with the sequence so that sequence
    /// numbers reach the task in order.
    in_flight: Mutex<HashSet<ProductId>>,
    settled: Notify,
    registered: watch::Receiver<bool>,
}

impl EventRelay {
    /// A relay with a fresh id, and the task that publishes for it (run it
    /// with [`RelayTask::run`]).
    pub fn new(
        settings: &EventsSettings,
        store: Arc<dyn RelayStore>,
        producer: FutureProducer,
    ) -> (Self, RelayTask) {
        let (messages, inbox) = mpsc::unbounded_channel();
        let (registered_tx, registered) = watch::channel(false);
        let shared = Arc::new(Shared {
            id: mongodb::bson::oid::ObjectId::new().to_hex(),
            capacity: settings.relay.max_pending.max(1),
            next_seq: AtomicU64::new(1),
            permits: Arc::new(Semaphore::new(settings.relay.max_pending.max(1))),
            messages,
            in_flight: Mutex::new(HashSet::new()),
            settled: Notify::new(),
            registered,
        });
        let task = RelayTask::new(
            shared.clone(),
            store,
            producer,
            settings,
            inbox,
            registered_tx,
        );
        (Self { shared }, task)
    }

    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Events a batch may reserve at once (`events.relay.max_pending`):
    /// larger batches must be split by the caller.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// The ticket for one write of `product_id`: waits until the relay is
    /// registered, a pending slot is free, and no earlier event of ours for
    /// this product is still unpublished.
    pub async fn reserve(&self, product_id: &ProductId, kind: EventKind) -> Ticket {
        self.reserve_batch(std::slice::from_ref(product_id), kind)
            .await
            .pop()
            .expect("one ticket per id")
    }

    /// Tickets for a batch of writes (at most [`EventRelay::capacity`]).
    /// The batch's pending slots are taken at once: batches that each took
    /// some slots and waited for more would wait for each other for ever.
    pub async fn reserve_batch(&self, product_ids: &[ProductId], kind: EventKind) -> Vec<Ticket> {
        let shared = &self.shared;
        let mut registered = shared.registered.clone();
        // The sender lives as long as the task; if it is gone, writes go on
        // and their events wait for a sweep.
        let _ = registered.wait_for(|done| *done).await;
        let wanted = u32::try_from(product_ids.len().min(shared.capacity)).unwrap_or(u32::MAX);
        let mut permits = shared
            .permits
            .clone()
            .acquire_many_owned(wanted)
            .await
            .expect("the permit semaphore is never closed");
        let mut tickets = Vec::with_capacity(product_ids.len());
        for product_id in product_ids {
            let permit = match permits.split(1) {
                Some(permit) => permit,
                // More ids than the capacity (a caller that did not split).
                None => shared
                    .permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the permit semaphore is never closed"),
            };
            tickets.push(self.ticket(product_id, kind, permit).await);
        }
        tickets
    }

    /// A ticket, once no earlier event of ours for this product is unpublished.
    async fn ticket(
        &self,
        product_id: &ProductId,
        kind: EventKind,
        permit: OwnedSemaphorePermit,
    ) -> Ticket {
        let shared = &self.shared;
        let seq = loop {
            let settled = shared.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            {
                let mut in_flight = lock(&shared.in_flight);
                if in_flight.insert(product_id.clone()) {
                    // Under the lock: sequence numbers reach the task in order.
                    let seq = shared.next_seq.fetch_add(1, Ordering::SeqCst);
                    let _ = shared.messages.send(Message::Reserved(seq));
                    break seq;
                }
            }
            settled.await;
        };
        let (traceparent, tracestate) = current_trace_context();
        Ticket {
            relay: self.clone(),
            meta: EventMeta {
                id: mongodb::bson::oid::ObjectId::new().to_hex(),
                kind,
                relay: shared.id.clone(),
                seq,
                time: products_core::app::Clock::now(&products_core::app::SystemClock),
                traceparent,
                tracestate,
            },
            product_id: product_id.clone(),
            permit: Some(permit),
        }
    }

    fn send(&self, message: Message) {
        // The task is gone only after shutdown; nothing to do then.
        let _ = self.shared.messages.send(message);
    }
}

/// One write's event, reserved. Say what became of the write with
/// [`Ticket::stored`], [`Ticket::not_stored`] or [`Ticket::unknown`];
/// dropping it unresolved counts as unknown.
pub struct Ticket {
    relay: EventRelay,
    meta: EventMeta,
    product_id: ProductId,
    permit: Option<OwnedSemaphorePermit>,
}

impl Ticket {
    /// The event metadata to store with the change.
    pub fn meta(&self) -> &EventMeta {
        &self.meta
    }

    /// The change was stored: `rev` and `state` after it; `prior`, the
    /// event the document held before (it may still be unpublished).
    pub fn stored(
        mut self,
        rev: i64,
        state: Option<products_core::domain::Product>,
        prior: Option<ChangeEvent>,
    ) {
        let event = ChangeEvent {
            meta: self.meta.clone(),
            product_id: self.product_id.clone(),
            rev,
            state,
        };
        if let Some(permit) = self.permit.take() {
            self.relay.send(Message::Stored {
                event: Box::new(event),
                prior: prior.map(Box::new),
                permit,
            });
        }
    }

    /// Nothing was written (no match, a duplicate, refused before sending).
    pub fn not_stored(mut self) {
        if let Some(permit) = self.permit.take() {
            self.relay.send(Message::NotStored {
                seq: self.meta.seq,
                product_id: self.product_id.clone(),
                permit,
            });
        }
    }

    /// The write may or may not have happened: the relay reads the document.
    pub fn unknown(mut self) {
        self.resolve_unknown();
    }

    fn resolve_unknown(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.relay.send(Message::Unknown {
                seq: self.meta.seq,
                product_id: self.product_id.clone(),
                permit,
            });
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.resolve_unknown();
    }
}

enum Message {
    Reserved(u64),
    Stored {
        event: Box<ChangeEvent>,
        prior: Option<Box<ChangeEvent>>,
        permit: OwnedSemaphorePermit,
    },
    NotStored {
        seq: u64,
        product_id: ProductId,
        permit: OwnedSemaphorePermit,
    },
    Unknown {
        seq: u64,
        product_id: ProductId,
        permit: OwnedSemaphorePermit,
    },
    /// What a document held, read for an unknown write.
    Resolved {
        seq: u64,
        product_id: ProductId,
        event: Option<Box<ChangeEvent>>,
        permit: OwnedSemaphorePermit,
    },
    /// The housekeeping step's view of every relay.
    Relays(Vec<RelayRecord>),
    /// A dead relay's events still in documents (or `None`: the sweep failed
    /// or another relay claimed it).
    Swept {
        relay: String,
        events: Option<Vec<ChangeEvent>>,
    },
}

/// The current span's W3C trace context, to store with the change.
fn current_trace_context() -> (Option<String>, Option<String>) {
    if !crate::telemetry::traces_exported() {
        return (None, None);
    }
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = tracing::Span::current().context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut carrier));
    (
        carrier.remove("traceparent"),
        carrier.remove("tracestate").filter(|s| !s.is_empty()),
    )
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
