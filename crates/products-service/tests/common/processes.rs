//! Private instances of stack components for tests that stop a dependency on
//! purpose: each test gets its own Redis, FerretDB or Kafka (one broker or a
//! KRaft cluster) on free loopback ports, so stopping it disturbs no other
//! test.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, OnceLock},
    time::Duration,
};

use tokio::sync::{Mutex, OwnedMutexGuard};

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
    stack_cache().join("ferretdb-1.24.2/ferretdb")
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

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: connections stay
    /// open but nothing is answered, like a hung or partitioned database.
    pub fn freeze(&self, frozen: bool) {
        let Some(child) = &self.child else { return };
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
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
pub fn kafka_libs() -> PathBuf {
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

/// What the brokers say about a consumer group: its members, their
/// partitions, committed offsets and lag (Kafka's own
/// `kafka-consumer-groups --describe`), for a failing test to print.
pub fn describe_group(brokers: &str, group: &str) -> String {
    let run = |what: &str| {
        Command::new("java")
            .arg("-cp")
            .arg(format!("{}/*", kafka_libs().display()))
            .arg("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand")
            .args([
                "--bootstrap-server",
                brokers,
                "--describe",
                "--group",
                group,
                what,
            ])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr)
            })
            .unwrap_or_else(|e| format!("cannot run java: {e}"))
    };
    run("--offsets") + &run("--members")
}

/// One combined broker + controller of a [`PrivateKafkaCluster`].
struct KafkaNode {
    port: u16,
    controller_port: u16,
    /// The SASL_PLAINTEXT (SCRAM-SHA-512) listener, when the cluster has one.
    sasl_port: Option<u16>,
    child: Option<Child>,
}

/// A throwaway Apache Kafka (KRaft) cluster of combined broker + controller
/// nodes (ids 1..=n, all voters of the controller quorum) on free loopback
/// ports, each node killable and restartable with its data, for broker-loss
/// tests. With 3 or more nodes, internal topics have replication factor 3
/// and `min.insync.replicas` 2 (as `KAFKA_NODES=3 scripts/stack.sh up`), and
/// failures are noticed within seconds (short broker session and replica
/// lag timeouts). Every node is killed on drop.
pub struct PrivateKafkaCluster {
    dir: PathBuf,
    nodes: Vec<KafkaNode>,
    scram: bool,
    /// Held by clusters of more than one node, released on drop.
    _turn: Option<OwnedMutexGuard<()>>,
}

/// At most one multi-node cluster runs at a time in the test process: the
/// tests that start one (`kafka_cluster`, `scale_out`) each ran alone in a
/// binary of their own before they shared one, and two of them at once (6
/// JVMs, plus service replicas) on a 2-core machine would push both past
/// their timing bounds.
async fn cluster_turn() -> OwnedMutexGuard<()> {
    static TURN: OnceLock<Arc<Mutex<()>>> = OnceLock::new();
    Arc::clone(TURN.get_or_init(Arc::default))
        .lock_owned()
        .await
}

impl PrivateKafkaCluster {
    pub async fn start(size: usize) -> Self {
        Self::start_with_scram(size, None).await
    }

    /// As [`PrivateKafkaCluster::start`], plus (with `Some((user, password))`)
    /// a SASL_PLAINTEXT listener on every node accepting SCRAM-SHA-512 for
    /// that user, whose credential is written at format time.
    pub async fn start_with_scram(size: usize, user: Option<(&str, &str)>) -> Self {
        assert!(size >= 1, "a cluster has at least one node");
        let turn = if size > 1 {
            Some(cluster_turn().await)
        } else {
            None
        };
        let dir = std::env::temp_dir().join(super::unique("kafka"));
        let nodes: Vec<KafkaNode> = (0..size)
            .map(|_| KafkaNode {
                port: free_port(),
                controller_port: free_port(),
                sasl_port: user.map(|_| free_port()),
                child: None,
            })
            .collect();
        let mut cluster = Self {
            dir,
            nodes,
            scram: user.is_some(),
            _turn: turn,
        };
        for id in cluster.ids() {
            std::fs::create_dir_all(cluster.data_dir(id)).unwrap();
            std::fs::write(cluster.properties_file(id), cluster.properties(id)).unwrap();
        }
        // Each private cluster has its own data directories, so one fixed
        // (valid: 16 bytes, base64url) cluster id serves them all.
        let cluster_id = "MkU3OEVBNTcwNTJENDM2Qk";
        let formats: Vec<Child> = cluster
            .ids()
            .map(|id| {
                let mut format = Command::new("java");
                format
                    .arg("-cp")
                    .arg(format!("{}/*", kafka_libs().display()))
                    .args(["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c"])
                    .arg(cluster.properties_file(id));
                if let Some((name, password)) = user {
                    format
                        .arg("--add-scram")
                        .arg(format!("SCRAM-SHA-512=[name={name},password={password}]"));
                }
                format
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("java on PATH")
            })
            .collect();
        for mut format in formats {
            let status = format.wait().unwrap();
            assert!(status.success(), "formatting Kafka storage failed");
        }
        for id in cluster.ids() {
            cluster.spawn(id);
        }
        let (brokers, size) = (cluster.brokers(), cluster.nodes.len());
        eventually(Duration::from_secs(120), || {
            let brokers = brokers.clone();
            async move { broker_ids(brokers).await.len() == size }
        })
        .await;
        cluster
    }

    /// The node ids, 1..=n.
    pub fn ids(&self) -> impl Iterator<Item = i32> {
        1..=i32::try_from(self.nodes.len()).unwrap()
    }

    fn node(&mut self, id: i32) -> &mut KafkaNode {
        &mut self.nodes[usize::try_from(id - 1).unwrap()]
    }

    /// The client port of node `id`.
    pub fn port(&self, id: i32) -> u16 {
        self.nodes[usize::try_from(id - 1).unwrap()].port
    }

    /// The SASL_PLAINTEXT listeners of every node (`start_with_scram` only).
    pub fn sasl_brokers(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.sasl_port.expect("started with SCRAM")))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Bootstrap servers: every node.
    pub fn brokers(&self) -> String {
        self.ids()
            .map(|id| format!("127.0.0.1:{}", self.port(id)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn data_dir(&self, id: i32) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }

    fn properties_file(&self, id: i32) -> PathBuf {
        self.dir.join(format!("server-{id}.properties"))
    }

    fn properties(&self, id: i32) -> String {
        let voters = self
            .ids()
            .map(|n| {
                let node = &self.nodes[usize::try_from(n - 1).unwrap()];
                format!("{n}@127.0.0.1:{}", node.controller_port)
            })
            .collect::<Vec<_>>()
            .join(",");
        let node = &self.nodes[usize::try_from(id - 1).unwrap()];
        let (port, controller) = (node.port, node.controller_port);
        let (sasl_listener, sasl_config) = match node.sasl_port.filter(|_| self.scram) {
            Some(sasl) => (
                format!(",SASL_PLAINTEXT://127.0.0.1:{sasl}"),
                "sasl.enabled.mechanisms=SCRAM-SHA-512\n\
                 listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=\
                 org.apache.kafka.common.security.scram.ScramLoginModule required;\n",
            ),
            None => (String::new(), ""),
        };
        let (rf, min_isr) = if self.nodes.len() >= 3 {
            (3, 2)
        } else {
            (1, 1)
        };
        let mut properties = format!(
            "process.roles=broker,controller\n\
             node.id={id}\n\
             controller.quorum.voters={voters}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}{sasl_listener}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}{sasl_listener}\n\
             controller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,\
             SASL_PLAINTEXT:SASL_PLAINTEXT\n\
             inter.broker.listener.name=PLAINTEXT\n\
             {sasl_config}\
             log.dirs={}\n\
             num.partitions=3\n\
             default.replication.factor={rf}\n\
             min.insync.replicas={min_isr}\n\
             offsets.topic.replication.factor={rf}\n\
             offsets.topic.num.partitions=3\n\
             transaction.state.log.replication.factor={rf}\n\
             transaction.state.log.min.isr={min_isr}\n\
             share.coordinator.state.topic.replication.factor={rf}\n\
             share.coordinator.state.topic.min.isr={min_isr}\n\
             group.initial.rebalance.delay.ms=0\n\
             num.network.threads=2\n\
             num.io.threads=2\n",
            self.data_dir(id).display()
        );
        if self.nodes.len() > 1 {
            // A killed node is fenced (and loses its leaderships) after the
            // session timeout, and dropped from the ISR of the partitions it
            // followed after the lag time: seconds, not the default 9 s / 30 s.
            // SIGKILL is the point, so no controlled shutdown either.
            properties.push_str(
                "broker.heartbeat.interval.ms=1000\n\
                 broker.session.timeout.ms=5000\n\
                 replica.lag.time.max.ms=5000\n\
                 controlled.shutdown.enable=false\n",
            );
        }
        properties
    }

    /// Starts node `id` (again, with its data) without waiting for it; for
    /// nodes that can only become ready together (a lost controller quorum).
    pub fn spawn(&mut self, id: i32) {
        let log = std::fs::File::create(self.dir.join(format!("node-{id}.log"))).unwrap();
        let child = Command::new("java")
            .args([
                "-Xmx384m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-cp",
            ])
            .arg(format!("{}/*", kafka_libs().display()))
            .arg(format!("-Djava.io.tmpdir={}", self.dir.display()))
            .arg("kafka.Kafka")
            .arg(self.properties_file(id))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("java on PATH");
        self.node(id).child = Some(child);
    }

    /// Waits until node `id` serves metadata that lists it as a live broker.
    pub async fn wait_ready(&self, id: i32) {
        let own = format!("127.0.0.1:{}", self.port(id));
        eventually(Duration::from_secs(90), || {
            let own = own.clone();
            async move { broker_ids(own).await.contains(&id) }
        })
        .await;
    }

    /// Starts node `id` again with its data and waits until it is ready.
    pub async fn restart(&mut self, id: i32) {
        self.spawn(id);
        self.wait_ready(id).await;
    }

    /// Starts every killed node again, without waiting for them.
    pub fn spawn_stopped(&mut self) {
        for id in self.ids() {
            if self.node(id).child.is_none() {
                self.spawn(id);
            }
        }
    }

    /// SIGKILL: the node vanishes without a goodbye.
    pub fn kill(&mut self, id: i32) {
        stop(&mut self.node(id).child);
    }
}

/// The live brokers the metadata from `bootstrap` lists (empty when none
/// answers within a second).
async fn broker_ids(bootstrap: String) -> Vec<i32> {
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::Consumer;
        let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        consumer
            .fetch_metadata(None, Duration::from_secs(1))
            .map(|m| m.brokers().iter().map(|b| b.id()).collect())
            .unwrap_or_default()
    })
    .await
    .unwrap_or_default()
}

impl Drop for PrivateKafkaCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            stop(&mut node.child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A throwaway single-node Apache Kafka (KRaft) that can be killed and
/// restarted with its data, for broker-loss tests.
pub struct PrivateKafka {
    pub port: u16,
    /// The SASL_PLAINTEXT (SCRAM-SHA-512) listener of [`PrivateKafka::start_with_scram`].
    pub sasl_port: Option<u16>,
    cluster: PrivateKafkaCluster,
}

impl PrivateKafka {
    pub async fn start() -> Self {
        Self::start_with_scram(None).await
    }

    /// As [`PrivateKafka::start`], plus (with `Some((user, password))`) a
    /// SASL_PLAINTEXT listener on `sasl_port` accepting SCRAM-SHA-512 for
    /// that user.
    pub async fn start_with_scram(user: Option<(&str, &str)>) -> Self {
        let cluster = PrivateKafkaCluster::start_with_scram(1, user).await;
        Self {
            port: cluster.port(1),
            sasl_port: cluster.nodes[0].sasl_port,
            cluster,
        }
    }

    pub fn brokers(&self) -> String {
        self.cluster.brokers()
    }

    /// The SASL_PLAINTEXT listener's address (`start_with_scram` only).
    pub fn sasl_brokers(&self) -> String {
        self.cluster.sasl_brokers()
    }

    /// Starts (again) with the same data, waiting until it serves metadata.
    pub async fn restart(&mut self) {
        self.cluster.restart(1).await;
    }

    /// SIGKILL: the broker vanishes without a goodbye.
    pub fn kill(&mut self) {
        self.cluster.kill(1);
    }
}
