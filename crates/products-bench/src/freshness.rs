//! Section `freshness`: how long after its 202 a REST write is readable, at
//! a steady write rate. Open loop: `BENCH_FRESHNESS_RATE` (1,000) POSTs per
//! second on a fixed schedule, whatever the answers' latency (a closed loop
//! would slow down with the service and hide the backlog). After each 202,
//! GET of the new id every `BENCH_FRESHNESS_POLL_MS` (5 ms, the first one
//! after 5 ms) until it answers 200: the time from receiving the 202 to receiving that
//! 200 is the write's freshness (an upper bound, within one poll interval).
//! Every write is sent, every `BENCH_FRESHNESS_SAMPLE`th (4th) is polled, and
//! at most `BENCH_FRESHNESS_POLLERS` (64) GETs are in flight: a GET of an id
//! not stored yet reads the database, and polling every write at 1,000/s
//! loads FerretDB (on the same 2 cores) enough to slow the very consumer it
//! waits for (BENCHMARKS.md). Many ids are in flight at once. The first `BENCH_WARMUP_SECS` of writes are
//! not counted, then `BENCH_FRESHNESS_SECS` (10) are.
//!
//! The instance runs as deployed (cache on, consumer on) against the run's
//! catalog database (the N ingested products, when `ingest` ran), with topics
//! and a consumer group of its own.

use std::{
    fmt::Write as _,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::{
    env_num,
    kafka::{create_topics, delete_topics_and_groups},
    report, round,
    service::{Service, ServiceOpts},
    Names, Opts, CATEGORY,
};

pub const P99_MAX_MS: f64 = 250.0;
/// A write not readable within this long counts as an error.
const READABLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What happened to one write.
#[derive(Default)]
struct Sample {
    /// Counted (sent after the warm-up).
    measured: bool,
    /// How late the POST left against its schedule.
    lag_us: u64,
    post_us: Option<u64>,
    fresh_us: Option<u64>,
    gets: u32,
    error: Option<String>,
}

pub async fn run(opts: &Opts, names: &Names, database: &str) -> Result<Value> {
    let rate = env_num("BENCH_FRESHNESS_RATE", 1000)? as f64;
    let secs = env_num("BENCH_FRESHNESS_SECS", 10)?;
    let poll = Duration::from_millis(env_num("BENCH_FRESHNESS_POLL_MS", 5)?);
    let pollers = env_num("BENCH_FRESHNESS_POLLERS", 64)? as usize;
    let sample = env_num("BENCH_FRESHNESS_SAMPLE", 4)?.max(1) as usize;
    let mut names = names.clone();
    names.topic_create = format!("bench-{}-fresh-create", names.id);
    names.topic_update = format!("bench-{}-fresh-update", names.id);
    names.topic_dlq = format!("bench-{}-fresh-dlq", names.id);
    names.group = format!("bench-{}-fresh", names.id);
    create_topics(opts, &names).await?;
    let result = async {
        let svc = Service::start(
            opts,
            &names,
            ServiceOpts {
                name: "freshness",
                database,
                redis: true,
                consumer: true,
            },
        )
        .await?;
        let r = measure(
            opts,
            &svc,
            rate,
            Duration::from_secs(secs),
            poll,
            pollers,
            sample,
        )
        .await;
        svc.stop().await?;
        r
    }
    .await;
    delete_topics_and_groups(opts, &names, &[&names.group]).await?;
    let mut r = result?;
    r["command"] = json!(format!(
        "products-bench freshness: POST /api/v1/products open loop at {rate:.0}/s ({} s warm-up, then {secs} s counted), every {sample}th 202's id polled with GET every {} ms until 200, at most {pollers} GETs at once (cache and consumer on, database {database}, topics {})",
        opts.warmup.as_secs(),
        poll.as_millis(),
        names.topic_create
    ));
    Ok(r)
}

async fn measure(
    opts: &Opts,
    svc: &Service,
    rate: f64,
    duration: Duration,
    poll: Duration,
    pollers: usize,
    sample: usize,
) -> Result<Value> {
    let pollers_max = pollers;
    let pollers = Arc::new(tokio::sync::Semaphore::new(pollers));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let base = Arc::new(format!("http://{}/api/v1/products", svc.http));
    let body = json!({"categoryId": CATEGORY, "name": "Bench fresh", "description": "Written by products-bench",
        "price": 9.5, "quantity": 3, "rating": 7});
    let body = Arc::new(body.to_string());

    // One write first: the consumer has joined its group and applies.
    let first = write_and_poll(
        &client,
        &base,
        &body,
        Instant::now(),
        Some(poll),
        &pollers,
        false,
    )
    .await;
    if let Some(e) = first.error {
        bail!("freshness: the first write failed: {e}");
    }

    let ops_before = svc.mongo_operations().await.unwrap_or(Value::Null);
    let cpu_before = svc.cpu_secs();
    let period = Duration::from_secs_f64(1.0 / rate);
    let total = ((opts.warmup + duration).as_secs_f64() * rate) as usize;
    let warm = (opts.warmup.as_secs_f64() * rate) as usize;
    let start = Instant::now() + Duration::from_millis(10);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let at = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(at.into()).await;
        let (client, base, body, pollers) =
            (client.clone(), base.clone(), body.clone(), pollers.clone());
        tasks.push(tokio::spawn(async move {
            let poll = (i % sample == 0).then_some(poll);
            write_and_poll(&client, &base, &body, at, poll, &pollers, i >= warm).await
        }));
    }
    let sent_secs = start.elapsed().as_secs_f64();
    let mut samples = Vec::with_capacity(total);
    for t in tasks {
        samples.push(t.await?);
    }
    let service_cpu = svc.cpu_secs().zip(cpu_before).map(|(a, b)| round(a - b, 2));
    let ops = ops_delta(
        &svc.mongo_operations().await.unwrap_or(Value::Null),
        &ops_before,
    );
    let measured: Vec<&Sample> = samples.iter().filter(|s| s.measured).collect();
    let errors: Vec<&String> = measured.iter().filter_map(|s| s.error.as_ref()).collect();
    let mut fresh: Vec<u64> = measured.iter().filter_map(|s| s.fresh_us).collect();
    let mut post: Vec<u64> = measured.iter().filter_map(|s| s.post_us).collect();
    let mut lag: Vec<u64> = measured.iter().map(|s| s.lag_us).collect();
    let gets: u64 = measured.iter().map(|s| u64::from(s.gets)).sum();
    let polled = measured.iter().filter(|s| s.gets > 0).count().max(1);
    let (p50, p99) = (pct(&mut fresh, 50.0), pct(&mut fresh, 99.0));
    eprintln!(
        "freshness: {} writes at {rate:.0}/s: readable after p50 {p50:?} ms, p99 {p99:?} ms, max {:?} ms; POST p99 {:?} ms; schedule lag p99 {:?} ms; {:.1} GETs per polled write; {} errors",
        measured.len(),
        pct(&mut fresh, 100.0),
        pct(&mut post, 99.0),
        pct(&mut lag, 99.0),
        gets as f64 / polled as f64,
        errors.len()
    );
    Ok(json!({
        "rate_per_s": rate,
        "sent_per_s": round(total as f64 / sent_secs, 0),
        "writes": measured.len(),
        "readable": fresh.len(),
        "freshness_p50_ms": p50,
        "freshness_p99_ms": p99,
        "freshness_p999_ms": pct(&mut fresh, 99.9),
        "freshness_max_ms": pct(&mut fresh, 100.0),
        "post_p50_ms": pct(&mut post, 50.0),
        "post_p99_ms": pct(&mut post, 99.0),
        "schedule_lag_p99_ms": pct(&mut lag, 99.0),
        "gets_per_polled_write": round(gets as f64 / polled as f64, 2),
        "poll_ms": poll.as_millis() as u64,
        "pollers": pollers_max,
        "sample_every": sample,
        "errors": errors.len(),
        "first_error": errors.first(),
        "service_cpu_secs": service_cpu,
        "mongodb_operations": ops,
    }))
}

/// `mongodb_operation_duration_seconds` per operation during the run (warm-up
/// included): count and mean.
fn ops_delta(after: &Value, before: &Value) -> Value {
    let mut out = json!({});
    for (op, a) in after.as_object().into_iter().flatten() {
        let b = &before[op];
        let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
        let count = f(a, "count") - f(b, "count");
        if count > 0.0 {
            let secs = f(a, "total_secs") - f(b, "total_secs");
            out[op] = json!({"count": count, "mean_ms": round(secs / count * 1000.0, 3)});
        }
    }
    out
}

/// POST at `scheduled`, then GET until readable.
async fn write_and_poll(
    client: &reqwest::Client,
    base: &str,
    body: &str,
    scheduled: Instant,
    poll: Option<Duration>,
    pollers: &tokio::sync::Semaphore,
    measured: bool,
) -> Sample {
    let mut s = Sample {
        measured,
        ..Sample::default()
    };
    let sent = Instant::now();
    s.lag_us = sent.saturating_duration_since(scheduled).as_micros() as u64;
    let answer = client
        .post(base)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await;
    let id = match answer {
        Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => match r.json::<Value>().await {
            Ok(v) => v["productId"].as_str().map(str::to_owned),
            Err(e) => {
                s.error = Some(format!("POST answer: {e}"));
                return s;
            }
        },
        Ok(r) => {
            s.error = Some(format!("POST answered {}", r.status()));
            return s;
        }
        Err(e) => {
            s.error = Some(format!("POST: {e}"));
            return s;
        }
    };
    let accepted = Instant::now();
    s.post_us = Some((accepted - sent).as_micros() as u64);
    let Some(id) = id else {
        s.error = Some("POST answer without productId".to_owned());
        return s;
    };
    // Not in the sample: written, not polled.
    let Some(poll) = poll else {
        return s;
    };
    let url = format!("{base}/{id}");
    loop {
        // Not at once: a product is never readable before its record went
        // through Kafka and the consumer, and every early GET is a database read.
        tokio::time::sleep(poll).await;
        s.gets += 1;
        let answer = {
            let _permit = pollers.acquire().await;
            client.get(&url).send().await
        };
        match answer {
            Ok(r) if r.status().is_success() => {
                s.fresh_us = Some(accepted.elapsed().as_micros() as u64);
                return s;
            }
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {}
            Ok(r) => {
                s.error = Some(format!("GET answered {}", r.status()));
                return s;
            }
            Err(e) => {
                s.error = Some(format!("GET: {e}"));
                return s;
            }
        }
        if accepted.elapsed() > READABLE_TIMEOUT {
            s.error = Some(format!("not readable within {READABLE_TIMEOUT:?}"));
            return s;
        }
    }
}

/// The `p`th percentile in ms (nearest rank), None without samples.
pub(crate) fn pct(us: &mut [u64], p: f64) -> Option<f64> {
    if us.is_empty() {
        return None;
    }
    us.sort_unstable();
    let idx = ((p / 100.0) * us.len() as f64).ceil() as usize;
    Some(round(us[idx.clamp(1, us.len()) - 1] as f64 / 1000.0, 3))
}

/// Key-figure rows of the main table.
pub fn key_rows(s: &mut String, r: &Value) {
    let f = &r["freshness"];
    if f.is_null() {
        return;
    }
    let p99 = &r["freshness_p99_ms"];
    let _ = writeln!(
        s,
        "| `freshness_p99_ms` = 202 → readable by GET, p99, at {} writes/s (p50 {} ms) | {} | ≤ {P99_MAX_MS} | {} |",
        report::num(&f["rate_per_s"]),
        report::num(&r["freshness_p50_ms"]),
        report::num(p99),
        report::met(p99.as_f64().is_some_and(|x| x <= P99_MAX_MS) && f["errors"].as_u64() == Some(0))
    );
}

/// The section's table.
pub fn tables(s: &mut String, r: &Value) {
    let f = &r["freshness"];
    if f.is_null() {
        return;
    }
    let _ = writeln!(
        s,
        "\n**Freshness** (REST POST, open loop; then GET until readable)\n"
    );
    let _ = writeln!(s, "| writes/s asked | sent/s | writes | readable p50 ms | p99 ms | p99.9 ms | max ms | POST p99 ms | GETs per polled write | errors | command |\n|---|---|---|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        s,
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        report::num(&f["rate_per_s"]),
        report::num(&f["sent_per_s"]),
        report::num(&f["writes"]),
        report::num(&f["freshness_p50_ms"]),
        report::num(&f["freshness_p99_ms"]),
        report::num(&f["freshness_p999_ms"]),
        report::num(&f["freshness_max_ms"]),
        report::num(&f["post_p99_ms"]),
        report::num(&f["gets_per_polled_write"]),
        report::num(&f["errors"]),
        f["command"].as_str().unwrap_or("")
    );
}
