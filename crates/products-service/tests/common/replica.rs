//! A replica of the real service binary (`CARGO_BIN_EXE_products-service`)
//! as a separate process, for tests of several replicas in one consumer
//! group: its own ports and log file, SIGTERM / SIGKILL / restart, and its
//! Prometheus metrics (each process has its own, unlike in-process apps).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use products_service::config::{ExposeSecret, Settings};

use super::{eventually, free_port};

pub struct Replica {
    pub index: usize,
    child: Option<Child>,
    pub http: String,
    pub grpc: String,
    metrics: String,
    log: PathBuf,
    /// Settings given as environment variables on top of the common ones.
    env: Vec<(String, String)>,
}

impl Replica {
    /// Starts replica `index` with the database, cache, brokers, group and
    /// topics of `settings`, plus `env` (e.g. `KAFKA_GROUP_INSTANCE_ID`).
    pub fn start(
        index: usize,
        settings: &Settings,
        log_dir: &Path,
        env: Vec<(String, String)>,
    ) -> Self {
        let mut replica = Self {
            index,
            child: None,
            http: format!("127.0.0.1:{}", free_port()),
            grpc: format!("127.0.0.1:{}", free_port()),
            metrics: format!("127.0.0.1:{}", free_port()),
            log: log_dir.join(format!("replica-{index}.log")),
            env,
        };
        replica.spawn(settings);
        replica
    }

    /// Starts the process (again), same ports, same log.
    pub fn spawn(&mut self, settings: &Settings) {
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
            .env("MONGO_URI", settings.mongo.uri.expose_secret())
            .env("MONGO_DB", &settings.mongo.database)
            .env("REDIS_URL", settings.redis.url.expose_secret())
            .env("APP__REDIS__KEY_PREFIX", &settings.redis.key_prefix)
            .env("KAFKA_BROKERS", &kafka.brokers)
            .env("KAFKA_GROUP_ID", &kafka.group_id)
            .env("KAFKA_TOPIC_CREATE", &kafka.topics.create)
            .env("KAFKA_TOPIC_UPDATE", &kafka.topics.update)
            .env("KAFKA_TOPIC_DEAD_LETTER", &kafka.topics.dead_letter)
            .env("APP__KAFKA__PARTITIONS", kafka.partitions.to_string())
            .env("APP__EVENTS__TOPIC", &settings.events.topic)
            .env(
                "APP__EVENTS__PARTITIONS",
                settings.events.partitions.to_string(),
            )
            .env(
                "APP__EVENTS__RELAY__LEASE_MS",
                settings.events.relay.lease_ms.to_string(),
            )
            .env("APP__SHUTDOWN_TIMEOUT_SECS", "8")
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("PRODUCTS_CONFIG")
            .env_remove("KAFKA_GROUP_INSTANCE_ID")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub async fn wait_ready(&self, http: &reqwest::Client) {
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
    pub async fn terminate(&mut self) -> Duration {
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

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The replica's Prometheus exposition.
    pub async fn metrics_text(&self, http: &reqwest::Client) -> String {
        http.get(format!("http://{}/metrics", self.metrics))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The sum of every series of `name` (a counter or gauge), or of
    /// `name_sum` / `name_count` for a histogram.
    pub async fn metric(&self, http: &reqwest::Client, name: &str) -> f64 {
        super::metric_sum(&self.metrics_text(http).await, name)
    }

    /// The replica's `kafka_consumer_rebalances_total`, all events.
    pub async fn rebalances(&self, http: &reqwest::Client) -> u64 {
        self.metric(http, "kafka_consumer_rebalances_total").await as u64
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until no replica's rebalance count moves for `quiet`, within a
/// minute (a group that keeps rebalancing fails the test); the counts.
pub async fn wait_group_settled(
    http: &reqwest::Client,
    replicas: &[&Replica],
    quiet: Duration,
) -> Vec<u64> {
    let started = Instant::now();
    loop {
        let mut counts = Vec::new();
        for replica in replicas {
            counts.push(replica.rebalances(http).await);
        }
        tokio::time::sleep(quiet).await;
        let mut again = Vec::new();
        for replica in replicas {
            again.push(replica.rebalances(http).await);
        }
        if counts == again {
            return again;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the group keeps rebalancing: {counts:?} then {again:?}"
        );
    }
}
