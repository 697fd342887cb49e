//! Broker loss on a private 3-node Kafka (KRaft) cluster, topics created by
//! the service with replication factor 3 and `min.insync.replicas` 2:
//! concurrent REST writes while one broker is SIGKILLed (every 202 is
//! applied exactly once and the consumer keeps going), then a second one
//! (writes answer 503 within the delivery timeout), then both come back
//! (writes succeed again, nothing accepted is lost, nothing is dead-lettered).

use std::{
    collections::{HashMap, HashSet},
    panic::AssertUnwindSafe,
    sync::{
        atomic::{AtomicU8, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures::FutureExt;
use products_service::config::Settings;
use reqwest::Method;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::common::{
    kafka::{lag_async, partition_leaders, read_all, topic_config},
    mongo::stored_products,
    processes::PrivateKafkaCluster,
    products::product_body,
    spawn_app_with, test_settings, TestApp,
};

const DELIVERY_TIMEOUT_MS: u64 = 3000;
/// The publisher answers at the latest 0.5 s after the delivery timeout; the
/// rest is headroom for a loaded machine.
const ANSWER_BOUND: Duration = Duration::from_millis(DELIVERY_TIMEOUT_MS + 500 + 2500);
/// Concurrent writing clients.
const CLIENTS: usize = 4;
/// Phases of the test; every write is tagged with the phase it was sent in.
const ALL_UP: u8 = 0;
const ONE_DOWN: u8 = 1;
const TWO_DOWN: u8 = 2;
const RESTORED: u8 = 3;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Create,
    Update,
}

/// One REST write and its answer.
#[derive(Debug, Clone)]
struct Write {
    kind: Kind,
    phase: u8,
    /// From the 202 for creates; the target for updates.
    id: Option<String>,
    /// The product name sent: unique per write.
    name: String,
    /// HTTP status, 0 when no answer came.
    status: u16,
    elapsed: Duration,
}

/// Shared by the writing clients: the current phase, 202s per phase.
#[derive(Default)]
struct Load {
    phase: AtomicU8,
    accepted: [AtomicUsize; 4],
}

impl Load {
    fn accepted(&self, phase: u8) -> usize {
        self.accepted[usize::from(phase)].load(Ordering::SeqCst)
    }
}

async fn send(
    http: &reqwest::Client,
    method: Method,
    url: String,
    name: &str,
    target: Option<String>,
    load: &Load,
) -> Write {
    let kind = if target.is_some() {
        Kind::Update
    } else {
        Kind::Create
    };
    let phase = load.phase.load(Ordering::SeqCst);
    let started = Instant::now();
    let response = http
        .request(method, url)
        .json(&product_body(name))
        .send()
        .await;
    let (status, body) = match response {
        Ok(response) => (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap_or_default(),
        ),
        Err(_) => (0, Value::Null),
    };
    let elapsed = started.elapsed();
    if status == 202 {
        load.accepted[usize::from(phase)].fetch_add(1, Ordering::SeqCst);
    }
    let id = target.or_else(|| {
        (status == 202)
            .then(|| body["productId"].as_str().map(str::to_owned))
            .flatten()
    });
    Write {
        kind,
        phase,
        id,
        name: name.to_owned(),
        status,
        elapsed,
    }
}

/// `CLIENTS` tasks, each creating up to `limit` products at about 10/s and
/// updating every third one it got a 202 for, until `stop`.
fn spawn_writers(
    app: &TestApp,
    load: &Arc<Load>,
    label: &str,
    limit: usize,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<Vec<Write>>> {
    (0..CLIENTS)
        .map(|client| {
            let (http, base, load, stop) = (
                app.client.clone(),
                app.http.clone(),
                Arc::clone(load),
                stop.clone(),
            );
            let label = format!("{label}-c{client}");
            tokio::spawn(async move {
                let mut writes = Vec::new();
                let mut pace = tokio::time::interval(Duration::from_millis(100));
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                for n in 0..limit {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        _ = pace.tick() => {}
                    }
                    let name = format!("{label}-{n}");
                    let url = format!("{base}/api/v1/products");
                    let create = send(&http, Method::POST, url, &name, None, &load).await;
                    let target = create.id.clone().filter(|_| n % 3 == 0);
                    writes.push(create);
                    if let Some(id) = target {
                        let url = format!("{base}/api/v1/products/{id}");
                        let name = format!("{name}-v2");
                        writes.push(send(&http, Method::PUT, url, &name, Some(id), &load).await);
                    }
                }
                writes
            })
        })
        .collect()
}

async fn join(writers: Vec<tokio::task::JoinHandle<Vec<Write>>>) -> Vec<Write> {
    let mut writes = Vec::new();
    for writer in writers {
        writes.extend(writer.await.unwrap());
    }
    writes
}

/// Waits (with a deadline) until the writers got `count` 202s in `phase`.
async fn wait_for_accepted(load: &Load, phase: u8, count: usize, deadline: Duration) {
    let started = Instant::now();
    while load.accepted(phase) < count {
        assert!(
            started.elapsed() < deadline,
            "only {} of {count} writes accepted in phase {phase} within {deadline:?}",
            load.accepted(phase)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every stored product: id -> name (straight from MongoDB).
async fn stored(settings: &Settings) -> HashMap<String, String> {
    stored_products(settings)
        .await
        .into_iter()
        .map(|(id, d)| (id, d.get_str("name").unwrap().to_owned()))
        .collect()
}

/// Waits until every id in `ids` is stored and the group has consumed both
/// command topics to their end; returns what is stored then.
async fn wait_until_applied(
    brokers: &str,
    settings: &Settings,
    ids: &HashSet<String>,
    deadline: Duration,
) -> HashMap<String, String> {
    let started = Instant::now();
    loop {
        let products = stored(settings).await;
        let missing = ids.iter().filter(|id| !products.contains_key(*id)).count();
        let mut lag_total = 0;
        if missing == 0 {
            for topic in [&settings.kafka.topics.create, &settings.kafka.topics.update] {
                // A failed measurement (a broker request timed out) counts
                // as not caught up yet.
                lag_total += lag_async(brokers, &settings.kafka.group_id, topic)
                    .await
                    .unwrap_or(1);
            }
            if lag_total == 0 {
                return products;
            }
        }
        assert!(
            started.elapsed() < deadline,
            "after {deadline:?}: {missing} of {} accepted products missing, lag {lag_total}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The node among `alive` that leads most partitions of `topic`.
async fn busiest_leader(brokers: &str, topic: &str, alive: &[i32]) -> i32 {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    let leaders = tokio::task::spawn_blocking(move || partition_leaders(&brokers, &topic))
        .await
        .unwrap();
    let mut led: Vec<(usize, i32)> = alive
        .iter()
        .map(|node| {
            let count = leaders.iter().filter(|(_, l, _)| l == node).count();
            (count, -node)
        })
        .collect();
    led.sort_unstable();
    -led.last().unwrap().1
}

fn summary(writes: &[Write], phase: u8) -> String {
    let of_phase: Vec<&Write> = writes.iter().filter(|w| w.phase == phase).collect();
    let count = |status| of_phase.iter().filter(|w| w.status == status).count();
    let slowest = of_phase.iter().map(|w| w.elapsed).max().unwrap_or_default();
    format!(
        "{} writes: {} x 202, {} x 503, {} other; slowest answer {slowest:?}",
        of_phase.len(),
        count(202),
        count(503),
        of_phase.len() - count(202) - count(503)
    )
}

fn assert_answers(writes: &[Write], allowed: &[u16]) {
    for write in writes {
        assert!(
            allowed.contains(&write.status),
            "{write:?}: expected one of {allowed:?}"
        );
        assert!(
            write.elapsed <= ANSWER_BOUND,
            "{write:?}: answered later than {ANSWER_BOUND:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_broker_down_loses_no_accepted_write_and_two_down_answer_503() {
    let t0 = Instant::now();
    let mut cluster = PrivateKafkaCluster::start(3).await;
    log(t0, "3-node cluster up");
    let mut settings = test_settings();
    settings.kafka.brokers = cluster.brokers();
    settings.kafka.partitions = 3;
    settings.kafka.replication_factor = 3;
    settings.kafka.min_insync_replicas = 2;
    settings.kafka.producer.delivery_timeout_ms = DELIVERY_TIMEOUT_MS;
    // An update may wait for its create through a failover: retry longer.
    settings.kafka.consumer.retry_max_attempts = 60;
    let app = spawn_app_with(settings.clone()).await;

    let outcome = AssertUnwindSafe(broker_loss(t0, &mut cluster, &app, &settings))
        .catch_unwind()
        .await;
    // Stop the service while its brokers run (a failure may have left some
    // killed): closing the consumer blocks until it has left the group, and
    // with no broker that would hang the test instead of failing it.
    cluster.spawn_stopped();
    let stopped = tokio::time::timeout(Duration::from_secs(60), app.stop()).await;
    drop(cluster);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    stopped
        .expect("service stopped in time")
        .expect("service stopped cleanly");
    log(t0, "done");
}

fn log(t0: Instant, what: &str) {
    eprintln!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
}

async fn broker_loss(
    t0: Instant,
    cluster: &mut PrivateKafkaCluster,
    app: &TestApp,
    settings: &Settings,
) {
    let log = |what: &str| log(t0, what);
    let brokers = cluster.brokers();
    let topics = &settings.kafka.topics;
    for topic in [&topics.create, &topics.update, &topics.dead_letter] {
        // Brokers learn of a new topic shortly after the controller made it.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut config = None;
        while config.is_none() && Instant::now() < deadline {
            config = topic_config(&brokers, topic, "min.insync.replicas").await;
            if config.is_none() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        assert_eq!(config, Some(("2".to_owned(), true)), "{topic}");
        let (b, t) = (brokers.clone(), topic.clone());
        let partitions = tokio::task::spawn_blocking(move || partition_leaders(&b, &t))
            .await
            .unwrap();
        assert_eq!(partitions.len(), 3, "{topic}: {partitions:?}");
        assert!(partitions.iter().all(|(_, _, replicas)| *replicas == 3));
    }
    log("service up; topics: 3 partitions, RF 3, min.insync.replicas=2");

    // One broker down in the middle of a stream of writes.
    let load = Arc::new(Load::default());
    let stop = CancellationToken::new();
    let writers = spawn_writers(app, &load, "stream", usize::MAX, &stop);
    wait_for_accepted(&load, ALL_UP, 40, Duration::from_secs(60)).await;
    let first = busiest_leader(&brokers, &topics.create, &[1, 2, 3]).await;
    cluster.kill(first);
    load.phase.store(ONE_DOWN, Ordering::SeqCst);
    log(&format!(
        "SIGKILLed node {first} (led most create partitions)"
    ));
    wait_for_accepted(&load, ONE_DOWN, 60, Duration::from_secs(90)).await;
    stop.cancel();
    let mut writes = join(writers).await;
    log(&format!(
        "sent before the kill: {}",
        summary(&writes, ALL_UP)
    ));
    log(&format!(
        "sent with one down:   {}",
        summary(&writes, ONE_DOWN)
    ));
    assert_answers(&writes, &[202, 503]);
    let accepted_creates = |writes: &[Write]| -> HashSet<String> {
        writes
            .iter()
            .filter(|w| w.kind == Kind::Create && w.status == 202)
            .map(|w| w.id.clone().unwrap())
            .collect()
    };
    let accepted = accepted_creates(&writes);
    wait_until_applied(&brokers, settings, &accepted, Duration::from_secs(90)).await;
    log(&format!(
        "consumer caught up with one broker down: {} accepted creates stored, lag 0",
        accepted.len()
    ));

    // A second broker down: 1 of 3 left, below min.insync.replicas (and the
    // controller quorum has lost its majority). Creates and updates of
    // stored products must be refused.
    let alive: Vec<i32> = cluster.ids().filter(|n| *n != first).collect();
    let second = busiest_leader(&brokers, &topics.create, &alive).await;
    cluster.kill(second);
    load.phase.store(TWO_DOWN, Ordering::SeqCst);
    log(&format!("SIGKILLed node {second}: one node left"));
    let updated: HashSet<&String> = writes
        .iter()
        .filter(|w| w.kind == Kind::Update)
        .filter_map(|w| w.id.as_ref())
        .collect();
    let refused_updates: Vec<String> = accepted
        .iter()
        .filter(|id| !updated.contains(id))
        .take(CLIENTS)
        .cloned()
        .collect();
    let updates = refused_updates.iter().map(|id| {
        let url = app.url(&format!("/api/v1/products/{id}"));
        let name = format!("refused-update-{id}");
        let (http, load) = (app.client.clone(), Arc::clone(&load));
        let id = id.clone();
        async move { send(&http, Method::PUT, url, &name, Some(id), &load).await }
    });
    let never = CancellationToken::new();
    let writers = spawn_writers(app, &load, "refused", 3, &never);
    let mut two_down = futures::future::join_all(updates).await;
    two_down.extend(join(writers).await);
    log(&format!("two down: {}", summary(&two_down, TWO_DOWN)));
    assert_answers(&two_down, &[503]);
    writes.extend(two_down);

    // Both back: writes are accepted again.
    cluster.spawn(first);
    cluster.spawn(second);
    cluster.wait_ready(first).await;
    cluster.wait_ready(second).await;
    load.phase.store(RESTORED, Ordering::SeqCst);
    log("both nodes restarted");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut attempt = 0;
    loop {
        let url = app.url("/api/v1/products");
        let name = format!("restored-probe-{attempt}");
        let write = send(&app.client, Method::POST, url, &name, None, &load).await;
        let ok = write.status == 202;
        writes.push(write);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "no write accepted after restart");
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    log(&format!("first write accepted after {} refused", attempt));
    let writers = spawn_writers(app, &load, "restored", 5, &never);
    writes.extend(join(writers).await);
    log(&format!("restored: {}", summary(&writes, RESTORED)));
    assert_answers(
        &writes
            .iter()
            .filter(|w| w.phase == RESTORED)
            .cloned()
            .collect::<Vec<_>>(),
        &[202, 503],
    );

    // Every accepted write applied exactly once, nothing dead-lettered.
    let accepted = accepted_creates(&writes);
    let products =
        wait_until_applied(&brokers, settings, &accepted, Duration::from_secs(120)).await;
    let dead = {
        let (b, t) = (brokers.clone(), topics.dead_letter.clone());
        tokio::task::spawn_blocking(move || read_all(&b, &t).len())
            .await
            .unwrap()
    };
    assert_eq!(dead, 0, "dead letters");
    let sent: HashMap<&str, &Write> = writes.iter().map(|w| (w.name.as_str(), w)).collect();
    let mut names = HashSet::new();
    for (id, name) in &products {
        assert!(names.insert(name.clone()), "{name} stored twice");
        let write = sent.get(name.as_str());
        assert!(write.is_some(), "{id}: {name} was never sent");
    }
    for write in writes.iter().filter(|w| w.status == 202) {
        let id = write.id.as_ref().unwrap();
        let name = products.get(id);
        assert!(name.is_some(), "accepted {write:?} not stored");
        if write.kind == Kind::Update {
            assert_eq!(
                name,
                Some(&write.name),
                "accepted update not applied: {write:?}"
            );
        }
    }
    // Refused writes applied anyway. A 503 means "not confirmed", not "not
    // written": records still queued in the producer are purged, but one
    // already appended by a partition leader stays in its log. With one
    // broker down that is the window before the dead broker leaves the ISR;
    // with two down the controller quorum is lost, so the surviving leader
    // cannot shrink its ISR (it keeps passing the min.insync.replicas check
    // and appending, but never acknowledges), and once the brokers return the
    // followers catch up and those records are committed and consumed. What
    // must hold: each is applied once, as sent (checked above), and counted.
    let landed = |phase: u8| -> Vec<&Write> {
        writes
            .iter()
            .filter(|w| w.phase == phase && w.status != 202)
            .filter(|w| match w.kind {
                Kind::Create => names.contains(&w.name),
                Kind::Update => products.get(w.id.as_ref().unwrap()) == Some(&w.name),
            })
            .collect()
    };
    let mut landed_creates = 0;
    for phase in [ALL_UP, ONE_DOWN, TWO_DOWN, RESTORED] {
        let refused = writes
            .iter()
            .filter(|w| w.phase == phase && w.status != 202)
            .count();
        let landed = landed(phase);
        landed_creates += landed.iter().filter(|w| w.kind == Kind::Create).count();
        log(&format!(
            "phase {phase}: {} of {refused} refused writes applied anyway",
            landed.len()
        ));
    }
    assert_eq!(products.len(), accepted.len() + landed_creates);
    log(&format!(
        "{} products stored = {} accepted creates + {landed_creates} refused creates applied anyway",
        products.len(),
        accepted.len(),
    ));
}
