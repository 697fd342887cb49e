//! Section `reads`: REST reads (wrk) and gRPC (closed loop) on the read
//! catalog, cached and uncached, and the REST write run.

use std::{sync::Arc, time::Duration};

use anyhow::Result;
use mongodb::bson::oid::ObjectId;
use serde_json::Value;

use crate::{
    catalog::bulk_insert,
    load,
    service::{Service, ServiceOpts},
    Names, Opts,
};

/// What the REST/gRPC part of the run measured.
pub struct Reads {
    pub rest: Vec<Value>,
    pub grpc: Vec<Value>,
    pub writes: Value,
    pub idle_rss: u64,
    pub errors: u64,
}

pub async fn reads(opts: &Opts, names: &Names, mongo: &mongodb::Client) -> Result<Reads> {
    let mut errors: u64 = 0;
    // Against an instance with the cache on, on a catalog of its own.
    // (Search is measured on the 100,000-product catalog: section `search`.)
    let read_ids: Vec<ObjectId> = (0..opts.read_docs).map(|_| ObjectId::new()).collect();
    bulk_insert(opts, &mongo.database(&names.read_database), &read_ids, 1000).await?;
    let svc = Service::start(
        opts,
        names,
        ServiceOpts {
            name: "cached",
            database: &names.read_database,
            redis: true,
            consumer: true,
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = svc.rss()?.0;
    eprintln!("idle RSS: {} MiB", idle_rss / (1 << 20));
    let sample: Vec<String> = read_ids.iter().map(|id| id.to_hex()).collect();
    load::prime_cache(&svc, &sample).await?;
    let ids_file = opts.work_dir.join("ids.txt");
    std::fs::write(&ids_file, sample.join("\n") + "\n")?;
    let scripts = load::write_scripts(&opts.work_dir, &ids_file)?;
    let settle_path = |path: &str| path.replace("{id}", &sample[0]);

    let mut rest = Vec::new();
    let mut grpc = Vec::new();
    for &c in &opts.concurrency {
        for (name, path, script) in [
            ("health", "/health".to_owned(), &scripts.plain),
            (
                "get_cached",
                "/api/v1/products/{id}".to_owned(),
                &scripts.get_by_id,
            ),
        ] {
            let url = format!(
                "http://{}{}",
                svc.http,
                if name == "get_cached" { "" } else { &path }
            );
            let r = load::wrk_run(
                opts,
                &svc,
                name,
                &path,
                &url,
                c,
                script,
                &settle_path(&path),
            )
            .await?;
            errors += r["errors"].as_u64().unwrap_or(0);
            rest.push(r);
        }
        for kind in [load::GrpcKind::GetById] {
            let r = load::grpc_run(opts, &svc, kind, c, Arc::new(sample.clone())).await?;
            errors += r["errors"].as_u64().unwrap_or(0);
            grpc.push(r);
        }
    }
    let writes = load::write_run(opts, names, &svc, mongo, &scripts.post).await?;
    errors += writes["errors"].as_u64().unwrap_or(0);
    svc.stop().await?;

    // The same reads with the cache off (and no consumer: nothing to consume).
    let svc = Service::start(
        opts,
        names,
        ServiceOpts {
            name: "uncached",
            database: &names.read_database,
            redis: false,
            consumer: false,
        },
    )
    .await?;
    for &c in &opts.concurrency {
        let url = format!("http://{}", svc.http);
        let r = load::wrk_run(
            opts,
            &svc,
            "get_uncached",
            "/api/v1/products/{id}",
            &url,
            c,
            &scripts.get_by_id,
            &settle_path("/api/v1/products/{id}"),
        )
        .await?;
        errors += r["errors"].as_u64().unwrap_or(0);
        rest.push(r);
    }
    svc.stop().await?;

    Ok(Reads {
        rest,
        grpc,
        writes,
        idle_rss,
        errors,
    })
}
