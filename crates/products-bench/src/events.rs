//! Section `events`: what product change events (docs/EVENTS.md) cost.
//!
//! 1. **Ingest, events off vs on.** The ingest of section `ingest`
//!    (`BENCH_EVENTS_N`, 20,000 create commands pre-produced, then the service
//!    started with its consumer and timed until it has settled them all), run
//!    `BENCH_EVENTS_REPEAT` (3) times each way, alternating off, on, off, on, …,
//!    each on fresh topics, group and database: once with
//!    `APP__EVENTS__ENABLED=false`, once with events on. The best run of each
//!    way counts: `events_ingest_ratio` = on / off, from the rate between the
//!    first product stored and the last (the start-up, the same both ways, is
//!    left out so that it does not dilute the per-change cost; the rate from
//!    the process start is reported too).
//! 2. **Relay latency.** Each events topic is created by the bench before the
//!    service starts: compacted, the service's partitions, and
//!    `message.timestamp.type=LogAppendTime`, so a record's timestamp is when
//!    the broker appended it. An event's latency = that timestamp − its
//!    `ce_time` (when the change was stored; same machine, same clock, both
//!    in ms). Measured (a) over the events-on ingest bursts (a backlog of N
//!    changes at once) and (b) at a steady rate, the headline: REST `PUT` of
//!    distinct products of the last events-on catalog, open loop at
//!    `BENCH_EVENTS_RATE` (500/s), `BENCH_WARMUP_SECS` not counted, then
//!    `BENCH_EVENTS_SECS` (10 s). The events topic is read until every change
//!    counted has its event (by `ce_id`) or `BENCH_EVENTS_WAIT_SECS` (60)
//!    passed: a change without its event is an error.
//! 3. **The database's part.** The same N documents inserted straight with
//!    `insert_many` (batches of 5,000) without and with the `event` field the
//!    service stores (one string), twice each: FerretDB's time and CPU for the
//!    field alone.

use std::{
    collections::{hash_map::Entry, HashMap, HashSet},
    fmt::Write as _,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use mongodb::bson::oid::ObjectId;
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::{Headers, Message},
    ClientConfig, Offset, TopicPartitionList,
};
use serde_json::{json, Value};

use crate::{
    catalog::bulk_insert_with,
    env_num,
    freshness::pct,
    ingest::ingest,
    kafka::{
        create_events_topic, create_topics, delete_topics, delete_topics_and_groups,
        produce_creates,
    },
    report, round,
    service::{self, Service, ServiceOpts},
    Names, Opts, CATEGORY,
};

/// Issue 13: ingest with events on ≥ 0.8 × off.
pub const RATIO_MIN: f64 = 0.8;

/// The first copy of one event as read back from its topic.
struct Event {
    subject: String,
    kind: String,
    /// Broker append time − `ce_time`, ms.
    latency_ms: Option<i64>,
}

/// What was read from an events topic.
#[derive(Default)]
struct Read {
    /// Wanted events by `ce_id` (the first copy of each).
    events: HashMap<String, Event>,
    /// Records of wanted events whose `ce_id` was read before.
    copies: u64,
    records: u64,
    secs: f64,
}

impl Read {
    /// p50, p99, max (ms) and the summary JSON of the wanted events.
    fn summary(&self, expected: usize) -> Value {
        let mut us: Vec<u64> = self
            .events
            .values()
            .filter_map(|e| e.latency_ms)
            .map(|ms| ms.max(0) as u64 * 1000)
            .collect();
        json!({
            "changes": expected,
            "events": self.events.len(),
            "missing": expected.saturating_sub(self.events.len()),
            "copies": self.copies,
            "records_read": self.records,
            "relay_p50_ms": pct(&mut us, 50.0),
            "relay_p99_ms": pct(&mut us, 99.0),
            "relay_max_ms": pct(&mut us, 100.0),
            "read_secs": round(self.secs, 2),
        })
    }
}

/// Reads `topic` from the beginning until `expected` distinct wanted events
/// (by `ce_id`) arrived or `wait` passed. Blocking.
fn read_events(
    opts: &Opts,
    topic: &str,
    wanted: impl Fn(&Event) -> bool,
    expected: usize,
    wait: Duration,
) -> Result<Read> {
    let start = Instant::now();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &opts.brokers)
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        assignment.add_partition_offset(topic, p.id(), Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut read = Read::default();
    while read.events.len() < expected && start.elapsed() < wait {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m?;
        read.records += 1;
        let mut h: HashMap<&str, &str> = HashMap::new();
        for header in m.headers().into_iter().flat_map(|hs| hs.iter()) {
            if let Some(v) = header.value.and_then(|v| std::str::from_utf8(v).ok()) {
                h.insert(header.key, v);
            }
        }
        let time = h
            .get("ce_time")
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        let event = Event {
            subject: h.get("ce_subject").copied().unwrap_or_default().to_owned(),
            kind: h.get("ce_type").copied().unwrap_or_default().to_owned(),
            latency_ms: m
                .timestamp()
                .to_millis()
                .zip(time)
                .map(|(appended, t)| appended - t.timestamp_millis()),
        };
        if !wanted(&event) {
            continue;
        }
        let id = h.get("ce_id").copied().unwrap_or_default().to_owned();
        match read.events.entry(id) {
            Entry::Vacant(v) => {
                v.insert(event);
            }
            Entry::Occupied(_) => read.copies += 1,
        }
    }
    read.secs = start.elapsed().as_secs_f64();
    Ok(read)
}

/// `names` with topics, group, database and events topic of their own.
fn names_for(names: &Names, tag: &str) -> Names {
    let mut n = names.clone();
    n.topic_create = format!("bench-{}-{tag}-create", names.id);
    n.topic_update = format!("bench-{}-{tag}-update", names.id);
    n.topic_dlq = format!("bench-{}-{tag}-dlq", names.id);
    n.topic_events = format!("bench-{}-{tag}-events", names.id);
    n.group = format!("bench-{}-{tag}", names.id);
    n.database = format!("bench_{}_{tag}", names.id);
    n
}

/// CPU seconds of a local-stack process since `before` (None: not found).
fn stack_cpu(pid: Option<u32>, before: Option<f64>) -> Option<f64> {
    pid.and_then(service::process_cpu_secs)
        .zip(before)
        .map(|(after, before)| round(after - before, 2))
}

/// One ingest run, events on or off; its JSON and its catalog's ids.
async fn ingest_run(
    opts: &Opts,
    names: &Names,
    mongo: &mongodb::Client,
    on: bool,
    wait: Duration,
) -> Result<(Value, Vec<ObjectId>)> {
    create_topics(opts, names).await?;
    if on {
        create_events_topic(opts, &names.topic_events).await?;
    }
    let (ids, _) = produce_creates(opts, &names.topic_create)?;
    let kafka = service::stack_pid("kafka-1");
    let kafka_before = kafka.and_then(service::process_cpu_secs);
    let (log, enabled) = if on {
        ("events-on", "true")
    } else {
        ("events-off", "false")
    };
    let run = ingest(
        opts,
        names,
        mongo,
        log,
        &[("APP__EVENTS__ENABLED", enabled)],
    )
    .await?;
    let kafka_cpu = stack_cpu(kafka, kafka_before);
    let steady_secs = (run.secs - run.first_applied_secs).max(1e-3);
    let mut out = json!({
        "events": on,
        "n": opts.n,
        "products_per_s": round(run.applied as f64 / steady_secs, 0),
        "products_per_s_from_start": round(run.applied as f64 / run.secs, 0),
        "secs": round(run.secs, 3),
        "first_applied_secs": round(run.first_applied_secs, 3),
        "service_cpu_secs": run.service_cpu_secs.map(|s| round(s, 2)),
        "ferretdb_cpu_secs": run.ferretdb_cpu_secs.map(|s| round(s, 2)),
        "kafka_cpu_secs": kafka_cpu,
        "applied": run.applied,
        "missing": run.missing,
        "dead_letters": run.dead_letters,
        "peak_rss_bytes": run.peak_rss,
        "mongodb_operations": run.mongo_ops,
        "errors": run.missing + run.dead_letters,
    });
    eprintln!(
        "events: ingest events {}: {} products/s after the first stored ({} from start), service CPU {:?} s, FerretDB CPU {:?} s",
        if on { "on" } else { "off" },
        out["products_per_s"],
        out["products_per_s_from_start"],
        out["service_cpu_secs"],
        out["ferretdb_cpu_secs"],
    );
    if on {
        // The service stopped cleanly: its relay published what it had.
        let (o, topic, n) = (opts.clone(), names.topic_events.clone(), opts.n);
        let read = tokio::task::spawn_blocking(move || {
            read_events(&o, &topic, |e| e.kind == "product.created", n, wait)
        })
        .await??;
        let ours: HashSet<String> = ids.iter().map(|id| id.to_hex()).collect();
        let unknown = read
            .events
            .values()
            .filter(|e| !ours.contains(&e.subject))
            .count();
        let relay = read.summary(opts.n);
        eprintln!("events: burst relay latency {relay}");
        let errors = out["errors"].as_u64().unwrap_or(0)
            + relay["missing"].as_u64().unwrap_or(0)
            + unknown as u64;
        out["relay"] = relay;
        out["relay"]["unknown_products"] = json!(unknown);
        out["errors"] = json!(errors);
    }
    Ok((out, ids))
}

/// The section: alternating ingest runs, then the steady-rate relay latency.
pub async fn run(opts: &Opts, names: &Names, mongo: &mongodb::Client) -> Result<Value> {
    let mut opts = opts.clone();
    opts.n = env_num("BENCH_EVENTS_N", 20_000)? as usize;
    let repeat = env_num("BENCH_EVENTS_REPEAT", 3)?.max(1);
    let wait = Duration::from_secs(env_num("BENCH_EVENTS_WAIT_SECS", 60)?);
    let mut runs = Vec::new();
    let mut tags = Vec::new();
    let mut last_on = None;
    let result = async {
        for k in 0..repeat {
            for on in [false, true] {
                let tag = format!("ev{}{k}", if on { "on" } else { "off" });
                let n = names_for(names, &tag);
                tags.push(tag);
                let (r, ids) = ingest_run(&opts, &n, mongo, on, wait).await?;
                runs.push(r);
                if on {
                    last_on = Some((n, ids));
                }
            }
        }
        let Some((catalog, ids)) = &last_on else {
            bail!("events: no events-on run");
        };
        let database = database_share(&opts, names, mongo, ids).await?;
        let mut steady = steady(&opts, names, &catalog.database, ids, wait).await?;
        steady["database_share"] = database;
        Ok(steady)
    }
    .await;
    for tag in &tags {
        let n = names_for(names, tag);
        mongo.database(&n.database).drop().await?;
        delete_topics_and_groups(&opts, &n, &[&n.group]).await?;
        delete_topics(&opts, &[&n.topic_events]).await?;
    }
    let steady = result?;

    let best = |on: bool| {
        runs.iter()
            .filter(|r| r["events"] == on)
            .max_by(|a, b| {
                let rate = |r: &Value| r["products_per_s"].as_f64().unwrap_or(0.0);
                rate(a).total_cmp(&rate(b))
            })
            .cloned()
            .unwrap_or(Value::Null)
    };
    let (off, on) = (best(false), best(true));
    let rate = |r: &Value, k: &str| r[k].as_f64().unwrap_or(0.0);
    let ratio = rate(&on, "products_per_s") / rate(&off, "products_per_s").max(1.0);
    let ratio_from_start =
        rate(&on, "products_per_s_from_start") / rate(&off, "products_per_s_from_start").max(1.0);
    // The burst's latency over every events-on run.
    let burst_p99 = runs
        .iter()
        .filter_map(|r| r["relay"]["relay_p99_ms"].as_f64())
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let errors: u64 = runs
        .iter()
        .filter_map(|r| r["errors"].as_u64())
        .sum::<u64>()
        + steady["errors"].as_u64().unwrap_or(0);
    Ok(json!({
        "n": opts.n,
        "repeat": repeat,
        "events_ingest_ratio": round(ratio, 3),
        "events_ingest_ratio_from_start": round(ratio_from_start, 3),
        "products_per_s_off": off["products_per_s"],
        "products_per_s_on": on["products_per_s"],
        "burst_relay_p50_ms": on["relay"]["relay_p50_ms"],
        "burst_relay_p99_ms": on["relay"]["relay_p99_ms"],
        "burst_relay_max_ms": on["relay"]["relay_max_ms"],
        "burst_relay_p99_ms_worst": burst_p99,
        "events_relay_p50_ms": steady["relay"]["relay_p50_ms"],
        "events_relay_p99_ms": steady["relay"]["relay_p99_ms"],
        "errors": errors,
        "runs": runs,
        "steady": steady,
        "command": format!("products-bench events: {repeat} × (ingest of {} create commands with APP__EVENTS__ENABLED=false, then with events on), each on fresh topics, group and database; best of each way; relay latency = LogAppendTime of the event record − its ce_time", opts.n),
    }))
}

/// The database's part of the cost: the same N documents inserted with
/// `insert_many` (batches of 5,000, the consumer's largest) without and with
/// the `event` field, alternating, FerretDB's CPU seconds of each.
async fn database_share(
    opts: &Opts,
    names: &Names,
    mongo: &mongodb::Client,
    ids: &[ObjectId],
) -> Result<Value> {
    let ferretdb = service::stack_pid("ferretdb");
    let mut out = Vec::new();
    for k in 0..2 {
        for with_event in [false, true] {
            let db = mongo.database(&format!("bench_{}_evbulk{k}{with_event}", names.id));
            let before = ferretdb.and_then(service::process_cpu_secs);
            let secs = bulk_insert_with(opts, &db, ids, 5000, with_event).await?;
            let cpu = stack_cpu(ferretdb, before);
            db.drop().await?;
            out.push(
                json!({"event_field": with_event, "docs_per_s": round(ids.len() as f64 / secs, 0),
                "secs": round(secs, 3), "ferretdb_cpu_secs": cpu}),
            );
        }
    }
    eprintln!("events: insert_many without / with the event field: {out:?}");
    Ok(
        json!({"runs": out, "command": format!("products-bench: insert_many of the same {} documents, batches of 5000, with the service's indexes, without / with an `event` field (one string relay|seq|id|type|time|traceparent|tracestate, as the service stores it), twice each", ids.len())}),
    )
}

/// Relay latency at a steady rate: open-loop REST PUTs of distinct products
/// of `database` (holding `ids`), events on.
async fn steady(
    opts: &Opts,
    names: &Names,
    database: &str,
    ids: &[ObjectId],
    wait: Duration,
) -> Result<Value> {
    let rate = env_num("BENCH_EVENTS_RATE", 500)? as f64;
    let secs = env_num("BENCH_EVENTS_SECS", 10)?;
    let total = ((opts.warmup.as_secs_f64() + secs as f64) * rate) as usize;
    let warm = (opts.warmup.as_secs_f64() * rate) as usize;
    if total > ids.len() {
        bail!(
            "events: {total} updates of distinct products need BENCH_EVENTS_N ≥ {total} (is {})",
            ids.len()
        );
    }
    let mut n = names_for(names, "evsteady");
    n.database = database.to_owned();
    create_topics(opts, &n).await?;
    create_events_topic(opts, &n.topic_events).await?;
    let result = async {
        let svc = Service::start_with_env(
            opts,
            &n,
            ServiceOpts {
                name: "events-steady",
                database,
                redis: true,
                consumer: true,
            },
            &[("APP__EVENTS__ENABLED", "true")],
        )
        .await?;
        let r = put_open_loop(&svc, ids, rate, total, warm).await;
        // Stopping now would leave the last updates unapplied (no change,
        // no event): wait until the consumer has settled every accepted PUT.
        if let Ok((_, failed, _)) = &r {
            let accepted = total as u64 - failed;
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline {
                let settled: u64 = svc
                    .consumed(&n.topic_update)
                    .await
                    .map(|o| o.values().sum())
                    .unwrap_or(0);
                if settled >= accepted {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let cpu = svc.cpu_secs();
        let ops = svc.mongo_operations().await.unwrap_or(Value::Null);
        svc.stop().await?;
        r.map(|r| (r, cpu, ops))
    }
    .await;
    delete_topics_and_groups(opts, &n, &[&n.group]).await?;
    let ((measured, errors, cpu_during), cpu_total, ops) = result?;
    let expected = measured.len();
    let (o, topic) = (opts.clone(), n.topic_events.clone());
    let read = tokio::task::spawn_blocking(move || {
        read_events(
            &o,
            &topic,
            |e| e.kind == "product.updated" && measured.contains(&e.subject),
            expected,
            wait,
        )
    })
    .await??;
    delete_topics(opts, &[&n.topic_events]).await?;
    let relay = read.summary(expected);
    eprintln!("events: steady relay latency at {rate}/s: {relay}");
    let missing = relay["missing"].as_u64().unwrap_or(0);
    Ok(json!({
        "rate_per_s": rate,
        "secs": secs,
        "warmup_secs": opts.warmup.as_secs(),
        "accepted": expected,
        "put_errors": errors,
        "errors": errors + missing,
        "relay": relay,
        "service_cpu_secs": cpu_during.0,
        "ferretdb_cpu_secs": cpu_during.1,
        "service_cpu_secs_total": cpu_total.map(|c| round(c, 2)),
        "mongodb_operations": ops,
        "command": format!("products-bench events steady: REST PUT /api/v1/products/{{id}} of distinct products, open loop at {rate:.0}/s ({} s warm-up, then {secs} s counted), events on, topic {} (LogAppendTime); latency = record timestamp − ce_time of every counted update's event", opts.warmup.as_secs(), n.topic_events),
    }))
}

/// The PUTs; the ids (hex) of counted accepted updates, failed PUTs, and the
/// CPU seconds of the service and FerretDB during the counted part.
async fn put_open_loop(
    svc: &Service,
    ids: &[ObjectId],
    rate: f64,
    total: usize,
    warm: usize,
) -> Result<(HashSet<String>, u64, (Option<f64>, Option<f64>))> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let base = Arc::new(format!("http://{}/api/v1/products", svc.http));
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(10);
    let ferretdb = service::stack_pid("ferretdb");
    let mut cpu_at_warm = (None, None);
    let mut tasks = Vec::with_capacity(total);
    for (i, id) in ids.iter().take(total).enumerate() {
        tokio::time::sleep_until((start + period.mul_f64(i as f64)).into()).await;
        if i == warm {
            cpu_at_warm = (svc.cpu_secs(), ferretdb.and_then(service::process_cpu_secs));
        }
        let (client, base, id) = (client.clone(), base.clone(), id.to_hex());
        tasks.push(tokio::spawn(async move {
            let body = json!({"categoryId": CATEGORY, "name": format!("Bench steady {i}"),
                "description": "Updated by products-bench", "price": 4.5, "quantity": 2, "rating": 5});
            let r = client.put(format!("{base}/{id}")).json(&body).send().await;
            let ok = matches!(&r, Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED);
            (i >= warm, id, ok)
        }));
    }
    let mut measured = HashSet::new();
    let mut errors = 0;
    for t in tasks {
        let (counted, id, ok) = t.await?;
        if !ok {
            errors += 1;
        } else if counted {
            measured.insert(id);
        }
    }
    let cpu = (
        svc.cpu_secs()
            .zip(cpu_at_warm.0)
            .map(|(a, b)| round(a - b, 2)),
        stack_cpu(ferretdb, cpu_at_warm.1),
    );
    Ok((measured, errors, cpu))
}

/// Key-figure rows of the main table.
pub fn key_rows(s: &mut String, r: &Value) {
    let e = &r["events"];
    if e.is_null() {
        return;
    }
    let ratio = &r["events_ingest_ratio"];
    let _ = writeln!(
        s,
        "| `events_ingest_ratio` = ingest with events on / off ({} vs {} products/s, best of {}, N = {}) | {} | ≥ {RATIO_MIN} | {} |",
        report::num(&e["products_per_s_on"]),
        report::num(&e["products_per_s_off"]),
        report::num(&e["repeat"]),
        report::num(&e["n"]),
        report::num(ratio),
        report::met(ratio.as_f64().is_some_and(|x| x >= RATIO_MIN))
    );
    let _ = writeln!(
        s,
        "| `events_relay_p99_ms` = stored change → its event appended, p99 at {} updates/s (p50 {} ms; ingest burst p50 {} ms, p99 {} ms) | {} | — | {} missing |",
        report::num(&e["steady"]["rate_per_s"]),
        report::num(&r["events_relay_p50_ms"]),
        report::num(&e["burst_relay_p50_ms"]),
        report::num(&e["burst_relay_p99_ms"]),
        report::num(&r["events_relay_p99_ms"]),
        report::num(&e["steady"]["relay"]["missing"]),
    );
}

/// One table row: `first`, then the numbers at `pointers` in `v`, then `last`.
fn row(s: &mut String, v: &Value, first: &str, pointers: &[&str], last: &str) {
    let cells: Vec<String> = pointers
        .iter()
        .map(|p| report::num(v.pointer(p).unwrap_or(&Value::Null)))
        .collect();
    let _ = writeln!(s, "| {first} | {} |{last}", cells.join(" | "));
}

/// The section's tables.
pub fn tables(s: &mut String, r: &Value) {
    let e = &r["events"];
    if e.is_null() {
        return;
    }
    let _ = writeln!(
        s,
        "\n**Change events** ({})\n",
        e["command"].as_str().unwrap_or("")
    );
    let _ = writeln!(s, "| events | products/s (first → last stored) | from start | s | service CPU s | FerretDB CPU s | Kafka CPU s | relay p50 ms | p99 ms | max ms | missing events | errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|");
    for x in e["runs"].as_array().into_iter().flatten() {
        let on = if x["events"] == true { "on" } else { "off" };
        #[rustfmt::skip]
        let cells = ["/products_per_s", "/products_per_s_from_start", "/secs", "/service_cpu_secs",
            "/ferretdb_cpu_secs", "/kafka_cpu_secs", "/relay/relay_p50_ms", "/relay/relay_p99_ms",
            "/relay/relay_max_ms", "/relay/missing", "/errors"];
        row(s, x, on, &cells, "");
    }
    let st = &e["steady"];
    let _ = writeln!(s, "\n| steady updates/s | counted | relay p50 ms | p99 ms | max ms | missing | copies | service CPU s | FerretDB CPU s | errors | command |\n|---|---|---|---|---|---|---|---|---|---|---|");
    #[rustfmt::skip]
    let cells = ["/accepted", "/relay/relay_p50_ms", "/relay/relay_p99_ms", "/relay/relay_max_ms",
        "/relay/missing", "/relay/copies", "/service_cpu_secs", "/ferretdb_cpu_secs", "/errors"];
    let command = format!(" {} |", st["command"].as_str().unwrap_or(""));
    row(s, st, &report::num(&st["rate_per_s"]), &cells, &command);
    let db = &st["database_share"];
    let _ = writeln!(
        s,
        "\n| insert_many, `event` field | docs/s | s | FerretDB CPU s |\n|---|---|---|---|"
    );
    for x in db["runs"].as_array().into_iter().flatten() {
        let with = if x["event_field"] == true {
            "with"
        } else {
            "without"
        };
        row(
            s,
            x,
            with,
            &["/docs_per_s", "/secs", "/ferretdb_cpu_secs"],
            "",
        );
    }
    let _ = writeln!(s, "\n{}", db["command"].as_str().unwrap_or(""));
}
