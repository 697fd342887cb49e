//! `products-bench`: the benchmarks behind `make bench` (see BENCHMARKS.md).
//!
//! Starts its own instances of the release service binary against the running
//! local stack, with unique topics, consumer groups, database and cache prefix,
//! and removes them again at the end. Settings come from the environment:
//!
//! | variable | default |
//! |---|---|
//! | `BENCH_N` | 100000 (create commands for the ingest run) |
//! | `BENCH_SECTIONS` | `ingest,scale,freshness,events,search,reads,memory,grpc,tracing` (`ingest` alone skips the REST/gRPC runs; `scale` and `search` need `ingest`; `freshness`, `events`, `memory`, `grpc`, `tracing` each run alone too) |
//! | `BENCH_EVENTS_N` / `BENCH_EVENTS_REPEAT` | 20000 / 3 (section `events`: creates per ingest run, runs with events off and on each) |
//! | `BENCH_EVENTS_RATE` / `BENCH_EVENTS_SECS` / `BENCH_EVENTS_WAIT_SECS` | 500 / 10 / 60 (section `events`: steady PUTs/s, seconds counted, longest wait for the events) |
//! | `BENCH_SCALE_SMALL` / `BENCH_UPDATE_N` | 10000 / 10000 (section `scale`: the small catalog, updates per catalog) |
//! | `BENCH_FRESHNESS_RATE` / `BENCH_FRESHNESS_SECS` / `BENCH_FRESHNESS_POLL_MS` | 1000 / 10 / 5 (section `freshness`) |
//! | `BENCH_SEARCH_WRITE_RATE` / `BENCH_SEARCH_WRITE_SECS` | 1000 / 10 (section `search`: gRPC creates/s and seconds for searchable-after-write) |
//! | `BENCH_GHZ_BIN` | the pinned ghz in the stack cache (`scripts/ensure-tool.sh ghz`) |
//! | `BENCH_OTLP_ENDPOINT` / `BENCH_JAEGER_QUERY` | `http://127.0.0.1:4317` / `http://127.0.0.1:16686` (section `tracing`) |
//! | `BENCH_TRACING_ROUNDS` | 3 (section `tracing`: measured rounds per instance, alternated off/on, `BENCH_DURATION_SECS` split between them) |
//! | `BENCH_RUST_LOG` | `warn` (the services' `RUST_LOG`) |
//! | `BENCH_MEMORY_N` / `BENCH_MEMORY_SECS` | 60000 / 30 (maximum-size products queued, seconds watched) |
//! | `BENCH_WARMUP_SECS` / `BENCH_DURATION_SECS` | 3 / 10 (per load run) |
//! | `BENCH_CONCURRENCY` | `1,16,64` |
//! | `BENCH_SERVICE_BIN` | `target/release/products-service` |
//! | `BENCH_OUT_JSON` / `BENCH_OUT_MD` | `bench/results/<date>.json` / `.md` |
//!
//! Every service started runs with events on (the service's default) and
//! publishes to the run's own events topic (`Names::topic_events` for the
//! ingested catalog, one per other database: `service::events_topic`).
//! | `KAFKA_BROKERS`, `MONGO_URI`, `REDIS_URL` | the local stack's addresses |

mod catalog;
mod events;
mod extras;
mod freshness;
mod grpc_ghz;
mod ingest;
mod kafka;
mod load;
mod memory;
mod profile;
mod reads;
mod report;
mod scale;
mod search;
mod service;
mod tracing_cost;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{
    catalog::BULK_BATCH_SIZES,
    kafka::{delete_topics, delete_topics_and_groups},
};

pub(crate) const CATEGORY: &str = "65a1f0c2e4b0a1b2c3d4e5f7";
pub(crate) const PARTITIONS: i32 = 3;

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
    /// Which parts run (`BENCH_SECTIONS`, default
    /// `ingest,scale,freshness,events,search,reads,memory,grpc,tracing`).
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
            sections: env_or(
                "BENCH_SECTIONS",
                "ingest,scale,freshness,events,search,reads,memory,grpc,tracing",
            )
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
    /// The change-event topic every service of the run publishes to
    /// (`APP__EVENTS__TOPIC`), so that runs leave `product-events` alone.
    pub topic_events: String,
    pub group: String,
    pub raw_group: String,
    pub database: String,
    pub read_database: String,
    pub bulk_database_prefix: String,
    /// The small catalog of section `scale`.
    pub scale_database: String,
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
            topic_events: format!("bench-{id}-events"),
            group: format!("bench-{id}-service"),
            raw_group: format!("bench-{id}-raw"),
            database: format!("bench_{id}"),
            read_database: format!("bench_{id}_reads"),
            bulk_database_prefix: format!("bench_{id}_bulk"),
            scale_database: format!("bench_{id}_scale"),
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
    if wants("scale") && !wants("ingest") {
        bail!("section scale measures the ingested catalog: BENCH_SECTIONS=ingest,scale");
    }
    if wants("search") && !wants("ingest") {
        bail!("section search searches the ingested catalog: BENCH_SECTIONS=ingest,search");
    }
    let memory = if wants("memory") {
        Some(memory::memory_bound(opts, names).await?)
    } else {
        None
    };
    let memory_peak = memory.as_ref().map(|m| m["peak_rss_bytes"].clone());
    if !wants("ingest") {
        let freshness = if wants("freshness") {
            Some(freshness::run(opts, names, &names.database).await?)
        } else {
            None
        };
        let events = if wants("events") {
            Some(events::run(opts, names, mongo).await?)
        } else {
            None
        };
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
        merge_catalog(&mut out, None, None, freshness, None);
        merge_events(&mut out, events);
        return Ok(out);
    }
    let mut errors: u64 = 0;
    let machine = report::machine(opts, mongo).await;
    let ingest = ingest::run(opts, names, mongo).await?;
    errors += ingest.errors;
    let ingest_ratio = ingest.ratio;

    // 202 → readable, on the catalog as ingested (before `scale` rewrites it:
    // its updates leave FerretDB's write-ahead log long, see docs/LOCAL-STACK.md).
    let freshness = if wants("freshness") {
        Some(freshness::run(opts, names, &names.database).await?)
    } else {
        None
    };
    // Reads, updates and deletes on the catalog, at two sizes.
    let scale = if wants("scale") {
        Some(scale::run(opts, names, mongo, &ingest.ids, ingest.rate).await?)
    } else {
        None
    };

    // What change events cost: ingest on vs off, relay latency.
    let events = if wants("events") {
        Some(events::run(opts, names, mongo).await?)
    } else {
        None
    };

    // Search from the index on the ingested catalog.
    let search = if wants("search") {
        Some(search::run(opts, names, &ingest.ids).await?)
    } else {
        None
    };

    // 2-4. REST and gRPC reads and writes (skipped with BENCH_SECTIONS=ingest).
    let (rest, grpc, writes, idle_rss) = if opts.sections.iter().any(|s| s == "reads") {
        let reads = reads::reads(opts, names, mongo).await?;
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
        "ingest": ingest.json,
        "rest_reads": rest,
        "rest_writes": writes,
        "grpc": grpc,
        "memory_bound": memory,
        "grpc_ghz": extras.grpc,
        "tracing": extras.tracing,
    });
    merge_extras(&mut out, &extras);
    merge_catalog(&mut out, Some(&ingest), scale, freshness, idle_rss);
    merge_events(&mut out, events);
    merge_search(&mut out, search);
    Ok(out)
}

/// The top-level figures and targets of section `search`; its errors are added.
fn merge_search(out: &mut Value, search: Option<Value>) {
    let Some(x) = search else {
        out["search"] = Value::Null;
        return;
    };
    for key in [
        "search_ratio",
        "search_p50_ms_100k",
        "search_p99_ms_100k",
        "search_rebuild_secs",
        "searchable_p99_ms",
    ] {
        out[key] = x[key].clone();
    }
    let targets = &mut out["targets"];
    targets["search_ratio_min"] = json!(search::RATIO_MIN);
    targets["search_p50_ms_100k_max"] = json!(search::P50_MAX_MS);
    targets["search_p99_ms_100k_max"] = json!(search::P99_MAX_MS);
    targets["search_rebuild_secs_max"] = json!(search::REBUILD_MAX_SECS);
    targets["searchable_p99_ms_max"] = json!(search::SEARCHABLE_P99_MAX_MS);
    out["errors"] = json!(out["errors"].as_u64().unwrap_or(0) + x["errors"].as_u64().unwrap_or(0));
    out["search"] = x;
}

/// The top-level figures and target of section `events`; its errors are added.
fn merge_events(out: &mut Value, events: Option<Value>) {
    let Some(e) = events else {
        out["events"] = Value::Null;
        return;
    };
    for key in [
        "events_ingest_ratio",
        "events_relay_p50_ms",
        "events_relay_p99_ms",
    ] {
        out[key] = e[key].clone();
    }
    out["targets"]["events_ingest_ratio_min"] = json!(events::RATIO_MIN);
    out["errors"] = json!(out["errors"].as_u64().unwrap_or(0) + e["errors"].as_u64().unwrap_or(0));
    out["events"] = e;
}

/// The top-level figures and targets of sections `ingest` (`first_apply_ms`,
/// `peak_rss_bytes`), `scale` and `freshness`; their errors are added.
fn merge_catalog(
    out: &mut Value,
    ingest: Option<&ingest::Section>,
    scale: Option<Value>,
    freshness: Option<Value>,
    idle_rss: Option<u64>,
) {
    let mut errors = 0;
    if let Some(i) = ingest {
        out["first_apply_ms"] = json!(round(i.first_applied_secs * 1000.0, 0));
        out["peak_rss_bytes"] = json!(i.peak_rss);
        out["targets"]["first_apply_ms_max"] = json!(3000);
        // Issue 15: peak RSS during the ingest ≤ 2 × idle RSS + 64 MiB.
        out["targets"]["peak_rss_bytes_max"] = json!(idle_rss.map(|idle| 2 * idle + (64 << 20)));
    }
    if let Some(s) = &scale {
        for key in [
            "update_apply_ratio",
            "scale_flatness",
            "delete_apply_per_sec",
        ] {
            out[key] = s[key].clone();
        }
        out["uncached_get_p50_ms_100k"] = s["uncached_get_p50_ms_big"].clone();
        out["targets"]["uncached_get_p50_ms_100k_max"] = json!(scale::GET_P50_MAX_MS);
        out["targets"]["update_apply_ratio_min"] = json!(scale::UPDATE_RATIO_MIN);
        out["targets"]["scale_flatness_max"] = json!(scale::FLATNESS_MAX);
        errors += s["errors"].as_u64().unwrap_or(0);
    }
    if let Some(f) = &freshness {
        out["freshness_p50_ms"] = f["freshness_p50_ms"].clone();
        out["freshness_p99_ms"] = f["freshness_p99_ms"].clone();
        out["targets"]["freshness_p99_ms_max"] = json!(freshness::P99_MAX_MS);
        errors += f["errors"].as_u64().unwrap_or(0);
    }
    out["errors"] = json!(out["errors"].as_u64().unwrap_or(0) + errors);
    out["scale"] = scale.unwrap_or(Value::Null);
    out["freshness"] = freshness.unwrap_or(Value::Null);
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

async fn cleanup(opts: &Opts, names: &Names, mongo: &mongodb::Client) -> Result<()> {
    mongo.database(&names.database).drop().await?;
    mongo.database(&names.read_database).drop().await?;
    mongo.database(&names.scale_database).drop().await?;
    for batch in BULK_BATCH_SIZES {
        mongo
            .database(&format!("{}{batch}", names.bulk_database_prefix))
            .drop()
            .await?;
    }
    delete_topics_and_groups(opts, names, &[&names.group, &names.raw_group]).await?;
    let mut events_topics = vec![names.topic_events.clone()];
    if let Ok(used) = service::EVENT_TOPICS.lock() {
        events_topics.extend(used.iter().cloned());
    }
    events_topics.sort();
    events_topics.dedup();
    let events_topics: Vec<&str> = events_topics.iter().map(String::as_str).collect();
    delete_topics(opts, &events_topics).await?;
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
