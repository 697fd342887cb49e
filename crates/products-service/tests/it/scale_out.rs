//! Several replicas in one consumer group, as users run them: a private
//! 3-broker KRaft cluster (topics with replication factor 3, min ISR 2, 6
//! partitions) and 3 replicas of the real binary with static membership.
//! A steady stream of REST writes goes through all replicas — each product
//! created, then updated 3 times in sequence — while the replicas are
//! restarted one by one (SIGTERM, then back under the same instance id), and
//! then one replica and one broker are SIGKILLed. At the end every product
//! holds its last update, nothing was dead-lettered, every 202 is readable,
//! no request got a 5xx but the documented 503 (write not confirmed), the
//! rolling restart rebalanced none of the other replicas, and reads (REST and
//! gRPC) on the live replicas never stalled for a second.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use crate::common::{
    kafka::read_all,
    processes::{describe_group, PrivateKafkaCluster},
    products::product_body,
    replica::{wait_group_settled, Replica},
    test_settings, unique,
};
use serde_json::Value;

const REPLICAS: usize = 3;
/// Products written at least (the writers go on until the scenario ends).
const PRODUCTS: usize = 90;
const UPDATES: usize = 3;

/// Statuses of every write, and the worst stall a probe saw.
#[derive(Default)]
struct Tally {
    statuses: Mutex<HashMap<u16, usize>>,
    /// Each write's time to its 202 (retries included), by phase.
    latencies: Mutex<HashMap<Phase, Vec<Duration>>>,
    /// Products whose writes all got their 202: id → last name sent.
    products: Mutex<HashMap<String, String>>,
}

impl Tally {
    fn count(&self, status: u16) {
        *self.statuses.lock().unwrap().entry(status).or_default() += 1;
    }

    /// p50 and p99 of the writes of `phase`, and how many there were.
    fn percentiles(&self, phase: Phase) -> (Duration, Duration, usize) {
        let mut all = self
            .latencies
            .lock()
            .unwrap()
            .get(&phase)
            .cloned()
            .unwrap_or_default();
        all.sort();
        let at = |q: f64| {
            all.get(((all.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        (at(0.50), at(0.99), all.len())
    }
}

/// What the cluster is going through while a write is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Phase {
    Steady,
    RollingRestart,
    Kill,
}

/// The replicas as clients see them: their addresses, which are up, and
/// the tally of answers.
struct Front {
    targets: Vec<String>,
    grpc: Vec<String>,
    live: Vec<AtomicBool>,
    tally: Tally,
    phase: Mutex<Phase>,
}

impl Front {
    /// Sends a write to the live replicas in turn until one answers 202; a
    /// 503 (not confirmed) or no answer (the replica is restarting) is
    /// retried with the same content, which is harmless: the same update
    /// again (a create gets a new id, and the earlier one, if it was written
    /// after all, is an extra product nobody checks).
    async fn write(
        &self,
        http: &reqwest::Client,
        turn: &AtomicUsize,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> Value {
        let started = Instant::now();
        let phase = *self.phase.lock().unwrap();
        let deadline = started + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "{method} {path} never accepted");
            let i = turn.fetch_add(1, Ordering::SeqCst) % self.targets.len();
            if !self.live[i].load(Ordering::SeqCst) {
                continue;
            }
            let sent = http
                .request(method.clone(), format!("http://{}{path}", self.targets[i]))
                .json(body)
                .send()
                .await;
            match sent {
                Ok(response) => {
                    let status = response.status().as_u16();
                    self.tally.count(status);
                    if status == 202 {
                        let took = started.elapsed();
                        (self.tally.latencies.lock().unwrap())
                            .entry(phase)
                            .or_default()
                            .push(took);
                        return response.json().await.unwrap();
                    }
                }
                Err(_) => self.tally.count(0),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A replica's consumer-group metrics (one process lifetime, or summed).
#[derive(Default)]
struct GroupStats {
    events: f64,
    revoked: f64,
    pause_sum: f64,
    pause_count: f64,
    hook_sum: f64,
    hook_count: f64,
}

impl GroupStats {
    async fn of(replica: &Replica, http: &reqwest::Client) -> Self {
        let metric = |name: &'static str| replica.metric(http, name);
        Self {
            events: metric("kafka_consumer_rebalances_total").await,
            revoked: metric("kafka_consumer_revoked_partitions_total").await,
            pause_sum: metric("kafka_consumer_rebalance_duration_seconds_sum").await,
            pause_count: metric("kafka_consumer_rebalance_duration_seconds_count").await,
            hook_sum: metric("kafka_consumer_revocation_duration_seconds_sum").await,
            hook_count: metric("kafka_consumer_revocation_duration_seconds_count").await,
        }
    }

    fn add(&mut self, other: &Self) {
        self.events += other.events;
        self.revoked += other.revoked;
        self.pause_sum += other.pause_sum;
        self.pause_count += other.pause_count;
        self.hook_sum += other.hook_sum;
        self.hook_count += other.hook_count;
    }
}

/// Waits until the replicas own every partition of both command topics
/// between them (a minute at most), printing the group as the brokers see
/// it if they do not.
async fn wait_every_partition_owned(
    http: &reqwest::Client,
    replicas: &[Replica],
    settings: &products_service::config::Settings,
    log_dir: &std::path::Path,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut owned = Vec::new();
        for replica in replicas {
            owned.push(
                replica
                    .metric(http, "kafka_consumer_assigned_partitions")
                    .await,
            );
        }
        if owned.iter().sum::<f64>() == 2.0 * f64::from(settings.kafka.partitions) {
            return;
        }
        if Instant::now() > deadline {
            let described = group_as_brokers_see_it(settings).await;
            panic!(
                "partitions owned by the replicas: {owned:?}; the group:\n{described}\nlogs in {}",
                log_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The consumer group as the brokers see it, for a failing check to print.
async fn group_as_brokers_see_it(settings: &products_service::config::Settings) -> String {
    let (brokers, group) = (
        settings.kafka.brokers.clone(),
        settings.kafka.group_id.clone(),
    );
    tokio::task::spawn_blocking(move || describe_group(&brokers, &group))
        .await
        .unwrap()
}

/// One gRPC `GetByID` on a fresh connection, bounded by 5 s.
async fn grpc_read(addr: &str, id: &str) -> Result<(), String> {
    use products_service::api::grpc::pb::{
        products_service_client::ProductsServiceClient, GetByIdReq,
    };
    let call = async {
        let mut client = ProductsServiceClient::connect(format!("http://{addr}"))
            .await
            .map_err(|e| e.to_string())?;
        client
            .get_by_id(GetByIdReq {
                product_id: id.to_owned(),
            })
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .map_err(|_| "timed out".to_owned())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_restarted_and_killed_under_writes_lose_and_reorder_nothing() {
    let mut cluster = PrivateKafkaCluster::start(3).await;
    let mut settings = test_settings();
    settings.kafka.brokers = cluster.brokers();
    let log_dir = std::env::temp_dir().join(unique("scale-out"));
    std::fs::create_dir_all(&log_dir).unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    settings.kafka.partitions = 6;
    // The defaults: cooperative rebalancing and static membership. For the
    // comparison in BENCHMARKS.md the test also runs with
    // SCALE_OUT_STRATEGY=range,roundrobin (eager) and/or SCALE_OUT_STATIC=0.
    let strategy = std::env::var("SCALE_OUT_STRATEGY").ok();
    let static_membership = std::env::var("SCALE_OUT_STATIC").map_or(true, |v| v != "0");
    let cluster_env = |i: usize| {
        let mut env: Vec<(String, String)> = [
            (
                "APP__KAFKA__CONSUMER__SESSION_TIMEOUT_MS",
                "10000".to_owned(),
            ),
            ("APP__KAFKA__REPLICATION_FACTOR", "3".into()),
            ("APP__KAFKA__MIN_INSYNC_REPLICAS", "2".into()),
            ("APP__KAFKA__PRODUCER__DELIVERY_TIMEOUT_MS", "5000".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if static_membership {
            env.push(("KAFKA_GROUP_INSTANCE_ID".into(), format!("replica-{i}")));
        }
        if let Some(strategy) = &strategy {
            env.push((
                "APP__KAFKA__CONSUMER__ASSIGNMENT_STRATEGY".into(),
                strategy.clone(),
            ));
        }
        env
    };
    let mut replicas: Vec<Replica> = (0..REPLICAS)
        .map(|i| Replica::start(i, &settings, &log_dir, cluster_env(i)))
        .collect();
    for replica in &replicas {
        replica.wait_ready(&http).await;
    }
    let front = Arc::new(Front {
        targets: replicas.iter().map(|r| r.http.clone()).collect(),
        grpc: replicas.iter().map(|r| r.grpc.clone()).collect(),
        live: (0..REPLICAS).map(|_| AtomicBool::new(true)).collect(),
        tally: Tally::default(),
        phase: Mutex::new(Phase::Steady),
    });
    let stop_writing = tokio_util::sync::CancellationToken::new();
    let done = tokio_util::sync::CancellationToken::new();

    // Probes: a read on each live replica every 100 ms; the worst latency.
    let probe_product = {
        let body = product_body("Probe lamp");
        let turn = AtomicUsize::new(0);
        let created = front
            .write(
                &http,
                &turn,
                reqwest::Method::POST,
                "/api/v1/products",
                &body,
            )
            .await;
        created["productId"].as_str().unwrap().to_owned()
    };
    let worst_probe = Arc::new(Mutex::new(Duration::ZERO));
    let probes = {
        let (http, front, done, worst) = (
            http.clone(),
            front.clone(),
            done.clone(),
            worst_probe.clone(),
        );
        tokio::spawn(async move {
            while !done.is_cancelled() {
                for (i, target) in front.targets.iter().enumerate() {
                    if !front.live[i].load(Ordering::SeqCst) {
                        continue;
                    }
                    let started = Instant::now();
                    let _ = http
                        .get(format!("http://{target}/api/v1/products/{probe_product}"))
                        .send()
                        .await;
                    let rest = started.elapsed();
                    let started = Instant::now();
                    let _ = grpc_read(&front.grpc[i], &probe_product).await;
                    let grpc = started.elapsed();
                    // A replica being stopped may refuse: only replicas that
                    // stayed live count, and a failed read counts as a stall.
                    if front.live[i].load(Ordering::SeqCst) {
                        let mut worst = worst.lock().unwrap();
                        *worst = (*worst).max(rest).max(grpc);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Writers: each product created, then updated UPDATES times, in order
    // (each write waits for its 202, so the log holds them in this order).
    // They go on until the scenario is over, so every phase has writes.
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (http, front, stop) = (http.clone(), front.clone(), stop_writing.clone());
            tokio::spawn(async move {
                let turn = AtomicUsize::new(w);
                for p in (w..).step_by(3) {
                    if stop.is_cancelled() && p >= PRODUCTS {
                        break;
                    }
                    let body = product_body(&format!("Scale {p} v0"));
                    let created = front
                        .write(
                            &http,
                            &turn,
                            reqwest::Method::POST,
                            "/api/v1/products",
                            &body,
                        )
                        .await;
                    let id = created["productId"].as_str().unwrap().to_owned();
                    let path = format!("/api/v1/products/{id}");
                    let mut last = String::new();
                    for u in 1..=UPDATES {
                        last = format!("Scale {p} v{u}");
                        let body = product_body(&last);
                        front
                            .write(&http, &turn, reqwest::Method::PUT, &path, &body)
                            .await;
                    }
                    front.tally.products.lock().unwrap().insert(id, last);
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
            })
        })
        .collect();

    // Rolling restart with static membership: no rebalance elsewhere. First
    // the group settles (joins, and the topics' partitions appearing after the
    // first replica created them, rebalance it): no new rebalance for 4 s.
    wait_group_settled(
        &http,
        &replicas.iter().collect::<Vec<_>>(),
        Duration::from_secs(4),
    )
    .await;
    let mut stop_times = Vec::new();
    let mut rebalancing_restarts = Vec::new();
    // Each replica's consumer-group figures, summed over its restarts.
    let mut lifetimes: Vec<GroupStats> = (0..REPLICAS).map(|_| GroupStats::default()).collect();
    *front.phase.lock().unwrap() = Phase::RollingRestart;
    for i in 0..REPLICAS {
        let others: Vec<usize> = (0..REPLICAS).filter(|&o| o != i).collect();
        let mut before = Vec::new();
        for &o in &others {
            before.push(replicas[o].rebalances(&http).await);
        }
        front.live[i].store(false, Ordering::SeqCst);
        lifetimes[i].add(&GroupStats::of(&replicas[i], &http).await);
        stop_times.push(replicas[i].terminate().await);
        replicas[i].spawn(&settings);
        replicas[i].wait_ready(&http).await;
        front.live[i].store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut after = Vec::new();
        for &o in &others {
            after.push(replicas[o].rebalances(&http).await);
        }
        if after != before {
            rebalancing_restarts.push(i);
        }
    }
    // A static member that comes back under its id gets its partitions back
    // without a rebalance. With eager rebalancing the group leader is the
    // exception (the broker rebalances when the leader rejoins, seen in 2 of
    // ~7 runs); with cooperative rebalancing nothing moves at all. Without
    // static membership every restart rebalances (leave, then join).
    eprintln!("scale-out: restarts that rebalanced the others: {rebalancing_restarts:?}");
    if static_membership && strategy.is_none() {
        assert!(
            rebalancing_restarts.is_empty(),
            "restarts {rebalancing_restarts:?} rebalanced the other replicas"
        );
    }
    for (i, took) in stop_times.iter().enumerate() {
        assert!(
            *took < Duration::from_secs(10),
            "replica {i} took {took:?} to stop"
        );
    }

    // SIGKILL a replica and a broker; the replica comes back after its
    // session expired (its partitions moved in between).
    *front.phase.lock().unwrap() = Phase::Kill;
    front.live[2].store(false, Ordering::SeqCst);
    lifetimes[2].add(&GroupStats::of(&replicas[2], &http).await);
    replicas[2].kill();
    cluster.kill(3);
    tokio::time::sleep(Duration::from_secs(12)).await;
    replicas[2].spawn(&settings);
    replicas[2].wait_ready(&http).await;
    front.live[2].store(true, Ordering::SeqCst);

    // Every partition has a live owner again (the killed replica's session
    // has expired by now, or it came back under its static id).
    wait_every_partition_owned(&http, &replicas, &settings, &log_dir).await;

    stop_writing.cancel();
    for writer in writers {
        writer.await.unwrap();
    }
    cluster.restart(3).await;

    // Every product holds its last update; nothing dead-lettered.
    let expected = front.tally.products.lock().unwrap().clone();
    assert!(expected.len() >= PRODUCTS, "{} products", expected.len());
    let converging = Instant::now();
    loop {
        let mut behind = Vec::new();
        for (id, name) in &expected {
            let read = http
                .get(replicas[0].url(&format!("/api/v1/products/{id}")))
                .send()
                .await;
            let current = match read {
                Ok(response) if response.status() == 200 => {
                    response.json::<Value>().await.unwrap()["name"] == name.as_str()
                }
                _ => false,
            };
            if !current {
                behind.push((id.clone(), name.clone()));
            }
        }
        if behind.is_empty() {
            break;
        }
        if converging.elapsed() > Duration::from_secs(120) {
            // What the consumers say, to tell a stuck partition from a lost write.
            for replica in &replicas {
                let text = replica.metrics_text(&http).await;
                let lines: Vec<&str> = text
                    .lines()
                    .filter(|l| {
                        l.starts_with("kafka_consumer_lag")
                            || l.starts_with("kafka_consumer_assigned_partitions")
                            || l.starts_with("kafka_consumer_waiting_updates")
                            || l.starts_with("kafka_consumed_messages_total")
                    })
                    .collect();
                eprintln!("replica {}: {lines:#?}", replica.index);
            }
            let described = group_as_brokers_see_it(&settings).await;
            eprintln!("{described}");
            // The product's update records in log order, and what is stored.
            let (brokers, topic) = (
                settings.kafka.brokers.clone(),
                settings.kafka.topics.update.clone(),
            );
            let updates = tokio::task::spawn_blocking(move || read_all(&brokers, &topic))
                .await
                .unwrap();
            for (id, _) in behind.iter().take(3) {
                use rdkafka::Message;
                for m in updates.iter().filter(|m| m.key() == Some(id.as_bytes())) {
                    let body: Value =
                        serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or_default();
                    eprintln!(
                        "{id}: update record p{} o{} {} {:?}",
                        m.partition(),
                        m.offset(),
                        body["name"],
                        m.timestamp()
                    );
                }
                let stored = crate::common::mongo::stored_document(&settings, id).await;
                eprintln!("{id}: stored {stored:?}");
            }
            for (id, name) in behind.iter().take(3) {
                let read = http
                    .get(replicas[0].url(&format!("/api/v1/products/{id}")))
                    .send()
                    .await
                    .unwrap();
                eprintln!(
                    "{id}: expected {name:?}, read {} {}",
                    read.status(),
                    read.text().await.unwrap()
                );
            }
            panic!(
                "{} of {} products lack their last update after 120 s (logs in {})",
                behind.len(),
                expected.len(),
                log_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // And still after the broker's return.
    wait_every_partition_owned(&http, &replicas, &settings, &log_dir).await;
    done.cancel();
    probes.await.unwrap();
    let dead_letter_topic = settings.kafka.topics.dead_letter.clone();
    let brokers = settings.kafka.brokers.clone();
    let letters = tokio::task::spawn_blocking(move || read_all(&brokers, &dead_letter_topic))
        .await
        .unwrap();
    assert!(letters.is_empty(), "{} dead letters", letters.len());

    let statuses = front.tally.statuses.lock().unwrap().clone();
    let server_errors: usize = statuses
        .iter()
        .filter(|(status, _)| **status >= 500 && **status != 503)
        .map(|(_, n)| n)
        .sum();
    eprintln!(
        "scale-out: statuses {statuses:?} (0 = no answer: replica restarting), stop times {stop_times:?}, worst probe {:?}",
        *worst_probe.lock().unwrap()
    );
    assert_eq!(server_errors, 0, "{statuses:?}");
    let worst = *worst_probe.lock().unwrap();
    assert!(worst < Duration::from_secs(1), "a read stalled {worst:?}");

    // The figures BENCHMARKS.md reports ("Scaling out").
    let mut report = format!(
        "scale-out report: strategy {}, static membership {static_membership}, {} products",
        strategy
            .as_deref()
            .unwrap_or("default (cooperative-sticky)"),
        expected.len()
    );
    for phase in [Phase::Steady, Phase::RollingRestart, Phase::Kill] {
        let (p50, p99, n) = front.tally.percentiles(phase);
        report += &format!("\n  writes during {phase:?}: {n}, p50 {p50:?}, p99 {p99:?}");
    }
    for (replica, lived) in replicas.iter().zip(&mut lifetimes) {
        lived.add(&GroupStats::of(replica, &http).await);
        report += &format!(
            "\n  replica {}: rebalance events {}, partitions revoked {}, revocation to assignment {:.0} ms mean over {}, hook {:.1} ms mean over {}, partitions owned at the end {}",
            replica.index,
            lived.events,
            lived.revoked,
            1000.0 * lived.pause_sum / lived.pause_count.max(1.0),
            lived.pause_count,
            1000.0 * lived.hook_sum / lived.hook_count.max(1.0),
            lived.hook_count,
            replica.metric(&http, "kafka_consumer_assigned_partitions").await,
        );
    }
    eprintln!("{report}");
    let _ = std::fs::remove_dir_all(&log_dir);
}
