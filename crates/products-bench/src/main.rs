//! `products-bench`: the benchmarks behind `make bench` (see BENCHMARKS.md).
//!
//! Starts its own instances of the release service binary against the running
//! local stack, with unique topics, consumer groups, database and cache prefix,
//! and removes them again at the end. Settings come from the environment:
//!
//! | variable | default |
//! |---|---|
//! | `BENCH_N` | 100000 (create commands for the ingest run) |
//! | `BENCH_SECTIONS` | `ingest,reads,memory,grpc,tracing` (`ingest` alone skips the REST/gRPC runs; `memory`, `grpc`, `tracing` each run alone too) |
//! | `BENCH_GHZ_BIN` | the pinned ghz in the stack cache (`scripts/ensure-tool.sh ghz`) |
//! | `BENCH_OTLP_ENDPOINT` / `BENCH_JAEGER_QUERY` | `http://127.0.0.1:4317` / `http://127.0.0.1:16686` (section `tracing`) |
//! | `BENCH_RUST_LOG` | `warn` (the services' `RUST_LOG`) |
//! | `BENCH_MEMORY_N` / `BENCH_MEMORY_SECS` | 60000 / 30 (maximum-size products queued, seconds watched) |
//! | `BENCH_WARMUP_SECS` / `BENCH_DURATION_SECS` | 3 / 10 (per load run) |
//! | `BENCH_CONCURRENCY` | `1,16,64` |
//! | `BENCH_SERVICE_BIN` | `target/release/products-service` |
//! | `BENCH_OUT_JSON` / `BENCH_OUT_MD` | `bench/results/<date>.json` / `.md` |
//! | `KAFKA_BROKERS`, `MONGO_URI`, `REDIS_URL` | the local stack's addresses |

mod extras;
mod grpc_ghz;
mod load;
mod memory;
mod profile;
mod report;
mod service;
mod tracing_cost;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use mongodb::bson::{doc, oid::ObjectId, DateTime as BsonDateTime, Document};
use products_service::{adapters::mongo::MongoProductRepository, config::MongoSettings};
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer},
    ClientConfig, Message,
};
use serde_json::{json, Value};

use crate::service::{Service, ServiceOpts};

pub(crate) const CATEGORY: &str = "65a1f0c2e4b0a1b2c3d4e5f7";
pub(crate) const PARTITIONS: i32 = 3;
const BULK_BATCH_SIZES: [usize; 3] = [100, 1000, 5000];

/// Settings of one run.
#[derive(Clone, Debug)]
pub struct Opts {
    pub n: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub concurrency: Vec<usize>,
    pub service_bin: PathBuf,
    pub out_json: PathBuf,
    pub out_md: PathBuf,
    pub work_dir: PathBuf,
    pub brokers: String,
    pub mongo_uri: String,
    pub redis_url: String,
    pub ingest_timeout: Duration,
    pub drain_timeout: Duration,
    pub read_docs: usize,
    pub write_duration: Duration,
    /// Which parts run (`BENCH_SECTIONS`, default `ingest,reads,memory,grpc,tracing`).
    pub sections: Vec<String>,
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

pub(crate) fn env_num(key: &str, default: u64) -> Result<u64> {
    env_or(key, &default.to_string())
        .parse()
        .with_context(|| format!("{key} must be a whole number"))
}

impl Opts {
    fn from_env() -> Result<Self> {
        let date = chrono::Utc::now().format("%F").to_string();
        let concurrency = env_or("BENCH_CONCURRENCY", "1,16,64")
            .split(',')
            .map(|c| c.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .context("BENCH_CONCURRENCY must be a comma-separated list of numbers")?;
        Ok(Self {
            n: env_num("BENCH_N", 100_000)? as usize,
            warmup: Duration::from_secs(env_num("BENCH_WARMUP_SECS", 3)?),
            duration: Duration::from_secs(env_num("BENCH_DURATION_SECS", 10)?),
            concurrency,
            service_bin: env_or("BENCH_SERVICE_BIN", "target/release/products-service").into(),
            out_json: env_or("BENCH_OUT_JSON", &format!("bench/results/{date}.json")).into(),
            out_md: env_or("BENCH_OUT_MD", &format!("bench/results/{date}.md")).into(),
            work_dir: env_or("BENCH_WORK_DIR", "target/bench").into(),
            brokers: env_or("KAFKA_BROKERS", "127.0.0.1:9092"),
            mongo_uri: env_or("MONGO_URI", "mongodb://127.0.0.1:27017"),
            redis_url: env_or("REDIS_URL", "redis://127.0.0.1:6379"),
            ingest_timeout: Duration::from_secs(env_num("BENCH_INGEST_TIMEOUT_SECS", 480)?),
            drain_timeout: Duration::from_secs(env_num("BENCH_DRAIN_TIMEOUT_SECS", 240)?),
            read_docs: env_num("BENCH_READ_DOCS", 200)? as usize,
            write_duration: Duration::from_secs(env_num("BENCH_WRITE_SECS", 5)?),
            sections: env_or("BENCH_SECTIONS", "ingest,reads,memory,grpc,tracing")
                .split(',')
                .map(|s| s.trim().to_owned())
                .collect(),
        })
    }
}

/// Unique names of this run's Kafka topics, groups, database and cache prefix.
#[derive(Clone, Debug)]
pub struct Names {
    pub id: String,
    pub topic_create: String,
    pub topic_update: String,
    pub topic_dlq: String,
    pub group: String,
    pub raw_group: String,
    pub database: String,
    pub read_database: String,
    pub bulk_database_prefix: String,
    pub redis_prefix: String,
}

impl Names {
    fn new() -> Self {
        let id = format!(
            "{}{}",
            chrono::Utc::now().format("%Y%m%d%H%M%S"),
            std::process::id()
        );
        Self {
            topic_create: format!("bench-{id}-create"),
            topic_update: format!("bench-{id}-update"),
            topic_dlq: format!("bench-{id}-dlq"),
            group: format!("bench-{id}-service"),
            raw_group: format!("bench-{id}-raw"),
            database: format!("bench_{id}"),
            read_database: format!("bench_{id}_reads"),
            bulk_database_prefix: format!("bench_{id}_bulk"),
            redis_prefix: format!("bench:{id}:"),
            id,
        }
    }
}

fn main() -> Result<()> {
    let opts = Opts::from_env()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(opts))
}

async fn run(opts: Opts) -> Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&opts.work_dir)?;
    if let Some(dir) = opts.out_json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if !opts.service_bin.exists() {
        bail!(
            "{} not found: build it with cargo build --release --locked --bin products-service",
            opts.service_bin.display()
        );
    }
    let names = Names::new();
    eprintln!("products-bench: run {} (N = {})", names.id, opts.n);
    let mongo = mongodb::Client::with_uri_str(&opts.mongo_uri).await?;

    let result = benchmarks(&opts, &names, &mongo).await;
    eprintln!("products-bench: cleaning up");
    let cleanup = cleanup(&opts, &names, &mongo).await;
    let mut results = result?;
    cleanup?;
    results["total_secs"] = json!(round(started.elapsed().as_secs_f64(), 1));
    let md = report::markdown(&results);
    std::fs::write(
        &opts.out_json,
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    std::fs::write(&opts.out_md, &md)?;
    println!("{md}");
    eprintln!(
        "products-bench: wrote {} and {} in {:.0} s",
        opts.out_json.display(),
        opts.out_md.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

async fn benchmarks(opts: &Opts, names: &Names, mongo: &mongodb::Client) -> Result<Value> {
    let wants = |section: &str| opts.sections.iter().any(|s| s == section);
    let memory = if wants("memory") {
        Some(memory::memory_bound(opts, names).await?)
    } else {
        None
    };
    let memory_peak = memory.as_ref().map(|m| m["peak_rss_bytes"].clone());
    if !wants("ingest") {
        let extras = extras::run(opts, names, mongo).await?;
        let mut out = json!({
            "run_id": names.id,
            "date": chrono::Utc::now().to_rfc3339(),
            "memory_bound_peak_rss_bytes": memory_peak,
            "errors": extras.errors,
            "targets": { "memory_bound_peak_rss_bytes_max": memory::RSS_BOUND, "errors_max": 0 },
            "memory_bound": memory,
            "grpc_ghz": extras.grpc,
            "tracing": extras.tracing,
            "settings": {
                "sections": opts.sections,
                "warmup_secs": opts.warmup.as_secs(),
                "duration_secs": opts.duration.as_secs(),
                "read_catalog_docs": opts.read_docs,
            },
            "machine": report::machine(opts, mongo).await,
        });
        merge_extras(&mut out, &extras);
        return Ok(out);
    }
    let mut errors: u64 = 0;
    let machine = report::machine(opts, mongo).await;
    create_topics(opts, names).await?;

    // 1. Kafka ingest and its two limits.
    let ids: Vec<ObjectId> = (0..opts.n).map(|_| ObjectId::new()).collect();
    eprintln!("ingest: producing {} create commands", opts.n);
    let produce_secs = produce(opts, names, &ids)?;
    eprintln!("ingest: raw Kafka read");
    let (consume_secs, consumed) = {
        let (opts, names) = (opts.clone(), names.clone());
        tokio::task::spawn_blocking(move || raw_consume(&opts, &names)).await??
    };
    errors += (opts.n - consumed) as u64;
    let consume_rate = consumed as f64 / consume_secs;
    eprintln!("ingest: bulk insert baseline");
    let mut bulk = Vec::new();
    for batch in BULK_BATCH_SIZES {
        let db = mongo.database(&format!("{}{batch}", names.bulk_database_prefix));
        let ferretdb = service::stack_pid("ferretdb");
        let cpu_before = ferretdb.and_then(service::process_cpu_secs);
        let secs = bulk_insert(opts, &db, &ids, batch).await?;
        let ferretdb_cpu_secs = ferretdb
            .and_then(service::process_cpu_secs)
            .zip(cpu_before)
            .map(|(after, before)| round(after - before, 2));
        db.drop().await?;
        eprintln!(
            "  batch {batch}: {:.0} docs/s (FerretDB CPU {ferretdb_cpu_secs:?} s)",
            opts.n as f64 / secs
        );
        bulk.push(json!({"batch_size": batch, "secs": round(secs, 3),
            "docs_per_s": round(opts.n as f64 / secs, 0),
            "ferretdb_cpu_secs": ferretdb_cpu_secs}));
    }
    let best_bulk = bulk
        .iter()
        .filter_map(|b| b["docs_per_s"].as_f64())
        .fold(0.0, f64::max);

    eprintln!("ingest: service consumer");
    let ingest = ingest(opts, names, mongo).await?;
    errors += ingest.missing + ingest.dead_letters;
    let ingest_rate = ingest.applied as f64 / ingest.secs;
    let ingest_ratio = ingest_rate / best_bulk.min(consume_rate);
    let ingest_json = json!({
        "n": opts.n,
        "produce_secs": round(produce_secs, 3),
        "products_per_s": round(ingest_rate, 0),
        "secs": round(ingest.secs, 3),
        "first_applied_secs": round(ingest.first_applied_secs, 3),
        "service_cpu_secs": ingest.service_cpu_secs.map(|s| round(s, 2)),
        "ferretdb_cpu_secs": ingest.ferretdb_cpu_secs.map(|s| round(s, 2)),
        "applied": ingest.applied,
        "missing": ingest.missing,
        "dead_letters": ingest.dead_letters,
        "peak_rss_bytes": ingest.peak_rss,
        "mongodb_operations": ingest.mongo_ops,
        "command": format!("products-bench ingest: {} create commands pre-produced to {} ({PARTITIONS} partitions), then {} started with consumer group {}; time from start until its consumer has settled N (kafka_consumed_messages_total), then countDocuments checked = N", opts.n, names.topic_create, opts.service_bin.display(), names.group),
        "kafka_consume": {
            "records": consumed,
            "secs": round(consume_secs, 3),
            "records_per_s": round(consume_rate, 0),
            "command": format!("products-bench raw read: rdkafka BaseConsumer, fresh group {}, {} from the earliest offset until N records, no processing", names.raw_group, names.topic_create),
        },
        "bulk_insert": {
            "batches": bulk,
            "best_docs_per_s": best_bulk,
            "command": format!("products-bench bulk insert: mongodb insert_many of the same N documents into {}<batch> (with the service's indexes) at {}, batch sizes {:?}, best taken", names.bulk_database_prefix, opts.mongo_uri, BULK_BATCH_SIZES),
        },
    });

    // 2-4. REST and gRPC reads and writes (skipped with BENCH_SECTIONS=ingest).
    let (rest, grpc, writes, idle_rss) = if opts.sections.iter().any(|s| s == "reads") {
        let reads = reads(opts, names, mongo).await?;
        errors += reads.errors;
        (reads.rest, reads.grpc, reads.writes, Some(reads.idle_rss))
    } else {
        (Vec::new(), Vec::new(), Value::Null, None)
    };

    let rps = |name: &str, c: usize| {
        rest.iter()
            .find(|r| r["name"] == name && r["concurrency"] == c)
            .and_then(|r| r["rps"].as_f64())
    };
    let mut cached_ratios = BTreeMap::new();
    for &c in &opts.concurrency {
        if let (Some(get), Some(health)) = (rps("get_cached", c), rps("health", c)) {
            cached_ratios.insert(c.to_string(), round(get / health, 3));
        }
    }
    let top = opts.concurrency.iter().copied().max().unwrap_or(1);
    let cached_get_ratio = cached_ratios.get(&top.to_string()).copied();

    let extras = extras::run(opts, names, mongo).await?;
    errors += extras.errors;
    let mut out = json!({
        "run_id": names.id,
        "date": chrono::Utc::now().to_rfc3339(),
        "ingest_ratio": round(ingest_ratio, 3),
        "cached_get_ratio": cached_get_ratio,
        "cached_get_ratio_by_concurrency": cached_ratios,
        "idle_rss_bytes": idle_rss,
        "memory_bound_peak_rss_bytes": memory_peak,
        "errors": errors,
        "targets": {
            "ingest_ratio_min": 0.7,
            "cached_get_ratio_min": 0.5,
            "errors_max": 0,
            "idle_rss_bytes_max": 50 * 1024 * 1024,
            "memory_bound_peak_rss_bytes_max": memory::RSS_BOUND,
        },
        "settings": {
            "n": opts.n,
            "read_catalog_docs": opts.read_docs,
            "warmup_secs": opts.warmup.as_secs(),
            "duration_secs": opts.duration.as_secs(),
            "write_duration_secs": opts.write_duration.as_secs(),
            "concurrency": opts.concurrency,
            "command": format!("make bench BENCH_N={}", opts.n),
        },
        "machine": machine,
        "ingest": ingest_json,
        "rest_reads": rest,
        "rest_writes": writes,
        "grpc": grpc,
        "memory_bound": memory,
        "grpc_ghz": extras.grpc,
        "tracing": extras.tracing,
    });
    merge_extras(&mut out, &extras);
    Ok(out)
}

/// The top-level figures and targets of the `grpc` and `tracing` sections.
fn merge_extras(out: &mut Value, extras: &extras::Extras) {
    if let (Some(o), Some(top)) = (out.as_object_mut(), extras.top_level().as_object()) {
        for (k, v) in top {
            o.insert(k.clone(), v.clone());
        }
    }
    let targets = &mut out["targets"];
    targets["grpc_single_conn_ratio_min"] = json!(0.5);
    targets["grpc_c1_p99_over_p50_max"] = json!(5.0);
    targets["tracing_on_ratio_min"] = json!(0.7);
    targets["tracing_spans_dropped_max"] = json!(0);
}

/// What the REST/gRPC part of the run measured.
struct Reads {
    rest: Vec<Value>,
    grpc: Vec<Value>,
    writes: Value,
    idle_rss: u64,
    errors: u64,
}

async fn reads(opts: &Opts, names: &Names, mongo: &mongodb::Client) -> Result<Reads> {
    let mut errors: u64 = 0;
    // Against an instance with the cache on, on a catalog
    // of its own (search scans every document on FerretDB/SQLite: see BENCHMARKS.md).
    let read_ids: Vec<ObjectId> = (0..opts.read_docs).map(|_| ObjectId::new()).collect();
    bulk_insert(opts, &mongo.database(&names.read_database), &read_ids, 1000).await?;
    let svc = Service::start(
        opts,
        names,
        ServiceOpts {
            name: "cached",
            database: &names.read_database,
            redis: true,
            consumer: true,
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = svc.rss()?.0;
    eprintln!("idle RSS: {} MiB", idle_rss / (1 << 20));
    let sample: Vec<String> = read_ids.iter().map(|id| id.to_hex()).collect();
    load::prime_cache(&svc, &sample).await?;
    let ids_file = opts.work_dir.join("ids.txt");
    std::fs::write(&ids_file, sample.join("\n") + "\n")?;
    let scripts = load::write_scripts(&opts.work_dir, &ids_file)?;
    let settle_path = |path: &str| path.replace("{id}", &sample[0]);
    let search_path = "/api/v1/products/search?search=widget-42&page=1&size=10";

    let mut rest = Vec::new();
    let mut grpc = Vec::new();
    for &c in &opts.concurrency {
        for (name, path, script) in [
            ("health", "/health".to_owned(), &scripts.plain),
            (
                "get_cached",
                "/api/v1/products/{id}".to_owned(),
                &scripts.get_by_id,
            ),
            ("search", search_path.to_owned(), &scripts.plain),
        ] {
            let url = format!(
                "http://{}{}",
                svc.http,
                if name == "get_cached" { "" } else { &path }
            );
            let r = load::wrk_run(
                opts,
                &svc,
                name,
                &path,
                &url,
                c,
                script,
                &settle_path(&path),
            )
            .await?;
            errors += r["errors"].as_u64().unwrap_or(0);
            rest.push(r);
        }
        for kind in [load::GrpcKind::GetById, load::GrpcKind::Search] {
            let r = load::grpc_run(opts, &svc, kind, c, Arc::new(sample.clone())).await?;
            load::settle(&svc, search_path).await;
            errors += r["errors"].as_u64().unwrap_or(0);
            grpc.push(r);
        }
    }
    let writes = load::write_run(opts, names, &svc, mongo, &scripts.post).await?;
    errors += writes["errors"].as_u64().unwrap_or(0);
    svc.stop().await?;

    // The same reads with the cache off (and no consumer: nothing to consume).
    let svc = Service::start(
        opts,
        names,
        ServiceOpts {
            name: "uncached",
            database: &names.read_database,
            redis: false,
            consumer: false,
        },
    )
    .await?;
    for &c in &opts.concurrency {
        let url = format!("http://{}", svc.http);
        let r = load::wrk_run(
            opts,
            &svc,
            "get_uncached",
            "/api/v1/products/{id}",
            &url,
            c,
            &scripts.get_by_id,
            &settle_path("/api/v1/products/{id}"),
        )
        .await?;
        errors += r["errors"].as_u64().unwrap_or(0);
        rest.push(r);
    }
    svc.stop().await?;

    Ok(Reads {
        rest,
        grpc,
        writes,
        idle_rss,
        errors,
    })
}

pub(crate) async fn create_topics(opts: &Opts, names: &Names) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &opts.brokers)
        .create()?;
    let topics: Vec<NewTopic> = [&names.topic_create, &names.topic_update, &names.topic_dlq]
        .into_iter()
        .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    for r in admin.create_topics(&topics, &AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e}"))?;
    }
    Ok(())
}

fn create_payload(id: &ObjectId, i: usize) -> Vec<u8> {
    json!({
        "productId": id.to_hex(),
        "categoryId": CATEGORY,
        "name": format!("Bench widget-{i}"),
        "description": "Produced straight to Kafka by products-bench",
        "price": 1.5,
        "photos": [],
        "quantity": 1,
        "rating": 3,
        "createdAt": "2026-01-01T00:00:00Z",
        "updatedAt": "2026-01-01T00:00:00Z"
    })
    .to_string()
    .into_bytes()
}

fn produce(opts: &Opts, names: &Names, ids: &[ObjectId]) -> Result<f64> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &opts.brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let start = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        send(
            &producer,
            &names.topic_create,
            &id.to_hex(),
            create_payload(id, i),
        )?;
    }
    producer.flush(Duration::from_secs(120))?;
    if producer.in_flight_count() != 0 {
        bail!("{} records not delivered", producer.in_flight_count());
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Queues one record, waiting while the producer's queue is full.
pub(crate) fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &str,
    mut payload: Vec<u8>,
) -> Result<()> {
    loop {
        match producer.send(BaseRecord::to(topic).key(key).payload(&payload)) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                rec,
            )) => {
                payload = rec.payload.map(|p| p.to_vec()).unwrap_or_default();
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => bail!("producing: {e}"),
        }
    }
}

/// Reads the create topic to the end with a fresh group: the Kafka limit.
fn raw_consume(opts: &Opts, names: &Names) -> Result<(f64, usize)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &opts.brokers)
        .set("group.id", &names.raw_group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    let start = Instant::now();
    consumer.subscribe(&[&names.topic_create])?;
    let mut count = 0usize;
    let deadline = start + Duration::from_secs(120);
    while count < opts.n && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                count += 1;
                std::hint::black_box(m.payload());
            }
            Some(Err(e)) => eprintln!("raw read: {e}"),
            None => {}
        }
    }
    let secs = start.elapsed().as_secs_f64();
    consumer.unsubscribe();
    Ok((secs, count))
}

fn product_doc(id: &ObjectId, i: usize, category: ObjectId, date: BsonDateTime) -> Document {
    doc! {
        "_id": *id,
        "categoryId": category,
        "name": format!("Bench widget-{i}"),
        "description": "Produced straight to Kafka by products-bench",
        "price": 1.5,
        "photos": [],
        "quantity": 1_i64,
        "rating": 3_i64,
        "createdAt": date,
        "updatedAt": date,
    }
}

/// Inserts the documents with `insert_many` in batches; the collection first
/// gets the service's own indexes (by the service's own code), so the limit
/// pays the same index maintenance per document as the service does.
pub(crate) async fn bulk_insert(
    opts: &Opts,
    db: &mongodb::Database,
    ids: &[ObjectId],
    batch: usize,
) -> Result<f64> {
    let repository = MongoProductRepository::connect(&MongoSettings {
        uri: opts.mongo_uri.clone().into(),
        database: db.name().to_owned(),
        collection: "products".to_owned(),
        server_selection_timeout_ms: 5000,
        connect_timeout_ms: 5000,
        tombstone_retention_hours: 168,
        tls: Default::default(),
        auth: Default::default(),
    })
    .await?;
    repository
        .ensure_indexes()
        .await
        .map_err(|e| anyhow::anyhow!("creating the service's indexes: {e}"))?;
    let category = ObjectId::parse_str(CATEGORY)?;
    let date = BsonDateTime::parse_rfc3339_str("2026-01-01T00:00:00Z")?;
    let docs: Vec<Document> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| product_doc(id, i, category, date))
        .collect();
    let coll = db.collection::<Document>("products");
    let start = Instant::now();
    for chunk in docs.chunks(batch) {
        coll.insert_many(chunk).await?;
    }
    Ok(start.elapsed().as_secs_f64())
}

struct Ingest {
    secs: f64,
    /// From the service's start until the first products were stored.
    first_applied_secs: f64,
    /// CPU the service and FerretDB used during the run (where the time goes).
    service_cpu_secs: Option<f64>,
    ferretdb_cpu_secs: Option<f64>,
    applied: u64,
    missing: u64,
    dead_letters: u64,
    peak_rss: u64,
    mongo_ops: Value,
}

async fn ingest(opts: &Opts, names: &Names, mongo: &mongodb::Client) -> Result<Ingest> {
    let coll = mongo
        .database(&names.database)
        .collection::<Document>("products");
    let ferretdb = service::stack_pid("ferretdb");
    let ferretdb_cpu_before = ferretdb.and_then(service::process_cpu_secs);
    let start = Instant::now();
    let svc = Service::start_no_wait(
        opts,
        names,
        ServiceOpts {
            name: "ingest",
            database: &names.database,
            redis: true,
            consumer: true,
        },
    )?;
    let deadline = start + opts.ingest_timeout;
    let mut applied = 0;
    let mut first_applied_secs = None;
    let mut last_report = Instant::now();
    while Instant::now() < deadline {
        applied = svc.settled_creates(&names.topic_create).await.unwrap_or(0);
        if applied > 0 && first_applied_secs.is_none() {
            first_applied_secs = Some(start.elapsed().as_secs_f64());
            eprintln!(
                "  first products applied after {:.1} s",
                start.elapsed().as_secs_f64()
            );
        }
        if applied >= opts.n as u64 {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  {applied} applied after {:.0} s",
                start.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!("  {applied} applied in {secs:.1} s");
    // Outside the timed window: the documents themselves are the proof.
    let stored = coll.count_documents(doc! {}).await?;
    eprintln!("  {stored} documents stored");
    let applied = applied.min(stored);
    let peak_rss = svc.rss()?.1;
    let service_cpu_secs = svc.cpu_secs();
    let ferretdb_cpu_secs = ferretdb
        .and_then(service::process_cpu_secs)
        .zip(ferretdb_cpu_before)
        .map(|(after, before)| after - before);
    let mongo_ops = svc.mongo_operations().await.unwrap_or(Value::Null);
    svc.stop().await?;
    let dead_letters = dead_letters(opts, names)?;
    Ok(Ingest {
        secs,
        first_applied_secs: first_applied_secs.unwrap_or(secs),
        service_cpu_secs,
        ferretdb_cpu_secs,
        applied,
        missing: (opts.n as u64).saturating_sub(applied),
        dead_letters,
        peak_rss,
        mongo_ops,
    })
}

fn dead_letters(opts: &Opts, names: &Names) -> Result<u64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &opts.brokers)
        .create()?;
    let mut total = 0;
    for p in 0..PARTITIONS {
        let (low, high) =
            consumer.fetch_watermarks(&names.topic_dlq, p, Duration::from_secs(10))?;
        total += (high - low).max(0) as u64;
    }
    Ok(total)
}

/// Deletes the run's three topics (of `names`) and the given consumer groups.
pub(crate) async fn delete_topics_and_groups(
    opts: &Opts,
    names: &Names,
    groups: &[&str],
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &opts.brokers)
        .create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    admin
        .delete_topics(
            &[&names.topic_create, &names.topic_update, &names.topic_dlq],
            &options,
        )
        .await?;
    for r in admin.delete_groups(groups, &options).await? {
        if let Err((g, e)) = r {
            if !e.to_string().contains("GroupIdNotFound") {
                eprintln!("deleting consumer group {g}: {e}");
            }
        }
    }
    Ok(())
}

async fn cleanup(opts: &Opts, names: &Names, mongo: &mongodb::Client) -> Result<()> {
    mongo.database(&names.database).drop().await?;
    mongo.database(&names.read_database).drop().await?;
    for batch in BULK_BATCH_SIZES {
        mongo
            .database(&format!("{}{batch}", names.bulk_database_prefix))
            .drop()
            .await?;
    }
    delete_topics_and_groups(opts, names, &[&names.group, &names.raw_group]).await?;
    let client = redis::Client::open(opts.redis_url.as_str())?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", names.redis_prefix))
        .query_async(&mut con)
        .await?;
    for chunk in keys.chunks(1000) {
        let _: () = redis::cmd("DEL").arg(chunk).query_async(&mut con).await?;
    }
    Ok(())
}
