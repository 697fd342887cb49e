//! The relay's publishing loop ([`RelayTask`], one per process): orders
//! each product's events behind their prior, sends them, tracks the
//! acknowledged sequence numbers (the checkpoint), saves it with a
//! heartbeat, watches the other relays and sweeps the dead ones.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use futures::{future::BoxFuture, stream::FuturesUnordered, FutureExt, StreamExt};
use products_core::domain::ProductId;
use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    producer::{FutureProducer, FutureRecord},
};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::prior::prior_state;
use super::{lock, Message, RelayRecord, RelayStore, Shared};

mod housekeeping;
mod prior;
use crate::{
    config::EventsSettings,
    events::{record::EventRecord, ChangeEvent},
};

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
    pub(super) fn new(
        shared: Arc<Shared>,
        store: Arc<dyn RelayStore>,
        producer: FutureProducer,
        settings: &EventsSettings,
        inbox: mpsc::UnboundedReceiver<Message>,
        registered: watch::Sender<bool>,
    ) -> Self {
        Self {
            shared,
            store,
            producer,
            topic: settings.topic.clone(),
            source: settings.source.clone(),
            lease: Duration::from_millis(settings.relay.lease_ms),
            interval: Duration::from_millis(settings.relay.checkpoint_interval_ms.max(10)),
            inbox,
            registered,
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
        }
    }
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

    fn advance(&mut self) {
        while let Some((&seq, &state)) = self.open.first_key_value() {
            if !matches!(state, SeqState::Done | SeqState::Abandoned) {
                break;
            }
            self.open.remove(&seq);
            self.through = seq;
        }
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
