//! Section `search` (issue 16): search from the in-memory index on the
//! ingested catalog (100,000 products, `ingest` runs first).
//!
//! 1. The RSS of a service on the catalog with the index off, then on (the
//!    difference is what the index costs), and the time from the start of
//!    the indexing service to `/ready` (= its index rebuilt from the events
//!    topic, which the ingest filled with 100,000 created events).
//! 2. wrk: cached `GET /products/{id}` at the top concurrency, and
//!    `GET /products/search?search=widget-42` (1,111 matches: widget-42,
//!    widget-420…, widget-4200…, widget-42000…) at 1 and at the top
//!    concurrency: `search_ratio` = search req/s ÷ cached GET req/s; gRPC
//!    `Search` (the same query) at 1 and the top concurrency.
//! 3. Searchable after write: gRPC creates at `BENCH_SEARCH_WRITE_RATE`/s
//!    (1,000) for `BENCH_SEARCH_WRITE_SECS` (10); every tenth is searched
//!    for (by a word only it has, every 5 ms) from its answer until found.
//! 4. A service on an empty events topic: the index filled from the
//!    database instead (time to `/ready`).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use mongodb::bson::oid::ObjectId;
use products_service::api::grpc::pb::{products_service_client::ProductsServiceClient, CreateReq};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::{
    env_num,
    kafka::delete_topics,
    load, round,
    service::{Service, ServiceOpts},
    Names, Opts, CATEGORY,
};

/// Targets of issue 16.
pub const P50_MAX_MS: f64 = 5.0;
pub const P99_MAX_MS: f64 = 20.0;
pub const RATIO_MIN: f64 = 0.3;
pub const REBUILD_MAX_SECS: f64 = 10.0;
pub const SEARCHABLE_P99_MAX_MS: f64 = 1000.0;

const QUERY: &str = "widget-42";

pub async fn run(opts: &Opts, names: &Names, ids: &[ObjectId]) -> Result<Value> {
    let mut errors = 0;
    let so = |name| ServiceOpts {
        name,
        database: &names.database,
        redis: true,
        consumer: false,
    };
    // 1. Memory without and with the index; the rebuild from the topic.
    let plain = Service::start_with_env(
        opts,
        names,
        so("search-off"),
        &[("APP__SEARCH__INDEX", "false")],
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_off = plain.rss()?.0;
    plain.stop().await?;
    let started = Instant::now();
    let svc = Service::start(opts, names, so("search")).await?;
    let rebuild_topic_secs = started.elapsed().as_secs_f64();
    let indexed = metric(&svc, "search_index_products").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_on = svc.rss()?.0;
    eprintln!(
        "search: index of {indexed} products rebuilt from the topic in {rebuild_topic_secs:.1} s; RSS {} MiB without it, {} MiB with it",
        rss_off >> 20,
        rss_on >> 20
    );

    // 2. Load: cached GET and search, wrk.
    let sample: Vec<String> = ids.iter().take(2000).map(|id| id.to_hex()).collect();
    load::prime_cache(&svc, &sample).await?;
    let ids_file = opts.work_dir.join("search-ids.txt");
    std::fs::write(&ids_file, sample.join("\n") + "\n")?;
    let scripts = load::write_scripts(&opts.work_dir, &ids_file)?;
    let top = opts.concurrency.iter().copied().max().unwrap_or(64);
    let search_path = format!("/api/v1/products/search?search={QUERY}&page=1&size=10");
    let base = format!("http://{}", svc.http);
    let get = load::wrk_run(
        opts,
        &svc,
        "get_cached",
        "/api/v1/products/{id}",
        &base,
        top,
        &scripts.get_by_id,
        &format!("/api/v1/products/{}", sample[0]),
    )
    .await?;
    let mut runs = vec![get.clone()];
    for c in [1, top] {
        runs.push(
            load::wrk_run(
                opts,
                &svc,
                "search",
                &search_path,
                &format!("{base}{search_path}"),
                c,
                &scripts.plain,
                &search_path,
            )
            .await?,
        );
    }
    let grpc_ids = Arc::new(sample.clone());
    for c in [1, top] {
        runs.push(load::grpc_run(opts, &svc, load::GrpcKind::Search, c, grpc_ids.clone()).await?);
    }
    // The same with ghz, the client users reach for (one connection).
    runs.extend(crate::grpc_ghz::search_runs(opts, &svc, QUERY, &[1, top]).await?);
    errors += runs
        .iter()
        .filter_map(|r| r["errors"].as_u64())
        .sum::<u64>();
    let total = reqwest::get(format!("{base}{search_path}"))
        .await?
        .json::<Value>()
        .await?["totalCount"]
        .clone();
    let (c1, ctop) = (&runs[1], &runs[2]);
    let ratio = ctop["rps"].as_f64().unwrap_or(0.0) / get["rps"].as_f64().unwrap_or(1.0).max(1.0);

    // 3. Searchable after write.
    let (searchable, write_errors) = searchable_after_write(&svc).await?;
    errors += write_errors;
    let freshness_metric = metric_quantiles(&svc).await?;
    svc.stop().await?;

    // 4. The index filled from the database (an empty events topic).
    let empty_topic = format!("{}-search-empty", names.topic_events);
    let started = Instant::now();
    let from_db = Service::start_with_env(
        opts,
        names,
        so("search-db"),
        &[("APP__EVENTS__TOPIC", empty_topic.as_str())],
    )
    .await?;
    let rebuild_db_secs = started.elapsed().as_secs_f64();
    let indexed_db = metric(&from_db, "search_index_products").await?;
    from_db.stop().await?;
    delete_topics(opts, &[&empty_topic]).await?;
    eprintln!(
        "search: index of {indexed_db} products filled from the database in {rebuild_db_secs:.1} s"
    );

    Ok(json!({
        "query": QUERY,
        "matches": total,
        "indexed_products": indexed,
        "search_p50_ms_100k": c1["p50_ms"],
        "search_p99_ms_100k": c1["p99_ms"],
        "search_rps_c1": c1["rps"],
        "search_rps_top": ctop["rps"],
        "get_cached_rps_top": get["rps"],
        "search_ratio": round(ratio, 3),
        "search_rebuild_secs": round(rebuild_topic_secs, 2),
        "search_rebuild_from_database_secs": round(rebuild_db_secs, 2),
        "indexed_products_from_database": indexed_db,
        "rss_index_off_bytes": rss_off,
        "rss_index_on_bytes": rss_on,
        "searchable": searchable,
        "searchable_p99_ms": searchable["p99_ms"],
        "freshness_metric": freshness_metric,
        "runs": runs,
        "errors": errors,
    }))
}

/// Creates at a steady rate through gRPC; for every tenth, the time from its
/// answer (stored) until a search for its own word finds it.
async fn searchable_after_write(svc: &Service) -> Result<(Value, u64)> {
    let rate = env_num("BENCH_SEARCH_WRITE_RATE", 1000)?;
    let secs = env_num("BENCH_SEARCH_WRITE_SECS", 10)?;
    let endpoint = format!("http://{}", svc.grpc);
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(ProductsServiceClient::connect(endpoint.clone()).await?);
    }
    let http = reqwest::Client::new();
    let in_flight = Arc::new(Semaphore::new(256));
    let run = ObjectId::new().to_hex();
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    let n = rate * secs;
    for i in 0..n {
        ticker.tick().await;
        let permit = in_flight.clone().acquire_owned().await?;
        let mut client = clients[i as usize % clients.len()].clone();
        let http = http.clone();
        let search = format!("http://{}/api/v1/products/search", svc.http);
        let word = format!("s{run}n{i}");
        tasks.push(tokio::spawn(async move {
            let request = CreateReq {
                category_id: CATEGORY.to_owned(),
                name: format!("Fresh {word}"),
                description: "Searchable after write".to_owned(),
                price: 1.5,
                image_url: String::new(),
                photos: vec![],
                quantity: 1,
                rating: 1,
            };
            let stored = client.create(request).await.is_ok();
            drop(permit);
            if !stored {
                return Err(());
            }
            if i % 10 != 0 {
                return Ok(None);
            }
            let answered = Instant::now();
            loop {
                let found = http
                    .get(&search)
                    .query(&[("search", word.as_str())])
                    .send()
                    .await
                    .ok()
                    .and_then(|r| r.status().is_success().then_some(r));
                if let Some(r) = found {
                    if r.json::<Value>()
                        .await
                        .ok()
                        .is_some_and(|p| p["totalCount"] == 1)
                    {
                        return Ok(Some(answered.elapsed()));
                    }
                }
                if answered.elapsed() > Duration::from_secs(30) {
                    return Err(());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let offered_secs = started.elapsed().as_secs_f64();
    let mut delays = Vec::new();
    let mut errors = 0;
    for task in tasks {
        match task.await.context("a write task failed")? {
            Ok(Some(delay)) => delays.push(delay.as_secs_f64() * 1000.0),
            Ok(None) => {}
            Err(()) => errors += 1,
        }
    }
    let achieved = n as f64 / started.elapsed().as_secs_f64().max(offered_secs);
    delays.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        delays
            .get(
                ((p / 100.0 * delays.len() as f64).ceil() as usize).clamp(1, delays.len().max(1))
                    - 1,
            )
            .map_or(0.0, |v| round(*v, 1))
    };
    eprintln!(
        "search: searchable after write p50 {} ms p99 {} ms ({} samples, {achieved:.0} writes/s, {errors} errors)",
        pct(50.0),
        pct(99.0),
        delays.len()
    );
    Ok((
        json!({
            "rate_offered": rate,
            "writes_per_sec": round(achieved, 0),
            "writes": n,
            "samples": delays.len(),
            "p50_ms": pct(50.0),
            "p99_ms": pct(99.0),
            "max_ms": delays.last().map(|v| round(*v, 1)),
            "errors": errors,
            "command": format!("{n} gRPC Create at {rate}/s (8 connections, at most 256 in flight); every tenth searched for every 5 ms from its answer until found"),
        }),
        errors,
    ))
}

/// The sum of every series of `name`, once the feed has written its gauges
/// (once a second).
async fn metric(svc: &Service, name: &str) -> Result<f64> {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    svc.metric_sum(name).await
}

/// p50/p99 of `search_index_freshness_seconds` (stored → applied, the
/// service's own view), from its buckets.
async fn metric_quantiles(svc: &Service) -> Result<Value> {
    let text = svc.metrics_text().await?;
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("search_index_freshness_seconds_bucket{le=\""))
        .filter_map(|rest| {
            let (le, value) = rest.split_once("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, value.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let count = buckets.last().map_or(0.0, |b| b.1);
    let upper = |q: f64| {
        buckets
            .iter()
            .find(|(_, c)| *c >= q * count)
            .map(|(le, _)| {
                if le.is_finite() {
                    json!(le * 1000.0)
                } else {
                    json!("+Inf")
                }
            })
    };
    Ok(json!({
        "events": count,
        "p50_ms_at_most": upper(0.5),
        "p99_ms_at_most": upper(0.99),
    }))
}

/// The section's key-figure rows (a run that had it).
pub fn key_rows(s: &mut String, r: &Value) {
    use std::fmt::Write;

    use crate::report::{met, num};
    let x = &r["search"];
    if x.is_null() {
        return;
    }
    let at_most = |v: &Value, max: f64| v.as_f64().is_some_and(|v| v <= max);
    let rows = [
        (
            format!("`search_p99_ms_100k` = search p99 at c=1, {} indexed products, `{QUERY}` ({} matches; p50 {} ms)", num(&x["indexed_products"]), num(&x["matches"]), num(&x["search_p50_ms_100k"])),
            num(&x["search_p99_ms_100k"]),
            format!("≤ {P99_MAX_MS} (p50 ≤ {P50_MAX_MS})"),
            met(at_most(&x["search_p99_ms_100k"], P99_MAX_MS) && at_most(&x["search_p50_ms_100k"], P50_MAX_MS)),
        ),
        (
            format!("`search_ratio` = search / cached GET req/s at the top concurrency ({} vs {})", num(&x["search_rps_top"]), num(&x["get_cached_rps_top"])),
            num(&x["search_ratio"]),
            format!("≥ {RATIO_MIN}"),
            met(x["search_ratio"].as_f64().is_some_and(|v| v >= RATIO_MIN)),
        ),
        (
            format!("`search_rebuild_secs` = start → ready, index rebuilt from the events topic (from the database: {} s)", num(&x["search_rebuild_from_database_secs"])),
            num(&x["search_rebuild_secs"]),
            format!("≤ {REBUILD_MAX_SECS}"),
            met(at_most(&x["search_rebuild_secs"], REBUILD_MAX_SECS)),
        ),
        (
            format!("`searchable_p99_ms` = create answered → found by search, p99 at {} writes/s (p50 {} ms)", num(&x["searchable"]["writes_per_sec"]), num(&x["searchable"]["p50_ms"])),
            num(&x["searchable_p99_ms"]),
            format!("≤ {SEARCHABLE_P99_MAX_MS}"),
            met(at_most(&x["searchable_p99_ms"], SEARCHABLE_P99_MAX_MS)),
        ),
    ];
    for (what, value, target, verdict) in rows {
        let _ = writeln!(s, "| {what} | {value} | {target} | {verdict} |");
    }
}

/// The section's tables.
pub fn tables(s: &mut String, r: &Value) {
    use std::fmt::Write;

    use crate::report::{mib, num};
    let x = &r["search"];
    if x.is_null() {
        return;
    }
    let _ = writeln!(
        s,
        "\n**Search index** ({} products; RSS {} MiB with the index off, {} MiB on; rebuilt in {} s from the topic, {} s from the database)\n",
        num(&x["indexed_products"]),
        mib(&x["rss_index_off_bytes"]),
        mib(&x["rss_index_on_bytes"]),
        num(&x["search_rebuild_secs"]),
        num(&x["search_rebuild_from_database_secs"]),
    );
    let _ = writeln!(s, "| run | concurrency | req/s | p50 ms | p99 ms | p99.9 ms | errors | peak RSS (MiB) | command |\n|---|---|---|---|---|---|---|---|---|");
    crate::report::load_rows(s, &x["runs"], true);
    let w = &x["searchable"];
    let _ = writeln!(
        s,
        "\nSearchable after write: p50 {} ms, p99 {} ms, max {} ms over {} samples ({}); the service's own `search_index_freshness_seconds` (stored → applied): p50 ≤ {} ms, p99 ≤ {} ms (bucket bounds) over {} events.",
        num(&w["p50_ms"]),
        num(&w["p99_ms"]),
        num(&w["max_ms"]),
        num(&w["samples"]),
        w["command"].as_str().unwrap_or(""),
        num(&x["freshness_metric"]["p50_ms_at_most"]),
        num(&x["freshness_metric"]["p99_ms_at_most"]),
        num(&x["freshness_metric"]["events"]),
    );
}
