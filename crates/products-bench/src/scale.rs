//! Section `scale` (needs `ingest`): reads, updates and deletes at catalog
//! scale. The same measurements on two catalogs: the first
//! `BENCH_SCALE_SMALL` (10,000) products of the run's catalog, bulk-inserted
//! into a database of their own, and the whole ingested catalog (N, 100,000).
//! At each: the uncached GET by id at concurrency 1 (an instance with the
//! cache off, random ids across the whole catalog), then the Kafka update
//! apply rate (an instance with the cache on, `BENCH_UPDATE_N` updates of
//! distinct random products produced at once, timed until its consumer has
//! settled them all). On the big catalog, last: REST DELETE of random ids at
//! concurrency 16 (delete is synchronous: the 204 comes after the write).
//!
//! `uncached_get_p50_ms_100k` (≤ 5 ms), `update_apply_ratio` = update rate /
//! create ingest rate of the same run (≥ 0.5), `scale_flatness` = the worse of
//! GET p50 big/small and update rate small/big (≤ 2), `delete_apply_per_sec`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use mongodb::bson::oid::ObjectId;
use serde_json::{json, Value};

use crate::{
    catalog::{bulk_insert, shuffled},
    env_num,
    kafka::{create_topics, delete_topics_and_groups, produce_with, producer, update_payload},
    load, report, round,
    service::{self, Service, ServiceOpts},
    Names, Opts,
};

/// Updates produced before the measured ones (the consumer has joined its
/// group and fetches), not counted.
const WARM_UPDATES: usize = 100;
/// Concurrency of the DELETE run.
const DELETE_CONCURRENCY: usize = 16;

pub const GET_P50_MAX_MS: f64 = 5.0;
pub const UPDATE_RATIO_MIN: f64 = 0.5;
pub const FLATNESS_MAX: f64 = 2.0;

/// Runs both catalog sizes; `ids` is the ingested catalog (in
/// `names.database`), `ingest_rate` its create rate (products/s).
pub async fn run(
    opts: &Opts,
    names: &Names,
    mongo: &mongodb::Client,
    ids: &[ObjectId],
    ingest_rate: f64,
) -> Result<Value> {
    let mut small = env_num("BENCH_SCALE_SMALL", 10_000)? as usize;
    if small * 2 > ids.len() {
        small = (ids.len() / 10).max(WARM_UPDATES * 2);
    }
    if small > ids.len() {
        bail!(
            "section scale needs BENCH_N ≥ {} (has {})",
            WARM_UPDATES * 2,
            ids.len()
        );
    }
    let updates = (env_num("BENCH_UPDATE_N", 10_000)? as usize).min(small - WARM_UPDATES);
    eprintln!(
        "scale: {small} products bulk-inserted into {}",
        names.scale_database
    );
    bulk_insert(
        opts,
        &mongo.database(&names.scale_database),
        &ids[..small],
        5000,
    )
    .await?;
    let small_point = point(
        opts,
        names,
        &names.scale_database,
        &ids[..small],
        updates,
        false,
    )
    .await?;
    let big_point = point(opts, names, &names.database, ids, updates, true).await?;

    let get_p50 = |p: &Value| p["uncached_get"]["p50_ms"].as_f64().unwrap_or(f64::NAN);
    let rate = |p: &Value| p["updates"]["per_s"].as_f64().unwrap_or(f64::NAN);
    let latency_growth = get_p50(&big_point) / get_p50(&small_point);
    let rate_drop = rate(&small_point) / rate(&big_point);
    let flatness = latency_growth.max(rate_drop);
    let update_ratio = rate(&big_point) / ingest_rate;
    let errors =
        small_point["errors"].as_u64().unwrap_or(0) + big_point["errors"].as_u64().unwrap_or(0);
    eprintln!(
        "scale: GET p50 {:.3} → {:.3} ms (×{latency_growth:.2}), updates {:.0} → {:.0}/s (÷{rate_drop:.2}), update_apply_ratio {update_ratio:.3}",
        get_p50(&small_point),
        get_p50(&big_point),
        rate(&small_point),
        rate(&big_point)
    );
    let finite = |x: f64, digits| x.is_finite().then(|| round(x, digits));
    Ok(json!({
        "small_catalog": small,
        "big_catalog": ids.len(),
        "uncached_get_p50_ms_small": finite(get_p50(&small_point), 3),
        "uncached_get_p50_ms_big": finite(get_p50(&big_point), 3),
        "update_per_s_small": finite(rate(&small_point), 0),
        "update_per_s_big": finite(rate(&big_point), 0),
        "ingest_products_per_s": round(ingest_rate, 0),
        "latency_growth": finite(latency_growth, 3),
        "rate_drop": finite(rate_drop, 3),
        "scale_flatness": finite(flatness, 3),
        "update_apply_ratio": finite(update_ratio, 3),
        "delete_apply_per_sec": big_point["deletes"]["rps"].clone(),
        "errors": errors,
        "points": [small_point, big_point],
    }))
}

/// This point's topics and consumer group (its own, so the instance reads
/// only its own updates).
fn point_names(names: &Names, catalog: usize) -> Names {
    let mut n = names.clone();
    n.topic_create = format!("bench-{}-scale{catalog}-create", names.id);
    n.topic_update = format!("bench-{}-scale{catalog}-update", names.id);
    n.topic_dlq = format!("bench-{}-scale{catalog}-dlq", names.id);
    n.group = format!("bench-{}-scale{catalog}", names.id);
    n
}

/// One catalog: uncached GET, updates, and (`deletes`) the DELETE run; the
/// point's topics exist only meanwhile.
async fn point(
    opts: &Opts,
    names: &Names,
    database: &str,
    ids: &[ObjectId],
    updates: usize,
    deletes: bool,
) -> Result<Value> {
    let names = point_names(names, ids.len());
    create_topics(opts, &names).await?;
    let result = point_runs(opts, &names, database, ids, updates, deletes).await;
    delete_topics_and_groups(opts, &names, &[&names.group]).await?;
    result
}

async fn point_runs(
    opts: &Opts,
    names: &Names,
    database: &str,
    ids: &[ObjectId],
    updates: usize,
    deletes: bool,
) -> Result<Value> {
    let catalog = ids.len();
    let order = shuffled(ids, 0x5ca1e ^ catalog as u64);
    let hex: Vec<String> = order.iter().map(|id| id.to_hex()).collect();
    let dir = &opts.work_dir;

    // Uncached GET, random ids across the whole catalog.
    let ids_file = dir.join(format!("scale-{catalog}-ids.txt"));
    std::fs::write(&ids_file, hex.join("\n") + "\n")?;
    let script = random_get_script(dir, &ids_file, catalog)?;
    let svc = Service::start(
        opts,
        names,
        ServiceOpts {
            name: if deletes {
                "scale-get-big"
            } else {
                "scale-get-small"
            },
            database,
            redis: false,
            consumer: false,
        },
    )
    .await?;
    let path = "/api/v1/products/{id}";
    let get = load::wrk_run(
        opts,
        &svc,
        "get_uncached_random",
        path,
        &format!("http://{}", svc.http),
        1,
        &script,
        "/health",
    )
    .await;
    svc.stop().await?;
    let mut get = get?;
    get["catalog"] = json!(catalog);
    let mut errors = get["errors"].as_u64().unwrap_or(0);

    // Kafka updates, with the cache on (as deployed).
    let result = async {
        let svc = Service::start(
            opts,
            names,
            ServiceOpts {
                name: if deletes {
                    "scale-update-big"
                } else {
                    "scale-update-small"
                },
                database,
                redis: true,
                consumer: true,
            },
        )
        .await?;
        let u = update_run(opts, names, &svc, &order, updates).await;
        let d = match (&u, deletes) {
            (Ok(_), true) => {
                let rest = &hex[WARM_UPDATES + updates..];
                Some(delete_run(opts, &svc, rest, catalog).await)
            }
            _ => None,
        };
        svc.stop().await?;
        Ok::<_, anyhow::Error>((u?, d.transpose()?))
    }
    .await;
    let (updates, deletes) = result?;
    errors += updates["errors"].as_u64().unwrap_or(0);
    if let Some(d) = &deletes {
        errors += d["errors"].as_u64().unwrap_or(0);
    }
    Ok(json!({
        "catalog": catalog,
        "database": database,
        "uncached_get": get,
        "updates": updates,
        "deletes": deletes,
        "errors": errors,
    }))
}

/// wrk script: GET of a random id of the file, per request.
fn random_get_script(dir: &Path, ids_file: &Path, catalog: usize) -> Result<PathBuf> {
    let ids_file = std::fs::canonicalize(ids_file)?;
    let script = dir.join(format!("get_random_{catalog}.lua"));
    std::fs::write(
        &script,
        format!(
            r#"local ids = {{}}
for line in io.lines("{}") do ids[#ids + 1] = line end
local threads = 0
setup = function(thread) threads = threads + 1; thread:set("seed", threads) end
init = function(args) math.randomseed(os.time() * 100 + (seed or 0)) end
request = function()
  return wrk.format("GET", "/api/v1/products/" .. ids[math.random(#ids)])
end
{}"#,
            ids_file.display(),
            load::DONE
        ),
    )?;
    Ok(script)
}

/// Produces `WARM_UPDATES` updates and waits for them, then `count` more
/// (distinct products, `order` is shuffled) and times them until settled.
async fn update_run(
    opts: &Opts,
    names: &Names,
    svc: &Service,
    order: &[ObjectId],
    count: usize,
) -> Result<Value> {
    let topic = names.topic_update.clone();
    let records = |ids: &[ObjectId]| -> Vec<(String, Vec<u8>)> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| (id.to_hex(), update_payload(id, i)))
            .collect()
    };
    let warm = records(&order[..WARM_UPDATES]);
    let measured = records(&order[WARM_UPDATES..WARM_UPDATES + count]);
    // One producer, started (connected, producer id) by the warm-up.
    let producer = std::sync::Arc::new(producer(opts)?);
    let produce_async = |records: Vec<(String, Vec<u8>)>| {
        let (producer, topic) = (producer.clone(), topic.clone());
        tokio::task::spawn_blocking(move || produce_with(&producer, &topic, records))
    };
    produce_async(warm).await??;
    let deadline = Instant::now() + Duration::from_secs(60);
    while settled(svc, &topic).await?.0 < WARM_UPDATES as u64 {
        if Instant::now() > deadline {
            bail!("the {WARM_UPDATES} warm-up updates were not applied within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, before) = settled(svc, &topic).await?;
    let ops_before = svc.mongo_operations().await.unwrap_or(Value::Null);
    let cpu = svc.cpu_secs();
    let ferretdb = service::stack_pid("ferretdb");
    let ferretdb_cpu = ferretdb.and_then(service::process_cpu_secs);

    let start = Instant::now();
    let produce_secs = produce_async(measured).await??;
    let target = (WARM_UPDATES + count) as u64;
    let deadline = Instant::now() + opts.drain_timeout;
    let mut total = 0;
    while Instant::now() < deadline {
        total = settled(svc, &topic).await?.0;
        if total >= target {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let (_, after) = settled(svc, &topic).await?;
    let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    let applied = delta("applied");
    let not_applied = (count as u64).saturating_sub(applied);
    let ops_after = svc.mongo_operations().await.unwrap_or(Value::Null);
    let op = |v: &Value, k: &str| v["update"][k].as_f64().unwrap_or(0.0);
    let update_count = op(&ops_after, "count") - op(&ops_before, "count");
    let update_mean_ms = (update_count > 0.0).then(|| {
        round(
            (op(&ops_after, "total_secs") - op(&ops_before, "total_secs")) / update_count * 1000.0,
            3,
        )
    });
    let rate = applied as f64 / secs;
    eprintln!(
        "  catalog {}: {applied} updates applied in {secs:.2} s = {rate:.0}/s (database update mean {update_mean_ms:?} ms; {total} settled)",
        order.len()
    );
    Ok(json!({
        "count": count,
        "applied": applied,
        "outcomes": after,
        "secs": round(secs, 3),
        "per_s": round(rate, 0),
        "produce_secs": round(produce_secs, 3),
        "database_update_mean_ms": update_mean_ms,
        "service_cpu_secs": svc.cpu_secs().zip(cpu).map(|(a, b)| round(a - b, 2)),
        "ferretdb_cpu_secs": ferretdb.and_then(service::process_cpu_secs).zip(ferretdb_cpu).map(|(a, b)| round(a - b, 2)),
        "errors": not_applied,
        "command": format!("products-bench updates: {WARM_UPDATES} warm-up updates, then {count} update commands of distinct random products of the {}-product catalog produced at once to {topic} ({} partitions), timed from the first produce until the instance's consumer (cache on) has settled them all (kafka_consumed_messages_total)", order.len(), crate::PARTITIONS),
    }))
}

/// Update commands the instance has settled, in all and by outcome.
async fn settled(svc: &Service, topic: &str) -> Result<(u64, BTreeMap<String, u64>)> {
    let outcomes = svc.consumed(topic).await?;
    Ok((outcomes.values().sum(), outcomes))
}

/// REST DELETE of distinct random products at [`DELETE_CONCURRENCY`].
async fn delete_run(opts: &Opts, svc: &Service, ids: &[String], catalog: usize) -> Result<Value> {
    let dir = &opts.work_dir;
    let ids_file = dir.join(format!("scale-{catalog}-delete-ids.txt"));
    std::fs::write(&ids_file, ids.join("\n") + "\n")?;
    let script = dir.join("delete.lua");
    std::fs::write(
        &script,
        format!(
            r#"local ids = {{}}
for line in io.lines("{}") do ids[#ids + 1] = line end
local threads = 0
setup = function(thread) thread:set("first", threads); threads = threads + 1 end
local i = nil
request = function()
  if i == nil then i = (first or 0) + 1 end
  local id = ids[((i - 1) % #ids) + 1]
  i = i + 2
  return wrk.format("DELETE", "/api/v1/products/" .. id)
end
{}"#,
            std::fs::canonicalize(&ids_file)?.display(),
            load::DONE
        ),
    )?;
    // No warm-up: each id can be deleted once (a second DELETE is a 404).
    let mut once = opts.clone();
    once.warmup = Duration::ZERO;
    let mut r = load::wrk_run(
        &once,
        svc,
        "delete",
        "/api/v1/products/{id}",
        &format!("http://{}", svc.http),
        DELETE_CONCURRENCY,
        &script,
        "/health",
    )
    .await?;
    r["catalog"] = json!(catalog);
    Ok(r)
}

/// Key-figure rows of the main table.
pub fn key_rows(s: &mut String, r: &Value) {
    let sc = &r["scale"];
    if sc.is_null() {
        return;
    }
    let (n, small) = (
        report::num(&sc["big_catalog"]),
        report::num(&sc["small_catalog"]),
    );
    let p50 = &r["uncached_get_p50_ms_100k"];
    let _ = writeln!(
        s,
        "| `uncached_get_p50_ms_100k` = uncached GET by id, c=1, random ids of {n} products (ms) | {} | ≤ {GET_P50_MAX_MS} | {} |",
        report::num(p50),
        report::met(p50.as_f64().is_some_and(|x| x <= GET_P50_MAX_MS))
    );
    let ratio = &r["update_apply_ratio"];
    let _ = writeln!(
        s,
        "| `update_apply_ratio` = Kafka updates applied/s ({n} products) / creates ingested/s | {} | ≥ {UPDATE_RATIO_MIN} | {} |",
        report::num(ratio),
        report::met(ratio.as_f64().is_some_and(|x| x >= UPDATE_RATIO_MIN))
    );
    let flat = &r["scale_flatness"];
    let _ = writeln!(
        s,
        "| `scale_flatness` = worse of GET p50 {n}/{small} ({}) and update rate {small}/{n} ({}) | {} | ≤ {FLATNESS_MAX} | {} |",
        report::num(&sc["latency_growth"]),
        report::num(&sc["rate_drop"]),
        report::num(flat),
        report::met(flat.as_f64().is_some_and(|x| x <= FLATNESS_MAX))
    );
    let _ = writeln!(
        s,
        "| `delete_apply_per_sec` = REST DELETE c={DELETE_CONCURRENCY}, {n} products | {} | — | |",
        report::num(&r["delete_apply_per_sec"])
    );
}

/// The section's table.
pub fn tables(s: &mut String, r: &Value) {
    let sc = &r["scale"];
    if sc.is_null() {
        return;
    }
    let _ = writeln!(
        s,
        "\n**Catalog scale** (uncached GET: cache off, c=1, random ids; updates: cache on, through Kafka)\n"
    );
    let _ = writeln!(s, "| products | GET req/s | GET p50 ms | GET p99 ms | updates applied/s | database update mean ms | update secs | errors | commands |\n|---|---|---|---|---|---|---|---|---|");
    for p in sc["points"].as_array().into_iter().flatten() {
        let (g, u) = (&p["uncached_get"], &p["updates"]);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | `{}`; {} |",
            report::num(&p["catalog"]),
            report::num(&g["rps"]),
            report::num(&g["p50_ms"]),
            report::num(&g["p99_ms"]),
            report::num(&u["per_s"]),
            report::num(&u["database_update_mean_ms"]),
            report::num(&u["secs"]),
            report::num(&p["errors"]),
            g["command"].as_str().unwrap_or(""),
            u["command"].as_str().unwrap_or("")
        );
    }
    let big = sc["points"].as_array().and_then(|p| p.last());
    if let Some(d) = big.map(|p| &p["deletes"]).filter(|d| !d.is_null()) {
        let _ = writeln!(s, "\n| DELETE | products | concurrency | deletes/s | p50 ms | p99 ms | errors | command |\n|---|---|---|---|---|---|---|---|");
        let _ = writeln!(
            s,
            "| REST, synchronous | {} | {} | {} | {} | {} | {} | `{}` |",
            report::num(&d["catalog"]),
            report::num(&d["concurrency"]),
            report::num(&d["rps"]),
            report::num(&d["p50_ms"]),
            report::num(&d["p99_ms"]),
            report::num(&d["errors"]),
            d["command"].as_str().unwrap_or("")
        );
    }
}
