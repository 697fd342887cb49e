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
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use chrono::Utc;
use futures::{future::BoxFuture, stream::FuturesUnordered, FutureExt, StreamExt};
use products_core::{app::PortError, domain::ProductId};
use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    producer::{FutureProducer, FutureRecord},
};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{record::EventRecord, ChangeEvent, EventKind, EventMeta};
use crate::config::EventsSettings;

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
            next_seq: AtomicU64::new(1),
            permits: Arc::new(Semaphore::new(settings.relay.max_pending.max(1))),
            messages,
            in_flight: Mutex::new(HashSet::new()),
            settled: Notify::new(),
            registered,
        });
        let task = RelayTask {
            shared: shared.clone(),
            store,
            producer,
            topic: settings.topic.clone(),
            source: settings.source.clone(),
            lease: Duration::from_millis(settings.relay.lease_ms),
            interval: Duration::from_millis(settings.relay.checkpoint_interval_ms.max(10)),
            inbox,
            registered: registered_tx,
            open: BTreeMap::new(),
            through: 0,
            queues: HashMap::new(),
            waiting: HashSet::new(),
            deliveries: FuturesUnordered::new(),
            remotes: HashMap::new(),
            sweeping: HashMap::new(),
            pending_since: HashMap::new(),
            next_tag: 0,
            housekeeping: None,
            saved: None,
            beat: 0,
            last_beat: Instant::now(),
        };
        (Self { shared }, task)
    }

    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The ticket for one write of `product_id`: waits until the relay is
    /// registered, a pending slot is free, and no earlier event of ours for
    /// this product is still unpublished.
    pub async fn reserve(&self, product_id: &ProductId, kind: EventKind) -> Ticket {
        let shared = &self.shared;
        let mut registered = shared.registered.clone();
        // The sender lives as long as the task; if it is gone, writes go on
        // and their events wait for a sweep.
        let _ = registered.wait_for(|done| *done).await;
        let permit = shared
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the permit semaphore is never closed");
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

/// Where one of our sequence numbers is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeqState {
    /// Ticket out, write not finished.
    Reserved,
    /// Write outcome unknown; the document is being read.
    Unresolved,
    /// Stored, queued behind its prior.
    Queued,
    /// Handed to the producer (later records of its partition come after).
    Sent,
    /// Acknowledged.
    Done,
    /// Never stored, or lost track of (see `Resolved`).
    Abandoned,
}

struct Job {
    event: ChangeEvent,
    prior: Option<ChangeEvent>,
    /// Our own event: its sequence number and pending slot.
    own: Option<(u64, OwnedSemaphorePermit)>,
    /// A dead relay's event, published by its sweep.
    sweep_of: Option<String>,
    tag: u64,
}

struct Remote {
    record: RelayRecord,
    /// When its beat last changed, by our clock (clocks of other hosts are
    /// never compared).
    beat_changed: Instant,
}

enum PriorState {
    Published,
    Wait,
    PublishIt,
}

/// The publishing loop (one per process).
pub struct RelayTask {
    shared: Arc<Shared>,
    store: Arc<dyn RelayStore>,
    producer: FutureProducer,
    topic: String,
    source: String,
    lease: Duration,
    interval: Duration,
    inbox: mpsc::UnboundedReceiver<Message>,
    registered: watch::Sender<bool>,
    open: BTreeMap<u64, SeqState>,
    through: u64,
    queues: HashMap<ProductId, VecDeque<Job>>,
    /// Products whose next job waits for another relay.
    waiting: HashSet<ProductId>,
    deliveries: FuturesUnordered<BoxFuture<'static, (Job, Result<(), KafkaError>)>>,
    remotes: HashMap<String, Remote>,
    /// Dead relays being swept: events of theirs not yet acknowledged.
    sweeping: HashMap<String, usize>,
    /// Event time of every job not yet acknowledged, by tag.
    pending_since: HashMap<u64, chrono::DateTime<Utc>>,
    next_tag: u64,
    housekeeping: Option<tokio::task::JoinHandle<()>>,
    saved: Option<(u64, u64)>,
    beat: u64,
    last_beat: Instant,
}

impl RelayTask {
    /// Registers the relay (writes can take tickets from then on), waits
    /// for `ready` (the topic exists), then publishes until `shutdown`; then,
    /// for at most `grace`, what is still in flight, and records whether
    /// everything was published (else another replica sweeps what is left).
    pub async fn run(
        mut self,
        ready: impl std::future::Future<Output = ()>,
        shutdown: CancellationToken,
        grace: Duration,
    ) {
        self.register(&shutdown).await;
        tokio::select! {
            () = ready => {}
            () = shutdown.cancelled() => return,
        }
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(message) = self.inbox.recv() => self.handle(message),
                Some((job, result)) = self.deliveries.next(), if !self.deliveries.is_empty() => self.delivered(job, result),
                _ = ticker.tick() => self.tick(false),
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        while !self.idle() {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                Some(message) = self.inbox.recv() => self.handle(message),
                Some((job, result)) = self.deliveries.next(), if !self.deliveries.is_empty() => self.delivered(job, result),
                _ = ticker.tick() => self.tick(true),
            }
        }
        let stopped = self.idle();
        self.advance();
        let record = RelayRecord {
            id: self.shared.id.clone(),
            through: self.through,
            beat: self.beat + 1,
            stopped,
            swept_by: None,
        };
        if let Err(err) = self.store.save_relay(&record).await {
            tracing::warn!(error = %err, "relay checkpoint not saved at shutdown; another replica will sweep");
        }
        if stopped {
            tracing::info!(relay = %record.id, through = record.through, "event relay stopped, everything published");
        } else {
            tracing::warn!(relay = %record.id, pending = self.pending_since.len(), "event relay stopped with events unpublished; another replica will publish them");
        }
    }

    async fn register(&mut self, shutdown: &CancellationToken) {
        let record = RelayRecord {
            id: self.shared.id.clone(),
            through: 0,
            beat: 0,
            stopped: false,
            swept_by: None,
        };
        let mut delay = Duration::from_millis(100);
        loop {
            match self.store.save_relay(&record).await {
                Ok(()) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "event relay not registered yet; retrying");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        self.saved = Some((0, 0));
        tracing::info!(relay = %self.shared.id, "event relay registered");
        let _ = self.registered.send(true);
    }

    fn idle(&self) -> bool {
        self.deliveries.is_empty()
            && self.queues.is_empty()
            && self
                .open
                .values()
                .all(|s| matches!(s, SeqState::Done | SeqState::Abandoned))
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Reserved(seq) => {
                self.open.insert(seq, SeqState::Reserved);
            }
            Message::Stored {
                event,
                prior,
                permit,
            } => {
                let seq = event.meta.seq;
                self.open.insert(seq, SeqState::Queued);
                self.enqueue(*event, prior.map(|p| *p), Some((seq, permit)), None);
            }
            Message::NotStored {
                seq,
                product_id,
                permit,
            } => self.abandon(seq, &product_id, permit),
            Message::Unknown {
                seq,
                product_id,
                permit,
            } => {
                self.open.insert(seq, SeqState::Unresolved);
                self.spawn_resolution(seq, product_id, permit);
            }
            Message::Resolved {
                seq,
                product_id,
                event,
                permit,
            } => match event {
                Some(event) => {
                    self.open.insert(seq, SeqState::Queued);
                    self.enqueue(*event, None, Some((seq, permit)), None);
                }
                None => self.abandon(seq, &product_id, permit),
            },
            Message::Relays(records) => self.observe_relays(records),
            Message::Swept { relay, events } => match events {
                None => {
                    self.sweeping.remove(&relay);
                }
                Some(events) => {
                    tracing::warn!(relay = %relay, events = events.len(), "publishing the events of a relay that died");
                    metrics::counter!("product_events_relays_swept_total").increment(1);
                    self.sweeping.insert(relay.clone(), events.len());
                    if events.is_empty() {
                        self.finish_sweep(relay.clone());
                    }
                    for event in events {
                        self.enqueue(event, None, None, Some(relay.clone()));
                    }
                }
            },
        }
    }

    fn abandon(&mut self, seq: u64, product_id: &ProductId, permit: OwnedSemaphorePermit) {
        self.open.insert(seq, SeqState::Abandoned);
        drop(permit);
        self.release(product_id);
        self.advance();
    }

    /// Our event for `product_id` is settled: the next write may take a ticket.
    fn release(&self, product_id: &ProductId) {
        lock(&self.shared.in_flight).remove(product_id);
        self.shared.settled.notify_waiters();
    }

    fn enqueue(
        &mut self,
        event: ChangeEvent,
        prior: Option<ChangeEvent>,
        own: Option<(u64, OwnedSemaphorePermit)>,
        sweep_of: Option<String>,
    ) {
        let tag = self.next_tag;
        self.next_tag += 1;
        self.pending_since.insert(tag, event.meta.time);
        let product_id = event.product_id.clone();
        self.queues
            .entry(product_id.clone())
            .or_default()
            .push_back(Job {
                event,
                prior,
                own,
                sweep_of,
                tag,
            });
        self.pump(&product_id);
    }

    /// Sends the product's queued jobs whose prior is published.
    fn pump(&mut self, product_id: &ProductId) {
        self.waiting.remove(product_id);
        loop {
            let Some(queue) = self.queues.get_mut(product_id) else {
                return;
            };
            let Some(job) = queue.front_mut() else {
                self.queues.remove(product_id);
                return;
            };
            let decision = match &job.prior {
                None => PriorState::Published,
                Some(prior) => prior_state(
                    prior,
                    &self.shared.id,
                    self.through,
                    &self.open,
                    &self.remotes,
                    self.lease,
                ),
            };
            match decision {
                PriorState::Wait => {
                    self.waiting.insert(product_id.clone());
                    return;
                }
                PriorState::Published => {
                    job.prior = None;
                }
                PriorState::PublishIt => {
                    // Its writer died before publishing it: it goes first,
                    // under its own id.
                    let prior = job.prior.take().expect("checked above");
                    let tag = self.next_tag;
                    self.next_tag += 1;
                    self.pending_since.insert(tag, prior.meta.time);
                    queue.push_front(Job {
                        event: prior,
                        prior: None,
                        own: None,
                        sweep_of: None,
                        tag,
                    });
                }
            }
            let job = queue.pop_front().expect("front exists");
            if let Err(job) = self.send(job) {
                // The producer's queue is full: try again on the next tick.
                if let Some(queue) = self.queues.get_mut(product_id) {
                    queue.push_front(*job);
                }
                self.waiting.insert(product_id.clone());
                return;
            }
        }
    }

    fn send(&mut self, job: Job) -> Result<(), Box<Job>> {
        let record = match EventRecord::of(&job.event, &self.source) {
            Ok(record) => record,
            Err(err) => {
                // Cannot happen for a valid product; never lose track of it.
                tracing::error!(error = %err, product_id = %job.event.product_id, "event not serialisable");
                return Err(Box::new(job));
            }
        };
        let mut future_record = FutureRecord::<str, [u8]>::to(&self.topic)
            .key(record.key.as_str())
            .headers(record.kafka_headers());
        if let Some(payload) = &record.payload {
            future_record = future_record.payload(payload.as_slice());
        }
        match self.producer.send_result(future_record) {
            Ok(delivery) => {
                if let Some((seq, _)) = &job.own {
                    self.open.insert(*seq, SeqState::Sent);
                }
                let span = publish_span(&self.topic, &job.event);
                self.deliveries.push(
                    async move {
                        let result = match delivery.await {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err((err, _))) => Err(err),
                            Err(_) => Err(KafkaError::Canceled),
                        };
                        (job, result)
                    }
                    .instrument(span)
                    .boxed(),
                );
                Ok(())
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(Box::new(job))
            }
            Err((err, _)) => {
                tracing::warn!(error = %err, "event not handed to the producer; retrying");
                Err(Box::new(job))
            }
        }
    }

    fn delivered(&mut self, job: Job, result: Result<(), KafkaError>) {
        if let Err(err) = result {
            // The producer retries delivery for ever; an error here is fatal
            // for that record: send it again (same id), before later ones.
            tracing::warn!(error = %err, product_id = %job.event.product_id, "event delivery failed; sending it again");
            let product_id = job.event.product_id.clone();
            self.queues
                .entry(product_id.clone())
                .or_default()
                .push_front(job);
            self.waiting.insert(product_id);
            return;
        }
        let kind = job.event.meta.kind.as_str();
        metrics::counter!("product_events_published_total", "type" => kind).increment(1);
        let lag = (Utc::now() - job.event.meta.time).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::histogram!("product_events_relay_lag_seconds").record(lag);
        self.pending_since.remove(&job.tag);
        if let Some((seq, permit)) = job.own {
            self.open.insert(seq, SeqState::Done);
            drop(permit);
            self.release(&job.event.product_id);
            self.advance();
        }
        if let Some(relay) = job.sweep_of {
            if let Some(left) = self.sweeping.get_mut(&relay) {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    self.finish_sweep(relay);
                }
            }
        }
    }

    fn finish_sweep(&mut self, relay: String) {
        let store = self.store.clone();
        tokio::spawn(async move {
            // If this fails the relay stays "swept, not finished": waiters
            // treat it as dead and publish what they hold; nothing is lost.
            if let Err(err) = store.finish_sweep(&relay).await {
                tracing::warn!(relay = %relay, error = %err, "sweep not recorded as finished");
            }
        });
    }

    /// Moves `through` past every settled sequence number.
    fn advance(&mut self) {
        while let Some((&seq, &state)) = self.open.first_key_value() {
            if !matches!(state, SeqState::Done | SeqState::Abandoned) {
                break;
            }
            self.open.remove(&seq);
            self.through = seq;
        }
    }

    fn spawn_resolution(&self, seq: u64, product_id: ProductId, permit: OwnedSemaphorePermit) {
        let store = self.store.clone();
        let messages = self.shared.messages.clone();
        let relay = self.shared.id.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            let event = loop {
                match store.last_event(&product_id).await {
                    Ok(found) => {
                        break found
                            .filter(|e| e.meta.relay == relay && e.meta.seq == seq)
                            .map(Box::new);
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "cannot read back an unknown write yet");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            };
            let _ = messages.send(Message::Resolved {
                seq,
                product_id,
                event,
                permit,
            });
        });
    }

    /// Every `checkpoint_interval_ms`: retry what waits, save the checkpoint,
    /// look at the other relays.
    fn tick(&mut self, stopping: bool) {
        for product_id in self.waiting.clone() {
            self.pump(&product_id);
        }
        self.advance();
        self.report();
        if self.housekeeping.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let beat_due = self.last_beat.elapsed() >= Duration::from_secs(1);
        if beat_due {
            self.beat += 1;
            self.last_beat = Instant::now();
        }
        let save = (self.saved != Some((self.through, self.beat))).then(|| RelayRecord {
            id: self.shared.id.clone(),
            through: self.through,
            beat: self.beat,
            stopped: false,
            swept_by: None,
        });
        let look = !self.waiting.is_empty() || (beat_due && !stopping);
        if save.is_none() && !look {
            return;
        }
        if save.is_some() {
            self.saved = Some((self.through, self.beat));
        }
        let store = self.store.clone();
        let messages = self.shared.messages.clone();
        self.housekeeping = Some(tokio::spawn(async move {
            if let Some(record) = save {
                if let Err(err) = store.save_relay(&record).await {
                    tracing::debug!(error = %err, "relay checkpoint not saved");
                }
            }
            if look {
                match store.relays().await {
                    Ok(records) => {
                        let _ = messages.send(Message::Relays(records));
                    }
                    Err(err) => tracing::debug!(error = %err, "relays not read"),
                }
            }
        }));
    }

    fn report(&self) {
        metrics::gauge!("product_events_pending").set(self.pending_since.len() as f64);
        let oldest = self
            .pending_since
            .values()
            .min()
            .map(|t| (Utc::now() - *t).num_milliseconds().max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        metrics::gauge!("product_events_oldest_pending_seconds").set(oldest);
    }

    fn observe_relays(&mut self, records: Vec<RelayRecord>) {
        let now = Instant::now();
        for record in records {
            if record.id == self.shared.id {
                continue;
            }
            match self.remotes.get_mut(&record.id) {
                Some(remote) => {
                    if remote.record.beat != record.beat {
                        remote.beat_changed = now;
                    }
                    remote.record = record;
                }
                None => {
                    self.remotes.insert(
                        record.id.clone(),
                        Remote {
                            record,
                            beat_changed: now,
                        },
                    );
                }
            }
        }
        let dead: Vec<String> = self
            .remotes
            .values()
            .filter(|r| {
                !r.record.stopped
                    && r.record.swept_by.is_none()
                    && r.beat_changed.elapsed() >= self.lease
                    && !self.sweeping.contains_key(&r.record.id)
            })
            .map(|r| r.record.id.clone())
            .collect();
        for relay in dead {
            let after = self.remotes[&relay].record.through;
            self.sweeping.insert(relay.clone(), usize::MAX);
            let store = self.store.clone();
            let messages = self.shared.messages.clone();
            let me = self.shared.id.clone();
            tokio::spawn(async move {
                let events = match store.claim_sweep(&relay, &me).await {
                    Ok(true) => match store.events_of(&relay, after).await {
                        Ok(events) => Some(events),
                        Err(err) => {
                            tracing::warn!(relay = %relay, error = %err, "sweep failed; retrying later");
                            None
                        }
                    },
                    Ok(false) => None,
                    Err(err) => {
                        tracing::debug!(error = %err, "sweep not claimed");
                        None
                    }
                };
                let _ = messages.send(Message::Swept { relay, events });
            });
        }
        for product_id in self.waiting.clone() {
            self.pump(&product_id);
        }
    }
}

/// Whether the event a document held before our write is published.
fn prior_state(
    prior: &ChangeEvent,
    me: &str,
    through: u64,
    open: &BTreeMap<u64, SeqState>,
    remotes: &HashMap<String, Remote>,
    lease: Duration,
) -> PriorState {
    let seq = prior.meta.seq;
    if prior.meta.relay == me {
        if seq <= through {
            return PriorState::Published;
        }
        return match open.get(&seq) {
            Some(SeqState::Sent | SeqState::Done) | None => PriorState::Published,
            Some(SeqState::Abandoned) => PriorState::PublishIt,
            Some(SeqState::Reserved | SeqState::Unresolved | SeqState::Queued) => PriorState::Wait,
        };
    }
    match remotes.get(&prior.meta.relay) {
        Some(remote) if remote.record.through >= seq => PriorState::Published,
        // Stopped after publishing everything it had.
        Some(remote) if remote.record.stopped && remote.record.swept_by.is_none() => {
            PriorState::Published
        }
        // Died: what it held in memory is ours to publish (a sweep only
        // finds what is still in documents).
        Some(remote)
            if remote.record.swept_by.is_some() || remote.beat_changed.elapsed() >= lease =>
        {
            PriorState::PublishIt
        }
        _ => PriorState::Wait,
    }
}

fn publish_span(topic: &str, event: &ChangeEvent) -> tracing::Span {
    let span = tracing::info_span!(
        "product_events.publish",
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.destination.name = %topic,
        product_id = %event.product_id,
        ce_type = event.meta.kind.as_str(),
    );
    if crate::telemetry::traces_exported() {
        if let Some(traceparent) = &event.meta.traceparent {
            use opentelemetry::trace::TraceContextExt;
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let carrier: HashMap<String, String> =
                HashMap::from([("traceparent".to_owned(), traceparent.clone())]);
            let context = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
            span.add_link(context.span().span_context().clone());
        }
    }
    span
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
