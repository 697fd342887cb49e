//! `BENCH_SECTIONS=memory`: the consumer's memory is bounded in bytes. With
//! the database down, the service reads the command topics until its
//! byte-bounded buffers (`partition_buffer_bytes` per partition, librdkafka's
//! `fetch_queue_kbytes`, `create_batch_max_bytes`) are full and then pauses
//! the partitions: RSS must stay under [`RSS_BOUND`] however many maximum-size
//! products are queued (`BENCH_MEMORY_N`, default 60,000, ~105 KB each).

use std::time::{Duration, Instant};

use anyhow::Result;
use mongodb::bson::oid::ObjectId;
use rdkafka::{
    producer::{DefaultProducerContext, Producer, ThreadedProducer},
    ClientConfig,
};
use serde_json::{json, Value};

use crate::{
    env_num,
    service::{Service, ServiceOpts},
    Names, Opts, CATEGORY, PARTITIONS,
};

/// The documented bound (README, BENCHMARKS.md).
pub const RSS_BOUND: u64 = 512 * 1024 * 1024;

/// A valid product as large as the rules allow: 250-character name,
/// 500-character description, an image URL and 50 photo URLs of 2,048
/// characters each.
fn maximal_payload(id: &ObjectId, i: usize) -> Vec<u8> {
    let url = |n: usize| {
        let prefix = format!("https://img.example.com/{i}/{n}/");
        format!("{prefix}{}", "a".repeat(2048 - prefix.len()))
    };
    let name = format!("{i:0>250}");
    json!({
        "productId": id.to_hex(),
        "categoryId": CATEGORY,
        "name": name,
        "description": "d".repeat(500),
        "price": 1.5,
        "imageUrl": url(0),
        "photos": (1..=50).map(url).collect::<Vec<_>>(),
        "quantity": 1,
        "rating": 3,
    })
    .to_string()
    .into_bytes()
}

pub async fn memory_bound(opts: &Opts, names: &Names) -> Result<Value> {
    let n = env_num("BENCH_MEMORY_N", 60_000)? as usize;
    let watch = Duration::from_secs(env_num("BENCH_MEMORY_SECS", 30)?);
    let mut names = names.clone();
    names.topic_create = format!("bench-{}-memory-create", names.id);
    names.topic_update = format!("bench-{}-memory-update", names.id);
    names.topic_dlq = format!("bench-{}-memory-dlq", names.id);
    names.group = format!("bench-{}-memory", names.id);
    crate::kafka::create_topics(opts, &names).await?;
    let result = run(opts, &names, n, watch).await;
    crate::kafka::delete_topics_and_groups(opts, &names, &[&names.group]).await?;
    result
}

async fn run(opts: &Opts, names: &Names, n: usize, watch: Duration) -> Result<Value> {
    eprintln!("memory: producing {n} maximum-size products");
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &opts.brokers)
        .set("compression.type", "lz4")
        .set("linger.ms", "20")
        .set("message.max.bytes", "2097152")
        .set("queue.buffering.max.kbytes", "524288")
        .create()?;
    let started = Instant::now();
    let mut payload_bytes = 0u64;
    for i in 0..n {
        let id = ObjectId::new();
        let payload = maximal_payload(&id, i);
        payload_bytes += payload.len() as u64;
        crate::kafka::send(&producer, &names.topic_create, &id.to_hex(), payload)?;
    }
    producer.flush(Duration::from_secs(300))?;
    eprintln!(
        "memory: {:.1} GB produced in {:.0} s",
        payload_bytes as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );

    // The database is down: nothing the service reads can be applied.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut down = opts.clone();
    down.mongo_uri = format!("mongodb://{closed}/?serverSelectionTimeoutMS=500");
    let svc = Service::start_no_wait(
        &down,
        names,
        ServiceOpts {
            name: "memory",
            database: &names.database,
            redis: false,
            consumer: true,
        },
    )?;
    let watch_started = Instant::now();
    let mut peak = 0;
    while watch_started.elapsed() < watch {
        peak = peak.max(svc.rss()?.1);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (idle_rss, hwm) = svc.rss()?;
    peak = peak.max(hwm);
    svc.stop().await?;
    eprintln!(
        "memory: peak RSS {:.0} MiB with {n} products queued (bound {} MiB)",
        peak as f64 / 1048576.0,
        RSS_BOUND / 1048576
    );
    Ok(json!({
        "products_queued": n,
        "payload_bytes_queued": payload_bytes,
        "product_bytes": payload_bytes / n.max(1) as u64,
        "watched_secs": watch.as_secs(),
        "peak_rss_bytes": peak,
        "end_rss_bytes": idle_rss,
        "bound_bytes": RSS_BOUND,
        "within_bound": peak <= RSS_BOUND,
        "command": format!("make bench BENCH_SECTIONS=memory: {n} maximum-size creates pre-produced to {} ({PARTITIONS} partitions), then the service started with MongoDB unreachable (a closed port) and its VmHWM watched for {} s", names.topic_create, watch.as_secs()),
    }))
}
