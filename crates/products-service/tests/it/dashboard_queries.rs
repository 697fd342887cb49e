//! Every PromQL expression of every Grafana panel returns data from the real
//! local Prometheus after traffic on every protocol. The test registers its
//! service instance with Prometheus through file-based service discovery
//! (`.stack/prometheus-targets/*.json`, see deploy/prometheus/prometheus.local.yml).

use std::{path::PathBuf, time::Duration};

use crate::common::{
    all_panels, eventually,
    kafka::{produce, producer},
    products::{create_product, product_body, update_product},
    repo_root, spawn_app, unique, KAFKA, PROMETHEUS,
};
use products_service::api::grpc::pb::{GetByIdReq, SearchReq};
use serde_json::{json, Value};

/// Removes the discovery file when the test ends, however it ends.
struct Registration(PathBuf);

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn query(expr: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{PROMETHEUS}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "success", "{expr}: {body}");
    body["data"]["result"].clone()
}

/// Every `expr` in the dashboard, panels nested in rows included.
fn dashboard_exprs() -> Vec<(String, String)> {
    let path = repo_root().join("deploy/grafana/dashboards/products-service.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for panel in all_panels(&dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                exprs.push((
                    panel["title"].as_str().unwrap_or("?").to_owned(),
                    expr.to_owned(),
                ));
            }
        }
    }
    exprs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_after_traffic() {
    let exprs = dashboard_exprs();
    assert!(
        exprs.len() >= 10,
        "dashboard has only {} queries",
        exprs.len()
    );

    let app = spawn_app().await;
    let instance = unique("dashboard-test");
    let dir = repo_root().join(".stack/prometheus-targets");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{instance}.json"));
    let targets = json!([{
        "targets": [app.metrics_addr.to_string()],
        "labels": { "instance": instance }
    }]);
    // Write then rename, so Prometheus never reads a half-written file.
    let partial = dir.join(format!("{instance}.json.tmp"));
    std::fs::write(&partial, targets.to_string()).unwrap();
    std::fs::rename(&partial, &file).unwrap();
    let _registration = Registration(file);

    // Searches and changes from now on go through the rebuilt search index.
    app.wait_search_index_ready().await;
    // REST: writes through Kafka, reads (cache miss then hit), search, errors.
    let product = create_product(&app, &product_body("Dashboard lamp")).await;
    let id = product["productId"].as_str().unwrap().to_owned();
    update_product(&app, &id, &product_body("Dashboard lamp 2")).await;
    for path in [
        format!("/api/v1/products/{id}"),
        "/api/v1/products/search?search=lamp".to_owned(),
        "/api/v1/products/not-an-id".to_owned(),
        "/api/v1/products/65a1f0c2e4b0a1b2c3d4e5f6".to_owned(),
    ] {
        app.client.get(app.url(&path)).send().await.unwrap();
    }
    // gRPC: a success and an error.
    let mut grpc = app.grpc_client().await;
    grpc.get_by_id(GetByIdReq {
        product_id: id.clone(),
    })
    .await
    .unwrap();
    let _ = grpc
        .get_by_id(GetByIdReq {
            product_id: "bad".into(),
        })
        .await;
    grpc.search(SearchReq {
        search: "lamp".into(),
        page: 1,
        size: 5,
    })
    .await
    .unwrap();
    // Kafka: a poison message (dead letter) and an early update (retries).
    let kafka = producer(KAFKA);
    let topics = &app.settings.kafka.topics;
    produce(&kafka, &topics.create, Some("poison"), b"not json", &[]).await;
    let early = mongodb::bson::oid::ObjectId::new().to_hex();
    let mut early_update = product_body("Early update");
    early_update["productId"] = json!(early);
    produce(
        &kafka,
        &topics.update,
        Some(&early),
        early_update.to_string().as_bytes(),
        &[],
    )
    .await;
    eventually(Duration::from_secs(30), || async {
        let metrics = app.metrics_text().await;
        metrics.contains("kafka_dead_letter_messages_total")
            && metrics.contains("kafka_message_retries_total")
            && metrics.contains("kafka_consumer_lag")
            && metrics.contains("search_index_freshness_seconds")
    })
    .await;

    // Prometheus discovers the instance, then needs two scrapes for rate().
    let selector = format!("up{{instance=\"{instance}\"}}");
    eventually(Duration::from_secs(60), || async {
        query(&selector)
            .await
            .as_array()
            .is_some_and(|r| !r.is_empty())
    })
    .await;
    let samples = format!("count_over_time(up{{instance=\"{instance}\"}}[1m])");
    eventually(Duration::from_secs(60), || async {
        query(&samples).await[0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|n| n >= 3.0)
    })
    .await;

    let mut empty = Vec::new();
    for (title, expr) in &exprs {
        let promql = expr
            .replace("$__rate_interval", "1m")
            .replace("$__interval", "1m")
            .replace("$__range", "5m");
        let result = query(&promql).await;
        if result.as_array().is_none_or(|r| r.is_empty()) {
            empty.push(format!("{title}: {expr}"));
        }
    }
    assert!(
        empty.is_empty(),
        "queries without data:\n{}",
        empty.join("\n")
    );
}
