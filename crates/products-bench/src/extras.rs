//! The sections measured from outside with the tools users reach for
//! (`BENCH_SECTIONS` `grpc` and `tracing`, both in the default): gRPC with
//! ghz ([`crate::grpc_ghz`]) and the cost of exporting every span
//! ([`crate::tracing_cost`]). Each runs on the read catalog (its own 200
//! products in the run's read database) with the cache on and primed.

use anyhow::Result;
use mongodb::bson::oid::ObjectId;
use serde_json::{json, Value};

use crate::{
    grpc_ghz, load,
    service::{Service, ServiceOpts},
    tracing_cost, Names, Opts,
};

/// The sections' JSON (`grpc_ghz`, `tracing`) and their top-level keys.
pub struct Extras {
    pub grpc: Option<Value>,
    pub tracing: Option<Value>,
    pub errors: u64,
}

impl Extras {
    pub fn key(&self, section: &Option<Value>, key: &str) -> Value {
        section.as_ref().map_or(Value::Null, |s| s[key].clone())
    }

    /// The top-level figures, to merge into the results JSON.
    pub fn top_level(&self) -> Value {
        json!({
            "grpc_single_conn_ratio": self.key(&self.grpc, "grpc_single_conn_ratio"),
            "grpc_c1_p99_over_p50": self.key(&self.grpc, "grpc_c1_p99_over_p50"),
            "tracing_on_ratio": self.key(&self.tracing, "tracing_on_ratio"),
            "tracing_spans_dropped": self.key(&self.tracing, "spans_dropped"),
        })
    }
}

pub async fn run(opts: &Opts, names: &Names, mongo: &mongodb::Client) -> Result<Extras> {
    let wants = |section: &str| opts.sections.iter().any(|s| s == section);
    let mut extras = Extras {
        grpc: None,
        tracing: None,
        errors: 0,
    };
    if !wants("grpc") && !wants("tracing") {
        return Ok(extras);
    }
    let read_ids: Vec<ObjectId> = (0..opts.read_docs).map(|_| ObjectId::new()).collect();
    crate::catalog::bulk_insert(opts, &mongo.database(&names.read_database), &read_ids, 1000)
        .await?;
    let ids: Vec<String> = read_ids.iter().map(|id| id.to_hex()).collect();
    let ids_file = opts.work_dir.join("ids-extras.txt");
    std::fs::write(&ids_file, ids.join("\n") + "\n")?;
    let scripts = load::write_scripts(&opts.work_dir, &ids_file)?;

    if wants("grpc") {
        let svc = Service::start(
            opts,
            names,
            ServiceOpts {
                name: "grpc",
                database: &names.read_database,
                redis: true,
                consumer: false,
            },
        )
        .await?;
        load::prime_cache(&svc, &ids).await?;
        let r = grpc_ghz::run(opts, &svc, &ids, &scripts.get_by_id).await;
        svc.stop().await?;
        let r = r?;
        extras.errors += r["errors"].as_u64().unwrap_or(0);
        extras.grpc = Some(r);
    }
    if wants("tracing") {
        let r = tracing_cost::run(opts, names, &ids, &scripts.get_by_id).await?;
        extras.errors += r["errors"].as_u64().unwrap_or(0);
        extras.tracing = Some(r);
    }
    Ok(extras)
}
