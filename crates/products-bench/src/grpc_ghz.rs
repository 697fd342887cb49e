//! gRPC measured with ghz, the load tool users reach for (`BENCH_SECTIONS=grpc`):
//! cached `GetByID` at concurrency 1 (latency: a p99 far above the p50 is the
//! signature of Nagle's algorithm meeting delayed ACKs, ~40 ms) and at
//! concurrency 64 multiplexed on ONE connection (as ghz, grpcurl and most
//! clients use a channel), against the cached REST GET at 64 on the same
//! instance in the same run. The `search` section uses [`search_runs`] for
//! `Search` the same way.
//!
//! ghz is installed pinned by `scripts/ensure-tool.sh ghz` into the stack's
//! cache (`make bench` does it); `BENCH_GHZ_BIN` overrides the path.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};
use products_service::api::grpc::pb::{GetByIdReq, SearchReq};
use serde_json::{json, Value};

use crate::{load, profile, round, service::Service, Opts};

/// Concurrency of the single-connection run and of its REST reference.
pub const HIGH: usize = 64;

/// Where `scripts/ensure-tool.sh ghz` puts the pinned ghz.
pub fn ghz_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("BENCH_GHZ_BIN").filter(|b| !b.is_empty()) {
        return bin.into();
    }
    let cache = std::env::var_os("PRODUCTS_STACK_CACHE")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/products-stack")
        });
    cache.join(format!("bin/ghz-{}", GHZ_VERSION.trim_start_matches('v')))
}

/// Keep in step with GHZ_VERSION in scripts/lib/stack-lib.sh.
pub const GHZ_VERSION: &str = "v0.120.0";

/// One ghz run's figures.
pub struct Ghz {
    pub args: Vec<String>,
    pub count: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    pub statuses: Value,
}

/// The RPCs the bench drives with ghz.
#[derive(Clone, Copy)]
pub enum Call {
    GetById,
    Search,
}

impl Call {
    fn method(self) -> &'static str {
        match self {
            Call::GetById => "GetByID",
            Call::Search => "Search",
        }
    }
}

fn ghz_args(
    svc: &Service,
    call: Call,
    data_file: &str,
    c: usize,
    connections: usize,
    secs: u64,
) -> Vec<String> {
    vec![
        "--insecure".into(),
        "--proto".into(),
        "proto/products.proto".into(),
        "--import-paths".into(),
        "proto".into(),
        "--call".into(),
        format!("productsService.ProductsService.{}", call.method()),
        // The requests as serialized protobuf, taken in turn: no JSON to
        // convert and no template to render per call. With JSON data and
        // templates ghz itself used ~100 µs of CPU per call, twice the
        // service's, and set the pace on 2 cores.
        "--binary-file".into(),
        data_file.into(),
        "--disable-template-functions".into(),
        "--disable-template-data".into(),
        format!("--concurrency={c}"),
        format!("--connections={connections}"),
        format!("--duration={secs}s"),
        // ghz's default 20 s timeout is fine; no rate limit: closed loop.
        "--format=json".into(),
        svc.grpc.clone(),
    ]
}

async fn ghz(args: Vec<String>) -> Result<Ghz> {
    let bin = ghz_bin();
    let out = tokio::process::Command::new(&bin)
        .args(&args)
        .output()
        .await
        .with_context(|| {
            format!(
                "running {} (install it with scripts/ensure-tool.sh ghz)",
                bin.display()
            )
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&stdout).with_context(|| {
        format!(
            "ghz {args:?}: no JSON report: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let pct = |p: f64| -> f64 {
        v["latencyDistribution"]
            .as_array()
            .and_then(|d| {
                d.iter()
                    .find(|e| e["percentage"].as_f64() == Some(p))
                    .and_then(|e| e["latency"].as_f64())
            })
            .map_or(0.0, |ns| round(ns / 1e6, 3))
    };
    let count = v["count"].as_u64().unwrap_or(0);
    let ok = v["statusCodeDistribution"]["OK"].as_u64().unwrap_or(0);
    // Like wrk, calls still open when the duration ends are not failures:
    // ghz then closes the connection and reports them as Canceled or
    // Unavailable (at most one per concurrent call).
    let status = |code: &str| v["statusCodeDistribution"][code].as_u64().unwrap_or(0);
    let concurrency = args
        .iter()
        .find_map(|a| a.strip_prefix("--concurrency="))
        .and_then(|c| c.parse::<u64>().ok())
        .unwrap_or(1);
    let canceled = (status("Canceled") + status("Unavailable")).min(concurrency);
    if count == 0 {
        bail!("ghz {args:?}: no request answered: {stdout}");
    }
    Ok(Ghz {
        count,
        rps: v["rps"].as_f64().unwrap_or(0.0),
        p50_ms: pct(50.0),
        p99_ms: pct(99.0),
        errors: count.saturating_sub(ok + canceled),
        statuses: v["statusCodeDistribution"].clone(),
        args,
    })
}

fn ghz_json(name: &str, c: usize, connections: usize, g: &Ghz, cpu: Value) -> Value {
    json!({
        "name": name,
        "concurrency": c,
        "connections": connections,
        "requests": g.count,
        "rps": round(g.rps, 0),
        "p50_ms": g.p50_ms,
        "p99_ms": g.p99_ms,
        "errors": g.errors,
        "status_codes": g.statuses,
        "cpu": cpu,
        "command": format!("ghz {}", g.args.join(" ")),
    })
}

/// Requests for ghz's `--binary-file`: each message serialized and
/// prefixed with its length, as ghz takes several messages (in turn).
fn binary_requests<M: prost::Message>(messages: impl IntoIterator<Item = M>) -> Vec<u8> {
    messages
        .into_iter()
        .flat_map(|m| m.encode_length_delimited_to_vec())
        .collect()
}

/// Warm-up (discarded), then the measured run, with the CPU it cost.
async fn ghz_run(
    opts: &Opts,
    svc: &Service,
    call: Call,
    data: &str,
    c: usize,
    conns: usize,
) -> Result<(Ghz, Value)> {
    if !opts.warmup.is_zero() {
        ghz(ghz_args(svc, call, data, c, conns, opts.warmup.as_secs())).await?;
    }
    let perf = profile::perf_record(opts, svc, &format!("ghz-{}-c{c}", call.method()));
    let cpu = profile::CpuWindow::start(svc);
    let g = ghz(ghz_args(svc, call, data, c, conns, opts.duration.as_secs())).await?;
    let cpu = cpu.stop(svc, g.count);
    profile::perf_wait(perf).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok((g, cpu))
}

/// Runs on an instance with the cache on and primed (`ids` cached). Returns
/// the section's JSON, with `grpc_single_conn_ratio` and `grpc_c1_p99_over_p50`.
pub async fn run(
    opts: &Opts,
    svc: &Service,
    ids: &[String],
    get_script: &std::path::Path,
) -> Result<Value> {
    require_ghz()?;
    let data = opts.work_dir.join("ghz-ids.bin");
    std::fs::write(
        &data,
        binary_requests(ids.iter().map(|id| GetByIdReq {
            product_id: id.clone(),
        })),
    )?;
    let data = data.display().to_string();

    let url = format!("http://{}", svc.http);
    let path = "/api/v1/products/{id}";
    let settle = path.replace("{id}", &ids[0]);
    if !opts.warmup.is_zero() {
        let mut warm = opts.clone();
        warm.duration = opts.warmup;
        warm.warmup = Duration::ZERO;
        load::wrk_run(&warm, svc, "warm-up", path, &url, HIGH, get_script, &settle).await?;
    }
    let mut measured = opts.clone();
    measured.warmup = Duration::ZERO;
    let perf = profile::perf_record(opts, svc, "rest-c64");
    let cpu = profile::CpuWindow::start(svc);
    let mut rest = load::wrk_run(
        &measured,
        svc,
        "get_cached",
        path,
        &url,
        HIGH,
        get_script,
        &settle,
    )
    .await?;
    rest["cpu"] = cpu.stop(svc, rest["requests"].as_u64().unwrap_or(0));
    profile::perf_wait(perf).await;
    let (c1, c1_cpu) = ghz_run(opts, svc, Call::GetById, &data, 1, 1).await?;
    eprintln!(
        "{:>13} c=1   {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
        "ghz GetByID", c1.rps, c1.p50_ms, c1.p99_ms, c1.errors
    );
    let (c64, c64_cpu) = ghz_run(opts, svc, Call::GetById, &data, HIGH, 1).await?;
    eprintln!(
        "{:>13} c={HIGH:<3} {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {} (one connection)",
        "ghz GetByID", c64.rps, c64.p50_ms, c64.p99_ms, c64.errors
    );
    let rest_rps = rest["rps"].as_f64().unwrap_or(0.0);
    let ratio = (rest_rps > 0.0).then(|| round(c64.rps / rest_rps, 3));
    let p99_over_p50 = (c1.p50_ms > 0.0).then(|| round(c1.p99_ms / c1.p50_ms, 2));
    let errors = c1.errors + c64.errors + rest["errors"].as_u64().unwrap_or(0);
    Ok(json!({
        "grpc_single_conn_ratio": ratio,
        "grpc_c1_p99_over_p50": p99_over_p50,
        "errors": errors,
        "rest_get_cached": rest,
        "ghz": [ghz_json("GetByID", 1, 1, &c1, c1_cpu), ghz_json("GetByID", HIGH, 1, &c64, c64_cpu)],
        "ghz_version": GHZ_VERSION,
    }))
}

fn require_ghz() -> Result<()> {
    if !ghz_bin().exists() {
        bail!(
            "missing: ghz ({}) — install with: scripts/ensure-tool.sh ghz",
            ghz_bin().display()
        );
    }
    Ok(())
}

/// ghz `Search` of `query` (page 1, size 10) on one connection, at each
/// concurrency in `concurrency`: one JSON run each, for the search section.
pub async fn search_runs(
    opts: &Opts,
    svc: &Service,
    query: &str,
    concurrency: &[usize],
) -> Result<Vec<Value>> {
    require_ghz()?;
    let data = opts.work_dir.join("ghz-search.bin");
    std::fs::write(
        &data,
        binary_requests([SearchReq {
            search: query.to_owned(),
            page: 1,
            size: 10,
        }]),
    )?;
    let data = data.display().to_string();
    let mut runs = Vec::new();
    for &c in concurrency {
        let (g, cpu) = ghz_run(opts, svc, Call::Search, &data, c, 1).await?;
        eprintln!(
            "{:>13} c={c:<3} {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {} (one connection)",
            "ghz Search", g.rps, g.p50_ms, g.p99_ms, g.errors
        );
        runs.push(ghz_json("ghz Search", c, 1, &g, cpu));
    }
    Ok(runs)
}
