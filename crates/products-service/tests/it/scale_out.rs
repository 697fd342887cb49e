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
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use crate::common::{
    eventually, free_port, kafka::read_all, processes::PrivateKafkaCluster, products::product_body,
    test_settings, unique,
};
use products_service::config::Settings;
use serde_json::Value;

const REPLICAS: usize = 3;
const PRODUCTS: usize = 90;
const UPDATES: usize = 3;

/// One replica: the real binary, its addresses, its log.
struct Replica {
    index: usize,
    child: Option<Child>,
    http: String,
    grpc: String,
    metrics: String,
    log: PathBuf,
}

impl Replica {
    fn start(index: usize, settings: &Settings, log_dir: &std::path::Path) -> Self {
        let mut replica = Self {
            index,
            child: None,
            http: format!("127.0.0.1:{}", free_port()),
            grpc: format!("127.0.0.1:{}", free_port()),
            metrics: format!("127.0.0.1:{}", free_port()),
            log: log_dir.join(format!("replica-{index}.log")),
        };
        replica.spawn(settings);
        replica
    }

    fn spawn(&mut self, settings: &Settings) {
        let kafka = &settings.kafka;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_products-service"))
            .env("HTTP_ADDR", &self.http)
            .env("GRPC_ADDR", &self.grpc)
            .env("METRICS_ADDR", &self.metrics)
            .env("MONGO_URI", &settings.mongo.uri)
            .env("MONGO_DB", &settings.mongo.database)
            .env("REDIS_URL", &settings.redis.url)
            .env("APP__REDIS__KEY_PREFIX", &settings.redis.key_prefix)
            .env("KAFKA_BROKERS", &kafka.brokers)
            .env("KAFKA_GROUP_ID", &kafka.group_id)
            .env("KAFKA_GROUP_INSTANCE_ID", format!("replica-{}", self.index))
            .env("APP__KAFKA__CONSUMER__SESSION_TIMEOUT_MS", "10000")
            .env("KAFKA_TOPIC_CREATE", &kafka.topics.create)
            .env("KAFKA_TOPIC_UPDATE", &kafka.topics.update)
            .env("KAFKA_TOPIC_DEAD_LETTER", &kafka.topics.dead_letter)
            .env("APP__KAFKA__PARTITIONS", "6")
            .env("APP__KAFKA__REPLICATION_FACTOR", "3")
            .env("APP__KAFKA__MIN_INSYNC_REPLICAS", "2")
            .env("APP__KAFKA__PRODUCER__DELIVERY_TIMEOUT_MS", "5000")
            .env("APP__SHUTDOWN_TIMEOUT_SECS", "8")
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("PRODUCTS_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    async fn wait_ready(&self, http: &reqwest::Client) {
        let url = self.url("/ready");
        eventually(Duration::from_secs(90), || async {
            http.get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
    }

    /// SIGTERM, and how long the process took to exit.
    async fn terminate(&mut self) -> Duration {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        loop {
            if let Some(exit) = child.try_wait().unwrap() {
                assert!(
                    exit.success(),
                    "replica {} exited with {exit:?}",
                    self.index
                );
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "replica {} still running 30 s after SIGTERM",
                self.index
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The replica's `kafka_consumer_rebalances_total`, all events.
    async fn rebalances(&self, http: &reqwest::Client) -> u64 {
        let text = http
            .get(format!("http://{}/metrics", self.metrics))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with("kafka_consumer_rebalances_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Statuses of every write, and the worst stall a probe saw.
#[derive(Default)]
struct Tally {
    statuses: Mutex<HashMap<u16, usize>>,
    /// Products whose writes all got their 202: id → last name sent.
    products: Mutex<HashMap<String, String>>,
}

impl Tally {
    fn count(&self, status: u16) {
        *self.statuses.lock().unwrap().entry(status).or_default() += 1;
    }
}

/// The replicas as clients see them: their addresses, which are up, and
/// the tally of answers.
struct Front {
    targets: Vec<String>,
    grpc: Vec<String>,
    live: Vec<AtomicBool>,
    tally: Tally,
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
        let deadline = Instant::now() + Duration::from_secs(60);
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
                        return response.json().await.unwrap();
                    }
                }
                Err(_) => self.tally.count(0),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
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

    let mut replicas: Vec<Replica> = (0..REPLICAS)
        .map(|i| Replica::start(i, &settings, &log_dir))
        .collect();
    for replica in &replicas {
        replica.wait_ready(&http).await;
    }
    let front = Arc::new(Front {
        targets: replicas.iter().map(|r| r.http.clone()).collect(),
        grpc: replicas.iter().map(|r| r.grpc.clone()).collect(),
        live: (0..REPLICAS).map(|_| AtomicBool::new(true)).collect(),
        tally: Tally::default(),
    });
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
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (http, front) = (http.clone(), front.clone());
            tokio::spawn(async move {
                let turn = AtomicUsize::new(w);
                for p in (w..PRODUCTS).step_by(3) {
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
    let settled = Instant::now();
    loop {
        let mut counts = Vec::new();
        for replica in &replicas {
            counts.push(replica.rebalances(&http).await);
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
        let mut again = Vec::new();
        for replica in &replicas {
            again.push(replica.rebalances(&http).await);
        }
        if counts == again {
            break;
        }
        assert!(
            settled.elapsed() < Duration::from_secs(60),
            "the group keeps rebalancing: {counts:?} then {again:?}"
        );
    }
    let mut stop_times = Vec::new();
    let mut rebalancing_restarts = Vec::new();
    for i in 0..REPLICAS {
        let others: Vec<usize> = (0..REPLICAS).filter(|&o| o != i).collect();
        let mut before = Vec::new();
        for &o in &others {
            before.push(replicas[o].rebalances(&http).await);
        }
        front.live[i].store(false, Ordering::SeqCst);
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
    // without a rebalance. The one exception is the group leader: the broker
    // rebalances when the leader rejoins (it computes the assignment), so at
    // most one of the three restarts may move partitions. Without static
    // membership every restart does (leave, then join).
    eprintln!("scale-out: restarts that rebalanced the others: {rebalancing_restarts:?}");
    assert!(
        rebalancing_restarts.len() <= 1,
        "restarts {rebalancing_restarts:?} rebalanced the other replicas"
    );
    for (i, took) in stop_times.iter().enumerate() {
        assert!(
            *took < Duration::from_secs(10),
            "replica {i} took {took:?} to stop"
        );
    }

    // SIGKILL a replica and a broker; the replica comes back after its
    // session expired (its partitions moved in between).
    front.live[2].store(false, Ordering::SeqCst);
    replicas[2].kill();
    cluster.kill(3);
    tokio::time::sleep(Duration::from_secs(12)).await;
    replicas[2].spawn(&settings);
    replicas[2].wait_ready(&http).await;
    front.live[2].store(true, Ordering::SeqCst);

    for writer in writers {
        writer.await.unwrap();
    }
    cluster.restart(3).await;

    // Every product holds its last update; nothing dead-lettered.
    let expected = front.tally.products.lock().unwrap().clone();
    assert_eq!(expected.len(), PRODUCTS);
    eventually(Duration::from_secs(120), || async {
        let mut all = true;
        for (id, name) in &expected {
            let read = http
                .get(replicas[0].url(&format!("/api/v1/products/{id}")))
                .send()
                .await;
            all &= match read {
                Ok(response) if response.status() == 200 => {
                    response.json::<Value>().await.unwrap()["name"] == name.as_str()
                }
                _ => false,
            };
            if !all {
                break;
            }
        }
        all
    })
    .await;
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
    let _ = std::fs::remove_dir_all(&log_dir);
}
