//! Section `ingest`: N create commands pre-produced, the two limits (raw
//! Kafka read, bulk insert) and the service's consumer applying them all.

use std::time::{Duration, Instant};

use anyhow::Result;
use mongodb::bson::{doc, oid::ObjectId, Document};
use serde_json::{json, Value};

use crate::{
    catalog::{bulk_insert, BULK_BATCH_SIZES},
    kafka::{create_topics, dead_letters, produce_creates, raw_consume},
    round,
    service::{self, Service, ServiceOpts},
    Names, Opts, PARTITIONS,
};

/// What the section measured: its JSON and the figures other sections use.
pub struct Section {
    pub json: Value,
    /// The catalog's ids (stored in `names.database` once the ingest is done).
    pub ids: Vec<ObjectId>,
    /// Products applied per second, from the service's start.
    pub rate: f64,
    pub ratio: f64,
    pub first_applied_secs: f64,
    pub peak_rss: u64,
    pub errors: u64,
}

/// Produces N creates, measures both limits, then the service's ingest.
pub async fn run(opts: &Opts, names: &Names, mongo: &mongodb::Client) -> Result<Section> {
    let mut errors: u64 = 0;
    create_topics(opts, names).await?;

    // 1. Kafka ingest and its two limits.
    eprintln!("ingest: producing {} create commands", opts.n);
    let (ids, produce_secs) = produce_creates(opts, &names.topic_create)?;
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
    let ingest = ingest(opts, names, mongo, "ingest", &[]).await?;
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
    Ok(Section {
        json: ingest_json,
        ids,
        rate: ingest_rate,
        ratio: ingest_ratio,
        first_applied_secs: ingest.first_applied_secs,
        peak_rss: ingest.peak_rss,
        errors,
    })
}

/// One timed run of the service's consumer over `opts.n` pre-produced creates.
pub struct Ingest {
    pub secs: f64,
    /// From the service's start until the first products were stored.
    pub first_applied_secs: f64,
    /// CPU the service and FerretDB used during the run (where the time goes).
    pub service_cpu_secs: Option<f64>,
    pub ferretdb_cpu_secs: Option<f64>,
    pub applied: u64,
    pub missing: u64,
    pub dead_letters: u64,
    pub peak_rss: u64,
    pub mongo_ops: Value,
}

/// Starts the service (log `service-<name>.log`, more environment `env`) on
/// `names`' create topic, group and database, which must hold `opts.n`
/// create commands, and times it until its consumer has settled them all.
pub async fn ingest(
    opts: &Opts,
    names: &Names,
    mongo: &mongodb::Client,
    name: &'static str,
    env: &[(&str, &str)],
) -> Result<Ingest> {
    let coll = mongo
        .database(&names.database)
        .collection::<Document>("products");
    let ferretdb = service::stack_pid("ferretdb");
    let ferretdb_cpu_before = ferretdb.and_then(service::process_cpu_secs);
    let start = Instant::now();
    let svc = Service::start_no_wait_with_env(
        opts,
        names,
        ServiceOpts {
            name,
            database: &names.database,
            redis: true,
            consumer: true,
        },
        env,
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
        // Finer until the first products are stored (`first_apply_ms`).
        let pause = if first_applied_secs.is_none() {
            10
        } else {
            100
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
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
