//! A private instance of the release service binary, as a child process.

use std::{
    collections::BTreeMap,
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use crate::{Names, Opts};

pub struct ServiceOpts<'a> {
    pub name: &'static str,
    pub database: &'a str,
    pub redis: bool,
    pub consumer: bool,
}

pub struct Service {
    child: Child,
    pub http: String,
    pub grpc: String,
    pub metrics: String,
}

fn free_addr() -> Result<String> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

/// The events topic of the run's services on `database`: the run's topic
/// for the ingested catalog, one of its own for any other database.
pub fn events_topic(names: &Names, database: &str) -> String {
    let topic = if database == names.database {
        names.topic_events.clone()
    } else {
        format!("{}-{database}", names.topic_events)
    };
    if let Ok(mut used) = EVENT_TOPICS.lock() {
        used.insert(topic.clone());
    }
    topic
}

/// Every events topic a service of this run was given (deleted at the end).
pub static EVENT_TOPICS: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

impl Service {
    /// Starts the binary and returns at once (the ingest run times from here).
    pub fn start_no_wait(opts: &Opts, names: &Names, so: ServiceOpts<'_>) -> Result<Self> {
        Self::start_no_wait_with_env(opts, names, so, &[])
    }

    /// As [`Service::start_no_wait`], with more environment (after the rest,
    /// so it can set what the defaults remove, such as an OTLP endpoint).
    pub fn start_no_wait_with_env(
        opts: &Opts,
        names: &Names,
        so: ServiceOpts<'_>,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let (http, grpc, metrics) = (free_addr()?, free_addr()?, free_addr()?);
        let log = opts.work_dir.join(format!("service-{}.log", so.name));
        let log = std::fs::File::create(&log).with_context(|| log.display().to_string())?;
        let child = Command::new(&opts.service_bin)
            .env("HTTP_ADDR", &http)
            .env("GRPC_ADDR", &grpc)
            .env("METRICS_ADDR", &metrics)
            .env("MONGO_URI", &opts.mongo_uri)
            .env("MONGO_DB", so.database)
            .env("KAFKA_BROKERS", &opts.brokers)
            .env("KAFKA_GROUP_ID", &names.group)
            .env("KAFKA_TOPIC_CREATE", &names.topic_create)
            .env("KAFKA_TOPIC_UPDATE", &names.topic_update)
            .env("KAFKA_TOPIC_DEAD_LETTER", &names.topic_dlq)
            // Events are on by default: never into the shared `product-events`,
            // and one topic per database, since each service's search index is
            // rebuilt from its topic.
            .env("APP__EVENTS__TOPIC", events_topic(names, so.database))
            .env("REDIS_URL", &opts.redis_url)
            .env("REDIS_ENABLED", so.redis.to_string())
            .env("APP__REDIS__KEY_PREFIX", &names.redis_prefix)
            // Longer than a whole run: cached reads stay cached.
            .env("APP__REDIS__TTL_SECONDS", "3600")
            .env("APP__KAFKA__CONSUMER__ENABLED", so.consumer.to_string())
            .env(
                "RUST_LOG",
                std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_TRACES_SAMPLER")
            .env_remove("OTEL_TRACES_SAMPLER_ARG")
            .env_remove("PRODUCTS_CONFIG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", opts.service_bin.display()))?;
        Ok(Self {
            child,
            http,
            grpc,
            metrics,
        })
    }

    /// Starts the binary and waits for `/health`, then `/ready`.
    pub async fn start(opts: &Opts, names: &Names, so: ServiceOpts<'_>) -> Result<Self> {
        Self::start_with_env(opts, names, so, &[]).await
    }

    /// As [`Service::start`], with more environment.
    pub async fn start_with_env(
        opts: &Opts,
        names: &Names,
        so: ServiceOpts<'_>,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let mut svc = Self::start_no_wait_with_env(opts, names, so, env)?;
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        for path in ["/health", "/ready"] {
            loop {
                if let Some(status) = svc.child.try_wait()? {
                    bail!("the service exited during start: {status}");
                }
                let url = format!("http://{}{path}", svc.http);
                if let Ok(r) = client.get(&url).send().await {
                    if r.status().is_success() {
                        break;
                    }
                }
                if Instant::now() > deadline {
                    bail!("{url} did not answer 200 within 60 s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(svc)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// (VmRSS, VmHWM) in bytes.
    pub fn rss(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }

    /// CPU seconds (user + system) the service has used so far.
    pub fn cpu_secs(&self) -> Option<f64> {
        process_cpu_secs(self.pid())
    }

    /// Resets VmHWM to the current RSS, so the next reading is this run's peak.
    pub fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }

    /// The instance's Prometheus exposition.
    pub async fn metrics_text(&self) -> Result<String> {
        Ok(reqwest::get(format!("http://{}/metrics", self.metrics))
            .await?
            .text()
            .await?)
    }

    /// The sum of every series of `name` on the instance's /metrics.
    pub async fn metric_sum(&self, name: &str) -> Result<f64> {
        Ok(self
            .metrics_text()
            .await?
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// Create commands this instance's consumer has settled (applied or found
    /// already applied), from its `kafka_consumed_messages_total`. Polling
    /// this instead of counting documents matters: a count on FerretDB/SQLite
    /// reads every document (seconds at 100,000) and would slow the very
    /// inserts it measures.
    pub async fn settled_creates(&self, topic: &str) -> Result<u64> {
        let outcomes = self.consumed(topic).await?;
        Ok(["applied", "duplicate"]
            .iter()
            .filter_map(|o| outcomes.get(*o))
            .sum())
    }

    /// `kafka_consumed_messages_total` of one topic, by outcome (`applied`,
    /// `duplicate`, `deleted`, `dead_lettered`).
    pub async fn consumed(&self, topic: &str) -> Result<BTreeMap<String, u64>> {
        let text = self.metrics_text().await?;
        let topic_label = format!("topic=\"{topic}\"");
        let mut outcomes = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("kafka_consumed_messages_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once(' ') else {
                continue;
            };
            if !labels.contains(&topic_label) {
                continue;
            }
            let Some(outcome) = labels
                .split(',')
                .find_map(|l| l.strip_prefix("outcome=\""))
                .map(|o| o.trim_end_matches(['"', '}']).to_owned())
            else {
                continue;
            };
            *outcomes.entry(outcome).or_insert(0) += value.parse::<f64>().unwrap_or(0.0) as u64;
        }
        Ok(outcomes)
    }

    /// Count, total and mean of `mongodb_operation_duration_seconds` per
    /// operation, from the service's /metrics.
    pub async fn mongo_operations(&self) -> Result<Value> {
        let text = self.metrics_text().await?;
        let mut ops: Map<String, Value> = Map::new();
        for line in text.lines() {
            for (suffix, key) in [("_sum{", "total_secs"), ("_count{", "count")] {
                let Some(rest) =
                    line.strip_prefix(&format!("mongodb_operation_duration_seconds{suffix}"))
                else {
                    continue;
                };
                let Some((labels, value)) = rest.rsplit_once(' ') else {
                    continue;
                };
                let Some(op) = labels
                    .split(',')
                    .find_map(|l| l.strip_prefix("operation=\""))
                    .map(|o| o.trim_end_matches(['"', '}']).to_owned())
                else {
                    continue;
                };
                let value: f64 = value.parse().unwrap_or(0.0);
                let entry = ops.entry(op).or_insert_with(|| json!({}));
                entry[key] = json!(value);
            }
        }
        for v in ops.values_mut() {
            if let (Some(t), Some(c)) = (v["total_secs"].as_f64(), v["count"].as_f64()) {
                if c > 0.0 {
                    v["mean_ms"] = json!(crate::round(t / c * 1000.0, 3));
                }
            }
        }
        Ok(Value::Object(ops))
    }

    /// SIGTERM, then up to 30 s for a clean shutdown (offsets committed), then SIGKILL.
    pub async fn stop(mut self) -> Result<()> {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("the service did not stop within 30 s: killing it");
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU seconds (user + system) a process has used, from /proc/<pid>/stat.
pub fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at "state".
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let total = ticks(11)? + ticks(12)?;
    Some(total as f64 / 100.0) // USER_HZ is 100 on Linux
}

/// The pid of a local-stack component, from `.stack/run/<name>.pid`.
pub fn stack_pid(name: &str) -> Option<u32> {
    std::fs::read_to_string(format!(".stack/run/{name}.pid"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
