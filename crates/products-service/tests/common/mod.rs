//! Test helpers: `spawn_app` boots the real service in-process on random
//! ports against the local stack (`make stack-up`), with its own MongoDB
//! database and Redis key prefix so tests run in parallel without sharing data.
#![allow(dead_code)] // Each test binary uses a different subset.

pub mod events;
pub mod grpc;
pub mod kafka;
pub mod mongo;
pub mod processes;
pub mod products;
pub mod replica;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Once,
    time::{Duration, Instant},
};

use mongodb::bson::oid::ObjectId;
use products_service::{config::Settings, server::Application};
use tokio_util::sync::CancellationToken;

pub const KAFKA: &str = "127.0.0.1:9092";
pub const MONGO_URI: &str = "mongodb://127.0.0.1:27017";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const PROMETHEUS: &str = "http://127.0.0.1:9090";
pub const JAEGER_QUERY: &str = "http://127.0.0.1:16686";

pub struct TestApp {
    pub http: String,
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub settings: Settings,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.http, path)
    }

    /// `GET path`, answered with a JSON body.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The service's current metrics, in Prometheus text format.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics_addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// Stops the service gracefully and reports how `run_until_stopped` ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.server.take() {
            Some(handle) => handle.await?,
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A loopback port nobody listens on right now (for child processes that
/// need a fixed address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where the stack scripts cache their downloads and builds.
pub fn stack_cache() -> PathBuf {
    std::env::var("PRODUCTS_STACK_CACHE").map_or_else(
        |_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/products-stack"),
        PathBuf::from,
    )
}

/// The repository's root (for tests that read its files).
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// A file's text; the test fails naming the file when it cannot be read.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

/// Every panel of a Grafana dashboard, including those nested in (collapsed)
/// rows, in document order.
pub fn all_panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&serde_json::Value> = dashboard
        .get("panels")
        .and_then(serde_json::Value::as_array)
        .map(|p| p.iter().rev().collect())
        .unwrap_or_default();
    while let Some(panel) = stack.pop() {
        if let Some(nested) = panel.get("panels").and_then(serde_json::Value::as_array) {
            stack.extend(nested.iter().rev());
        }
        out.push(panel);
    }
    out
}

/// Sends `request` and returns the answer's status.
pub async fn status_of(request: reqwest::RequestBuilder) -> reqwest::StatusCode {
    request.send().await.unwrap().status()
}

/// The sum of every series of `name` in a Prometheus exposition (`name` may
/// carry labels: `x_total{outcome="invalid"}`); for a histogram, pass
/// `name_sum` or `name_count`.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A name no other test uses (for databases, topics, key prefixes).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", ObjectId::new().to_hex())
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("TEST_LOG")
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
    });
}

/// Settings for a test instance: random loopback ports, a private database
/// and cache namespace, the local stack's addresses.
pub fn test_settings() -> Settings {
    let mut settings = Settings::load_from(None, Vec::new()).expect("default settings load");
    let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
    settings.http.addr = any_port;
    settings.grpc.addr = any_port;
    settings.metrics.addr = any_port;
    settings.mongo.uri = MONGO_URI.into();
    settings.mongo.database = unique("test");
    settings.redis.url = REDIS_URL.into();
    settings.redis.key_prefix = format!("{}:", unique("test"));
    settings.idempotency.key_prefix = format!("{}:", unique("idem"));
    settings.kafka.brokers = KAFKA.to_owned();
    let run = unique("test");
    settings.kafka.group_id = format!("{run}_group");
    settings.kafka.topics.create = format!("{run}_create-product");
    settings.kafka.topics.update = format!("{run}_update-product");
    settings.kafka.topics.dead_letter = format!("{run}_dead-letter-queue");
    // Tests create their own topics on the one local broker, run after run:
    // 3 partitions each keep it light (the default, 12, is for scaling out;
    // scale_out.rs and the rebalance tests use more).
    settings.kafka.partitions = 3;
    settings.events.topic = format!("{run}_product-events");
    settings.events.partitions = 3;
    // A killed replica's events are swept soon after.
    settings.events.relay.lease_ms = 2000;
    // Fast retries keep failure tests short; the budget still spans seconds.
    settings.kafka.consumer.retry_initial_backoff_ms = 50;
    settings.kafka.consumer.retry_max_backoff_ms = 1000;
    settings.shutdown_timeout_secs = 5;
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_settings()).await
}

pub async fn spawn_app_with(settings: Settings) -> TestApp {
    spawn_app_with_client(settings, reqwest::Client::builder()).await
}

/// As [`spawn_app_with`], with the test's HTTP client built from `client`
/// (e.g. trusting a test CA when `settings.http.tls` is on: the base URL is
/// then `https://`).
pub async fn spawn_app_with_client(settings: Settings, client: reqwest::ClientBuilder) -> TestApp {
    init_logs();
    let app = Application::build(settings.clone())
        .await
        .expect("application builds");
    let scheme = if settings.http.tls.enabled {
        "https"
    } else {
        "http"
    };
    let http = format!("{scheme}://{}", app.http_addr());
    let grpc_addr = app.grpc_addr();
    let metrics_addr = app.metrics_addr();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let test_app = TestApp {
        http,
        grpc_addr,
        metrics_addr,
        settings,
        client: client.timeout(Duration::from_secs(30)).build().unwrap(),
        shutdown,
        server: Some(server),
    };
    eventually(Duration::from_secs(10), || async {
        test_app
            .client
            .get(test_app.url("/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    test_app
}

/// Polls `condition` until it holds, failing the test after `deadline`.
pub async fn eventually<F, Fut>(deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if condition().await {
            return;
        }
        assert!(
            started.elapsed() < deadline,
            "condition not met within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
