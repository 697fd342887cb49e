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

    let off = Service::start(opts, names, so("tracing-off")).await?;
    load::prime_cache(&off, ids).await?;
    let url = format!("http://{}", off.http);
    let mut warm = opts.clone();
    warm.duration = opts.warmup;
    warm.warmup = Duration::ZERO;
    let mut measured = opts.clone();
    measured.warmup = Duration::ZERO;
    if !opts.warmup.is_zero() {
        load::wrk_run(
            &warm, &off, "warm-up", url_path, &url, HIGH, get_script, &settle,
        )
        .await?;
    }
    let perf = profile::perf_record(opts, &off, "tracing-off");
    let cpu = profile::CpuWindow::start(&off);
    let mut r_off = load::wrk_run(
        &measured,
        &off,
        "get_cached",
        url_path,
        &url,
        HIGH,
        get_script,
        &settle,
    )
    .await?;
    r_off["cpu"] = cpu.stop(&off, r_off["requests"].as_u64().unwrap_or(0));
    profile::perf_wait(perf).await;
    off.stop().await?;

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
    load::prime_cache(&on, ids).await?;
    let url = format!("http://{}", on.http);
    // Warm-up first (discarded), so that the span counts cover the measured run.
    if !opts.warmup.is_zero() {
        load::wrk_run(
            &warm, &on, "warm-up", url_path, &url, HIGH, get_script, &settle,
        )
        .await?;
    }
    let before = span_counts(&on).await?;
    let perf = profile::perf_record(opts, &on, "tracing-on");
    let cpu = profile::CpuWindow::start(&on);
    let mut r_on = load::wrk_run(
        &measured,
        &on,
        "get_cached_traced",
        url_path,
        &url,
        HIGH,
        get_script,
        &settle,
    )
    .await?;
    r_on["cpu"] = cpu.stop(&on, r_on["requests"].as_u64().unwrap_or(0));
    profile::perf_wait(perf).await;
    // The exporter sends what is queued within its schedule delay (1 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = span_counts(&on).await?;
    let trace_id = format!("{:032x}", u128::from(std::process::id()) << 64 | 0x5eed);
    let trace = one_trace(&on, &ids[0], &trace_id).await?;
    on.stop().await?;

    let requests = r_on["requests"].as_u64().unwrap_or(0);
    let (queued, dropped) = (
        delta(&after, &before, "queued"),
        delta(&after, &before, "dropped"),
    );
    let spans_per_request =
        (requests > 0).then(|| round((queued + dropped) as f64 / requests as f64, 3));
    let (rps_off, rps_on) = (
        r_off["rps"].as_f64().unwrap_or(0.0),
        r_on["rps"].as_f64().unwrap_or(0.0),
    );
    let ratio = (rps_off > 0.0).then(|| round(rps_on / rps_off, 3));
    eprintln!(
        "tracing: {rps_on:.0} / {rps_off:.0} req/s = {ratio:?}; {spans_per_request:?} spans per request, {dropped} dropped, trace {}",
        trace["spans"]
    );
    let errors = r_off["errors"].as_u64().unwrap_or(0) + r_on["errors"].as_u64().unwrap_or(0);
    Ok(json!({
        "tracing_on_ratio": ratio,
        "spans_per_request": spans_per_request,
        "spans_dropped": dropped,
        "spans": {
            "queued": queued,
            "dropped": dropped,
            "exported": delta(&after, &before, "exported"),
            "export_failed": delta(&after, &before, "export_failed"),
            "during": "the measured run, plus 3 s for the exporter to drain",
        },
        "errors": errors,
        "tracing_off": r_off,
        "tracing_on": r_on,
        "tracing_on_env": format!("OTEL_EXPORTER_OTLP_ENDPOINT={endpoint} OTEL_TRACES_SAMPLER=always_on OTEL_SERVICE_NAME={service_name} RUST_LOG=warn"),
        "one_trace": trace,
    }))
}
