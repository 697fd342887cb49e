//! Load runs: REST with `wrk`, gRPC with a closed-loop tonic client.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use mongodb::bson::{doc, Document};
use products_service::api::grpc::pb::{
    products_service_client::ProductsServiceClient, GetByIdReq, SearchReq,
};
use serde_json::{json, Value};

use crate::{round, service::Service, Names, Opts};

pub struct Scripts {
    pub plain: PathBuf,
    pub get_by_id: PathBuf,
    pub post: PathBuf,
}

/// Every script ends with the same `done`: one JSON line wrk's summary lacks
/// (p99.9, error kinds).
pub const DONE: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"#;

pub fn write_scripts(dir: &Path, ids_file: &Path) -> Result<Scripts> {
    let ids_file = std::fs::canonicalize(ids_file)?;
    let plain = dir.join("plain.lua");
    std::fs::write(&plain, DONE)?;
    let get_by_id = dir.join("get_by_id.lua");
    std::fs::write(
        &get_by_id,
        format!(
            r#"local ids = {{}}
for line in io.lines("{}") do ids[#ids + 1] = line end
local i = 0
init = function(args) i = math.random(#ids) end
request = function()
  i = i + 1
  if i > #ids then i = 1 end
  return wrk.format("GET", "/api/v1/products/" .. ids[i])
end
{DONE}"#,
            ids_file.display()
        ),
    )?;
    let post = dir.join("post.lua");
    std::fs::write(
        &post,
        format!(
            r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{{"categoryId":"{}","name":"Bench write","description":"Written by products-bench","price":9.5,"quantity":3,"rating":7}}'
{DONE}"#,
            crate::CATEGORY
        ),
    )?;
    Ok(Scripts {
        plain,
        get_by_id,
        post,
    })
}

/// Reads every sampled product once, so the cached runs start with a warm cache.
pub async fn prime_cache(svc: &Service, ids: &[String]) -> Result<()> {
    let client = reqwest::Client::new();
    for chunk in ids.chunks(16) {
        let gets = chunk.iter().map(|id| {
            client
                .get(format!("http://{}/api/v1/products/{id}", svc.http))
                .send()
        });
        for r in futures::future::join_all(gets).await {
            let status = r?.status();
            if !status.is_success() {
                bail!("priming the cache: GET answered {status}");
            }
        }
    }
    Ok(())
}

/// wrk leaves its last requests in flight when it stops; slow searches would
/// then overlap the next run. Waits (at most 60 s) until a search answers
/// about as fast as on an idle service.
pub async fn settle(svc: &Service, path: &str) {
    let client = reqwest::Client::new();
    let url = format!("http://{}{path}", svc.http);
    let time = || async {
        let t = Instant::now();
        let _ = client.get(&url).send().await;
        t.elapsed()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut best = time().await;
    while Instant::now() < deadline {
        let t = time().await;
        if t.as_secs_f64() <= best.as_secs_f64() * 1.5 {
            break;
        }
        best = best.min(t);
    }
}

struct Wrk {
    requests: u64,
    secs: f64,
    errors: u64,
    status_errors: u64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

fn wrk_args(c: usize, secs: u64, script: &Path, url: &str) -> Vec<String> {
    let threads = if c > 1 { 2 } else { 1 };
    vec![
        format!("-t{threads}"),
        format!("-c{c}"),
        format!("-d{secs}s"),
        "--timeout".into(),
        "30s".into(),
        "-s".into(),
        script.display().to_string(),
        url.to_owned(),
    ]
}

async fn wrk(args: &[String]) -> Result<Wrk> {
    let out = tokio::process::Command::new("wrk")
        .args(args)
        .output()
        .await
        .context("running wrk (apt-get install wrk)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BENCHJSON "))
        .with_context(|| format!("no BENCHJSON line in wrk output: {stdout}"))?;
    let v: Value = serde_json::from_str(line)?;
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let ms = |k: &str| round(n(k) as f64 / 1000.0, 3);
    Ok(Wrk {
        requests: n("requests"),
        secs: n("duration_us") as f64 / 1e6,
        errors: n("connect") + n("read") + n("write") + n("status") + n("timeout"),
        status_errors: n("status"),
        p50_ms: ms("p50_us"),
        p99_ms: ms("p99_us"),
        p999_ms: ms("p999_us"),
        max_ms: ms("max_us"),
    })
}

/// Warm-up run (discarded), then the measured run; peak RSS of the measured run.
#[allow(clippy::too_many_arguments)]
pub async fn wrk_run(
    opts: &Opts,
    svc: &Service,
    name: &str,
    path: &str,
    url: &str,
    c: usize,
    script: &Path,
    settle_path: &str,
) -> Result<Value> {
    if !opts.warmup.is_zero() {
        wrk(&wrk_args(c, opts.warmup.as_secs(), script, url)).await?;
        settle(svc, settle_path).await;
    }
    svc.reset_peak();
    let args = wrk_args(c, opts.duration.as_secs(), script, url);
    let w = wrk(&args).await?;
    let peak = svc.rss()?.1;
    settle(svc, settle_path).await;
    let rps = w.requests as f64 / w.secs;
    eprintln!(
        "{name:>13} c={c:<3} {rps:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  errors {}",
        w.p50_ms, w.p99_ms, w.p999_ms, w.errors
    );
    Ok(json!({
        "name": name,
        "path": path,
        "concurrency": c,
        "requests": w.requests,
        "rps": round(rps, 0),
        "p50_ms": w.p50_ms,
        "p99_ms": w.p99_ms,
        "p999_ms": w.p999_ms,
        "max_ms": w.max_ms,
        "errors": w.errors,
        "peak_rss_bytes": peak,
        "command": format!("wrk {}", args.join(" ")),
    }))
}

#[derive(Clone, Copy, Debug)]
pub enum GrpcKind {
    GetById,
    Search,
}

/// Closed loop: `c` tasks, each with its own connection, each sending the next
/// request when the previous answered; latencies of the measured window only.
pub async fn grpc_run(
    opts: &Opts,
    svc: &Service,
    kind: GrpcKind,
    c: usize,
    ids: Arc<Vec<String>>,
) -> Result<Value> {
    let endpoint = format!("http://{}", svc.grpc);
    let mut clients = Vec::with_capacity(c);
    for _ in 0..c {
        clients.push(ProductsServiceClient::connect(endpoint.clone()).await?);
    }
    let start = Instant::now();
    let measure_from = start + opts.warmup;
    let end = measure_from + opts.duration;
    let reset = tokio::spawn({
        let pid = svc.pid();
        async move {
            tokio::time::sleep_until(measure_from.into()).await;
            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
    });
    let mut tasks = Vec::with_capacity(c);
    for (t, mut client) in clients.into_iter().enumerate() {
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat_us: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let mut i = t * 31;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                i = (i + 1) % ids.len();
                let call = async {
                    match kind {
                        GrpcKind::GetById => client
                            .get_by_id(GetByIdReq {
                                product_id: ids[i].clone(),
                            })
                            .await
                            .is_ok(),
                        GrpcKind::Search => client
                            .search(SearchReq {
                                search: "widget-42".into(),
                                page: 1,
                                size: 10,
                            })
                            .await
                            .is_ok(),
                    }
                };
                // Like wrk: a request still open at the end is dropped (the
                // stream is reset), not counted.
                let ok = tokio::select! {
                    ok = call => ok,
                    () = tokio::time::sleep_until(end.into()) => break,
                };
                if Instant::now() >= measure_from {
                    lat_us.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    if !ok {
                        errors += 1;
                    }
                }
            }
            (lat_us, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        errors += e;
    }
    reset.await?;
    let peak = svc.rss()?.1;
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let idx = ((p / 100.0) * lat.len() as f64).ceil() as usize;
        round(lat[idx.clamp(1, lat.len()) - 1] as f64 / 1000.0, 3)
    };
    let rps = lat.len() as f64 / opts.duration.as_secs_f64();
    let name = match kind {
        GrpcKind::GetById => "GetByID",
        GrpcKind::Search => "Search",
    };
    eprintln!(
        "{name:>13} c={c:<3} {rps:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {errors}",
        pct(50.0),
        pct(99.0)
    );
    Ok(json!({
        "name": name,
        "concurrency": c,
        "requests": lat.len(),
        "rps": round(rps, 0),
        "p50_ms": pct(50.0),
        "p99_ms": pct(99.0),
        "p999_ms": pct(99.9),
        "errors": errors,
        "peak_rss_bytes": peak,
        "command": format!(
            "products-bench gRPC closed loop: {c} connections to {}, productsService.ProductsService/{name}{}, {} s warm-up + {} s measured",
            svc.grpc,
            match kind { GrpcKind::GetById => " (the read catalog's ids in turn)", GrpcKind::Search => " Search=\"widget-42\" page=1 size=10" },
            opts.warmup.as_secs(),
            opts.duration.as_secs()
        ),
    }))
}

/// POST at the highest concurrency; then the time until every accepted write
/// is readable (a document in MongoDB).
pub async fn write_run(
    opts: &Opts,
    names: &Names,
    svc: &Service,
    mongo: &mongodb::Client,
    script: &Path,
) -> Result<Value> {
    let c = opts.concurrency.iter().copied().max().unwrap_or(64);
    let coll = mongo
        .database(&names.read_database)
        .collection::<Document>("products");
    let before = coll.count_documents(doc! {}).await?;
    let url = format!("http://{}/api/v1/products", svc.http);
    let mut accepted = 0;
    let mut errors = 0;
    // Done is judged by the consumer's settled count, not a document count
    // (see Service::settled_creates); the documents are counted once after.
    let settled_before = svc.settled_creates(&names.topic_create).await?;
    svc.reset_peak();
    let args = wrk_args(c, opts.write_duration.as_secs(), script, &url);
    let start = Instant::now();
    let w = wrk(&args).await?;
    let load_secs = start.elapsed().as_secs_f64();
    accepted += w.requests - w.status_errors;
    errors += w.errors;
    let rps = (w.requests - w.status_errors) as f64 / w.secs;
    let expected = before + accepted;
    let deadline = Instant::now() + opts.drain_timeout;
    loop {
        let settled = svc.settled_creates(&names.topic_create).await?;
        if settled >= settled_before + accepted || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e2e = start.elapsed().as_secs_f64();
    let count = coll.count_documents(doc! {}).await?;
    let missing = expected.saturating_sub(count);
    errors += missing;
    let peak = svc.rss()?.1;
    eprintln!(
        "{:>13} c={c:<3} {rps:>9.0} accepted/s  p99 {:.2} ms  all readable after {e2e:.1} s (missing {missing}), errors {errors}",
        "POST", w.p99_ms
    );
    Ok(json!({
        "name": "post",
        "concurrency": c,
        "accepted": w.requests - w.status_errors,
        "accepted_per_s": round(rps, 0),
        "p50_ms": w.p50_ms,
        "p99_ms": w.p99_ms,
        "p999_ms": w.p999_ms,
        "load_secs": round(load_secs, 3),
        "all_readable_after_secs": round(e2e, 3),
        "drain_secs": round(e2e - load_secs, 3),
        "applied_per_s_end_to_end": round((w.requests - w.status_errors) as f64 / e2e, 0),
        "missing": missing,
        "errors": errors,
        "peak_rss_bytes": peak,
        "command": format!("wrk {} (then until the consumer has settled every accepted write, then countDocuments checked)", args.join(" ")),
    }))
}
