//! The machine's description and the Markdown table of a run.

use std::{fmt::Write as _, process::Command};

use mongodb::bson::doc;
use serde_json::{json, Value};

use crate::Opts;

fn command_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines().next().map(|l| l.trim().to_owned())
}

fn proc_field(file: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
}

pub async fn machine(opts: &Opts, mongo: &mongodb::Client) -> Value {
    let mem_total = proc_field("/proc/meminfo", "MemTotal")
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024);
    let ferretdb = mongo
        .database("admin")
        .run_command(doc! {"buildInfo": 1})
        .await
        .ok()
        .map(|d| {
            let get = |k: &str| d.get_str(k).unwrap_or("?").to_owned();
            format!(
                "FerretDB {} (MongoDB {} compatible)",
                get("ferretdbVersion"),
                get("version")
            )
        });
    let redis = async {
        let client = redis::Client::open(opts.redis_url.as_str()).ok()?;
        let mut con = client.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut con)
            .await
            .ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(|v| format!("Redis {}", v.trim()))
    }
    .await;
    let home = std::env::var("PRODUCTS_STACK_CACHE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/products-stack",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let kafka = std::fs::read_dir(&home).ok().and_then(|dir| {
        dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
            .find_map(|n| {
                n.strip_prefix("kafka-")
                    .map(|v| format!("Apache Kafka {v} (KRaft, 1 node)"))
            })
    });
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": proc_field("/proc/cpuinfo", "model name"),
        "memory_bytes": mem_total,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
        "os": proc_field("/etc/os-release", "PRETTY_NAME=").map(|s| s.trim_matches('"').to_owned()),
        "rustc": command_line("rustc", &["--version"]),
        "wrk": command_line("wrk", &["-v"]),
        "kafka": kafka,
        "ferretdb": ferretdb,
        "redis": redis,
    })
}

pub fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.fract() == 0.0 => format!("{x:.0}"),
        Some(x) => format!("{x}"),
        None => "—".into(),
    }
}

pub fn mib(v: &Value) -> String {
    v.as_f64()
        .map_or("—".into(), |b| format!("{:.1}", b / 1048576.0))
}

pub fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

pub fn markdown(r: &Value) -> String {
    let mut s = String::new();
    let m = &r["machine"];
    let _ = writeln!(
        s,
        "### Run `{}` ({})\n",
        r["run_id"].as_str().unwrap_or(""),
        r["date"].as_str().unwrap_or("")
    );
    if m.is_null() || r["ingest"].is_null() {
        // A run without the ingest (BENCH_SECTIONS=freshness, memory, grpc, tracing).
        if !r["freshness"].is_null() || !r["events"].is_null() {
            let _ = writeln!(s, "| key figure | value | target | |\n|---|---|---|---|");
            crate::freshness::key_rows(&mut s, r);
            crate::events::key_rows(&mut s, r);
            crate::freshness::tables(&mut s, r);
            crate::events::tables(&mut s, r);
        }
        memory_rows(&mut s, &r["memory_bound"]);
        extras_rows(&mut s, r);
        return s;
    }
    let _ = writeln!(
        s,
        "Machine: {} CPUs ({}), {:.1} GiB RAM, {}, kernel {}; {}; {}; {}; {}; {}.\n",
        m["cpus"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["memory_bytes"].as_f64().unwrap_or(0.0) / 1073741824.0,
        m["os"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        m["rustc"].as_str().unwrap_or("?"),
        m["kafka"].as_str().unwrap_or("Kafka ?"),
        m["ferretdb"].as_str().unwrap_or("FerretDB ?"),
        m["redis"].as_str().unwrap_or("Redis ?"),
        m["wrk"].as_str().unwrap_or("wrk ?"),
    );
    let st = &r["settings"];
    let _ = writeln!(
        s,
        "Command: `{}` (each load run: {} s warm-up, then {} s measured); total {} s.\n",
        st["command"].as_str().unwrap_or(""),
        st["warmup_secs"],
        st["duration_secs"],
        num(&r["total_secs"])
    );

    let t = &r["targets"];
    let ingest_ok =
        r["ingest_ratio"].as_f64().unwrap_or(0.0) >= t["ingest_ratio_min"].as_f64().unwrap_or(0.7);
    let cached_ok = r["cached_get_ratio"].as_f64().unwrap_or(0.0)
        >= t["cached_get_ratio_min"].as_f64().unwrap_or(0.5);
    let errors_ok = r["errors"].as_u64() == Some(0);
    let rss_ok = r["idle_rss_bytes"].as_u64().unwrap_or(u64::MAX)
        < t["idle_rss_bytes_max"].as_u64().unwrap_or(0);
    let _ = writeln!(s, "| key figure | value | target | |\n|---|---|---|---|");
    let _ = writeln!(
        s,
        "| `ingest_ratio` = ingest / min(bulk insert, Kafka read) | {} | ≥ 0.7 | {} |",
        num(&r["ingest_ratio"]),
        met(ingest_ok)
    );
    let _ = writeln!(
        s,
        "| `cached_get_ratio` = GET cached / `/health` (highest concurrency) | {} | ≥ 0.5 | {} |",
        num(&r["cached_get_ratio"]),
        met(cached_ok)
    );
    let _ = writeln!(
        s,
        "| `errors` (failed requests and messages, all runs) | {} | 0 | {} |",
        num(&r["errors"]),
        met(errors_ok)
    );
    let _ = writeln!(
        s,
        "| `idle_rss_bytes` | {} MiB | < 50 MiB | {} |",
        mib(&r["idle_rss_bytes"]),
        met(rss_ok)
    );
    let peak_max = &t["peak_rss_bytes_max"];
    let _ = writeln!(
        s,
        "| `peak_rss_bytes` during the ingest | {} MiB | ≤ 2 × idle + 64 MiB ({} MiB) | {} |",
        mib(&r["peak_rss_bytes"]),
        mib(peak_max),
        if peak_max.is_null() {
            "(idle RSS not measured: section reads)"
        } else {
            met(r["peak_rss_bytes"].as_u64() <= peak_max.as_u64())
        }
    );
    let first = &r["first_apply_ms"];
    let _ = writeln!(
        s,
        "| `first_apply_ms` = service start → first create applied (ms) | {} | ≤ 3000 | {} |",
        num(first),
        met(first.as_f64().is_some_and(|x| x <= 3000.0))
    );
    crate::scale::key_rows(&mut s, r);
    crate::freshness::key_rows(&mut s, r);
    crate::events::key_rows(&mut s, r);
    crate::search::key_rows(&mut s, r);
    let _ = writeln!(s);

    let i = &r["ingest"];
    let _ = writeln!(s, "**Kafka ingest** (N = {})\n", num(&i["n"]));
    let _ = writeln!(
        s,
        "| measurement | rate | time (s) | peak RSS (MiB) | command |\n|---|---|---|---|---|"
    );
    let _ = writeln!(
        s,
        "| service: N create commands → MongoDB | {} products/s | {} | {} | {} |",
        num(&i["products_per_s"]),
        num(&i["secs"]),
        mib(&i["peak_rss_bytes"]),
        i["command"].as_str().unwrap_or("")
    );
    let k = &i["kafka_consume"];
    let _ = writeln!(
        s,
        "| limit (b): raw Kafka read | {} records/s | {} | — | {} |",
        num(&k["records_per_s"]),
        num(&k["secs"]),
        k["command"].as_str().unwrap_or("")
    );
    let b = &i["bulk_insert"];
    for batch in b["batches"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "| limit (a): insert_many, batch {} | {} docs/s | {} | — | {} |",
            num(&batch["batch_size"]),
            num(&batch["docs_per_s"]),
            num(&batch["secs"]),
            b["command"].as_str().unwrap_or("")
        );
    }
    if let Some(ops) = i["mongodb_operations"].as_object() {
        let list: Vec<String> = ops
            .iter()
            .map(|(op, v)| {
                format!(
                    "{op}: {} × mean {} ms",
                    num(&v["count"]),
                    num(&v["mean_ms"])
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "\nService-side `mongodb_operation_duration_seconds` during ingest: {}.",
            list.join("; ")
        );
    }

    crate::scale::tables(&mut s, r);
    crate::freshness::tables(&mut s, r);
    crate::events::tables(&mut s, r);
    crate::search::tables(&mut s, r);

    let _ = writeln!(s, "\n**REST reads** (wrk)\n");
    let _ = writeln!(s, "| run | concurrency | req/s | p50 ms | p99 ms | p99.9 ms | errors | peak RSS (MiB) | command |\n|---|---|---|---|---|---|---|---|---|");
    load_rows(&mut s, &r["rest_reads"], true);
    let w = &r["rest_writes"];
    let _ = writeln!(s, "\n**REST writes** (wrk, `POST /api/v1/products`)\n");
    let _ = writeln!(s, "| concurrency | accepted (202)/s | p50 ms | p99 ms | accepted | all readable after (s) | errors | peak RSS (MiB) | command |\n|---|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        s,
        "| {} | {} | {} | {} | {} | {} | {} | {} | `{}` |",
        num(&w["concurrency"]),
        num(&w["accepted_per_s"]),
        num(&w["p50_ms"]),
        num(&w["p99_ms"]),
        num(&w["accepted"]),
        num(&w["all_readable_after_secs"]),
        num(&w["errors"]),
        mib(&w["peak_rss_bytes"]),
        w["command"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        s,
        "\n**gRPC** (closed-loop tonic client in products-bench)\n"
    );
    let _ = writeln!(s, "| RPC | concurrency | req/s | p50 ms | p99 ms | p99.9 ms | errors | peak RSS (MiB) | command |\n|---|---|---|---|---|---|---|---|---|");
    load_rows(&mut s, &r["grpc"], false);
    memory_rows(&mut s, &r["memory_bound"]);
    extras_rows(&mut s, r);
    s
}

const LOAD_HEADER: &str = "| run | concurrency | req/s | p50 ms | p99 ms | p99.9 ms | errors | peak RSS (MiB) | command |\n|---|---|---|---|---|---|---|---|---|";

/// The `grpc` (ghz) and `tracing` sections: key figures, then their runs.
fn extras_rows(s: &mut String, r: &Value) {
    let (g, t) = (&r["grpc_ghz"], &r["tracing"]);
    if g.is_null() && t.is_null() {
        return;
    }
    let _ = writeln!(s, "| key figure | value | target | |\n|---|---|---|---|");
    if !g.is_null() {
        let ratio = &r["grpc_single_conn_ratio"];
        let _ = writeln!(
            s,
            "| `grpc_single_conn_ratio` = ghz GetByID c=64 on one connection / REST cached GET c=64 | {} | ≥ 0.5 | {} |",
            num(ratio),
            met(ratio.as_f64().unwrap_or(0.0) >= 0.5)
        );
        let p = &r["grpc_c1_p99_over_p50"];
        let _ = writeln!(
            s,
            "| `grpc_c1_p99_over_p50` (ghz GetByID c=1) | {} | ≤ 5 | {} |",
            num(p),
            met(p.as_f64().is_some_and(|p| p <= 5.0))
        );
    }
    if !t.is_null() {
        let ratio = &r["tracing_on_ratio"];
        let _ = writeln!(
            s,
            "| `tracing_on_ratio` = cached GET c=64, every span exported / no exporter | {} | ≥ 0.7 | {} |",
            num(ratio),
            met(ratio.as_f64().unwrap_or(0.0) >= 0.7)
        );
        let d = &t["spans_dropped"];
        let _ = writeln!(
            s,
            "| spans dropped (export queue full) during that run; spans per request {} | {} | 0 | {} |",
            num(&t["spans_per_request"]),
            num(d),
            met(d.as_u64() == Some(0))
        );
    }
    let _ = writeln!(s);
    if !g.is_null() {
        let _ = writeln!(
            s,
            "**gRPC with ghz** (cached `GetByID`; REST reference: wrk on the same instance)\n"
        );
        let _ = writeln!(s, "{LOAD_HEADER}");
        let mut runs = vec![g["rest_get_cached"].clone()];
        runs.extend(g["ghz"].as_array().cloned().unwrap_or_default());
        load_rows(s, &Value::Array(runs), true);
        let _ = writeln!(s);
    }
    if !t.is_null() {
        let _ = writeln!(
            s,
            "**Tracing cost** (cached GET; traced instance: `{}`)\n",
            t["tracing_on_env"].as_str().unwrap_or("")
        );
        let _ = writeln!(s, "{LOAD_HEADER}");
        load_rows(s, &t["runs"], true);
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "One traced GET as Jaeger stored it: {} spans ({}).\n",
            num(&t["one_trace"]["spans"]),
            t["one_trace"]["names"]
        );
    }
}

/// The memory bound: peak RSS with maximum-size products queued and the
/// database down.
fn memory_rows(s: &mut String, m: &Value) {
    if m.is_null() {
        return;
    }
    let _ = writeln!(
        s,
        "\n**Memory bound** (database down, consumer buffers full)\n"
    );
    let _ = writeln!(
        s,
        "| products queued | bytes each | peak RSS (MiB) | bound (MiB) | | command |\n|---|---|---|---|---|---|"
    );
    let _ = writeln!(
        s,
        "| {} | {} | {} | {} | {} | {} |",
        num(&m["products_queued"]),
        num(&m["product_bytes"]),
        mib(&m["peak_rss_bytes"]),
        mib(&m["bound_bytes"]),
        met(m["within_bound"].as_bool() == Some(true)),
        m["command"].as_str().unwrap_or("")
    );
}

/// One table row per load run (REST reads and gRPC share the columns); REST
/// commands are shell commands and shown as code.
pub fn load_rows(s: &mut String, runs: &Value, command_as_code: bool) {
    for x in runs.as_array().into_iter().flatten() {
        let command = x["command"].as_str().unwrap_or("");
        let command = if command_as_code {
            format!("`{command}`")
        } else {
            command.to_owned()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            x["name"].as_str().unwrap_or(""),
            num(&x["concurrency"]),
            num(&x["rps"]),
            num(&x["p50_ms"]),
            num(&x["p99_ms"]),
            num(&x["p999_ms"]),
            num(&x["errors"]),
            mib(&x["peak_rss_bytes"]),
            command
        );
    }
}
