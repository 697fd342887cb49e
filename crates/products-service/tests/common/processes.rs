//! Private instances of stack components for tests that stop a dependency on
//! purpose: each test gets its own Redis or FerretDB process on a free
//! loopback port, so stopping it disturbs no other test.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{eventually, free_port, stack_cache};

fn stop(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A throwaway `redis-server` (Debian package, installed by the stack scripts).
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (make stack-up installs it)");
        let redis = Self {
            port,
            child: Some(child),
        };
        let url = redis.url();
        eventually(Duration::from_secs(10), || async {
            let Ok(client) = redis::Client::open(url.as_str()) else {
                return false;
            };
            match client.get_multiplexed_async_connection().await {
                Ok(mut conn) => redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok(),
                Err(_) => false,
            }
        })
        .await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        stop(&mut self.child);
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A throwaway FerretDB (SQLite backend) that can be stopped and restarted
/// on the same port and data directory.
pub struct PrivateFerretDb {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

pub fn ferretdb_binary() -> PathBuf {
    if let Ok(path) = std::env::var("FERRETDB_BIN") {
        return path.into();
    }
    let cache = std::env::var("PRODUCTS_STACK_CACHE").map_or_else(
        |_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/products-stack"),
        PathBuf::from,
    );
    cache.join("ferretdb-1.24.2/ferretdb")
}

impl PrivateFerretDb {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(super::unique("ferretdb"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut db = Self {
            port: free_port(),
            dir,
            child: None,
        };
        db.restart().await;
        db
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and data, waiting until it answers.
    pub async fn restart(&mut self) {
        let binary = ferretdb_binary();
        let child = Command::new(&binary)
            .arg("--handler=sqlite")
            .arg(format!("--sqlite-url=file:{}/", self.dir.display()))
            .arg(format!("--listen-addr=127.0.0.1:{}", self.port))
            .arg("--debug-addr=-")
            .arg(format!("--state-dir={}/state", self.dir.display()))
            .arg("--telemetry=disable")
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {}: {e} (run make stack-up)", binary.display())
            });
        self.child = Some(child);
        let uri = self.uri();
        eventually(Duration::from_secs(20), || async {
            let Ok(client) = mongodb::Client::with_uri_str(&uri).await else {
                return false;
            };
            client
                .database("admin")
                .run_command(mongodb::bson::doc! { "ping": 1 })
                .await
                .is_ok()
        })
        .await;
    }

    pub fn stop(&mut self) {
        stop(&mut self.child);
    }
}

impl Drop for PrivateFerretDb {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The Kafka jars the stack scripts fetched (`$KAFKA_LIBS`, or the newest
/// `kafka-*/libs` in the stack cache).
fn kafka_libs() -> PathBuf {
    if let Ok(path) = std::env::var("KAFKA_LIBS") {
        return path.into();
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(stack_cache())
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("kafka-"))
                        && p.join("libs").is_dir()
                })
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    candidates
        .pop()
        .map(|p| p.join("libs"))
        .expect("Kafka jars in the stack cache (run make stack-up)")
}

/// A throwaway single-node Apache Kafka (KRaft) that can be killed and
/// restarted with its data, for broker-loss tests.
pub struct PrivateKafka {
    pub port: u16,
    /// The SASL_PLAINTEXT (SCRAM-SHA-512) listener of [`PrivateKafka::start_with_scram`].
    pub sasl_port: Option<u16>,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateKafka {
    pub async fn start() -> Self {
        Self::start_with_scram(None).await
    }

    /// As [`PrivateKafka::start`], plus (with `Some((user, password))`) a
    /// SASL_PLAINTEXT listener on `sasl_port` accepting SCRAM-SHA-512 for
    /// that user, whose credential is written at format time.
    pub async fn start_with_scram(user: Option<(&str, &str)>) -> Self {
        let dir = std::env::temp_dir().join(super::unique("kafka"));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let port = free_port();
        let controller = free_port();
        let sasl_port = user.map(|_| free_port());
        let (sasl_listener, sasl_config) = match sasl_port {
            Some(sasl) => (
                format!(",SASL_PLAINTEXT://127.0.0.1:{sasl}"),
                "sasl.enabled.mechanisms=SCRAM-SHA-512\n\
                 listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=\
                 org.apache.kafka.common.security.scram.ScramLoginModule required;\n",
            ),
            None => (String::new(), ""),
        };
        let properties = format!(
            "process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}{sasl_listener}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}{sasl_listener}\n\
             controller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,\
             SASL_PLAINTEXT:SASL_PLAINTEXT\n\
             inter.broker.listener.name=PLAINTEXT\n\
             {sasl_config}\
             log.dirs={}\n\
             num.partitions=3\n\
             offsets.topic.replication.factor=1\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("server.properties"), properties).unwrap();
        // Each private broker has its own data directory, so one fixed
        // (valid: 16 bytes, base64url) cluster id serves them all.
        let cluster_id = "MkU3OEVBNTcwNTJENDM2Qk";
        let mut format = Command::new("java");
        format
            .arg("-cp")
            .arg(format!("{}/*", kafka_libs().display()))
            .args(["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c"])
            .arg(dir.join("server.properties"));
        if let Some((name, password)) = user {
            format
                .arg("--add-scram")
                .arg(format!("SCRAM-SHA-512=[name={name},password={password}]"));
        }
        let status = format
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("java on PATH");
        assert!(status.success(), "formatting Kafka storage failed");
        let mut kafka = Self {
            port,
            sasl_port,
            dir,
            child: None,
        };
        kafka.restart().await;
        kafka
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The SASL_PLAINTEXT listener's address (`start_with_scram` only).
    pub fn sasl_brokers(&self) -> String {
        format!(
            "127.0.0.1:{}",
            self.sasl_port.expect("started with start_with_scram")
        )
    }

    /// Starts (again) with the same data, waiting until it serves metadata.
    pub async fn restart(&mut self) {
        let child = Command::new("java")
            .args(["-Xmx384m", "-XX:+UseSerialGC", "-cp"])
            .arg(format!("{}/*", kafka_libs().display()))
            .arg(format!("-Djava.io.tmpdir={}", self.dir.display()))
            .arg("kafka.Kafka")
            .arg(self.dir.join("server.properties"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("java on PATH");
        self.child = Some(child);
        let brokers = self.brokers();
        eventually(Duration::from_secs(60), || async {
            let brokers = brokers.clone();
            tokio::task::spawn_blocking(move || {
                let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", &brokers)
                    .create()
                    .unwrap();
                use rdkafka::consumer::Consumer;
                consumer
                    .fetch_metadata(None, Duration::from_secs(1))
                    .is_ok_and(|m| !m.brokers().is_empty())
            })
            .await
            .unwrap_or(false)
        })
        .await;
    }

    /// SIGKILL: the broker vanishes without a goodbye.
    pub fn kill(&mut self) {
        stop(&mut self.child);
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
