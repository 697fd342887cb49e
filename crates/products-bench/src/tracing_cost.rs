//! What exporting every span costs (`BENCH_SECTIONS=tracing`): cached REST
//! GET at concurrency 64 on an instance without an OTLP endpoint, then on an
//! instance exporting every span (`OTEL_TRACES_SAMPLER=always_on`) to the local
//! Jaeger, same catalog, same Redis entries. Also: spans per request and the
//! spans dropped (the service's `otel_spans_total`), and one request's trace as
//! Jaeger stored it.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::{
    grpc_ghz::HIGH,
    load, profile, round,
    service::{Service, ServiceOpts},
    Names, Opts,
};

pub fn otlp_endpoint() -> String {
    std::env::var("BENCH_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "http://127.0.0.1:4317".to_owned())
}

pub fn jaeger_query() -> String {
    std::env::var("BENCH_JAEGER_QUERY")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "http://127.0.0.1:16686".to_owned())
}

/// `otel_spans_total` by outcome, from the service's /metrics.
async fn span_counts(svc: &Service) -> Result<Value> {
    let text = svc.metrics_text().await?;
    let mut counts = json!({});
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("otel_spans_total{outcome=\"") {
            if let Some((outcome, value)) = rest.split_once("\"} ") {
                counts[outcome] = json!(value.trim().parse::<f64>().unwrap_or(0.0) as u64);
            }
        }
    }
    Ok(counts)
}

fn delta(after: &Value, before: &Value, key: &str) -> u64 {
    after[key]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(before[key].as_u64().unwrap_or(0))
}

/// One GET with a known trace id, then that trace from Jaeger's query API.
async fn one_trace(svc: &Service, id: &str, trace_id: &str) -> Result<Value> {
    let client = reqwest::Client::new();
    client
        .get(format!("http://{}/api/v1/products/{id}", svc.http))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await?;
    let url = format!("{}/api/traces/{trace_id}", jaeger_query());
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Ok(r) = client.get(&url).send().await else {
            continue;
        };
        let Ok(v) = r.json::<Value>().await else {
            continue;
        };
        if let Some(spans) = v["data"][0]["spans"].as_array() {
            let names: Vec<&str> = spans
                .iter()
                .filter_map(|s| s["operationName"].as_str())
                .collect();
            return Ok(
                json!({"trace_id": trace_id, "spans": spans.len(), "names": names, "command": format!("GET {url}")}),
            );
        }
    }
    Ok(
        json!({"trace_id": trace_id, "spans": null, "command": format!("GET {url} (not found within 10 s)")}),
    )
}

/// Measured rounds of each instance, alternated (off, on, off, on, …):
/// `BENCH_TRACING_ROUNDS` (3), each `BENCH_DURATION_SECS / rounds` long (at
/// least 2 s). This machine's speed drifts by a third within minutes (a
/// shared VM: the untraced rate measured 27,000–40,000 req/s in one hour),
/// so an "off" run followed by an "on" run measured the drift as much as the
/// tracing; back-to-back pairs see the same machine.
const DEFAULT_ROUNDS: u64 = 3;

/// One instance's measured rounds, summed: requests over the time measured.
#[derive(Default)]
struct Rounds {
    runs: Vec<Value>,
    requests: u64,
    secs: f64,
    errors: u64,
    service_cpu_secs: f64,
    client_cpu_secs: f64,
}

impl Rounds {
    fn add(&mut self, run: Value) {
        let requests = run["requests"].as_u64().unwrap_or(0);
        let rps = run["rps"].as_f64().unwrap_or(0.0);
        if rps > 0.0 {
            self.secs += requests as f64 / rps;
        }
        self.requests += requests;
        self.errors += run["errors"].as_u64().unwrap_or(0);
        self.service_cpu_secs += run["cpu"]["service_cpu_secs"].as_f64().unwrap_or(0.0);
        self.client_cpu_secs += run["cpu"]["client_cpu_secs"].as_f64().unwrap_or(0.0);
        self.runs.push(run);
    }

    fn rps(&self) -> f64 {
        if self.secs > 0.0 {
            self.requests as f64 / self.secs
        } else {
            0.0
        }
    }

    fn summary(&self, name: &str) -> Value {
        let per_request = (self.requests > 0)
            .then(|| round(self.service_cpu_secs / self.requests as f64 * 1e6, 1));
        json!({
            "name": name,
            "rounds": self.runs.len(),
            "requests": self.requests,
            "rps": round(self.rps(), 0),
            "errors": self.errors,
            "cpu": {
                "service_cpu_secs": round(self.service_cpu_secs, 2),
                "client_cpu_secs": round(self.client_cpu_secs, 2),
                "service_cpu_us_per_request": per_request,
            },
        })
    }
}

/// Runs both instances; the section's JSON, with `tracing_on_ratio`.
pub async fn run(
    opts: &Opts,
    names: &Names,
    ids: &[String],
    get_script: &std::path::Path,
) -> Result<Value> {
    let url_path = "/api/v1/products/{id}";
    let settle = url_path.replace("{id}", &ids[0]);
    let so = |name| ServiceOpts {
        name,
        database: &names.read_database,
        redis: true,
        consumer: false,
    };
    let rounds = crate::env_num("BENCH_TRACING_ROUNDS", DEFAULT_ROUNDS)?.max(1);
    let mut warm = opts.clone();
    warm.duration = opts.warmup;
    warm.warmup = Duration::ZERO;
    let mut measured = opts.clone();
    measured.warmup = Duration::ZERO;
    measured.duration = (opts.duration / rounds as u32).max(Duration::from_secs(2));

    let off = Service::start(opts, names, so("tracing-off")).await?;
    let endpoint = otlp_endpoint();
    let service_name = format!("bench-{}-traced", names.id);
    let on = Service::start_with_env(
        opts,
        names,
        so("tracing-on"),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_TRACES_SAMPLER", "always_on"),
            ("OTEL_SERVICE_NAME", service_name.as_str()),
        ],
    )
    .await
    .context("starting the traced instance")?;
    let instances = [
        (&off, "get_cached", false),
        (&on, "get_cached_traced", true),
    ];
    for (svc, _, _) in instances {
        load::prime_cache(svc, ids).await?;
        // Warm-up first (discarded), so that the span counts cover the measured runs.
        if !opts.warmup.is_zero() {
            let url = format!("http://{}", svc.http);
            load::wrk_run(
                &warm, svc, "warm-up", url_path, &url, HIGH, get_script, &settle,
            )
            .await?;
        }
    }
    wait_for_export(&on).await?;

    let before = span_counts(&on).await?;
    let (mut r_off, mut r_on) = (Rounds::default(), Rounds::default());
    for round_no in 1..=rounds {
        for (svc, name, traced) in instances {
            let url = format!("http://{}", svc.http);
            // The profile covers the first round of each instance.
            let perf = (round_no == 1).then(|| {
                let label = if name == "get_cached" {
                    "tracing-off"
                } else {
                    "tracing-on"
                };
                profile::perf_record(&measured, svc, label)
            });
            let cpu = profile::CpuWindow::start(svc);
            let mut run = load::wrk_run(
                &measured,
                svc,
                &format!("{name} {round_no}/{rounds}"),
                url_path,
                &url,
                HIGH,
                get_script,
                &settle,
            )
            .await?;
            run["cpu"] = cpu.stop(svc, run["requests"].as_u64().unwrap_or(0));
            if let Some(perf) = perf {
                profile::perf_wait(perf).await;
            }
            if traced {
                // The traced instance's queued spans are sent before the
                // untraced one is measured again.
                wait_for_export(&on).await?;
                r_on.add(run);
            } else {
                r_off.add(run);
            }
        }
    }
    let after = span_counts(&on).await?;
    off.stop().await?;
    let trace_id = format!("{:032x}", u128::from(std::process::id()) << 64 | 0x5eed);
    let trace = one_trace(&on, &ids[0], &trace_id).await?;
    on.stop().await?;

    let requests = r_on.requests;
    let (queued, dropped) = (
        delta(&after, &before, "queued"),
        delta(&after, &before, "dropped"),
    );
    let spans_per_request =
        (requests > 0).then(|| round((queued + dropped) as f64 / requests as f64, 3));
    let (rps_off, rps_on) = (r_off.rps(), r_on.rps());
    let ratio = (rps_off > 0.0).then(|| round(rps_on / rps_off, 3));
    let round_ratios: Vec<Option<f64>> = r_off
        .runs
        .iter()
        .zip(&r_on.runs)
        .map(|(a, b)| {
            let (a, b) = (
                a["rps"].as_f64().unwrap_or(0.0),
                b["rps"].as_f64().unwrap_or(0.0),
            );
            (a > 0.0).then(|| round(b / a, 3))
        })
        .collect();
    eprintln!(
        "tracing: {rps_on:.0} / {rps_off:.0} req/s = {ratio:?} (rounds {round_ratios:?}); {spans_per_request:?} spans per request, {dropped} dropped, trace {}",
        trace["spans"]
    );
    let runs: Vec<Value> = r_off
        .runs
        .iter()
        .zip(&r_on.runs)
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();
    Ok(json!({
        "tracing_on_ratio": ratio,
        "round_ratios": round_ratios,
        "spans_per_request": spans_per_request,
        "spans_dropped": dropped,
        "spans": {
            "queued": queued,
            "dropped": dropped,
            "exported": delta(&after, &before, "exported"),
            "export_failed": delta(&after, &before, "export_failed"),
            "during": "the measured rounds of the traced instance, each followed by the export of what it queued",
        },
        "errors": r_off.errors + r_on.errors,
        "tracing_off": r_off.summary("get_cached"),
        "tracing_on": r_on.summary("get_cached_traced"),
        "runs": runs,
        "tracing_on_env": format!("OTEL_EXPORTER_OTLP_ENDPOINT={endpoint} OTEL_TRACES_SAMPLER=always_on OTEL_SERVICE_NAME={service_name} RUST_LOG=warn"),
        "one_trace": trace,
    }))
}

/// Waits (10 s at most) until the traced instance has exported or dropped
/// every span it queued: its exporter must not run during the next round.
async fn wait_for_export(svc: &Service) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let c = span_counts(svc).await?;
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        if n("exported") + n("export_failed") >= n("queued") {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            eprintln!("tracing: spans still queued after 10 s: {c}");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
